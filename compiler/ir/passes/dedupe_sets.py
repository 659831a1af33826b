"""Merge sets that hold exactly the same members into one, and re-point the rules to it.

Why: different selectors often pick the same endpoints (``app == "web"`` and
``app in {"web"}``, or a namespace term and a namespaceSelector for the same namespace), and
after the family split many sets of a family are empty or identical. Each distinct set costs a
kernel object (an ipset, an nft set, a block of LPM-trie keys), so only one is kept per distinct
membership.

Which one survives is deterministic and keeps ids stable: the **smallest id** of the group. A set
that nothing merges into keeps its id, so unrelated changes elsewhere never rename it.

Only resolved sets are compared, and only within one kind (selector set vs named-port set) and
one family; members are compared after ``aggregate_cidrs`` has put them in minimal form, so two
sets with the same union of addresses compare equal. A rule that referred to two sets which are
now one refers to it once. Sets that no rule refers to any more are removed.

>>> import ipaddress
>>> from compiler.frontend.model import FelixConfig
>>> from compiler.ir.nodes import AddrSet, Match, Policy, Rule, Side, make_program
>>> ip = frozenset({ipaddress.ip_network("10.0.0.1/32")})
>>> a, b = AddrSet("s:b", 'app == "web"', members=ip), AddrSet("s:a", 'app in {"web"}', members=ip)
>>> rule = Rule("allow", Match(src=Side(sets=("s:b",))), 0)
>>> pol = Policy("gnp/p", "p", None, "GlobalNetworkPolicy", "default", None, "all()",
...              ("ingress",), ingress=(rule,))
>>> prog = make_program(node=None, tiers=(), policies=(pol,), profiles=(), sets=(a, b),
...                     endpoints=(), selectables=(), felix=FelixConfig(), host_ips={})
>>> out = run(prog, None)
>>> list(out.sets), out.policies["gnp/p"].ingress[0].match.src.sets
(['s:a'], ('s:a',))
"""

from __future__ import annotations

from collections import defaultdict

from compiler.ir.nodes import AddrSet, Match, Program, Rule, Side, replace_program
from compiler.ir.passes._rules import (
    map_rule_lists,
    map_side_sets,
    match_with,
    prune_sets,
    side_set_ids,
)


def _key(s: AddrSet) -> tuple | None:
    if not s.resolved:
        return None
    members = s.port_members if s.is_named_port else s.members
    return (s.is_named_port, s.family, members)


def canonical_ids(program: Program) -> dict[str, str]:
    """Old set id -> the id of the set that replaces it (itself when it survives)."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    out = {}
    for sid, s in program.sets.items():
        key = _key(s)
        if key is None:
            out[sid] = sid
        else:
            groups[key].append(sid)
    for ids in groups.values():
        keep = min(ids)
        out.update((sid, keep) for sid in ids)
    return out


def run(program: Program, ctx: object) -> Program:
    canon = canonical_ids(program)
    renamed = frozenset(sid for sid, keep in canon.items() if sid != keep)
    if not renamed:
        pruned = prune_sets(program)
        return (
            program if len(pruned) == len(program.sets) else replace_program(program, sets=pruned)
        )
    rename = canon.__getitem__
    used: set[str] = set()
    # Only sides naming a merged-away set change; the others (most) are kept as they are, and
    # only the set ids they name are noted (for the pruning below, in the same walk).
    done: dict[int, Side] = {}  # id(old side) -> new side; old sides live in ``program``

    def side(s: Side) -> Side:
        got = done.get(id(s))
        if got is not None:
            return got
        ids = side_set_ids(s)
        new = s if renamed.isdisjoint(ids) else map_side_sets(s, rename)
        used.update(ids if new is s else side_set_ids(new))
        done[id(s)] = new
        return new

    matches: dict[int, tuple[Match, Match]] = {}  # id(old) -> (old, new), as ``done``

    def match_of(m: Match) -> Match:
        hit = matches.get(id(m))
        if hit is not None:
            return hit[1]
        src, dst = side(m.src), side(m.dst)
        new = m
        if src is not m.src or dst is not m.dst:
            new = match_with(m, m.ip_version, src, dst)
        matches[id(m)] = (m, new)
        return new

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        out = []
        changed = False
        for r in rs:
            match = match_of(r.match)
            if match is r.match:
                out.append(r)
                continue
            changed = True
            out.append(Rule(r.action, match, r.index, r.origin, r.http_ignored))
        # Unchanged rules are the same objects: keep the tuple, so the policy is kept too.
        return tuple(out) if changed else rs

    policies, profiles = map_rule_lists(program, rules)
    sets = {sid: s for sid, s in program.sets.items() if canon[sid] == sid and sid in used}
    return replace_program(program, policies=policies, profiles=profiles, sets=sets)
