"""Conformance cases (``tests/conformance/``) through a target with real connections.

Per case: the YAML is compiled for every node that has endpoints, each node netns loads its own
artifact, pods get the interfaces and IPs the program gives them, and every outside address the
case names becomes an external host behind the first node (:class:`CaseClusters`). One check
(one protocol and port, every pair of its table) is one test (:func:`assert_check`): a probe
must arrive exactly when the case expects it **and** when the evaluator allows it.

The target's test module says only how a topology loads (which :class:`Topology` subclass).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable
from typing import TypeVar

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.ir.nodes import Program
from compiler.pipeline import compile_program
from tests.conformance.loader import Case, Check
from tests.support.compare import mismatch_report
from tests.support.netns import Cluster
from tests.support.topology import Topology
from tests.support.traffic import Probe, send_probes

T = TypeVar("T", bound=Topology)


def compile_case(case: Case) -> dict[str, Program]:
    """node -> program, for every node of the case that has endpoints."""
    sink, sources = DiagnosticSink(), SourceRegistry()
    resources = load_text(case.documents_yaml_text, f"{case.name}.yaml", sink, sources)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    nodes = sorted({e.node for e in resources.endpoints})
    programs = {node: compile_program(resources, node, sink) for node in nodes}
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    return programs


def outside_addresses(case: Case) -> set[str]:
    """Addresses the case's tables name that no pod or host endpoint owns."""
    out = set()
    for check in case.checks:
        for pair in check.expected:
            out.update(x for x in pair if "/" not in x and not x.startswith("host:"))
    return out


class CaseClusters:
    """One cluster at a time: the checks of a case share it, the next case replaces it."""

    def __init__(self) -> None:
        self.key: Hashable | None = None
        self.cluster: Cluster | None = None
        self.topo: Topology | None = None

    def topology(
        self, key: Hashable, case: Case, build: Callable[[Cluster, dict[str, Program], set[str]], T]
    ) -> T:
        """The loaded topology for ``key`` (the case, and whatever else the target varies):
        the current one, or a new one from ``build(cluster, programs, outside addresses)``."""
        if self.key == key and self.topo is not None:
            return self.topo  # type: ignore[return-value]
        self.close()
        programs = compile_case(case)
        self.cluster = Cluster()
        topo = build(self.cluster, programs, outside_addresses(case))
        self.topo = topo
        topo.load()
        self.key = key
        return topo

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = self.topo = self.key = None


def source_key(topo: Topology, name: str) -> str:
    """The netns a table's source name stands for: a pod, a host endpoint's node, a node
    address's node or an external host."""
    if "/" in name:
        return topo.pods[name]
    if name.startswith("host:"):
        hep = next(e for e in topo.program.endpoints if e.is_host and e.id == name[5:])
        return hep.node
    for node, addrs in topo.node_addrs.items():
        if name in map(str, addrs):
            return node
    return topo.externals[name]


def dest_ip(topo: Topology, name: str, family: int) -> str:
    """The address of ``family`` a table's destination name stands for."""
    if "/" in name or name.startswith("host:"):
        eid = name[5:] if name.startswith("host:") else name
        ep = next(e for e in topo.program.endpoints if e.id == eid)
        return str(next(ip for ip in ep.ips if ip.version == family))
    return name


def assert_check(topo: Topology, case: Case, check: Check, tag: str = "") -> None:
    """Probe every pair of ``check``'s table; fail with an explanation per disagreement.
    ``tag`` goes into each explanation's label (e.g. the backend)."""
    probes: dict[Probe, bool] = {}
    for (src, dst), allowed in sorted(check.expected.items()):
        dst_ip = dest_ip(topo, dst, check.family)
        assert ipaddress.ip_address(dst_ip).version == check.family
        probe = topo.probe(source_key(topo, src), dst_ip, check.protocol, check.port)
        probes[probe] = allowed
    results = send_probes(topo.cluster, list(probes), timeout=0.5)
    label = f"{case.name} [{tag}{check.protocol} {check.port or ''} v{check.family}] "
    errors = mismatch_report(topo, results, probes, label)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors[:20])
