"""Differential test: random small clusters, compiled to nftables, loaded into network
namespaces, probed with real packets — every probe must agree with the evaluator.

Clusters come from the property suite's strategies (``tests/property/strategies.py``): 3-6 pods
on two nodes with labels from a small alphabet, 1-4 policies (namespaced, global, staged) with
random rules — selectors, nets, ports and named ports, protocols, ICMP, Allow/Deny/Pass/Log —
in tiers whose default is Deny or Pass, sometimes a host endpoint with doNotTrack, preDNAT or
applyOnForward policy, network sets and a random defaultEndpointToHostAction.

Probes: TCP/UDP on a few ports and ICMP echo, between every pair of pods and from/to the node,
the host endpoint and outside addresses, in both families. Untracked (doNotTrack) policy also
sees the replies of a connection, which the evaluator does not model; when a cluster has such
policy, only UDP (one packet, no reply) is probed.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.pipeline import compile_program
from tests.property.strategies import OUTSIDERS_V4, OUTSIDERS_V6, resource_sets
from tests.support.compare import run_and_compare
from tests.support.netns import Cluster
from tests.support.topology import NftTopology

pytestmark = pytest.mark.kernel

PORTS = (22, 53, 80, 8080)
EXAMPLES = int(os.environ.get("TORTIE_NFT_DIFF_EXAMPLES", "25"))


def _probes(topo: NftTopology, res: m.ResourceSet, udp_only: bool) -> list:
    sources: list[str] = list(topo.pods)
    sources += [n for n, addrs in topo.node_addrs.items() if addrs]
    sources += sorted(set(topo.externals.values()))
    targets = [str(ip) for e in res.endpoints for ip in e.ips]
    targets += [str(a) for addrs in topo.node_addrs.values() for a in addrs]
    targets += sorted(topo.externals)
    probes = []
    for src, dst in itertools.product(sources, sorted(set(targets))):
        ns = topo.cluster.get(src)
        owner = topo.cluster.owner(dst)
        if owner is ns:
            continue
        version = 4 if "." in dst else 6
        if not any(a.version == version for a in ns.addresses):
            continue
        if not udp_only:
            probes.append(topo.probe(src, dst, "ICMP", None))
        for port in PORTS:
            if not udp_only:
                probes.append(topo.probe(src, dst, "TCP", port))
            probes.append(topo.probe(src, dst, "UDP", port))
    return probes


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    # Shrinking would rebuild namespaces hundreds of times; the failing example is printed whole.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(
    res=resource_sets(),
    outsiders=st.tuples(st.sampled_from(OUTSIDERS_V4), st.sampled_from(OUTSIDERS_V6)),
)
def test_random_clusters_match_evaluator(res: m.ResourceSet, outsiders: tuple[str, str]) -> None:
    sink = DiagnosticSink()
    nodes = sorted({e.node for e in res.endpoints} | {"node1"})
    programs = {node: compile_program(res, node, sink) for node in nodes}
    udp_only = any(p.do_not_track for p in res.policies)
    with Cluster() as cluster:
        topo = NftTopology.build(cluster, programs, externals=outsiders)
        topo.load()
        probes = _probes(topo, res, udp_only)
        errors = run_and_compare(topo, probes, timeout=0.5)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors[:15])
