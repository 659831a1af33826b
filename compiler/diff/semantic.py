"""Semantic diff: every flow whose verdict differs between two programs, exactly, by classes.

Nothing is sampled. The flow space of one address family is

    source subject x destination subject x (protocol, ports, ICMP) piece

where subjects are endpoints, node addresses and external address classes (``subjects.py``) and
pieces come from what the rules mention (``services.py``). A flow's verdict is
``egress(src) AND ingress(dst)``, so the work is split by direction (``tables.Group``): each
group of owners with the same views gets a table over *its* classes, computed with the reference
evaluator on both trees. A verdict can only change where a direction's allowed bit changed, so
only the changed cells of **dirty** groups are expanded: each is crossed with the other
direction's table over the common refinement of both groups' pieces, and every (source class,
destination class, piece) whose verdict differs becomes a :class:`Row` with the deciding steps
in base and head.

Two kinds of pairs are not "egress AND ingress" (``evaluate.py``): a workload to a host address
of its own node (``defaultEndpointToHostAction`` replaces the node's ingress) and a node's host
address to a workload on that node (never policed). Those pairs are few (host addresses x the
workloads of their node); they are left out of the crossing and evaluated whole, pair by pair,
on a mini program holding both ends (:func:`_special_rows`), unless they are provably unchanged.
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
        n = len(self.subjects)
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
        self.group_of: dict[str, list[int]] = {}
        for direction in ir.DIRECTIONS:
            self.group_of[direction] = [
                self.group(direction, (view(programs[0], self.owners[0][i], direction), view(programs[1], self.owners[1][i], direction)))
                for i in range(n)
            ]
            for i, gid in enumerate(self.group_of[direction]):
                g = self.groups[gid]
                g.add_member(i, self.own_sig(g, i))
        # The two exceptions to egress AND ingress need, per tree: the node a workload runs on,
        # the node an address is a host address of (workload -> own host), and the node whose
        # host_ips hold an address (host -> own workloads).
        self.wep_node = [
            [o.endpoint.node if o.kind == "wep" and o.endpoint else None for o in self.owners[side]]
            for side in (0, 1)
        ]
        self.own_node = [[self.index[side].own_node(s.ips[side]) for s in self.subjects] for side in (0, 1)]
        self.host_node = [
            [self.index[side].host_node.get(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self._peer_index: dict[int, dict] = {}
        self._compatible: dict[tuple[int, int], list[tuple[int, int, Piece]]] = {}

    def group(self, direction: str, views: tuple[View, View]) -> int:
        key = (direction, views)
        gid = self._group_ids.get(key)
        if gid is None:
            gid = self._group_ids[key] = len(self.groups)
            self.groups.append(Group(gid, direction, views, self.programs, self.named, self.changes))
        return gid

    def own_sig(self, g: Group, i: int) -> tuple:
        return g.own_sig(self.aclass[i], self.subjects[i].props)

    def peer_sig(self, g: Group, i: int) -> tuple:
        return g.peer_sig(self.aclass[i], self.subjects[i].props)

    def ready(self, g: Group) -> Group:
        """Make sure the group knows its peer classes (computed on first use)."""
        if g.peer_reps is None:
            reps: dict[tuple, int] = {}
            for rep in self.aclass_rep:
                reps.setdefault(self.peer_sig(g, rep), rep)
            g.peer_reps = reps
        return g

    def peer_index(self, g: Group) -> dict[tuple, dict[tuple[int, tuple], list[int]]]:
        """For a group of one direction: peer sig -> (the peer's group in the other direction,
        its owner sig there) -> subjects. Lets a changed cell find its peers class by class."""
        got = self._peer_index.get(g.id)
        if got is None:
            other = ir.INGRESS if g.direction == ir.EGRESS else ir.EGRESS
            got = defaultdict(lambda: defaultdict(list))
            for i in range(len(self.subjects)):
                h = self.groups[self.group_of[other][i]]
                got[self.peer_sig(g, i)][(h.id, self.own_sig(h, i))].append(i)
            self._peer_index[g.id] = got
        return got

    def compatible(self, eg: Group, ig: Group) -> list[tuple[int, int, Piece]]:
        """(egress piece, ingress piece, their intersection) for every pair that meets."""
        key = (eg.id, ig.id)
        got = self._compatible.get(key)
        if got is None:
            got = []
            for k, a in enumerate(eg.pieces):
                for k2, b in enumerate(ig.pieces):
                    both = a.intersect(b)
                    if both is not None:
                        got.append((k, k2, both))
            self._compatible[key] = got
        return got

    def cell(self, g: Group, o: tuple, q: tuple, k: int) -> tuple:
        return self.ready(g).cell(o, q, k, self.subjects, self.owners)

    def special(self, x: int, y: int) -> tuple[bool, bool]:
        """Whether x -> y is workload -> own host or host -> own workload, in base and head."""
        out = []
        for s in (0, 1):
            wx, hx, wy, oy = self.wep_node[s][x], self.host_node[s][x], self.wep_node[s][y], self.own_node[s][y]
            out.append((wx is not None and wx == oy) or (hx is not None and hx == wy))
        return out[0], out[1]

    def may_be_special(self, i: int, as_source: bool) -> bool:
        if as_source:
            return any(self.wep_node[s][i] or self.host_node[s][i] for s in (0, 1))
        return any(self.wep_node[s][i] or self.own_node[s][i] for s in (0, 1))


def _split_special(ctx: _Context, xs: list[int], ys: list[int]) -> Iterator[tuple[list[int], list[int]]]:
    """Leave out the special pairs (evaluated apart): yields (sources, destinations)."""
    sx = [x for x in xs if ctx.may_be_special(x, True)]
    if not sx:
        yield xs, ys
        return
    by_excluded: dict[frozenset[int], list[int]] = defaultdict(list)
    for y in ys:
        if not ctx.may_be_special(y, False):
            by_excluded[frozenset()].append(y)
        else:
            by_excluded[frozenset(x for x in sx if any(ctx.special(x, y)))].append(y)
    for excluded, dsts in by_excluded.items():
        srcs = [x for x in xs if x not in excluded] if excluded else xs
        if srcs:
            yield srcs, dsts


def _cross(
    ctx: _Context, seen: set, eg: Group, o: tuple, q: tuple, ig: Group, o2: tuple, q2: tuple,
    xs: list[int], ys: list[int], only: tuple[str, int] | None,
) -> Iterator[Row]:
    """The rows of one egress cell row x ingress cell row, piece by piece.
    ``only`` = (direction, piece) restricts to the pieces that meet one changed cell."""
    for k, k2, piece in ctx.compatible(eg, ig):
        if only is not None and (k if only[0] == ir.EGRESS else k2) != only[1]:
            continue
        key = (eg.id, o, q, k, ig.id, o2, q2, k2)
        if key in seen:
            continue
        seen.add(key)
        e = ctx.cell(eg, o, q, k)
        i = ctx.cell(ig, o2, q2, k2)
        if (e[0].allowed and i[0].allowed) == (e[1].allowed and i[1].allowed):
            continue
        before, after = decision(e[0], i[0]), decision(e[1], i[1])
        for srcs, dsts in _split_special(ctx, xs, ys):
            yield Row(tuple(srcs), tuple(dsts), piece, before, after)


def _from_egress(ctx: _Context, seen: set, g: Group, o: tuple, q: tuple, k: int) -> Iterator[Row]:
    xs = g.owner_members[o]
    for (hid, o2), ys in ctx.peer_index(g)[q].items():
        h = ctx.ready(ctx.groups[hid])
        by_q2: dict[tuple, list[int]] = defaultdict(list)
        for x in xs:
            by_q2[ctx.peer_sig(h, x)].append(x)
        for q2, xs2 in by_q2.items():
            yield from _cross(ctx, seen, g, o, q, h, o2, q2, xs2, ys, (ir.EGRESS, k))


def _from_ingress(ctx: _Context, seen: set, h: Group, o2: tuple, q2: tuple, k2: int) -> Iterator[Row]:
    ys = h.owner_members[o2]
    for (gid, o), xs in ctx.peer_index(h)[q2].items():
        g = ctx.ready(ctx.groups[gid])
        by_q: dict[tuple, list[int]] = defaultdict(list)
        for y in ys:
            by_q[ctx.peer_sig(g, y)].append(y)
        for q, ys2 in by_q.items():
            yield from _cross(ctx, seen, g, o, q, h, o2, q2, xs, ys2, (ir.INGRESS, k2))


def _star_view(ctx: _Context, side: int, node: str | None) -> View:
    star = ctx.index[side].star.get(node) if node is not None else None
    return view(ctx.programs[side], Owner("hep", star, node) if star else Owner("none"), ir.INGRESS)


def _special_rows(ctx: _Context) -> Iterator[Row]:
    """Workload -> own host and host -> own workload pairs, evaluated pair by pair."""
    felix = [p.felix.default_endpoint_to_host_action for p in ctx.programs]
    n = len(ctx.subjects)
    sources = [x for x in range(n) if ctx.may_be_special(x, True)]
    dests = [y for y in range(n) if ctx.may_be_special(y, False)]
    for y in dests:
        stars = (_star_view(ctx, 0, ctx.own_node[0][y]), _star_view(ctx, 1, ctx.own_node[1][y]))
        star = ctx.groups[ctx.group(ir.INGRESS, stars)]
        ig = ctx.groups[ctx.group_of[ir.INGRESS][y]]
        for x in sources:
            applies = ctx.special(x, y)
            if not any(applies):
                continue
            eg = ctx.groups[ctx.group_of[ir.EGRESS][x]]
            if all(applies) and _unchanged_special(ctx, x, y, eg, star, felix):
                continue
            yield from _pair_rows(ctx, x, y, eg, ig, star)


def _unchanged_special(ctx: _Context, x: int, y: int, eg: Group, star: Group, felix: list[str]) -> bool:
    """A pair that is special in both trees, the same way, with nothing it depends on changed."""
    host_to_wep = [ctx.host_node[s][x] is not None and ctx.host_node[s][x] == ctx.wep_node[s][y] for s in (0, 1)]
    if host_to_wep[0] and host_to_wep[1]:
        return True  # allowed in both, whatever the policy says
    if host_to_wep[0] or host_to_wep[1]:
        return False
    if felix[0] != felix[1]:
        return False
    if felix[0] == "Drop":
        return True  # denied in both
    return not eg.dirty and (felix[0] == "Accept" or not star.dirty)


def _pair_rows(ctx: _Context, x: int, y: int, eg: Group, ig: Group, star: Group) -> Iterator[Row]:
    progs = []
    sx, sy = ctx.subjects[x], ctx.subjects[y]
    for side in (0, 1):
        owners = [(ctx.owners[side][x], ir.EGRESS), (ctx.owners[side][y], ir.INGRESS)]
        node = ctx.own_node[side][y]
        star_ep = ctx.index[side].star.get(node) if node is not None else None
        if star_ep is not None:
            owners.append((Owner("hep", star_ep, node), ir.INGRESS))
        host_ips: dict[str, list[ir.IPAddr]] = {}
        for s in (sx, sy):
            hn = ctx.index[side].host_node.get(s.ips[side])
            if hn is not None:
                host_ips.setdefault(hn, []).append(s.ips[side])
        progs.append(
            mini_program(
                ctx.programs[side],
                owners,
                [(eg.views[side], ir.EGRESS), (ig.views[side], ir.INGRESS), (star.views[side], ir.INGRESS)],
                [(s.ips[side], s.props[side]) for s in (sx, sy)],
                {k: tuple(v) for k, v in host_ips.items()},
            )
        )
    for piece, _ in refine(eg.pieces, ig.pieces, star.pieces):
        v = [evaluate(progs[s], probe_flow(piece, sx.ips[s], sy.ips[s])) for s in (0, 1)]
        if v[0].allowed != v[1].allowed:
            yield Row((x,), (y,), piece, decision(v[0].egress, v[0].ingress), decision(v[1].egress, v[1].ingress))


def diff_family(programs: tuple[ir.Program, ir.Program], family: int) -> FamilyDiff:
    """Every verdict change of one address family, as rows over subject classes."""
    ctx = _Context(programs, family)
    seen: set = set()
    rows: list[Row] = []
    for g in list(ctx.groups):
        if not g.dirty or g.trivial:
            continue
        ctx.ready(g)
        for o, q, k in g.changed_cells(ctx.subjects, ctx.owners):
            if g.direction == ir.EGRESS:
                rows.extend(_from_egress(ctx, seen, g, o, q, k))
            else:
                rows.extend(_from_ingress(ctx, seen, g, o, q, k))
    rows.extend(_special_rows(ctx))
    stats = {
        "subjects": len(ctx.subjects),
        "address_classes": len(ctx.aclass_rep),
        "groups": len(ctx.groups),
        "dirty_groups": sum(1 for g in ctx.groups if g.dirty and not g.trivial),
        "evaluations": sum(g.evaluations for g in ctx.groups),
    }
    return FamilyDiff(family, ctx.subjects, rows, stats)
