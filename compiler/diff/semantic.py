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
from compiler.diff.forward import forward_rows
from compiler.diff.mini import mini_program, probe_flow
from compiler.diff.rules import Shared
from compiler.diff.services import Piece, refine
from compiler.diff.subjects import Owner, ProgramIndex, Subject, subjects
from compiler.diff.tables import Group
from compiler.diff.views import View, named_ports, view
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import DirectionVerdict

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
    # host endpoint id -> forwarded flows whose verdict changed through it only (forward.py)
    forward: dict[str, list[Row]] = field(default_factory=dict)


class _Context:
    """Subjects of one family with their owners, views and groups."""

    def __init__(self, programs: tuple[ir.Program, ir.Program], family: int) -> None:
        self.programs = programs
        self.family = family
        self.subjects = subjects(programs, family)
        n = len(self.subjects)
        self.index = tuple(ProgramIndex(p) for p in programs)
        self.owners: list[list[Owner]] = [
            [self.index[side].owner(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self.shared = Shared(programs, self.subjects, self.owners, named_ports(programs))
        self.groups: list[Group] = []
        self._group_ids: dict[tuple, int] = {}
        self.group_of: dict[str, list[int]] = {}
        for direction in ir.DIRECTIONS:
            ids = []
            for i in range(n):
                views = (
                    view(programs[0], self.owners[0][i], direction),
                    view(programs[1], self.owners[1][i], direction),
                )
                gid = self.group(direction, views)
                self.groups[gid].members.append(i)
                ids.append(gid)
            self.group_of[direction] = ids
        # The two exceptions to egress AND ingress need, per tree: the node a workload runs on,
        # the node an address is a host address of (workload -> own host), and the node whose
        # host_ips hold an address (host -> own workloads).
        self.wep_node = [
            [o.endpoint.node if o.kind == "wep" and o.endpoint else None for o in self.owners[side]]
            for side in (0, 1)
        ]
        self.own_node = [
            [self.index[side].own_node(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self.host_node = [
            [self.index[side].host_node.get(s.ips[side]) for s in self.subjects] for side in (0, 1)
        ]
        self._peer_index: dict[int, dict] = {}
        self._compatible: dict[tuple[int, int], list[tuple[int, int, Piece]]] = {}
        self._special_by_dst: dict[int, set[int]] | None = None

    def group(self, direction: str, views: tuple[View, View]) -> int:
        key = (direction, views)
        gid = self._group_ids.get(key)
        if gid is None:
            gid = self._group_ids[key] = len(self.groups)
            self.groups.append(Group(gid, direction, views, self.shared))
        return gid

    def peer_index(self, g: Group) -> dict[tuple, dict[tuple[int, tuple], list[int]]]:
        """For a group of one direction: peer sig -> (the peer's group in the other direction,
        its owner sig there) -> subjects. Lets a changed cell find its peers class by class."""
        got = self._peer_index.get(g.id)
        if got is None:
            other = ir.INGRESS if g.direction == ir.EGRESS else ir.EGRESS
            got = defaultdict(lambda: defaultdict(list))
            for i in range(len(self.subjects)):
                h = self.groups[self.group_of[other][i]]
                got[g.peer_sig(i)][(h.id, h.own_sig(i))].append(i)
            self._peer_index[g.id] = got
        return got

    def compatible(self, eg: Group, ig: Group) -> list[tuple[int, int, Piece]]:
        """(egress piece, ingress piece, their intersection) for every pair that meets (cached
        by the pieces themselves: many groups cut alike)."""
        key = (self.shared.pieces_id(eg.pieces), self.shared.pieces_id(ig.pieces))
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

    def special(self, x: int, y: int) -> tuple[bool, bool]:
        """Whether x -> y is workload -> own host or host -> own workload, in base and head."""
        out = []
        for s in (0, 1):
            wx, hx, wy, oy = (
                self.wep_node[s][x],
                self.host_node[s][x],
                self.wep_node[s][y],
                self.own_node[s][y],
            )
            out.append((wx is not None and wx == oy) or (hx is not None and hx == wy))
        return out[0], out[1]

    def special_sources(self) -> dict[int, set[int]]:
        """Destination -> the sources it forms a special pair with (``special``, either tree)."""
        if self._special_by_dst is None:
            self._special_by_dst = defaultdict(set)
            for x, y in _special_pairs(self):
                self._special_by_dst[y].add(x)
        return self._special_by_dst

    def may_be_special(self, i: int, as_source: bool) -> bool:
        if as_source:
            return any(self.wep_node[s][i] or self.host_node[s][i] for s in (0, 1))
        return any(self.wep_node[s][i] or self.own_node[s][i] for s in (0, 1))


def _split_special(
    ctx: _Context, xs: list[int], ys: list[int]
) -> Iterator[tuple[list[int], list[int]]]:
    """Leave out the special pairs (evaluated apart): yields (sources, destinations)."""
    sx = [x for x in xs if ctx.may_be_special(x, True)]
    if not sx:
        yield xs, ys
        return
    by_dst, xset = ctx.special_sources(), set(sx)
    none: frozenset[int] = frozenset()
    by_excluded: dict[frozenset[int], list[int]] = defaultdict(list)
    for y in ys:
        theirs = by_dst.get(y)
        by_excluded[frozenset(theirs & xset) if theirs else none].append(y)
    for excluded, dsts in by_excluded.items():
        srcs = [x for x in xs if x not in excluded] if excluded else xs
        if srcs:
            yield srcs, dsts


def _verdict_key(v: DirectionVerdict) -> tuple:
    d = v.decided_by
    return (v.allowed, d.reason, d.action, d.hook, d.tier, d.policy, d.rule_index, d.span)


def _regions(
    ctx: _Context, g: Group
) -> dict[tuple, tuple[list[tuple], DirectionVerdict, DirectionVerdict]]:
    """A dirty group's changed cells, gathered by (owner class, piece, before, after): the
    peer classes of one region share everything but their peer signature."""
    out: dict[tuple, tuple[list[tuple], DirectionVerdict, DirectionVerdict]] = {}
    for o, q, k in g.changed_cells():
        b, h = g.cell(o, q, k)
        key = (o, k, _verdict_key(b), _verdict_key(h))
        if key not in out:
            out[key] = ([], b, h)
        out[key][0].append(q)
    return out


def _peers(ctx: _Context, g: Group, qs: list[tuple]) -> dict[tuple[int, tuple], list[int]]:
    """Subjects whose peer signature in ``g`` is one of ``qs``, by their class in the other
    direction (group id, owner signature there)."""
    index = ctx.peer_index(g)
    out: dict[tuple[int, tuple], list[int]] = defaultdict(list)
    for q in qs:
        for key, subjects_ in index[q].items():
            out[key].extend(subjects_)
    return out


def _rows(
    ctx: _Context,
    xs: list[int],
    ys: list[int],
    piece: Piece,
    e: tuple[DirectionVerdict, DirectionVerdict],
    i: tuple[DirectionVerdict, DirectionVerdict],
) -> Iterator[Row]:
    if (e[0].allowed and i[0].allowed) == (e[1].allowed and i[1].allowed):
        return
    before, after = decision(e[0], i[0]), decision(e[1], i[1])
    for srcs, dsts in _split_special(ctx, xs, ys):
        yield Row(tuple(srcs), tuple(dsts), piece, before, after)


def _crossed(ctx: _Context, a: Group) -> Iterator[Row]:
    """A dirty group's changed cells crossed with the other direction's verdicts.

    For an ingress group: every flow whose destination's ingress changed, whatever its source's
    egress did. For an egress group: every flow whose source's egress changed and whose
    destination's ingress did not (the flows where both changed were counted from the ingress
    side, which runs first). A changed cell (owner class, peer classes, piece) is crossed with
    the groups its peers fall in on the other side (``b``), the cell's owners split by their
    peer signature there; rows are evaluated in ``b`` in one go (``prefetch``)."""
    egress = a.direction == ir.EGRESS
    plans = []
    needs: dict[int, set[tuple]] = defaultdict(set)
    for (o, k, _, _), (qs, vb, vh) in _regions(ctx, a).items():
        owners = a.owner_members[o]
        for (bid, ob), peers in _peers(ctx, a, qs).items():
            b = ctx.groups[bid].ready()
            by_q: dict[tuple, list[int]] = defaultdict(list)
            for i in owners:
                by_q[b.peer_sig(i)].append(i)
            needs[bid].update((ob, q) for q in by_q)
            plans.append((b, ob, peers, by_q, k, (vb, vh)))
    for bid, rows in needs.items():
        ctx.groups[bid].prefetch(rows)
    for b, ob, peers, by_q, k, mine in plans:
        eg, ig = (a, b) if egress else (b, a)
        for ke, ki, piece in ctx.compatible(eg, ig):
            ka, kb = (ke, ki) if egress else (ki, ke)
            if ka != k:
                continue
            for q, owners_q in by_q.items():
                if egress and (ob, q, kb) in b.changed:
                    continue  # counted from the ingress side
                theirs = b.cell(ob, q, kb)
                if egress:
                    yield from _rows(ctx, owners_q, peers, piece, mine, theirs)
                else:
                    yield from _rows(ctx, peers, owners_q, piece, theirs, mine)


def _star_view(ctx: _Context, side: int, node: str | None) -> View:
    star = ctx.index[side].star.get(node) if node is not None else None
    return view(ctx.programs[side], Owner("hep", star, node) if star else Owner("none"), ir.INGRESS)


def _special_pairs(ctx: _Context) -> list[tuple[int, int]]:
    """Every (x, y) that is workload -> own host or host -> own workload in either tree."""
    by_node: list[dict[str, tuple[list[int], list[int], list[int]]]] = [{}, {}]
    for s in (0, 1):
        for i in range(len(ctx.subjects)):
            for slot, node in enumerate(
                (ctx.wep_node[s][i], ctx.own_node[s][i], ctx.host_node[s][i])
            ):
                if node is not None:
                    by_node[s].setdefault(node, ([], [], []))[slot].append(i)
    pairs: set[tuple[int, int]] = set()
    for s in (0, 1):
        for weps, own_hosts, hosts in by_node[s].values():
            pairs.update((x, y) for x in weps for y in own_hosts)
            pairs.update((x, y) for x in hosts for y in weps)
    return sorted(pairs)


def _special_rows(ctx: _Context) -> Iterator[Row]:
    """Workload -> own host and host -> own workload pairs, evaluated pair by pair."""
    felix = [p.felix.default_endpoint_to_host_action for p in ctx.programs]
    stars: dict[int, Group] = {}
    for x, y in _special_pairs(ctx):
        if y not in stars:
            views = (_star_view(ctx, 0, ctx.own_node[0][y]), _star_view(ctx, 1, ctx.own_node[1][y]))
            stars[y] = ctx.groups[ctx.group(ir.INGRESS, views)]
        star = stars[y]
        ig = ctx.groups[ctx.group_of[ir.INGRESS][y]]
        eg = ctx.groups[ctx.group_of[ir.EGRESS][x]]
        if all(ctx.special(x, y)) and _unchanged_special(ctx, x, y, eg, star, felix):
            continue
        yield from _pair_rows(ctx, x, y, eg, ig, star)


def _unchanged_special(
    ctx: _Context, x: int, y: int, eg: Group, star: Group, felix: list[str]
) -> bool:
    """A pair that is special in both trees, the same way, with nothing it depends on changed."""
    host_to_wep = [
        ctx.host_node[s][x] is not None and ctx.host_node[s][x] == ctx.wep_node[s][y]
        for s in (0, 1)
    ]
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
                [
                    (eg.views[side], ir.EGRESS),
                    (ig.views[side], ir.INGRESS),
                    (star.views[side], ir.INGRESS),
                ],
                [(s.ips[side], s.props[side]) for s in (sx, sy)],
                {k: tuple(v) for k, v in host_ips.items()},
            )
        )
    for piece, _ in refine(eg.pieces, ig.pieces, star.pieces):
        v = [evaluate(progs[s], probe_flow(piece, sx.ips[s], sy.ips[s])) for s in (0, 1)]
        if v[0].allowed != v[1].allowed:
            yield Row(
                (x,),
                (y,),
                piece,
                decision(v[0].egress, v[0].ingress),
                decision(v[1].egress, v[1].ingress),
            )


def diff_family(programs: tuple[ir.Program, ir.Program], family: int) -> FamilyDiff:
    """Every verdict change of one address family, as rows over subject classes."""
    ctx = _Context(programs, family)
    rows: list[Row] = []
    dirty = [g for g in list(ctx.groups) if g.dirty and not g.trivial]
    for g in dirty:  # ingress first: the egress pass skips what it already counted
        if g.direction == ir.INGRESS:
            rows.extend(_crossed(ctx, g.ready()))
    for g in dirty:  # (every dirty ingress group's changed cells are known by now)
        if g.direction == ir.EGRESS:
            rows.extend(_crossed(ctx, g.ready()))
    rows.extend(_special_rows(ctx))
    forward = forward_rows(ctx)
    stats = {
        "subjects": len(ctx.subjects),
        "address_classes": len(ctx.shared.aclass_rep),
        "groups": len(ctx.groups),
        "dirty_groups": len(dirty),
        "evaluations": sum(g.evaluations for g in ctx.groups),
        "forward_rows": sum(len(r) for r in forward.values()),
    }
    return FamilyDiff(family, ctx.subjects, rows, stats, forward)
