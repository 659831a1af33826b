"""What a rule sees of an address, per direction; caches shared by every group of a diff.

A rule checks its source side against the flow's source and its destination side against the
flow's destination. From the point of view of one direction's owner (the source for egress, the
destination for ingress), a rule therefore has an **owner slice** and a **peer slice**: the set
ids, named-port set ids, inline nets (and, for host endpoints, failsafe CIDRs) it can test on
that end. Restricting an address's props to a slice gives the only thing the rule can tell
about it.

Props are encoded as bitsets (``Shared.bits``) and a slice as a mask (``Shared.mask``), so that
restricting an address to a slice is one AND.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from compiler.diff.addresses import AddrProps
from compiler.diff.services import Locator, Mentions, Piece
from compiler.diff.subjects import Owner, Subject
from compiler.diff.views import View
from compiler.ir import nodes as ir

__all__ = ["Changes", "RuleInfo", "Shared", "Slice"]

EMPTY: frozenset = frozenset()


@dataclass(frozen=True)
class Changes:
    """Set ids, named-port set ids and CIDRs whose membership differs between the trees for
    at least one subject (the "nothing it references changed" half of cleanliness)."""

    sets: frozenset[str]
    named: frozenset[str]
    nets: frozenset[ir.IPNet]

    @staticmethod
    def of(subjects: Iterable[Subject]) -> Changes:
        sets: set[str] = set()
        named: set[str] = set()
        nets: set[ir.IPNet] = set()
        for s in subjects:
            b, h = s.props
            sets |= b.sets ^ h.sets
            named |= {sid for sid, _, _ in b.named ^ h.named}
            nets |= (b.nets ^ h.nets) | (b.failsafe ^ h.failsafe)
        return Changes(frozenset(sets), frozenset(named), frozenset(nets))

    def touches(self, rule: RuleInfo) -> bool:
        """Whether the rule tests a set or net whose membership changed (it may match a class of
        flows in one tree and not the other, even when it reads the same)."""
        return bool(
            (rule.own.sets | rule.peer.sets) & self.sets
            or (rule.own.named | rule.peer.named) & self.named
            or (rule.own.nets | rule.peer.nets) & self.nets
        )


@dataclass(frozen=True, slots=True)
class Slice:
    """References on one side of a rule (or of a group): what of an address it can see."""

    sets: frozenset[str] = EMPTY
    named: frozenset[str] = EMPTY
    nets: frozenset[ir.IPNet] = EMPTY
    failsafe: frozenset[ir.IPNet] = EMPTY

    @staticmethod
    def of(side: ir.Side) -> Slice:
        named = [s for pm in (side.ports, side.not_ports) if pm is not None for s in pm.named_sets]
        return Slice(
            frozenset(side.sets) | frozenset(side.not_sets),
            frozenset(named),
            frozenset(side.nets or ()) | frozenset(side.not_nets),
        )

    def __or__(self, other: Slice) -> Slice:
        return Slice(
            self.sets | other.sets,
            self.named | other.named,
            self.nets | other.nets,
            self.failsafe | other.failsafe,
        )

    @property
    def empty(self) -> bool:
        return not (self.sets or self.named or self.nets or self.failsafe)


class RuleInfo:
    """One rule seen from one direction: its owner-side and peer-side slices, its mentions."""

    __slots__ = ("match", "key", "own", "peer", "mentions", "touched", "_locator")

    def __init__(
        self, rule: ir.Rule, direction: str, named: dict[str, set[tuple[int, int]]], key: int
    ) -> None:
        m = rule.match
        own, peer = (m.src, m.dst) if direction == ir.EGRESS else (m.dst, m.src)
        self.match = m
        self.key = key  # equal matches (in either tree) share a key
        self.touched = False
        self.own, self.peer = Slice.of(own), Slice.of(peer)
        self.mentions = Mentions()
        self.mentions.add_match(m, named)  # type: ignore[arg-type]
        self._locator: Locator | None = None

    @property
    def locator(self) -> Locator:
        """The rule's own pieces, and where a finer piece falls among them."""
        if self._locator is None:
            self._locator = Locator(self.mentions)
        return self._locator


class Shared:
    """What every group of one family's diff shares: the subjects, their owners and address
    classes, what changed, and caches (per-rule slices and mentions, per-policy fingerprints
    and slices — a policy is in many groups' views)."""

    def __init__(
        self,
        programs: tuple[ir.Program, ir.Program],
        subjects: list[Subject],
        owners: list[list[Owner]],
        named: dict[str, set[tuple[int, int]]],
    ) -> None:
        self.programs = programs
        self.subjects = subjects
        self.owners = owners  # per tree, per subject
        self.named = named
        self.changes = Changes.of(subjects)
        # Address classes: subjects with the same props in both trees.
        ids: dict[tuple, int] = {}
        self.aclass = [ids.setdefault(s.props, len(ids)) for s in subjects]
        first: dict[int, int] = {}
        for i, a in enumerate(self.aclass):
            first.setdefault(a, i)
        self.aclass_rep = [first[a] for a in range(len(ids))]
        # Props as bitsets, so that restricting to a slice is one AND: a bit per set id, per
        # named-port member (set id, protocol, port), per inline net, per failsafe CIDR.
        self._bit: dict[tuple, int] = {}
        self._named_bits: dict[str, int] = {}
        self.bits = [[self._encode(s.props[side]) for s in subjects] for side in (0, 1)]
        self._masks: dict[int, tuple[Slice, int]] = {}
        self._rules: dict[tuple[int, str], RuleInfo] = {}
        self._keep: list[ir.Rule] = []  # rules are keyed by id(): keep them alive
        self.fingerprints: dict = {}  # views.fingerprint memo (keyed by id(program): both live)
        self._views: dict[tuple, tuple[list[RuleInfo], Slice, Slice]] = {}
        self._blocks: dict[tuple, tuple[list[RuleInfo], tuple[frozenset, ...], bool]] = {}
        self._touched: dict[tuple, bool] = {}
        self._match_ids: dict[tuple[ir.Match, str], int] = {}
        self._pieces: dict[tuple[Piece, ...], int] = {}
        self._pieces_ids: dict[int, tuple[tuple[Piece, ...], int]] = {}
        self._piece_groups: dict[tuple[int, int], list] = {}
        # rule_matches answers, by (rule key, owner slice of the cell, peer slice, rule piece):
        # all the evaluator's rule_matches can depend on.
        self.matches: dict[tuple, bool] = {}

    def rule(self, r: ir.Rule, direction: str) -> RuleInfo:
        key = (id(r), direction)
        got = self._rules.get(key)
        if got is None:
            mid = self._match_ids.setdefault((r.match, direction), len(self._match_ids))
            got = self._rules[key] = RuleInfo(r, direction, self.named, mid)
            got.touched = self.changes.touches(got)
            self._keep.append(r)
        return got

    def pieces_id(self, pieces: tuple[Piece, ...]) -> int:
        """A small id for a partition into pieces (equal partitions, equal ids)."""
        got = self._pieces_ids.get(id(pieces))
        if got is None or got[0] is not pieces:
            got = self._pieces_ids[id(pieces)] = (
                pieces,
                self._pieces.setdefault(pieces, len(self._pieces)),
            )
        return got[1]

    def piece_groups(
        self, rule: RuleInfo, pieces: tuple[Piece, ...]
    ) -> list[tuple[int, tuple[int, ...]]]:
        """``pieces`` (a group's) bucketed by the rule's own piece holding them, as (that
        piece's index, positions) — cached: many groups have the same pieces."""
        key = (rule.key, self.pieces_id(pieces))
        got = self._piece_groups.get(key)
        if got is None:
            loc = rule.locator
            if len(loc.pieces) == 1:
                got = [(0, tuple(range(len(pieces))))]
            else:
                by: dict[int, list[int]] = {}
                for k, piece in enumerate(pieces):
                    by.setdefault(loc.locate(piece), []).append(k)
                got = [(j, tuple(v)) for j, v in by.items()]
            self._piece_groups[key] = got
        return got

    def _encode(self, p: AddrProps) -> int:
        out = 0
        for item in (
            [("S", x) for x in p.sets] + [("n", x) for x in p.nets] + [("F", x) for x in p.failsafe]
        ):
            out |= 1 << self._bit.setdefault(item, len(self._bit))
        for triple in p.named:
            bit = 1 << self._bit.setdefault(("P", *triple), len(self._bit))
            self._named_bits[triple[0]] = self._named_bits.get(triple[0], 0) | bit
            out |= bit
        return out

    def mask(self, sl: Slice) -> int:
        """The bits a slice sees: ``bits[side][i] & mask(slice)`` is what the slice's rules can
        tell about subject ``i`` in that tree (equal values: indistinguishable)."""
        got = self._masks.get(id(sl))
        if got is None or got[0] is not sl:
            m = 0
            for item in (
                [("S", x) for x in sl.sets]
                + [("n", x) for x in sl.nets]
                + [("F", x) for x in sl.failsafe]
            ):
                bit = self._bit.get(item)
                if bit is not None:
                    m |= 1 << bit
            for sid in sl.named:
                m |= self._named_bits.get(sid, 0)
            got = self._masks[id(sl)] = (sl, m)  # the slice is kept alive with its mask
        return got[1]

    def _block(
        self, key: tuple, rules: Iterable[ir.Rule], direction: str
    ) -> tuple[list[RuleInfo], tuple[frozenset, ...], bool]:
        """The rules of one policy or profile, the union of their slices, and whether any of
        them tests a set or net whose membership changed (cached)."""
        got = self._blocks.get(key)
        if got is None:
            infos = [self.rule(r, direction) for r in rules]
            parts = tuple(
                frozenset().union(*(getattr(getattr(i, end), f) for i in infos))
                for end in ("own", "peer")
                for f in ("sets", "named", "nets")
            )
            c = self.changes
            touched = bool(
                (parts[0] | parts[3]) & c.sets
                or (parts[1] | parts[4]) & c.named
                or (parts[2] | parts[5]) & c.nets
            )
            got = self._blocks[key] = (infos, parts, touched)
        return got

    def _view_blocks(
        self, side: int, view: View, direction: str
    ) -> list[tuple[list[RuleInfo], tuple[frozenset, ...], bool]]:
        program = self.programs[side]
        blocks = [
            self._block((side, pid, direction), program.policies[pid].rules(direction), direction)
            for pid in dict.fromkeys(view.policy_ids())
        ]
        for name in view.profiles:
            profile = program.profiles.get(name)
            if profile is not None:
                blocks.append(
                    self._block(
                        (side, "profile", name, direction), profile.rules(direction), direction
                    )
                )
        return blocks

    def view_touched(self, side: int, view: View, direction: str) -> bool:
        """Whether a rule the view runs (or one of its failsafe CIDRs) changed membership."""
        key = (side, view, direction)
        got = self._touched.get(key)
        if got is None:
            nets = {n for _, _, n in view.failsafe if n is not None}
            got = any(b[2] for b in self._view_blocks(side, view, direction)) or bool(
                nets & self.changes.nets
            )
            self._touched[key] = got
        return got

    def view_rules(
        self, side: int, view: View, direction: str
    ) -> tuple[list[RuleInfo], Slice, Slice]:
        """The distinct rules a view runs, with the union of their owner and peer slices."""
        key = (side, view, direction)
        got = self._views.get(key)
        if got is None:
            blocks = self._view_blocks(side, view, direction)
            rules = [i for infos, _, _ in blocks for i in infos]
            parts = [frozenset().union(*(b[1][n] for b in blocks)) for n in range(6)]
            own = Slice(parts[0], parts[1], parts[2])
            peer = Slice(parts[3], parts[4], parts[5])
            got = self._views[key] = (rules, own, peer)
        return got
