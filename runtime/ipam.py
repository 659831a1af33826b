"""Block-based IP address management, the way Calico IPAM works (SEMANTICS.md §IPAM).

Pools are carved into blocks of the pool's ``blockSize`` (default /26 and /122). A block is
claimed for one node (its *affinity*), so each node advertises one route per block rather than
one per pod. To hand a node an address, :meth:`IPAM.allocate`:

1. takes the lowest free address of the node's own confirmed blocks (lowest block first);
2. otherwise claims the lowest unclaimed block of the first eligible pool, unless the node
   already holds ``max_blocks_per_host`` blocks of that family;
3. otherwise, unless ``strict_affinity`` is set, *borrows* the lowest free address from any
   existing block of an eligible pool (another node's block keeps its affinity; the node
   advertises the borrowed /32 itself);
4. otherwise raises :class:`NoAddressAvailable`.

A pool is eligible for a node when its ``nodeSelector`` matches the node's labels, its
``allowedUses`` include the use asked for (``Workload`` or ``Tunnel``), it is not ``disabled``
(a disabled pool hands out nothing new, not even from blocks already claimed) and its
``assignmentMode`` is ``Automatic``. Pools are tried in order of CIDR.

Every choice is "lowest first", so the same sequence of calls gives the same addresses on
every machine (Calico randomises; determinism is worth more to a compiler's test suite).
The allocator works on an in-memory :class:`~runtime.ipam_state.IPAMState`; callers persist
it through :class:`~runtime.ipam_state.StateFile` transactions.

>>> import ipaddress
>>> from compiler.frontend.model import IPPool
>>> pool = IPPool("p", ipaddress.ip_network("10.65.0.0/24"), 26)
>>> ipam = IPAM(IPAMState(), [pool], {"n1": {}, "n2": {}})
>>> str(ipam.allocate("n1", "ns/a")), str(ipam.allocate("n2", "ns/b"))
('10.65.0.0', '10.65.0.64')
>>> [str(b.cidr) for b in ipam.blocks_of("n1")]
['10.65.0.0/26']
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.frontend.model import Endpoint, IPPool
from compiler.frontend.selector import SelectorError, evaluate, parse
from runtime.ipam_state import Allocation, Block, IPAddr, IPAMState, IPNet

__all__ = [
    "IPAM",
    "AddressInUse",
    "IPAMConfig",
    "IPAMError",
    "NoAddressAvailable",
    "UnknownAddress",
    "eligible_pools",
    "import_endpoints",
    "usage_report",
]

logger = logging.getLogger(__name__)

USES = ("Workload", "Tunnel")


class IPAMError(Exception):
    """An allocation request that cannot be met (the message says why)."""


class NoAddressAvailable(IPAMError):
    pass


class AddressInUse(IPAMError):
    pass


class UnknownAddress(IPAMError):
    """The address is in no pool, or (on release) not allocated."""


@dataclass(frozen=True, slots=True)
class IPAMConfig:
    """Calico's IPAMConfiguration: ``strictAffinity`` and ``maxBlocksPerHost`` (0 = no limit)."""

    strict_affinity: bool = False
    max_blocks_per_host: int = 0


def _pool_matches(pool: IPPool, labels: Mapping[str, str]) -> bool:
    try:
        return evaluate(parse(pool.node_selector or "all()"), labels)
    except SelectorError:  # the frontend rejects these; never match a broken selector
        logger.warning("pool %s: invalid nodeSelector %r", pool.name, pool.node_selector)
        return False


def eligible_pools(
    pools: Iterable[IPPool], labels: Mapping[str, str], family: int, use: str = "Workload"
) -> list[IPPool]:
    """The pools a node with ``labels`` may get new ``family`` addresses from, by CIDR."""
    out = [
        p
        for p in pools
        if p.cidr.version == family
        and not p.disabled
        and use in p.allowed_uses
        and p.assignment_mode == "Automatic"
        and _pool_matches(p, labels)
    ]
    return sorted(out, key=lambda p: (p.cidr, p.name))


class IPAM:
    """Allocation on top of an :class:`IPAMState` (changed in place).

    ``nodes`` maps node name to its labels (for pool ``nodeSelector``); an unknown node name is
    an error, so a typo cannot claim blocks for a node that does not exist.
    """

    def __init__(
        self,
        state: IPAMState,
        pools: Sequence[IPPool],
        nodes: Mapping[str, Mapping[str, str]],
        config: IPAMConfig | None = None,
    ) -> None:
        self.state = state
        self.pools = sorted(pools, key=lambda p: (p.cidr.version, p.cidr, p.name))
        self.nodes = nodes
        self.config = config if config is not None else IPAMConfig()

    # -- queries ---------------------------------------------------------------------------------

    def blocks_of(self, node: str, family: int | None = None) -> list[Block]:
        """Blocks affine to ``node`` (any state), sorted."""
        return [
            b
            for b in self.state.sorted_blocks()
            if b.affinity == node and (family is None or b.cidr.version == family)
        ]

    def pool_of(self, addr: IPAddr | IPNet) -> IPPool | None:
        for pool in self.pools:
            if isinstance(addr, ipaddress.IPv4Network | ipaddress.IPv6Network):
                if addr.version == pool.cidr.version and addr.subnet_of(pool.cidr):  # type: ignore[arg-type]
                    return pool
            elif addr.version == pool.cidr.version and addr in pool.cidr:
                return pool
        return None

    def stray_blocks(self) -> list[str]:
        """Blocks of the state that no pool of the input holds (a hand-edited or stale state
        file): one line each. Such a block must not become routes or BGP announcements."""
        problems = []
        for b in self.state.sorted_blocks():
            pool = self.pool_of(b.cidr)
            if pool is None:
                problems.append(f"block {b.cidr} lies in no IP pool of the input")
            elif pool.name != b.pool:
                problems.append(f"block {b.cidr} names pool {b.pool!r} but lies in {pool.name!r}")
        return problems

    def allocation_of(self, addr: IPAddr) -> Allocation | None:
        block = self.state.block_of(addr)
        return block.allocations.get(block.ordinal(addr)) if block else None

    def addresses_of(self, handle: str) -> list[IPAddr]:
        return [
            b.address(o)
            for b in self.state.sorted_blocks()
            for o, a in sorted(b.allocations.items())
            if a.handle == handle
        ]

    def borrowed_by(self, node: str) -> list[tuple[IPAddr, Block]]:
        """Addresses allocated for ``node`` in blocks that are not affine to it."""
        return [
            (b.address(o), b)
            for b in self.state.sorted_blocks()
            if b.affinity != node
            for o, a in sorted(b.allocations.items())
            if a.node == node
        ]

    # -- allocation ------------------------------------------------------------------------------

    def _labels(self, node: str) -> Mapping[str, str]:
        try:
            return self.nodes[node]
        except KeyError:
            raise IPAMError(f"unknown node {node!r}") from None

    def allocate(
        self,
        node: str,
        handle: str,
        family: int = 4,
        use: str = "Workload",
        pool_names: Iterable[str] | None = None,
    ) -> IPAddr:
        """One address of ``family`` for ``handle`` on ``node`` (see the module docstring).

        ``pool_names`` narrows the eligible pools (e.g. a VXLAN tunnel address comes from a
        VXLAN pool).
        """
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        if use not in USES:
            raise ValueError(f"use must be one of {USES}, not {use!r}")
        pools = eligible_pools(self.pools, self._labels(node), family, use)
        if pool_names is not None:
            allowed = set(pool_names)
            pools = [p for p in pools if p.name in allowed]
        if not pools:
            raise NoAddressAvailable(
                f"no enabled IPv{family} pool for {use} addresses matches node {node!r}"
            )
        eligible = {p.name for p in pools}

        for block in self.blocks_of(node, family):
            if block.state == "confirmed" and block.pool in eligible:
                ordinal = block.first_free()
                if ordinal is not None:
                    return self._take(block, ordinal, handle, node)

        limit = self.config.max_blocks_per_host
        if limit == 0 or len(self.blocks_of(node, family)) < limit:
            for pool in pools:
                cidr = self._free_block_cidr(pool)
                if cidr is not None:
                    block = self.state.add_block(Block(cidr, pool.name, node, "confirmed"))
                    logger.info("claimed block %s of pool %s for node %s", cidr, pool.name, node)
                    return self._take(block, 0, handle, node)

        if self.config.strict_affinity:
            raise NoAddressAvailable(
                f"node {node!r} has no free IPv{family} address in its blocks and cannot claim "
                "another (strictAffinity forbids borrowing)"
            )
        for block in self.state.sorted_blocks():
            if block.cidr.version == family and block.pool in eligible:
                ordinal = block.first_free()
                if ordinal is not None:
                    addr = self._take(block, ordinal, handle, node)
                    logger.info(
                        "node %s borrowed %s from block %s (affine to %s)",
                        node,
                        addr,
                        block.cidr,
                        block.affinity,
                    )
                    return addr
        raise NoAddressAvailable(f"IPv{family} pools for node {node!r} are exhausted")

    def assign(self, addr: IPAddr, handle: str, node: str | None = None) -> IPAddr:
        """Record a specific address (Calico's AssignIP), e.g. a pod that already has one.

        The address's block is created when missing: affine to ``node`` when the pool's
        ``nodeSelector`` matches it, else with no affinity. Assigning an address twice to the
        same handle is a no-op; to another handle it is :class:`AddressInUse`.
        """
        pool = self.pool_of(addr)
        if pool is None:
            raise UnknownAddress(f"{addr} is in no IP pool")
        block = self.state.block_of(addr)
        if block is None:
            cidr = ipaddress.ip_network(f"{addr}/{pool.block_size}", strict=False)
            affinity = None
            if node is not None and _pool_matches(pool, self._labels(node)):
                affinity = node
            block = self.state.add_block(Block(cidr, pool.name, affinity, "confirmed"))
        ordinal = block.ordinal(addr)
        owner = block.allocations.get(ordinal)
        if owner is not None and owner.handle == handle:
            return addr
        if owner is not None:
            raise AddressInUse(f"{addr} is already allocated to {owner.handle!r}")
        return self._take(block, ordinal, handle, node)

    def _take(self, block: Block, ordinal: int, handle: str, node: str | None) -> IPAddr:
        block.allocations[ordinal] = Allocation(handle, node)
        return block.address(ordinal)

    def _free_block_cidr(self, pool: IPPool) -> IPNet | None:
        """The lowest /blockSize of ``pool`` that no block uses yet (O(blocks in the pool))."""
        step = 1 << (pool.cidr.max_prefixlen - pool.block_size)
        base = int(pool.cidr.network_address)
        count = pool.cidr.num_addresses // step
        taken: set[int] = set()
        for b in self.state.blocks.values():
            if b.cidr.version == pool.cidr.version and b.cidr.overlaps(pool.cidr):
                # Index of every block slot this existing block touches.
                lo = max(int(b.cidr.network_address), base)
                hi = min(int(b.cidr.broadcast_address), base + pool.cidr.num_addresses - 1)
                taken.update(range((lo - base) // step, (hi - base) // step + 1))
        for i in range(count):
            if i not in taken:
                return ipaddress.ip_network((base + i * step, pool.block_size))
        return None

    # -- release ---------------------------------------------------------------------------------

    def release(self, addr: IPAddr) -> Allocation:
        """Free one address; return the handle that held it. A block left empty with no
        affinity (borrowed space of a released node) is deleted."""
        block = self.state.block_of(addr)
        ordinal = block.ordinal(addr) if block else None
        if block is None or ordinal not in block.allocations:
            raise UnknownAddress(f"{addr} is not allocated")
        allocation = block.allocations.pop(ordinal)
        if not block.allocations and block.affinity is None:
            del self.state.blocks[block.cidr]
        return allocation

    def release_handle(self, handle: str) -> list[IPAddr]:
        """Free every address of ``handle``; return them (sorted)."""
        addrs = self.addresses_of(handle)
        for addr in addrs:
            self.release(addr)
        return addrs

    def release_affinity(self, node: str, cidr: IPNet) -> None:
        """Drop ``node``'s claim on block ``cidr``. An empty block is deleted; one with
        addresses still in use stays, with no affinity, until they are released."""
        block = self.state.blocks.get(cidr)
        if block is None or block.affinity != node:
            raise IPAMError(f"block {cidr} is not affine to node {node!r}")
        if block.allocations:
            block.affinity = None
        else:
            del self.state.blocks[cidr]


def import_endpoints(ipam: IPAM, endpoints: Iterable[Endpoint]) -> list[str]:
    """Assign the addresses workload endpoints already have; return problems as messages.

    This rebuilds IPAM state from a cluster's YAML (``tortie ipam show`` without a state file).
    Endpoints go in id order, addresses in address order, so the result is deterministic.
    """
    problems: list[str] = []
    workloads = sorted((e for e in endpoints if not e.is_host), key=lambda e: (e.node, e.id))
    for ep in workloads:
        for addr in sorted(ep.ips, key=lambda a: (a.version, a)):
            try:
                ipam.assign(addr, ep.id, ep.node if ep.node in ipam.nodes else None)
            except IPAMError as e:
                problems.append(f"{ep.id}: {e}")
    return problems


def usage_report(ipam: IPAM) -> dict[str, Any]:
    """Blocks per node with usage, borrowed addresses, and per-pool totals (plain sorted data)."""
    nodes: dict[str, dict[str, Any]] = {}

    def node_entry(name: str) -> dict[str, Any]:
        return nodes.setdefault(name, {"blocks": [], "borrowed": []})

    unaffine: list[dict[str, Any]] = []
    for block in ipam.state.sorted_blocks():
        entry = {
            "cidr": str(block.cidr),
            "pool": block.pool,
            "state": block.state,
            "used": len(block.allocations),
            "size": block.size,
        }
        if block.affinity is None:
            unaffine.append(entry)
        else:
            node_entry(block.affinity)["blocks"].append(entry)
        for ordinal, alloc in sorted(block.allocations.items()):
            if alloc.node is not None and alloc.node != block.affinity:
                node_entry(alloc.node)["borrowed"].append(
                    {
                        "address": str(block.address(ordinal)),
                        "block": str(block.cidr),
                        "handle": alloc.handle,
                    }
                )
    pools = []
    for pool in ipam.pools:
        blocks = [b for b in ipam.state.sorted_blocks() if b.pool == pool.name]
        pools.append(
            {
                "name": pool.name,
                "cidr": str(pool.cidr),
                "block_size": pool.block_size,
                "disabled": pool.disabled,
                "blocks": len(blocks),
                "blocks_total": pool.cidr.num_addresses
                >> (pool.cidr.max_prefixlen - pool.block_size),
                "used": sum(len(b.allocations) for b in blocks),
                "size": pool.cidr.num_addresses,
            }
        )
    return {
        "nodes": {name: nodes[name] for name in sorted(nodes)},
        "unaffine_blocks": unaffine,
        "pools": pools,
    }
