"""Exact interval arithmetic over addresses and ports, for the passes that reason about matches.

The analysis passes (``fold_empty``, ``shadowed_rules``) must be *sound*: they may only claim that
a rule can never match, or that one rule covers another, when that is provably true. Reasoning
about CIDR lists prefix by prefix is easy to get subtly wrong (a prefix can be covered by two
halves without being inside either), so addresses are turned into sorted, disjoint, inclusive
integer intervals per address family and compared exactly. Port ranges use the same interval
code on ``[0, 65535]``.

>>> a = AddrSpace.of(_nets("10.0.0.0/25", "10.0.0.128/25"))
>>> a <= AddrSpace.of(_nets("10.0.0.0/24"))
True
>>> (AddrSpace.full() - a).is_disjoint(AddrSpace.of(_nets("10.0.0.7/32")))
True
>>> AddrSpace.of(_nets("fd00::/64")).restrict(4).is_empty
True
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from compiler.ir.nodes import IPNet

Interval = tuple[int, int]  # inclusive
Intervals = tuple[Interval, ...]  # sorted, disjoint, non-adjacent

_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
PORT_MAX = 65535
_INF = 1 << 129  # larger than any address, for bisecting (lo, hi) tuples


def normalise(spans: Iterable[Interval]) -> Intervals:
    """Sort and merge overlapping or adjacent intervals."""
    out: list[list[int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def intersect(a: Intervals, b: Intervals) -> Intervals:
    if not a or not b:
        return ()
    # Fast paths: one side is a single interval covering the other (e.g. "every address" & a
    # large set), which is most calls; the general merge below copies O(len) either way.
    if len(a) == 1 and a[0][0] <= b[0][0] and b[-1][1] <= a[0][1]:
        return b
    if len(b) == 1 and b[0][0] <= a[0][0] and a[-1][1] <= b[0][1]:
        return a
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def minus(a: Intervals, b: Intervals) -> Intervals:
    if not b or not a:
        return a
    if len(a) == 1 and a[0][0] <= b[0][0] and b[-1][1] <= a[0][1]:
        return _complement(a[0], b)
    out = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _complement(whole: Interval, b: Intervals) -> Intervals:
    """``minus((whole,), b)`` for ``b`` inside ``whole``: the gaps of ``b`` and its two ends.
    The most common difference by far (every address of a family minus a negated set of
    thousands), and ``b`` being normalised, every gap between two of its intervals is
    non-empty."""
    lo, hi = whole
    gaps = [(x[1] + 1, y[0] - 1) for x, y in zip(b, b[1:], strict=False)]
    head = [(lo, b[0][0] - 1)] if lo < b[0][0] else []
    tail = [(b[-1][1] + 1, hi)] if b[-1][1] < hi else []
    return tuple(head + gaps + tail)


def subset(a: Intervals, b: Intervals) -> bool:
    """``not minus(a, b)``, without building the difference: stops at the first interval of
    ``a`` that ``b`` does not cover (``a`` is often a set of thousands of addresses)."""
    if not a:
        return True
    if not b:
        return False
    if len(b) == 1:
        return b[0][0] <= a[0][0] and a[-1][1] <= b[0][1]
    j, nb = 0, len(b)
    for lo, hi in a:
        while j < nb and b[j][1] < lo:
            j += 1
        if j == nb or b[j][0] > lo:
            return False
        reach = b[j][1]
        k = j
        while reach < hi:  # covered by adjacent or overlapping intervals of b, if any
            k += 1
            if k == nb or b[k][0] > reach + 1:
                return False
            reach = max(reach, b[k][1])
    return True


def disjoint(a: Intervals, b: Intervals) -> bool:
    """``not intersect(a, b)``, stopping at the first overlap."""
    i = j = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return False
    return True


def net_interval(net: IPNet) -> Interval:
    lo = int(net.network_address)
    return lo, lo + (1 << (net.max_prefixlen - net.prefixlen)) - 1


@dataclass(frozen=True, slots=True)
class AddrSpace:
    """A set of IPv4 and IPv6 addresses."""

    v4: Intervals = ()
    v6: Intervals = ()

    @staticmethod
    def of(nets: Iterable[IPNet]) -> AddrSpace:
        by: dict[int, list[Interval]] = {4: [], 6: []}
        for n in nets:
            by[n.version].append(net_interval(n))
        return AddrSpace(normalise(by[4]), normalise(by[6]))

    @staticmethod
    def full(family: int | None = None) -> AddrSpace:
        v4 = ((0, _MAX[4]),) if family in (None, 4) else ()
        v6 = ((0, _MAX[6]),) if family in (None, 6) else ()
        return AddrSpace(v4, v6)

    def restrict(self, family: int | None) -> AddrSpace:
        if family is None:
            return self
        return AddrSpace(self.v4 if family == 4 else (), self.v6 if family == 6 else ())

    @property
    def is_empty(self) -> bool:
        return not self.v4 and not self.v6

    def __and__(self, other: AddrSpace) -> AddrSpace:
        return AddrSpace(intersect(self.v4, other.v4), intersect(self.v6, other.v6))

    def __sub__(self, other: AddrSpace) -> AddrSpace:
        return AddrSpace(minus(self.v4, other.v4), minus(self.v6, other.v6))

    def __le__(self, other: AddrSpace) -> bool:
        return subset(self.v4, other.v4) and subset(self.v6, other.v6)

    def is_disjoint(self, other: AddrSpace) -> bool:
        return disjoint(self.v4, other.v4) and disjoint(self.v6, other.v6)

    def contains_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        spans = self.v4 if ip.version == 4 else self.v6
        n = int(ip)
        i = bisect_right(spans, (n, _INF)) - 1
        return i >= 0 and spans[i][0] <= n <= spans[i][1]


def _nets(*texts: str) -> list[IPNet]:
    """Doctest helper."""
    return [ipaddress.ip_network(t) for t in texts]
