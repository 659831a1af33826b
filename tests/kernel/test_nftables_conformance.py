"""Every conformance case through the nftables target with real connections.

Per case: the YAML is compiled for every node that has endpoints, each node netns loads its own
script, pods get the interfaces and IPs the program gives them, and every outside address the
case names becomes an external host behind the first node. Each check (one protocol and port,
every pair of its table) is one test: a probe must arrive exactly when the case expects it
**and** when the evaluator allows it. SCTP checks are skipped when the kernel has no SCTP.
(The shared steps are :mod:`tests.support.conformance`.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.loader import load_cases
from tests.support.conformance import CaseClusters, assert_check
from tests.support.topology import NftTopology
from tests.support.traffic import sctp_available

pytestmark = pytest.mark.kernel

CASES = {case.name: case for case in load_cases()}
PARAMS = [(name, i) for name, case in sorted(CASES.items()) for i in range(len(case.checks))]


@pytest.fixture(scope="module")
def clusters() -> Iterator[CaseClusters]:
    clusters = CaseClusters()
    yield clusters
    clusters.close()


@pytest.mark.parametrize(("case_name", "index"), PARAMS, ids=[f"{n}[{i}]" for n, i in PARAMS])
def test_conformance_case(clusters: CaseClusters, case_name: str, index: int) -> None:
    case = CASES[case_name]
    check = case.checks[index]
    if check.protocol == "SCTP" and not sctp_available():
        pytest.skip("this kernel cannot open SCTP sockets (no sctp module): SCTP probes skipped")
    topo = clusters.topology(case.name, case, NftTopology.build)
    assert_check(topo, case, check)
