"""Semantic diff: every flow whose verdict differs between two programs, exactly, by classes.

Nothing is sampled. The flow space of one address family is

    source subject x destination subject x (protocol, ports, ICMP) piece

where subjects are endpoints, node addresses and external address classes (``subjects.py``) and
pieces come from what the rules mention (``services.py``). A flow's verdict is
``egress(src) AND ingress(dst)``, so the work is split by direction (``tables.Group``): each
group of owners with the same views gets a small table over *its* local classes, evaluated with
the reference evaluator on both trees. A verdict can only change where a direction's allowed bit
changed, so only the changed cells of **dirty** groups are expanded: each is crossed with the
other direction's table (evaluated on demand, also with the evaluator) over the common
refinement of both groups' pieces, and every (source class, destination class, piece) whose
verdict differs becomes a :class:`Row` with the deciding steps in base and head.

The exception to "egress AND ingress" is a workload's traffic to its own node
(``defaultEndpointToHostAction``, evaluated in place of the node's ingress). Those pairs are few
(workloads x host addresses of their node) and are evaluated whole, per pair, on a mini program
with both ends: :func:`_own_host_rows`.

Cost, measured with ``benchmarks/gen.py`` (1,000 pods, 1,000 policies, 10 nodes, both
families; one 2.x GHz core): see the ``compiler.diff`` package docstring.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from compiler.diff.decision import Decision, decision
from compiler.diff.services import Piece, refine
from compiler.diff.subjects import Owner, ProgramIndex, Subject, subjects
from compiler.diff.tables import Changes, Group, mini_program, probe_flow
from compiler.diff.views import View, named_ports, view
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate

__all__ = ["FamilyDiff", "Row", "diff_family"]


@dataclass(frozen=True, slots=True)
class Row:
    """Every flow from any of ``sources`` to any of ``destinations`` (subject indices) within
    ``piece`` changed from ``before`` to ``after``."""

    sources: tuple[int, ...]
    destinations: tuple[int, ...]
    piece: Piece
    before: Decision
    after: Decision


@dataclass
class FamilyDiff:
    family: int
    subjects: list[Subject]
    rows: list[Row]
    stats: dict[str, int] = field(default_factory=dict)


class _Context:
    """Subjects of one family with their owners, views, groups and address classes."""

    def __init__(self, programs: tuple[ir.Program, ir.Program], family: int) -> None:
        self.programs = programs
        self.family = family
        self.subjects = subjects(programs, family)
        self.index = tuple(ProgramIndex(p) for p in programs)
        self.owners: list[list[Owner]] = [
            [self.index[side].owner(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self.named = named_ports(programs)
        self.changes = Changes.of(self.subjects)
        self.groups: list[Group] = []
        self._group_ids: dict[tuple, int] = {}
        aclass_ids: dict[tuple, int] = {}
        self.aclass: list[int] = []
        self.aclass_rep: list[int] = []
        for i, s in enumerate(self.subjects):
            a = aclass_ids.setdefault(s.props, len(aclass_ids))
            if a == len(self.aclass_rep):
                self.aclass_rep.append(i)
            self.aclass.append(a)
        # Egress and ingress group of every subject.
        self.group_of: dict[str, list[int]] = {}
        for direction in ir.DIRECTIONS:
            ids = []
            for i in range(len(self.subjects)):
                views = tuple(view(programs[side], self.owners[side][i], direction) for side in (0, 1))
                ids.append(self.group(direction, views))  # type: ignore[arg-type]
            self.group_of[direction] = ids
        for direction in ir.DIRECTIONS:
            for i, gid in enumerate(self.group_of[direction]):
                g = self.groups[gid]
                g.add_member(i, g.sig(self.aclass[i], self.subjects[i].props))
        # Workload -> own node: the node a workload runs on (per tree), the node an address is
        # a host address of (per tree).
        self.wep_node = [
            [o.endpoint.node if o.kind == "wep" and o.endpoint else None for o in self.owners[side]]
            for side in (0, 1)
        ]
        self.own_node = [
            [self.index[side].own_node(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self._peer_index: dict[int, dict] = {}

    def group(self, direction: str, views: tuple[View, View]) -> int:
        key = (direction, views)
        gid = self._group_ids.get(key)
        if gid is None:
            gid = self._group_ids[key] = len(self.groups)
            self.groups.append(Group(gid, direction, views, self.programs, self.named, self.changes))
        return gid

    def props(self, i: int) -> tuple:
        return self.subjects[i].props

    def ready(self, g: Group) -> Group:
        """Make sure the group knows its peer classes (computed on first use)."""
        if g._peer_reps is None:
            reps: dict[tuple, int] = {}
            for a, rep in enumerate(self.aclass_rep):
                reps.setdefault(g.sig(a, self.props(rep)), rep)
            g.set_peers(reps)
        return g

    def sig(self, g: Group, i: int) -> tuple:
        return g.sig(self.aclass[i], self.props(i))

    def peer_index(self, g: Group) -> dict[tuple, dict[tuple[int, tuple], list[int]]]:
        """For a group of one direction: peer sig -> (other direction's group, owner sig in it)
        -> subjects. Lets a changed cell find its peers class by class."""
        got = self._peer_index.get(g.id)
        if got is None:
            other = ir.INGRESS if g.direction == ir.EGRESS else ir.EGRESS
            got = defaultdict(lambda: defaultdict(list))
            for i in range(len(self.subjects)):
                h = self.groups[self.group_of[other][i]]
                got[self.sig(g, i)][(h.id, self.sig(h, i))].append(i)
            self._peer_index[g.id] = got
        return got

    def cell(self, g: Group, o: tuple, q: tuple, k: int) -> tuple:
        return self.ready(g).cell(o, q, k, self.subjects, self.owners)

    def own_host(self, x: int, y: int) -> tuple[bool, bool]:
        """Whether x -> y is workload -> its own node, in base and in head."""
        return tuple(  # type: ignore[return-value]
            self.wep_node[s][x] is not None and self.wep_node[s][x] == self.own_node[s][y] for s in (0, 1)
        )


def _split_own_host(ctx: _Context, xs: list[int], ys: list[int]) -> Iterator[tuple[list[int], list[int]]]:
    """Drop the workload -> own-node pairs (evaluated apart): yields (sources, destinations)."""
    by_excluded: dict[frozenset[int], list[int]] = defaultdict(list)
    for y in ys:
        if ctx.own_node[0][y] is None and ctx.own_node[1][y] is None:
            by_excluded[frozenset()].append(y)
        else:
            by_excluded[frozenset(x for x in xs if any(ctx.own_host(x, y)))].append(y)
    for excluded, dsts in by_excluded.items():
        srcs = [x for x in xs if x not in excluded]
        if srcs:
            yield srcs, dsts


def _cross(
    ctx: _Context, seen: set, eg: Group, o: tuple, q: tuple, k: int, ig: Group, o2: tuple, q2: tuple, k2: int,
    xs: list[int], ys: list[int],
) -> Iterator[Row]:
    key = (eg.id, o, q, k, ig.id, o2, q2, k2)
    if key in seen:
        return
    seen.add(key)
    piece = eg.pieces[k].intersect(ig.pieces[k2])
    if piece is None:
        return
    e = ctx.cell(eg, o, q, k)
    i = ctx.cell(ig, o2, q2, k2)
    if (e[0].allowed and i[0].allowed) == (e[1].allowed and i[1].allowed):
        return
    before, after = decision(e[0], i[0]), decision(e[1], i[1])
    for srcs, dsts in _split_own_host(ctx, xs, ys):
        yield Row(tuple(srcs), tuple(dsts), piece, before, after)


def _from_egress(ctx: _Context, seen: set, g: Group, o: tuple, q: tuple, k: int) -> Iterator[Row]:
    xs = g.owner_members[o]
    for (hid, o2), ys in ctx.peer_index(g)[q].items():
        h = ctx.ready(ctx.groups[hid])
        by_q2: dict[tuple, list[int]] = defaultdict(list)
        for x in xs:
            by_q2[ctx.sig(h, x)].append(x)
        for q2, xs2 in by_q2.items():
            for k2 in range(len(h.pieces)):
                yield from _cross(ctx, seen, g, o, q, k, h, o2, q2, k2, xs2, ys)


def _from_ingress(ctx: _Context, seen: set, h: Group, o2: tuple, q2: tuple, k2: int) -> Iterator[Row]:
    ys = h.owner_members[o2]
    for (gid, o), xs in ctx.peer_index(h)[q2].items():
        g = ctx.ready(ctx.groups[gid])
        by_q: dict[tuple, list[int]] = defaultdict(list)
        for y in ys:
            by_q[ctx.sig(g, y)].append(y)
        for q, ys2 in by_q.items():
            for k in range(len(g.pieces)):
                yield from _cross(ctx, seen, g, o, q, k, h, o2, q2, k2, xs, ys2)


def _star_view(ctx: _Context, side: int, node: str | None) -> View:
    star = ctx.index[side].star.get(node) if node is not None else None
    return view(ctx.programs[side], Owner("hep", star, node) if star else Owner("none"), ir.INGRESS)


def _own_host_rows(ctx: _Context) -> Iterator[Row]:
    """Workload -> a host address of its own node: evaluated pair by pair (they are few)."""
    felix = [p.felix.default_endpoint_to_host_action for p in ctx.programs]
    hosts = [y for y in range(len(ctx.subjects)) if ctx.own_node[0][y] or ctx.own_node[1][y]]
    for y in hosts:
        stars = tuple(_star_view(ctx, side, ctx.own_node[side][y]) for side in (0, 1))
        star_group = ctx.groups[ctx.group(ir.INGRESS, stars)]  # type: ignore[arg-type]
        ig = ctx.groups[ctx.group_of[ir.INGRESS][y]]
        for x in range(len(ctx.subjects)):
            applies = ctx.own_host(x, y)
            if not any(applies):
                continue
            eg = ctx.groups[ctx.group_of[ir.EGRESS][x]]
            if all(applies) and felix[0] == felix[1] == "Drop":
                continue  # denied in both, whatever the workload's egress says
            oh_clean = felix[0] == felix[1] and (felix[0] != "Return" or not star_group.dirty)
            if all(applies) and oh_clean and not eg.dirty:
                continue
            yield from _pair_rows(ctx, x, y, eg, ig, star_group)


def _pair_rows(ctx: _Context, x: int, y: int, eg: Group, ig: Group, star: Group) -> Iterator[Row]:
    progs = []
    for side in (0, 1):
        owners = [(ctx.owners[side][x], ir.EGRESS), (ctx.owners[side][y], ir.INGRESS)]
        node = ctx.own_node[side][y]
        star_ep = ctx.index[side].star.get(node) if node is not None else None
        if star_ep is not None:
            owners.append((Owner("hep", star_ep, node), ir.INGRESS))
        host_ip = ctx.subjects[y].ips[side]
        host_node = ctx.index[side].host_node.get(host_ip)
        progs.append(
            mini_program(
                ctx.programs[side],
                owners,
                [(eg.views[side], ir.EGRESS), (ig.views[side], ir.INGRESS), (star.views[side], ir.INGRESS)],
                [(s.ips[side], s.props[side]) for s in (ctx.subjects[x], ctx.subjects[y])],
                {host_node: (host_ip,)} if host_node is not None else None,
            )
        )
    sx, sy = ctx.subjects[x], ctx.subjects[y]
    for piece, _ in refine(eg.pieces, ig.pieces, star.pieces):
        v = [evaluate(progs[s], probe_flow(piece, sx.ips[s], sy.ips[s])) for s in (0, 1)]
        if v[0].allowed != v[1].allowed:
            yield Row(
                (x,), (y,), piece, decision(v[0].egress, v[0].ingress), decision(v[1].egress, v[1].ingress)
            )


def diff_family(programs: tuple[ir.Program, ir.Program], family: int) -> FamilyDiff:
    """Every verdict change of one address family, as rows over subject classes."""
    ctx = _Context(programs, family)
    seen: set = set()
    rows: list[Row] = []
    for g in ctx.groups:
        if not g.dirty or g.trivial:
            continue
        ctx.ready(g)
        for o, q, k in g.changed_cells(ctx.subjects, ctx.owners):
            if g.direction == ir.EGRESS:
                rows.extend(_from_egress(ctx, seen, g, o, q, k))
            else:
                rows.extend(_from_ingress(ctx, seen, g, o, q, k))
    rows.extend(_own_host_rows(ctx))
    stats = {
        "subjects": len(ctx.subjects),
        "address_classes": len(ctx.aclass_rep),
        "groups": len(ctx.groups),
        "dirty_groups": sum(1 for g in ctx.groups if g.dirty and not g.trivial),
        "evaluations": sum(g.evaluations for g in ctx.groups),
    }
    return FamilyDiff(family, ctx.subjects, rows, stats)

