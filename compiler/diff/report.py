"""Rows over subject classes -> groups a person can read.

A :class:`ChangeGroup` says: every flow from any of these sources to any of these destinations,
for these services, went from ``before`` to ``after``. It is built in steps, each of which keeps
that statement exact (a group is always a full rectangle sources x destinations x services):

1. rows are split by **bucket** (a namespace, host endpoints, nodes, external addresses), so a
   group never mixes namespaces on one side;
2. rows with the same sources, destinations and decisions are merged over their pieces into one
   :class:`Services` (port ranges coalesced), and the two families merged when the same
   endpoints changed the same way in both;
3. groups that differ only in their sources are merged (same destinations, services and
   decisions), then likewise for destinations.

Groups are sorted: newly allowed first (the ones a reviewer worries about), then newly denied,
each by namespace pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from compiler.diff.decision import Decision
from compiler.diff.semantic import FamilyDiff
from compiler.diff.services import (
    ICMP_PROTOCOLS,
    PORT_FULL,
    UNIVERSE,
    Piece,
    protocol_name,
    ranges_text,
)
from compiler.diff.subjects import EXTERNAL, HOST_ENDPOINT, NODE, WORKLOAD, Subject
from compiler.frontend.model import PORT_PROTOCOLS

__all__ = ["ChangeGroup", "ForwardGroup", "Services", "Side", "forward_groups", "group_rows"]

_IMPLICIT = ("projectcalico.org/", "pcns.", "pcsa.")


class Services:
    """A union of pieces per family, normalised: fully covered protocols as one set, port
    protocols as coalesced (source range, destination ranges), ICMP as (types, codes) boxes."""

    def __init__(self) -> None:
        self._pieces: dict[int, list[Piece]] = defaultdict(list)

    def add(self, family: int, piece: Piece) -> None:
        self._pieces[family].append(piece)

    def update(self, other: Services) -> None:
        for fam, pieces in other._pieces.items():
            self._pieces[fam].extend(pieces)

    @staticmethod
    def _normal(pieces: list[Piece]) -> tuple:
        full: set[int] = set()
        ports: dict[tuple[int, tuple[int, int]], list[tuple[int, int]]] = defaultdict(list)
        icmp: dict[int, dict[frozenset[int], set[int]]] = defaultdict(lambda: defaultdict(set))
        for pc in pieces:
            p = pc.single
            if p is None:
                full |= pc.protocols
            elif p in PORT_PROTOCOLS:
                ports[(p, pc.src_ports or PORT_FULL)].append(pc.dst_ports or PORT_FULL)
            elif p in ICMP_PROTOCOLS:
                icmp[p][pc.icmp_codes or frozenset(range(256))].update(pc.icmp_types or range(256))
            else:
                full.add(p)
        port_out = []
        for (p, src), dsts in sorted(ports.items()):
            merged: list[list[int]] = []
            for lo, hi in sorted(dsts):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            if src == PORT_FULL and merged == [list(PORT_FULL)]:
                full.add(p)
            else:
                port_out.append((p, src, tuple(tuple(m) for m in merged)))
        icmp_out = []
        for p, by_codes in sorted(icmp.items()):
            boxes = sorted(
                (tuple(sorted(types)), tuple(sorted(codes))) for codes, types in by_codes.items()
            )
            if len(boxes) == 1 and len(boxes[0][0]) == 256 and len(boxes[0][1]) == 256:
                full.add(p)
            else:
                icmp_out.append((p, tuple(boxes)))
        return (frozenset(full), tuple(port_out), tuple(icmp_out))

    def key(self) -> tuple:
        return tuple((fam, self._normal(p)) for fam, p in sorted(self._pieces.items()))

    @staticmethod
    def _text(normal: tuple) -> str:
        full, ports, icmp = normal
        partial = {p for p, _, _ in ports} | {p for p, _ in icmp}
        if len(full) > 128:
            # Mostly everything: say what is *not* covered.
            missing: list[str] = []
            for p in sorted(UNIVERSE - full):
                if p not in partial:
                    missing.append(protocol_name(p))
            for p, src, dsts in ports:
                holes = _holes(dsts)
                text = f"{protocol_name(p)} " + ", ".join(
                    str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in holes
                )
                missing.append(
                    text
                    if src == PORT_FULL
                    else f"{protocol_name(p)} (source ports outside {src[0]}-{src[1]})"
                )
            for p, _ in icmp:
                missing.append(f"{protocol_name(p)} (some types)")
            return "any protocol" + (" except " + "; ".join(missing) if missing else "")
        parts: list[str] = []
        for p, src, dsts in ports:
            text = f"{protocol_name(p)} " + ", ".join(
                str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in dsts
            )
            if src != PORT_FULL:
                text += f" (source ports {src[0]}-{src[1]})"
            parts.append(text)
        for p, boxes in icmp:
            for types, codes in boxes:
                text = f"{protocol_name(p)} type{'s' * (len(types) > 1)} {ranges_text(types)}"
                if len(codes) != 256:
                    text += f" code{'s' * (len(codes) > 1)} {ranges_text(codes)}"
                parts.append(text)
        what = {True: "port", False: "packet"}
        parts.extend(
            f"{protocol_name(p)} (any {'type' if p in ICMP_PROTOCOLS else what[p in PORT_PROTOCOLS]})"
            for p in sorted(full)
        )
        return "; ".join(parts)

    def text(self) -> str:
        normals = {fam: self._normal(p) for fam, p in sorted(self._pieces.items())}
        if len(normals) == 2 and normals[4] == normals[6]:
            return f"{self._text(normals[4])} (IPv4 and IPv6)"
        return " | ".join(f"IPv{fam}: {self._text(n)}" for fam, n in normals.items())

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for fam, pieces in sorted(self._pieces.items()):
            full, ports, icmp = self._normal(pieces)
            out[f"ipv{fam}"] = {
                "protocols": [protocol_name(p) for p in sorted(full)]
                if full != UNIVERSE
                else ["any"],
                "ports": [
                    {
                        "protocol": protocol_name(p),
                        "source_ports": list(src),
                        "ports": [list(d) for d in dsts],
                    }
                    for p, src, dsts in ports
                ],
                "icmp": [
                    {"protocol": protocol_name(p), "types": ranges_text(t), "codes": ranges_text(c)}
                    for p, boxes in icmp
                    for t, c in boxes
                ],
            }
        return out

    def families(self) -> tuple[int, ...]:
        return tuple(sorted(self._pieces))

    def covers(
        self,
        family: int,
        protocol: int,
        port: int | None = None,
        src_port: int = 1,
        icmp: tuple[int, int] | None = None,
    ) -> bool:
        """Whether a flow of this family, protocol and ports (or ICMP type and code) is in."""
        for pc in self._pieces.get(family, ()):
            if protocol not in pc.protocols:
                continue
            if pc.dst_ports is not None and not (
                port is not None and pc.dst_ports[0] <= port <= pc.dst_ports[1]
            ):
                continue
            if pc.src_ports is not None and not pc.src_ports[0] <= src_port <= pc.src_ports[1]:
                continue
            if pc.icmp_types is not None and (icmp is None or icmp[0] not in pc.icmp_types):
                continue
            if pc.icmp_codes is not None and (icmp is None or icmp[1] not in pc.icmp_codes):
                continue
            return True
        return False


def _holes(dsts: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """The ports of 1-65535 that ``dsts`` (sorted, disjoint) leave out."""
    out, nxt = [], PORT_FULL[0]
    for lo, hi in dsts:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= PORT_FULL[1]:
        out.append((nxt, PORT_FULL[1]))
    return out


@dataclass(frozen=True)
class Side:
    """One end of a group: subjects of one bucket."""

    bucket: str  # namespace, "(host endpoints)", "(nodes)", "(external)"
    kind: str
    names: tuple[str, ...]  # endpoint ids, node names, or external class labels
    labels: tuple[
        tuple[str, str], ...
    ] = ()  # labels all the endpoints share (implicit ones left out)
    cidrs: tuple[str, ...] = ()  # externals: every CIDR the group stands for

    def text(self, limit: int = 6) -> str:
        if self.kind == WORKLOAD:
            short = [n.split("/", 1)[-1] for n in self.names]
            head = f"{self.bucket}: "
            if self.labels:
                head += "{" + ", ".join(f"{k}={v}" for k, v in self.labels) + "} "
            head += f"{len(short)} pod{'s' * (len(short) != 1)}"
        else:
            short = list(self.names)
            kind = {HOST_ENDPOINT: "host endpoint", NODE: "node", EXTERNAL: "address class"}[
                self.kind
            ]
            head = f"{len(short)} {kind}{'es' if kind.endswith('s') and len(short) != 1 else 's' * (len(short) != 1)}"
        shown = ", ".join(short[:limit]) + (
            f", … (+{len(short) - limit} more)" if len(short) > limit else ""
        )
        return f"{head}: {shown}"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "bucket": self.bucket,
            "kind": self.kind,
            "names": list(self.names),
        }
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.cidrs:
            out["cidrs"] = list(self.cidrs)
        return out


@dataclass(frozen=True)
class ChangeGroup:
    sources: Side
    destinations: Side
    services: Services
    before: Decision
    after: Decision

    @property
    def now_allowed(self) -> bool:
        return self.after.allowed

    def sort_key(self) -> tuple:
        return (
            not self.now_allowed,
            self.sources.bucket,
            self.destinations.bucket,
            self.sources.names,
            self.destinations.names,
            self.services.text(),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "change": "allowed" if self.now_allowed else "denied",
            "from": self.sources.as_dict(),
            "to": self.destinations.as_dict(),
            "services": self.services.as_dict(),
            "services_text": self.services.text(),
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
        }


def _bucket(s: Subject) -> str:
    if s.kind == WORKLOAD:
        return s.namespace or "(no namespace)"
    return {HOST_ENDPOINT: "(host endpoints)", NODE: "(nodes)", EXTERNAL: "(external)"}[s.kind]


def _side(bucket: str, members: Iterable[Subject]) -> Side:
    subs = sorted({s.name: s for s in members}.values(), key=lambda s: s.name)
    kind = subs[0].kind
    labels: tuple[tuple[str, str], ...] = ()
    if kind in (WORKLOAD, HOST_ENDPOINT):
        common = set(subs[0].labels)
        for s in subs[1:]:
            common &= set(s.labels)
        labels = tuple(sorted((k, v) for k, v in common if not k.startswith(_IMPLICIT)))
    cidrs = tuple(str(c) for s in subs for c in s.cidrs)
    return Side(bucket, kind, tuple(s.name for s in subs), labels, cidrs)


def group_rows(families: Iterable[FamilyDiff]) -> list[ChangeGroup]:
    # 1 + 2: split by bucket, merge pieces (and families) of identical rectangles.
    cells: dict[tuple, tuple[Services, dict[str, Subject], dict[str, Subject]]] = {}
    for fd in families:
        for row in fd.rows:
            srcs: dict[str, list[Subject]] = defaultdict(list)
            dsts: dict[str, list[Subject]] = defaultdict(list)
            for i in row.sources:
                srcs[_bucket(fd.subjects[i])].append(fd.subjects[i])
            for i in row.destinations:
                dsts[_bucket(fd.subjects[i])].append(fd.subjects[i])
            for bs, xs in srcs.items():
                for bd, ys in dsts.items():
                    key = (
                        bs,
                        bd,
                        tuple(sorted({x.name for x in xs})),
                        tuple(sorted({y.name for y in ys})),
                        row.before,
                        row.after,
                    )
                    if key not in cells:
                        cells[key] = (Services(), {}, {})
                    services, xmap, ymap = cells[key]
                    services.add(fd.family, row.piece)
                    xmap.update((x.name, x) for x in xs)
                    ymap.update((y.name, y) for y in ys)
    # 3: merge sources, then destinations, of otherwise identical groups.
    merged: dict[tuple, tuple[Services, dict[str, Subject], dict[str, Subject]]] = {}
    for (bs, bd, _, ynames, before, after), (services, xmap, ymap) in cells.items():
        key = (bs, bd, ynames, services.key(), before, after)
        if key in merged:
            merged[key][1].update(xmap)
        else:
            merged[key] = (services, dict(xmap), ymap)
    final: dict[tuple, tuple[Services, dict[str, Subject], dict[str, Subject]]] = {}
    for (bs, bd, _, skey, before, after), (services, xmap, ymap) in merged.items():
        key = (bs, bd, tuple(sorted(xmap)), skey, before, after)
        if key in final:
            final[key][2].update(ymap)
        else:
            final[key] = (services, xmap, dict(ymap))
    out = [
        ChangeGroup(_side(bs, xmap.values()), _side(bd, ymap.values()), services, before, after)
        for (bs, bd, _, _, before, after), (services, xmap, ymap) in final.items()
    ]
    return sorted(out, key=ChangeGroup.sort_key)


@dataclass(frozen=True)
class ForwardGroup:
    """A group of flows forwarded through host endpoint ``via`` whose verdict changed there
    only (``forward.py``): their ordinary verdict allows in both trees."""

    via: str
    group: ChangeGroup

    def as_dict(self) -> dict[str, object]:
        return {"via": self.via, **self.group.as_dict()}


def forward_groups(families: Iterable[FamilyDiff]) -> list[ForwardGroup]:
    """The forwarded rows of every family, grouped per host endpoint like the ordinary ones."""
    families = list(families)
    vias = sorted({via for fd in families for via in fd.forward})
    out: list[ForwardGroup] = []
    for via in vias:
        per = [
            FamilyDiff(fd.family, fd.subjects, fd.forward[via])
            for fd in families
            if via in fd.forward
        ]
        out += [ForwardGroup(via, g) for g in group_rows(per)]
    return out
