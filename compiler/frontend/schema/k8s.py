"""Kubernetes NetworkPolicy → Calico form (SEMANTICS.md §Kubernetes NetworkPolicy, Conversion).

This reproduces Calico's own converter (libcalico-go ``k8sSelectorToCalico``,
``k8sRuleToCalico``, ``SimplifyPorts``) so that selector strings, rule order and port ranges come
out as Calico would have them:

* a label selector becomes ``projectcalico.org/orchestrator == 'k8s'`` (pod selectors only), then
  ``k == 'v'`` for matchLabels in key order, then matchExpressions in order: ``k in { 'a', 'b' }``,
  ``k not in { ... }``, ``has(k)``, ``! has(k)`` (Calico's spelling; SEMANTICS.md writes
  ``!has(k)``, which is the same selector after ``canon``), all joined by ``&&``. An empty
  namespace selector is ``all()``;
* one Calico rule per protocol (sorted by name) per peer (in order); ports of one protocol are
  merged, named ports first, then numeric ranges sorted and coalesced ("80", "81" → 80:81);
* a port without protocol is TCP (the API server's default, which raw YAML has not been through);
  no ports at all → a rule without protocol;
* ``policyTypes`` missing → ``[Ingress]``, plus ``Egress`` when ``spec.egress`` is non-empty.

Everything Kubernetes' API validation would reject is an error here with a span; a rule with an
error is dropped, the rest of the policy is kept (and the run fails).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.model import PROTOCOLS, EntityRule, IPNet, Policy, PortSpec, Rule
from compiler.frontend.yaml_loader import Mapping, Node, Scalar

from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .policy import STAGED_ACTIONS, nonempty
from .values import check_label_key, check_label_value, parse_cidr

__all__ = [
    "LabelSelector",
    "read_k8s_policy",
    "read_label_selector",
    "simplify_ports",
    "to_calico_selector",
]

ORCHESTRATOR_TERM = "projectcalico.org/orchestrator == 'k8s'"
K8S_POLICY_ORDER = 1000.0
_OPS = ("In", "NotIn", "Exists", "DoesNotExist")
K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_LETTER = re.compile("[a-z]")


@dataclass(slots=True)
class LabelSelector:
    match_labels: dict[str, str] = field(default_factory=dict)
    expressions: list[tuple[str, str, list[str]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions


def read_label_selector(sink: DiagnosticSink, node: Node | None, what: str) -> LabelSelector | None:
    """A metav1.LabelSelector; None when absent. Keys and values are validated as labels."""
    m = expect_map(sink, node, what)
    if m is None:
        return None
    f = Fields(sink, m, what, ("matchLabels", "matchExpressions"))
    sel = LabelSelector()
    ml = f.map("matchLabels") if "matchLabels" in f.present else None
    for key, value in ml.items if ml is not None else ():
        k = str(key.value)
        reason = check_label_key(k)
        if reason is not None:
            sink.error("E027", f"invalid label key {k!r}: {reason}", key.span)
            continue
        if not isinstance(value, Scalar) or not isinstance(value.value, str):
            sink.error(
                "E021", f"matchLabels value for {k!r} must be a string (quote it)", value.span
            )
            continue
        reason = check_label_value(value.value)
        if reason is not None:
            sink.error(
                "E027", f"invalid value {value.value!r} for label {k!r}: {reason}", value.span
            )
            continue
        sel.match_labels[k] = value.value
    for item in f.seq("matchExpressions") if "matchExpressions" in f.present else ():
        em = expect_map(sink, item, "a matchExpressions item")
        if em is None:
            continue
        fe = Fields(sink, em, "matchExpressions item", ("key", "operator", "values"))
        key = fe.str_node("key", required=True)
        op = fe.enum("operator", _OPS, required=True)
        values = fe.str_list("values")
        if key is None or op is None:
            continue
        reason = check_label_key(str(key.value))
        if reason is not None:
            sink.error("E027", f"invalid label key {key.value!r}: {reason}", key.span)
            continue
        bad = [v for v in values if check_label_value(str(v.value)) is not None]
        for v in bad:
            sink.error(
                "E027",
                f"invalid label value {v.value!r}: {check_label_value(str(v.value))}",
                v.span,
            )
        if op in ("In", "NotIn") and not values:
            sink.error("E023", f"operator {op} needs at least one value", fe.key_span("operator"))
            continue
        if op in ("Exists", "DoesNotExist") and fe.has("values") and values:
            sink.error("E023", f"operator {op} takes no values", fe.key_span("values"))
            continue
        if not bad:
            sel.expressions.append((str(key.value), op, [str(v.value) for v in values]))
    return sel


def to_calico_selector(sel: LabelSelector | None, *, pod: bool) -> str:
    """Calico's k8sSelectorToCalico; see the module docstring for the exact spelling."""
    terms = [ORCHESTRATOR_TERM] if pod else []
    if sel is None:
        return " && ".join(terms)
    if not pod and sel.empty:
        return "all()"
    terms += [f"{k} == '{sel.match_labels[k]}'" for k in sorted(sel.match_labels)]
    for key, op, values in sel.expressions:
        quoted = ", ".join(f"'{v}'" for v in values)
        if op == "In":
            terms.append(f"{key} in {{ {quoted} }}")
        elif op == "NotIn":
            terms.append(f"{key} not in {{ {quoted} }}")
        elif op == "Exists":
            terms.append(f"has({key})")
        else:
            terms.append(f"! has({key})")
    return " && ".join(terms)


def simplify_ports(ports: list[PortSpec]) -> tuple[PortSpec, ...]:
    """Calico's SimplifyPorts: named ports first (as given), then numeric ranges sorted by start
    and merged when they overlap or touch."""
    named = [p for p in ports if p.name is not None]
    numeric = sorted((p for p in ports if p.name is None), key=lambda p: p.min)
    if len(numeric) <= 1:
        return tuple(named + numeric)
    merged: list[PortSpec] = []
    for p in numeric:
        if merged and p.min <= merged[-1].max + 1:
            last = merged[-1]
            if p.max > last.max:
                merged[-1] = PortSpec(last.min, p.max, None, last.span)
        else:
            merged.append(p)
    return tuple(named + merged)


@dataclass(slots=True)
class _Peer:
    selector: str | None = None
    namespace_selector: str | None = None
    nets: tuple[IPNet, ...] = ()
    not_nets: tuple[IPNet, ...] = ()
    span: Span | None = None


def _peer(sink: DiagnosticSink, node: Node) -> _Peer | None:
    m = expect_map(sink, node, "a peer")
    if m is None:
        return None
    f = Fields(sink, m, "NetworkPolicy peer", ("podSelector", "namespaceSelector", "ipBlock"))
    if f.has("ipBlock"):
        if f.has("podSelector") or f.has("namespaceSelector"):
            sink.error(
                "E023",
                "a peer with ipBlock cannot also have podSelector or namespaceSelector",
                f.key_span("ipBlock"),
            )
            return None
        return _ip_block(sink, f.map("ipBlock"), m.span)
    if not f.has("podSelector") and not f.has("namespaceSelector"):
        sink.error("E022", "a peer needs podSelector, namespaceSelector or ipBlock", m.span)
        return None
    pod = read_label_selector(sink, f.get("podSelector"), "podSelector")
    ns = read_label_selector(sink, f.get("namespaceSelector"), "namespaceSelector")
    ns_sel = to_calico_selector(ns, pod=False)
    return _Peer(to_calico_selector(pod, pod=True), ns_sel or None, span=m.span)


def _ip_block(sink: DiagnosticSink, m: Mapping | None, span: Span) -> _Peer | None:
    if m is None:
        return None
    f = Fields(sink, m, "ipBlock", ("cidr", "except"))
    cidr_node = f.str_node("cidr", required=True)
    cidr = parse_cidr(sink, cidr_node, "ipBlock cidr") if cidr_node is not None else None
    excepts = []
    for item in f.str_list("except"):
        net = parse_cidr(sink, item, "ipBlock except")
        if net is None or cidr is None:
            continue
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
            sink.error(
                "E040", f"ipBlock except {net} must be a strict subset of cidr {cidr}", item.span
            )
            continue
        excepts.append(net)
    if cidr is None:
        return None
    return _Peer(nets=(cidr,), not_nets=tuple(excepts), span=span)


def _port(sink: DiagnosticSink, node: Node) -> tuple[str, PortSpec | None] | None:
    """(protocol, port or None for "all ports") of one NetworkPolicyPort."""
    m = expect_map(sink, node, "a port")
    if m is None:
        return None
    f = Fields(sink, m, "NetworkPolicy port", ("protocol", "port", "endPort"))
    proto = f.enum("protocol", K8S_PROTOCOLS) if f.has("protocol") else "TCP"
    port_node = f.scalar("port")
    end = f.int("endPort", 1, 65535)
    if proto is None:
        return None
    if port_node is None:
        if f.has("endPort"):
            sink.error("E050", "endPort needs a numeric port", f.key_span("endPort"))
            return None
        return proto, None
    v = port_node.value
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 65535:
            sink.error("E050", f"port {v} is out of range 1-65535", port_node.span)
            return None
        if end is not None and end < v:
            sink.error("E050", f"endPort {end} is below port {v}", f.span("endPort"))
            return None
        return proto, PortSpec(v, end if end is not None else v, None, port_node.span)
    if isinstance(v, str):
        if not (len(v) <= 15 and _PORT_NAME.fullmatch(v) and _LETTER.search(v) and "--" not in v):
            sink.error(
                "E050",
                f"invalid named port {v!r}: at most 15 lower-case letters, digits and '-', with at least one letter",
                port_node.span,
            )
            return None
        if f.has("endPort"):
            sink.error("E050", "endPort cannot be used with a named port", f.key_span("endPort"))
            return None
        return proto, PortSpec(0, 0, v, port_node.span)
    sink.error("E021", "port must be a number or a name", port_node.span)
    return None


def _convert_rule(sink: DiagnosticSink, node: Node, ingress: bool) -> list[Rule] | None:
    m = expect_map(sink, node, "a rule")
    if m is None:
        return None
    peers_key = "from" if ingress else "to"
    f = Fields(
        sink, m, f"NetworkPolicy {'ingress' if ingress else 'egress'} rule", (peers_key, "ports")
    )
    before = sink.error_count
    peers: list[_Peer | None] = [_peer(sink, p) for p in f.seq(peers_key)] or [None]
    proto_ports: dict[str, list[PortSpec] | None] = {}
    port_items = [_port(sink, p) for p in f.seq("ports")]
    if sink.error_count > before:
        return None  # Calico drops a rule that fails to convert; the run fails on the error
    if not port_items:
        proto_ports = {"": None}
    for proto, port in (pp for pp in port_items if pp is not None):
        if port is None:
            proto_ports[proto] = None
        elif proto not in proto_ports or proto_ports[proto]:
            proto_ports.setdefault(proto, []).append(port)  # type: ignore[union-attr]
    rules = []
    span = m.span
    for proto in sorted(proto_ports):
        ports = simplify_ports(proto_ports[proto] or [])
        number = PROTOCOLS[proto] if proto else None
        if ingress:  # the peers are sources; the ports are the destination's
            dst = EntityRule(ports=ports, span=span)
            for peer in peers:
                src = _peer_entity(peer, (), span)
                rules.append(Rule("Allow", protocol=number, source=src, destination=dst, span=span))
        else:  # the peers are destinations, with the ports
            for peer in peers:
                dst = _peer_entity(peer, ports, span)
                rules.append(Rule("Allow", protocol=number, destination=dst, span=span))
    return rules


def _peer_entity(peer: _Peer | None, ports: tuple[PortSpec, ...], rule_span: Span) -> EntityRule:
    """A peer (None: every peer) as an EntityRule, at the peer's span or else the rule's."""
    if peer is None:
        return EntityRule(ports=ports, span=rule_span)
    return EntityRule(
        nets=peer.nets,
        not_nets=peer.not_nets,
        selector=peer.selector,
        namespace_selector=peer.namespace_selector,
        ports=ports,
        span=peer.span or rule_span,
    )


def _rules(f: Fields, key: str) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for item in f.seq(key):
        converted = _convert_rule(f.sink, item, key == "ingress")
        out.extend(converted or [])
    return tuple(out)


def read_k8s_policy(doc: Doc, col: Collector) -> None:
    """networking.k8s.io/v1 NetworkPolicy, or projectcalico.org/v3 StagedKubernetesNetworkPolicy."""
    sink = doc.sink
    staged = doc.kind == "StagedKubernetesNetworkPolicy"
    meta = read_meta(doc, namespaced=True)
    spec = expect_map(sink, doc.node.get("spec"), '"spec"')
    if spec is None:
        sink.error("E022", f'{doc.kind} has no "spec"', doc.kind_span)
        return
    known = ("podSelector", "policyTypes", "ingress", "egress") + (
        ("stagedAction",) if staged else ()
    )
    f = Fields(sink, spec, f"{doc.kind} spec", known)
    if not f.has("podSelector"):
        f.missing("podSelector")
    pod_sel = read_label_selector(sink, f.get("podSelector"), "podSelector")
    types: list[str] = []
    for item in f.str_list("policyTypes"):
        if item.value not in ("Ingress", "Egress"):
            sink.error(
                "E061", f'policyTypes must be Ingress or Egress, not "{item.value}"', item.span
            )
        elif item.value not in types:
            types.append(str(item.value))
    if not f.has("policyTypes"):
        types = ["Ingress"] + (["Egress"] if nonempty(f, "egress") else [])
    for direction in ("Ingress", "Egress"):
        key = direction.lower()
        if f.has("policyTypes") and nonempty(f, key) and direction not in types:
            sink.warning(
                "W002",
                f"{key} rules are never used: policyTypes does not include {direction}",
                f.key_span(key),
            )
    head_ok = col.clean
    policy = Policy(
        kind=doc.kind if staged else "KubernetesNetworkPolicy",
        name=meta.name,
        namespace=meta.namespace,
        tier="default",
        order=K8S_POLICY_ORDER,
        selector=to_calico_selector(pod_sel, pod=True),
        types=tuple(t for t in ("Ingress", "Egress") if t in types) or ("Ingress",),
        ingress=_rules(f, "ingress"),
        egress=_rules(f, "egress"),
        staged=staged,
        staged_action=(f.enum("stagedAction", STAGED_ACTIONS) or "Set") if staged else "Set",
        span=doc.span,
    )
    # Calico keeps a policy whose rules fail to convert (without those rules); the errors fail the
    # run anyway. A bad podSelector or policyTypes, though, would change what the policy selects.
    if head_ok:
        col.add_policy(policy, meta.name_span, force=True)
