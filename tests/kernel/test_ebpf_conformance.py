"""Every conformance case through the eBPF target with real connections (as the nftables
conformance test does it): per case the YAML is compiled for every node, each node loads its
artifact into a private bpffs and attaches the programs to its pods' ``cali*`` veths, and every
check's probes must arrive exactly when the case expects and the evaluator allows.

Cases the target rejects in ``check()`` (host endpoints, error E830) are skipped with the
diagnostic as the reason. SCTP checks are skipped when the kernel has no SCTP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.pipeline import compile_program
from compiler.targets.ebpf import EbpfTarget
from tests.conformance.loader import Case, Check, load_cases
from tests.kernel.test_ebpf_support import EbpfTopology, requires_bpf
from tests.support.compare import mismatch_report
from tests.support.netns import Cluster
from tests.support.traffic import Probe, sctp_available, send_probes

pytestmark = [pytest.mark.kernel, pytest.mark.clang, requires_bpf]

CASES = {case.name: case for case in load_cases()}
PARAMS = [(name, i) for name, case in sorted(CASES.items()) for i in range(len(case.checks))]


class _Current:
    """One cluster at a time: the checks of a case share it, the next case replaces it."""

    name: str | None = None
    cluster: Cluster | None = None
    topo: EbpfTopology | None = None
    unsupported: str | None = None

    def close(self) -> None:
        if self.topo is not None:
            self.topo.close()
        if self.cluster is not None:
            self.cluster.close()
        self.cluster = self.topo = self.name = self.unsupported = None


@pytest.fixture(scope="module")
def current() -> Iterator[_Current]:
    cur = _Current()
    yield cur
    cur.close()


def _outside_addresses(case: Case) -> set[str]:
    out = set()
    for check in case.checks:
        for pair in check.expected:
            out.update(x for x in pair if "/" not in x and not x.startswith("host:"))
    return out


def _topology(cur: _Current, case: Case) -> EbpfTopology:
    if cur.name == case.name:
        if cur.unsupported is not None:
            pytest.skip(cur.unsupported)
        assert cur.topo is not None
        return cur.topo
    cur.close()
    cur.name = case.name
    sink, sources = DiagnosticSink(), SourceRegistry()
    resources = load_text(case.documents_yaml_text, f"{case.name}.yaml", sink, sources)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    nodes = sorted({e.node for e in resources.endpoints})
    programs = {node: compile_program(resources, node, sink) for node in nodes}
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    target_sink = DiagnosticSink()
    for program in programs.values():
        EbpfTarget().check(program, target_sink)
    if target_sink.has_errors:
        cur.unsupported = "eBPF target: " + "; ".join(
            sorted({d.message for d in target_sink.errors})
        )
        pytest.skip(cur.unsupported)
    cur.cluster = Cluster()
    cur.topo = EbpfTopology.build(cur.cluster, programs, _outside_addresses(case))
    cur.topo.load()
    return cur.topo


def _source_key(topo: EbpfTopology, name: str) -> str:
    if "/" in name:
        return topo.pods[name]
    for node, addrs in topo.node_addrs.items():
        if name in map(str, addrs):
            return node
    return topo.externals[name]


def _dest_ip(topo: EbpfTopology, name: str, family: int) -> str:
    if "/" in name:
        ep = next(e for e in topo.program.endpoints if e.id == name)
        return str(next(ip for ip in ep.ips if ip.version == family))
    return name


@pytest.mark.parametrize(("case_name", "index"), PARAMS, ids=[f"{n}[{i}]" for n, i in PARAMS])
def test_ebpf_conformance_case(current: _Current, case_name: str, index: int) -> None:
    case = CASES[case_name]
    check: Check = case.checks[index]
    if check.protocol == "SCTP" and not sctp_available():
        pytest.skip("this kernel cannot open SCTP sockets (no sctp module): SCTP probes skipped")
    topo = _topology(current, case)
    probes: dict[Probe, bool] = {}
    for (src, dst), allowed in sorted(check.expected.items()):
        dst_ip = _dest_ip(topo, dst, check.family)
        assert ipaddress.ip_address(dst_ip).version == check.family
        probe = topo.probe(_source_key(topo, src), dst_ip, check.protocol, check.port)
        probes[probe] = allowed
    results = send_probes(topo.cluster, list(probes), timeout=0.5)
    label = f"{case.name} [{check.protocol} {check.port or ''} v{check.family}] "
    errors = mismatch_report(topo, results, probes, label)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors[:20])
