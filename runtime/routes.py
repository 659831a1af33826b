"""The node's own routes: one /32 (/128) per local workload, one blackhole per IPAM block.

**Protocol number.** Every route Tortie programs carries route protocol :data:`ROUTE_PROTOCOL`
(81), and that number is how Tortie knows a route is its own: a reconcile removes stale routes
of protocol 81 and never touches a route of any other protocol. Felix's default
(``deviceRouteProtocol`` 3, "boot") is what ``ip route add`` uses when no protocol is given, so
with it an administrator's route would be indistinguishable from ours and could be deleted.
81 is unassigned in iproute2's ``rt_protos`` and in the kernel's ``RTPROT_*`` list (BIRD is 12,
``bgp`` 186). Pass ``protocol=`` to use another number; ``tortie`` shows it as ``proto 81``.

**Metric.** Routes get ``priority`` :data:`DEFAULT_PRIORITY` (1024, BGPConfiguration's
``ipv4NormalRoutePriority``). BIRD reads workload /32s back through ``learn`` and, because their
metric is not below the normal priority, ``calico_aggr`` keeps them out of BGP: only the block
aggregate is advertised (SEMANTICS.md §IPAM).

**Reconcile** (:func:`reconcile`) takes the *complete* desired set of protocol-81 routes in the
table (workload routes, block blackholes, VXLAN routes: see ``runtime/vxlan.py``) and:

- adds what is missing; if another protocol already holds the same key (prefix, table,
  metric), it reports a conflict and leaves the foreign route alone;
- replaces our own route whose target changed;
- deletes protocol-81 routes that are no longer desired;
- does nothing else, so a second run makes no writes.

>>> import ipaddress
>>> from runtime.ipam_state import Block
>>> b = Block(ipaddress.ip_network("10.65.0.0/26"), "pool", "n1")
>>> [r.dst for r in block_routes([b], "n1")]
[IPv4Network('10.65.0.0/26')]
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.frontend.model import Endpoint
from runtime.ipam_state import Block
from runtime.netlink import (
    KernelRoute,
    add_route,
    delete_route,
    dump_routes,
    replace_route,
)

__all__ = [
    "DEFAULT_PRIORITY",
    "MAIN_TABLE",
    "ROUTE_PROTOCOL",
    "DesiredRoute",
    "ReconcileResult",
    "block_routes",
    "reconcile",
    "workload_routes",
]

logger = logging.getLogger(__name__)

ROUTE_PROTOCOL = 81
DEFAULT_PRIORITY = 1024
MAIN_TABLE = 254

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class DesiredRoute:
    """A route Tortie wants, before interface names are resolved to indexes.

    ``kind`` is ``"unicast"`` (to ``dev``, optionally ``via`` a gateway, ``onlink``) or
    ``"blackhole"``. ``why`` is for logs only.
    """

    dst: IPNet
    kind: str = "unicast"
    dev: str | None = None
    via: IPAddr | None = None
    onlink: bool = False
    why: str = ""

    @property
    def family(self) -> int:
        return self.dst.version


@dataclass(slots=True)
class ReconcileResult:
    added: list[KernelRoute] = field(default_factory=list)
    replaced: list[KernelRoute] = field(default_factory=list)
    removed: list[KernelRoute] = field(default_factory=list)
    unchanged: list[KernelRoute] = field(default_factory=list)
    # Desired routes not programmed: (route, reason) — a foreign route holds the key, or the
    # interface does not exist (yet).
    skipped: list[tuple[DesiredRoute, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


def workload_routes(endpoints: Iterable[Endpoint], node: str) -> list[DesiredRoute]:
    """A host route per address of each workload endpoint on ``node``, to its interface."""
    out = []
    for ep in endpoints:
        if ep.is_host or ep.node != node or not ep.interface:
            continue
        for addr in ep.ips:
            net = ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
            out.append(DesiredRoute(net, "unicast", dev=ep.interface, why=f"workload {ep.id}"))
    return sorted(out, key=lambda r: (r.dst.version, r.dst))


def block_routes(blocks: Iterable[Block], node: str) -> list[DesiredRoute]:
    """A blackhole per block affine to ``node``, so traffic to an unused address in the block
    is dropped here instead of following a default route back out. /32 and /128 "blocks" get
    none: a workload route would have exactly the same prefix. Blocks being released
    (``pendingDeletion``) are left out."""
    out = []
    for b in blocks:
        if b.affinity != node or b.state == "pendingDeletion":
            continue
        if b.cidr.prefixlen == b.cidr.max_prefixlen:
            continue
        out.append(DesiredRoute(b.cidr, "blackhole", why=f"IPAM block of pool {b.pool}"))
    return sorted(out, key=lambda r: (r.dst.version, r.dst))


def _resolve(
    ipr: Any,
    desired: DesiredRoute,
    protocol: int,
    table: int,
    priority: int,
    indexes: Mapping[str, int | None],
) -> KernelRoute | str:
    if desired.kind == "blackhole":
        return KernelRoute(desired.family, desired.dst, "blackhole", protocol, table, priority)
    oif = None
    if desired.dev is not None:
        oif = indexes.get(desired.dev)
        if oif is None:
            return f"interface {desired.dev} does not exist"
    return KernelRoute(
        desired.family,
        desired.dst,
        "unicast",
        protocol,
        table,
        priority,
        oif=oif,
        gateway=desired.via,
        onlink=desired.onlink,
    )


def reconcile(
    ipr: Any,
    desired: Iterable[DesiredRoute],
    *,
    protocol: int = ROUTE_PROTOCOL,
    table: int = MAIN_TABLE,
    priority: int = DEFAULT_PRIORITY,
    families: Iterable[int] = (4, 6),
) -> ReconcileResult:
    """Make the ``protocol`` routes of ``table`` equal ``desired`` (see the module docstring)."""
    if not 0 < protocol < 256 or protocol in (2, 3):  # 2 kernel, 3 boot: never "ours"
        raise ValueError(f"route protocol {protocol} cannot identify Tortie's routes")
    result = ReconcileResult()
    wanted = list(desired)
    families = tuple(families)
    names = {d.dev for d in wanted if d.dev is not None}
    indexes = {name: _index(ipr, name) for name in sorted(names)}

    want: dict[tuple[int, IPNet, int, int], KernelRoute] = {}
    for d in sorted(wanted, key=lambda d: (d.family, d.dst)):
        if d.family not in families:
            continue
        resolved = _resolve(ipr, d, protocol, table, priority, indexes)
        if isinstance(resolved, str):
            result.skipped.append((d, resolved))
            logger.warning("route %s (%s) skipped: %s", d.dst, d.why, resolved)
            continue
        if resolved.key in want:
            logger.warning("route %s wanted twice (%s); keeping the first", d.dst, d.why)
            continue
        want[resolved.key] = resolved

    for family in families:
        current = dump_routes(ipr, family, table)
        ours = {r.key: r for r in current if r.proto == protocol}
        foreign = {r.key: r for r in current if r.proto != protocol}
        for key, route in ours.items():
            if key not in want and delete_route(ipr, route):
                result.removed.append(route)
                logger.info("removed stale route %s", _show(route))
        mine = sorted((kv for kv in want.items() if kv[0][0] == family), key=lambda kv: kv[0][1:])
        for key, route in mine:
            have = ours.get(key)
            if have is not None:
                if have.same_target(route):
                    result.unchanged.append(have)
                else:
                    replace_route(ipr, route)
                    result.replaced.append(route)
                    logger.info("replaced route %s (was %s)", _show(route), _show(have))
                continue
            if key in foreign:
                reason = f"a protocol {foreign[key].proto} route already holds {route.dst} metric {route.priority}"
                result.skipped.append((_desired_of(route, wanted), reason))
                logger.warning("route %s not programmed: %s", route.dst, reason)
                continue
            add_route(ipr, route)
            result.added.append(route)
            logger.info("added route %s", _show(route))
    return result


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _desired_of(route: KernelRoute, wanted: list[DesiredRoute]) -> DesiredRoute:
    return next(d for d in wanted if d.dst == route.dst)


def _show(r: KernelRoute) -> str:
    if r.type == "blackhole":
        return f"blackhole {r.dst} proto {r.proto} metric {r.priority}"
    via = f" via {r.gateway}" if r.gateway else ""
    return f"{r.dst}{via} oif {r.oif} proto {r.proto} metric {r.priority}"
