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
import functools

from compiler.ir._nets import make_net
from compiler.ir.nodes import (
    AddrSet,
    IPNet,
    Match,
    Program,
    Rule,
    Side,
    replace_program,
    replacer,
)
from compiler.ir.passes._rules import RuleListFn, map_rule_lists, match_with
from compiler.ir.passes._space import AddrSpace


def collapse(nets, memo: dict | None = None) -> tuple[IPNet, ...]:  # noqa: ANN001 - any iterable of networks
    """The minimal sorted prefix list with the same union, per family (v4 first).

    Same result as ``ipaddress.collapse_addresses`` (the minimal prefix cover of a set of
    addresses is unique: the aligned blocks of its maximal intervals), computed on integers so
    that a set of ten thousand pod addresses, which rarely merge, costs one sort: only intervals
    that really merge several prefixes are turned back into networks. ``memo`` (one run's) keeps
    the networks of merged intervals, which many sets share.
    """
    return _collapse(_spans(nets), memo, None)


def _spans(nets) -> list[tuple[int, int, int, IPNet]]:  # noqa: ANN001 - any iterable of networks
    """``(version, first, last, network)`` per network, sorted."""
    return sorted(_span_tuples(nets))


def _span_tuples(nets) -> list[tuple[int, int, int, IPNet]]:  # noqa: ANN001 - any iterable
    """``(version, first, last, network)`` per network. The networks' own fields, not their
    properties: this is the pass's inner loop (and IPv4Network/IPv6Network are the only IPNet
    classes)."""
    return [
        (n._version, lo, lo + (1 << (n._max_prefixlen - n._prefixlen)) - 1, n)
        for n in nets
        for lo in (n.network_address._ip,)
    ]


class _Spans:
    """:func:`_spans` of member sets, with each network's tuple made once per run.

    Resolved members are unions of the selectables' own network objects, so the tuples of all
    of those are made up front (ten thousand, where the member sets hold a few hundred
    thousand) and a set's tuples are found by ``id`` (hashing a network runs Python code).
    Each tuple holds its network, so an id in the table is that network's for the table's
    life; a set holding any other network is done the plain way."""

    def __init__(self, program: Program) -> None:
        nets = [n for sel in program.selectables for n in sel.nets]
        self._by_id = {id(t[3]): t for t in _span_tuples(nets)}

    def __call__(self, members: frozenset) -> list[tuple[int, int, int, IPNet]]:
        try:
            return sorted(map(self._by_id.__getitem__, map(id, members)))
        except KeyError:
            return _spans(members)


def _collapse(
    spans: list[tuple[int, int, int, IPNet]],
    memo: dict | None,
    intervals: dict[int, list[tuple[int, int]]] | None,
) -> tuple[IPNet, ...]:
    """:func:`collapse` of sorted :func:`_spans`; ``intervals``, when given, receives the
    maximal intervals per family (what ``AddrSpace`` holds)."""
    out: list[IPNet] = []
    i = 0
    n_spans = len(spans)
    while i < n_spans:
        version, lo, hi, first = spans[i]
        j = i + 1
        while j < n_spans and spans[j][0] == version and spans[j][1] <= hi + 1:
            if spans[j][2] > hi:
                hi = spans[j][2]
            j += 1
        if intervals is not None:
            intervals[version].append((lo, hi))
        if j == i + 1 or spans[i][2] == hi:
            out.append(first)  # nothing merged into it (duplicates and subnets only)
        elif memo is None:
            out.extend(_summarize(version, lo, hi))
        else:
            key = (version, lo, hi)
            got = memo.get(key)
            if got is None:
                got = memo[key] = _summarize(version, lo, hi)
            out.extend(got)
        i = j
    return tuple(out)


_with_members = replacer(AddrSet)


def _summarize(version: int, lo: int, hi: int) -> tuple[IPNet, ...]:
    """``ipaddress.summarize_address_range`` on integers: the aligned blocks of [lo, hi]."""
    bits = 32 if version == 4 else 128
    out = []
    while lo <= hi:
        size = (hi - lo + 1).bit_length() - 1
        if lo:
            size = min(size, (lo & -lo).bit_length() - 1)
        out.append(make_net(version, lo, bits - size))
        lo += 1 << size
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _collapse_list(nets: tuple[IPNet, ...]) -> tuple[IPNet, ...]:
    """Inline lists repeat across rules (the v4 and v6 copies, converted k8s rules): memoised."""
    return collapse(nets) if nets else nets


def _side(side: Side) -> Side:
    nets = None if side.nets is None else _collapse_list(side.nets)
    not_nets = _collapse_list(side.not_nets)
    if nets == side.nets and not_nets == side.not_nets:
        return side
    return dataclasses.replace(side, nets=nets, not_nets=not_nets)


def _match(m: Match) -> Match:
    src, dst = _side(m.src), _side(m.dst)
    if src is m.src and dst is m.dst:
        return m
    return match_with(m, m.ip_version, src, dst)


def _rule_lists() -> RuleListFn:
    """The rule-list function of one run: each match object is looked at once (the builder and
    the family split share equal matches)."""
    done: dict[int, tuple[Match, Match]] = {}  # id(old) -> (old, new); holds old: ids stay

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        out = []
        changed = False
        for r in rs:
            hit = done.get(id(r.match))
            if hit is None:
                hit = done[id(r.match)] = (r.match, _match(r.match))
            if hit[1] is r.match:
                out.append(r)
            else:
                changed = True
                out.append(Rule(r.action, hit[1], r.index, r.origin, r.http_ignored))
        return tuple(out) if changed else rs

    return rules


def run(program: Program, ctx: object) -> Program:
    sets = {}
    # Many sets have the same members (dedupe_sets merges them next): collapse each distinct
    # membership once. A frozenset's hash is cached, so the lookup is cheap.
    done: dict[frozenset, frozenset] = {}
    memo: dict[tuple[int, int, int], tuple[IPNet, ...]] = {}
    # The collapse finds each membership's maximal intervals, which is all the analysis
    # passes want of it (``Analysis.addr_space``): hand them over through the run's cache.
    cache = getattr(ctx, "cache", None)
    spaces: dict | None = cache.setdefault("addr_spaces", {}) if isinstance(cache, dict) else None
    spans: _Spans | None = None
    for sid, s in program.sets.items():
        if s.is_named_port or s.members is None:
            sets[sid] = s
            continue
        members = done.get(s.members)
        if members is None:
            if spans is None:
                spans = _Spans(program)
            intervals: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
            out = _collapse(spans(s.members), memo, intervals)
            # Same size: already minimal, and the minimal prefix cover is unique, so it is the
            # same set; keep it (building a frozenset of networks hashes each in Python).
            members = s.members if len(out) == len(s.members) else frozenset(out)
            done[s.members] = members
            if spaces is not None:
                spaces[members] = AddrSpace(tuple(intervals[4]), tuple(intervals[6]))
        sets[sid] = s if members is s.members else _with_members(s, members=members)
    policies, profiles = map_rule_lists(program, _rule_lists())
    return replace_program(program, sets=sets, policies=policies, profiles=profiles)
