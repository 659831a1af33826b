"""Verdict tables of one direction, per group of owners, computed with the reference evaluator.

The verdict of a flow is egress(source) AND ingress(destination) (SEMANTICS.md §Evaluation
order, step 9; the exceptions — a workload to its own node, a node to its own workloads — are
evaluated apart in ``semantic.py``). One direction depends on

* the **owner**: the view of the endpoint that runs (``views.View``) in base and in head, and
  what the rules see of the owner's own address (their owner slices, ``rules.Slice``);
* the **peer**: only what the rules see of its address (their peer slices);
* the (protocol, ports, ICMP) **piece** of the flow.

Owners are grouped by their pair of views (:class:`Group`). Within a group, addresses are told
apart only by the group's slices (``own_sig`` / ``peer_sig``), and pieces are cut only where its
rules cut. A **cell** is (owner class, peer class, piece); cells are numbered
``(owner * peers + peer) * pieces + piece``.

Evaluating cells: the evaluator's result for one direction depends on the flow only through
which of the owner's rules match it (``evaluate.rule_matches``) and whether a failsafe port
applies. A rule's match depends only on its own slices and pieces, so each rule is asked once
per slice of the cells at hand — with the evaluator's ``rule_matches`` — and its match set is a
union of products, a bitmask over cell numbers. Splitting the cells by every rule's mask gives
**blocks** with one match vector each; :func:`~compiler.ir.evaluate.evaluate` runs once per block
and tree (on a mini program, ``mini.py``) and its verdict holds for the whole block.

Which cells: a **clean** group (views that mean the same, nothing it references changed
membership) has equal verdicts in both trees; its cells are evaluated only when another
direction's change needs them, one (owner, peer) row at a time. A **dirty** group aligns its
two rule sequences (``align.py``); only cells where a changed rule matches can change, and only
those (or all, when a changed station matches every flow) are evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable

from compiler.diff.align import Station, changed, decided_at, stations
from compiler.diff.blocks import Evaluated, Masker, bits
from compiler.diff.mini import mini_program, probe_flow
from compiler.diff.rules import RuleInfo, Shared, Slice
from compiler.diff.services import Locator, Mentions, Piece
from compiler.diff.views import View, fingerprint
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import DirectionVerdict, Flow

__all__ = ["Group"]

Sig = tuple


class Group:
    """The owners that share one pair of views (base, head) for one direction."""

    def __init__(
        self, ident: int, direction: str, views: tuple[View, View], shared: Shared
    ) -> None:
        self.id = ident
        self.direction = direction
        self.views = views
        self.shared = shared
        self.programs = programs = shared.programs
        fp = shared.fingerprints
        same = fingerprint(programs[0], views[0], direction, fp) == fingerprint(
            programs[1], views[1], direction, fp
        )
        self.dirty = (
            not same
            or shared.view_touched(0, views[0], direction)
            or shared.view_touched(1, views[1], direction)
        )
        self.trivial = views[0].kind == "none" and views[1].kind == "none"
        self.failsafe_nets = frozenset(n for v in views for _, _, n in v.failsafe if n is not None)
        self.failsafe_slice = Slice(failsafe=self.failsafe_nets)
        self.members: list[int] = []
        self._loaded = False
        self._pieces: tuple[Piece, ...] | None = None
        self._failsafe: Locator | None = None
        self._own_mask: int | None = None
        self._peer_mask: int | None = None
        self._owner_members: dict[Sig, list[int]] | None = None
        self.peer_reps: dict[Sig, int] | None = None  # peer sig -> representative subject
        self._mini: list[ir.Program | None] = [None, None]
        self._evaluated: dict[tuple[int, int], list[Evaluated]] = {}
        self._walks: list[tuple[list[Station], dict[tuple, int]] | None] = [None, None]
        self.changed: set[tuple[Sig, Sig, int]] = set()
        self.evaluations = 0

    # -- classes ----------------------------------------------------------------------------

    def _load(self) -> None:
        """The rules (per tree) and the union of their slices, on first need."""
        if self._loaded:
            return
        got = [self.shared.view_rules(side, self.views[side], self.direction) for side in (0, 1)]
        self._rules = (got[0][0], got[1][0])
        self._own = got[0][1] | got[1][1]
        self._peer = got[0][2] | got[1][2] | self.failsafe_slice
        self._loaded = True

    @property
    def rules(self) -> tuple[list[RuleInfo], list[RuleInfo]]:
        self._load()
        return self._rules

    @property
    def own(self) -> Slice:
        self._load()
        return self._own

    @property
    def peer(self) -> Slice:
        self._load()
        return self._peer

    def _failsafe_mentions(self) -> Mentions:
        fs = Mentions()
        for v in self.views:
            fs.add_failsafe((proto, port) for proto, port, _ in v.failsafe)
        return fs

    @property
    def failsafe(self) -> Locator | None:
        """The failsafe ports' own pieces (host endpoints only)."""
        if self._failsafe is None and any(v.failsafe for v in self.views):
            self._failsafe = Locator(self._failsafe_mentions())
        return self._failsafe

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """Where any of the group's rules or failsafe ports cuts, in either tree."""
        if self._pieces is None:
            mentions = self._failsafe_mentions()
            for side in (0, 1):
                for rule in self.rules[side]:
                    mentions.update(rule.mentions)
            self._pieces = mentions.pieces()
        return self._pieces

    def own_sig(self, i: int) -> Sig:
        """What the group's rules see of subject ``i`` as the owner (per tree)."""
        if self._own_mask is None:
            self._own_mask = self.shared.mask(self.own)
        m, bits = self._own_mask, self.shared.bits
        return (bits[0][i] & m, bits[1][i] & m)

    def peer_sig(self, i: int) -> Sig:
        """What the group's rules see of subject ``i`` as the peer (per tree)."""
        if self._peer_mask is None:
            self._peer_mask = self.shared.mask(self.peer)
        m, bits = self._peer_mask, self.shared.bits
        return (bits[0][i] & m, bits[1][i] & m)

    @property
    def owner_members(self) -> dict[Sig, list[int]]:
        """Owner classes: owner sig -> member subjects."""
        if self._owner_members is None:
            out: dict[Sig, list[int]] = {}
            for i in self.members:
                out.setdefault(self.own_sig(i), []).append(i)
            self._owner_members = out
        return self._owner_members

    def ready(self) -> Group:
        """Fix the layout: owner classes and peer classes (every address class, seen through
        the group's peer slices)."""
        if self.peer_reps is None:
            reps: dict[Sig, int] = {}
            for rep in self.shared.aclass_rep:
                reps.setdefault(self.peer_sig(rep), rep)
            self.peer_reps = reps
            self._osig = list(self.owner_members)
            self._qsig = list(reps)
            self._oidx = {s: i for i, s in enumerate(self._osig)}
            self._qidx = {s: i for i, s in enumerate(self._qsig)}
            self._orep = [self.owner_members[o][0] for o in self._osig]
            self._qrep = list(reps.values())
        return self

    # -- evaluation -------------------------------------------------------------------------

    def _program(self, side: int) -> ir.Program:
        prog = self._mini[side]
        if prog is None:
            subjects, owners = self.shared.subjects, self.shared.owners[side]
            reps = set(self._orep) | set(self._qrep)
            host_ips: dict[str, list[ir.IPAddr]] = {}
            for i in self._orep:
                node = owners[i].node
                if node is not None:
                    host_ips.setdefault(node, []).append(subjects[i].ips[side])
            prog = self._mini[side] = mini_program(
                self.programs[side],
                [(owners[i], self.direction) for i in self._orep],
                [(self.views[side], self.direction)],
                [(subjects[i].ips[side], subjects[i].props[side]) for i in sorted(reps)],
                {n: tuple(ips) for n, ips in host_ips.items()},
            )
        return prog

    def _flow(self, side: int, oi: int, qi: int, ki: int) -> Flow:
        subjects = self.shared.subjects
        own, peer = subjects[self._orep[oi]].ips[side], subjects[self._qrep[qi]].ips[side]
        piece = self.pieces[ki]
        return (
            probe_flow(piece, own, peer)
            if self.direction == ir.EGRESS
            else probe_flow(piece, peer, own)
        )

    def _walk(self, side: int) -> tuple[list[Station], dict[tuple, int]]:
        """The evaluator's walk in one tree (``align.stations``), and station ident -> position
        (the last one, should an ident repeat: a longer prefix is always safe)."""
        got = self._walks[side]
        if got is None:
            self._load()
            walk = stations(
                self.programs[side],
                self.views[side],
                self.direction,
                lambda r: self.shared.rule(r, self.direction),
                bool(self.failsafe_nets & self.shared.changes.nets),
            )
            got = self._walks[side] = (walk, {st.ident: i for i, st in enumerate(walk)})
        return got

    def _evaluate(self, os_: list[int], qs: list[int], ks: list[int]) -> Evaluated:
        """Every cell of the sub-layout os_ x qs x ks, in both trees.

        Block by block: evaluate the lowest cell left, find the station that decided it, and give
        its verdict to every cell left that agrees with it on every station up to that one
        (``align``, fact 2). Each rule's match set is computed only when a prefix needs it."""
        result = Evaluated(os_, qs, ks)
        n_q, n_k = len(qs), len(ks)
        unchanged_masks: dict[int, int] = {}  # rule key -> mask, for rules nothing changed for
        for side in (0, 1):
            masker = Masker(self, side, os_, qs, ks, unchanged_masks)
            walk, position = self._walk(side)
            prog = self._program(side)
            remaining = (1 << (len(os_) * n_q * n_k)) - 1
            blocks, verdicts = [], []
            while remaining:
                cell = (remaining & -remaining).bit_length() - 1
                o, rest = divmod(cell, n_q * n_k)
                q, k = divmod(rest, n_k)
                v = evaluate(prog, self._flow(side, os_[o], qs[q], ks[k]))
                dv = v.egress if self.direction == ir.EGRESS else v.ingress
                self.evaluations += 1
                at = position.get(decided_at(dv.decided_by) or (), len(walk) - 1)
                same = remaining
                seen: set[int] = set()
                for st in walk[: at + 1]:
                    if st.rule is None:
                        if st.ident == ("failsafe",):
                            same &= masker.failsafe_class(cell)
                        continue
                    if id(st.rule) in seen:
                        continue
                    seen.add(id(st.rule))
                    m = masker.mask(st.rule)
                    same &= m if (m >> cell) & 1 else ~m
                blocks.append(same)
                verdicts.append(dv)
                remaining &= ~same
            result.blocks[side], result.verdicts[side] = blocks, verdicts
        for o in os_:
            for q in qs:
                self._evaluated.setdefault((o, q), []).append(result)
        return result

    def prefetch(
        self, rows: Iterable[tuple[Sig, Sig]], pieces: Iterable[int] | None = None
    ) -> None:
        """Evaluate, in one go, the (owner, peer) rows not evaluated yet (all their pieces, or
        only ``pieces``): one sub-layout shares its blocks, where row by row would evaluate
        each block again."""
        self.ready()
        ks = list(range(len(self.pieces))) if pieces is None else sorted(set(pieces))
        missing = set()
        for o, q in rows:
            oi, qi = self._oidx[o], self._qidx[q]
            done = self._evaluated.get((oi, qi), ())
            if not all(any(k in ev.kpos for ev in done) for k in ks):
                missing.add((oi, qi))
        if missing:
            os_ = sorted({oi for oi, _ in missing})
            qs = sorted({qi for _, qi in missing})
            self._evaluate(os_, qs, ks)

    def cell(self, o: Sig, q: Sig, k: int) -> tuple[DirectionVerdict, DirectionVerdict]:
        """Base and head verdicts of one cell (its whole (owner, peer) row is evaluated)."""
        self.ready()
        oi, qi = self._oidx[o], self._qidx[q]
        for ev in self._evaluated.get((oi, qi), ()):
            if k in ev.kpos:
                return ev.at(0, oi, qi, k), ev.at(1, oi, qi, k)
        ev = self._evaluate([oi], [qi], list(range(len(self.pieces))))
        return ev.at(0, oi, qi, k), ev.at(1, oi, qi, k)

    def changed_cells(self) -> list[tuple[Sig, Sig, int]]:
        """The cells whose allowed bit differs between the trees (also kept in ``changed``).

        Only candidates are evaluated (``align``, fact 1): where an unaligned rule matches, or
        an aligned rule whose sets changed matches in one tree only — or everything, when an
        unaligned station matches every flow."""
        self.ready()
        n_o, n_q, n_k = len(self._osig), len(self._qsig), len(self.pieces)
        everything = (list(range(n_o)), list(range(n_q)), list(range(n_k)))
        ch = changed(self._walk(0)[0], self._walk(1)[0])
        if ch.every:
            os_, qs, ks = everything
        else:
            maskers = [Masker(self, side, *everything, {}) for side in (0, 1)]
            candidates = 0
            for side, rule in ch.rules:
                candidates |= maskers[side].mask(rule)
            for rb, rh in ch.touched:
                candidates |= maskers[0].mask(rb) ^ maskers[1].mask(rh)
            if not candidates:
                return []
            sets: tuple[set[int], set[int], set[int]] = (set(), set(), set())
            for c in bits(candidates):
                o, rest = divmod(c, n_q * n_k)
                q, k = divmod(rest, n_k)
                sets[0].add(o)
                sets[1].add(q)
                sets[2].add(k)
            os_, qs, ks = (sorted(x) for x in sets)
        out = [
            (self._osig[o], self._qsig[q], k) for o, q, k in self._evaluate(os_, qs, ks).changed()
        ]
        self.changed = set(out)
        return out
