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

import dataclasses

from compiler.ir.nodes import AddrSet, IPNet, PortMatch, Program, Rule, Side, replace_program
from compiler.ir.passes._rules import all_rules, dropped_entries, map_rule_lists

FAMILIES = (4, 6)


def _fam_id(sid: str, family: int) -> str:
    return f"{sid}:{family}"


def _ports(pm: PortMatch | None, family: int) -> PortMatch | None:
    if pm is None:
        return None
    return dataclasses.replace(pm, named_sets=tuple(_fam_id(s, family) for s in pm.named_sets))


def _filter(nets: tuple[IPNet, ...], family: int) -> tuple[IPNet, ...]:
    return tuple(n for n in nets if n.version == family)


def _side(side: Side, family: int) -> Side | None:
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


def _split_rule(rule: Rule) -> list[Rule]:
    m = rule.match
    out = []
    for family in (m.ip_version,) if m.ip_version else FAMILIES:
        src, dst = _side(m.src, family), _side(m.dst, family)
        if src is None or dst is None:
            continue
        match = dataclasses.replace(m, ip_version=family, src=src, dst=dst)
        out.append(dataclasses.replace(rule, match=match))
    return out


def _split_rules(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(x for r in rules for x in _split_rule(r))


def _split_set(s: AddrSet) -> list[AddrSet]:
    out = []
    for family in FAMILIES:
        members = port_members = None
        if s.members is not None:
            members = frozenset(n for n in s.members if n.version == family)
        if s.port_members is not None:
            port_members = frozenset(t for t in s.port_members if t[0].version == family)
        out.append(
            dataclasses.replace(
                s,
                id=_fam_id(s.id, family),
                family=family,
                members=members,
                port_members=port_members,
            )
        )
    return out


def run(program: Program, ctx: object) -> Program:
    if all(s.family is not None for s in program.sets.values()) and all(
        r.match.ip_version for _, _, rules in all_rules(program) for r in rules
    ):
        return program  # already split (profiles' rules count too)
    dropped: set[tuple[str, int, str]] = set()

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        out = _split_rules(rs)
        dropped.update(dropped_entries(owner, direction, rs, out))
        return out

    policies, profiles = map_rule_lists(program, rules)
    sets = {x.id: x for s in program.sets.values() for x in _split_set(s)}
    return replace_program(
        program,
        policies=policies,
        profiles=profiles,
        sets=sets,
        dropped_rules=tuple(set(program.dropped_rules) | dropped),
    )
