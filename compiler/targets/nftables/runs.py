"""Runs of consecutive simple rules with the same action, as ONE set lookup.

A policy chain is a list of rules tried in order, so its cost grows with the number of rules a
packet passes. But consecutive rules with the same verdict can be tried in any order: the first
one that matches gives the same verdict as any other. If each of them is a *box* — source nets x
destination nets x protocol x destination ports, all positive — the run is the union of its
boxes, and that is one lookup in a concatenated interval set::

    meta nfproto ipv4 ip saddr . meta l4proto . th dport @r4-… meta mark set … return

What may join a run (everything else is rendered as before and ends the current run, so rule
order and first-match semantics are kept exactly):

* action Allow, Deny or Pass (not Log: a packet matching two Log rules is logged twice);
* no negations (``!nets``, ``!selector``, ``!ports``, ``!protocol``), no ICMP type/code, no
  selector or named-port sets (their members are data that set-only updates change), no
  source ports, no ignored HTTP match;
* destination ports only with a protocol, numeric ranges only;
* within a run: the same action, IP family and "has destination ports".

A dimension that some rule does not constrain is widened to its full range (``0.0.0.0/0``,
protocol ``0-255``); a dimension that no rule of the run constrains is left out of the key.
Ports are never widened (``th dport`` does not load for non-first fragments, where a rule
without ports would still match).

The kernel's concatenated interval sets (pipapo) reject an element that partly overlaps
another, and nft's interval sets need disjoint elements, so the elements are kept disjoint:
boxes that differ only in the run's "main" dimension (the one with the most distinct values)
are merged there; a rule whose box overlaps a box of the run in a different way ends the run
and starts the next one. Runs of one rule stay plain rules.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

from compiler.ir import nodes as ir
from compiler.targets.nftables.consts import ConstSets
from compiler.targets.nftables.rules import _family_of, merge_ranges, merged_keys, proto

MAX_BOXES = 256  # per rule: larger products of nets x ports stay plain rules
MAX_GROUPS = 64  # distinct "other dimensions" per run, bounds the overlap checks
MERGEABLE_ACTIONS = (ir.ALLOW, ir.DENY, ir.PASS)

Interval = tuple[int, int]
Box = tuple[Interval, Interval, Interval, Interval]  # saddr, daddr, l4proto, dport
PROTO_FULL: Interval = (0, 255)
PORT_FULL: Interval = (0, 65535)


@dataclass(frozen=True, slots=True)
class RuleBoxes:
    rule: ir.Rule
    family: int | None
    has_port: bool
    boxes: tuple[Box, ...]


def _full_addr(family: int | None) -> Interval:
    if family is None:
        return (0, 0)
    return (0, (1 << (32 if family == 4 else 128)) - 1)


def _net_intervals(nets: Iterable[ir.IPNet], family: int) -> list[Interval] | None:
    out = []
    bits = 32 if family == 4 else 128
    for version, lo, plen in merged_keys(nets):
        if version != family:
            return None
        out.append((lo, lo + (1 << (bits - plen)) - 1))
    return merge_ranges(out)


def rule_boxes(rule: ir.Rule, set_families: Mapping[str, int]) -> RuleBoxes | None:
    """The rule as disjoint boxes, or None when it cannot join a run."""
    m = rule.match
    if rule.action not in MERGEABLE_ACTIONS or rule.http_ignored:
        return None
    if (
        m.not_protocol is not None
        or m.icmp_type is not None
        or m.icmp_code is not None
        or m.not_icmp_type is not None
        or m.not_icmp_code is not None
    ):
        return None
    src, dst = m.src, m.dst
    for side in (src, dst):
        if side.not_nets or side.sets or side.not_sets or side.not_ports is not None:
            return None
    if src.ports is not None:
        return None
    ports = dst.ports
    if ports is not None and (ports.named_sets or not ports.ranges or m.protocol is None):
        return None
    family = _family_of(m, set_families)
    full = _full_addr(family)
    sides: list[list[Interval]] = []
    for side in (src, dst):
        if side.nets is None:
            sides.append([full])
            continue
        if family is None or not side.nets:
            return None
        ivs = _net_intervals(side.nets, family)
        if ivs is None:
            return None
        sides.append(ivs)
    proto_iv = PROTO_FULL if m.protocol is None else (m.protocol, m.protocol)
    port_ivs = [PORT_FULL] if ports is None else merge_ranges(ports.ranges)
    if len(sides[0]) * len(sides[1]) * len(port_ivs) > MAX_BOXES:
        return None
    boxes = tuple(product(sides[0], sides[1], (proto_iv,), port_ivs))
    return RuleBoxes(rule, family, ports is not None, boxes)  # type: ignore[arg-type]


def _overlap(a: Interval, b: Interval) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


class Run:
    """A growing run: per value of the other dimensions, disjoint sorted main-dimension
    intervals."""

    def __init__(self, first: RuleBoxes, main: int) -> None:
        self.action = first.rule.action
        self.family = first.family
        self.has_port = first.has_port
        self.main = main
        self.rules: list[ir.Rule] = []
        self.groups: dict[tuple[Interval, ...], tuple[list[int], list[int]]] = {}
        ok = self.add(first)
        assert ok

    def _rest(self, box: Box) -> tuple[Interval, ...]:
        return tuple(iv for d, iv in enumerate(box) if d != self.main)

    def add(self, rb: RuleBoxes) -> bool:
        """Adds the rule if it fits the run without partial overlaps; False (nothing changed)
        otherwise."""
        if (rb.rule.action, rb.family, rb.has_port) != (self.action, self.family, self.has_port):
            return False
        new_rests = {self._rest(b) for b in rb.boxes} - self.groups.keys()
        if len(self.groups) + len(new_rests) > MAX_GROUPS:
            return False
        for box in rb.boxes:
            rest, (lo, hi) = self._rest(box), box[self.main]
            for other, (los, his) in self.groups.items():
                if other == rest or not all(map(_overlap, rest, other)):
                    continue
                i = bisect_right(los, hi) - 1
                if i >= 0 and his[i] >= lo:
                    return False
        for box in rb.boxes:
            rest, (lo, hi) = self._rest(box), box[self.main]
            los, his = self.groups.setdefault(rest, ([], []))
            start = bisect_left(his, lo - 1)
            end = bisect_right(los, hi + 1)
            if start < end:
                lo, hi = min(lo, los[start]), max(hi, his[end - 1])
            los[start:end] = [lo]
            his[start:end] = [hi]
        self.rules.append(rb.rule)
        return True

    def boxes(self) -> list[Box]:
        out = []
        for rest, (los, his) in self.groups.items():
            for lo, hi in zip(los, his, strict=True):
                dims = list(rest)
                dims.insert(self.main, (lo, hi))
                out.append(tuple(dims))
        out.sort()
        return out  # type: ignore[return-value]


def main_dimension(items: Sequence[RuleBoxes]) -> int:
    """The dimension with the most distinct intervals among these rules (first on ties)."""
    seen: list[set[Interval]] = [set(), set(), set(), set()]
    for rb in items:
        for box in rb.boxes:
            for d, iv in enumerate(box):
                seen[d].add(iv)
    counts = [len(s) for s in seen]
    return counts.index(max(counts))


def split_runs(rules: Sequence[ir.Rule], set_families: Mapping[str, int]) -> list[ir.Rule | Run]:
    """The rules in order, consecutive mergeable ones grouped into runs of two or more."""
    infos = [rule_boxes(r, set_families) for r in rules]
    main = main_dimension([i for i in infos if i is not None])
    out: list[ir.Rule | Run] = []
    run: Run | None = None

    def close() -> None:
        if run is None:
            return
        if len(run.rules) == 1 or not run_dims(run):
            out.extend(run.rules)
        else:
            out.append(run)

    for rule, info in zip(rules, infos, strict=True):
        if info is not None and run is not None and run.add(info):
            continue
        close()
        run = None
        if info is None:
            out.append(rule)
        else:
            run = Run(info, main)
    close()
    return out


def run_dims(run: Run) -> list[int]:
    """The dimensions some box of the run constrains (the key of its set)."""
    full = (_full_addr(run.family), _full_addr(run.family), PROTO_FULL, PORT_FULL)
    dims = []
    for rest, (los, his) in run.groups.items():
        for lo, hi in zip(los, his, strict=True):
            box = list(rest)
            box.insert(run.main, (lo, hi))
            dims.extend(d for d in range(4) if box[d] != full[d])
    return sorted(set(dims))


def _addr_text(iv: Interval, family: int) -> str:
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    lo, hi = iv
    size = hi - lo + 1
    if lo == hi:
        return str(cls(lo))
    if size & (size - 1) == 0 and lo % size == 0:
        bits = 32 if family == 4 else 128
        return f"{cls(lo)}/{bits - size.bit_length() + 1}"
    return f"{cls(lo)}-{cls(hi)}"


def _proto_text(iv: Interval) -> str:
    return proto(iv[0]) if iv[0] == iv[1] else f"{iv[0]}-{iv[1]}"


def _port_text(iv: Interval) -> str:
    return str(iv[0]) if iv[0] == iv[1] else f"{iv[0]}-{iv[1]}"


def run_match(run: Run, consts: ConstSets) -> str:
    """The match text of a run: the family, then one lookup of its key in a named set."""
    fam = run.family
    kw = "ip" if fam == 4 else "ip6"
    dims = run_dims(run)
    exprs = {0: f"{kw} saddr", 1: f"{kw} daddr", 2: "meta l4proto", 3: "th dport"}
    types = {0: f"ipv{fam}_addr", 1: f"ipv{fam}_addr", 2: "inet_proto", 3: "inet_service"}
    texts = {
        0: lambda iv: _addr_text(iv, fam),  # type: ignore[arg-type]
        1: lambda iv: _addr_text(iv, fam),  # type: ignore[arg-type]
        2: _proto_text,
        3: _port_text,
    }
    elements = tuple(" . ".join(texts[d](box[d]) for d in dims) for box in run.boxes())
    typ = " . ".join(types[d] for d in dims)
    prefix = "r-" if fam is None else f"r{fam}-"
    name = consts.ref(prefix, typ, elements, "merged rules")
    head = [f"meta nfproto ipv{fam}"] if fam is not None else []
    return " ".join([*head, " . ".join(exprs[d] for d in dims), name])


def run_protocol(run: Run) -> int | None:
    """The protocol every rule of the run has, if they share one (for ``reject``)."""
    protos = {r.match.protocol for r in run.rules}
    return protos.pop() if len(protos) == 1 else None
