"""Verdict tables of one direction, per group of owners, computed with the reference evaluator.

The verdict of a flow is egress(source) AND ingress(destination) (SEMANTICS.md §Evaluation
order, step 9; the exceptions — a workload to its own node, a node to its own workloads — are
evaluated apart in ``semantic.py``). One direction depends on

* the **owner**: the view of the endpoint that runs (``views.View``) in base and in head, and
  what the rules see of the owner's own address (the rules' owner side);
* the **peer**: only what the rules see of its address (the rules' peer side);
* the (protocol, ports, ICMP) **piece** of the flow.

Owners are grouped by their pair of views (:class:`Group`). Within a group, addresses are told
apart only by the sets, nets and ports the group's rules mention (``own_sig`` / ``peer_sig``),
and pieces are cut only where its rules cut. A **cell** is (owner class, peer class, piece).

Computing a table: the evaluator's result for one direction depends on the flow only through
which of the owner's rules match it (``evaluate.rule_matches``) and whether a failsafe port
applies. Each rule's match depends only on the rule's own slice of the cell (its owner-side and
peer-side references and its own pieces), so every rule is asked once per slice — with the
evaluator's ``rule_matches`` — and its match set over the table is a union of products, held as
a bitmask over cell numbers. Splitting the table by every rule's mask gives **blocks** of cells
with the same match vector; :func:`~compiler.ir.evaluate.evaluate` then runs once per block and
tree, on a **mini program** (the owners, the group's policies and profiles, each set cut down to
the representative addresses), and its verdict holds for every cell of the block. Exact, and
cheap even when a change touches every cell.

A group is **clean** when its views mean the same in both trees (``views.fingerprint``) and no
set or net it references changed membership; every cell then has the same verdict in both trees,
and its table is only computed when another direction's change needs it.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from compiler.diff.addresses import AddrProps
from compiler.diff.services import Mentions, Piece
from compiler.diff.subjects import Owner, Subject
from compiler.diff.views import View, fingerprint, rule_lists
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate, rule_matches
from compiler.ir.flow import DirectionVerdict, Flow

__all__ = ["Changes", "Group", "mini_program", "probe_flow"]

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


def probe_flow(piece: Piece, src: ir.IPAddr, dst: ir.IPAddr) -> Flow:
    proto, sport, dport, itype, icode = piece.probe()
    return Flow(src, dst, proto, sport, dport, itype, icode)


def mini_program(
    program: ir.Program,
    owners: Iterable[tuple[Owner, str]],
    views: Iterable[tuple[View, str]],
    members: Iterable[tuple[ir.IPAddr, AddrProps]],
    host_ips: dict[str, tuple[ir.IPAddr, ...]] | None = None,
) -> ir.Program:
    """The part of ``program`` the evaluator reads for flows between the given addresses.

    ``owners``: (owner, direction) — endpoints that must be found for an address, each kept
    with its tier plans of that direction only; ``views``: (view, direction) whose policies and
    profile rules are kept; ``members``: the addresses of the flows with their props — every
    referenced set keeps exactly those of them it contains.

    Everything else is dropped, which no flow between these addresses can notice *in the
    directions asked*. The evaluator also runs the other direction of an endpoint that is in
    the program (a peer that happens to be an owner); stripped of its plans and profile rules
    there, that direction just denies, and nobody reads it."""
    pids: set[str] = set()
    profile_dirs: dict[str, set[str]] = {}
    for v, direction in views:
        pids.update(v.policy_ids())
        for name in v.profiles:
            if name in program.profiles:
                profile_dirs.setdefault(name, set()).add(direction)
    profiles = {}
    rules: list[tuple[ir.Rule, ...]] = [program.policies[pid].ingress for pid in pids]
    rules += [program.policies[pid].egress for pid in pids]
    for name, dirs in profile_dirs.items():
        p = program.profiles[name]
        p = replace(
            p,
            ingress=p.ingress if ir.INGRESS in dirs else (),
            egress=p.egress if ir.EGRESS in dirs else (),
        )
        profiles[name] = p
        rules += [p.ingress, p.egress]
    sids: set[str] = set()
    for rs in rules:
        for r in rs:
            for side in (r.match.src, r.match.dst):
                sids.update(side.sets)
                sids.update(side.not_sets)
                for pm in (side.ports, side.not_ports):
                    if pm is not None:
                        sids.update(pm.named_sets)
    nets: dict[str, set[ir.IPNet]] = {sid: set() for sid in sids}
    ports: dict[str, set[tuple[ir.IPNet, int, int]]] = {sid: set() for sid in sids}
    for ip, p in members:
        host = ipaddress.ip_network(ip)
        for sid in p.sets & sids:
            nets[sid].add(host)
        for sid, proto, port in p.named:
            if sid in sids:
                ports[sid].add((host, proto, port))
    sets = []
    for sid in sids:
        s = program.sets[sid]
        if s.is_named_port:
            sets.append(replace(s, port_members=frozenset(ports[sid])))
        else:
            sets.append(replace(s, members=frozenset(nets[sid])))
    keep: dict[str, tuple[ir.Endpoint, set[str]]] = {}
    for o, direction in owners:
        if o.endpoint is not None:
            keep.setdefault(o.endpoint.id + "\0" + o.endpoint.kind, (o.endpoint, set()))[1].add(direction)
    endpoints = tuple(
        replace(ep, plans=tuple(kv for kv in ep.plans if kv[0][1] in dirs)) for ep, dirs in keep.values()
    )
    return ir.make_program(
        node=program.node,
        tiers=program.tiers,
        policies={pid: program.policies[pid] for pid in pids},
        profiles=profiles,
        sets=tuple(sets),
        endpoints=endpoints,
        selectables=(),
        felix=program.felix,
        host_ips=host_ips or {},
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

    def restrict(self, p: AddrProps) -> tuple:
        return (
            p.sets & self.sets,
            frozenset(x for x in p.named if x[0] in self.named) if self.named else EMPTY,
            p.nets & self.nets,
            p.failsafe & self.failsafe,
        )

    @property
    def empty(self) -> bool:
        return not (self.sets or self.named or self.nets or self.failsafe)


@dataclass(frozen=True)
class _Rule:
    match: ir.Match
    own: Slice
    peer: Slice
    pieces: tuple[Piece, ...]


def _bits(mask: int) -> list[int]:
    """Positions of the set bits, lowest first."""
    text = bin(mask)[:1:-1]
    out, i = [], text.find("1")
    while i >= 0:
        out.append(i)
        i = text.find("1", i + 1)
    return out


class _Table:
    """One tree's verdicts over every cell of a group: blocks (bitmasks) and their verdicts."""

    def __init__(self, blocks: list[int], verdicts: list[DirectionVerdict]) -> None:
        self.blocks = blocks
        self.verdicts = verdicts
        self._of: list[int] | None = None

    def at(self, cell: int) -> DirectionVerdict:
        if self._of is None:
            of = [0] * (max(self.blocks).bit_length() if self.blocks else 0)
            for bi, b in enumerate(self.blocks):
                for c in _bits(b):
                    of[c] = bi
            self._of = of
        return self.verdicts[self._of[cell]]

    def allowed_mask(self) -> int:
        out = 0
        for b, v in zip(self.blocks, self.verdicts, strict=True):
            if v.allowed:
                out |= b
        return out


Sig = tuple


class Group:
    """The owners that share one pair of views (base, head) for one direction."""

    def __init__(
        self,
        ident: int,
        direction: str,
        views: tuple[View, View],
        programs: tuple[ir.Program, ir.Program],
        named: dict[str, set[tuple[int, int]]],
        changes: Changes,
    ) -> None:
        self.id = ident
        self.direction = direction
        self.views = views
        self.programs = programs
        self.rules: tuple[list[_Rule], list[_Rule]] = ([], [])
        mentions = Mentions()
        own, peer = Slice(), Slice()
        for side in (0, 1):
            for rs in rule_lists(programs[side], views[side], direction):
                for r in rs:
                    m = r.match
                    o_side, p_side = (m.src, m.dst) if direction == ir.EGRESS else (m.dst, m.src)
                    local = Mentions()
                    local.add_match(m, named)  # type: ignore[arg-type]
                    mentions.update(local)
                    rule = _Rule(m, Slice.of(o_side), Slice.of(p_side), local.pieces())
                    self.rules[side].append(rule)
                    own, peer = own | rule.own, peer | rule.peer
        fs = Mentions()
        self.failsafe_nets: frozenset[ir.IPNet] = EMPTY
        for side in (0, 1):
            fs.add_failsafe((proto, port) for proto, port, _ in views[side].failsafe)
            self.failsafe_nets |= frozenset(n for _, _, n in views[side].failsafe if n is not None)
        self.failsafe_pieces = fs.pieces() if any(v.failsafe for v in views) else ()
        mentions.update(fs)
        self.own, self.peer = own, peer | Slice(failsafe=self.failsafe_nets)
        same = fingerprint(programs[0], views[0], direction) == fingerprint(programs[1], views[1], direction)
        self.dirty = (
            not same
            or bool((own.sets | peer.sets) & changes.sets)
            or bool((own.named | peer.named) & changes.named)
            or bool((own.nets | peer.nets | self.failsafe_nets) & changes.nets)
        )
        self.pieces: tuple[Piece, ...] = mentions.pieces()
        self.trivial = views[0].kind == "none" and views[1].kind == "none"
        self._own_sig: dict[int, Sig] = {}
        self._peer_sig: dict[int, Sig] = {}
        self.owner_members: dict[Sig, list[int]] = {}  # owner sig -> member subjects (indices)
        self.peer_reps: dict[Sig, int] | None = None  # peer sig -> representative subject
        self._tables: list[_Table | None] = [None, None]
        self._mini: list[ir.Program | None] = [None, None]
        self.evaluations = 0

    # -- signatures -------------------------------------------------------------------------

    def own_sig(self, aclass: int, props: tuple[AddrProps, AddrProps]) -> Sig:
        got = self._own_sig.get(aclass)
        if got is None:
            got = self._own_sig[aclass] = (self.own.restrict(props[0]), self.own.restrict(props[1]))
        return got

    def peer_sig(self, aclass: int, props: tuple[AddrProps, AddrProps]) -> Sig:
        got = self._peer_sig.get(aclass)
        if got is None:
            got = self._peer_sig[aclass] = (self.peer.restrict(props[0]), self.peer.restrict(props[1]))
        return got

    def add_member(self, subject: int, sig: Sig) -> None:
        self.owner_members.setdefault(sig, []).append(subject)

    # -- the tables -------------------------------------------------------------------------

    def _layout(self) -> tuple[list[Sig], list[Sig], int]:
        assert self.peer_reps is not None
        return list(self.owner_members), list(self.peer_reps), len(self.pieces)

    def _program(self, side: int, subjects: list[Subject], owners: list[list[Owner]]) -> ir.Program:
        prog = self._mini[side]
        if prog is None:
            assert self.peer_reps is not None
            owner_reps = [members[0] for members in self.owner_members.values()]
            reps = set(owner_reps) | set(self.peer_reps.values())
            host_ips: dict[str, list[ir.IPAddr]] = {}
            for i in owner_reps:
                if owners[side][i].node is not None:
                    host_ips.setdefault(owners[side][i].node, []).append(subjects[i].ips[side])  # type: ignore[arg-type]
            prog = self._mini[side] = mini_program(
                self.programs[side],
                [(owners[side][i], self.direction) for i in owner_reps],
                [(self.views[side], self.direction)],
                [(subjects[i].ips[side], subjects[i].props[side]) for i in sorted(reps)],
                {n: tuple(ips) for n, ips in host_ips.items()},
            )
        return prog

    def _flow(self, side: int, own: Subject, peer: Subject, piece: Piece) -> Flow:
        if self.direction == ir.EGRESS:
            return probe_flow(piece, own.ips[side], peer.ips[side])
        return probe_flow(piece, peer.ips[side], own.ips[side])

    def _table(self, side: int, subjects: list[Subject], owners: list[list[Owner]]) -> _Table:
        table = self._tables[side]
        if table is not None:
            return table
        osigs, qsigs, n_k = self._layout()
        n_q = len(qsigs)
        orep = [self.owner_members[o][0] for o in osigs]
        qrep = [self.peer_reps[q] for q in qsigs]  # type: ignore[index]
        prog = self._program(side, subjects, owners)
        full = (1 << (len(osigs) * n_q * n_k)) - 1

        def product(os_: list[int], qs: list[int], ks: list[int]) -> int:
            kmask = sum(1 << k for k in ks)
            qmask = sum(kmask << (q * n_k) for q in qs)
            return sum(qmask << (o * n_q * n_k) for o in os_)

        splits: list[int] = []
        for rule in self.rules[side]:
            by_own: dict[tuple, list[int]] = defaultdict(list)
            for oi, i in enumerate(orep):
                by_own[rule.own.restrict(subjects[i].props[side])].append(oi)
            by_peer: dict[tuple, list[int]] = defaultdict(list)
            for qi, i in enumerate(qrep):
                by_peer[rule.peer.restrict(subjects[i].props[side])].append(qi)
            by_piece: dict[int, list[int]] = defaultdict(list)
            for ki, piece in enumerate(self.pieces):
                local = next(j for j, lp in enumerate(rule.pieces) if lp.intersect(piece) is not None)
                by_piece[local].append(ki)
            mask = 0
            for os_ in by_own.values():
                for qs in by_peer.values():
                    for ks in by_piece.values():
                        flow = self._flow(side, subjects[orep[os_[0]]], subjects[qrep[qs[0]]], self.pieces[ks[0]])
                        if rule_matches(prog, rule.match, flow):
                            mask |= product(os_, qs, ks)
            splits.append(mask)
        if self.failsafe_pieces:
            # Failsafe ports: split by the failsafe slice of the cell (piece, peer failsafe CIDRs).
            fs_slice = Slice(failsafe=self.failsafe_nets)
            keys: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
            for qi, i in enumerate(qrep):
                for ki, piece in enumerate(self.pieces):
                    local = next(j for j, lp in enumerate(self.failsafe_pieces) if lp.intersect(piece) is not None)
                    keys[(fs_slice.restrict(subjects[i].props[side]), local)].append((qi, ki))
            for cells in keys.values():
                m = 0
                for qi, ki in cells:
                    m |= product(list(range(len(osigs))), [qi], [ki])
                splits.append(m)
        blocks = [full]
        for mask in splits:
            if mask in (0, full):
                continue
            nxt = []
            for b in blocks:
                inside, outside = b & mask, b & ~mask
                nxt.extend(x for x in (inside, outside) if x)
            blocks = nxt
        verdicts = []
        for b in blocks:
            cell = (b & -b).bit_length() - 1
            oi, rest = divmod(cell, n_q * n_k)
            qi, ki = divmod(rest, n_k)
            flow = self._flow(side, subjects[orep[oi]], subjects[qrep[qi]], self.pieces[ki])
            v = evaluate(prog, flow)
            verdicts.append(v.egress if self.direction == ir.EGRESS else v.ingress)
            self.evaluations += 1
        table = self._tables[side] = _Table(blocks, verdicts)
        return table

    def cell(
        self, o: Sig, q: Sig, k: int, subjects: list[Subject], owners: list[list[Owner]]
    ) -> tuple[DirectionVerdict, DirectionVerdict]:
        c = self._cell_index(o, q, k)
        return (
            self._table(0, subjects, owners).at(c),
            self._table(1, subjects, owners).at(c),
        )

    def _cell_index(self, o: Sig, q: Sig, k: int) -> int:
        if not hasattr(self, "_oidx"):
            osigs, qsigs, _ = self._layout()
            self._oidx = {s: i for i, s in enumerate(osigs)}
            self._qidx = {s: i for i, s in enumerate(qsigs)}
        return (self._oidx[o] * len(self._qidx) + self._qidx[q]) * len(self.pieces) + k

    def changed_cells(
        self, subjects: list[Subject], owners: list[list[Owner]]
    ) -> list[tuple[Sig, Sig, int]]:
        """The cells whose allowed bit differs between the trees."""
        osigs, qsigs, n_k = self._layout()
        diff = self._table(0, subjects, owners).allowed_mask() ^ self._table(1, subjects, owners).allowed_mask()
        out = []
        for c in _bits(diff):
            oi, rest = divmod(c, len(qsigs) * n_k)
            qi, ki = divmod(rest, n_k)
            out.append((osigs[oi], qsigs[qi], ki))
        return out
