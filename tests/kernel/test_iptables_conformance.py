"""Every conformance case through the iptables target with real connections, on both backends.

Per case and backend: the YAML is compiled for every node that has endpoints, each node netns
applies its own artifact (ipset restore, then iptables-restore --noflush), pods get the
interfaces and IPs the program gives them, and every outside address the case names becomes an
external host behind the first node. Each check (one protocol and port, every pair of its table)
is one test: a probe must arrive exactly when the case expects it **and** when the evaluator
allows it. SCTP checks are skipped when the kernel has no SCTP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.pipeline import compile_program
from tests.conformance.loader import Case, Check, load_cases
from tests.kernel.test_iptables_support import BACKENDS, IptTopology, backend_skip_reason
from tests.kernel.test_nftables_support import mismatch_report
from tests.support.netns import Cluster
from tests.support.traffic import Probe, sctp_available, send_probes

pytestmark = pytest.mark.kernel

CASES = {case.name: case for case in load_cases()}
PARAMS = [
    (backend, name, i)
    for backend in BACKENDS
    for name, case in sorted(CASES.items())
    for i in range(len(case.checks))
]


class _Current:
    """One cluster at a time: the checks of a case share it, the next case replaces it."""

    key: tuple[str, str] | None = None
    cluster: Cluster | None = None
    topo: IptTopology | None = None


@pytest.fixture(scope="module")
def current() -> Iterator[_Current]:
    cur = _Current()
    yield cur
    if cur.cluster is not None:
        cur.cluster.close()


def _outside_addresses(case: Case) -> set[str]:
    out = set()
    for check in case.checks:
        for pair in check.expected:
            out.update(x for x in pair if "/" not in x and not x.startswith("host:"))
    return out


def _topology(cur: _Current, case: Case, backend: str) -> IptTopology:
    if cur.key == (backend, case.name) and cur.topo is not None:
        return cur.topo
    if cur.cluster is not None:
        cur.cluster.close()
        cur.cluster = cur.topo = cur.key = None
    sink, sources = DiagnosticSink(), SourceRegistry()
    resources = load_text(case.documents_yaml_text, f"{case.name}.yaml", sink, sources)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    nodes = sorted({e.node for e in resources.endpoints})
    programs = {node: compile_program(resources, node, sink) for node in nodes}
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    cur.cluster = Cluster()
    cur.topo = IptTopology.make(cur.cluster, programs, backend, externals=_outside_addresses(case))
    cur.topo.load()
    cur.key = (backend, case.name)
    return cur.topo


def _source_key(topo: IptTopology, name: str) -> str:
    if "/" in name:
        return topo.pods[name]
    if name.startswith("host:"):
        hep = next(e for e in topo.program.endpoints if e.is_host and e.id == name[5:])
        return hep.node
    for node, addrs in topo.node_addrs.items():
        if name in map(str, addrs):
            return node
    return topo.externals[name]


def _dest_ip(topo: IptTopology, name: str, family: int) -> str:
    if "/" in name or name.startswith("host:"):
        eid = name[5:] if name.startswith("host:") else name
        ep = next(e for e in topo.program.endpoints if e.id == eid)
        return str(next(ip for ip in ep.ips if ip.version == family))
    return name


@pytest.mark.parametrize(
    ("backend", "case_name", "index"), PARAMS, ids=[f"{b}-{n}[{i}]" for b, n, i in PARAMS]
)
def test_conformance_case(current: _Current, backend: str, case_name: str, index: int) -> None:
    reason = backend_skip_reason(backend)
    if reason:
        pytest.skip(reason)
    case = CASES[case_name]
    check: Check = case.checks[index]
    if check.protocol == "SCTP" and not sctp_available():
        pytest.skip("this kernel cannot open SCTP sockets (no sctp module): SCTP probes skipped")
    topo = _topology(current, case, backend)
    probes: dict[Probe, bool] = {}
    for (src, dst), allowed in sorted(check.expected.items()):
        dst_ip = _dest_ip(topo, dst, check.family)
        assert ipaddress.ip_address(dst_ip).version == check.family
        probe = topo.probe(_source_key(topo, src), dst_ip, check.protocol, check.port)
        probes[probe] = allowed
    results = send_probes(topo.cluster, list(probes), timeout=0.5)
    label = f"{case.name} [{backend} {check.protocol} {check.port or ''} v{check.family}] "
    errors = mismatch_report(topo, results, probes, label)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors[:20])
