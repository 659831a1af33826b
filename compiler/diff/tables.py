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

from collections import defaultdict

from compiler.diff.align import changed_stations, stations
from compiler.diff.mini import mini_program, probe_flow
from compiler.diff.rules import RuleInfo, Shared, Slice
from compiler.diff.services import Locator, Mentions, Piece
from compiler.diff.views import View, fingerprint
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate, rule_matches
from compiler.ir.flow import DirectionVerdict, Flow

__all__ = ["Group"]

Sig = tuple


def _bits(mask: int) -> list[int]:
    """Positions of the set bits, lowest first."""
    text = bin(mask)[:1:-1]
    out, i = [], text.find("1")
    while i >= 0:
        out.append(i)
        i = text.find("1", i + 1)
    return out


class Group:
    """The owners that share one pair of views (base, head) for one direction."""

    def __init__(self, ident: int, direction: str, views: tuple[View, View], shared: Shared) -> None:
        self.id = ident
        self.direction = direction
        self.views = views
        self.shared = shared
        self.programs = programs = shared.programs
        fp = shared.fingerprints
        same = fingerprint(programs[0], views[0], direction, fp) == fingerprint(programs[1], views[1], direction, fp)
        self.dirty = (
            not same
            or shared.view_touched(0, views[0], direction)
            or shared.view_touched(1, views[1], direction)
        )
        self.trivial = views[0].kind == "none" and views[1].kind == "none"
        self.members: list[int] = []
        self._loaded = False
        self._pieces: tuple[Piece, ...] | None = None
        self._failsafe: Locator | None = None
        self._own_sig: dict[int, Sig] = {}
        self._peer_sig: dict[int, Sig] = {}
        self._owner_members: dict[Sig, list[int]] | None = None
        self.peer_reps: dict[Sig, int] | None = None  # peer sig -> representative subject
        self._mini: list[ir.Program | None] = [None, None]
        self._evaluated: dict[tuple[int, int], list[_Evaluated]] = {}
        self.changed: set[tuple[Sig, Sig, int]] = set()
        self.evaluations = 0

    # -- classes ----------------------------------------------------------------------------

    def _load(self) -> None:
        """The rules (per tree) and the union of their slices, on first need."""
        if self._loaded:
            return
        got = [self.shared.view_rules(side, self.views[side], self.direction) for side in (0, 1)]
        self._rules = (got[0][0], got[1][0])
        self.failsafe_nets = frozenset(n for v in self.views for _, _, n in v.failsafe if n is not None)
        self._own = got[0][1] | got[1][1]
        self._peer = got[0][2] | got[1][2] | Slice(failsafe=self.failsafe_nets)
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
        a = self.shared.aclass[i]
        got = self._own_sig.get(a)
        if got is None:
            props = self.shared.subjects[i].props
            got = self._own_sig[a] = (self.own.restrict(props[0]), self.own.restrict(props[1]))
        return got

    def peer_sig(self, i: int) -> Sig:
        """What the group's rules see of subject ``i`` as the peer (per tree)."""
        a = self.shared.aclass[i]
        got = self._peer_sig.get(a)
        if got is None:
            props = self.shared.subjects[i].props
            got = self._peer_sig[a] = (self.peer.restrict(props[0]), self.peer.restrict(props[1]))
        return got

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
        return probe_flow(piece, own, peer) if self.direction == ir.EGRESS else probe_flow(piece, peer, own)

    def _masks(self, side: int, rules: list[RuleInfo], os_: list[int], qs: list[int], ks: list[int]) -> list[int]:
        """Each rule's match set over the sub-layout os_ x qs x ks, as a bitmask numbered
        ``(o * len(qs) + q) * len(ks) + k`` over *positions* in those lists."""
        prog = self._program(side)
        subjects = self.shared.subjects
        n_q, n_k = len(qs), len(ks)
        kpos = {k: j for j, k in enumerate(ks)}
        # A product is kmask * qpattern * opattern: the factors' bit fields do not overlap, so
        # the multiplications never carry.
        opat: dict[tuple[int, ...], int] = {}
        qpat: dict[tuple[int, ...], int] = {}

        def grouped(sl: Slice, reps: list[int], pick: list[int]) -> list[tuple[tuple, tuple[int, ...]]]:
            if sl.empty:
                return [((), tuple(range(len(pick))))]
            by: dict[tuple, list[int]] = defaultdict(list)
            for pos, idx in enumerate(pick):
                by[sl.restrict(subjects[reps[idx]].props[side])].append(pos)
            return [(k, tuple(v)) for k, v in by.items()]

        own_groups: dict[Slice, list[tuple[tuple, tuple[int, ...]]]] = {}
        peer_groups: dict[Slice, list[tuple[tuple, tuple[int, ...]]]] = {}
        memo = self.shared.matches
        out = []
        for rule in rules:
            if rule.own not in own_groups:
                own_groups[rule.own] = grouped(rule.own, self._orep, os_)
            if rule.peer not in peer_groups:
                peer_groups[rule.peer] = grouped(rule.peer, self._qrep, qs)
            kgroups = []
            for j, kg in self.shared.piece_groups(rule, self.pieces):
                local = tuple(kpos[k] for k in kg if k in kpos)
                if local:
                    kgroups.append((j, local))
            mask = 0
            for okey, og in own_groups[rule.own]:
                for pkey, qg in peer_groups[rule.peer]:
                    for j, kg in kgroups:
                        key = (rule.key, okey, pkey, j)
                        hit = memo.get(key)
                        if hit is None:
                            flow = self._flow(side, os_[og[0]], qs[qg[0]], ks[kg[0]])
                            hit = memo[key] = rule_matches(prog, rule.match, flow)
                        if hit:
                            if og not in opat:
                                opat[og] = sum(1 << (o * n_q * n_k) for o in og)
                            if qg not in qpat:
                                qpat[qg] = sum(1 << (q * n_k) for q in qg)
                            mask |= sum(1 << k for k in kg) * qpat[qg] * opat[og]
            out.append(mask)
        return out

    def _failsafe_splits(self, side: int, os_: list[int], qs: list[int], ks: list[int]) -> list[int]:
        """Failsafe ports: split by the failsafe slice of the cell (piece, peer's CIDRs)."""
        loc = self.failsafe
        if loc is None:
            return []
        n_q, n_k = len(qs), len(ks)
        fs = Slice(failsafe=self.failsafe_nets)
        local = [loc.locate(self.pieces[k]) for k in ks]
        opat = sum(1 << (o * n_q * n_k) for o in range(len(os_)))
        by_peer: dict[tuple, list[int]] = defaultdict(list)
        for pos, qi in enumerate(qs):
            by_peer[fs.restrict(self.shared.subjects[self._qrep[qi]].props[side])].append(pos)
        out = []
        for positions in by_peer.values():
            qpat = sum(1 << (q * n_k) for q in positions)
            for j in set(local):
                out.append(sum(1 << k for k in range(n_k) if local[k] == j) * qpat * opat)
        return out

    def _evaluate(self, os_: list[int], qs: list[int], ks: list[int]) -> _Evaluated:
        """Evaluate every cell of the sub-layout in both trees (block by block)."""
        n_q, n_k = len(qs), len(ks)
        full = (1 << (len(os_) * n_q * n_k)) - 1
        reusable: dict[int, int] = {}
        result = _Evaluated(os_, qs, ks)
        for side in (0, 1):
            todo = [r for r in self.rules[side] if r.key not in reusable]
            masks = self._masks(side, todo, os_, qs, ks)
            splits = masks + [reusable[r.key] for r in self.rules[side] if r.key in reusable]
            if side == 0:
                # A rule that reads the same and tests nothing that changed has the same match
                # set in head.
                reusable = {r.key: m for r, m in zip(todo, masks, strict=True) if not r.touched}
            splits += self._failsafe_splits(side, os_, qs, ks)
            blocks = [full]
            for mask in splits:
                if mask in (0, full):
                    continue
                nxt = []
                for b in blocks:
                    inside = b & mask
                    if inside and inside != b:
                        nxt.extend((inside, b ^ inside))
                    else:
                        nxt.append(b)
                blocks = nxt
            prog = self._program(side)
            verdicts = []
            for b in blocks:
                cell = (b & -b).bit_length() - 1
                o, rest = divmod(cell, n_q * n_k)
                q, k = divmod(rest, n_k)
                v = evaluate(prog, self._flow(side, os_[o], qs[q], ks[k]))
                verdicts.append(v.egress if self.direction == ir.EGRESS else v.ingress)
                self.evaluations += 1
            result.blocks[side], result.verdicts[side] = blocks, verdicts
        for o in os_:
            for q in qs:
                self._evaluated.setdefault((o, q), []).append(result)
        return result

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
        """The cells whose allowed bit differs between the trees (also kept in ``changed``)."""
        self.ready()
        n_o, n_q, n_k = len(self._osig), len(self._qsig), len(self.pieces)
        everything = (list(range(n_o)), list(range(n_q)), list(range(n_k)))
        seqs = [
            stations(
                self.programs[side], self.views[side], self.direction,
                lambda r: self.shared.rule(r, self.direction),
            )
            for side in (0, 1)
        ]
        changed, every = changed_stations(seqs[0], seqs[1])
        if every:
            os_, qs, ks = everything
        else:
            candidates = 0
            for side in (0, 1):
                for m in self._masks(side, [r for s, r in changed if s == side], *everything):
                    candidates |= m
            if not candidates:
                return []
            sets: tuple[set[int], set[int], set[int]] = (set(), set(), set())
            for c in _bits(candidates):
                o, rest = divmod(c, n_q * n_k)
                q, k = divmod(rest, n_k)
                sets[0].add(o)
                sets[1].add(q)
                sets[2].add(k)
            os_, qs, ks = (sorted(x) for x in sets)
        out = [(self._osig[o], self._qsig[q], k) for o, q, k in self._evaluate(os_, qs, ks).changed()]
        self.changed = set(out)
        return out


class _Evaluated:
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
                for c in _bits(b):
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
        for c in _bits(allowed[0] ^ allowed[1]):
            o, rest = divmod(c, n_q * n_k)
            q, k = divmod(rest, n_k)
            out.append((self.os[o], self.qs[q], self.ks[k]))
        return out
