"""Kubernetes core objects as Calico sees them (SEMANTICS.md §Implicit labels, §Interface names).

``kubectl get -o yaml`` prints far more than policy needs (managedFields, status.conditions,
volumes...), so these readers are *lenient*: they read only the fields listed below, check those
strictly, and ignore the rest without a word.

* Pod → WorkloadEndpoint: pod labels minus any ``pcns.``/``pcsa.`` label, plus
  ``projectcalico.org/namespace``, ``projectcalico.org/orchestrator=k8s`` and
  ``projectcalico.org/serviceaccount`` (when ``spec.serviceAccountName`` is written); profiles
  ``kns.<ns>`` then ``ksa.<ns>.<sa>``; interface ``cali`` + sha1("<ns>.<pod>")[:11]; named
  container ports; IPs from status.podIPs / podIP. Pods that Calico gives no endpoint are
  counted in ``skipped``: host-networked, unscheduled (no nodeName), finished
  (Succeeded/Failed), or without an IP yet.
* Namespace → ``kns.<ns>`` profile (labels ``pcns.<k>``, ``pcns.projectcalico.org/name``,
  allow/allow) and a :class:`Namespace`. The API server always sets
  ``kubernetes.io/metadata.name=<ns>``; hand-written YAML may lack it, so it is added.
* ServiceAccount → ``ksa.<ns>.<sa>`` profile (labels ``pcsa.<k>``, ``pcsa.projectcalico.org/name``).
* Node → :class:`Node` from Calico's annotations (``projectcalico.org/IPv4Address``...), falling
  back to the first InternalIP.

A pod's ``kns.`` profile is referenced even when the Namespace object is absent, as Calico does:
Felix skips a profile that does not exist, so such a pod gets no ``pcns.`` labels and no default
allow (the collector warns, W004).
"""

from __future__ import annotations

import hashlib
import ipaddress

from compiler.frontend.model import (
    PROTOCOLS,
    Endpoint,
    IPAddr,
    NamedPort,
    Namespace,
    Node,
    Profile,
    Rule,
    labels_of,
)
from compiler.frontend.yaml_loader import Mapping, Scalar

from .bgp import parse_asn
from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, Meta, read_meta
from .pod_fast import read_pod_fast
from .values import check_name, parse_ip

__all__ = [
    "interface_name",
    "read_namespace",
    "read_node",
    "read_pod",
    "read_service_account",
    "wep_name",
]

NS_LABEL = "projectcalico.org/namespace"
ORCH_LABEL = "projectcalico.org/orchestrator"
SA_LABEL = "projectcalico.org/serviceaccount"
_STRIPPED = ("pcns.", "pcsa.")


def interface_name(namespace: str, pod: str) -> str:
    """The host-side veth name Calico's CNI plugin gives a pod (15 characters, IFNAMSIZ - 1)."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def wep_name(node: str, pod: str, endpoint: str = "eth0") -> str:
    """Calico's WorkloadEndpoint name ``<node>-k8s-<pod>-<endpoint>`` with ``-`` doubled inside
    each part, so the name can be split back."""
    return "-".join(part.replace("-", "--") for part in (node, "k8s", pod, endpoint))


def _lenient(doc: Doc, key: str, where: str) -> Fields | None:
    m = expect_map(doc.sink, doc.node.get(key), f'"{key}"')
    return None if m is None else Fields(doc.sink, m, where, (), strict=False)


def _container_ports(doc: Doc, spec: Fields) -> tuple[NamedPort, ...]:
    sink = doc.sink
    out: dict[str, NamedPort] = {}
    for c in spec.seq("containers"):
        cm = expect_map(sink, c, "a container")
        if cm is None:
            continue
        cf = Fields(sink, cm, "container", (), strict=False)
        for p in cf.seq("ports"):
            pm = expect_map(sink, p, "a container port")
            if pm is None:
                continue
            pf = Fields(sink, pm, "container port", (), strict=False)
            name = pf.str_node("name")
            port = pf.int("containerPort", 1, 65535, required=True)
            proto = pf.enum("protocol", ("TCP", "UDP", "SCTP")) or "TCP"
            if name is None or port is None:
                continue  # unnamed ports play no part in policy
            if check_name(sink, name, "container port name", label=True):
                out.setdefault(
                    f"{name.value}/{proto}", NamedPort(str(name.value), PROTOCOLS[proto], port)
                )
    return tuple(sorted(out.values(), key=lambda p: (p.name, p.protocol, p.port)))


def _pod_ips(doc: Doc, status: Fields | None) -> tuple[IPAddr, ...]:
    if status is None:
        return ()
    ips: list[IPAddr] = []
    for item in status.seq("podIPs"):
        m = expect_map(doc.sink, item, "a podIPs item")
        if m is not None:
            node = Fields(doc.sink, m, "podIPs item", (), strict=False).str_node("ip")
            ip = parse_ip(doc.sink, node, "pod IP") if node is not None else None
            if ip is not None and ip not in ips:
                ips.append(ip)
    single = status.str_node("podIP")
    if single is not None and single.value:
        ip = parse_ip(doc.sink, single, "pod IP")
        if ip is not None and ip not in ips:
            ips.append(ip)
    return tuple(sorted(ips, key=lambda a: (a.version, int(a))))


def read_pod(doc: Doc, col: Collector) -> None:
    fast = read_pod_fast(doc)
    if fast is not None:  # a well-formed pod: same result, a fraction of the time (pod_fast.py)
        add_pod(doc, col, *fast)
        return
    sink = doc.sink
    meta = read_meta(doc, namespaced=True, strict=False)
    before = sink.error_count
    spec = _lenient(doc, "spec", "Pod spec")
    status = _lenient(doc, "status", "Pod status")
    if spec is None:
        sink.error("E022", 'Pod has no "spec"', doc.kind_span)
        return
    host_network = spec.bool("hostNetwork")
    node = spec.str("nodeName")
    sa_node = spec.str_node("serviceAccountName") or spec.str_node("serviceAccount")
    sa = None
    if sa_node is not None and sa_node.value and check_name(sink, sa_node, "service account name"):
        sa = str(sa_node.value)
    ports = _container_ports(doc, spec)
    ips = _pod_ips(doc, status)
    phase = status.str("phase") if status is not None else None
    if sink.error_count > before:
        return
    add_pod(doc, col, meta, bool(host_network), node, sa, ports, ips, phase)


def add_pod(
    doc: Doc,
    col: Collector,
    meta: Meta,
    host_network: bool,
    node: str | None,
    sa: str | None,
    ports: tuple[NamedPort, ...],
    ips: tuple[IPAddr, ...],
    phase: str | None,
) -> None:
    """The WorkloadEndpoint of a validated pod, or the reason Calico gives it none."""
    reason = None
    if host_network:
        reason = "Pod: hostNetwork"
    elif not node:
        reason = "Pod: not scheduled"
    elif phase in ("Succeeded", "Failed"):
        reason = "Pod: finished"
    elif not ips:
        reason = "Pod: no IP"
    if reason is not None:
        col.skipped[reason] += 1
        return
    assert node is not None and meta.namespace is not None
    labels = {k: v for k, v in meta.labels.items() if not k.startswith(_STRIPPED)}
    labels[NS_LABEL] = meta.namespace
    labels[ORCH_LABEL] = "k8s"
    profiles = [f"kns.{meta.namespace}"]
    if sa is not None:
        labels[SA_LABEL] = sa
        profiles.append(f"ksa.{meta.namespace}.{sa}")
    ep = Endpoint(
        kind="WorkloadEndpoint",
        name=wep_name(node, meta.name),
        namespace=meta.namespace,
        node=node,
        interface=interface_name(meta.namespace, meta.name),
        ips=ips,
        labels=labels_of(labels),
        profiles=tuple(profiles),
        ports=ports,
        pod=meta.name,
        service_account=sa,
        span=doc.span,
    )
    if col.claim("Pod", meta.namespace, meta.name, meta.name_span, "Pod"):
        col.pods.append(ep)


def read_namespace(doc: Doc, col: Collector) -> None:
    meta = read_meta(doc, namespaced=False, strict=False, label_name=True)
    labels = dict(meta.labels)
    labels["kubernetes.io/metadata.name"] = meta.name
    ns = Namespace(meta.name, labels_of(labels), doc.span)
    if not col.claim("Namespace", None, meta.name, meta.name_span, "Namespace"):
        return
    col.namespaces[meta.name] = ns
    to_apply = {f"pcns.{k}": v for k, v in labels.items()} | {
        "pcns.projectcalico.org/name": meta.name
    }
    allow = (Rule("Allow", span=doc.span),)
    profile = Profile(f"kns.{meta.name}", labels_of(to_apply), allow, allow, doc.span)
    col.add_profile(profile, meta.name_span, f"Namespace {meta.name!r} (profile)")


def read_service_account(doc: Doc, col: Collector) -> None:
    meta = read_meta(doc, namespaced=True, strict=False)
    if not col.claim("ServiceAccount", meta.namespace, meta.name, meta.name_span, "ServiceAccount"):
        return
    to_apply = {f"pcsa.{k}": v for k, v in meta.labels.items()} | {
        "pcsa.projectcalico.org/name": meta.name
    }
    profile = Profile(f"ksa.{meta.namespace}.{meta.name}", labels_of(to_apply), (), (), doc.span)
    col.add_profile(
        profile, meta.name_span, f"ServiceAccount {meta.namespace}/{meta.name} (profile)"
    )


def _iface(
    doc: Doc, node: Scalar, version: int
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        iface = ipaddress.ip_interface(str(node.value).strip())
    except ValueError:
        doc.sink.error("E040", f"invalid node address {node.value!r}", node.span)
        return None
    if iface.version != version:
        doc.sink.error("E040", f"node address {node.value!r} is not IPv{version}", node.span)
        return None
    return iface


def read_node(doc: Doc, col: Collector) -> None:
    """A Kubernetes v1 Node (Calico keeps its BGP settings in annotations)."""
    sink = doc.sink
    meta = read_meta(doc, namespaced=False, strict=False)
    md = expect_map(sink, doc.node.get("metadata"), "metadata")
    ann = expect_map(sink, md.get("annotations"), "annotations") if md is not None else None
    f = Fields(
        sink, ann if ann is not None else Mapping([], doc.span), "annotations", (), strict=False
    )
    v4 = f.str_node("projectcalico.org/IPv4Address")
    v6 = f.str_node("projectcalico.org/IPv6Address")
    ipv4 = _iface(doc, v4, 4) if v4 is not None else None
    ipv6 = _iface(doc, v6, 6) if v6 is not None else None
    if ipv4 is None and v4 is None:
        ipv4 = _internal_ip(doc)
    asn_node = f.str_node("projectcalico.org/ASNumber")
    asn = None
    if asn_node is not None:
        asn = parse_asn(sink, asn_node)
    rr_node = f.str_node("projectcalico.org/RouteReflectorClusterID")
    rr = None
    if (
        rr_node is not None
        and rr_node.value
        and parse_ip(sink, rr_node, "route reflector cluster id") is not None
    ):
        rr = str(rr_node.value)
    vx = f.str_node("projectcalico.org/IPv4VXLANTunnelAddr")
    vxlan = parse_ip(sink, vx, "VXLAN tunnel address") if vx is not None else None
    if not col.claim("KubernetesNode", None, meta.name, meta.name_span, "Node"):
        return
    col.k8s_nodes[meta.name] = Node(
        meta.name, ipv4, ipv6, asn, rr or None, labels_of(meta.labels), vxlan, doc.span
    )


def _internal_ip(doc: Doc) -> ipaddress.IPv4Interface | None:
    status = _lenient(doc, "status", "Node status")
    if status is None:
        return None
    for item in status.seq("addresses"):
        m = expect_map(doc.sink, item, "an address")
        if m is None:
            continue
        af = Fields(doc.sink, m, "address", (), strict=False)
        if af.str("type") == "InternalIP":
            text = af.str("address") or ""
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if addr.version == 4:
                return ipaddress.IPv4Interface(f"{addr}/32")
    return None
