"""BGP sessions of one node: mesh, explicit BGPPeers and reverse peerings (SEMANTICS.md §BGP).

- **Precedence.** Explicit BGPPeers whose scope is this node (``node`` or ``nodeSelector``),
  then global BGPPeers, then *reverse* peerings (``reversePeering: Auto``, the default: when node
  X's BGPPeer selects this node by ``peerSelector``, this node peers back with X), then the
  node-to-node mesh. A second session to an address and port already taken is dropped (a
  warning, B005, when two BGPPeers ask for it; silently for the mesh and reverse peerings).
- **Passive side.** Between two Calico nodes (mesh, ``peerSelector`` and reverse peerings) the
  side with the greater address *string* is ``passive on``, so exactly one side connects.
- **Route reflectors.** A node with a cluster id leaves the mesh, and mesh nodes skip it. On a
  reflector, an iBGP peer whose cluster id is empty or different is an ``rr client``.
- **Passwords** are secret references (``name/key``); their values come from ``secrets``. A
  reference with no value drops the session (B002): a session without its password would never
  come up, and one with a wrong password must not be rendered quietly. A value BIRD cannot quote
  drops it too (B001).
- **Not implemented**, reported as B003 and the session dropped: BGPFilter (``filters``) and
  ``localWorkloadSelector`` peers.
- **Times** are Go durations turned into seconds; above BIRD's limits they are clamped (B006).
  ``keepaliveTime`` also sets ``hold time`` to three times its value (RFC 4271's ratio; BIRD
  wants the keepalive to be at most half the hold time).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from compiler.diagnostics import NO_SPAN, DiagnosticSink, Span
from compiler.frontend.model import BGPConfiguration, BGPPeer, Node, ResourceSet
from compiler.frontend.selector import SelectorError, evaluate, parse
from runtime.bgp.model import NAME_RE, BirdPeer
from runtime.bgp.text import (
    duration_seconds,
    protocol_id,
    split_peer_ip,
    unsafe_reason,
)

__all__ = ["DEFAULT_ASN", "PeerBuilder", "node_ip", "selects"]

DEFAULT_ASN = 64512
DEFAULT_MESH_RESTART = 120
MAX_RESTART = 4095  # BGP graceful restart time is a 12-bit field (RFC 4724)
MAX_HOLD = 65535

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _labels(node: Node) -> dict[str, str]:
    return dict(node.labels)


def selects(selector: str | None, node: Node) -> bool:
    try:
        return evaluate(parse(selector or "all()"), _labels(node))
    except SelectorError:
        return False


def node_ip(node: Node, family: int) -> IPAddr | None:
    iface = node.ipv4 if family == 4 else node.ipv6
    return iface.ip if iface is not None else None


def _cluster_id(node: Node, sink: DiagnosticSink) -> str | None:
    """The node's route reflector cluster id, checked: BIRD takes a dotted quad."""
    text = node.route_reflector_cluster_id
    if not text:
        return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        sink.error(
            "B001",
            f"node {node.name}: routeReflectorClusterID {text!r} is not a dotted quad",
            node.span,
        )
        return None


class PeerBuilder:
    """Decides the sessions of node ``node`` (see the module docstring)."""

    def __init__(
        self,
        rs: ResourceSet,
        node: Node,
        sink: DiagnosticSink,
        secrets: Mapping[str, str],
    ) -> None:
        self.rs, self.me, self.sink, self.secrets = rs, node, sink, secrets
        self.nodes = sorted(rs.nodes, key=lambda n: n.name)
        configs = {c.name: c for c in rs.bgp_configurations}
        self.default = configs.get("default", BGPConfiguration("default"))
        self.own = configs.get(f"node.{node.name}")
        self.configs = configs
        self.global_asn = self.default.as_number or DEFAULT_ASN
        self.my_asn = self.asn_of(node)
        self.rr = _cluster_id(node, sink)

    # -- small lookups ---------------------------------------------------------------------------

    def asn_of(self, node: Node) -> int:
        return node.asn if node.asn is not None else self.global_asn

    def listen_port(self, node: Node) -> int | None:
        cfg = self.configs.get(f"node.{node.name}")
        port = (cfg.listen_port if cfg else None) or self.default.listen_port
        return port if port not in (None, 179) else None

    def node_by_ip(self, addr: IPAddr) -> Node | None:
        return next((n for n in self.nodes if node_ip(n, addr.version) == addr), None)

    def secret(self, ref: str | None, span: Span, what: str) -> tuple[bool, str | None]:
        """(ok, value). Not ok: the session must be dropped."""
        if ref is None:
            return True, None
        value = self.secrets.get(ref)
        if value is None:
            self.sink.error("B002", f"{what}: no value for password secret {ref!r}", span)
            return False, None
        reason = unsafe_reason(value)
        if reason is not None:  # the message must not show the password itself
            self.sink.error(
                "B001",
                f"{what}: the value of password secret {ref!r} cannot be written to bird.cfg "
                f"({reason}); BIRD strings have no escapes",
                span,
            )
            return False, None
        return True, value

    def seconds(self, text: str | None, span: Span, what: str, limit: int) -> int | None:
        if text is None:
            return None
        try:
            value = duration_seconds(text)
        except ValueError:
            self.sink.error("B006", f"{what}: {text!r} is not a duration", span)
            return None
        if value > limit:
            self.sink.warning("B006", f"{what}: {text} is above BIRD's limit; using {limit}s", span)
            value = limit
        return value

    # -- sessions --------------------------------------------------------------------------------

    def common(self, family: int, peer_ip: IPAddr, asn: int, local_asn: int) -> dict[str, object]:
        my_ip = node_ip(self.me, family)
        strict = self.default.bind_mode == "NodeIP"
        internal = asn == local_asn
        rr_client = False
        other = self.node_by_ip(peer_ip)
        other_rr = other.route_reflector_cluster_id if other else None
        if self.rr and internal and (other_rr or None) != self.rr:
            # An iBGP peer outside our cluster (a client, or a node of another RR cluster).
            rr_client = True
        return {
            "neighbor": str(peer_ip),
            "asn": asn,
            "local_asn": local_asn,
            "internal": internal,
            "local_address": str(my_ip) if strict and my_ip else None,
            "local_port": self.listen_port(self.me),
            "rr_client": rr_client,
            "rr_cluster_id": self.rr if rr_client else None,
        }

    def mesh(self, family: int) -> list[BirdPeer]:
        my_ip = node_ip(self.me, family)
        enabled = self.default.node_to_node_mesh is not False
        if my_ip is None or not enabled or self.rr:
            return []
        ok, password = self.secret(
            self.default.node_mesh_password, self.default.span, "nodeMeshPassword"
        )
        if not ok:
            return []
        restart = self.seconds(
            self.default.node_mesh_max_restart_time,
            self.default.span,
            "nodeMeshMaxRestartTime",
            MAX_RESTART,
        )
        out = []
        for other in self.nodes:
            ip = node_ip(other, family)
            if other.name == self.me.name or ip is None or ip == my_ip:
                continue
            if other.route_reflector_cluster_id:
                continue
            fields = self.common(family, ip, self.asn_of(other), self.my_asn)
            out.append(
                BirdPeer(
                    name=f"Mesh_{protocol_id(ip)}",
                    kind="mesh",
                    source=f"node {other.name}",
                    port=self.listen_port(other),
                    source_address=str(my_ip),
                    passive=str(ip) > str(my_ip),
                    password=password,
                    graceful_restart_time=restart if restart is not None else DEFAULT_MESH_RESTART,
                    **fields,  # type: ignore[arg-type]
                )
            )
        return out

    def applies_here(self, peer: BGPPeer) -> bool:
        if peer.node is not None:
            return peer.node == self.me.name
        if peer.node_selector is not None:
            return selects(peer.node_selector, self.me)
        return True

    def targets(self, peer: BGPPeer, family: int) -> list[tuple[IPAddr, int | None, int, bool]]:
        """(address, port, AS, is a Calico node) for each session ``peer`` asks for."""
        if peer.peer_ip is not None:
            try:
                addr, port = split_peer_ip(peer.peer_ip)
            except ValueError:
                self.sink.error(
                    "B004", f"BGPPeer {peer.name}: bad peerIP {peer.peer_ip!r}", peer.span
                )
                return []
            if addr.version != family:
                return []
            if peer.as_number is None:
                self.sink.error("B004", f"BGPPeer {peer.name}: peerIP needs asNumber", peer.span)
                return []
            return [(addr, port, peer.as_number, self.node_by_ip(addr) is not None)]
        out = []
        for other in self.nodes:
            ip = node_ip(other, family)
            if ip is None or other.name == self.me.name or not selects(peer.peer_selector, other):
                continue
            asn = peer.as_number if peer.as_number is not None else self.asn_of(other)
            out.append((ip, self.listen_port(other), asn, True))
        return out

    def explicit(
        self, peer: BGPPeer, family: int, reverse_of: Node | None = None
    ) -> list[BirdPeer]:
        my_ip = node_ip(self.me, family)
        if my_ip is None:
            return []
        if peer.filters or peer.local_workload_selector:
            feature = "filters (BGPFilter)" if peer.filters else "localWorkloadSelector"
            self.sink.error(
                "B003",
                f"BGPPeer {peer.name}: {feature} is not implemented; peer skipped",
                peer.span,
            )
            return []
        ok, password = self.secret(peer.password, peer.span, f"BGPPeer {peer.name}")
        if not ok:
            return []
        if reverse_of is not None:
            ip = node_ip(reverse_of, family)
            if ip is None:
                return []
            targets = [(ip, self.listen_port(reverse_of), self.asn_of(reverse_of), True)]
            prefix = "Node"
        else:
            targets = self.targets(peer, family)
            prefix = "Global" if peer.node is None and peer.node_selector is None else "Node"
        restart = self.seconds(
            peer.max_restart_time, peer.span, f"BGPPeer {peer.name} maxRestartTime", MAX_RESTART
        )
        keepalive = self.seconds(
            peer.keepalive_time, peer.span, f"BGPPeer {peer.name} keepaliveTime", MAX_HOLD // 3
        )
        out = []
        for addr, port, asn, calico_node in targets:
            if addr == my_ip:
                continue
            local_asn = peer.local_as_number if peer.local_as_number is not None else self.my_asn
            fields = self.common(family, addr, asn, local_asn)
            internal = bool(fields["internal"])
            next_hop = {"Self": "self", "Keep": "keep"}.get(peer.next_hop_mode or "")
            if next_hop is None and peer.keep_original_next_hop and not internal:
                next_hop = "keep"
            name = f"{prefix}_{protocol_id(addr)}" + (f"_port_{port}" if port else "")
            out.append(
                BirdPeer(
                    name=name,
                    kind="node" if prefix == "Node" else "global",
                    source=f"BGPPeer {peer.name}"
                    + (f" (reverse, node {reverse_of.name})" if reverse_of else ""),
                    port=port,
                    source_address=None if peer.source_address == "None" else str(my_ip),
                    passive=calico_node and str(addr) > str(my_ip),
                    ttl_security=peer.ttl_security or None,
                    password=password,
                    graceful_restart_time=restart,
                    keepalive_time=keepalive,
                    hold_time=keepalive * 3 if keepalive else None,
                    next_hop=next_hop,
                    allow_local_as=peer.num_allowed_local_as_numbers or None,
                    **fields,  # type: ignore[arg-type]
                )
            )
        return out

    def sessions(self, family: int) -> list[BirdPeer]:
        peers = sorted(self.rs.bgp_peers, key=lambda p: p.name)
        mine = [p for p in peers if self.applies_here(p)]
        scoped = [p for p in mine if p.node or p.node_selector]
        global_ = [p for p in mine if not (p.node or p.node_selector)]
        # (session, the BGPPeer it came from, whether it is a forward explicit peering)
        ordered: list[tuple[BirdPeer, BGPPeer | None, bool]] = []
        for p in (*scoped, *global_):
            ordered += [(bp, p, True) for bp in self.explicit(p, family)]
        for p in peers:
            if (
                p.peer_selector is None
                or p.reverse_peering == "Manual"
                or not selects(p.peer_selector, self.me)
            ):
                continue
            for other in self.nodes:
                if other.name != self.me.name and (
                    (p.node == other.name)
                    if p.node
                    else (p.node_selector is None or selects(p.node_selector, other))
                ):
                    ordered += [(bp, p, False) for bp in self.explicit(p, family, reverse_of=other)]
        ordered += [(bp, None, False) for bp in self.mesh(family)]
        out: dict[tuple[str, int | None], tuple[BirdPeer, BGPPeer | None, bool]] = {}
        for bp, origin, forward in ordered:
            key = (bp.neighbor, bp.port)
            if key in out:
                kept, kept_origin, kept_forward = out[key]
                if (
                    forward
                    and kept_forward
                    and origin is not None
                    and kept_origin is not None
                    and origin.name != kept_origin.name
                ):
                    self.sink.warning(
                        "B005",
                        f"{bp.source}: a session to {bp.neighbor} already comes from {kept.source}; skipped",
                        origin.span,
                    )
                continue
            if not NAME_RE.fullmatch(
                bp.name
            ):  # unreachable with ipaddress-made names; belt and braces
                self.sink.error(
                    "B001", f"protocol name {bp.name!r} is not a valid BIRD symbol", NO_SPAN
                )
                continue
            out[key] = (bp, origin, forward)
        return sorted((v[0] for v in out.values()), key=lambda bp: (bp.kind != "mesh", bp.name))
