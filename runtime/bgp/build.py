"""Resources + this node's IPAM blocks -> :class:`~runtime.bgp.model.BirdConfig` (confd's job).

SEMANTICS.md §BGP is the specification; the choices it leaves open are made here:

- **Sessions** are decided in :mod:`runtime.bgp.peers`.
- **Per-node BGPConfiguration** (``node.<name>``) overrides ``listenPort``,
  ``logSeverityScreen``, ``communities`` and ``prefixAdvertisements`` of ``default``; the AS
  number, mesh, services and priorities come from ``default`` only.
- **IPIP pools** are programmed without a tunnel (B003 warning: BIRD 2 has no ``krt_tunnel``,
  and the kernels Tortie targets lack IPIP anyway).
- **Service ranges** (cluster, external and load-balancer CIDRs) are static blackholes on every
  node, accepted on export (step 6 of ``calico_export_to_bgp_peers``) and kept out of the
  kernel. Step 7 (route reflectors accept external/LB ranges) is therefore already covered.
- **Kernel programming.** Routes into VXLAN pools are never programmed by BIRD (the runtime
  does it, ``runtime/vxlan.py``), nor is anything in a pool when ``programClusterRoutes`` is
  ``Enabled``. This node's own block blackholes are left to ``runtime/routes.py`` (protocol 81)
  instead of being programmed twice.

Diagnostic codes (runtime BGP): B001 unsafe text, B002 missing secret, B003 not implemented,
B004 node or address missing, B005 duplicate session, B006 value out of BIRD's range.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compiler.diagnostics import NO_SPAN, DiagnosticSink
from compiler.frontend.model import IPPool, ResourceSet
from runtime.bgp.model import (
    BirdConfig,
    BirdFamily,
    BlockAggr,
    CommunityRule,
    KernelPoolRule,
    StaticRoute,
)
from runtime.bgp.peers import DEFAULT_ASN, PeerBuilder, node_ip
from runtime.bgp.text import UnsafeText, check_bird_string, hash_router_id, split_peer_ip
from runtime.ipam_state import Block

__all__ = ["DEFAULT_ASN", "BuildOptions", "build_config"]

DEFAULT_PRIORITY = 1024
DIRECT_EXCLUDE = ("cali*", "kube-ipvs*")
_LOG = {
    "Debug": ("all", "all"),
    "Info": ("{ info, remote, warning, error, auth, fatal, bug }", "{ states }"),
    "Warning": ("{ warning, error, auth, fatal, bug }", "{ states }"),
    "Error": ("{ error, auth, fatal, bug }", "{ states }"),
    "Fatal": ("{ fatal, bug }", "{ states }"),
}


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """``router_id``: None (the node's IPv4 address, else a hash), ``"hash"``, or an IPv4
    literal (Calico's ``CALICO_ROUTER_ID``). ``log_file``: where BIRD logs (None: syslog)."""

    router_id: str | None = None
    log_file: str | None = None


class _Builder(PeerBuilder):
    """Adds the routes and filters of each address family to the sessions."""

    # -- routes and filters ----------------------------------------------------------------------

    def communities(self, family: int) -> tuple[CommunityRule, ...]:
        src = self.own if self.own is not None and self.own.prefix_advertisements else self.default
        names = {c.name: c.value for c in self.default.communities}
        if self.own is not None:
            names.update({c.name: c.value for c in self.own.communities})
        rules = []
        for adv in src.prefix_advertisements:
            if adv.cidr.version != family:
                continue
            std: list[tuple[int, int]] = []
            large: list[tuple[int, int, int]] = []
            for ref in adv.communities:
                value = names.get(ref, ref)
                parts = value.split(":")
                if not all(p.isdigit() for p in parts) or len(parts) not in (2, 3):
                    self.sink.error(
                        "B001", f"community {ref!r} ({value!r}) is not aa:nn or aa:nn:mm", src.span
                    )
                    continue
                nums = [int(p) for p in parts]
                if len(nums) == 2 and max(nums) <= 0xFFFF:
                    std.append((nums[0], nums[1]))
                elif len(nums) == 3 and max(nums) <= 0xFFFFFFFF:
                    large.append((nums[0], nums[1], nums[2]))
                else:
                    self.sink.error("B006", f"community {value!r} is out of range", src.span)
            rules.append(CommunityRule(str(adv.cidr), tuple(std), tuple(large)))
        return tuple(rules)

    def family(self, family: int, blocks: list[Block], pools: list[IPPool]) -> BirdFamily:
        my_ip = node_ip(self.me, family)
        prio_field = "ipv4_normal_route_priority" if family == 4 else "ipv6_normal_route_priority"
        priority = getattr(self.default, prio_field) or DEFAULT_PRIORITY
        mine = [b for b in blocks if b.cidr.version == family and b.affinity == self.me.name]
        static_blocks = [
            b for b in mine if b.state != "pending" and b.cidr.prefixlen < b.cidr.max_prefixlen
        ]
        aggr = tuple(BlockAggr(str(b.cidr), b.state, b in static_blocks) for b in mine)
        statics = [StaticRoute(str(b.cidr), None, f"IPAM block ({b.state})") for b in static_blocks]
        svc = [
            n
            for n in (
                *self.default.service_cluster_ips,
                *self.default.service_external_ips,
                *self.default.service_loadbalancer_ips,
            )
            if n.version == family
        ]
        statics += [StaticRoute(str(n), None, "service addresses") for n in sorted(set(svc))]
        for peer in sorted(self.rs.bgp_peers, key=lambda p: p.name):
            if peer.reachable_by and peer.peer_ip and self.applies_here(peer):
                try:
                    addr, _ = split_peer_ip(peer.peer_ip)
                    gw = ipaddress.ip_address(peer.reachable_by)
                except ValueError:
                    continue
                if addr.version == family == gw.version:
                    statics.append(
                        StaticRoute(
                            f"{addr}/{addr.max_prefixlen}",
                            str(gw),
                            f"reachableBy of BGPPeer {peer.name}",
                        )
                    )
        fam_pools = sorted((p for p in pools if p.cidr.version == family), key=lambda p: p.cidr)
        kernel = []
        for p in fam_pools:
            if p.vxlan_mode != "Never":
                kernel.append(
                    KernelPoolRule(
                        str(p.cidr), False, "VXLAN pool: the runtime programs these routes"
                    )
                )
            elif self.default.program_cluster_routes == "Enabled":
                kernel.append(
                    KernelPoolRule(
                        str(p.cidr),
                        False,
                        "programClusterRoutes: the runtime programs these routes",
                    )
                )
            else:
                if p.ipip_mode != "Never":
                    self.sink.warning(
                        "B003",
                        f"IPPool {p.name}: IPIP is not implemented; routes are programmed without a tunnel",
                        p.span,
                    )
                kernel.append(KernelPoolRule(str(p.cidr), True, f"pool {p.name}"))
        return BirdFamily(
            version=family,
            node_ip=str(my_ip) if my_ip else None,
            normal_priority=priority,
            blocks=aggr,
            static_routes=tuple(dict.fromkeys(statics)),
            disabled_export_pools=tuple(str(p.cidr) for p in fam_pools if p.disable_bgp_export),
            enabled_pools=tuple(str(p.cidr) for p in fam_pools if not p.disable_bgp_export),
            service_cidrs=tuple(str(n) for n in sorted(set(svc))),
            kernel_pools=tuple(kernel),
            runtime_blocks=tuple(str(b.cidr) for b in static_blocks),
            communities=self.communities(family),
            peers=tuple(self.sessions(family)),
        )


def build_config(
    rs: ResourceSet,
    node_name: str,
    blocks: Iterable[Block],
    sink: DiagnosticSink,
    *,
    secrets: Mapping[str, str] | None = None,
    options: BuildOptions | None = None,
) -> BirdConfig | None:
    """The BIRD configuration of ``node_name``; None (with a B004 error) for an unknown node."""
    node = next((n for n in rs.nodes if n.name == node_name), None)
    if node is None:
        sink.error("B004", f"no Node named {node_name!r} in the input", NO_SPAN)
        return None
    options = options if options is not None else BuildOptions()
    b = _Builder(rs, node, sink, secrets or {})
    if options.router_id == "hash":
        router_id = hash_router_id(node.name)
    elif options.router_id:
        try:
            rid = ipaddress.IPv4Address(options.router_id)
        except ValueError as e:
            raise ValueError(f"router id {options.router_id!r}: {e}") from None
        if int(rid) == 0:
            raise ValueError("router id 0.0.0.0: a BGP router id must not be zero")
        router_id = str(rid)
    elif node.ipv4 is not None:
        router_id = str(node.ipv4.ip)
    else:
        router_id = hash_router_id(node.name)
    severity = (b.own.log_severity if b.own else None) or b.default.log_severity or "Info"
    log_classes, debug = _LOG.get(severity, _LOG["Info"])
    exclude = list(DIRECT_EXCLUDE)
    for pattern in b.default.ignored_interfaces:
        try:
            exclude.append(check_bird_string(pattern))
        except UnsafeText as e:
            sink.error("B001", f"ignoredInterfaces: {e}", b.default.span)
    log_file = options.log_file
    if log_file is not None:
        check_bird_string(log_file)  # a caller's path, not user input: a bug if unsafe
    block_list = sorted(blocks, key=lambda x: (x.cidr.version, x.cidr))
    pools = list(rs.ip_pools)
    families = []
    for family in (4, 6):
        has_ip = node_ip(node, family) is not None
        has_pool = any(p.cidr.version == family for p in pools)
        if has_ip or has_pool:
            families.append(b.family(family, block_list, pools))
    return BirdConfig(
        node=node.name,
        router_id=router_id,
        asn=b.my_asn,
        is_route_reflector=bool(b.rr),
        log_file=log_file,
        log_classes=log_classes,
        debug=debug,
        direct_exclude=tuple(dict.fromkeys(exclude)),
        strict_bind=b.default.bind_mode == "NodeIP",
        families=tuple(families),
    )
