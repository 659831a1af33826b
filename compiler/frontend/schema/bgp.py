"""BGPConfiguration, BGPPeer and the Calico Node (SEMANTICS.md §Resources and fields, §BGP).

Every string here ends up in ``bird.cfg``, so beyond Calico's own validation each free-form
string (community names, passwords' secret references, durations) is checked for characters that
could break out of BIRD's quoting (E026).
"""

from __future__ import annotations

import ipaddress
import re

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import (
    BGPConfiguration,
    BGPPeer,
    Community,
    PrefixAdvertisement,
)
from compiler.frontend.yaml_loader import Mapping, Scalar

from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .selectors import selector_field
from .values import check_name, check_safe, parse_cidr, parse_ip

__all__ = ["parse_asn", "read_bgp_configuration", "read_bgp_peer"]

_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+\Z")
_COMMUNITY = re.compile(r"([0-9]+):([0-9]+)(:([0-9]+))?\Z")
MAX_COMMUNITIES = 500


def parse_asn(sink: DiagnosticSink, node: Scalar) -> int | None:
    """An AS number: 0–4294967295, as an integer, a numeric string, or dotted ``high.low``."""
    v = node.value
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFFFFFF:
        return v
    if isinstance(v, float) and not v.is_integer():
        # YAML reads 1.10 as a float; the dotted form must be quoted to keep "10".
        sink.error(
            "E081", f'AS number {v} is ambiguous: quote dotted AS numbers, e.g. "1.10"', node.span
        )
        return None
    if isinstance(v, str):
        high, dot, low = v.partition(".")
        if high.isdigit() and (not dot or low.isdigit()):
            n = (int(high) << 16) + int(low) if dot else int(high)
            if (not dot or (int(high) <= 0xFFFF and int(low) <= 0xFFFF)) and n <= 0xFFFFFFFF:
                return n
    sink.error("E081", f"invalid AS number {v!r}: 0-4294967295 or dotted high.low", node.span)
    return None


def asn_field(f: Fields, key: str) -> int | None:
    node = f.scalar(key)
    return parse_asn(f.sink, node) if node is not None else None


def _duration(f: Fields, key: str) -> str | None:
    node = f.str_node(key)
    if node is None:
        return None
    if not _DURATION.match(str(node.value)):
        f.sink.error(
            "E023",
            f'"{key}" must be a duration such as 120s or 2m30s, not {node.value!r}',
            node.span,
        )
        return None
    return str(node.value)


def _secret_ref(f: Fields, key: str) -> str | None:
    """A ``{secretKeyRef: {name, key}}`` password reference, as ``name/key``."""
    m = f.map(key)
    if m is None:
        return None
    pf = Fields(f.sink, m, key, ("secretKeyRef",))
    ref = pf.map("secretKeyRef", required=True)
    if ref is None:
        return None
    rf = Fields(f.sink, ref, "secretKeyRef", ("name", "key", "optional"))
    name, k = rf.str_node("name", required=True), rf.str_node("key", required=True)
    rf.bool("optional")
    if name is None or k is None:
        return None
    if not check_name(f.sink, name, "secret name") or not check_safe(f.sink, k, "secret key"):
        return None
    return f"{name.value}/{k.value}"


def _cidr_items(f: Fields, key: str) -> tuple:
    out = []
    for item in f.seq(key):
        m = expect_map(f.sink, item, f"a {key} item")
        if m is None:
            continue
        node = Fields(f.sink, m, f"{key} item", ("cidr",)).str_node("cidr", required=True)
        net = parse_cidr(f.sink, node, "CIDR") if node is not None else None
        if net is not None:
            out.append(net)
    return tuple(out)


def _community_value(sink: DiagnosticSink, node: Scalar) -> bool:
    m = _COMMUNITY.match(str(node.value))
    if m is None:
        sink.error(
            "E081",
            f"invalid community {node.value!r}: use aa:nn (standard) or aa:nn:mm (large)",
            node.span,
        )
        return False
    parts = [int(p) for p in (m.group(1), m.group(2), m.group(4)) if p is not None]
    limit = 0xFFFF if len(parts) == 2 else 0xFFFFFFFF
    if any(p > limit for p in parts):
        sink.error("E081", f"community {node.value!r} has a part above {limit}", node.span)
        return False
    return True


def read_bgp_configuration(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    known = [
        "asNumber",
        "nodeToNodeMeshEnabled",
        "logSeverityScreen",
        "listenPort",
        "bindMode",
        "ignoredInterfaces",
        "serviceClusterIPs",
        "serviceExternalIPs",
        "serviceLoadBalancerIPs",
        "serviceLoadBalancerAggregation",
        "communities",
        "prefixAdvertisements",
        "nodeMeshPassword",
        "nodeMeshMaxRestartTime",
        "programClusterRoutes",
        "ipv4NormalRoutePriority",
        "ipv6NormalRoutePriority",
        "localWorkloadPeeringIPV4",
        "localWorkloadPeeringIPV6",
    ]
    m = expect_map(sink, doc.node.get("spec"), '"spec"')
    f = Fields(sink, m if m is not None else Mapping([], doc.span), "BGPConfiguration spec", known)
    before = sink.error_count
    communities = []
    for item in f.seq("communities", max_items=MAX_COMMUNITIES):
        cm = expect_map(sink, item, "a community")
        if cm is None:
            continue
        cf = Fields(sink, cm, "community", ("name", "value"))
        name, value = cf.str_node("name", required=True), cf.str_node("value", required=True)
        if (
            name is not None
            and value is not None
            and check_safe(sink, name, "community name")
            and _community_value(sink, value)
        ):
            communities.append(Community(str(name.value), str(value.value)))
    names = {c.name for c in communities}
    adverts = []
    for item in f.seq("prefixAdvertisements", max_items=MAX_COMMUNITIES):
        am = expect_map(sink, item, "a prefix advertisement")
        if am is None:
            continue
        af = Fields(sink, am, "prefix advertisement", ("cidr", "communities"))
        cidr_node = af.str_node("cidr", required=True)
        cidr = parse_cidr(sink, cidr_node) if cidr_node is not None else None
        refs = []
        for c in af.str_list("communities"):
            if c.value in names or (_COMMUNITY.match(str(c.value)) and _community_value(sink, c)):
                refs.append(str(c.value))
            elif not _COMMUNITY.match(str(c.value)):
                sink.error(
                    "E081",
                    f"community {c.value!r} is neither defined in communities nor a literal aa:nn",
                    c.span,
                )
        if cidr is not None:
            adverts.append(PrefixAdvertisement(cidr, tuple(refs)))
    ignored = []
    for item in f.str_list("ignoredInterfaces"):
        if check_safe(sink, item, "ignored interface pattern"):
            ignored.append(str(item.value))
    lwp = {}
    for key in ("localWorkloadPeeringIPV4", "localWorkloadPeeringIPV6"):
        node = f.str_node(key)
        if node is not None and parse_ip(sink, node, key) is not None:
            lwp[key] = str(node.value)
    cfg = BGPConfiguration(
        name=meta.name,
        as_number=asn_field(f, "asNumber"),
        node_to_node_mesh=f.bool("nodeToNodeMeshEnabled"),
        log_severity=f.enum(
            "logSeverityScreen", ("Debug", "Info", "Warning", "Error", "Fatal"), fold=True
        ),
        listen_port=f.int("listenPort", 1, 65535),
        bind_mode=f.enum("bindMode", ("None", "NodeIP")),
        ignored_interfaces=tuple(ignored),
        service_cluster_ips=_cidr_items(f, "serviceClusterIPs"),
        service_external_ips=_cidr_items(f, "serviceExternalIPs"),
        service_loadbalancer_ips=_cidr_items(f, "serviceLoadBalancerIPs"),
        communities=tuple(communities),
        prefix_advertisements=tuple(adverts),
        node_mesh_password=_secret_ref(f, "nodeMeshPassword"),
        node_mesh_max_restart_time=_duration(f, "nodeMeshMaxRestartTime"),
        service_loadbalancer_aggregation=f.enum(
            "serviceLoadBalancerAggregation", ("Enabled", "Disabled")
        ),
        program_cluster_routes=f.enum(
            "programClusterRoutes", ("Enabled", "Disabled", "EnabledNoEncapOnly")
        ),
        ipv4_normal_route_priority=f.int("ipv4NormalRoutePriority", 1, 2**31 - 1),
        ipv6_normal_route_priority=f.int("ipv6NormalRoutePriority", 1, 2**31 - 1),
        local_workload_peering_ipv4=lwp.get("localWorkloadPeeringIPV4"),
        local_workload_peering_ipv6=lwp.get("localWorkloadPeeringIPV6"),
        span=doc.span,
    )
    if meta.name != "default" and not meta.name.startswith("node."):
        sink.warning(
            "W008",
            f'BGPConfiguration {meta.name!r} is never read: Calico uses "default" and "node.<name>"',
            meta.name_span,
        )
        return
    if sink.error_count == before and col.claim(
        "BGPConfiguration", None, meta.name, meta.name_span, "BGPConfiguration"
    ):
        col.bgp_configurations.append(cfg)


def _peer_ip(sink: DiagnosticSink, node: Scalar) -> str | None:
    """``ip``, ``ip:port`` or ``[v6]:port``."""
    text = str(node.value)
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            host = ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        sink.error(
            "E081",
            f"invalid peerIP {text!r}: use an address, address:port or [v6 address]:port",
            node.span,
        )
        return None
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        sink.error("E081", f"invalid port in peerIP {text!r}", node.span)
        return None
    return text


def read_bgp_peer(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    known = [
        "node",
        "nodeSelector",
        "peerIP",
        "peerSelector",
        "asNumber",
        "localASNumber",
        "keepOriginalNextHop",
        "nextHopMode",
        "password",
        "sourceAddress",
        "maxRestartTime",
        "keepaliveTime",
        "numAllowedLocalASNumbers",
        "ttlSecurity",
        "reachableBy",
        "filters",
        "localWorkloadSelector",
        "reversePeering",
    ]
    m = expect_map(sink, doc.node.get("spec"), '"spec"')
    f = Fields(sink, m if m is not None else Mapping([], doc.span), "BGPPeer spec", known)
    before = sink.error_count
    node = f.str_node("node")
    if node is not None:
        check_name(sink, node, "node name")
    for a, b in (("node", "nodeSelector"), ("peerIP", "peerSelector")):
        if f.has(a) and f.has(b):
            sink.error("E081", f'"{a}" and "{b}" cannot both be set', f.key_span(b))
    if not (f.has("peerIP") or f.has("peerSelector") or f.has("localWorkloadSelector")):
        sink.error(
            "E081", "a BGPPeer needs peerIP, peerSelector or localWorkloadSelector", f.node.span
        )
    ip_node = f.str_node("peerIP")
    peer_ip = _peer_ip(sink, ip_node) if ip_node is not None else None
    asn = asn_field(f, "asNumber")
    if ip_node is not None and not f.has("asNumber"):
        sink.error("E081", "a BGPPeer with peerIP needs asNumber", f.key_span("peerIP"))
    reach = f.str_node("reachableBy")
    if reach is not None and reach.value:
        parse_ip(sink, reach, "reachableBy")
    filters = [str(n.value) for n in f.str_list("filters") if check_name(sink, n, "BGPFilter name")]
    peer = BGPPeer(
        name=meta.name,
        node=str(node.value) if node is not None else None,
        node_selector=selector_field(f, "nodeSelector"),
        peer_ip=peer_ip,
        peer_selector=selector_field(f, "peerSelector"),
        as_number=asn,
        local_as_number=asn_field(f, "localASNumber"),
        keep_original_next_hop=bool(f.bool("keepOriginalNextHop")),
        next_hop_mode=f.enum("nextHopMode", ("Auto", "Self", "Keep")),
        password=_secret_ref(f, "password"),
        source_address=f.enum("sourceAddress", ("UseNodeIP", "None")),
        max_restart_time=_duration(f, "maxRestartTime"),
        keepalive_time=_duration(f, "keepaliveTime"),
        num_allowed_local_as_numbers=f.int("numAllowedLocalASNumbers", 0, 10),
        ttl_security=f.int("ttlSecurity", 0, 255),
        reachable_by=str(reach.value) if reach is not None and reach.value else None,
        filters=tuple(filters),
        reverse_peering=f.enum("reversePeering", ("Auto", "Manual")),
        local_workload_selector=selector_field(f, "localWorkloadSelector"),
        span=doc.span,
    )
    if sink.error_count == before and col.claim(
        "BGPPeer", None, meta.name, meta.name_span, "BGPPeer"
    ):
        col.bgp_peers.append(peer)
