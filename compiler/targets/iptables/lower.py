"""One IR rule match -> iptables rules: small pure rewrites, chained before printing.

The order (:data:`LOWERING` on the IR match, then :func:`clauses`, then :func:`expand`):

1. :func:`fold_protocol` — things iptables cannot say but that are decidable up front: a
   ``notProtocol`` made redundant (or the rule impossible) by ``protocol``; ICMP criteria on the
   other family's ICMP (the v6 copy of an ``ICMP`` rule with a type: ICMPv4 inside IPv6 does not
   exist and ip6tables has no ``-m icmp`` to read its type, so a positive type match drops the
   rule and a negated one is left out; the evaluator, which reads any ICMP type anywhere, differs
   only for such impossible packets), numeric ports on a protocol that has none.
2. :func:`drop_unmatchable` — a side whose ``nets`` the family split emptied matches nothing.
3. :func:`clauses` — criteria that fit in one rule go into a conjunction: the protocol, ICMP
   type, selector sets (``-m set``), *negated* CIDRs (one ``-m iprange !`` each: ``! -s`` takes
   a single CIDR and only once per rule) and negated ports (each ``-m multiport ! --dports``
   holds at most **15** ports — a range counts two — so longer lists become several negated
   matches in the same rule, which ANDs them: exactly "none of"). What is an OR and cannot be
   one option becomes a *factor*: several positive CIDRs on one side (``-s`` takes one CIDR),
   and positive ports when they need more than one multiport match or mix numeric ports with
   named-port sets.
4. :func:`expand` — no factor: one rule. One factor and an idempotent target (everything but
   ``LOG``): one rule per alternative (first match wins, same target). Otherwise Felix's **match
   blocks** (felix/rules/policy.go): each factor is evaluated in its own block of rules that set
   a scratch mark bit when any alternative matches (guarded by the previous block's bit), and the
   final rule requires the last bit plus the conjunction. Two scratch bits, used alternately,
   suffice for any number of blocks.

>>> import ipaddress
>>> from compiler.ir import nodes as ir
>>> from compiler.targets.iptables.marks import Marks
>>> m = ir.Match(ip_version=4, protocol=6,
...              src=ir.Side(nets=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.0/16"))),
...              dst=ir.Side(ports=ir.PortMatch(((80, 80), (8000, 8100)))))
>>> ctx = Context(4, {}, Marks.from_mask(0xFFFF0000))
>>> for r in lower_rule(m, ctx, ("-j", "DROP")):
...     print(r.text("c"))
-A c -s 10.0.0.0/8 -p tcp -m multiport --dports 80,8000:8100 -j DROP
-A c -s 192.168.0.0/16 -p tcp -m multiport --dports 80,8000:8100 -j DROP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from compiler.ir import nodes as ir
from compiler.targets.iptables.marks import Marks
from compiler.targets.iptables.model import (
    RANK_DST,
    RANK_MARK,
    RANK_PORTS,
    RANK_PROTO,
    RANK_RANGE,
    RANK_SET,
    RANK_SRC,
    Cond,
    Rule,
)

MULTIPORT_MAX = 15  # xt_multiport: XT_MULTI_PORTS; a range takes two of the slots
ICMP_OF_FAMILY = {4: 1, 6: 58}
PORT_PROTOCOLS = frozenset({6, 17, 132, 136, 33})  # tcp udp sctp udplite dccp (multiport)
_OWN_MODULE = {6: "tcp", 17: "udp", 132: "sctp"}  # protocols with a --dport module of their own
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}


class LoweringError(ValueError):
    """A match iptables cannot express (``check()`` reports these before rendering)."""


@dataclass(frozen=True, slots=True)
class Context:
    family: int
    set_names: Mapping[str, str]  # IR set id -> ipset name
    marks: Marks


@dataclass(frozen=True, slots=True)
class Clauses:
    """``conj`` AND every factor of ``disj`` (each factor an OR of alternatives)."""

    conj: tuple[Cond, ...]
    disj: tuple[tuple[tuple[Cond, ...], ...], ...]
    proto: tuple[Cond, ...]  # the ``-p`` condition: every rule with a port module needs it


def proto_name(number: int) -> str:
    return _PROTO_NAMES.get(number, str(number))


# -- 1-2. rewrites on the IR match --------------------------------------------------------------


def _has_numeric(pm: ir.PortMatch | None) -> bool:
    return pm is not None and bool(pm.ranges)


def fold_protocol(m: ir.Match) -> ir.Match | None:
    """Settle protocol questions iptables cannot leave open.

    >>> fold_protocol(ir.Match(ip_version=4, protocol=6, not_protocol=17)).not_protocol is None
    True
    >>> fold_protocol(ir.Match(ip_version=6, protocol=1, icmp_type=8)) is None
    True
    """
    family = m.ip_version or 4
    if m.protocol is not None and m.not_protocol is not None:
        if m.protocol == m.not_protocol:
            return None
        m = dataclasses.replace(m, not_protocol=None)
    if m.icmp_type is not None:
        if m.protocol is None:
            m = dataclasses.replace(m, protocol=ICMP_OF_FAMILY[family])
        elif m.protocol != ICMP_OF_FAMILY[family]:
            return None  # e.g. the IPv6 copy of an ICMP type rule: no such packets exist
    if (
        m.not_icmp_type is not None
        and m.protocol is not None
        and m.protocol != ICMP_OF_FAMILY[family]
    ):
        m = dataclasses.replace(m, not_icmp_type=None, not_icmp_code=None)
    if m.protocol is not None and m.protocol not in PORT_PROTOCOLS:
        # Numeric ports on a protocol without ports: a positive list never matches, a negated
        # one never excludes (the evaluator: no port, no port match).
        if _has_numeric(m.src.ports) or _has_numeric(m.dst.ports):
            return None
        m = dataclasses.replace(
            m, src=_drop_numeric_not_ports(m.src), dst=_drop_numeric_not_ports(m.dst)
        )
    return m


def _drop_numeric_not_ports(side: ir.Side) -> ir.Side:
    if side.not_ports is None or not side.not_ports.ranges:
        return side
    named = side.not_ports.named_sets
    return dataclasses.replace(side, not_ports=ir.PortMatch((), named) if named else None)


def drop_unmatchable(m: ir.Match) -> ir.Match | None:
    """A side whose ``nets`` is empty matches nothing (the family filter emptied it)."""
    if m.src.nets == () or m.dst.nets == ():
        return None
    return m


LOWERING: tuple[Callable[[ir.Match], ir.Match | None], ...] = (fold_protocol, drop_unmatchable)


# -- 3. clauses ---------------------------------------------------------------------------------


def _net_cond(flag: str, net: ir.IPNet, negate: bool = False) -> Cond:
    args = ("!", flag, str(net)) if negate else (flag, str(net))
    return Cond(RANK_SRC if flag == "-s" else RANK_DST, args)


def _range_cond(flag: str, net: ir.IPNet) -> Cond:
    """``! -s`` takes one CIDR per rule; iprange matches can be repeated, so "none of" is an AND
    of negated ranges in one rule."""
    option = "--src-range" if flag == "-s" else "--dst-range"
    span = f"{net.network_address}-{net.broadcast_address}"
    return Cond(RANK_RANGE, ("-m", "iprange", "!", option, span))


def chunk_ranges(ranges: tuple[tuple[int, int], ...]) -> list[tuple[tuple[int, int], ...]]:
    """Pack port ranges into groups that fit one multiport match (15 slots, a range takes 2).

    >>> [len(c) for c in chunk_ranges(tuple((p, p) for p in range(1, 21)))]
    [15, 5]
    >>> chunk_ranges(((1, 1), (5, 9)))
    [((1, 1), (5, 9))]
    """
    chunks: list[tuple[tuple[int, int], ...]] = []
    cur: list[tuple[int, int]] = []
    used = 0
    for lo, hi in sorted(set(ranges)):
        cost = 1 if lo == hi else 2
        if used + cost > MULTIPORT_MAX:
            chunks.append(tuple(cur))
            cur, used = [], 0
        cur.append((lo, hi))
        used += cost
    if cur:
        chunks.append(tuple(cur))
    return chunks


def _port_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}:{hi}"


def _ports_cond(
    protocol: int, direction: str, chunk: tuple[tuple[int, int], ...], negate: bool
) -> Cond:
    neg = ("!",) if negate else ()
    if len(chunk) == 1 and protocol in _OWN_MODULE:
        option = "--sport" if direction == "s" else "--dport"
        return Cond(RANK_PORTS, ("-m", _OWN_MODULE[protocol], *neg, option, _port_text(*chunk[0])))
    option = "--sports" if direction == "s" else "--dports"
    text = ",".join(_port_text(lo, hi) for lo, hi in chunk)
    return Cond(RANK_PORTS, ("-m", "multiport", *neg, option, text))


def _set_cond(name: str, direction: str, negate: bool = False, with_port: bool = False) -> Cond:
    where = "src" if direction == "s" else "dst"
    flags = f"{where},{where}" if with_port else where
    neg = ("!",) if negate else ()
    return Cond(RANK_SET, ("-m", "set", *neg, "--match-set", name, flags))


def _icmp_cond(family: int, t: int, c: int | None, negate: bool) -> Cond:
    value = str(t) if c is None else f"{t}/{c}"
    neg = ("!",) if negate else ()
    if family == 4:
        return Cond(RANK_PORTS, ("-m", "icmp", *neg, "--icmp-type", value))
    return Cond(RANK_PORTS, ("-m", "icmp6", *neg, "--icmpv6-type", value))


def _name(ctx: Context, set_id: str) -> str:
    try:
        return ctx.set_names[set_id]
    except KeyError:
        raise LoweringError(f"rule refers to unknown set {set_id}") from None


def clauses(m: ir.Match, ctx: Context) -> Clauses:
    """Split a (folded) match into one-rule conditions and OR factors (see the module doc)."""
    conj: list[Cond] = []
    disj: list[tuple[tuple[Cond, ...], ...]] = []
    proto: list[Cond] = []
    if m.protocol is not None:
        proto.append(Cond(RANK_PROTO, ("-p", proto_name(m.protocol))))
    if m.not_protocol is not None:
        conj.append(Cond(RANK_PROTO, ("!", "-p", proto_name(m.not_protocol))))
    if m.icmp_type is not None:
        conj.append(_icmp_cond(ctx.family, m.icmp_type, m.icmp_code, False))
    if m.not_icmp_type is not None:
        if m.protocol is None:
            raise LoweringError("notICMP needs protocol ICMP/ICMPv6")
        conj.append(_icmp_cond(ctx.family, m.not_icmp_type, m.not_icmp_code, True))
    for side, d in ((m.src, "s"), (m.dst, "d")):
        flag = f"-{d}"
        if side.nets is not None:
            alts = tuple((_net_cond(flag, n),) for n in sorted(set(side.nets), key=_net_key))
            if len(alts) == 1:
                conj.extend(alts[0])
            else:
                disj.append(alts)
        conj.extend(_range_cond(flag, n) for n in sorted(set(side.not_nets), key=_net_key))
        conj.extend(_set_cond(_name(ctx, s), d) for s in side.sets)
        conj.extend(_set_cond(_name(ctx, s), d, negate=True) for s in side.not_sets)
        if side.ports is not None:
            alts = _port_alternatives(m.protocol, d, side.ports, ctx)
            if not alts:
                raise LoweringError("empty port list")
            if len(alts) == 1:
                conj.extend(alts[0])
            else:
                disj.append(alts)
        if side.not_ports is not None:
            if side.not_ports.ranges:
                if m.protocol is None:
                    raise LoweringError("numeric ports need a protocol")
                for chunk in chunk_ranges(side.not_ports.ranges):
                    conj.append(_ports_cond(m.protocol, d, chunk, True))
            for s in side.not_ports.named_sets:
                conj.append(_set_cond(_name(ctx, s), d, negate=True, with_port=True))
    return Clauses(tuple(proto + conj), tuple(disj), tuple(proto))


def _port_alternatives(
    protocol: int | None, d: str, pm: ir.PortMatch, ctx: Context
) -> tuple[tuple[Cond, ...], ...]:
    alts: list[tuple[Cond, ...]] = []
    if pm.ranges:
        if protocol is None:
            raise LoweringError("numeric ports need a protocol")
        alts += [(_ports_cond(protocol, d, chunk, False),) for chunk in chunk_ranges(pm.ranges)]
    alts += [(_set_cond(_name(ctx, s), d, with_port=True),) for s in pm.named_sets]
    return tuple(alts)


def _net_key(n: ir.IPNet) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


# -- 4. expansion -------------------------------------------------------------------------------


def expand(
    cl: Clauses,
    target: tuple[str, ...],
    marks: Marks,
    comment: str = "",
    extra: tuple[Cond, ...] = (),
) -> tuple[Rule, ...]:
    """Rules that jump to ``target`` exactly when the clauses hold (see the module doc).

    ``extra`` conditions (e.g. a log rate limit) go on the rule(s) that carry the target only.
    """
    idempotent = target[:2] != ("-j", "LOG")
    if not cl.disj:
        return (Rule(cl.conj + extra, target, comment),)
    if len(cl.disj) == 1 and idempotent:
        return tuple(Rule(cl.conj + alt + extra, target, comment) for alt in cl.disj[0])
    out: list[Rule] = []
    prev = 0
    for i, factor in enumerate(cl.disj):
        bit = marks.scratch0 if i % 2 == 0 else marks.scratch1
        out.append(Rule((), marks.set(0, bit), comment))
        guard = (Cond(RANK_MARK, marks.match(prev)),) if prev else ()
        out.extend(Rule(guard + cl.proto + alt, marks.set(bit, bit), comment) for alt in factor)
        prev = bit
    out.append(Rule((Cond(RANK_MARK, marks.match(prev)),) + cl.conj + extra, target, comment))
    return tuple(out)


def lower_rule(
    m: ir.Match,
    ctx: Context,
    target: tuple[str, ...],
    comment: str = "",
    extra: tuple[Cond, ...] = (),
) -> tuple[Rule, ...]:
    """The whole chain of rewrites for one rule; ``()`` when the rule can never match."""
    folded: ir.Match | None = m
    for step in LOWERING:
        folded = step(folded)
        if folded is None:
            return ()
    return expand(clauses(folded, ctx), target, ctx.marks, comment, extra)
