"""Merge adjacent and overlapping prefixes: in every selector set and in every inline CIDR list.

Why: a set built from a NetworkSet or from many pods often holds prefixes that overlap
(``10.0.0.0/8`` next to ``10.1.0.0/16``) or tile a bigger one (two /25s make a /24). Every
target pays per element — ipset and nft set elements, LPM-trie entries, and, for inline
``nets``/``notNets``, one iptables match block per CIDR — so the smallest equivalent prefix list
is worth computing once here. The union of addresses is unchanged, and membership ("in any of")
is all the evaluator and the targets ask of these lists, so the verdict of every flow is too.

Prefixes are only merged within one address family. ``nets`` keeps its ``None`` ("no
constraint") versus ``()`` ("matches nothing") distinction. Named-port sets hold exact
``(ip, protocol, port)`` triples and are left alone.

>>> import ipaddress
>>> nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24",
...                                            "10.1.2.3/32", "10.1.0.0/16", "fd00::/65", "fd00:0:0:0:8000::/65")]
>>> [str(n) for n in collapse(nets)]
['10.0.0.0/23', '10.1.0.0/16', 'fd00::/64']
"""

from __future__ import annotations

import dataclasses
import ipaddress

from compiler.ir.nodes import IPNet, Program, Rule, Side, replace_program
from compiler.ir.passes._rules import map_rule_lists


def collapse(nets) -> tuple[IPNet, ...]:  # noqa: ANN001 - any iterable of networks
    """The minimal sorted prefix list with the same union, per family (v4 first)."""
    by: dict[int, list[IPNet]] = {4: [], 6: []}
    for n in nets:
        by[n.version].append(n)
    out: list[IPNet] = []
    for family in (4, 6):
        if by[family]:
            out.extend(sorted(ipaddress.collapse_addresses(by[family])))
    return tuple(out)


def _side(side: Side) -> Side:
    nets = None if side.nets is None else collapse(side.nets)
    not_nets = collapse(side.not_nets)
    if nets == side.nets and not_nets == side.not_nets:
        return side
    return dataclasses.replace(side, nets=nets, not_nets=not_nets)


def _rules(owner: str, direction: str, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    out = []
    for r in rules:
        src, dst = _side(r.match.src), _side(r.match.dst)
        if src is r.match.src and dst is r.match.dst:
            out.append(r)
        else:
            out.append(dataclasses.replace(r, match=dataclasses.replace(r.match, src=src, dst=dst)))
    return tuple(out)


def run(program: Program, ctx: object) -> Program:
    sets = {}
    for sid, s in program.sets.items():
        if s.is_named_port or s.members is None:
            sets[sid] = s
        else:
            sets[sid] = dataclasses.replace(s, members=frozenset(collapse(s.members)))
    policies, profiles = map_rule_lists(program, _rules)
    return replace_program(program, sets=sets, policies=policies, profiles=profiles)
