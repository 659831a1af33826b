"""Forwarded flows: what a change does to traffic routed *through* a host endpoint.

The evaluator decides a flow forwarded through host endpoint ``H`` (``evaluate(..., via=H)``) as
the flow's ordinary verdict, then — where that direction allowed — ``H``'s ``applyOnForward``
tiers (the ``forward`` hook): its forward **egress** when the source is a workload on ``H``'s
node (the flow leaves through ``H``), its forward **ingress** otherwise (it enters through ``H``).
Two kinds of pairs never reach the forward hook: a node's host address to a workload on that
node (never policed) and a flow *entering* through ``H`` from a workload to a host address of
that workload's own node (``defaultEndpointToHostAction`` decides). So for every other pair

    forwarded(x, y, piece, H) = ordinary(x, y, piece) AND forward_H(dir(x), x, y, piece)

and the forwarded section lists what the ordinary section cannot show: every forwarded flow
whose verdict changed **while its ordinary verdict did not** — ordinary allowed in both trees
(were it denied in both, so would the forwarded flow be), forward outcome different. A flow
whose ordinary verdict changed is in the ordinary section, whatever ``H`` does with it.

Exact by classes, like the rest (``semantic.py``): per host endpoint present in both trees with
forward tiers in either, sources are cut by (direction in each tree, what the forward rules'
source sides see), destinations by what their destination sides see, services by what they
mention; the evaluator's own ``forward_step`` decides each (source class, destination class,
piece) cell of the forward hook in both trees. Each cell whose outcome changed is crossed with
the ordinary egress and ingress tables of the groups its members fall in (``tables.Group``), and
every part allowed in both trees becomes a row. Special pairs (the two kinds above, in either
tree) are evaluated pair by pair on the whole programs, unless neither tree consults ``H``.

Cost: nothing without host endpoints with forward tiers. Otherwise it is that of an ordinary
change touching the same flows — every ordinary verdict under a changed forward cell must be
known — once per host endpoint whose forward outcome changed. What does not depend on the host
endpoint is computed once per family and shared (:class:`_Ordinary`: classes, peer signatures,
refined pieces, allowed-in-both bits of table cells, whole-program verdicts of special pairs);
the crossing itself (rows per host endpoint) is not. Benchmark tree of the package docstring
plus one ``*`` host endpoint per node, a new applyOnForward deny of TCP 5432 in both forward
directions through all 10 endpoints (180,674 rows, 25,811 groups): 381 s CPU before that
sharing, 205-226 s after (single runs on a loaded 2-core VM; 5 s without the forwarded
section). Still far from the ordinary diff: the per-endpoint crossing dominates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from compiler.diff.decision import Decision, decision
from compiler.diff.mini import probe_flow
from compiler.diff.rules import Slice
from compiler.diff.services import Mentions, Piece, refine
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate, forward_step
from compiler.ir.flow import Step, Verdict

if TYPE_CHECKING:
    from compiler.diff.semantic import Row, _Context
    from compiler.diff.tables import Group

__all__ = ["forward_rows"]

_NO_POLICY = Step("no-policy", ir.ALLOW, None, ir.FORWARD)


def _host_endpoints(ctx: _Context) -> list[tuple[str, ir.Endpoint, ir.Endpoint]]:
    """Host endpoints present in both trees with forward tiers in at least one."""
    by_id = [{e.id: e for e in p.endpoints if e.is_host} for p in ctx.programs]
    out = []
    for hid in sorted(by_id[0].keys() & by_id[1].keys()):
        eps = (by_id[0][hid], by_id[1][hid])
        if any(ep.plan(d, ir.FORWARD) for ep in eps for d in ir.DIRECTIONS):
            out.append((hid, *eps))
    return out


def _forward_rules(program: ir.Program, ep: ir.Endpoint) -> Iterator[tuple[str, ir.Rule]]:
    for d in ir.DIRECTIONS:
        for tp in ep.plan(d, ir.FORWARD):
            for pid in tp.policies:
                for r in program.policies[pid].rules(d):
                    yield d, r


def _fingerprint(program: ir.Program, ep: ir.Endpoint) -> tuple:
    return tuple(
        tuple(
            (
                tp.default_action,
                tuple(
                    tuple((r.action, r.match) for r in program.policies[pid].rules(d))
                    for pid in tp.policies
                ),
            )
            for tp in ep.plan(d, ir.FORWARD)
        )
        for d in ir.DIRECTIONS
    )


class _Hub:
    """One host endpoint's forward hook in both trees, over the family's subjects."""

    def __init__(self, ctx: _Context, hid: str, eps: tuple[ir.Endpoint, ir.Endpoint]) -> None:
        self.ctx, self.id, self.eps = ctx, hid, eps
        src, dst, mentions = Slice(), Slice(), Mentions()
        for side in (0, 1):
            for _, r in _forward_rules(ctx.programs[side], eps[side]):
                src |= Slice.of(r.match.src)
                dst |= Slice.of(r.match.dst)
                mentions.add_match(r.match, ctx.shared.named)  # type: ignore[arg-type]
        self.src_mask, self.dst_mask = ctx.shared.mask(src), ctx.shared.mask(dst)
        self.pieces = mentions.pieces()
        self.same_rules = _fingerprint(ctx.programs[0], eps[0]) == _fingerprint(
            ctx.programs[1], eps[1]
        )

    def direction(self, side: int, x: int) -> str:
        """Leaving through the endpoint (forward egress) or entering (forward ingress)."""
        leaving = self.ctx.wep_node[side][x] == self.eps[side].node
        return ir.EGRESS if leaving else ir.INGRESS

    def src_key(self, x: int) -> tuple:
        bits, m = self.ctx.shared.bits, self.src_mask
        return (self.direction(0, x), self.direction(1, x), bits[0][x] & m, bits[1][x] & m)

    def dst_key(self, y: int) -> tuple:
        bits, m = self.ctx.shared.bits, self.dst_mask
        return (bits[0][y] & m, bits[1][y] & m)

    def unchanged(self) -> bool:
        """Same forward rules, and no subject looks different to them or changes direction."""
        return (
            self.same_rules
            and all(
                k[0] == k[1] and k[2] == k[3]
                for k in map(self.src_key, range(len(self.ctx.subjects)))
            )
            and all(k[0] == k[1] for k in map(self.dst_key, range(len(self.ctx.subjects))))
        )

    def outcome(self, side: int, x: int, y: int, piece: Piece) -> Decision:
        """The forward hook's decision in one tree for x -> y within ``piece``."""
        ctx = self.ctx
        d = self.direction(side, x)
        flow = probe_flow(piece, ctx.subjects[x].ips[side], ctx.subjects[y].ips[side])
        step = forward_step(ctx.programs[side], self.eps[side], d, flow)
        step = _NO_POLICY if step is None else replace(step, endpoint=None)
        return Decision(step.action == ir.ALLOW, ((d, step),))


def _consulted(ctx: _Context, hub: _Hub, side: int, x: int, y: int) -> bool:
    """Whether the evaluator reaches the forward hook for x -> y via the hub in that tree."""
    wx, hx = ctx.wep_node[side][x], ctx.host_node[side][x]
    wy, oy = ctx.wep_node[side][y], ctx.own_node[side][y]
    if hx is not None and hx == wy:
        return False  # host -> own workload: never policed
    if wx is not None and wx == oy:
        return hub.direction(side, x) == ir.EGRESS  # workload -> own host
    return True


class _Ordinary:
    """The ordinary side of forwarded cells, shared by every host endpoint of a family: each
    subject's egress and ingress class, peer signatures, refined pieces and the allowed-in-both
    bit of every table cell read (the hubs' changed cells mostly cover the same flows)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self._classes: dict[str, list[tuple[int, tuple]]] = {}
        self._sigs: dict[int, list[tuple]] = {}
        self._ok: dict[tuple, bool] = {}
        self._refined: dict[tuple, list[tuple[Piece, tuple[int, ...]]]] = {}
        self._pairs: list[tuple[int, int]] | None = None
        self._plain: dict[tuple[int, int, Piece], tuple[Verdict, Verdict]] = {}

    def classes(self, direction: str) -> list[tuple[int, tuple]]:
        """Subject -> (its group in ``direction``, its owner signature there)."""
        got = self._classes.get(direction)
        if got is None:
            ctx = self.ctx
            got = self._classes[direction] = [
                (gid, ctx.groups[gid].own_sig(i)) for i, gid in enumerate(ctx.group_of[direction])
            ]
        return got

    def special_pairs(self) -> list[tuple[int, int]]:
        from compiler.diff.semantic import _special_pairs

        if self._pairs is None:
            self._pairs = _special_pairs(self.ctx)
        return self._pairs

    def plain(self, x: int, y: int, piece: Piece) -> tuple[Verdict, Verdict]:
        """The ordinary verdict of x -> y within ``piece`` in both trees (whole programs)."""
        key = (x, y, piece)
        got = self._plain.get(key)
        if got is None:
            ctx, sx, sy = self.ctx, self.ctx.subjects[x], self.ctx.subjects[y]
            v = [evaluate(ctx.programs[s], probe_flow(piece, sx.ips[s], sy.ips[s])) for s in (0, 1)]
            got = self._plain[key] = (v[0], v[1])
        return got

    def peer_sigs(self, g: Group) -> list[tuple]:
        got = self._sigs.get(g.id)
        if got is None:
            got = self._sigs[g.id] = [g.peer_sig(i) for i in range(len(self.ctx.subjects))]
        return got

    def parts(self, piece: Piece, eg: Group, ig: Group) -> list[tuple[Piece, tuple[int, ...]]]:
        shared = self.ctx.shared
        key = (piece, shared.pieces_id(eg.pieces), shared.pieces_id(ig.pieces))
        got = self._refined.get(key)
        if got is None:
            got = self._refined[key] = refine((piece,), eg.pieces, ig.pieces)
        return got

    def allowed(self, g: Group, o: tuple, q: tuple, k: int) -> bool:
        """Whether the table cell allows in both trees."""
        key = (g.id, o, q, k)
        got = self._ok.get(key)
        if got is None:
            b, h = g.cell(o, q, k)
            got = self._ok[key] = b.allowed and h.allowed
        return got


def _class_rows(ctx: _Context, hub: _Hub, ordinary: _Ordinary) -> Iterator[Row]:
    from compiler.diff.semantic import Row, _split_special

    n = len(ctx.subjects)
    srcs: dict[tuple, list[int]] = defaultdict(list)
    dsts: dict[tuple, list[int]] = defaultdict(list)
    for i in range(n):
        srcs[hub.src_key(i)].append(i)
        dsts[hub.dst_key(i)].append(i)
    cells = []
    for xs in srcs.values():
        for ys in dsts.values():
            for piece in hub.pieces:
                b, h = (hub.outcome(s, xs[0], ys[0], piece) for s in (0, 1))
                if b.allowed != h.allowed:
                    cells.append((xs, ys, piece, b, h))
    if not cells:
        return
    eclass, iclass = ordinary.classes(ir.EGRESS), ordinary.classes(ir.INGRESS)
    # The ordinary verdicts of the cells' members, by class: plan, prefetch, then read.
    plans = []
    needs: dict[int, set[tuple]] = defaultdict(set)
    needed_pieces: dict[int, set[int]] = defaultdict(set)  # only those meeting a cell's piece
    for xs0, ys0, piece, b, h in cells:
        for xs, ys in _split_special(ctx, xs0, ys0):
            by_e: dict[tuple, list[int]] = defaultdict(list)
            by_i: dict[tuple, list[int]] = defaultdict(list)
            for x in xs:
                by_e[eclass[x]].append(x)
            for y in ys:
                by_i[iclass[y]].append(y)
            for (eid, o), ex in by_e.items():
                eg = ctx.groups[eid].ready()
                esig = ordinary.peer_sigs(eg)
                xqs: dict[int, dict[tuple, list[int]]] = {}  # by ingress group: its peer sigs
                for (iid, o2), iy in by_i.items():
                    ig = ctx.groups[iid].ready()
                    yq: dict[tuple, list[int]] = defaultdict(list)
                    for y in iy:
                        yq[esig[y]].append(y)
                    xq = xqs.get(iid)
                    if xq is None:
                        isig = ordinary.peer_sigs(ig)
                        xq = xqs[iid] = defaultdict(list)
                        for x in ex:
                            xq[isig[x]].append(x)
                    parts = ordinary.parts(piece, eg, ig)
                    needs[eid].update((o, q) for q in yq)
                    needs[iid].update((o2, q2) for q2 in xq)
                    needed_pieces[eid].update(k for _, (_, k, _) in parts)
                    needed_pieces[iid].update(k2 for _, (_, _, k2) in parts)
                    plans.append((eg, o, yq, ig, o2, xq, parts, b, h))
    for gid, rows in needs.items():
        ctx.groups[gid].prefetch(rows, needed_pieces[gid])
    allowed = ordinary.allowed
    # Rows with the same sources, piece and decisions, merged over their destinations; keys
    # are interned (hashing long source tuples, pieces and decisions again and again is slow).
    merged: dict[tuple[int, int, int, int], list[int]] = defaultdict(list)
    ids: dict[object, int] = {}
    values: list[object] = []

    def intern(v: object) -> int:
        i = ids.get(v)
        if i is None:
            i = ids[v] = len(values)
            values.append(v)
        return i

    xs_ids: dict[int, int] = {}  # id(list of sources) -> interned tuple (lists live in plans)
    for eg, o, yq, ig, o2, xq, parts, b, h in plans:
        bi, hi = intern(b), intern(h)
        for part, (_, k, k2) in parts:
            ys_ok = [y for q, ys in yq.items() if allowed(eg, o, q, k) for y in ys]
            if not ys_ok:
                continue
            pi = intern(part)
            for q2, xs in xq.items():
                if allowed(ig, o2, q2, k2):
                    xi = xs_ids.get(id(xs))
                    if xi is None:
                        xi = xs_ids[id(xs)] = intern(tuple(xs))
                    merged[(xi, pi, bi, hi)].extend(ys_ok)
    for (xi, pi, bi, hi), ys in merged.items():
        yield Row(values[xi], tuple(sorted(set(ys))), values[pi], values[bi], values[hi])  # type: ignore[arg-type]


def _special_rows(ctx: _Context, hub: _Hub, ordinary: _Ordinary) -> Iterator[Row]:
    from compiler.diff.semantic import Row, _star_view

    for x, y in ordinary.special_pairs():
        consulted = [_consulted(ctx, hub, s, x, y) for s in (0, 1)]
        if not any(consulted):
            continue
        eg: Group = ctx.groups[ctx.group_of[ir.EGRESS][x]]
        ig: Group = ctx.groups[ctx.group_of[ir.INGRESS][y]]
        views = (_star_view(ctx, 0, ctx.own_node[0][y]), _star_view(ctx, 1, ctx.own_node[1][y]))
        star = ctx.groups[ctx.group(ir.INGRESS, views)]
        # Where the forward hook is not consulted, the forwarded verdict is the ordinary one:
        # a change needs the hook's outcomes (allow where not consulted) to differ first.
        outcomes = [
            [hub.outcome(s, x, y, p) if consulted[s] else None for s in (0, 1)] for p in hub.pieces
        ]
        for piece, idx in refine(hub.pieces, eg.pieces, ig.pieces, star.pieces):
            fo = outcomes[idx[0]]
            if (fo[0] is None or fo[0].allowed) == (fo[1] is None or fo[1].allowed):
                continue
            plain = ordinary.plain(x, y, piece)
            if plain[0].allowed and plain[1].allowed:
                b, h = (fo[s] or decision(plain[s].egress, plain[s].ingress) for s in (0, 1))
                yield Row((x,), (y,), piece, b, h)


def forward_rows(ctx: _Context) -> dict[str, list[Row]]:
    """Host endpoint id -> the rows of forwarded flows whose verdict changed through it (and
    only through it: their ordinary verdict allows in both trees)."""
    out: dict[str, list[Row]] = {}
    ordinary = _Ordinary(ctx)  # (computes only what the host endpoints below ask of it)
    for hid, ep_b, ep_h in _host_endpoints(ctx):
        hub = _Hub(ctx, hid, (ep_b, ep_h))
        rows = [] if hub.unchanged() else list(_class_rows(ctx, hub, ordinary))
        rows += _special_rows(ctx, hub, ordinary)
        if rows:
            out[hid] = rows
    return out
