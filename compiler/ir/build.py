"""Frontend resources -> IR. The only bridge from ``frontend.model`` to ``ir.nodes``.

What happens here (SEMANTICS.md):

* built-in tiers (``kube-admin`` 1000 Pass, ``default`` 1,000,000 Deny, ``kube-baseline``
  10,000,000 Pass) exist even when not written;
* policy selectors get the §Label rewrites (namespace term, ``pcns.``/``pcsa.`` prefixes,
  ``all()`` replacement) and rules' EntityRules become :class:`Side` objects with selector sets;
* effective labels: own labels over profiles' ``labelsToApply`` (own wins; first profile wins);
* for each endpoint, hook and direction: the tiers that take part, ordered by (order, missing =
  +inf, name), each with its applicable non-staged policies ordered by (order, missing = +inf,
  ``name/namespace/kind``). Which policies apply is computed through a label index, one query
  per distinct selector, never selector × endpoint.

No pass runs here: sets come out unresolved (``members is None``) and families unsplit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from itertools import chain

from compiler.frontend import model
from compiler.frontend.labels import effective_labels
from compiler.frontend.selector import LabelIndex, canonical, make_unique_id, parse, rewrite
from compiler.ir import nodes as ir
from compiler.ir._nets import host_net
from compiler.ir.nodes import replacer
from compiler.perf import paused_gc

BUILTIN_TIERS = (
    ir.Tier("kube-admin", 1000.0, ir.PASS),
    ir.Tier("default", 1_000_000.0, ir.DENY),
    ir.Tier("kube-baseline", 10_000_000.0, ir.PASS),
)
NAMESPACED_KINDS = frozenset(
    {
        "NetworkPolicy",
        "KubernetesNetworkPolicy",
        "StagedNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
    }
)


def _labels(
    entity: model.Endpoint | model.NetworkSet, by_name: Mapping[str, model.Profile]
) -> tuple[tuple[str, str], ...]:
    """Effective labels (frontend/labels.py: own wins, then the first profile), sorted."""
    return tuple(sorted(effective_labels(entity, by_name).items()))


def order_key(order: float | None) -> float:
    return math.inf if order is None else order


class _SetTable:
    """Collects the AddrSets rules refer to, one per id.

    Also memoises the selector rewrites and set ids of rule sides: thousands of rules share a
    few hundred (namespace, selector) pairs, and each rewrite re-parses its result.
    """

    def __init__(self) -> None:
        self.sets: dict[str, ir.AddrSet] = {}
        self.entity_selectors: dict[tuple[object, ...], str | None] = {}
        # Equal sides and matches are one object (thousands of rules share a few hundred):
        # the passes then do their per-side and per-match work once per object.
        self.sides: dict[ir.Side, ir.Side] = {}
        self.matches: dict[ir.Match, ir.Match] = {}
        self._ids: dict[str, str] = {}
        self._named_ids: dict[tuple[str | None, int | None, str], str] = {}

    def selector_set(self, selector: str, origin: model.Span) -> str:
        sid = self._ids.get(selector)
        if sid is None:
            text = canonical(selector)
            sid = self._ids[selector] = make_unique_id("s", text)  # = unique_id(parse(selector))
            if sid not in self.sets:
                self.sets[sid] = ir.AddrSet(id=sid, selector=text, origin=origin)
        return sid

    def named_port_set(
        self, selector: str | None, protocol: int | None, name: str, origin: model.Span
    ) -> str:
        key = (selector, protocol, name)
        sid = self._named_ids.get(key)
        if sid is None:
            text = canonical(selector or "all()")
            proto = (
                model.PROTOCOL_NAMES.get(protocol, str(protocol)) if protocol is not None else ""
            )
            sel_id = make_unique_id("s", text)  # = unique_id(parse(...))
            sid = self._named_ids[key] = make_unique_id("n", f"{sel_id},{proto},{name}")
            if sid not in self.sets:
                self.sets[sid] = ir.AddrSet(
                    id=sid,
                    selector=text,
                    port_name=name,
                    port_protocol=protocol,
                    origin=origin,
                )
        return sid


def _ports(
    specs: tuple[model.PortSpec, ...],
    positive_selector: str | None,
    protocol: int | None,
    sets: _SetTable,
) -> ir.PortMatch | None:
    if not specs:
        return None
    ranges = tuple(sorted({(p.min, p.max) for p in specs if p.name is None}))
    named = tuple(
        sorted(
            {
                sets.named_port_set(positive_selector, protocol, p.name, p.span)
                for p in specs
                if p.name is not None
            }
        )
    )
    return ir.PortMatch(ranges, named)


def _positive(entity: model.EntityRule, policy_ns: str | None, sets: _SetTable) -> str | None:
    """The rewritten positive selector of a rule side (memoised: few distinct ones)."""
    key = (
        policy_ns,
        entity.selector,
        entity.not_selector is not None,
        entity.namespace_selector,
        entity.sa_names,
        entity.sa_selector,
    )
    try:
        return sets.entity_selectors[key]
    except KeyError:
        positive = sets.entity_selectors[key] = rewrite.entity_rule_selector(
            policy_namespace=policy_ns,
            selector=entity.selector,
            not_selector_present=entity.not_selector is not None,
            namespace_selector=entity.namespace_selector,
            sa_names=entity.sa_names,
            sa_selector=entity.sa_selector,
        )
        return positive


def _side(
    entity: model.EntityRule, policy_ns: str | None, protocol: int | None, sets: _SetTable
) -> ir.Side:
    positive = _positive(entity, policy_ns, sets)
    pos_sets = (sets.selector_set(positive, entity.span),) if positive is not None else ()
    neg_sets = (
        (sets.selector_set(entity.not_selector, entity.span),)
        if entity.not_selector is not None
        else ()
    )
    side = ir.Side(
        nets=tuple(entity.nets) if entity.nets else None,
        not_nets=tuple(entity.not_nets),
        sets=pos_sets,
        not_sets=neg_sets,
        ports=_ports(entity.ports, positive, protocol, sets),
        not_ports=_ports(entity.not_ports, positive, protocol, sets),
    )
    return sets.sides.setdefault(side, side)


def _register_side(
    entity: model.EntityRule, policy_ns: str | None, protocol: int | None, sets: _SetTable
) -> None:
    """What :func:`_side` registers in ``sets``, in the same order, without building the side."""
    positive = _positive(entity, policy_ns, sets)
    if positive is not None:
        sets.selector_set(positive, entity.span)
    if entity.not_selector is not None:
        sets.selector_set(entity.not_selector, entity.span)
    for specs in (entity.ports, entity.not_ports):
        for p in specs:
            if p.name is not None:
                sets.named_port_set(positive, protocol, p.name, p.span)


_ACTIONS = {"Allow": ir.ALLOW, "Deny": ir.DENY, "Pass": ir.PASS, "Log": ir.LOG}


def _rules(
    rules: tuple[model.Rule, ...], policy_ns: str | None, sets: _SetTable
) -> tuple[ir.Rule, ...]:
    out = []
    for index, r in enumerate(rules):
        match = ir.Match(
            ip_version=r.ip_version,
            protocol=r.protocol,
            not_protocol=r.not_protocol,
            icmp_type=r.icmp.type if r.icmp else None,
            icmp_code=r.icmp.code if r.icmp else None,
            not_icmp_type=r.not_icmp.type if r.not_icmp else None,
            not_icmp_code=r.not_icmp.code if r.not_icmp else None,
            src=_side(r.source, policy_ns, r.protocol, sets),
            dst=_side(r.destination, policy_ns, r.protocol, sets),
        )
        match = sets.matches.setdefault(match, match)
        out.append(ir.Rule(_ACTIONS[r.action], match, index, r.span, r.has_http))
    return tuple(out)


def _collect_sets(rules: tuple[model.Rule, ...], policy_ns: str | None, sets: _SetTable) -> None:
    """Register the sets ``_rules`` would, in the same order, without building any rule: a
    one-node compile keeps every set (deduplication picks the smallest id among equal sets,
    used or not, and a set's origin is the first rule naming it) but not unused policies."""
    for r in rules:
        _register_side(r.source, policy_ns, r.protocol, sets)
        _register_side(r.destination, policy_ns, r.protocol, sets)


def _policy_selector(p: model.Policy, memo: dict[tuple, str] | None = None) -> str:
    """The rewritten selector of a policy; ``memo`` (one build's) keeps the few thousand
    distinct results of ten thousand policies."""
    if p.kind in NAMESPACED_KINDS:
        assert p.namespace is not None
        key: tuple = (True, p.selector, p.namespace, p.service_account_selector)
    else:
        key = (False, p.selector, p.namespace_selector, p.service_account_selector)
    if memo is not None:
        got = memo.get(key)
        if got is not None:
            return got
    if key[0]:
        out = rewrite.np_policy_selector(key[1], key[2], key[3])
    else:
        out = rewrite.gnp_policy_selector(key[1], key[2], key[3])
    if memo is not None:
        memo[key] = out
    return out


def _policy(
    p: model.Policy, sets: _SetTable | None, selectors: dict[tuple, str] | None = None
) -> ir.Policy:
    """The IR policy; with ``sets`` None, without its rules (what planning needs)."""
    ns = p.namespace if p.kind in NAMESPACED_KINDS else None
    types = tuple(t.lower() for t in p.types) or ir.DIRECTIONS
    return ir.Policy(
        id=p.id,
        name=p.name,
        namespace=p.namespace,
        kind=p.kind,
        tier=p.tier,
        order=p.order,
        selector=_policy_selector(p, selectors),
        types=types,
        ingress=_rules(p.ingress, ns, sets) if sets is not None else (),
        egress=_rules(p.egress, ns, sets) if sets is not None else (),
        do_not_track=p.do_not_track,
        pre_dnat=p.pre_dnat,
        # Felix forces applyOnForward off for namespaced policy.
        apply_on_forward=p.apply_on_forward and ns is None,
        staged=p.staged,
        staged_action=p.staged_action,
        origin=p.span,
    )


class Planner:
    """Tier plans per distinct set of matching selectors.

    An endpoint's applicable policies are those whose selector matches it, so two endpoints
    matched by the same *selectors* share their plans. Each policy is filed once under its
    selector, hook, direction and tier (positions in global evaluation order); a plan is then a
    merge of the few lists of the endpoint's selectors, never a scan of every policy per tier.
    """

    def __init__(self, ordered: list[ir.Policy], tiers: list[ir.Tier]) -> None:
        self.ordered_ids = [p.id for p in ordered]
        self.tiers = tiers
        # selector -> (hook, direction, tier) -> positions in ``ordered``, ascending
        self.filed: dict[str, dict[tuple[str, str, str], list[int]]] = defaultdict(dict)
        for pos, p in enumerate(ordered):
            buckets = self.filed[p.selector]
            # Its hooks, in HOOKS order: NORMAL for policy that is neither preDNAT nor
            # doNotTrack, FORWARD for such policy with applyOnForward as well; PRE_DNAT and
            # UNTRACKED for preDNAT and doNotTrack policy.
            if not p.pre_dnat and not p.do_not_track:
                hooks: tuple[str, ...] = (
                    (ir.NORMAL, ir.FORWARD) if p.apply_on_forward else (ir.NORMAL,)
                )
            else:
                hooks = ((ir.PRE_DNAT,) if p.pre_dnat else ()) + (
                    (ir.UNTRACKED,) if p.do_not_track else ()
                )
            for hook in hooks:
                for direction in ir.DIRECTIONS:
                    if direction not in p.types or (hook == ir.PRE_DNAT and direction == ir.EGRESS):
                        continue
                    buckets.setdefault((hook, direction, p.tier), []).append(pos)
        self._cache: dict[tuple[tuple[str, ...], bool], _Plans] = {}

    def plans(self, selectors: tuple[str, ...], is_host: bool) -> _Plans:
        """The plans of an endpoint whose matching selectors are ``selectors``."""
        key = (selectors, is_host)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._plans(selectors, is_host)
        return hit

    def _plans(self, selectors: tuple[str, ...], is_host: bool) -> _Plans:
        filed = [self.filed[s] for s in selectors]
        ids = self.ordered_ids
        out = []
        for hook in ir.HOOKS if is_host else (ir.NORMAL,):
            for direction in ir.DIRECTIONS:
                if hook == ir.PRE_DNAT and direction == ir.EGRESS:
                    continue
                plan = []
                for tier in self.tiers:
                    key = (hook, direction, tier.name)
                    parts = [b[key] for b in filed if key in b]
                    if not parts:
                        continue
                    positions = parts[0] if len(parts) == 1 else sorted(chain.from_iterable(parts))
                    plan.append(
                        ir.TierPlan(
                            tier.name, tier.default_action, tuple(ids[i] for i in positions)
                        )
                    )
                if plan:
                    out.append(((hook, direction), tuple(plan)))
        return tuple(out)


_Plans = tuple[tuple[tuple[str, str], tuple[ir.TierPlan, ...]], ...]


def endpoint_node(
    e: model.Endpoint, labels: Mapping[str, str], plans: tuple[ir.TierPlan, ...]
) -> ir.Endpoint:
    """The IR node of one endpoint, given its effective labels and its tier plans (the builder
    and the agent's incremental compile make endpoints the same way)."""
    return ir.Endpoint(
        id=e.id,
        kind=e.kind,
        name=e.name,
        namespace=e.namespace,
        node=e.node,
        interface=e.interface,
        ips=tuple(e.ips),
        labels=labels,
        profiles=tuple(e.profiles),
        ports=tuple(e.ports),
        plans=plans,
        origin=e.span,
    )


_with_rules = replacer(ir.Policy)


def _local_rules(
    resources: model.ResourceSet,
    headers: list[ir.Policy],
    endpoints: list[ir.Endpoint],
    sets: _SetTable,
) -> tuple[list[ir.Policy], list[ir.Profile]]:
    """The policies and profiles ``endpoints`` use, with their rules; every other rule only
    registers its sets. Policies, then profiles, in input order, as a full build does, so the
    set table comes out the same."""
    used = {pid for e in endpoints for _, plan in e.plans for tp in plan for pid in tp.policies}
    used_profiles = {name for e in endpoints for name in e.profiles}
    policies = []
    for p, header in zip(resources.policies, headers, strict=True):
        ns = p.namespace if p.kind in NAMESPACED_KINDS else None
        if header.id in used:
            ingress, egress = _rules(p.ingress, ns, sets), _rules(p.egress, ns, sets)
            policies.append(_with_rules(header, ingress=ingress, egress=egress))
        else:
            _collect_sets(p.ingress, ns, sets)
            _collect_sets(p.egress, ns, sets)
    profiles = []
    for prof in resources.profiles:
        if prof.name in used_profiles:
            profiles.append(
                ir.Profile(
                    prof.name,
                    _rules(prof.ingress, None, sets),
                    _rules(prof.egress, None, sets),
                    prof.span,
                )
            )
        else:
            _collect_sets(prof.ingress, None, sets)
            _collect_sets(prof.egress, None, sets)
    return policies, profiles


def _host_nets(ips: Iterable[ir.IPAddr]) -> tuple[ir.IPNet, ...]:
    # From the integer: ip_network(address) would print the address and parse it back.
    return tuple(map(host_net, ips))


def build(
    resources: model.ResourceSet, node: str | None = None, *, local_only: bool = False
) -> ir.Program:
    """Build the IR for ``node`` (None: the whole cluster; every endpoint is kept either way,
    because remote endpoints are peers in rule sets).

    ``local_only`` (with a node; what ``tortie compile --node`` uses): only what the node's own
    endpoints use — their endpoints, the policies in their plans and the profiles they name.
    Remote endpoints stay as selectables (set members), and *every* set is kept, so the passes
    resolve and deduplicate sets exactly as for the whole program: the rendered artifact is the
    same. Node-scoped diagnostics then cover only the node's policies. The evaluator, explain,
    matrix and diff never use it (they need every endpoint's plans)."""
    with paused_gc():  # a large acyclic object graph: see compiler/perf.py
        return _build(resources, node, local_only and node is not None)


def _build(resources: model.ResourceSet, node: str | None, local_only: bool) -> ir.Program:
    profiles_by_name = {p.name: p for p in resources.profiles}
    sets = _SetTable()

    tiers = {t.name: t for t in BUILTIN_TIERS}
    for t in resources.tiers:
        default = ir.PASS if t.default_action == "Pass" else ir.DENY
        builtin = tiers.get(t.name)
        order = t.order if builtin is None or t.order is not None else builtin.order
        tiers[t.name] = ir.Tier(t.name, order, default, t.span)
    tier_list = sorted(tiers.values(), key=lambda t: (t.order is None, order_key(t.order), t.name))

    selectors: dict[tuple, str] = {}
    if local_only:
        policies = [_policy(p, None, selectors) for p in resources.policies]  # rules later
    else:
        policies = [_policy(p, sets, selectors) for p in resources.policies]
    by_tier: dict[str, list[ir.Policy]] = defaultdict(list)
    for p in policies:
        if not p.staged:
            by_tier[p.tier].append(p)
    for plist in by_tier.values():
        plist.sort(key=lambda p: (order_key(p.order), f"{p.name}/{p.namespace or ''}/{p.kind}"))

    labelled = {e.id: _labels(e, profiles_by_name) for e in resources.endpoints}
    planned = (
        [e for e in resources.endpoints if e.node == node] if local_only else resources.endpoints
    )
    index = LabelIndex({e.id: dict(labelled[e.id]) for e in planned})
    # Endpoint -> applicable policies, by inverting one index query per distinct selector
    # (never selector x endpoint, nor policy x endpoint: a cluster-wide selector that 500
    # policies share is inverted once). Plans come from Planner, per distinct selector set.
    tier_rank = {t.name: i for i, t in enumerate(tier_list)}
    ordered = sorted(
        (p for plist in by_tier.values() for p in plist),
        key=lambda p: (
            tier_rank.get(p.tier, len(tier_rank)),
            order_key(p.order),
            f"{p.name}/{p.namespace or ''}/{p.kind}",
        ),
    )
    planner = Planner(ordered, tier_list)
    matching: dict[str, list[str]] = defaultdict(list)
    for sel in sorted(planner.filed):
        for eid in index.select(parse(sel)):
            matching[eid].append(sel)
    endpoints = []
    selectables = []
    no_selectors: list[str] = []
    for e in planned:
        plans = planner.plans(tuple(matching.get(e.id, no_selectors)), e.is_host)
        endpoints.append(endpoint_node(e, labelled[e.id], plans))
    if local_only:
        policies, ir_profiles = _local_rules(resources, policies, endpoints, sets)
    else:
        ir_profiles = [
            ir.Profile(
                prof.name,
                _rules(prof.ingress, None, sets),
                _rules(prof.egress, None, sets),
                prof.span,
            )
            for prof in resources.profiles
        ]
    for e in resources.endpoints:
        selectables.append(
            ir.Selectable(e.id, e.kind, labelled[e.id], _host_nets(e.ips), tuple(e.ports))
        )
    for ns in resources.network_sets:
        kind = "GlobalNetworkSet" if ns.namespace is None else "NetworkSet"
        labels = _labels(ns, profiles_by_name)
        selectables.append(ir.Selectable(ns.id, kind, labels, tuple(ns.nets)))

    host_ips: dict[str, list[ir.IPAddr]] = defaultdict(list)
    for n in resources.nodes:
        for iface in (n.ipv4, n.ipv6):
            if iface is not None:
                host_ips[n.name].append(iface.ip)
    for e in resources.endpoints:
        if e.is_host:
            host_ips[e.node].extend(e.ips)

    felix = resources.felix
    if node is not None:
        felix = dict(resources.felix_per_node).get(node, felix)

    return ir.make_program(
        node=node,
        tiers=tuple(tier_list),
        policies=tuple(policies),
        profiles=tuple(ir_profiles),
        sets=tuple(sets.sets.values()),
        endpoints=tuple(endpoints),
        selectables=tuple(selectables),
        felix=felix,
        host_ips={
            k: tuple(sorted(set(v), key=lambda a: (a.version, a))) for k, v in host_ips.items()
        },
    )
