"""VXLAN overlay for pools with ``vxlanMode: Always`` (no BGP needed), the way Felix does it.

Each node has one device, ``vxlan.calico`` (VNI 4096, UDP 4789, learning off), whose address
is the node's *tunnel address* (a /32 from a VXLAN pool, or the Node's
``ipv4VXLANTunnelAddr``). For every other node (a :class:`Vtep`) the node holds:

- a permanent neighbour entry: remote tunnel address -> remote VTEP MAC;
- a forwarding (FDB) entry on the device: remote VTEP MAC -> remote node address (the UDP
  destination);
- a route per remote block: ``<block> via <remote tunnel address> dev vxlan.calico onlink``,
  plus a /32 for each address the remote node borrowed from a block it does not own.

The neighbour and FDB entries are static, so no ARP ever crosses the overlay. Routes are
returned as :class:`~runtime.routes.DesiredRoute` for the caller to pass, together with the
workload and blackhole routes, to :func:`runtime.routes.reconcile` (protocol 81): one
reconcile owns all of Tortie's routes. The device, its address, neighbours and FDB entries
belong to Tortie entirely, so :func:`reconcile_device` removes anything on it it did not ask for
(except the kernel's own dynamic entries, e.g. NOARP multicast neighbours).

VTEP MACs are derived from the node name (``66:`` + 5 bytes of SHA-256: locally administered,
unicast), so every node computes the same MAC for a peer without a shared store.
IPv4 only (Felix's ``vxlan-v6.calico`` is not implemented).

>>> vtep_mac("node-a")
'66:66:57:0f:f0:5a'
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.frontend.model import IPPool, Node
from runtime.ipam import IPAM
from runtime.ipam_state import IPAMState
from runtime.netlink import (
    dump_fdb,
    dump_neighbours,
    ensure_address,
    ensure_fdb,
    ensure_link_up,
    ensure_neighbour,
    link_index,
    remove_fdb,
    remove_neighbour,
)
from runtime.routes import DesiredRoute

__all__ = [
    "DEVICE",
    "PORT",
    "VNI",
    "Vtep",
    "VxlanResult",
    "allocate_tunnel_address",
    "reconcile_device",
    "tunnel_handle",
    "vtep_mac",
    "vteps",
    "vxlan_routes",
]

logger = logging.getLogger(__name__)

DEVICE = "vxlan.calico"
VNI = 4096
PORT = 4789
DEFAULT_MTU = 1450  # 1500 minus 50 bytes of VXLAN/UDP/IPv4/Ethernet overhead

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class Vtep:
    """A node's VXLAN endpoint and what is reached through it."""

    node: str
    node_ip: IPv4  # underlay address: where encapsulated packets go
    tunnel_ip: IPv4  # the address of its vxlan.calico
    mac: str
    blocks: tuple[ipaddress.IPv4Network, ...] = ()
    borrowed: tuple[IPv4, ...] = ()


@dataclass(slots=True)
class VxlanResult:
    created: bool = False
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changes)


def vtep_mac(node: str) -> str:
    digest = hashlib.sha256(node.encode()).digest()[:5]
    return ":".join(["66", *(f"{b:02x}" for b in digest)])


def tunnel_handle(node: str) -> str:
    return f"vxlan-tunnel-addr:{node}"


def _vxlan_pools(pools: Iterable[IPPool]) -> list[IPPool]:
    return [p for p in pools if p.vxlan_mode != "Never" and p.cidr.version == 4]


def allocate_tunnel_address(ipam: IPAM, node: str) -> IPv4:
    """The node's tunnel address: its existing one, else a new Tunnel allocation (Calico
    allocates it from the node's VXLAN pool, so it lives in one of the node's blocks)."""
    existing = ipam.addresses_of(tunnel_handle(node))
    if existing:
        return existing[0]  # type: ignore[return-value]
    pools = [p.name for p in _vxlan_pools(ipam.pools)]
    addr = ipam.allocate(node, tunnel_handle(node), 4, use="Tunnel", pool_names=pools)
    return addr  # type: ignore[return-value]


def vteps(
    nodes: Sequence[Node], pools: Sequence[IPPool], state: IPAMState, *, ipam_tunnels: bool = True
) -> list[Vtep]:
    """Every node that has an IPv4 address and a tunnel address, with its VXLAN-pool blocks.

    The tunnel address is the Node's ``ipv4VXLANTunnelAddr`` when set, else (``ipam_tunnels``)
    the address IPAM holds under :func:`tunnel_handle`. Nodes without one are left out.
    """
    vx = _vxlan_pools(pools)
    cidr_of = {p.name: p.cidr for p in vx}
    by_handle: dict[str, IPv4] = {}
    blocks: dict[str, list[ipaddress.IPv4Network]] = {}
    borrowed: dict[str, list[IPv4]] = {}
    for b in state.sorted_blocks():
        pool_cidr = cidr_of.get(b.pool)
        # A block outside its pool (a tampered or stale state file) never becomes a route.
        if pool_cidr is None or b.cidr.version != 4 or not b.cidr.subnet_of(pool_cidr):  # type: ignore[arg-type]
            if pool_cidr is not None:
                logger.warning("ignoring IPAM block %s: it is not inside pool %s", b.cidr, b.pool)
            continue
        if b.affinity is not None:
            blocks.setdefault(b.affinity, []).append(b.cidr)  # type: ignore[arg-type]
        for ordinal, alloc in sorted(b.allocations.items()):
            addr = b.address(ordinal)
            if alloc.handle.startswith("vxlan-tunnel-addr:"):
                by_handle[alloc.handle] = addr  # type: ignore[assignment]
            if alloc.node is not None and alloc.node != b.affinity:
                borrowed.setdefault(alloc.node, []).append(addr)  # type: ignore[arg-type]
    out = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.ipv4 is None:
            continue
        tunnel = node.vxlan_tunnel_address
        if tunnel is None and ipam_tunnels:
            tunnel = by_handle.get(tunnel_handle(node.name))
        if not isinstance(tunnel, ipaddress.IPv4Address):
            continue
        out.append(
            Vtep(
                node.name,
                node.ipv4.ip,
                tunnel,
                vtep_mac(node.name),
                tuple(blocks.get(node.name, ())),
                tuple(borrowed.get(node.name, ())),
            )
        )
    return out


def vxlan_routes(local: str, all_vteps: Iterable[Vtep], device: str = DEVICE) -> list[DesiredRoute]:
    """Routes to every other node's VXLAN blocks and borrowed addresses, through ``device``."""
    out = []
    for v in all_vteps:
        if v.node == local:
            continue
        for block in v.blocks:
            out.append(
                DesiredRoute(
                    block,
                    "unicast",
                    dev=device,
                    via=v.tunnel_ip,
                    onlink=True,
                    why=f"VXLAN block of {v.node}",
                )
            )
        for addr in v.borrowed:
            net = ipaddress.ip_network(f"{addr}/32")
            out.append(
                DesiredRoute(
                    net,
                    "unicast",
                    dev=device,
                    via=v.tunnel_ip,
                    onlink=True,
                    why=f"address borrowed by {v.node}",
                )
            )
    return sorted(out, key=lambda r: r.dst)


def _link_matches(link: Any, local: Vtep, mtu: int) -> tuple[bool, bool]:
    """(identity ok, attributes ok): VNI/port/local address need a new device; MAC/MTU a set."""
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False, False
    data = info.get("IFLA_INFO_DATA")
    identity = (
        data.get("IFLA_VXLAN_ID") == VNI
        and data.get("IFLA_VXLAN_PORT") == PORT
        and data.get("IFLA_VXLAN_LOCAL") == str(local.node_ip)
        and data.get("IFLA_VXLAN_LEARNING") == 0
    )
    attrs = (link.get("IFLA_ADDRESS") or "").lower() == local.mac and link.get("IFLA_MTU") == mtu
    return identity, attrs


def reconcile_device(
    ipr: Any,
    local: Vtep,
    remotes: Iterable[Vtep],
    *,
    mtu: int = DEFAULT_MTU,
    device: str = DEVICE,
) -> VxlanResult:
    """Make ``device`` match ``local`` and hold exactly the neighbour/FDB entries of ``remotes``."""
    result = VxlanResult()
    index = link_index(ipr, device)
    if index is not None:
        identity, attrs = _link_matches(ipr.get_links(index)[0], local, mtu)
        if not identity:
            logger.info("recreating %s: VNI, port, local address or learning differ", device)
            ipr.link("del", index=index)
            index = None
        elif not attrs:
            ipr.link("set", index=index, address=local.mac, mtu=mtu)
            result.changes.append(f"set {device} mac {local.mac} mtu {mtu}")
    if index is None:
        ipr.link(
            "add",
            ifname=device,
            kind="vxlan",
            vxlan_id=VNI,
            vxlan_port=PORT,
            vxlan_local=str(local.node_ip),
            vxlan_learning=0,
            address=local.mac,
            mtu=mtu,
        )
        index = link_index(ipr, device)
        if index is None:
            raise RuntimeError(f"{device} was created but cannot be found")
        result.created = True
        logger.info("created %s (VNI %d, local %s)", device, VNI, local.node_ip)
    ensure_link_up(ipr, index)

    if ensure_address(ipr, index, local.tunnel_ip, 32):
        result.changes.append(f"address {local.tunnel_ip}/32")
    for msg in ipr.get_addr(index=index):
        addr = msg.get("address")
        if (
            addr
            and ipaddress.ip_address(addr) != local.tunnel_ip
            and not ipaddress.ip_address(addr).is_link_local
        ):
            ipr.addr("del", index=index, address=addr, prefixlen=msg["prefixlen"])
            result.changes.append(f"removed address {addr}")

    wanted: Mapping[str, Vtep] = {v.node: v for v in remotes if v.node != local.node}
    want_neigh = {(v.tunnel_ip, v.mac) for v in wanted.values()}
    want_fdb = {(v.mac, v.node_ip) for v in wanted.values()}
    for n in dump_neighbours(ipr, index):
        # Only static entries are someone's configuration; the kernel's own (NOARP multicast
        # entries such as ff02::16 for MLD) come back by themselves.
        if not n.permanent or n.dst.is_multicast:
            continue
        if (n.dst, n.lladdr) not in want_neigh and remove_neighbour(ipr, n):
            result.changes.append(f"removed neighbour {n.dst}")
    for e in dump_fdb(ipr, index):
        if (e.lladdr, e.dst) not in want_fdb and remove_fdb(ipr, e):
            result.changes.append(f"removed fdb {e.lladdr} -> {e.dst}")
    for v in sorted(wanted.values(), key=lambda v: v.node):
        if ensure_neighbour(ipr, index, v.tunnel_ip, v.mac):
            result.changes.append(f"neighbour {v.tunnel_ip} -> {v.mac}")
        if ensure_fdb(ipr, index, v.mac, v.node_ip):
            result.changes.append(f"fdb {v.mac} -> {v.node_ip}")
    if result.changed:
        logger.info("%s: %s", device, "; ".join(result.changes) or "created")
    return result
