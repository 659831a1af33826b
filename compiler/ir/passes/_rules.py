"""Helpers shared by the passes: walking every rule list, rewriting sides, bookkeeping of drops.

Rules live in two places, policies and profiles, each with an ingress and an egress list. The
passes that edit rules use :func:`map_rule_lists` so they treat both the same way, and
:func:`prune_sets` so no set survives that no rule refers to any more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from compiler.ir import nodes
from compiler.ir.nodes import DIRECTIONS, Match, PortMatch, Program, Rule, Side, replace_program

RuleListFn = Callable[[str, str, tuple[Rule, ...]], tuple[Rule, ...]]
_Owner = TypeVar("_Owner", nodes.Policy, nodes.Profile)


def map_rule_lists(program: Program, fn: RuleListFn) -> tuple[dict, dict]:
    """Apply ``fn(owner, direction, rules)`` to every policy's and profile's rule lists
    (ingress, then egress).

    ``owner`` is the policy id or the profile name. Returns the new ``policies`` and
    ``profiles`` mappings (unchanged objects are reused).
    """
    policies = {
        pid: _map_owner(pid, p, fn, _with_policy_rules) for pid, p in program.policies.items()
    }
    profiles = {
        name: _map_owner(name, prof, fn, _with_profile_rules)
        for name, prof in program.profiles.items()
    }
    return policies, profiles


_with_policy_rules = nodes.replacer(nodes.Policy)
_with_profile_rules = nodes.replacer(nodes.Profile)


def _map_owner(owner: str, obj: _Owner, fn: RuleListFn, replace: Callable[..., _Owner]) -> _Owner:
    ingress = fn(owner, nodes.INGRESS, obj.ingress)
    egress = fn(owner, nodes.EGRESS, obj.egress)
    if _same(ingress, obj.ingress) and _same(egress, obj.egress):
        return obj
    return replace(obj, ingress=ingress, egress=egress)


def _same(new: tuple[Rule, ...], old: tuple[Rule, ...]) -> bool:
    return new is old or new == old


def drop_rules(program: Program, fn: RuleListFn, dropped: set[tuple[str, int, str]]) -> Program:
    """:func:`map_rule_lists` for a pass that only removes rules: ``fn`` returns a rule list
    with some rules left out and adds their :func:`dropped_entries` to ``dropped``.

    The result records the drops in ``dropped_rules`` and loses the sets no remaining rule uses;
    when ``fn`` dropped nothing, it is ``program`` itself.
    """
    policies, profiles = map_rule_lists(program, fn)
    if all(policies[k] is v for k, v in program.policies.items()) and all(
        profiles[k] is v for k, v in program.profiles.items()
    ):
        return program
    out = replace_program(
        program,
        policies=policies,
        profiles=profiles,
        dropped_rules=tuple(set(program.dropped_rules) | dropped),
    )
    return replace_program(out, sets=prune_sets(out))


def all_rules(program: Program):  # noqa: ANN201 - generator of (owner, direction, rules)
    for pid, p in program.policies.items():
        for d in DIRECTIONS:
            yield pid, d, p.rules(d)
    for name, prof in program.profiles.items():
        for d in DIRECTIONS:
            yield name, d, prof.rules(d)


def side_set_ids(side: Side) -> set[str]:
    out = set(side.sets) | set(side.not_sets)
    for pm in (side.ports, side.not_ports):
        if pm is not None:
            out.update(pm.named_sets)
    return out


def referenced_sets(program: Program) -> set[str]:
    # Rules share their match objects (and matches their sides): look at each once.
    matches = {id(r.match): r.match for _, _, rules in all_rules(program) for r in rules}
    sides = {id(s): s for m in matches.values() for s in (m.src, m.dst)}
    out: set[str] = set()
    for side in sides.values():
        out |= side_set_ids(side)
    return out


def prune_sets(program: Program) -> dict:
    """The program's sets, without those that no rule refers to."""
    used = referenced_sets(program)
    return {sid: s for sid, s in program.sets.items() if sid in used}


def map_side_sets(side: Side, fn: Callable[[str], str]) -> Side:
    """Rename every set id a side refers to (duplicates that result are dropped, order kept)."""

    def ids(xs: tuple[str, ...]) -> tuple[str, ...]:
        if not xs:
            return xs
        out = tuple(dict.fromkeys(fn(x) for x in xs))
        return xs if out == xs else out

    def ports(pm: PortMatch | None) -> PortMatch | None:
        if pm is None or not pm.named_sets:
            return pm
        named = tuple(sorted(set(ids(pm.named_sets))))
        return pm if named == pm.named_sets else PortMatch(pm.ranges, named)

    # Most sides name no set at all, and most renames leave a side as it is: keep the object
    # (frozen, so sharing it is the same as an equal copy).
    if not (side.sets or side.not_sets or side.ports or side.not_ports):
        return side
    sets, not_sets = ids(side.sets), ids(side.not_sets)
    p, np_ = ports(side.ports), ports(side.not_ports)
    if (
        sets is side.sets
        and not_sets is side.not_sets
        and p is side.ports
        and np_ is side.not_ports
    ):
        return side
    return Side(side.nets, side.not_nets, sets, not_sets, p, np_)


def match_with(m: Match, ip_version: int | None, src: Side, dst: Side) -> Match:
    """``m`` with another IP version and sides (``dataclasses.replace`` without its cost: the
    passes make thousands)."""
    return Match(
        ip_version,
        m.protocol,
        m.not_protocol,
        m.icmp_type,
        m.icmp_code,
        m.not_icmp_type,
        m.not_icmp_code,
        src,
        dst,
    )


def map_match_sides(match: Match, fn: Callable[[Side], Side]) -> Match:
    src, dst = fn(match.src), fn(match.dst)
    if src is match.src and dst is match.dst:
        return match
    return dataclasses.replace(match, src=src, dst=dst)


def dropped_entries(
    owner: str, direction: str, before: tuple[Rule, ...], after: tuple[Rule, ...]
) -> set[tuple[str, int, str]]:
    """``(owner, index, direction)`` for each source rule none of whose copies survived.

    After the family split one source rule can have a v4 and a v6 copy with the same index; a
    rule counts as dropped only when every copy is gone.
    """
    kept = {r.index for r in after}
    return {(owner, r.index, direction) for r in before if r.index not in kept}
