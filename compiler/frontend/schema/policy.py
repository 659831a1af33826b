"""Calico policies: NetworkPolicy, GlobalNetworkPolicy and their staged forms; Tier; Profile.

Defaults follow SEMANTICS.md §Resources and fields: tier ``default``, order missing = +∞ (None),
types from the rules present. The GNP-only fields are *known* on a NetworkPolicy so that using
one there says "only a GlobalNetworkPolicy may have it" rather than "unknown field".
"""

from __future__ import annotations

from compiler.frontend.model import Policy, Profile, Tier, labels_of
from compiler.frontend.yaml_loader import Mapping, Sequence

from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .rules import read_rules
from .selectors import selector_field
from .values import check_labels, check_name

__all__ = ["read_calico_policy", "read_profile", "read_tier"]

NP_FIELDS = (
    "order",
    "tier",
    "selector",
    "types",
    "ingress",
    "egress",
    "serviceAccountSelector",
    "performanceHints",
)
GNP_ONLY = ("namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward")
STAGED_ACTIONS = ("Set", "Delete", "Learn", "Ignore")
TYPES = ("Ingress", "Egress")

# kind -> (model kind, namespaced, staged)
POLICY_KINDS = {
    "NetworkPolicy": ("NetworkPolicy", True, False),
    "GlobalNetworkPolicy": ("GlobalNetworkPolicy", False, False),
    "StagedNetworkPolicy": ("StagedNetworkPolicy", True, True),
    "StagedGlobalNetworkPolicy": ("StagedGlobalNetworkPolicy", False, True),
}


def nonempty(f: Fields, key: str) -> bool:
    """Whether ``key`` holds a non-empty list (without reporting anything again)."""
    node = f.get(key)
    return isinstance(node, Sequence) and bool(node.items)


def read_types(f: Fields, has_ingress: bool, has_egress: bool) -> tuple[str, ...]:
    """``types`` as given (1–2 distinct of Ingress/Egress), or defaulted from the rules present.

    Rules for a direction left out of explicit types never run: that is legal but almost always
    a mistake, so it is a warning (W002).
    """
    sink = f.sink
    items = f.str_list("types")
    if not f.has("types") or (isinstance(f.get("types"), Sequence) and not items):
        # Missing or empty: the API defaults it from the rules (SEMANTICS.md, types).
        if has_egress and not has_ingress:
            return ("Egress",)
        return ("Ingress", "Egress") if has_egress else ("Ingress",)
    given: list[str] = []
    for item in items:
        v = str(item.value)
        if v not in TYPES:
            sink.error("E061", f'policy type must be Ingress or Egress, not "{v}"', item.span)
        elif v in given:
            sink.error("E061", f'policy type "{v}" is listed twice', item.span)
        else:
            given.append(v)
    for direction, present in (("Ingress", has_ingress), ("Egress", has_egress)):
        if present and given and direction not in given:
            key = direction.lower()
            sink.warning(
                "W002",
                f"{key} rules are never used: types does not include {direction}",
                f.key_span(key),
            )
    return tuple(t for t in TYPES if t in given) or ("Ingress",)


def read_tier_ref(f: Fields, col: Collector) -> str:
    node = f.str_node("tier")
    if node is None:
        return "default"
    if check_name(f.sink, node, "tier name", label=True):
        col.tier_refs.append((str(node.value), node.span))
    return str(node.value)


def read_calico_policy(doc: Doc, col: Collector) -> None:
    model_kind, namespaced, staged = POLICY_KINDS[doc.kind]
    sink = doc.sink
    meta = read_meta(doc, namespaced=namespaced)
    spec = expect_map(sink, doc.node.get("spec"), '"spec"')
    # A policy without a spec selects all() and has no rules: read it as an empty mapping.
    known = NP_FIELDS + GNP_ONLY + (("stagedAction",) if staged else ())
    f = Fields(sink, spec if spec is not None else Mapping([], doc.span), f"{doc.kind} spec", known)
    before = sink.error_count
    ns = meta.namespace
    if namespaced:
        for key in GNP_ONLY:
            if f.has(key):
                sink.error(
                    "E062",
                    f'"{key}" is allowed only on a GlobalNetworkPolicy, not on a namespaced {doc.kind}',
                    f.key_span(key),
                )
    ingress = read_rules(f, "ingress", ns)
    egress = read_rules(f, "egress", ns)
    has_ing, has_egr = nonempty(f, "ingress"), nonempty(f, "egress")
    types = read_types(f, has_ing, has_egr)
    dnt = bool(f.bool("doNotTrack")) if not namespaced else False
    pre = bool(f.bool("preDNAT")) if not namespaced else False
    aof = bool(f.bool("applyOnForward")) if not namespaced else False
    if pre and dnt:
        sink.error("E063", "preDNAT and doNotTrack cannot both be true", f.key_span("preDNAT"))
    if pre and (has_egr or "Egress" in types):
        where = f.key_span("egress") if has_egr else f.span("types")
        sink.error(
            "E063",
            "a preDNAT policy applies to ingress only: it cannot have egress rules or the Egress type",
            where,
        )
    if (pre or dnt) and not aof:
        which = "preDNAT" if pre else "doNotTrack"
        sink.error("E063", f"{which} policies need applyOnForward: true", f.key_span(which))
    for hint in f.str_list("performanceHints"):
        if hint.value != "AssumeNeededOnEveryNode":
            sink.error(
                "E023",
                f'unknown performance hint "{hint.value}": the only one is AssumeNeededOnEveryNode',
                hint.span,
            )
    order = f.number("order")
    policy = Policy(
        kind=model_kind,
        name=meta.name,
        namespace=ns,
        tier=read_tier_ref(f, col),
        order=order,
        selector=selector_field(f, "selector") or "",
        namespace_selector=(selector_field(f, "namespaceSelector") or "") if not namespaced else "",
        service_account_selector=selector_field(f, "serviceAccountSelector") or "",
        types=types,
        ingress=ingress,
        egress=egress,
        do_not_track=dnt,
        pre_dnat=pre,
        apply_on_forward=aof,
        staged=staged,
        staged_action=(f.enum("stagedAction", STAGED_ACTIONS) or "Set") if staged else "Set",
        span=doc.span,
    )
    if sink.error_count == before:
        col.add_policy(policy, meta.name_span)


BUILTIN_TIERS = {
    "kube-admin": Tier("kube-admin", 1000.0, "Pass"),
    "default": Tier("default", 1_000_000.0, "Deny"),
    "kube-baseline": Tier("kube-baseline", 10_000_000.0, "Pass"),
}


def read_tier(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False, label_name=True)
    spec = expect_map(sink, doc.node.get("spec"), '"spec"')
    order, action = None, "Deny"
    if spec is not None:
        f = Fields(sink, spec, "Tier spec", ("order", "defaultAction"))
        order = f.number("order")
        action = f.enum("defaultAction", ("Deny", "Pass")) or "Deny"
    tier = Tier(meta.name, order, action, doc.span)
    builtin = BUILTIN_TIERS.get(meta.name)
    if builtin is not None and (builtin.order != order or builtin.default_action != action):
        sink.error(
            "E068",
            f"tier {meta.name!r} is built in (order {builtin.order:.0f}, defaultAction {builtin.default_action}) "
            "and cannot be changed",
            meta.name_span,
        )
        return
    col.add_tier(tier, meta.name_span)


def read_profile(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    spec = expect_map(sink, doc.node.get("spec"), '"spec"')
    before = sink.error_count
    ingress, egress, labels = (), (), {}
    if spec is not None:
        f = Fields(sink, spec, "Profile spec", ("ingress", "egress", "labelsToApply"))
        ingress = read_rules(f, "ingress", None)
        egress = read_rules(f, "egress", None)
        labels = check_labels(sink, f.get("labelsToApply"), "labelsToApply")
    if sink.error_count == before:
        col.add_profile(
            Profile(meta.name, labels_of(labels), ingress, egress, doc.span),
            meta.name_span,
            "Profile",
        )
