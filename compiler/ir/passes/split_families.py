"""Split every rule and set by IP family.

SEMANTICS.md §Resources (Rule): with no ``ipVersion`` a rule is rendered once per family with
its CIDRs filtered to that family; if filtering empties a nets field that was set, the rule is
dropped for that family (it does not become "any"); a rule dropped for both families is recorded
in ``program.dropped_rules``. Sets split the same way: set ``X`` becomes
``X:4`` and ``X:6`` holding only that family's members. Afterwards every rule has
``match.ip_version`` 4 or 6, and a policy's rule list holds the v4 and v6 copies in source order.

>>> import ipaddress
>>> from compiler.ir.nodes import Match, Side, Rule
>>> r = Rule("allow", Match(dst=Side(nets=(ipaddress.ip_network("10.0.0.0/8"),))), 0)
>>> [x.match.ip_version for x in _split_rule(r)]
[4]
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any

from compiler.ir.nodes import (
    AddrSet,
    IPNet,
    Match,
    PortMatch,
    Program,
    Rule,
    Side,
    replace_program,
)
from compiler.ir.passes._rules import all_rules, dropped_entries, map_rule_lists, match_with
from compiler.ir.passes.resolve_sets import family_parts

FAMILIES = (4, 6)


def _fam_id(sid: str, family: int) -> str:
    return f"{sid}:{family}"


def _ports(pm: PortMatch | None, family: int) -> PortMatch | None:
    if pm is None:
        return None
    return PortMatch(pm.ranges, tuple(_fam_id(s, family) for s in pm.named_sets))


def _filter(nets: tuple[IPNet, ...], family: int) -> tuple[IPNet, ...]:
    return tuple(n for n in nets if n.version == family)


_ANY = Side()


def _side(side: Side, family: int) -> Side | None:
    if (
        side.nets is None
        and not side.not_nets
        and not side.sets
        and not side.not_sets
        and side.ports is None
        and side.not_ports is None
    ):
        return _ANY  # the common case: nothing family-specific on this side
    nets = None
    if side.nets is not None:
        nets = _filter(side.nets, family)
        if not nets:
            return None
    return Side(
        nets=nets,
        not_nets=_filter(side.not_nets, family),
        sets=tuple(_fam_id(s, family) for s in side.sets),
        not_sets=tuple(_fam_id(s, family) for s in side.not_sets),
        ports=_ports(side.ports, family),
        not_ports=_ports(side.not_ports, family),
    )


def _split_match(m: Match, memo: dict[int, tuple[Match, tuple[Match, ...]]] | None) -> tuple:
    """The per-family copies of a match; ``memo`` (one run's, ``id(match) -> (match, copies)``)
    makes them once per match object (the builder shares equal matches)."""
    if memo is not None:
        hit = memo.get(id(m))
        if hit is not None:
            return hit[1]
    out = []
    for family in (m.ip_version,) if m.ip_version else FAMILIES:
        src, dst = _side(m.src, family), _side(m.dst, family)
        if src is None or dst is None:
            continue
        out.append(match_with(m, family, src, dst))
    copies = tuple(out)
    if memo is not None:
        memo[id(m)] = (m, copies)  # holds m: the id stays its own
    return copies


def _split_rule(rule: Rule, memo: dict | None = None) -> list[Rule]:
    return [
        Rule(rule.action, match, rule.index, rule.origin, rule.http_ignored)
        for match in _split_match(rule.match, memo)
    ]


def _split_rules(rules: tuple[Rule, ...], memo: dict | None = None) -> tuple[Rule, ...]:
    return tuple(x for r in rules for x in _split_rule(r, memo))


def _partition(items: frozenset, is_v4: Callable[[Any], bool]) -> dict[int, frozenset | None]:
    """``{4: the v4 items, 6: the rest}``; the input set itself when one side is empty (no
    rehashing: an IPv4Network's hash is computed in Python)."""
    v4 = [x for x in items if is_v4(x)]
    if len(v4) == len(items):
        return {4: items, 6: frozenset()}
    if not v4:
        return {4: frozenset(), 6: items}
    # Hash only the smaller side; the difference reuses the stored hashes of ``items``.
    if 2 * len(v4) <= len(items):
        four = frozenset(v4)
        return {4: four, 6: items - four}
    six = frozenset([x for x in items if not is_v4(x)])
    return {4: items - six, 6: six}


def _split_set(
    s: AddrSet,
    memo: dict[frozenset, dict[int, frozenset | None]],
    parts: dict[int, tuple[frozenset, dict[int, frozenset]]],
) -> list[AddrSet]:
    # One pass over the members, by class (``version`` is a Python-level property).
    members: dict[int, frozenset | None] = {4: None, 6: None}
    port_members: dict[int, frozenset | None] = {4: None, 6: None}
    if s.members is not None:
        members = _parts(s.members, parts, memo, lambda n: n.__class__ is IPv4Network)
    if s.port_members is not None:
        port_members = _parts(s.port_members, parts, memo, lambda t: t[0].__class__ is IPv4Network)
    return [
        AddrSet(
            _fam_id(s.id, family),
            s.selector,
            s.port_name,
            s.port_protocol,
            family,
            members[family],
            port_members[family],
            s.origin,
        )
        for family in FAMILIES
    ]


def _parts(
    items: frozenset,
    parts: dict[int, tuple[frozenset, dict[int, frozenset]]],
    memo: dict[frozenset, dict[int, frozenset | None]],
    is_v4: Callable[[Any], bool],
) -> dict[int, frozenset | None]:
    """The family parts of ``items``: those ``resolve_sets`` built it from when it did (same
    run), else partitioned once per distinct set (sets often share their members)."""
    known = parts.get(id(items))
    if known is not None and known[0] is items:
        return known[1]  # type: ignore[return-value]
    got = memo.get(items)
    if got is None:
        got = memo[items] = _partition(items, is_v4)
    return got


def run(program: Program, ctx: object) -> Program:
    if all(s.family is not None for s in program.sets.values()) and all(
        r.match.ip_version for _, _, rules in all_rules(program) for r in rules
    ):
        return program  # already split (profiles' rules count too)
    dropped: set[tuple[str, int, str]] = set()
    matches: dict[int, tuple[Match, tuple[Match, ...]]] = {}

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        out = _split_rules(rs, matches)
        dropped.update(dropped_entries(owner, direction, rs, out))
        return out

    policies, profiles = map_rule_lists(program, rules)
    memo: dict[frozenset, dict[int, frozenset | None]] = {}
    parts = family_parts(ctx, take=True)
    sets = {x.id: x for s in program.sets.values() for x in _split_set(s, memo, parts)}
    return replace_program(
        program,
        policies=policies,
        profiles=profiles,
        sets=sets,
        dropped_rules=tuple(set(program.dropped_rules) | dropped),
    )
