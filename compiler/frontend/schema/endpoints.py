"""Calico endpoints and network sets: HostEndpoint, WorkloadEndpoint, NetworkSet, GlobalNetworkSet.

Labels follow SEMANTICS.md §Implicit labels: a WorkloadEndpoint and a namespaced NetworkSet get
``projectcalico.org/namespace`` (and a WEP its orchestrator and service-account labels), any
``pcns.``/``pcsa.`` label written on the object is stripped so that nothing can claim another
namespace's labels, and HostEndpoints and GlobalNetworkSets get nothing implicit.
"""

from __future__ import annotations

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import (
    PORT_PROTOCOLS,
    Endpoint,
    IPAddr,
    IPNet,
    NamedPort,
    NetworkSet,
    labels_of,
)
from compiler.frontend.yaml_loader import Mapping

from .collect import Collector
from .fields import Fields, expect_map
from .k8s_core import NS_LABEL, ORCH_LABEL, SA_LABEL, interface_name
from .meta import Doc, read_meta
from .values import check_interface, check_name, check_safe, parse_cidr, parse_ip, parse_protocol

__all__ = ["read_host_endpoint", "read_network_set", "read_workload_endpoint"]

HEP_FIELDS = ("node", "interfaceName", "expectedIPs", "profiles", "ports")
WEP_FIELDS = (
    "orchestrator",
    "workload",
    "node",
    "containerID",
    "pod",
    "endpoint",
    "serviceAccountName",
    "ipNetworks",
    "ipNATs",
    "ipv4Gateway",
    "ipv6Gateway",
    "profiles",
    "interfaceName",
    "mac",
    "ports",
    "allowSpoofedSourcePrefixes",
)
WEP_IGNORED = ("awsElasticIPs", "qosControls")  # cloud/QoS settings with no policy meaning
_STRIPPED = ("pcns.", "pcsa.")


def _spec(doc: Doc, known: tuple[str, ...], ignored: tuple[str, ...] = ()) -> Fields:
    m = expect_map(doc.sink, doc.node.get("spec"), '"spec"')
    return Fields(
        doc.sink, m if m is not None else Mapping([], doc.span), f"{doc.kind} spec", known, ignored
    )


def _profiles(f: Fields) -> tuple[str, ...]:
    out = []
    for item in f.str_list("profiles"):
        if check_name(f.sink, item, "profile name") and item.value not in out:
            out.append(str(item.value))
    return tuple(out)


def _ports(f: Fields, *, wep: bool) -> tuple[NamedPort, ...]:
    sink = f.sink
    out = []
    extra = ("hostPort", "hostIP") if wep else ()
    for item in f.seq("ports"):
        m = expect_map(sink, item, "a port")
        if m is None:
            continue
        pf = Fields(sink, m, "endpoint port", ("name", "protocol", "port") + extra)
        name = pf.str_node("name", required=True)
        proto_node = pf.get("protocol")
        proto = parse_protocol(sink, proto_node) if proto_node is not None else None
        if proto_node is None:
            pf.missing("protocol")
        elif proto is not None and proto not in PORT_PROTOCOLS:
            sink.error("E051", "a named port needs protocol TCP, UDP or SCTP", proto_node.span)
            proto = None
        port = pf.int("port", 1, 65535, required=True)
        if wep:
            pf.int("hostPort", 0, 65535)
            host_ip = pf.str_node("hostIP")
            if host_ip is not None and host_ip.value:
                parse_ip(sink, host_ip, "hostIP")
        if (
            name is None
            or proto is None
            or port is None
            or not check_name(sink, name, "port name", label=True)
        ):
            continue
        out.append(NamedPort(str(name.value), proto, port))
    return tuple(out)


def read_host_endpoint(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    before = sink.error_count
    f = _spec(doc, HEP_FIELDS)
    node = f.str_node("node", required=True)
    if node is not None:
        check_name(sink, node, "node name")
    iface_node = f.str_node("interfaceName")
    iface = (
        check_interface(sink, iface_node, allow_star=True, allow_empty=True)
        if iface_node is not None
        else ""
    )
    ips: list[IPAddr] = []
    for item in f.str_list("expectedIPs"):
        ip = parse_ip(sink, item, "expected IP")
        if ip is not None and ip not in ips:
            ips.append(ip)
    if not iface and not f.has("expectedIPs"):
        sink.error(
            "E071", "a HostEndpoint needs interfaceName or expectedIPs (or both)", f.node.span
        )
    profiles = _profiles(f)
    ports = _ports(f, wep=False)
    if sink.error_count > before or node is None:
        return
    ep = Endpoint(
        kind="HostEndpoint",
        name=meta.name,
        namespace=None,
        node=str(node.value),
        interface=iface or "",
        ips=tuple(ips),
        labels=labels_of(meta.labels),
        profiles=profiles,
        ports=ports,
        span=doc.span,
    )
    col.add_endpoint(ep, meta.name_span)


def _host_prefixes(sink: DiagnosticSink, f: Fields, key: str) -> list[IPAddr]:
    out: list[IPAddr] = []
    for item in f.str_list(key):
        net = parse_cidr(sink, item, "IP network")
        if net is None:
            continue
        if net.prefixlen != net.max_prefixlen:
            sink.error(
                "E040",
                f"{key} entry {item.value!r} must be a single address (/32 or /128)",
                item.span,
            )
            continue
        out.append(net.network_address)
    return out


def read_workload_endpoint(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=True)
    before = sink.error_count
    f = _spec(doc, WEP_FIELDS, WEP_IGNORED)
    node = f.str_node("node", required=True)
    if node is not None:
        check_name(sink, node, "node name")
    orchestrator = f.str_node("orchestrator")
    if orchestrator is not None:
        check_safe(sink, orchestrator, "orchestrator")
    pod = f.str_node("pod")
    if pod is not None:
        check_name(sink, pod, "pod name")
    for key in ("workload", "containerID", "endpoint", "mac"):
        s = f.str_node(key)
        if s is not None:
            check_safe(sink, s, key)
    sa_node = f.str_node("serviceAccountName")
    sa = (
        str(sa_node.value)
        if sa_node is not None
        and sa_node.value
        and check_name(sink, sa_node, "service account name")
        else None
    )
    for key in ("ipv4Gateway", "ipv6Gateway"):
        g = f.str_node(key)
        if g is not None and g.value:
            parse_ip(sink, g, key)
    ips = _host_prefixes(sink, f, "ipNetworks")
    nats = []
    for item in f.seq("ipNATs"):
        m = expect_map(sink, item, "an ipNATs item")
        if m is None:
            continue
        nf = Fields(sink, m, "ipNATs item", ("internalIP", "externalIP"))
        a, b = nf.str_node("internalIP", required=True), nf.str_node("externalIP", required=True)
        ia = parse_ip(sink, a, "internalIP") if a is not None else None
        ib = parse_ip(sink, b, "externalIP") if b is not None else None
        if ia is not None and ib is not None:
            nats.append((ia, ib))
    spoof: list[IPNet] = []
    for item in f.str_list("allowSpoofedSourcePrefixes"):
        net = parse_cidr(sink, item, "allowSpoofedSourcePrefixes entry")
        if net is not None:
            spoof.append(net)
    iface_node = f.str_node("interfaceName")
    iface = (
        check_interface(sink, iface_node) if iface_node is not None and iface_node.value else None
    )
    if iface is None and (iface_node is None or not iface_node.value):
        if orchestrator is not None and orchestrator.value == "k8s" and pod is not None:
            iface = interface_name(str(meta.namespace), str(pod.value))
        else:
            sink.error(
                "E072",
                "a WorkloadEndpoint needs interfaceName (or orchestrator k8s and pod to derive it)",
                f.node.span,
            )
    profiles = _profiles(f)
    ports = _ports(f, wep=True)
    if sink.error_count > before or node is None or iface is None:
        return
    labels = {k: v for k, v in meta.labels.items() if not k.startswith(_STRIPPED)}
    labels[NS_LABEL] = str(meta.namespace)
    if orchestrator is not None and orchestrator.value:
        labels[ORCH_LABEL] = str(orchestrator.value)
    if sa is not None:
        labels[SA_LABEL] = sa
    ep = Endpoint(
        kind="WorkloadEndpoint",
        name=meta.name,
        namespace=meta.namespace,
        node=str(node.value),
        interface=iface,
        ips=tuple(sorted(set(ips), key=lambda a: (a.version, int(a)))),
        labels=labels_of(labels),
        profiles=profiles,
        ports=ports,
        pod=str(pod.value) if pod is not None else None,
        service_account=sa,
        allow_spoofed_source_prefixes=tuple(spoof),
        ip_nats=tuple(nats),
        span=doc.span,
    )
    col.add_endpoint(ep, meta.name_span)


def read_network_set(doc: Doc, col: Collector) -> None:
    """NetworkSet (namespaced) or GlobalNetworkSet."""
    sink = doc.sink
    namespaced = doc.kind == "NetworkSet"
    meta = read_meta(doc, namespaced=namespaced)
    before = sink.error_count
    f = _spec(doc, ("nets",))
    nets: set[IPNet] = set()  # a set: feeds list thousands of CIDRs long are common
    for item in f.str_list("nets"):
        net = parse_cidr(sink, item, "CIDR in nets")
        if net is not None:
            nets.add(net)
    if sink.error_count > before:
        return
    labels = dict(meta.labels)
    profiles: tuple[str, ...] = ()
    if namespaced:
        labels = {k: v for k, v in labels.items() if not k.startswith(_STRIPPED)}
        labels[NS_LABEL] = str(meta.namespace)
        profiles = (f"kns.{meta.namespace}",)
    ordered = tuple(sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen)))
    ns = NetworkSet(meta.name, meta.namespace, labels_of(labels), ordered, profiles, doc.span)
    if col.claim(doc.kind, meta.namespace, meta.name, meta.name_span, doc.kind):
        col.network_sets.append(ns)
