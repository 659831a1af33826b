"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) → Calico form
(SEMANTICS.md §ClusterNetworkPolicy / admin tiers).

``tier: Admin`` goes to tier ``kube-admin``, ``Baseline`` to ``kube-baseline``; ``priority``
becomes ``order``; Accept/Deny/Pass become Allow/Deny/Pass. The subject becomes a GNP-style
``namespaceSelector`` plus a pod ``selector`` (pods only: a subject never selects host
endpoints). Peers become namespaceSelector + selector pairs or nets, one rule per protocol per
peer as for Kubernetes NetworkPolicy.

A rule that cannot be converted becomes a *fail-closed* Deny rule matching everything (the
API's own instruction for peers an implementation does not understand), in addition to the
error: if someone runs the artifacts anyway, the unknown rule denies rather than allows.
Experimental peers Tortie does not implement (``nodes``, ``domainNames``) are errors.
"""

from __future__ import annotations

from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.model import PROTOCOLS, EntityRule, IPNet, Policy, PortSpec, Rule
from compiler.frontend.yaml_loader import Mapping, Node

from .collect import Collector
from .fields import Fields, expect_map
from .k8s import read_label_selector, simplify_ports, to_calico_selector
from .meta import Doc, read_meta
from .values import check_safe, parse_cidr

__all__ = ["read_cluster_network_policy"]

TIERS = {"Admin": "kube-admin", "Baseline": "kube-baseline"}
ACTIONS = {"Accept": "Allow", "Deny": "Deny", "Pass": "Pass"}
MAX_RULES = 25

_Peer = tuple[str | None, str | None, tuple[IPNet, ...], Span]  # selector, nsSelector, nets, span


def _namespaced_pod(sink: DiagnosticSink, node: Node | None, what: str) -> tuple[str, str] | None:
    m = expect_map(sink, node, what)
    if m is None:
        return None
    f = Fields(sink, m, what, ("namespaceSelector", "podSelector"))
    if not f.has("podSelector"):
        f.missing("podSelector")
    ns = read_label_selector(sink, f.get("namespaceSelector"), "namespaceSelector")
    pod = read_label_selector(sink, f.get("podSelector"), "podSelector")
    ns_sel = to_calico_selector(ns, pod=False) or "all()"
    return to_calico_selector(pod, pod=True), ns_sel


def _subject(sink: DiagnosticSink, f: Fields) -> tuple[str, str] | None:
    """(selector, namespaceSelector) of the policy."""
    m = f.map("subject", required=True)
    if m is None:
        return None
    sf = Fields(sink, m, "subject", ("namespaces", "pods"))
    if sf.has("namespaces") == sf.has("pods"):
        sink.error("E023", 'subject needs exactly one of "namespaces" and "pods"', m.span)
        return None
    if sf.has("namespaces"):
        ns = read_label_selector(sink, sf.get("namespaces"), "namespaces")
        return to_calico_selector(None, pod=True), to_calico_selector(ns, pod=False) or "all()"
    return _namespaced_pod(sink, sf.get("pods"), "subject pods")


def _peer(sink: DiagnosticSink, node: Node, egress: bool) -> _Peer | None:
    m = expect_map(sink, node, "a peer")
    if m is None:
        return None
    known = ("namespaces", "pods") + (("networks", "nodes", "domainNames") if egress else ())
    f = Fields(sink, m, "ClusterNetworkPolicy peer", known)
    given = [k for k in known if f.has(k)]
    if len(given) != 1:
        sink.error("E023", f"a peer needs exactly one of {', '.join(known)}", m.span)
        return None
    key = given[0]
    if key in ("nodes", "domainNames"):
        sink.error(
            "E067", f'"{key}" peers (experimental) are not supported by Tortie', f.key_span(key)
        )
        return None
    if key == "networks":
        nets = []
        for item in f.str_list("networks", max_items=25):
            net = parse_cidr(sink, item, "network")
            if net is not None:
                nets.append(net)
        return None, None, tuple(nets), m.span
    if key == "namespaces":
        ns = read_label_selector(sink, f.get("namespaces"), "namespaces")
        return (
            to_calico_selector(None, pod=True),
            to_calico_selector(ns, pod=False) or "all()",
            (),
            m.span,
        )
    pair = _namespaced_pod(sink, f.get("pods"), "pods peer")
    return None if pair is None else (pair[0], pair[1], (), m.span)


def _protocols(sink: DiagnosticSink, f: Fields) -> dict[str, list[PortSpec] | None]:
    """protocol name ("" for a named port, which has no protocol) → ports (None = all)."""
    out: dict[str, list[PortSpec] | None] = {}
    items = f.seq("protocols", max_items=25)
    if not items:
        return {"": None}
    for item in items:
        m = expect_map(sink, item, "a protocols item")
        if m is None:
            continue
        pf = Fields(sink, m, "protocols item", ("tcp", "udp", "sctp", "destinationNamedPort"))
        given = [k for k in ("tcp", "udp", "sctp", "destinationNamedPort") if pf.has(k)]
        if len(given) != 1:
            sink.error(
                "E023",
                "a protocols item needs exactly one of tcp, udp, sctp, destinationNamedPort",
                m.span,
            )
            continue
        if given[0] == "destinationNamedPort":
            name = pf.str_node("destinationNamedPort")
            if name is not None and check_safe(sink, name, "named port"):
                out.setdefault("", []).append(PortSpec(0, 0, str(name.value), name.span))  # type: ignore[union-attr]
            continue
        proto = given[0].upper()
        port = _dest_port(sink, pf.map(given[0]))
        if port is None:
            continue
        if port == "all":
            out[proto] = None
        elif proto not in out or out[proto]:
            out.setdefault(proto, []).append(port)  # type: ignore[union-attr]
    return out


def _dest_port(sink: DiagnosticSink, m: Mapping | None) -> PortSpec | str | None:
    if m is None:
        return "all"
    f = Fields(sink, m, "protocol match", ("destinationPort",))
    dp = f.map("destinationPort")
    if dp is None:
        sink.error("E022", "a protocol match needs destinationPort", m.span)
        return None
    pf = Fields(sink, dp, "destinationPort", ("number", "range"))
    if pf.has("number") == pf.has("range"):
        sink.error("E023", 'destinationPort needs exactly one of "number" and "range"', dp.span)
        return None
    if pf.has("number"):
        n = pf.int("number", 1, 65535)
        return None if n is None else PortSpec(n, n, None, pf.span("number"))
    rm = pf.map("range")
    if rm is None:
        return None
    rf = Fields(sink, rm, "port range", ("start", "end"))
    start, end = rf.int("start", 1, 65535, required=True), rf.int("end", 1, 65535, required=True)
    if start is None or end is None:
        return None
    if start >= end:
        sink.error("E050", f"port range start {start} must be below end {end}", rm.span)
        return None
    return PortSpec(start, end, None, rm.span)


def _rule(sink: DiagnosticSink, node: Node, egress: bool) -> list[Rule]:
    m = expect_map(sink, node, "a rule")
    if m is None:
        return []
    peers_key = "to" if egress else "from"
    f = Fields(sink, m, "ClusterNetworkPolicy rule", ("name", "action", peers_key, "protocols"))
    before = sink.error_count
    name = f.str_node("name")
    if name is not None and check_safe(sink, name, "rule name") and len(str(name.value)) > 100:
        sink.error("E023", "a rule name may have at most 100 characters", name.span)
    action = f.enum("action", tuple(ACTIONS), required=True)
    peers = [_peer(sink, p, egress) for p in f.seq(peers_key, required=True, max_items=25)]
    if not peers and f.has(peers_key):
        sink.error("E022", f'"{peers_key}" needs at least one peer', f.span(peers_key))
    protocols = _protocols(sink, f)
    annotations = (("name", str(name.value)),) if name is not None and name.value else ()
    if sink.error_count > before or action is None:
        return [Rule("Deny", annotations=annotations, span=m.span)]  # fail closed
    rules = []
    for proto in sorted(protocols):
        ports = simplify_ports(protocols[proto] or [])
        for peer in peers:
            assert peer is not None
            sel, ns_sel, nets, span = peer
            ent = EntityRule(nets=nets, selector=sel, namespace_selector=ns_sel, span=span)
            dst_ports = EntityRule(ports=ports, span=m.span)
            number = PROTOCOLS[proto] if proto else None
            if egress:
                dst = EntityRule(
                    nets=nets, selector=sel, namespace_selector=ns_sel, ports=ports, span=span
                )
                rules.append(
                    Rule(
                        ACTIONS[action],
                        protocol=number,
                        destination=dst,
                        annotations=annotations,
                        span=m.span,
                    )
                )
            else:
                rules.append(
                    Rule(
                        ACTIONS[action],
                        protocol=number,
                        source=ent,
                        destination=dst_ports,
                        annotations=annotations,
                        span=m.span,
                    )
                )
    return rules


def read_cluster_network_policy(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    spec = expect_map(sink, doc.node.get("spec"), '"spec"')
    if spec is None:
        sink.error("E022", 'ClusterNetworkPolicy has no "spec"', doc.kind_span)
        return
    f = Fields(
        sink,
        spec,
        "ClusterNetworkPolicy spec",
        ("tier", "priority", "subject", "ingress", "egress"),
    )
    before = sink.error_count
    tier = f.enum("tier", tuple(TIERS), required=True)
    priority = f.int("priority", 0, 1000, required=True)
    subject = _subject(sink, f)
    head_ok = sink.error_count == before
    ingress = [
        r for item in f.seq("ingress", max_items=MAX_RULES) for r in _rule(sink, item, False)
    ]
    egress = [r for item in f.seq("egress", max_items=MAX_RULES) for r in _rule(sink, item, True)]
    types = tuple(t for t, rs in (("Ingress", ingress), ("Egress", egress)) if rs) or ("Ingress",)
    if not head_ok or tier is None or priority is None or subject is None:
        return
    policy = Policy(
        kind="ClusterNetworkPolicy",
        name=meta.name,
        namespace=None,
        tier=TIERS[tier],
        order=float(priority),
        selector=subject[0],
        namespace_selector=subject[1],
        types=types,
        ingress=tuple(ingress),
        egress=tuple(egress),
        span=doc.span,
    )
    col.add_policy(policy, meta.name_span, force=True)  # bad rules became fail-closed denies
