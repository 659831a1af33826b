"""The (protocol, ports, ICMP type/code) half of a flow, cut into classes the rules cannot split.

A rule looks at a flow's protocol (``protocol`` / ``notProtocol``), its destination and source
ports (numeric ranges and named-port sets), and for ICMP its type and code. So for a given list
of rules, the flows fall into finitely many **pieces** inside which every rule decides the same:

* protocols: one piece per protocol a rule (or a failsafe port, or a named-port member) names,
  plus one piece for *all the others* together (a rule that names none of them treats them alike);
* for TCP, UDP and SCTP: destination ports cut at every boundary a range, a named port member or
  a failsafe port has (and source ports likewise, which is usually one piece 1-65535);
* for ICMP / ICMPv6: one piece per (type, code) named, one per named type for its other codes,
  and one for the other types.

Ports are 1-65535: port 0 is not a port a connection can use, so it is left out.

A piece is a box in that space; :meth:`Piece.intersect` refines the pieces of two rule lists
(one per side of a flow) against each other, and :meth:`Piece.probe` is the flow that stands for
the whole piece when the evaluator is asked.

>>> m = Mentions()
>>> m.protocols.add(6); m.dst_bounds[6] = {80, 81}
>>> [p.text() for p in m.pieces()][:3]
['TCP 1-79', 'TCP 80', 'TCP 81-65535']
>>> m.pieces()[-1].text()
'any protocol except TCP'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.frontend.model import PORT_PROTOCOLS, PROTOCOL_NAMES
from compiler.ir import nodes as ir

__all__ = [
    "ICMP_PROTOCOLS",
    "PORT_FULL",
    "Locator",
    "UNIVERSE",
    "Mentions",
    "Piece",
    "protocol_name",
    "ranges_text",
    "refine",
]

UNIVERSE = frozenset(range(1, 256))  # IP protocol numbers a flow can carry (0 is invalid in rules)
BYTES = frozenset(range(256))  # ICMP types and codes
PORT_FULL = (1, 65535)
ICMP_PROTOCOLS = frozenset({1, 58})


def protocol_name(proto: int) -> str:
    return PROTOCOL_NAMES.get(proto, f"protocol {proto}")


def ranges_text(values: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2, 5'``."""
    out: list[str] = []
    run: list[int] = []
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [v]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def _cut(bounds: Iterable[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """``[lo, hi]`` cut so that every bound ``b`` starts a new interval."""
    starts = sorted({lo} | {b for b in bounds if lo < b <= hi})
    ends = [s - 1 for s in starts[1:]] + [hi]
    return list(zip(starts, ends, strict=True))


def _meet(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    a = a or PORT_FULL
    b = b or PORT_FULL
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None


@dataclass(frozen=True, slots=True)
class Piece:
    """A box of flows: a set of protocols and, for a single port protocol, destination and
    source port intervals, or for a single ICMP protocol, sets of types and codes.

    Fields that do not apply are None (for several protocols at once they all are None: such
    a piece only ever stands for protocols no rule names, which no port or ICMP match sees)."""

    protocols: frozenset[int]
    dst_ports: tuple[int, int] | None = None
    src_ports: tuple[int, int] | None = None
    icmp_types: frozenset[int] | None = None
    icmp_codes: frozenset[int] | None = None

    @property
    def single(self) -> int | None:
        return next(iter(self.protocols)) if len(self.protocols) == 1 else None

    def intersect(self, other: Piece) -> Piece | None:
        protos = self.protocols & other.protocols
        if not protos:
            return None
        if len(protos) > 1:
            return Piece(protos)
        (p,) = protos
        if p in PORT_PROTOCOLS:
            dst = _meet(self.dst_ports, other.dst_ports)
            src = _meet(self.src_ports, other.src_ports)
            return None if dst is None or src is None else Piece(protos, dst, src)
        if p in ICMP_PROTOCOLS:
            types = (self.icmp_types or BYTES) & (other.icmp_types or BYTES)
            codes = (self.icmp_codes or BYTES) & (other.icmp_codes or BYTES)
            return Piece(protos, icmp_types=types, icmp_codes=codes) if types and codes else None
        return Piece(protos)

    def probe(self) -> tuple[int, int | None, int | None, int | None, int | None]:
        """``(protocol, src_port, dst_port, icmp_type, icmp_code)`` of a flow in this piece."""
        p = self.single
        if p is None:
            return min(self.protocols), None, None, None, None
        if p in PORT_PROTOCOLS:
            dst = self.dst_ports or PORT_FULL
            src = self.src_ports or PORT_FULL
            return p, src[0], dst[0], None, None
        if p in ICMP_PROTOCOLS:
            return p, None, None, min(self.icmp_types or BYTES), min(self.icmp_codes or BYTES)
        return p, None, None, None, None

    def text(self) -> str:
        p = self.single
        if p is None:
            missing = UNIVERSE - self.protocols
            if not missing:
                return "any protocol"
            return "any protocol except " + ", ".join(protocol_name(x) for x in sorted(missing))
        name = protocol_name(p)
        if p in PORT_PROTOCOLS:
            dst = self.dst_ports or PORT_FULL
            out = f"{name} " + (
                "(any port)" if dst == PORT_FULL else ranges_text(range(dst[0], dst[1] + 1))
            )
            src = self.src_ports or PORT_FULL
            if src != PORT_FULL:
                out += f" from source ports {ranges_text(range(src[0], src[1] + 1))}"
            return out
        if p in ICMP_PROTOCOLS:
            types = self.icmp_types or BYTES
            codes = self.icmp_codes or BYTES
            if types == BYTES and codes == BYTES:
                return f"{name} (any type)"
            out = f"{name} type{'s' * (len(types) > 1)} {ranges_text(types)}"
            if codes != BYTES:
                out += f" code{'s' * (len(codes) > 1)} {ranges_text(codes)}"
            return out
        return name


@dataclass
class Mentions:
    """Everything about protocols, ports and ICMP that a list of rules (plus failsafe ports) can
    tell apart; :meth:`pieces` is the partition that follows from it."""

    protocols: set[int] = field(default_factory=set)
    dst_bounds: dict[int, set[int]] = field(default_factory=dict)
    src_bounds: dict[int, set[int]] = field(default_factory=dict)
    icmp: dict[int, dict[int, set[int]]] = field(default_factory=dict)

    def _bound(self, which: dict[int, set[int]], proto: int, lo: int, hi: int) -> None:
        self.protocols.add(proto)
        which.setdefault(proto, set()).update((lo, hi + 1))

    def add_ports(
        self,
        pm: ir.PortMatch | None,
        protocol: int | None,
        dst: bool,
        named: dict[str, Iterable[tuple[int, int]]],
    ) -> None:
        """A port match on one side; ``named`` maps a named-port set id to its members'
        ``(protocol, port)`` pairs (on both trees)."""
        if pm is None:
            return
        which = self.dst_bounds if dst else self.src_bounds
        # Numeric ports need a port protocol (validated); without one, be safe and cut all.
        protos = (protocol,) if protocol is not None else tuple(sorted(PORT_PROTOCOLS))
        for lo, hi in pm.ranges:
            for p in protos:
                self._bound(which, p, lo, hi)
        for sid in pm.named_sets:
            for proto, port in named.get(sid, ()):
                self._bound(which, proto, port, port)

    def add_match(self, m: ir.Match, named: dict[str, Iterable[tuple[int, int]]]) -> None:
        for p in (m.protocol, m.not_protocol):
            if p is not None:
                self.protocols.add(p)
        for side, dst in ((m.dst, True), (m.src, False)):
            self.add_ports(side.ports, m.protocol, dst, named)
            self.add_ports(side.not_ports, m.protocol, dst, named)
        for t, c in ((m.icmp_type, m.icmp_code), (m.not_icmp_type, m.not_icmp_code)):
            if t is None:
                continue
            for p in (m.protocol,) if m.protocol in ICMP_PROTOCOLS else tuple(ICMP_PROTOCOLS):
                self.protocols.add(p)
                codes = self.icmp.setdefault(p, {}).setdefault(t, set())
                if c is not None:
                    codes.add(c)

    def add_failsafe(self, ports: Iterable[tuple[int, int]]) -> None:
        for proto, port in ports:
            if proto in PORT_PROTOCOLS:
                self._bound(self.dst_bounds, proto, port, port)
            else:
                self.protocols.add(proto)

    def update(self, other: Mentions) -> None:
        self.protocols |= other.protocols
        for mine, theirs in (
            (self.dst_bounds, other.dst_bounds),
            (self.src_bounds, other.src_bounds),
        ):
            for p, b in theirs.items():
                mine.setdefault(p, set()).update(b)
        for p, types in other.icmp.items():
            for t, codes in types.items():
                self.icmp.setdefault(p, {}).setdefault(t, set()).update(codes)

    def pieces(self) -> tuple[Piece, ...]:
        out: list[Piece] = []
        for p in sorted(self.protocols & UNIVERSE):
            one = frozenset({p})
            if p in PORT_PROTOCOLS:
                dsts = _cut(self.dst_bounds.get(p, ()), *PORT_FULL)
                srcs = _cut(self.src_bounds.get(p, ()), *PORT_FULL)
                out.extend(Piece(one, d, s) for d in dsts for s in srcs)
            elif p in ICMP_PROTOCOLS:
                types = self.icmp.get(p, {})
                for t in sorted(types):
                    codes = types[t]
                    out.extend(
                        Piece(one, icmp_types=frozenset({t}), icmp_codes=frozenset({c}))
                        for c in sorted(codes)
                    )
                    if BYTES - codes:
                        out.append(
                            Piece(
                                one, icmp_types=frozenset({t}), icmp_codes=BYTES - frozenset(codes)
                            )
                        )
                if BYTES - types.keys():
                    out.append(Piece(one, icmp_types=BYTES - frozenset(types), icmp_codes=BYTES))
            else:
                out.append(Piece(one))
        rest = UNIVERSE - self.protocols
        if rest:
            out.append(Piece(frozenset(rest)))
        return tuple(out)


class Locator:
    """Which of a partition's pieces holds a piece of a finer partition (one cut at every
    boundary this one has): by bisection, without intersecting boxes.

    >>> m = Mentions(); m.protocols.add(6); m.dst_bounds[6] = {80, 81}
    >>> loc = Locator(m)
    >>> loc.pieces[loc.locate(Piece(frozenset({6}), (80, 80), (1, 65535)))].text()
    'TCP 80'
    """

    def __init__(self, mentions: Mentions) -> None:
        self.pieces = mentions.pieces()
        self._base: dict[int, int] = {}
        self._ports: dict[int, tuple[list[int], list[int]]] = {}
        self._icmp: dict[int, dict[tuple[int, int | None], int]] = {}
        self._rest = len(self.pieces) - 1 if self.pieces and self.pieces[-1].single is None else -1
        for i, pc in enumerate(self.pieces):
            p = pc.single
            if p is None:
                continue
            if p not in self._base:
                self._base[p] = i
            if p in PORT_PROTOCOLS:
                dsts, srcs = self._ports.setdefault(p, ([], []))
                dst, src = pc.dst_ports or PORT_FULL, pc.src_ports or PORT_FULL
                if dst[0] not in dsts:
                    dsts.append(dst[0])
                if src[0] not in srcs:
                    srcs.append(src[0])
            elif p in ICMP_PROTOCOLS:
                types, codes = pc.icmp_types or BYTES, pc.icmp_codes or BYTES
                t = next(iter(types)) if len(types) == 1 else -1
                c = next(iter(codes)) if len(codes) == 1 and t >= 0 else None
                self._icmp.setdefault(p, {})[(t, c)] = i

    def locate(self, fine: Piece) -> int:
        from bisect import bisect_right

        p = fine.single
        if p is None or p not in self._base:
            return self._rest
        base = self._base[p]
        if p in self._ports:
            dsts, srcs = self._ports[p]
            d = bisect_right(dsts, (fine.dst_ports or PORT_FULL)[0]) - 1
            s_ = bisect_right(srcs, (fine.src_ports or PORT_FULL)[0]) - 1
            return base + d * len(srcs) + s_
        if p in self._icmp:
            table = self._icmp[p]
            t = min(fine.icmp_types or BYTES)
            if (t, None) in table or any(key[0] == t for key in table):
                c = min(fine.icmp_codes or BYTES)
                return table.get((t, c), table.get((t, None), base))
            return table[(-1, None)]
        return base


def refine(*partitions: tuple[Piece, ...]) -> list[tuple[Piece, tuple[int, ...]]]:
    """The common refinement of several partitions: every non-empty intersection, with the
    index of the piece it came from in each partition."""
    acc: list[tuple[Piece, tuple[int, ...]]] = [(Piece(UNIVERSE), ())]
    for part in partitions:
        nxt = []
        for piece, idx in acc:
            for i, other in enumerate(part):
                both = piece.intersect(other)
                if both is not None:
                    nxt.append((both, (*idx, i)))
        acc = nxt
    return acc
