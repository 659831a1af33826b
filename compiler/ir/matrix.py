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
from collections import defaultdict
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.passes import resolve_sets

__all__ = ["Matrix", "Probe", "compute", "compute_naive", "equivalence_classes", "workloads"]


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
    probe: Probe
    family: int
    endpoints: tuple[tuple[str, ir.IPAddr], ...]  # (id, address), sorted by id
    allowed: dict[tuple[str, str], bool]  # (from, to) -> verdict, every ordered pair
    classes: int = 0  # number of equivalence classes evaluated
    skipped: tuple[str, ...] = field(default=())  # endpoints without an address of ``family``


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


class _Keys:
    """Computes the class key of an address: everything the evaluator can observe about it."""

    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.by_ip_wep: dict[ir.IPAddr, ir.Endpoint] = {}
        self.by_ip_hep: dict[ir.IPAddr, ir.Endpoint] = {}
        for e in program.endpoints:  # first endpoint wins, as in the evaluator's _find
            for ip in e.ips:
                (self.by_ip_hep if e.is_host else self.by_ip_wep).setdefault(ip, e)
        self.host_node: dict[ir.IPAddr, str] = {}
        for node, ips in program.host_ips.items():  # first node wins, as in _host_node
            for ip in ips:
                self.host_node.setdefault(ip, node)
        # Exact members (host routes) go in a dict; wider prefixes are scanned.
        self.hosts: dict[ir.IPNet, list[str]] = defaultdict(list)
        self.wide: list[tuple[ir.IPNet, str]] = []
        self.ports: dict[ir.IPNet, list[tuple[str, int, int]]] = defaultdict(list)
        for sid, s in program.sets.items():
            if s.is_named_port:
                for net, proto, port in s.port_members or ():
                    self.ports[net].append((sid, proto, port))
                continue
            for net in s.members or ():
                if net.num_addresses == 1:
                    self.hosts[net].append(sid)
                else:
                    self.wide.append((net, sid))
        inline: set[ir.IPNet] = set()
        for rules in _rule_lists(program):
            for r in rules:
                for side in (r.match.src, r.match.dst):
                    inline.update(side.nets or ())
                    inline.update(side.not_nets)
        self.inline = sorted(inline, key=lambda n: (n.version, n))

    def address_key(self, ip: ir.IPAddr) -> tuple:
        host = ipaddress.ip_network(ip)
        sets = set(self.hosts.get(host, ()))
        sets.update(sid for net, sid in self.wide if ip.version == net.version and ip in net)
        ports = tuple(sorted(self.ports.get(host, ())))
        nets = tuple(i for i, n in enumerate(self.inline) if n.version == ip.version and ip in n)
        hep = self.by_ip_hep.get(ip)
        hep_node = hep.node if hep is not None else None
        return (ip.version, tuple(sorted(sets)), ports, nets, self.host_node.get(ip), hep_node)

    def host_nodes(self, ips: list[ir.IPAddr]) -> set[str]:
        """Nodes that own one of ``ips`` as a host address (host IP or host endpoint IP)."""
        out = {self.host_node[ip] for ip in ips if ip in self.host_node}
        return out | {self.by_ip_hep[ip].node for ip in ips if ip in self.by_ip_hep}

    def endpoint_key(self, ip: ir.IPAddr, relevant_nodes: set[str]) -> tuple:
        """The endpoint part of the key. A workload's node only matters for traffic to its own
        node's host (defaultEndpointToHostAction), so it is part of the key only when one of the
        addresses in the matrix belongs to that node."""
        ep = self.by_ip_wep.get(ip) or self.by_ip_hep.get(ip)
        if ep is None:
            return (None,)
        node = ep.node if ep.is_host or ep.node in relevant_nodes else None
        return (ep.kind, node, ep.interface == "*", ep.profiles, ep.plans)

    def key(self, ip: ir.IPAddr, relevant_nodes: set[str]) -> tuple:
        return (self.endpoint_key(ip, relevant_nodes), self.address_key(ip))


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


def equivalence_classes(
    program: ir.Program, endpoints: tuple[tuple[str, ir.IPAddr], ...]
) -> list[list[tuple[str, ir.IPAddr]]]:
    """Endpoints grouped so that the evaluator cannot tell members of one group apart."""
    keys = _Keys(_resolved(program))
    nodes = keys.host_nodes([ip for _, ip in endpoints])
    groups: dict[tuple, list[tuple[str, ir.IPAddr]]] = {}
    for eid, ip in endpoints:
        groups.setdefault(keys.key(ip, nodes), []).append((eid, ip))
    return list(groups.values())


def compute(
    program: ir.Program,
    probe: Probe,
    family: int = 4,
    namespaces: tuple[str, ...] = (),
) -> Matrix:
    """The matrix through equivalence classes (fast)."""
    program = _resolved(program)
    endpoints, skipped = workloads(program, family, namespaces)
    classes = equivalence_classes(program, endpoints)
    allowed: dict[tuple[str, str], bool] = {}
    for src_class in classes:
        src_ip = src_class[0][1]
        for dst_class in classes:
            ok = evaluate(program, probe.flow(src_ip, dst_class[0][1])).allowed
            for s, _ in src_class:
                for d, _ in dst_class:
                    allowed[(s, d)] = ok
    return Matrix(probe, family, endpoints, allowed, len(classes), skipped)


def compute_naive(
    program: ir.Program,
    probe: Probe,
    family: int = 4,
    namespaces: tuple[str, ...] = (),
) -> Matrix:
    """One evaluation per ordered pair: the definition :func:`compute` must agree with."""
    endpoints, skipped = workloads(program, family, namespaces)
    allowed = {
        (s, d): evaluate(program, probe.flow(sip, dip)).allowed
        for s, sip in endpoints
        for d, dip in endpoints
    }
    return Matrix(probe, family, endpoints, allowed, len(endpoints), skipped)


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
        f"{m.classes} equivalence classes",
        ". allowed, X denied; rows are sources, columns destinations; "
        "* marks a pod to itself (implementation-defined in Kubernetes)",
    ]
    if m.skipped:
        out.append(f"left out (no IPv{m.family} address): {', '.join(m.skipped)}")
    out.append("\t".join(["-", *ids]))
    for s in ids:
        cells = [s]
        for d in ids:
            cell = "." if m.allowed[(s, d)] else "X"
            cells.append(cell + "*" if s == d else cell)
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
        for s, _ in m.endpoints:
            qs = quoted[s]
            chunk = []
            for d, _ in m.endpoints:
                sep = "\n  " if first else ",\n  "
                first = False
                chunk.append(f'{sep}{{"from": {qs}, "to": {quoted[d]}{tail[m.allowed[(s, d)]]}')
            yield "".join(chunk)
    yield "\n]\n" if not first else "]\n"
