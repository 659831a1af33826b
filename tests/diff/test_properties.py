"""Properties of the semantic diff on small random clusters (hypothesis).

The oracle is the naive comparison: the reference evaluator asked about every pair of
addresses (pods, host endpoints, the node, network-set boundaries, outsiders; both families)
for a set of protocols and ports, in both trees. The diff must report exactly the pairs whose
verdict differs — each in exactly one row, with the right verdicts before and after — and
nothing else. ``TORTIE_DIFF_EXAMPLES`` sets how many random cases each property draws (30).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diff import prepare, semantic_diff
from compiler.diff.semantic import FamilyDiff, Row
from compiler.diff.subjects import EXTERNAL
from compiler.frontend import model as m
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.matrix import Probe, compute_naive
from tests.property.strategies import (
    ICMP,
    POD_V4,
    SCTP,
    TCP,
    UDP,
    addresses,
    host_endpoints,
    label_sets,
    resource_sets,
)

SETTINGS = settings(
    max_examples=int(os.environ.get("TORTIE_DIFF_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ),
)
PROBES = (
    (TCP, 80),
    (TCP, 53),
    (TCP, 8080),
    (TCP, 8081),
    (TCP, 22),
    (UDP, 53),
    (SCTP, 8050),
    (ICMP, None),
    (58, None),
    (47, None),
)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[m.ResourceSet, m.ResourceSet]:
    """Two trees over the same endpoints: the head's policies, tiers, profiles, network sets
    and Felix settings are drawn afresh, some endpoints get new labels, one may be gone."""
    base = draw(resource_sets())
    other = draw(resource_sets())
    endpoints = []
    gone = draw(st.integers(-3, len(base.endpoints) - 1))
    for n, e in enumerate(base.endpoints):
        if n == gone:
            continue
        if draw(st.integers(0, 3)) == 0:
            implicit = {
                k: v for k, v in e.labels if k.startswith("projectcalico.org/") or k == "host"
            }
            e = dataclasses.replace(e, labels=m.labels_of({**draw(label_sets()), **implicit}))
        endpoints.append(e)
    if draw(st.integers(0, 3)) == 0:  # a pod moves to a free address
        used = {ip for e in endpoints for ip in e.ips}
        free = [ip for ip in map(ipaddress.ip_address, POD_V4) if ip not in used]
        pods = [n for n, e in enumerate(endpoints) if not e.is_host]
        if free and pods:
            n = draw(st.sampled_from(pods))
            ips = (draw(st.sampled_from(free)), *endpoints[n].ips[1:])
            endpoints[n] = dataclasses.replace(endpoints[n], ips=ips)
    felix = other.felix
    if draw(st.integers(0, 2)) == 0:  # a failsafe port limited to a CIDR, in one tree
        extra = m.FailsafePort(
            TCP, 80, ipaddress.ip_network(draw(st.sampled_from(("10.0.0.0/25", "10.0.0.0/30"))))
        )
        felix = dataclasses.replace(felix, failsafe_inbound=(*felix.failsafe_inbound, extra))
    head = dataclasses.replace(other, endpoints=tuple(endpoints), nodes=base.nodes, felix=felix)
    return base, head


def _subject(fd: FamilyDiff, ip: m.IPAddr) -> int | None:
    """The subject an address is compared as (None: an endpoint present in one tree only)."""
    for i, s in enumerate(fd.subjects):
        if s.kind == EXTERNAL:
            if s.contains(ip):
                return i
        elif s.ips[0] == ip:
            return i
    return None


def _compared(
    fd: FamilyDiff, pool: list[str]
) -> Iterator[tuple[str, str, int, int, list[tuple[m.IPAddr, m.IPAddr]]]]:
    """Every (source, destination) of ``pool`` the diff compares, with their subjects and the
    flow's ends in base and head: an endpoint is compared with its own address in each tree,
    an external class with the pool's address."""
    for src in pool:
        si = _subject(fd, ipaddress.ip_address(src))
        for dst in pool:
            di = _subject(fd, ipaddress.ip_address(dst))
            if si is None or di is None:
                continue
            ends = [(fd.subjects[si].ips[t], fd.subjects[di].ips[t]) for t in (0, 1)]
            if fd.subjects[si].kind == EXTERNAL:
                ends = [(ipaddress.ip_address(src), e[1]) for e in ends]
            if fd.subjects[di].kind == EXTERNAL:
                ends = [(e[0], ipaddress.ip_address(dst)) for e in ends]
            yield src, dst, si, di, ends


def _covers(row: Row, src: int, dst: int, flow: Flow) -> bool:
    p = row.piece
    if src not in row.sources or dst not in row.destinations or flow.protocol not in p.protocols:
        return False
    if p.dst_ports is not None and not p.dst_ports[0] <= (flow.dst_port or 0) <= p.dst_ports[1]:
        return False
    if p.src_ports is not None and not p.src_ports[0] <= (flow.src_port or 1) <= p.src_ports[1]:
        return False
    if p.icmp_types is not None and flow.icmp_type not in p.icmp_types:
        return False
    return p.icmp_codes is None or flow.icmp_code in p.icmp_codes


def _flow(a: m.IPAddr, b: m.IPAddr, proto: int, port: int | None) -> Flow:
    if proto in (1, 58):
        return Flow(a, b, proto, icmp_type=8, icmp_code=0)
    return Flow(a, b, proto, 1 if port else None, port)


def _one_sided(base: m.ResourceSet, head: m.ResourceSet) -> set[str]:
    return {e.id for e in base.endpoints} ^ {e.id for e in head.endpoints}


@SETTINGS
@given(resource_sets())
def test_diff_of_a_tree_with_itself_is_empty(res: m.ResourceSet) -> None:
    d = semantic_diff(res, res)
    assert not d.changed and d.groups == [] and d.endpoints == []
    assert all(fd.rows == [] for fd in d.families)


@SETTINGS
@given(pairs())
def test_diff_agrees_with_the_naive_comparison(trees: tuple[m.ResourceSet, m.ResourceSet]) -> None:
    base, head = trees
    programs = prepare(base), prepare(head)
    d = semantic_diff(base, head)
    assert {c.name for c in d.endpoints if c.change != "addresses"} == _one_sided(base, head)
    for fd in d.families:
        for src, dst, si, di, ends in _compared(fd, addresses(base, fd.family)):
            for proto, port in PROBES:
                flows = [_flow(*ends[t], proto, port) for t in (0, 1)]
                before, after = (evaluate(programs[t], flows[t]).allowed for t in (0, 1))
                rows = [r for r in fd.rows if _covers(r, si, di, flows[0])]
                if before == after:
                    assert rows == [], (src, dst, proto, port)
                else:
                    assert len(rows) == 1, (src, dst, proto, port, rows)
                    assert (rows[0].before.allowed, rows[0].after.allowed) == (before, after)


@dataclasses.dataclass(frozen=True, slots=True)
class _Probe(Probe):
    """A matrix probe with a source port (1): every real TCP/UDP/SCTP packet has one, and the
    evaluator treats "no source port" unlike any port when a rule matches source ports."""

    def flow(self, src: m.IPAddr, dst: m.IPAddr) -> Flow:
        return Flow(src, dst, self.protocol, 1, self.port, self.icmp_type, self.icmp_code)


@SETTINGS
@given(pairs())
def test_groups_agree_with_the_evaluator_matrix(trees: tuple[m.ResourceSet, m.ResourceSet]) -> None:
    """Every pod pair the evaluator's matrices (naive, one evaluation per pair) disagree on is
    in exactly one group, and no group names a pair they agree on."""
    base, head = trees
    programs = prepare(base), prepare(head)
    d = semantic_diff(base, head)
    for probe in (_Probe(TCP, 80), _Probe(TCP, 8080), _Probe(UDP, 53)):
        for family in (4, 6):
            mb, mh = (compute_naive(p, probe, family).pairs() for p in programs)
            changed = {pair for pair, ok in mb.items() if pair in mh and mh[pair] != ok}
            listed: dict[tuple[str, str], int] = {}
            for g in d.groups:
                if not g.services.covers(family, probe.protocol, probe.port):
                    continue
                for s in g.sources.names:
                    for t in g.destinations.names:
                        if (s, t) in mb and (s, t) in mh:
                            listed[(s, t)] = listed.get((s, t), 0) + 1
                            assert mb[(s, t)] == g.before.allowed
                            assert mh[(s, t)] == g.after.allowed
            assert set(listed) == changed
            assert all(n == 1 for n in listed.values())


@st.composite
def forward_pairs(draw: st.DrawFn) -> tuple[m.ResourceSet, m.ResourceSet]:
    """``pairs()`` with a host endpoint in both trees (its labels may differ) and more
    applyOnForward: each tree's GlobalNetworkPolicies may turn it on."""
    base, head = draw(pairs())
    if draw(st.booleans()):  # the same policies: only applyOnForward and the HEP change
        head = dataclasses.replace(head, policies=base.policies, tiers=base.tiers)
    if draw(st.booleans()):  # workload -> own host allowed alike: leaving it is forwarded
        action = draw(st.sampled_from(("Accept", "Return")))
        base, head = (
            dataclasses.replace(
                t, felix=dataclasses.replace(t.felix, default_endpoint_to_host_action=action)
            )
            for t in (base, head)
        )
    if not any(e.is_host for e in base.endpoints) or not any(e.is_host for e in head.endpoints):
        hep = draw(host_endpoints())
        other = dataclasses.replace(hep, labels=m.labels_of({**draw(label_sets()), "host": "yes"}))
        heads = (hep, other) if draw(st.booleans()) else (hep, hep)

        def with_hep(res: m.ResourceSet, e: m.Endpoint) -> m.ResourceSet:
            eps = tuple(x for x in res.endpoints if not x.is_host) + (e,)
            return dataclasses.replace(res, endpoints=eps)

        base, head = with_hep(base, heads[0]), with_hep(head, heads[1])

    def more(res: m.ResourceSet) -> m.ResourceSet:
        pols = tuple(
            dataclasses.replace(p, apply_on_forward=True)
            if p.namespace is None and not p.apply_on_forward and draw(st.booleans())
            else p
            for p in res.policies
        )
        return dataclasses.replace(res, policies=pols)

    return more(base), more(head)


FORWARD_PROBES = ((TCP, 80), (TCP, 8080), (UDP, 53), (ICMP, None), (58, None), (47, None))


@SETTINGS
@given(forward_pairs())
def test_forwarded_flows_agree_with_the_naive_comparison(
    trees: tuple[m.ResourceSet, m.ResourceSet],
) -> None:
    """Through every host endpoint of both trees: a forwarded flow is in exactly one forward
    row (with the right verdicts) iff its forwarded verdict changed while its ordinary one did
    not — the ordinary change is in the ordinary rows (checked above)."""
    base, head = trees
    check_forwarded(base, head, lambda family: addresses(base, family))


def check_forwarded(
    base: m.ResourceSet, head: m.ResourceSet, pool: Callable[[int], list[str]]
) -> None:
    """The forwarded rows of ``semantic_diff(base, head)`` against the evaluator (``via=``),
    for every pair of ``pool(family)`` through every host endpoint of both trees."""
    programs = prepare(base), prepare(head)
    d = semantic_diff(base, head)
    heps = sorted(
        {e.id for e in programs[0].endpoints if e.is_host}
        & {e.id for e in programs[1].endpoints if e.is_host}
    )
    assert {h for fd in d.families for h in fd.forward} <= set(heps)
    for fd in d.families:
        pairs_ = list(_compared(fd, pool(fd.family)))
        for via in heps:
            listed = fd.forward.get(via, [])
            for src, dst, si, di, ends in pairs_:
                for proto, port in FORWARD_PROBES:
                    flows = [_flow(*ends[t], proto, port) for t in (0, 1)]
                    plain = [evaluate(programs[t], flows[t]).allowed for t in (0, 1)]
                    fwd = [evaluate(programs[t], flows[t], via=via).allowed for t in (0, 1)]
                    rows = [r for r in listed if _covers(r, si, di, flows[0])]
                    if fwd[0] == fwd[1] or plain[0] != plain[1]:
                        assert rows == [], (via, src, dst, proto, port)
                    else:
                        assert len(rows) == 1, (via, src, dst, proto, port, rows)
                        assert (rows[0].before.allowed, rows[0].after.allowed) == tuple(fwd)


def test_forwarded_flows_through_several_host_endpoints() -> None:
    """A new applyOnForward deny selecting a host endpoint on each node (the shape whose cost
    ``forward.py`` shares between endpoints): every forwarded flow through either, exactly."""
    from tests.diff.cluster import load
    from tests.diff.test_cases import API, DB, FWD, FWD_IN, HEP

    heps = HEP % "gw" + "---\n" + (HEP % "gw").replace("node1", "node2").replace(".1.1]", ".1.2]")
    base = load(heps, API, DB % "")
    head = load(heps, API, DB % "", FWD % "true", FWD_IN)
    d = semantic_diff(base, head)
    assert sorted({f.via for f in d.forward}) == ["node1-eth0", "node2-eth0"]
    pods = [str(ip) for e in base.endpoints for ip in e.ips]
    outside = ["172.16.0.1", "8.8.8.8", "10.0.2.200"]
    check_forwarded(base, head, lambda family: pods + outside if family == 4 else [])
