"""Forwarded traffic through a named host endpoint under doNotTrack and preDNAT policy, in a
real kernel, for every target (nftables, iptables on both backends, eBPF).

A flow entering node1 through the ``eth0`` HEP and forwarded to a pod meets, in order
(``compiler/ir/evaluate.py``): the inbound failsafe ports (which skip the next two steps), the
HEP's doNotTrack ingress tiers (Deny drops; Allow accepts it untracked and skips the HEP's
preDNAT and applyOnForward tiers), its preDNAT tiers (Deny drops) and its applyOnForward ingress
tiers, then the pod's own ingress policy. A pod's flow leaving through ``eth0`` does not meet
the HEP's doNotTrack egress policy (raw OUTPUT sees only locally generated packets). Traffic
entering through an uplink that is not a HEP (``x0``) is not affected.

The verdicts below are written by hand from those rules; the test checks that the evaluator
(told the HEP with ``via=``) agrees with them, and that every target delivers exactly those
probes. Untracked flows are probed with UDP only (the reply of an untracked TCP or ICMP flow
is not part of any tracked connection, so it is a matter of reply rules, not of this order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from compiler.ir.evaluate import evaluate
from compiler.ir.nodes import Program
from tests.kernel.test_ebpf_support import EbpfTopology, bpf_skip_reason
from tests.support.compare import mismatch_report
from tests.support.iptables import backend_params
from tests.support.netns import Cluster
from tests.support.topology import IptTopology, NftTopology, Topology
from tests.support.traffic import Probe, send_probes
from tests.targets.test_iptables_programs import _NAMESPACES, _NODES, _pod, compile_yaml

pytestmark = pytest.mark.kernel

YAML = (
    _NAMESPACES
    + _pod("shop", "web", 1, "{app: web}")
    + _pod("ops", "probe", 4, "{app: probe}")
    + _NODES
    + """
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: uplink}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.168.100.1, "fd00:100::1"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec:
  order: 10
  selector: role == "uplink"
  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress:
    - {action: Deny, protocol: UDP, destination: {ports: [5000]}}
    - {action: Deny, protocol: TCP, destination: {ports: [22]}}
    - {action: Allow, protocol: UDP, destination: {ports: [5001, 5003, 5004]}}
  egress:
    - {action: Deny, protocol: UDP, destination: {ports: [5000]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat}
spec:
  order: 20
  selector: role == "uplink"
  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
    - {action: Deny, protocol: UDP, destination: {ports: [5002, 5003]}}
    - {action: Deny, protocol: TCP, destination: {ports: [30080]}}
    - {action: Allow, protocol: TCP, destination: {ports: [80]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward}
spec:
  order: 30
  selector: role == "uplink"
  applyOnForward: true
  types: [Ingress]
  ingress:
    - {action: Deny, protocol: UDP, destination: {ports: [5004, 5005]}}
    - {action: Allow}
"""
)

EXT = "198.18.50.2"  # behind eth0 (the HEP)
OTHER = "203.0.113.9"  # behind x0 (no HEP)
PODS = ("10.65.0.1", "10.65.0.4")

# (source, destination, protocol, port) -> delivered
IN_EXPECTED = {
    ("UDP", 5000): False,  # doNotTrack Deny
    ("UDP", 5001): True,  # doNotTrack Allow
    ("UDP", 5002): False,  # preDNAT Deny
    ("UDP", 5003): True,  # doNotTrack Allow skips the preDNAT Deny
    ("UDP", 5004): True,  # doNotTrack Allow skips the applyOnForward Deny
    ("UDP", 5005): False,  # applyOnForward Deny
    ("UDP", 5006): True,  # no Deny anywhere
    ("TCP", 22): True,  # failsafe port: skips the doNotTrack Deny
    ("TCP", 30080): False,  # preDNAT Deny
    ("TCP", 80): True,  # preDNAT Allow, applyOnForward Allow
    ("TCP", 8080): True,
}


def _program() -> Program:
    return compile_yaml(YAML)


def _probes(topo: Topology) -> dict[Probe, bool]:
    out: dict[Probe, bool] = {}
    for pod in PODS:
        for (proto, port), allowed in IN_EXPECTED.items():
            out[topo.probe("ext-eth0", pod, proto, port)] = allowed
            out[topo.probe(topo.externals[OTHER], pod, proto, port)] = True  # x0: no HEP
    for pod_id in ("shop/web", "ops/probe"):
        for port in (5000, 5001, 5006):
            # Leaving through eth0: the HEP's doNotTrack egress Deny does not apply.
            out[topo.probe(pod_id, EXT, "UDP", port)] = True
    return out


def _check(topo: Topology) -> None:
    probes = _probes(topo)
    for probe, allowed in probes.items():
        via = topo.via(probe)
        assert via == ("node1-eth0" if probe.src == "ext-eth0" or probe.dst_ip == EXT else None)
        assert evaluate(topo.program, topo.flow(probe), via=via).allowed is allowed, probe
    results = send_probes(topo.cluster, list(probes), timeout=1.0)
    errors = mismatch_report(topo, results, probes)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors)


def _build(cls: type[Topology], cluster: Cluster, **kw: object) -> Topology:
    return cls.build(
        cluster,
        {"node1": _program()},
        externals=[OTHER],
        uplinks=[("eth0", "198.18.50.1", None, EXT, None)],
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


def test_nftables_forward_through_hep(cluster: Cluster) -> None:
    topo = _build(NftTopology, cluster)
    topo.load()
    _check(topo)


@pytest.mark.parametrize("backend", backend_params())
def test_iptables_forward_through_hep(cluster: Cluster, backend: str) -> None:
    topo = IptTopology.make(
        cluster,
        {"node1": _program()},
        backend,
        externals=[OTHER],
        uplinks=[("eth0", "198.18.50.1", None, EXT, None)],
    )
    topo.load()
    _check(topo)


@pytest.mark.clang
@pytest.mark.skipif(bpf_skip_reason() is not None, reason=str(bpf_skip_reason()))
def test_ebpf_forward_through_hep(cluster: Cluster) -> None:
    topo = _build(EbpfTopology, cluster)
    assert isinstance(topo, EbpfTopology)
    with contextlib.ExitStack() as stack:
        stack.callback(topo.close)
        topo.load()
        _check(topo)
