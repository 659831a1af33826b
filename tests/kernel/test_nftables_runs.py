"""Run merging in the kernel: policies of many simple rules, loaded, probed with real packets.

The nftables target turns runs of consecutive simple rules with the same action into one lookup
in a concatenated interval set (compiler/targets/nftables/runs.py). Here random clusters (the
property suite's) get policies whose rule lists are built to exercise that: runs of Allow, Deny
and Pass rules over overlapping CIDRs of both families, with and without protocols and port
ranges, broken by Log rules, negations, selectors and named ports (the ordinary random rules).
Every probe must agree with the evaluator, and the scripts must really contain merged runs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.ir.nodes import Program
from compiler.pipeline import compile_program
from compiler.targets.nftables import chains, render_program
from tests.property.strategies import (
    CIDRS_V4,
    CIDRS_V6,
    OUTSIDERS_V4,
    OUTSIDERS_V6,
    PORT_POOL,
    policies,
    resource_sets,
    rules,
)
from tests.support.compare import run_and_compare
from tests.support.netns import Cluster
from tests.support.topology import NftTopology

pytestmark = pytest.mark.kernel

PORTS = (22, 53, 80, 8080)
EXAMPLES = int(os.environ.get("TORTIE_NFT_RUNS_EXAMPLES", "25"))
TCP, UDP = 6, 17


@st.composite
def simple_rules(draw: st.DrawFn, line: int, action: str, family: int) -> m.Rule:
    """A rule that can join a run: positive nets, protocol, numeric destination ports."""
    pool = CIDRS_V4 if family == 4 else CIDRS_V6
    protocol = draw(st.sampled_from((None, TCP, UDP, TCP)))
    nets = tuple(ipaddress.ip_network(x) for x in draw(st.lists(st.sampled_from(pool), max_size=2)))
    ports: tuple[m.PortSpec, ...] = ()
    if protocol is not None and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                p = draw(st.sampled_from(PORT_POOL))
                ports += (m.PortSpec(p, p),)
            else:
                ports += (m.PortSpec(50, 80) if draw(st.booleans()) else m.PortSpec(8000, 8080),)
    src_side = draw(st.booleans())
    entity = m.EntityRule(nets=nets, ports=() if src_side else ports)
    dst = m.EntityRule(ports=ports) if src_side else entity
    src = entity if src_side else m.EntityRule()
    return m.Rule(
        action=action,
        ip_version=family if not nets or draw(st.booleans()) else None,
        protocol=protocol,
        source=src,
        destination=dst,
        span=m.Span("gen.yaml", line, 5),
    )


@st.composite
def run_lists(draw: st.DrawFn, base_line: int) -> tuple[m.Rule, ...]:
    out: list[m.Rule] = []
    for _ in range(draw(st.integers(1, 4))):
        line = base_line + len(out)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(rules(line)))  # anything: often breaks the run
            continue
        action = draw(st.sampled_from(("Allow", "Deny", "Pass", "Allow")))
        family = draw(st.sampled_from((4, 4, 6)))
        for k in range(draw(st.integers(2, 5))):
            out.append(draw(simple_rules(line + k, action, family)))
    return tuple(out)


@st.composite
def clusters(draw: st.DrawFn) -> m.ResourceSet:
    res = draw(resource_sets())
    policies = []
    for i, pol in enumerate(res.policies):
        ingress = draw(run_lists(100 * i + 10)) if "Ingress" in pol.types else ()
        egress = draw(run_lists(100 * i + 50)) if "Egress" in pol.types else ()
        policies.append(dataclasses.replace(pol, ingress=ingress, egress=egress, staged=False))
    return dataclasses.replace(res, policies=tuple(policies))


@st.composite
def rule_lists_any(draw: st.DrawFn, i: int) -> tuple[m.Rule, ...]:
    return tuple(draw(rules(100 * i + 10 + k)) for k in range(draw(st.integers(1, 3))))


@st.composite
def many_policy_clusters(draw: st.DrawFn) -> m.ResourceSet:
    """Tiers of 9-16 policies that mostly select every pod: long tiers go through shared
    sequence chains (chains.py), with Allow, Deny and Pass policies at any position."""
    res = draw(resource_sets())
    out = []
    for i in range(draw(st.integers(12, 18))):
        pol = draw(policies(i))
        if pol.kind != "NetworkPolicy" and (pol.do_not_track or pol.pre_dnat):
            pol = dataclasses.replace(pol, do_not_track=False, pre_dnat=False)
        tier = draw(st.sampled_from(("default",) * 5 + ("t1",)))
        selector = "all()" if draw(st.integers(0, 3)) else pol.selector
        ingress = draw(run_lists(100 * i + 10)) if draw(st.booleans()) else draw(rule_lists_any(i))
        types = pol.types if "Ingress" in pol.types else ("Ingress", *pol.types)
        out.append(
            dataclasses.replace(
                pol, tier=tier, selector=selector, staged=False, types=types, ingress=ingress
            )
        )
    return dataclasses.replace(res, policies=tuple(out))


def _probes(topo: NftTopology, res: m.ResourceSet, udp_only: bool) -> list:
    sources: list[str] = list(topo.pods)
    sources += [n for n, addrs in topo.node_addrs.items() if addrs]
    sources += sorted(set(topo.externals.values()))
    targets = [str(ip) for e in res.endpoints for ip in e.ips]
    targets += sorted(topo.externals)
    probes = []
    for src, dst in itertools.product(sources, sorted(set(targets))):
        ns = topo.cluster.get(src)
        if topo.cluster.owner(dst) is ns:
            continue
        version = 4 if "." in dst else 6
        if not any(a.version == version for a in ns.addresses):
            continue
        for port in PORTS:
            if not udp_only:
                probes.append(topo.probe(src, dst, "TCP", port))
            probes.append(topo.probe(src, dst, "UDP", port))
    return probes


def _programs(res: m.ResourceSet) -> dict[str, Program]:
    """Every node of ``res`` (node1 always), compiled."""
    sink = DiagnosticSink()
    nodes = sorted({e.node for e in res.endpoints} | {"node1"})
    return {node: compile_program(res, node, sink) for node in nodes}


def _assert_kernel_agrees(
    res: m.ResourceSet,
    programs: dict[str, Program],
    outsiders: tuple[str, str],
    scripts: dict[str, str] | None = None,
) -> None:
    """Load the programs (or the given scripts) into a cluster of namespaces and check that
    real probes are decided as the reference evaluator says."""
    udp_only = any(p.do_not_track for p in res.policies)
    with Cluster() as cluster:
        topo = NftTopology.build(cluster, programs, externals=outsiders)
        topo.load(scripts)
        probes = _probes(topo, res, udp_only)
        errors = run_and_compare(topo, probes, timeout=0.5)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors[:15])


MERGED = {"runs": 0, "examples": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(
    res=clusters(),
    outsiders=st.tuples(st.sampled_from(OUTSIDERS_V4), st.sampled_from(OUTSIDERS_V6)),
)
def test_merged_runs_match_evaluator(res: m.ResourceSet, outsiders: tuple[str, str]) -> None:
    programs = _programs(res)
    MERGED["examples"] += 1
    MERGED["runs"] += sum(render_program(p).script.count("one lookup)") for p in programs.values())
    _assert_kernel_agrees(res, programs, outsiders)


SEQUENCES = {"sequences": 0, "examples": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(
    res=many_policy_clusters(),
    outsiders=st.tuples(st.sampled_from(OUTSIDERS_V4), st.sampled_from(OUTSIDERS_V6)),
)
def test_policy_sequences_match_evaluator(res: m.ResourceSet, outsiders: tuple[str, str]) -> None:
    programs = _programs(res)
    SEQUENCES["examples"] += 1
    SEQUENCES["sequences"] += sum(
        render_program(p).script.count("\tchain seq-") for p in programs.values()
    )
    _assert_kernel_agrees(res, programs, outsiders)


NESTED = {"nested": 0, "examples": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(
    res=many_policy_clusters(),
    outsiders=st.tuples(st.sampled_from(OUTSIDERS_V4), st.sampled_from(OUTSIDERS_V6)),
)
def test_nested_sequences_match_evaluator(res: m.ResourceSet, outsiders: tuple[str, str]) -> None:
    """Level-2 sequence chains (chunks of chunks) with tiny chunks, so a tier of 9-16
    policies goes endpoint -> seq2 -> seq -> policy, and every guard and return is crossed."""
    with (
        mock.patch.object(chains, "SEQUENCE_MIN", 2),
        mock.patch.object(chains, "CHUNK_MASK", 1),
    ):
        programs = _programs(res)
        scripts = {node: render_program(p).script for node, p in programs.items()}
    NESTED["examples"] += 1
    NESTED["nested"] += sum(s.count("\tchain seq2-") for s in scripts.values())
    _assert_kernel_agrees(res, programs, outsiders, scripts)


def test_examples_contained_nested_sequences() -> None:
    if NESTED["examples"] == 0:
        pytest.skip("the property test did not run")
    assert NESTED["nested"] > 0, NESTED


def test_examples_contained_merged_runs() -> None:
    """The property above is only worth something if its scripts held merged runs."""
    if MERGED["examples"] == 0:
        pytest.skip("the property test did not run")
    assert MERGED["runs"] > 0, MERGED


def test_examples_contained_sequences() -> None:
    if SEQUENCES["examples"] == 0:
        pytest.skip("the property test did not run")
    assert SEQUENCES["sequences"] > 0, SEQUENCES
