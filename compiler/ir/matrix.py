"""Reachability matrix: the verdict for every ordered pair of workload endpoints (``tortie matrix``).

The naive way is one :func:`~compiler.ir.evaluate.evaluate` per pair; at 1,000 pods that is a
million evaluations. But the evaluator can only tell two endpoints apart through

* the endpoint the evaluator finds for the address (first workload endpoint with that IP, else a
  host endpoint, else the node): its tier plans for every hook and direction, its profiles, its
  node, and whether it is a host endpoint;
* the address itself, through membership: which selector sets contain it, which
  ``(protocol, port)`` pairs the named-port sets hold for it, which inline ``nets``/``notNets``
  CIDRs contain it, and which node (if any) owns it as a host address.

Endpoints that agree on all of that form an **equivalence class**: every rule and every default
treats them the same way, on either side of a flow. So the matrix is computed once per pair of
classes, with one representative each, and copied to the members. Per-pair results are exactly
those of the naive evaluation (``tests/ir/test_matrix.py`` checks it on random clusters), the
diagonal included: a pod to itself gets the verdict of its class pair.

Every address used has one family (``family=4`` picks each endpoint's first IPv4 address);
endpoints without an address of that family are left out and listed in ``Matrix.skipped``.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.passes import resolve_sets

__all__ = [
    "Matrix",
    "Probe",
    "compute",
    "compute_naive",
    "iter_json",
    "probe_words",
    "render_text",
    "workloads",
]


@dataclass(frozen=True, slots=True)
class Probe:
    """What is sent: a protocol and a destination port (None for ICMP, then type/code)."""

    protocol: int
    port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def flow(self, src: ir.IPAddr, dst: ir.IPAddr) -> Flow:
        return Flow(src, dst, self.protocol, None, self.port, self.icmp_type, self.icmp_code)


@dataclass(frozen=True)
class Matrix:
    """``rows[i][j]``: may endpoint ``i`` open a connection to endpoint ``j``?"""

    probe: Probe
    family: int
    endpoints: tuple[tuple[str, ir.IPAddr], ...]  # (id, address), sorted by id
    rows: tuple[tuple[bool, ...], ...]
    evaluations: int = 0  # evaluator runs it took (the naive way: one per pair)
    skipped: tuple[str, ...] = field(default=())  # endpoints without an address of ``family``

    def allowed(self, src: str, dst: str) -> bool:
        index = {eid: i for i, (eid, _) in enumerate(self.endpoints)}
        return self.rows[index[src]][index[dst]]

    def pairs(self) -> dict[tuple[str, str], bool]:
        ids = [eid for eid, _ in self.endpoints]
        return {
            (s, d): ok
            for s, row in zip(ids, self.rows, strict=True)
            for d, ok in zip(ids, row, strict=True)
        }


def workloads(
    program: ir.Program, family: int = 4, namespaces: tuple[str, ...] = ()
) -> tuple[tuple[tuple[str, ir.IPAddr], ...], tuple[str, ...]]:
    """Workload endpoints (optionally only some namespaces) with their first address of
    ``family``, and the ids of those that have none."""
    rows, skipped = [], []
    for e in program.endpoints:
        if e.is_host or (namespaces and e.namespace not in namespaces):
            continue
        ip = next((a for a in e.ips if a.version == family), None)
        if ip is None:
            skipped.append(e.id)
        else:
            rows.append((e.id, ip))
    return tuple(sorted(rows)), tuple(sorted(skipped))


@dataclass(frozen=True, slots=True)
class _Preds:
    """The address predicates some rules look at, on one side of the packet."""

    sets: frozenset[str]  # selector sets (positive and negated)
    named: frozenset[str]  # named-port sets
    nets: frozenset[int]  # inline nets/notNets, as indices into _Index.nets


def _containing(
    nets: list[tuple[ir.IPNet, object]], addrs: list[ir.IPAddr]
) -> dict[ir.IPAddr, set[object]]:
    """For each address, the tags of the nets that contain it: one binary search per net over
    the sorted addresses, instead of testing every address against every net."""
    out: dict[ir.IPAddr, set[object]] = {a: set() for a in addrs}
    for version in (4, 6):
        points = sorted(int(a) for a in addrs if a.version == version)
        by_int = {int(a): a for a in addrs if a.version == version}
        for net, tag in nets:
            if net.version != version:
                continue
            lo = bisect_left(points, int(net.network_address))
            hi = bisect_right(points, int(net.broadcast_address))
            for k in range(lo, hi):
                out[by_int[points[k]]].add(tag)
    return out


class _Index:
    """What the rules can observe about each address of interest, and which rules a direction
    at an endpoint runs."""

    def __init__(self, program: ir.Program, addrs: list[ir.IPAddr]) -> None:
        self.program = program
        self.wep: dict[ir.IPAddr, ir.Endpoint] = {}
        host_addrs: set[ir.IPAddr] = {ip for ips in program.host_ips.values() for ip in ips}
        for e in program.endpoints:  # the first endpoint wins, as in the evaluator
            for ip in e.ips:
                if e.is_host:
                    host_addrs.add(ip)
                else:
                    self.wep.setdefault(ip, e)
        self.host_addrs = host_addrs

        inline: set[ir.IPNet] = set()
        for rules in _rule_lists(program):
            for r in rules:
                for side in (r.match.src, r.match.dst):
                    inline.update(side.nets or ())
                    inline.update(side.not_nets)
        self.nets = {n: i for i, n in enumerate(sorted(inline, key=lambda n: (n.version, n)))}

        tagged: list[tuple[ir.IPNet, object]] = [(n, ("net", i)) for n, i in self.nets.items()]
        ports: dict[ir.IPNet, list[tuple[str, int, int]]] = defaultdict(list)
        for sid, st in program.sets.items():
            if st.is_named_port:
                for net, proto, port in st.port_members or ():
                    ports[net].append((sid, proto, port))
            else:
                tagged.extend((net, ("set", sid)) for net in st.members or ())
        found = _containing(tagged, addrs)
        # Addresses that every predicate sees alike share an address class; projections are
        # computed per class, not per address.
        self.addr_class: list[int] = []  # position in ``addrs`` -> address class
        self.facts: list[tuple] = []  # address class -> (version, sets, named ports, nets)
        ids: dict[tuple, int] = {}
        for a in addrs:
            tags = found[a]
            facts = (
                a.version,
                frozenset(t[1] for t in tags if t[0] == "set"),  # type: ignore[index]
                tuple(sorted(ports.get(ipaddress.ip_network(a), ()))),
                frozenset(t[1] for t in tags if t[0] == "net"),  # type: ignore[index]
            )
            if facts not in ids:
                ids[facts] = len(self.facts)
                self.facts.append(facts)
            self.addr_class.append(ids[facts])
        self._preds: dict[tuple, tuple[_Preds, _Preds]] = {}

    def config(self, ep: ir.Endpoint, direction: str) -> tuple:
        """What decides ``direction`` at ``ep``, apart from the packet: its tiers and profiles."""
        plans = tuple((key, tiers) for key, tiers in ep.plans if key[1] == direction)
        return (direction, plans, ep.profiles)

    def preds(self, config: tuple) -> tuple[_Preds, _Preds]:
        """Source-side and destination-side predicates of every rule ``config`` can run."""
        if config not in self._preds:
            direction, plans, profiles = config
            rules: list[ir.Rule] = []
            for _, tiers in plans:
                for tier in tiers:
                    for pid in tier.policies:
                        rules.extend(self.program.policies[pid].rules(direction))
            for name in profiles:
                prof = self.program.profiles.get(name)
                if prof is not None:
                    rules.extend(prof.rules(direction))
            self._preds[config] = (
                self._side_preds([r.match.src for r in rules]),
                self._side_preds([r.match.dst for r in rules]),
            )
        return self._preds[config]

    def _side_preds(self, sides: list[ir.Side]) -> _Preds:
        sets: set[str] = set()
        named: set[str] = set()
        nets: set[int] = set()
        for side in sides:
            sets.update(side.sets)
            sets.update(side.not_sets)
            for pm in (side.ports, side.not_ports):
                if pm is not None:
                    named.update(pm.named_sets)
            nets.update(self.nets[n] for n in side.nets or ())
            nets.update(self.nets[n] for n in side.not_nets)
        return _Preds(frozenset(sets), frozenset(named), frozenset(nets))

    def project(self, addr_class: int, preds: _Preds) -> tuple:
        """Everything ``preds`` can observe about the addresses of ``addr_class``."""
        version, sets, ports, nets = self.facts[addr_class]
        named = tuple(t for t in ports if t[0] in preds.named)
        return (version, sets & preds.sets, named, nets & preds.nets)


def _rule_lists(program: ir.Program):  # noqa: ANN202 - generator of rule tuples
    for p in program.policies.values():
        yield p.ingress
        yield p.egress
    for p in program.profiles.values():
        yield p.ingress
        yield p.egress


def _resolved(program: ir.Program) -> ir.Program:
    if all(s.resolved for s in program.sets.values()):
        return program
    return resolve_sets.run(program, None)


class _Direction:
    """One direction's verdicts through equivalence classes.

    ``own`` is the side whose endpoint decides (the source for egress, the destination for
    ingress); ``peer`` is the other side. Own endpoints are grouped by (config, own-side
    projection); for each config, peers are grouped by the peer-side projection of that config's
    rules. One evaluation per (own class, peer class) answers every pair in the product.
    """

    def __init__(self, index: _Index, direction: str, endpoints, probe: Probe) -> None:  # noqa: ANN001
        self.index, self.direction, self.probe = index, direction, probe
        self.evaluations = 0
        own_side = 0 if direction == ir.EGRESS else 1
        own_ids: dict[tuple, int] = {}
        self.own_class: list[int] = []  # endpoint -> own class
        self.own_rep: list[ir.IPAddr] = []  # own class -> representative address
        self.config_of: list[int] = []  # own class -> config number
        configs: dict[tuple, int] = {}
        self.peer_class: list[list[int]] = []  # config number -> class of each endpoint as peer
        self.peer_rep: list[list[ir.IPAddr]] = []  # config number -> peer class -> address
        addr_rep: dict[int, ir.IPAddr] = {}
        for (_, ip), c in zip(endpoints, index.addr_class, strict=True):
            addr_rep.setdefault(c, ip)
        for i, (_, ip) in enumerate(endpoints):
            config = index.config(index.wep[ip], direction)
            preds = index.preds(config)
            if config not in configs:
                configs[config] = len(configs)
                peer_ids: dict[tuple, int] = {}
                reps: list[ir.IPAddr] = []
                of_addr_class = []  # address class -> peer class
                for c in range(len(index.facts)):
                    pkey = index.project(c, preds[1 - own_side])
                    if pkey not in peer_ids:
                        peer_ids[pkey] = len(reps)
                        reps.append(addr_rep[c])
                    of_addr_class.append(peer_ids[pkey])
                self.peer_class.append([of_addr_class[c] for c in index.addr_class])
                self.peer_rep.append(reps)
            key = (configs[config], index.project(index.addr_class[i], preds[own_side]))
            if key not in own_ids:
                own_ids[key] = len(self.own_rep)
                self.own_rep.append(ip)
                self.config_of.append(configs[config])
            self.own_class.append(own_ids[key])
        self._vectors: dict[int, list[bool]] = {}

    def _evaluate(self, own_ip: ir.IPAddr, peer_ip: ir.IPAddr) -> bool:
        self.evaluations += 1
        program = self.index.program
        if self.direction == ir.EGRESS:
            return evaluate(program, self.probe.flow(own_ip, peer_ip)).egress.allowed
        return evaluate(program, self.probe.flow(peer_ip, own_ip)).ingress.allowed

    def vector(self, own: int) -> list[bool]:
        """The verdicts of endpoint ``own`` against every endpoint as peer."""
        c = self.own_class[own]
        if c not in self._vectors:
            config = self.config_of[c]
            per_class = [self._evaluate(self.own_rep[c], rep) for rep in self.peer_rep[config]]
            self._vectors[c] = [per_class[p] for p in self.peer_class[config]]
        return self._vectors[c]


def compute(
    program: ir.Program,
    probe: Probe,
    family: int = 4,
    namespaces: tuple[str, ...] = (),
) -> Matrix:
    """The matrix through equivalence classes (fast); same answers as :func:`compute_naive`.

    ``allowed(s, d) = egress(s, d) and ingress(s, d)``, and each of the two is computed per
    class pair (see :class:`_Direction`). A pair involving a host address (a host-networked pod,
    where workload-to-own-host handling applies) or an address two workloads share is evaluated
    directly.
    """
    program = _resolved(program)
    endpoints, skipped = workloads(program, family, namespaces)
    index = _Index(program, [ip for _, ip in endpoints])
    egress = _Direction(index, ir.EGRESS, endpoints, probe)
    ingress = _Direction(index, ir.INGRESS, endpoints, probe)
    n = len(endpoints)
    cols = [ingress.vector(j) for j in range(n)]  # cols[j][i]: ingress of j from i
    direct = [ip in index.host_addrs or index.wep[ip].id != eid for eid, ip in endpoints]
    extra = 0
    rows = []
    for i, (_, sip) in enumerate(endpoints):
        out = egress.vector(i)
        row = [e and col[i] for e, col in zip(out, cols, strict=True)]
        for j, (_, dip) in enumerate(endpoints):
            if direct[i] or direct[j]:
                extra += 1
                row[j] = evaluate(program, probe.flow(sip, dip)).allowed
        rows.append(tuple(row))
    return Matrix(
        probe,
        family,
        endpoints,
        tuple(rows),
        egress.evaluations + ingress.evaluations + extra,
        skipped,
    )


def compute_naive(
    program: ir.Program,
    probe: Probe,
    family: int = 4,
    namespaces: tuple[str, ...] = (),
) -> Matrix:
    """One evaluation per ordered pair: the definition :func:`compute` must agree with."""
    endpoints, skipped = workloads(program, family, namespaces)
    rows = tuple(
        tuple(evaluate(program, probe.flow(sip, dip)).allowed for _, dip in endpoints)
        for _, sip in endpoints
    )
    return Matrix(probe, family, endpoints, rows, len(endpoints) ** 2, skipped)


# -- rendering ----------------------------------------------------------------------------------


def probe_words(probe: Probe) -> str:
    from compiler.ir.dump import protocol_name

    name = protocol_name(probe.protocol)
    if probe.port is not None:
        return f"{name}/{probe.port}"
    if probe.icmp_type is not None:
        return f"{name} type {probe.icmp_type}"
    return name


def render_text(m: Matrix) -> str:
    """The truth table as the Kubernetes netpol e2e tests print it: rows are sources, columns
    destinations, ``.`` allowed, ``X`` denied, tab-separated. Diagonal cells (a pod to itself,
    which Kubernetes leaves implementation-defined) carry a ``*``."""
    ids = [eid for eid, _ in m.endpoints]
    out = [
        f"reachability {probe_words(m.probe)} over IPv{m.family}: {len(ids)} pods, "
        f"{m.evaluations} evaluations",
        ". allowed, X denied; rows are sources, columns destinations; "
        "* marks a pod to itself (implementation-defined in Kubernetes)",
    ]
    if m.skipped:
        out.append(f"left out (no IPv{m.family} address): {', '.join(m.skipped)}")
    out.append("\t".join(["-", *ids]))
    for i, (s, row) in enumerate(zip(ids, m.rows, strict=True)):
        cells = [s] + ["." if ok else "X" for ok in row]
        cells[i + 1] += "*"
        out.append("\t".join(cells))
    return "\n".join(out) + "\n"


def iter_json(matrices: list[Matrix]):  # noqa: ANN201 - generator of text chunks
    """A JSON array of ``{"from", "to", "protocol", "port", "allowed"}`` for every ordered pair
    (the diagonal included) of every matrix, one object per line. Streamed in chunks: a
    thousand pods make a million objects, and building one big string or list of dicts would
    dominate the run time."""
    import json

    from compiler.ir.dump import protocol_name

    yield "["
    first = True
    for m in matrices:
        quoted = {eid: json.dumps(eid) for eid, _ in m.endpoints}
        proto = json.dumps(protocol_name(m.probe.protocol))
        port = json.dumps(m.probe.port)
        tail = {
            ok: f', "protocol": {proto}, "port": {port}, "allowed": {json.dumps(ok)}}}'
            for ok in (True, False)
        }
        for (s, _), row in zip(m.endpoints, m.rows, strict=True):
            qs = quoted[s]
            chunk = []
            for (d, _), ok in zip(m.endpoints, row, strict=True):
                sep = "\n  " if first else ",\n  "
                first = False
                chunk.append(f'{sep}{{"from": {qs}, "to": {quoted[d]}{tail[ok]}')
            yield "".join(chunk)
    yield "\n]\n" if not first else "]\n"
