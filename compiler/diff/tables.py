"""Verdict tables of one direction, per group of owners, computed with the reference evaluator.

The verdict of a flow is egress(source) AND ingress(destination) (SEMANTICS.md §Evaluation
order, step 9; the one exception, a workload to its own node, is handled in ``semantic.py``).
Each direction depends on

* the **owner** side: the view of the endpoint that runs (``views.View``) in base and in head,
  and what the rules see of the owner's own address;
* the **peer** side: only what the rules see of the peer's address (never the peer's policy);
* the (protocol, ports, ICMP) piece of the flow.

So owners are grouped by their pair of views (:class:`Group`), and for a group only the sets,
nets and ports its own rules mention matter: a group's **local signature** of an address is its
props restricted to those (``sig``), and its pieces are cut only where its rules cut. A table
cell ``(owner class, peer class, piece)`` is evaluated once per tree, with the evaluator, on a
**mini program**: the owners' endpoints, the policies and profiles of the group's views, and each
referenced set with its members cut down to the representative addresses — which keeps every
membership the evaluator tests for those addresses and makes each evaluation cheap.

A group is **clean** when its views have the same fingerprint in both trees and nothing it
references changed membership (for any subject); then every cell has the same verdict in both
trees (the evaluator takes the same path through equal rules with equal match results), so its
cells are only evaluated when another direction's change needs them (lazily).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

from compiler.diff.addresses import AddrProps
from compiler.diff.services import Piece
from compiler.diff.subjects import Owner, Subject
from compiler.diff.views import Refs, View, fingerprint, refs
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import DirectionVerdict, Flow, Verdict

__all__ = ["Changes", "Group", "mini_program", "probe_flow"]


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
    rule_lists: list[tuple[ir.Rule, ...]] = [program.policies[pid].ingress for pid in pids]
    rule_lists += [program.policies[pid].egress for pid in pids]
    for name, dirs in profile_dirs.items():
        p = program.profiles[name]
        p = replace(
            p,
            ingress=p.ingress if ir.INGRESS in dirs else (),
            egress=p.egress if ir.EGRESS in dirs else (),
        )
        profiles[name] = p
        rule_lists += [p.ingress, p.egress]
    sids: set[str] = set()
    for rules in rule_lists:
        for r in rules:
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


Sig = tuple


class Group:
    """The owners that share one pair of views (base, head) for one direction.

    ``members`` are owner subjects (indices into the context's subject list) bucketed by their
    own local signature (owner classes); peer classes are the address classes bucketed by local
    signature. Cells are ``(owner sig, peer sig, piece index) -> (base verdict, head verdict)``
    of this direction."""

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
        self.refs = Refs()
        for side in (0, 1):
            self.refs.update(refs(programs[side], views[side], direction, named))
        same = fingerprint(programs[0], views[0], direction) == fingerprint(programs[1], views[1], direction)
        r = self.refs
        self.dirty = (
            not same
            or bool(r.sets & changes.sets)
            or bool(r.named & changes.named)
            or bool((r.nets | r.failsafe) & changes.nets)
        )
        self.pieces: tuple[Piece, ...] = r.mentions.pieces()
        self.trivial = views[0].kind == "none" and views[1].kind == "none"
        self._sig: dict[int, Sig] = {}
        self.owner_members: dict[Sig, list[int]] = {}  # owner sig -> member subjects (indices)
        self._peer_reps: dict[Sig, int] | None = None
        self._mini: list[ir.Program | None] = [None, None]
        self.cells: dict[tuple[Sig, Sig, int], tuple[DirectionVerdict, DirectionVerdict]] = {}
        self.evaluations = 0

    # -- signatures -------------------------------------------------------------------------

    def _restrict(self, p: AddrProps) -> tuple:
        r = self.refs
        return (
            p.sets & r.sets,
            frozenset(x for x in p.named if x[0] in r.named),
            p.nets & r.nets,
            p.failsafe & r.failsafe,
        )

    def sig(self, aclass: int, props: tuple[AddrProps, AddrProps]) -> Sig:
        got = self._sig.get(aclass)
        if got is None:
            got = self._sig[aclass] = (self._restrict(props[0]), self._restrict(props[1]))
        return got

    def add_member(self, subject: int, sig: Sig) -> None:
        self.owner_members.setdefault(sig, []).append(subject)

    def set_peers(self, reps: dict[Sig, int]) -> None:
        """Peer class -> representative subject (every address class seen through this group)."""
        self._peer_reps = reps

    # -- evaluation -------------------------------------------------------------------------

    def _program(self, side: int, subjects: list[Subject], owners: list[list[Owner]]) -> ir.Program:
        prog = self._mini[side]
        if prog is None:
            assert self._peer_reps is not None
            reps = {members[0] for members in self.owner_members.values()} | set(self._peer_reps.values())
            mine = [(owners[side][members[0]], self.direction) for members in self.owner_members.values()]
            host_ips: dict[str, list[ir.IPAddr]] = {}
            for members in self.owner_members.values():
                o = owners[side][members[0]]
                if o.node is not None:
                    host_ips.setdefault(o.node, []).append(subjects[members[0]].ips[side])
            prog = mini_program(
                self.programs[side],
                mine,
                [(self.views[side], self.direction)],
                [(subjects[i].ips[side], subjects[i].props[side]) for i in sorted(reps)],
                {n: tuple(ips) for n, ips in host_ips.items()},
            )
            self._mini[side] = prog
        return prog

    def cell(
        self, o: Sig, q: Sig, k: int, subjects: list[Subject], owners: list[list[Owner]]
    ) -> tuple[DirectionVerdict, DirectionVerdict]:
        key = (o, q, k)
        got = self.cells.get(key)
        if got is not None:
            return got
        assert self._peer_reps is not None
        owner, peer = subjects[self.owner_members[o][0]], subjects[self._peer_reps[q]]
        out = []
        for side in (0, 1):
            prog = self._program(side, subjects, owners)
            if self.direction == ir.EGRESS:
                v: Verdict = evaluate(prog, probe_flow(self.pieces[k], owner.ips[side], peer.ips[side]))
                out.append(v.egress)
            else:
                v = evaluate(prog, probe_flow(self.pieces[k], peer.ips[side], owner.ips[side]))
                out.append(v.ingress)
            self.evaluations += 1
        got = self.cells[key] = (out[0], out[1])
        return got

    def changed_cells(
        self, subjects: list[Subject], owners: list[list[Owner]]
    ) -> list[tuple[Sig, Sig, int]]:
        """Every cell of a dirty group, evaluated; those whose allowed bit differs."""
        assert self._peer_reps is not None
        out = []
        for o in self.owner_members:
            for q in self._peer_reps:
                for k in range(len(self.pieces)):
                    b, h = self.cell(o, q, k, subjects, owners)
                    if b.allowed != h.allowed:
                        out.append((o, q, k))
        return out
