"""Incremental compile: the previous :class:`Program` plus the endpoints that changed -> the new
one, recomputing only what those endpoints can affect.

The agent compiles with ``MEMBERSHIP_STABLE_PASSES`` (resolve_sets, split_families,
aggregate_cidrs): with them an endpoint appears in exactly three places of the program:

* its own :class:`~compiler.ir.nodes.Endpoint` (labels, IPs, ports, and the tier plans, which
  depend only on which policy selectors match its labels);
* its :class:`~compiler.ir.nodes.Selectable` (the inventory sets are resolved against);
* the members of the sets whose selector matches it (before or after the change).

So when only endpoints changed (added, removed, or any field of a workload endpoint), the new
program is the old one with: those endpoints' ``Endpoint``/``Selectable`` rebuilt (plans through
the builder's own planner); for each distinct selector, membership re-evaluated **only** for the
changed endpoints (and, for a label change, only for the selectors that read a changed key);
and the sets whose membership, or whose members' addresses, changed recomputed from their
selected ids exactly as resolve -> split -> aggregate would. Every other object — policies,
profiles, tiers, untouched sets and endpoints, the mappings themselves — is the previous object,
so ``new.policies is old.policies`` and the targets can diff by identity.

Anything else (a policy, profile, namespace, tier, network set, node or Felix change, a host
endpoint) returns None: the caller runs the full compile. :func:`full_state` builds the state
after a full compile. ``tests/property/test_incremental.py`` checks every result against a full
compile of the same inputs.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from compiler.frontend import model
from compiler.frontend.labels import effective_labels
from compiler.frontend.selector import LabelIndex, evaluate, parse
from compiler.frontend.selector import ast as sel_ast
from compiler.ir import nodes as ir
from compiler.ir.build import Planner, endpoint_node, order_key  # the builder's own, not copies
from compiler.ir.passes.aggregate_cidrs import collapse

__all__ = ["CompileState", "full_state", "update"]


def _keys(sel: sel_ast.Selector) -> frozenset[str] | None:
    """Label keys a selector reads (None: it reads none, e.g. ``all()``)."""
    out: set[str] = set()
    stack = [sel]
    while stack:
        node = stack.pop()
        if isinstance(node, sel_ast.And | sel_ast.Or):
            stack.extend(node.operands)
        elif isinstance(node, sel_ast.Not):
            stack.append(node.expr)
        elif hasattr(node, "key"):
            out.add(node.key)
    return frozenset(out) if out else None


def _requirements(sel: sel_ast.Selector) -> list[tuple[str, frozenset[str]]]:
    """(key, values) pairs the labels must meet for ``sel`` to match: the ``==``/``in`` operands
    of its top-level conjunction (``key == v`` needs ``labels[key] == v``, ``key in {..}``
    needs ``labels[key]`` among the values; both are false when the key is absent)."""
    out = []
    stack = [sel]
    while stack:
        node = stack.pop()
        if isinstance(node, sel_ast.And):
            stack.extend(node.operands)
        elif isinstance(node, sel_ast.Eq):
            out.append((node.key, frozenset((node.value,))))
        elif isinstance(node, sel_ast.In):
            out.append((node.key, frozenset(node.values)))
    return out


@dataclass(frozen=True)
class _Selectors:
    """Every distinct selector of the program, parsed, with the label keys it reads.

    Most selectors need one label to hold one of a few values (an *anchor*: e.g. the namespace
    label the builder ands into every namespaced selector). Such a selector cannot match labels
    that miss its anchor, so :meth:`candidates` only tests the selectors whose anchor a changed
    endpoint's old or new labels meet (an index lookup per label), plus the few without one.
    """

    parsed: dict[str, sel_ast.Selector]
    by_key: dict[str, tuple[str, ...]]  # label key -> selectors reading it
    test: dict[str, Callable[[Mapping[str, str]], bool]]  # selector -> compiled predicate
    keys: dict[str, frozenset[str]]  # selector -> label keys it reads
    by_anchor: dict[tuple[str, str], tuple[str, ...]]  # (key, value) -> anchored selectors
    unanchored: frozenset[str]  # selectors without an anchor
    unanchored_by_key: dict[str, tuple[str, ...]]  # label key -> unanchored selectors reading it

    @classmethod
    def of(
        cls, selectors: Iterable[str], counts: Mapping[tuple[str, str], int] | None = None
    ) -> _Selectors:
        """``counts``: how many items hold each (key, value) label, to anchor each selector on
        its most selective requirement."""
        counts = counts or {}
        parsed = {s: parse(s) for s in sorted(set(selectors))}
        by_key: dict[str, list[str]] = {}
        keys: dict[str, frozenset[str]] = {}
        by_anchor: dict[tuple[str, str], list[str]] = {}
        unanchored = set()
        for s, ast in parsed.items():
            keys[s] = _keys(ast) or frozenset()
            for k in keys[s]:
                by_key.setdefault(k, []).append(s)
            reqs = _requirements(ast)
            if not reqs:
                unanchored.add(s)
                continue
            key, values = min(
                reqs,
                key=lambda r: (sum(counts.get((r[0], v), 0) for v in r[1]), r[0], sorted(r[1])),
            )
            for v in values:
                by_anchor.setdefault((key, v), []).append(s)
        tests = {s: _compiled(ast) for s, ast in parsed.items()}
        return cls(
            parsed,
            {k: tuple(v) for k, v in by_key.items()},
            tests,
            keys,
            {k: tuple(v) for k, v in by_anchor.items()},
            frozenset(unanchored),
            {k: tuple(x for x in v if x in unanchored) for k, v in by_key.items()},
        )

    def reading(self, keys: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for k in keys:
            out.update(self.by_key.get(k, ()))
        return out

    def candidates(
        self, labels: Iterable[Mapping[str, str]], changed: frozenset[str] | None
    ) -> set[str]:
        """The selectors that may match any of ``labels`` (a superset; every other one is
        false for all of them) and, unless ``changed`` is None, read one of those keys."""
        out = set()
        for lab in labels:
            for kv in lab.items():
                out.update(self.by_anchor.get(kv, ()))
        if changed is None:
            out |= self.unanchored
            return out
        keys = self.keys
        out = {s for s in out if not changed.isdisjoint(keys[s])}
        for k in changed:
            out.update(self.unanchored_by_key.get(k, ()))
        return out


@dataclass(frozen=True)
class CompileState:
    """What the incremental compile needs from the previous one (never mutated)."""

    node: str | None
    resources: model.ResourceSet
    program: ir.Program
    planner: Planner
    policy_selectors: tuple[str, ...]  # sorted, as the builder files them
    set_selectors: _Selectors
    pol_selectors: _Selectors
    # selector -> ids it selects: among selectables (set selectors), among endpoints (policy).
    set_selected: dict[str, frozenset[str]]
    pol_selected: dict[str, frozenset[str]]
    sets_of: dict[str, tuple[str, ...]]  # set selector -> ids of the program's sets using it
    selectables: dict[str, ir.Selectable]  # by id, as resolve_sets indexes them
    # How many endpoints hold each address, and every network set prefix: an address can
    # leave a set's cover without a full recompute only when no one else provides it.
    owners: dict[ir.IPNet, int]
    netset_nets: frozenset[ir.IPNet]
    netset_ids: frozenset[str]


def _tier_list(program: ir.Program) -> list[ir.Tier]:
    return sorted(
        program.tiers.values(), key=lambda t: (t.order is None, order_key(t.order), t.name)
    )


def _planner(program: ir.Program) -> object:
    tiers = _tier_list(program)
    rank = {t.name: i for i, t in enumerate(tiers)}
    ordered = sorted(
        (p for p in program.policies.values() if not p.staged),
        key=lambda p: (
            rank.get(p.tier, len(rank)),
            order_key(p.order),
            f"{p.name}/{p.namespace or ''}/{p.kind}",
        ),
    )
    return Planner(ordered, tiers)


def full_state(
    resources: model.ResourceSet, node: str | None, program: ir.Program
) -> CompileState | None:
    """The state after a full compile of ``resources`` for ``node`` that gave ``program``
    (with MEMBERSHIP_STABLE_PASSES)."""
    planner = _planner(program)
    policy_selectors = tuple(sorted(planner.filed))
    counts: dict[tuple[str, str], int] = {}
    for e in program.endpoints:
        for kv in e.labels:
            counts[kv] = counts.get(kv, 0) + 1
    set_sel = _Selectors.of((s.selector for s in program.sets.values()), counts)
    pol_sel = _Selectors.of(policy_selectors, counts)
    selectables = {s.id: s for s in program.selectables}
    set_index = LabelIndex({sid: dict(s.labels) for sid, s in selectables.items()})
    set_selected = {s: set_index.select(a) for s, a in set_sel.parsed.items()}
    ep_index = LabelIndex({e.id: dict(e.labels) for e in program.endpoints})
    pol_selected = {s: ep_index.select(a) for s, a in pol_sel.parsed.items()}
    owners: dict[ir.IPNet, int] = {}
    netset_nets = set()
    for x in program.selectables:
        if x.kind in ("NetworkSet", "GlobalNetworkSet"):
            netset_nets.update(x.nets)
        else:
            for n in x.nets:
                owners[n] = owners.get(n, 0) + 1
    sets_of: dict[str, list[str]] = {}
    for sid, s in program.sets.items():
        sets_of.setdefault(s.selector, []).append(sid)
    return CompileState(
        node=node,
        resources=resources,
        program=program,
        planner=planner,
        policy_selectors=policy_selectors,
        set_selectors=set_sel,
        pol_selectors=pol_sel,
        set_selected=set_selected,
        pol_selected=pol_selected,
        sets_of={k: tuple(v) for k, v in sets_of.items()},
        selectables=selectables,
        owners=owners,
        netset_nets=frozenset(netset_nets),
        netset_ids=frozenset(
            x.id for x in program.selectables if x.kind in ("NetworkSet", "GlobalNetworkSet")
        ),
    )


def _host_nets(ips: Iterable[ir.IPAddr]) -> tuple[ir.IPNet, ...]:
    return tuple(
        ipaddress.IPv4Network((int(ip), 32))
        if ip.version == 4
        else ipaddress.IPv6Network((int(ip), 128))
        for ip in ips
    )


@functools.lru_cache(maxsize=4096)
def _supernets(net: ir.IPNet) -> tuple[ir.IPNet, ...]:
    """Every prefix containing ``net``, from ``net`` itself up to /0."""
    cls = type(net)
    addr, bits = int(net.network_address), net.max_prefixlen
    return tuple(
        cls((addr >> (bits - plen) << (bits - plen), plen)) for plen in range(net.prefixlen, -1, -1)
    )


def _compiled(sel: sel_ast.Selector) -> Callable[[Mapping[str, str]], bool]:
    """``sel`` as a closure with exactly :func:`evaluate`'s semantics (a few times faster
    than walking the tree for every endpoint)."""
    match sel:
        case sel_ast.All() | sel_ast.Global():
            return lambda labels: True
        case sel_ast.Has(key):
            return lambda labels: key in labels
        case sel_ast.Eq(key, value):
            return lambda labels: key in labels and labels[key] == value
        case sel_ast.Ne(key, value):
            return lambda labels: key not in labels or labels[key] != value
        case sel_ast.Contains(key, value):
            return lambda labels: key in labels and value in labels[key]
        case sel_ast.StartsWith(key, value):
            return lambda labels: key in labels and labels[key].startswith(value)
        case sel_ast.EndsWith(key, value):
            return lambda labels: key in labels and labels[key].endswith(value)
        case sel_ast.In(key, values):
            vs = frozenset(values)
            return lambda labels: key in labels and labels[key] in vs
        case sel_ast.NotIn(key, values):
            vs = frozenset(values)
            return lambda labels: key not in labels or labels[key] not in vs
        case sel_ast.Not(expr):
            inner = _compiled(expr)
            return lambda labels: not inner(labels)
        case sel_ast.And(operands):
            parts = tuple(_compiled(op) for op in operands)
            return lambda labels: all(p(labels) for p in parts)
        case sel_ast.Or(operands):
            parts = tuple(_compiled(op) for op in operands)
            return lambda labels: any(p(labels) for p in parts)
    return lambda labels: evaluate(sel, labels)  # a node type added later


def _cover_remove(members: set[ir.IPNet], net: ir.IPNet) -> bool:
    """Remove the addresses of ``net`` from the minimal prefix cover ``members`` (in place),
    keeping it minimal; False when ``net`` is not entirely inside one member."""
    for sup in _supernets(net):
        if sup in members:
            members.discard(sup)
            # The siblings along the path from ``net`` up to ``sup``: each lies entirely in the
            # set and its parent does not, so the cover stays minimal.
            cur = net
            while cur != sup:
                parent = cur.supernet()
                for half in parent.subnets():
                    if half != cur:
                        members.add(half)
                cur = parent
            return True
    return False


def _cover_add(members: set[ir.IPNet], net: ir.IPNet) -> None:
    """Add ``net`` (a host prefix) to the minimal prefix cover ``members`` (in place)."""
    for sup in _supernets(net):
        if sup in members:
            return
    cur = net
    while cur.prefixlen > 0:
        parent = cur.supernet()
        a, b = parent.subnets()
        buddy = b if a == cur else a
        if buddy not in members:
            break
        members.discard(buddy)
        cur = parent
    members.add(cur)


def _ep_key(e: ir.Endpoint) -> str:
    return e.id


def _sel_key(s: ir.Selectable) -> tuple[str, str]:
    return (s.kind, s.id)


def _replaced(items: tuple, gone: set, new: Iterable, key) -> tuple | None:  # noqa: ANN001
    """``items`` (sorted by ``key``) without the keys in ``gone`` and with ``new``, still
    sorted: binary searches instead of a sort of everything. None when a key is not unique
    (the order of equal keys is the builder's business: compile in full)."""
    out = list(items)
    for k in sorted(gone, reverse=True):
        i = bisect.bisect_left(out, k, key=key)
        if i < len(out) and key(out[i]) == k:
            del out[i]
            if i < len(out) and key(out[i]) == k:
                return None
    for x in new:
        k = key(x)
        i = bisect.bisect_left(out, k, key=key)
        if i < len(out) and key(out[i]) == k:
            return None
        out.insert(i, x)
    return tuple(out)


@dataclass(frozen=True)
class Update:
    program: ir.Program
    state: CompileState
    sets_changed: tuple[str, ...]  # program set ids whose members changed
    endpoints_changed: tuple[str, ...]
    local_changed: bool  # an endpoint of this node changed (its rules may have)


def _same_except_endpoints(a: model.ResourceSet, b: model.ResourceSet) -> str | None:
    """None when ``a`` and ``b`` differ at most in endpoints (and counts), else what differs."""
    for f in dataclasses.fields(model.ResourceSet):
        if f.name in ("endpoints", "kind_counts", "skipped"):
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x is not y and x != y:
            return f.name
    return None


def update(
    state: CompileState,
    resources: model.ResourceSet,
    removed: Iterable[model.Endpoint] | None = None,
    added: Iterable[model.Endpoint] | None = None,
) -> Update | str:
    """The new program for ``resources``, or a string saying why the full compile is needed.

    ``removed``/``added`` are the endpoints that left and came (a changed endpoint is both);
    when not given they are found by comparing ``state.resources.endpoints`` with
    ``resources.endpoints``.
    """
    why = _same_except_endpoints(state.resources, resources)
    if why is not None:
        return f"{why} changed"
    if removed is None or added is None:
        old = {(e.kind, e.id, e.name): e for e in state.resources.endpoints}
        new = {(e.kind, e.id, e.name): e for e in resources.endpoints}
        removed = [e for k, e in old.items() if new.get(k) != e]
        added = [e for k, e in new.items() if old.get(k) != e]
    removed, added = list(removed), list(added)
    # A splice re-reads whole list items: drop the endpoints that came back unchanged.
    same = {(e.kind, e.id, e.name): e for e in removed}
    unchanged = {k for e in added if same.get(k := (e.kind, e.id, e.name)) == e}
    if unchanged:
        removed = [e for e in removed if (e.kind, e.id, e.name) not in unchanged]
        added = [e for e in added if (e.kind, e.id, e.name) not in unchanged]
    if any(e.is_host for e in (*removed, *added)):
        return "a host endpoint changed"
    rm_ids = {e.id for e in removed}
    add_ids = {e.id for e in added}
    if len(rm_ids) != len(removed) or len(add_ids) != len(added):
        return "an endpoint id is changed twice"
    program = state.program
    by_name = {p.name: p for p in resources.profiles}

    # -- labels, selectables ---------------------------------------------------------------
    new_labels: dict[str, tuple[tuple[str, str], ...]] = {}
    new_sel: dict[str, ir.Selectable] = {}
    for e in added:
        labels = tuple(sorted(effective_labels(e, by_name).items()))
        new_labels[e.id] = labels
        new_sel[e.id] = ir.Selectable(e.id, e.kind, labels, _host_nets(e.ips), tuple(e.ports))
    old_sel = {eid: state.selectables[eid] for eid in rm_ids if eid in state.selectables}
    if len(old_sel) != len(rm_ids):
        return "a removed endpoint was not in the program"
    if not state.netset_ids.isdisjoint(rm_ids | add_ids):
        # resolve_sets indexes selectables by id: the two would shadow each other.
        return "an endpoint shares its id with a network set"

    def flips(
        sels: _Selectors, selected: dict[str, frozenset[str]]
    ) -> tuple[dict[str, frozenset[str]], set[str]]:
        """New membership of the changed ids in every selector that can see them."""
        out = dict(selected)
        touched: set[str] = set()
        for eid in rm_ids | add_ids:
            old_l = dict(old_sel[eid].labels) if eid in old_sel else None
            new_l = dict(new_labels[eid]) if eid in new_labels else None
            changed = None
            if old_l is not None and new_l is not None:
                changed = frozenset(
                    k for k in old_l.keys() | new_l.keys() if old_l.get(k) != new_l.get(k)
                )
            labels = [x for x in (old_l, new_l) if x is not None]
            # Every other selector is false for both label sets, and so was and stays without
            # ``eid`` (or reads no changed key).
            for s in sels.candidates(labels, changed):
                was = eid in out[s]
                now = new_l is not None and sels.test[s](new_l)
                if was != now:
                    out[s] = out[s] | {eid} if now else out[s] - {eid}
                    touched.add(s)
        return out, touched

    set_selected, set_flipped = flips(state.set_selectors, state.set_selected)
    pol_selected, _ = flips(state.pol_selectors, state.pol_selected)

    # -- sets ------------------------------------------------------------------------------
    # A set must be recomputed when its membership flipped, or when it holds a changed
    # endpoint whose addresses or ports changed.
    recompute = set(set_flipped)
    moved = {
        eid
        for eid in rm_ids & add_ids
        if (old_sel[eid].nets, old_sel[eid].ports) != (new_sel[eid].nets, new_sel[eid].ports)
    }
    if moved:
        for s, ids in set_selected.items():
            if not moved.isdisjoint(ids):
                recompute.add(s)
    selectables = dict(state.selectables)
    for eid in rm_ids - add_ids:
        del selectables[eid]
    selectables.update(new_sel)
    owners = state.owners
    if any(old_sel[i].nets != new_sel[i].nets for i in rm_ids & add_ids) or rm_ids != add_ids:
        owners = dict(owners)
        for eid in rm_ids:
            for n in old_sel[eid].nets:
                owners[n] -= 1
        for eid in add_ids:
            for n in new_sel[eid].nets:
                owners[n] = owners.get(n, 0) + 1
    held: dict[ir.IPNet, int] = {}  # address -> changed endpoints holding it now
    for eid in add_ids:
        for n in new_sel[eid].nets:
            held[n] = held.get(n, 0) + 1
    sets = dict(program.sets)
    changed_sets = []
    for s in sorted(recompute):
        before, after = state.set_selected[s], set_selected[s]
        lost = [n for i in rm_ids if i in before for n in old_sel[i].nets]
        gained = [n for i in add_ids if i in after for n in new_sel[i].nets]
        chosen: list[str] | None = None
        for sid in state.sets_of.get(s, ()):
            old = sets[sid]
            fam = old.family
            lost_f = [n for n in lost if fam is None or n.version == fam]
            gained_f = [n for n in gained if fam is None or n.version == fam]
            # Every other holder of a lost address is a changed endpoint (which re-adds it
            # through ``gained`` if still selected), and no network set covers it.
            alone = all(
                owners.get(n, 0) == held.get(n, 0) and state.netset_nets.isdisjoint(_supernets(n))
                for n in lost_f
            )
            if old.is_named_port:
                if alone and old.port_members is not None:
                    lost_t = {
                        (n, port.protocol, port.port)
                        for i in rm_ids
                        if i in before
                        for port in old_sel[i].ports
                        if port.name == old.port_name and old.port_protocol in (None, port.protocol)
                        for n in old_sel[i].nets
                        if fam is None or n.version == fam
                    }
                    gained_t = {
                        (n, port.protocol, port.port)
                        for i in add_ids
                        if i in after
                        for port in new_sel[i].ports
                        if port.name == old.port_name and old.port_protocol in (None, port.protocol)
                        for n in new_sel[i].nets
                        if fam is None or n.version == fam
                    }
                    triples = (old.port_members - lost_t) | gained_t
                else:
                    chosen = chosen if chosen is not None else sorted(after)
                    triples = frozenset(
                        (net, port.protocol, port.port)
                        for cid in chosen
                        for port in selectables[cid].ports
                        if port.name == old.port_name and old.port_protocol in (None, port.protocol)
                        for net in selectables[cid].nets
                        if fam is None or net.version == fam
                    )
                if triples != old.port_members:
                    sets[sid] = dataclasses.replace(old, port_members=triples)
                    changed_sets.append(sid)
                continue
            nets: frozenset[ir.IPNet] | None = None
            if alone and old.members is not None:
                cover = set(old.members)
                if all(_cover_remove(cover, n) for n in lost_f):
                    for n in gained_f:
                        _cover_add(cover, n)
                    nets = frozenset(cover)
            if nets is None:
                chosen = chosen if chosen is not None else sorted(after)
                nets = frozenset(
                    collapse(
                        n
                        for cid in chosen
                        for n in selectables[cid].nets
                        if fam is None or n.version == fam
                    )
                )
            if nets != old.members:
                sets[sid] = dataclasses.replace(old, members=nets)
                changed_sets.append(sid)

    # -- endpoints -------------------------------------------------------------------------
    planner = state.planner
    new_eps: dict[str, ir.Endpoint] = {}
    pol_sels = state.pol_selectors
    for e in added:
        # The policy selectors selecting ``e`` (in the builder's sorted order): all of them
        # match its labels, so they are among the candidates for those labels.
        maybe = pol_sels.candidates([dict(new_labels[e.id])], None)
        selectors = tuple(sorted(s for s in maybe if e.id in pol_selected[s]))
        new_eps[e.id] = endpoint_node(e, new_labels[e.id], planner.plans(selectors, e.is_host))
    endpoints = _replaced(program.endpoints, rm_ids | add_ids, new_eps.values(), _ep_key)
    if endpoints is None:
        return "endpoint ids are not unique"
    old_eps = {}  # id -> the program's endpoint (ids are unique and sorted: binary searches)
    for eid in rm_ids:
        i = bisect.bisect_left(program.endpoints, eid, key=_ep_key)
        if i < len(program.endpoints) and program.endpoints[i].id == eid:
            old_eps[eid] = program.endpoints[i]
    local_changed = any(
        x.node == program.node for x in (*old_eps.values(), *new_eps.values())
    ) and any(old_eps.get(i) != new_eps.get(i) for i in rm_ids | add_ids)
    sel_tuple = _replaced(
        program.selectables,
        {(old_sel[i].kind, i) for i in rm_ids} | {(x.kind, x.id) for x in new_sel.values()},
        new_sel.values(),
        _sel_key,
    )
    if sel_tuple is None:
        return "selectable ids are not unique"
    new_program = ir.Program(
        node=program.node,
        tiers=program.tiers,
        policies=program.policies,
        profiles=program.profiles,
        sets=MappingProxyType(sets) if changed_sets else program.sets,
        endpoints=endpoints,
        selectables=sel_tuple,
        felix=program.felix,
        host_ips=program.host_ips,
        dropped_rules=program.dropped_rules,
    )
    new_state = dataclasses.replace(
        state,
        resources=resources,
        program=new_program,
        set_selected=set_selected,
        pol_selected=pol_selected,
        selectables=selectables,
        owners=owners,
    )
    return Update(
        new_program,
        new_state,
        tuple(changed_sets),
        tuple(sorted(rm_ids | add_ids)),
        local_changed,
    )
