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

import dataclasses
from collections import defaultdict

from compiler.ir.nodes import AddrSet, Program, Rule, Side, replace_program
from compiler.ir.passes._rules import map_match_sides, map_rule_lists, map_side_sets, prune_sets


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
    if all(k == v for k, v in canon.items()):
        pruned = prune_sets(program)
        return (
            program if len(pruned) == len(program.sets) else replace_program(program, sets=pruned)
        )
    rename = canon.__getitem__

    def side(s: Side) -> Side:
        return map_side_sets(s, rename)

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        out = []
        for r in rs:
            match = map_match_sides(r.match, side)
            out.append(r if match is r.match else dataclasses.replace(r, match=match))
        # Unchanged rules are the same objects: keep the tuple, so the policy is kept too.
        return rs if all(a is b for a, b in zip(out, rs, strict=True)) else tuple(out)

    policies, profiles = map_rule_lists(program, rules)
    sets = {sid: s for sid, s in program.sets.items() if canon[sid] == sid}
    out = replace_program(program, policies=policies, profiles=profiles, sets=sets)
    return replace_program(out, sets=prune_sets(out))
