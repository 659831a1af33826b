"""Bitmasks over a group's cells: rules' match sets, and the blocks evaluated with them.

Cells of a sub-layout (owner positions x peer positions x piece positions) are numbered
``(o * len(qs) + q) * len(ks) + k``, and a set of cells is a Python int with those bits set.
:class:`Masker` computes a rule's match set; :class:`Evaluated` keeps the blocks of one
evaluated sub-layout with their verdicts (``tables.Group._evaluate`` builds them).

>>> bits(0b10110)
[1, 2, 4]
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from compiler.diff.rules import RuleInfo, Slice
from compiler.ir.evaluate import rule_matches
from compiler.ir.flow import DirectionVerdict

if TYPE_CHECKING:
    from compiler.diff.tables import Group

__all__ = ["Evaluated", "Masker", "bits"]


def bits(mask: int) -> list[int]:
    """Positions of the set bits, lowest first."""
    text = bin(mask)[:1:-1]
    out, i = [], text.find("1")
    while i >= 0:
        out.append(i)
        i = text.find("1", i + 1)
    return out


class Masker:
    """Match sets of rules over one sub-layout (owner x peer x piece positions) in one tree,
    as bitmasks numbered ``(o * len(qs) + q) * len(ks) + k``.

    A rule's match depends only on its owner slice of the owner, its peer slice of the peer and
    its own piece, so the evaluator's ``rule_matches`` is asked once per combination of those
    that occurs (and remembered across groups, ``Shared.matches``); a match set is then a union
    of products, and a product is ``kmask * qpattern * opattern`` — the factors' bit fields do
    not overlap, so the multiplications never carry."""

    def __init__(
        self,
        group: Group,
        side: int,
        os_: list[int],
        qs: list[int],
        ks: list[int],
        unchanged: dict[int, int],
    ) -> None:
        self.g, self.side = group, side
        self.os, self.qs, self.ks = os_, qs, ks
        self.n_q, self.n_k = len(qs), len(ks)
        self.kpos = {k: j for j, k in enumerate(ks)}
        self.unchanged = unchanged
        self._masks: dict[int, int] = {}
        self._own: dict[int, list[tuple[object, tuple[int, ...]]]] = {}
        self._peer: dict[int, list[tuple[object, tuple[int, ...]]]] = {}
        self._opat: dict[tuple[int, ...], int] = {}
        self._qpat: dict[tuple[int, ...], int] = {}
        self._failsafe: list[int] | None = None

    def _grouped(
        self, sl: Slice, reps: list[int], pick: list[int]
    ) -> list[tuple[object, tuple[int, ...]]]:
        if sl.empty:
            return [((), tuple(range(len(pick))))]
        bits, m = self.g.shared.bits[self.side], self.g.shared.mask(sl)
        by: dict[int, list[int]] = defaultdict(list)
        for pos, idx in enumerate(pick):
            by[bits[reps[idx]] & m].append(pos)
        return [(k, tuple(v)) for k, v in by.items()]

    def _product(self, og: tuple[int, ...], qg: tuple[int, ...], kg: tuple[int, ...]) -> int:
        if og not in self._opat:
            self._opat[og] = sum(1 << (o * self.n_q * self.n_k) for o in og)
        if qg not in self._qpat:
            self._qpat[qg] = sum(1 << (q * self.n_k) for q in qg)
        return sum(1 << k for k in kg) * self._qpat[qg] * self._opat[og]

    def mask(self, rule: RuleInfo) -> int:
        if not rule.touched and rule.key in self.unchanged:
            return self.unchanged[rule.key]  # reads the same and tests nothing that changed
        got = self._masks.get(id(rule))
        if got is not None:
            return got
        g = self.g
        own, peer = self._own.get(id(rule.own)), self._peer.get(id(rule.peer))
        if own is None:
            own = self._own[id(rule.own)] = self._grouped(rule.own, g._orep, self.os)
        if peer is None:
            peer = self._peer[id(rule.peer)] = self._grouped(rule.peer, g._qrep, self.qs)
        kgroups = []
        for j, kg in g.shared.piece_groups(rule, g.pieces):
            local = tuple(self.kpos[k] for k in kg if k in self.kpos)
            if local:
                kgroups.append((j, local))
        memo = g.shared.matches
        prog = g._program(self.side)
        mask = 0
        for okey, og in own:
            for pkey, qg in peer:
                for j, kg in kgroups:
                    key = (rule.key, okey, pkey, j)
                    hit = memo.get(key)
                    if hit is None:
                        flow = g._flow(self.side, self.os[og[0]], self.qs[qg[0]], self.ks[kg[0]])
                        hit = memo[key] = rule_matches(prog, rule.match, flow)
                    if hit:
                        mask |= self._product(og, qg, kg)
        self._masks[id(rule)] = mask
        if not rule.touched:
            self.unchanged[rule.key] = mask
        return mask

    def failsafe_class(self, cell: int) -> int:
        """The cells that fall in the same failsafe class as ``cell`` (failsafe piece, peer's
        failsafe CIDRs): they all pass the failsafe check, or all fail it."""
        if self._failsafe is None:
            g = self.g
            loc = g.failsafe
            self._failsafe = []
            if loc is not None:
                fs = g.failsafe_slice
                local = [loc.locate(g.pieces[k]) for k in self.ks]
                every = tuple(range(len(self.os)))
                for _, qg in self._grouped(fs, g._qrep, self.qs):
                    for j in set(local):
                        kg = tuple(i for i, x in enumerate(local) if x == j)
                        self._failsafe.append(self._product(every, qg, kg))
        for m in self._failsafe:
            if (m >> cell) & 1:
                return m
        return ~0


class Evaluated:
    """The blocks and verdicts of one evaluated sub-layout (owner x peer x piece indices)."""

    def __init__(self, os_: list[int], qs: list[int], ks: list[int]) -> None:
        self.os, self.qs, self.ks = os_, qs, ks
        self.opos = {o: i for i, o in enumerate(os_)}
        self.qpos = {q: i for i, q in enumerate(qs)}
        self.kpos = {k: i for i, k in enumerate(ks)}
        self.blocks: list[list[int]] = [[], []]
        self.verdicts: list[list[DirectionVerdict]] = [[], []]
        self._of: list[list[int] | None] = [None, None]

    def at(self, side: int, o: int, q: int, k: int) -> DirectionVerdict:
        of = self._of[side]
        if of is None:
            of = [0] * (len(self.os) * len(self.qs) * len(self.ks))
            for bi, b in enumerate(self.blocks[side]):
                for c in bits(b):
                    of[c] = bi
            self._of[side] = of
        local = (self.opos[o] * len(self.qs) + self.qpos[q]) * len(self.ks) + self.kpos[k]
        return self.verdicts[side][of[local]]

    def changed(self) -> list[tuple[int, int, int]]:
        """(owner, peer, piece) indices whose allowed bit differs between the trees."""
        allowed = [0, 0]
        for side in (0, 1):
            for b, v in zip(self.blocks[side], self.verdicts[side], strict=True):
                if v.allowed:
                    allowed[side] |= b
        n_q, n_k = len(self.qs), len(self.ks)
        out = []
        for c in bits(allowed[0] ^ allowed[1]):
            o, rest = divmod(c, n_q * n_k)
            q, k = divmod(rest, n_k)
            out.append((self.os[o], self.qs[q], self.ks[k]))
        return out
