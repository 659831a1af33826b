"""The runtime tests' demo cluster: one node ``n1`` with pods a, b and c, written as YAML
(:func:`cluster_yaml`, with knobs for what a test changes) and compiled for a target.

Plain data, no kernel: the kernel tests build a node to match it with
:func:`tests.support.runtime_world.world`; unit tests use the YAML and artifacts alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from compiler.artifact import write_artifact
from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.ir.nodes import Program
from compiler.pipeline import compile_program
from compiler.targets import get_target

NODE = "n1"
NODE_V4 = "192.168.100.1"
EXT_V4 = "192.168.100.2"
POD_IPS = {"a": "10.65.0.1", "b": "10.65.0.2", "c": "10.65.0.3"}
FLOW_TCP, FLOW_UDP = 5000, 6000  # a -> b, allowed by every variant

_BASE = """\
apiVersion: v1
kind: Node
metadata:
  name: n1
  annotations: {projectcalico.org/IPv4Address: 192.168.100.1/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
%(hep)s---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-deny-all}
spec:
  selector: role == 'uplink'
  types: [Ingress, Egress]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]
  failsafeOutboundHostPorts: [{protocol: TCP, port: 22}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: demo}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: TCP, port: 5000}, {protocol: UDP, port: 6000}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-unrelated, namespace: demo}
spec:
  podSelector: {matchLabels: {app: c}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{protocol: TCP, port: %(unrelated_port)d}]
"""

_POD = """\
---
apiVersion: v1
kind: Pod
metadata: {name: %(name)s, namespace: demo, labels: {app: %(name)s%(extra)s}}
spec: {nodeName: n1}
status: {podIP: %(ip)s, podIPs: [{ip: %(ip)s}]}
"""


_HEP = """\
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth0, labels: {role: uplink}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.100.1]}
"""


def cluster_yaml(
    unrelated_port: int = 7000, clients: Sequence[str] = ("a",), host_endpoint: bool = True
) -> str:
    """The fixture: pods a, b, c on n1; b admits TCP 5000 / UDP 6000 from pods labelled
    ``role: client`` (``clients``); c admits ``unrelated_port``; the uplink eth0 is a host
    endpoint with a deny-all policy and failsafe TCP 22 (unless ``host_endpoint`` is False:
    the eBPF target programs workloads only)."""
    text = _BASE % {"unrelated_port": unrelated_port, "hep": _HEP if host_endpoint else ""}
    for name, ip in sorted(POD_IPS.items()):
        extra = ", role: client" if name in clients else ""
        text += _POD % {"name": name, "ip": ip, "extra": extra}
    return text


def compile_yaml(text: str, target: str = "nftables") -> tuple[Program, object]:
    """(program, artifact) for node n1."""
    sink = DiagnosticSink()
    sources = SourceRegistry()
    resources = load_text(text, "cluster.yaml", sink, sources)
    program = compile_program(resources, NODE, sink)
    tgt = get_target(target)
    tgt.check(program, sink)
    assert not sink.has_errors, [d.message for d in sink.sorted()]
    digest = hashlib.sha256(text.encode()).hexdigest()
    artifact = dataclasses.replace(tgt.render(program), inputs={"cluster.yaml": digest})
    return program, artifact


def compile_dir(text: str, out: Path, target: str = "nftables") -> Path:
    _, artifact = compile_yaml(text, target)
    return write_artifact(artifact, out)  # type: ignore[arg-type]
