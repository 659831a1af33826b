"""Every conformance case through the iptables target with real connections, on both backends.

Per case and backend: the YAML is compiled for every node that has endpoints, each node netns
applies its own artifact (ipset restore, then iptables-restore --noflush), pods get the
interfaces and IPs the program gives them, and every outside address the case names becomes an
external host behind the first node. Each check (one protocol and port, every pair of its table)
is one test: a probe must arrive exactly when the case expects it **and** when the evaluator
allows it. SCTP checks are skipped when the kernel has no SCTP. (The shared steps are
:mod:`tests.support.conformance`.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from compiler.ir.nodes import Program
from tests.conformance.loader import load_cases
from tests.support.conformance import CaseClusters, assert_check
from tests.support.iptables import BACKENDS, backend_skip_reason
from tests.support.netns import Cluster
from tests.support.topology import IptTopology
from tests.support.traffic import sctp_available

pytestmark = pytest.mark.kernel

CASES = {case.name: case for case in load_cases()}
PARAMS = [
    (backend, name, i)
    for backend in BACKENDS
    for name, case in sorted(CASES.items())
    for i in range(len(case.checks))
]


@pytest.fixture(scope="module")
def clusters() -> Iterator[CaseClusters]:
    clusters = CaseClusters()
    yield clusters
    clusters.close()


@pytest.mark.parametrize(
    ("backend", "case_name", "index"), PARAMS, ids=[f"{b}-{n}[{i}]" for b, n, i in PARAMS]
)
def test_conformance_case(clusters: CaseClusters, backend: str, case_name: str, index: int) -> None:
    reason = backend_skip_reason(backend)
    if reason:
        pytest.skip(reason)
    case = CASES[case_name]
    check = case.checks[index]
    if check.protocol == "SCTP" and not sctp_available():
        pytest.skip("this kernel cannot open SCTP sockets (no sctp module): SCTP probes skipped")

    def build(cluster: Cluster, programs: dict[str, Program], outside: set[str]) -> IptTopology:
        return IptTopology.make(cluster, programs, backend, externals=outside)

    topo = clusters.topology((backend, case.name), case, build)
    assert_check(topo, case, check, tag=f"{backend} ")
