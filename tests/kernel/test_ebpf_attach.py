"""The eBPF programs attached for real: tc clsact on the ``cali*`` host-side veths of a node
netns (ingress = from the pod = its egress policy, egress = to the pod = its ingress policy),
real TCP/UDP/ICMP probes between pods, an external host and the node, each compared with the
evaluator. Namespaces and the private bpffs are removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from compiler.ir import nodes as ir
from tests.kernel.test_ebpf_support import (
    A_V4,
    A_V6,
    HOST_V4,
    HOST_V6,
    EbpfTopology,
    one_endpoint_program,
    policy,
    requires_bpf,
    rule,
    workload,
)
from tests.support.compare import mismatch_report
from tests.support.netns import Cluster
from tests.support.traffic import send_probes

pytestmark = [pytest.mark.kernel, pytest.mark.clang, requires_bpf]

EXT_V4, EXT_V6 = "192.0.2.10", "2001:db8::10"


def _program(e2h: str) -> ir.Program:
    """a: ingress TCP 80 from set b, ICMP and ICMPv6 echo, then end-of-tier deny; egress UDP
    53 and TCP 8080 to set b, then deny. b and c: no policy (profile allows everything)."""
    t = policy(
        "gnp/a",
        "t0",
        ingress=[
            rule(ir.ALLOW, 0, ip_version=4, protocol=6, src=ir.Side(sets=("s:b:4",)),
                 dst=ir.Side(ports=ir.PortMatch(((80, 80),)))),
            rule(ir.ALLOW, 1, ip_version=6, protocol=6, src=ir.Side(sets=("s:b:6",)),
                 dst=ir.Side(ports=ir.PortMatch(((80, 80),)))),
            rule(ir.ALLOW, 2, ip_version=4, protocol=1, icmp_type=8),
            rule(ir.ALLOW, 3, ip_version=6, protocol=58, icmp_type=128),
        ],
        egress=[
            rule(ir.ALLOW, 0, ip_version=4, protocol=17, dst=ir.Side(ports=ir.PortMatch(((53, 53),)))),
            rule(ir.ALLOW, 1, ip_version=4, protocol=6, dst=ir.Side(sets=("s:b:4",),
                 ports=ir.PortMatch(((8080, 8080),)))),
        ],
    )  # fmt: skip
    allow_all = ir.Profile(
        "kns.x",
        (rule(ir.ALLOW, 0, ip_version=4), rule(ir.ALLOW, 1, ip_version=6)),
        (rule(ir.ALLOW, 0, ip_version=4), rule(ir.ALLOW, 1, ip_version=6)),
    )
    b = workload("ns/b", "calibbbbbbbbbbb", ["10.65.0.2", "fd00:65::2"], {}, ("kns.x",))
    c = workload("ns/c", "caliccccccccccc", ["10.65.0.3", "fd00:65::3"], {}, ("kns.x",))
    return one_endpoint_program(
        [("t0", ir.DENY, [t])], [allow_all], e2h=e2h, extra_endpoints=[b, c]
    )


@pytest.fixture(params=["Drop", "Accept"])
def topo(request: pytest.FixtureRequest) -> Iterator[EbpfTopology]:
    program = _program(request.param)
    with Cluster() as cluster:
        t = EbpfTopology.build(cluster, {"n1": program}, [EXT_V4, EXT_V6])
        try:
            t.load()
            yield t
        finally:
            t.close()


def _probes(t: EbpfTopology):  # type: ignore[no-untyped-def]
    a4, a6, h4, h6 = str(A_V4), str(A_V6), str(HOST_V4), str(HOST_V6)
    out = []
    for src in ("ns/b", "ns/c", f"ext-{EXT_V4}", "n1"):
        for port in (80, 81):
            out.append(t.probe(src, a4, "TCP", port))
        out.append(t.probe(src, a4, "UDP", 53))
        out.append(t.probe(src, a4, "ICMP", None))
    for src in ("ns/b", "ns/c", f"ext-{EXT_V6}", "n1"):
        out.append(t.probe(src, a6, "TCP", 80))
        out.append(t.probe(src, a6, "ICMP", None))
    for dst in ("10.65.0.2", "10.65.0.3", EXT_V4, h4):
        out.append(t.probe("ns/a", dst, "UDP", 53))
        out.append(t.probe("ns/a", dst, "TCP", 8080))
        out.append(t.probe("ns/a", dst, "ICMP", None))
    for dst in ("fd00:65::2", EXT_V6, h6):
        out.append(t.probe("ns/a", dst, "TCP", 8080))
    out.append(t.probe("ns/b", "10.65.0.3", "TCP", 80))
    return out


def test_real_traffic_matches_evaluator(topo: EbpfTopology) -> None:
    probes = _probes(topo)
    results = send_probes(topo.cluster, probes, timeout=0.5)
    errors = mismatch_report(topo, results)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors)
    # Both outcomes occur, so the test can tell a dead or an open dataplane from a working one.
    assert any(results.values()) and not all(results.values())
    # The programs are really attached: a second run still agrees (conntrack state from the
    # first run must not change verdicts of new flows, which use fresh source ports).
    again = send_probes(topo.cluster, _probes(topo), timeout=0.5)
    assert not mismatch_report(topo, again)


def test_programs_are_attached_at_both_hooks(topo: EbpfTopology) -> None:
    node = topo.nodes["n1"]
    for iface in ("caliaaaaaaaaaaa", "calibbbbbbbbbbb"):
        for hook in ("ingress", "egress"):
            out = node.run(["tc", "filter", "show", "dev", iface, hook]).stdout
            assert "tortie_main" in out and "direct-action" in out, out
