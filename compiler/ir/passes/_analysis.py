"""Sound reasoning about what a rule's match can and cannot accept.

Two questions, both answered conservatively (``False`` whenever a proof is not found):

* :meth:`Analysis.never_matches` — can no flow at all satisfy this match? (``fold_empty``)
* :meth:`Analysis.covers` — does every flow that satisfies ``later`` also satisfy ``earlier``?
  (``shadowed_rules``)

The address part is exact: the addresses a side can accept are computed as an interval set
(:class:`~._space.AddrSpace`) from ``nets`` ∩ every resolved positive set − ``notNets`` − every
resolved negated set, restricted to the rule's IP version. Unresolved sets are treated
symbolically (only the very same set id proves anything). Ports are handled the same way on
``[0, 65535]``; a named-port set contributes the ports of its ``(ip, protocol, port)`` triples
whose address and protocol the rule could still accept.

The evaluator (``compiler/ir/evaluate.py``) is the definition these follow; each predicate below
names the evaluator check it mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.ir.nodes import AddrSet, Match, PortMatch, Program, Rule, Side
from compiler.ir.passes._rules import side_set_ids
from compiler.ir.passes._space import (
    PORT_MAX,
    AddrSpace,
    Intervals,
    disjoint,
    minus,
    normalise,
    subset,
)

ICMP_PROTOCOLS = (1, 58)
_ALL_PORTS: Intervals = ((0, PORT_MAX),)


@dataclass(frozen=True, slots=True)
class SideFacts:
    side: Side
    addrs: AddrSpace  # every address this side can accept (exact when all sets are resolved)
    ports: Intervals  # every port value the side's port checks can accept (a superset)


@dataclass(frozen=True, slots=True)
class RuleFacts:
    rule: Rule
    src: SideFacts
    dst: SideFacts

    @property
    def match(self) -> Match:
        return self.rule.match


class Analysis:
    """Per-program caches of set contents as interval sets."""

    def __init__(self, program: Program, ctx: object = None) -> None:
        self.program = program
        self._spaces: dict[str, AddrSpace] = {}
        # Members -> AddrSpace, shared by the passes of one pipeline run through the context
        # (fold_empty and shadowed_rules see the same member sets).
        cache = getattr(ctx, "cache", None)
        self._by_members: dict[frozenset, AddrSpace] = (
            cache.setdefault("addr_spaces", {}) if isinstance(cache, dict) else {}
        )
        if len(self._by_members) > 100_000:  # a context used for many runs: stay bounded
            self._by_members.clear()
        self._named: dict[tuple, list[tuple[int, int]]] = {}
        self._ports: dict[tuple[str, int | None], list[tuple[int, list]] | None] = {}
        self._sides: dict[tuple, SideFacts] = {}
        # id(side), IP version, protocol -> facts: most lookups, without hashing the side
        # (a frozen dataclass hashes every field, networks in Python, on every call). Each entry
        # holds its side, so the id stays that side's while the entry exists.
        self._by_id: dict[tuple[int, int | None, int | None], tuple[Side, SideFacts]] = {}
        if isinstance(cache, dict):
            self._share(cache)

    def _share(self, cache: dict) -> None:
        """Take over the memos of the previous analysis of this run (``fold_empty`` then
        ``shadowed_rules``) when the sets are the same objects, which is when facts cannot differ.

        A pass that only drops rules keeps every set object and removes the sets no rule uses
        any more; facts of sides naming a removed set are dropped (a missing set is unknown)."""
        prev = cache.get("analysis")
        cache["analysis"] = (self.program.sets, self)
        if prev is None:
            return
        old_sets, old = prev
        new_sets = self.program.sets
        if old_sets is new_sets:
            removed: set[str] = set()
        else:
            if any(old_sets.get(sid) is not s for sid, s in new_sets.items()):
                return
            removed = set(old_sets) - set(new_sets)
        self._named = {k: v for k, v in old._named.items() if k[0] not in removed}
        self._ports = {k: v for k, v in old._ports.items() if k[0] not in removed}
        self._spaces = {k: v for k, v in old._spaces.items() if k not in removed}

        def keep(side: Side) -> bool:
            return not removed or removed.isdisjoint(side_set_ids(side))

        self._sides = {k: v for k, v in old._sides.items() if keep(k[0])}
        self._by_id = {k: v for k, v in old._by_id.items() if keep(v[0])}

    def set_of(self, sid: str) -> AddrSet | None:
        return self.program.sets.get(sid)

    def addr_space(self, sid: str) -> AddrSpace | None:
        """The addresses of a resolved selector set, or None when unknown."""
        s = self.set_of(sid)
        if s is None or s.is_named_port or s.members is None:
            return None
        space = self._spaces.get(sid)
        if space is None:
            space = self._by_members.get(s.members)
            if space is None:
                space = self._by_members[s.members] = AddrSpace.of(s.members)
            self._spaces[sid] = space
        return space

    def triples(self, sid: str) -> frozenset | None:
        s = self.set_of(sid)
        if s is None or not s.is_named_port:
            return None
        return s.port_members

    # -- facts ----------------------------------------------------------------------------------

    def _side(self, side: Side, match: Match) -> SideFacts:
        # Only the side, the IP version and the protocol (named ports) matter: memoise, since
        # the same sides recur across rules and policies.
        fast = (id(side), match.ip_version, match.protocol)
        hit = self._by_id.get(fast)
        if hit is not None:
            return hit[1]
        key = (side, match.ip_version, match.protocol)
        facts = self._sides.get(key)
        if facts is None:
            facts = self._sides[key] = self._side_uncached(side, match)
        self._by_id[fast] = (side, facts)
        return facts

    def _side_uncached(self, side: Side, match: Match) -> SideFacts:
        # _side_matches: nets, not_nets, sets, not_sets.
        addrs = AddrSpace.full(match.ip_version)
        if side.nets is not None:
            addrs = addrs & AddrSpace.of(side.nets)
        addrs = addrs - AddrSpace.of(side.not_nets)
        for sid in side.sets:
            space = self.addr_space(sid)
            if space is not None:
                addrs = addrs & space
        for sid in side.not_sets:
            space = self.addr_space(sid)
            if space is not None:
                addrs = addrs - space
        # _port_match: ranges, or membership of (ip, proto, port) in a named-port set.
        not_ranges = normalise(side.not_ports.ranges) if side.not_ports is not None else ()
        if side.ports is None:
            ports = _ALL_PORTS
        else:
            spans = list(side.ports.ranges)
            for sid in side.ports.named_sets:
                spans.extend(self._named_ports(sid, addrs, match))
            ports = normalise(spans)
        return SideFacts(side, addrs, minus(ports, not_ranges))

    def _named_ports(self, sid: str, addrs: AddrSpace, match: Match) -> list[tuple[int, int]]:
        """Ports of the set's triples whose address and protocol the rule can still accept."""
        key = (sid, addrs, match.protocol)
        if key not in self._named:
            by_port = self._ports_of(sid, match.protocol)
            if by_port is None:
                self._named[key] = [(0, PORT_MAX)]
            else:
                self._named[key] = [
                    (port, port)
                    for port, ips in by_port
                    if any(addrs.contains_ip(ip) for ip in ips)
                ]
        return self._named[key]

    def _ports_of(self, sid: str, protocol: int | None) -> list[tuple[int, list]] | None:
        """The set's triples with ``protocol`` (any when None) as ``(port, addresses)``, by
        port; None when the set is unknown. Made once per set and protocol: the sides naming a
        set ask with many different address spaces."""
        key = (sid, protocol)
        if key not in self._ports:
            triples = self.triples(sid)
            if triples is None:
                self._ports[key] = None
            else:
                by_port: dict[int, list] = {}
                for net, proto, port in triples:
                    if protocol is None or proto == protocol:
                        by_port.setdefault(port, []).append(net.network_address)
                self._ports[key] = sorted(by_port.items())
        return self._ports[key]

    def facts(self, rule: Rule) -> RuleFacts:
        return RuleFacts(
            rule, self._side(rule.match.src, rule.match), self._side(rule.match.dst, rule.match)
        )

    # -- never matches ------------------------------------------------------------------------

    def never_matches(self, f: RuleFacts) -> bool:
        m = f.match
        if m.protocol is not None and m.not_protocol == m.protocol:
            return True
        if m.icmp_type is not None:
            if m.protocol is not None and m.protocol not in ICMP_PROTOCOLS:
                return True
            if m.not_icmp_type == m.icmp_type and m.not_icmp_code in (None, m.icmp_code):
                return True
        for sf in (f.src, f.dst):
            if sf.addrs.is_empty:
                return True
            if sf.side.ports is not None and not sf.ports:
                return True
        return False

    # -- covers ---------------------------------------------------------------------------------

    def covers(self, earlier: RuleFacts, later: RuleFacts) -> bool:
        """Every flow ``later`` matches is matched by ``earlier`` (a proof, or False)."""
        e, x = earlier.match, later.match
        # A flow's family is its source address's, so ``later`` may be single-family anyway.
        if (
            e.ip_version is not None
            and x.ip_version != e.ip_version
            and not later.src.addrs <= AddrSpace.full(e.ip_version)
        ):
            return False
        if e.protocol is not None and x.protocol != e.protocol:
            return False
        if e.not_protocol is not None and not (
            x.not_protocol == e.not_protocol
            or (x.protocol is not None and x.protocol != e.not_protocol)
        ):
            return False
        if e.icmp_type is not None and not (
            x.icmp_type == e.icmp_type and e.icmp_code in (None, x.icmp_code)
        ):
            return False
        if e.not_icmp_type is not None and not _avoids_icmp(x, e.not_icmp_type, e.not_icmp_code):
            return False
        return self._side_covers(earlier.src, later.src, x) and self._side_covers(
            earlier.dst, later.dst, x
        )

    def _side_covers(self, ef: SideFacts, lf: SideFacts, x: Match) -> bool:
        e, side, addrs = ef.side, lf.side, lf.addrs
        if e.nets is not None and not addrs <= AddrSpace.of(e.nets):
            return False
        if e.not_nets and not addrs.is_disjoint(AddrSpace.of(e.not_nets)):
            return False
        for sid in e.sets:
            if sid in side.sets:
                continue
            space = self.addr_space(sid)
            if space is None or not addrs <= space:
                return False
        for sid in e.not_sets:
            if sid in side.not_sets:
                continue
            space = self.addr_space(sid)
            if space is None or not addrs.is_disjoint(space):
                return False
        if e.ports is not None and not self._ports_cover(e.ports, side, lf, x):
            return False
        return e.not_ports is None or self._avoids_ports(e.not_ports, side, lf, x)

    def _ports_cover(self, e: PortMatch, side: Side, lf: SideFacts, x: Match) -> bool:
        """Every (ip, proto, port) ``side.ports`` accepts is accepted by ``e``."""
        if side.ports is None:
            return False  # ``later`` also accepts flows without ports; ``e`` never does
        not_ranges = normalise(side.not_ports.ranges) if side.not_ports is not None else ()
        e_ranges = normalise(e.ranges)
        if not subset(minus(normalise(side.ports.ranges), not_ranges), e_ranges):
            return False
        for sid in side.ports.named_sets:
            if sid in e.named_sets:
                continue
            triples = self.triples(sid)
            if triples is None:
                return False
            e_members = [self.triples(s) for s in e.named_sets]
            for t in triples:
                net, proto, port = t
                if x.protocol is not None and proto != x.protocol:
                    continue
                if not lf.addrs.contains_ip(net.network_address):
                    continue
                if not disjoint(((port, port),), not_ranges):
                    continue
                if subset(((port, port),), e_ranges):
                    continue
                if not any(m is not None and t in m for m in e_members):
                    return False
        return True

    def _avoids_ports(self, e_not: PortMatch, side: Side, lf: SideFacts, x: Match) -> bool:
        """No (ip, proto, port) ``later`` accepts on this side is in ``e_not``."""
        if not disjoint(lf.ports, normalise(e_not.ranges)):
            return False
        l_not = side.not_ports.named_sets if side.not_ports is not None else ()
        for sid in e_not.named_sets:
            if sid in l_not:
                continue
            triples = self.triples(sid)
            if triples is None:
                return False
            for net, proto, port in triples:
                if x.protocol is not None and proto != x.protocol:
                    continue
                if not lf.addrs.contains_ip(net.network_address):
                    continue
                if not disjoint(((port, port),), lf.ports):
                    return False
        return True


def _avoids_icmp(x: Match, t: int, c: int | None) -> bool:
    """No flow ``x`` accepts has ICMP type ``t`` (and code ``c`` when given)."""
    if x.not_icmp_type == t and x.not_icmp_code in (None, c):
        return True
    if x.protocol is not None and x.protocol not in ICMP_PROTOCOLS:
        return True
    if x.icmp_type is not None and x.icmp_type != t:
        return True
    return x.icmp_type == t and c is not None and x.icmp_code is not None and x.icmp_code != c
