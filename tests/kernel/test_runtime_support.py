"""Support for the runtime's kernel tests: a small cluster's YAML, compiled artifacts, a node
built to match, and the ``tortie`` CLI run against that node's network namespace.

(Kept in a ``test_runtime_*`` module next to the tests using it; its own tests at the bottom
check the fixture itself.)

The runtime runs in the test process's namespaces and sends every kernel command into the
node's netns (``Env.netns`` / the hidden ``--netns`` CLI option); state dirs and bpffs mounts
are temporary directories. Nothing touches the root namespace's ruleset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.artifact import write_artifact
from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.ir.nodes import Program
from compiler.pipeline import compile_program
from compiler.targets import get_target
from compiler.tools import nft
from runtime.plan import Env
from runtime.state import StateDir
from tests.support.netns import Cluster, External, Node

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
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


CLI = [sys.executable, "-c", "from compiler.cli import main; main()"]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class World:
    """One node netns with pods a, b, c and an external host behind eth0."""

    cluster: Cluster
    node: Node
    ext: External
    env: Env
    state_dir: Path

    def cli(self, *args: str, timeout: float = 120) -> Ran:
        """``tortie ARGS`` aimed at this node (netns, state dir), in-process (click's runner)."""
        from click.testing import CliRunner

        from compiler.cli import main

        result = CliRunner().invoke(main, list(args), env=cli_env(self), catch_exceptions=False)
        return Ran(result.exit_code, result.stdout, result.stderr)

    def cli_process(self, *args: str, timeout: float = 120) -> Ran:
        """``tortie ARGS`` as a subprocess (for concurrency and kill tests)."""
        proc = subprocess.run(
            [*CLI, *args],
            cwd=ROOT,
            env=cli_env(self),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def nft_table(self) -> str | None:
        try:
            return nft.list_table("inet", "tortie", netns=self.node.name)
        except nft.NftError:
            return None


def cli_env(world: World) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TORTIE_NETNS=world.node.name,
        TORTIE_STATE_DIR=str(world.state_dir),
        TORTIE_BPFFS=str(world.env.bpffs),
        PYTHONPATH=str(ROOT),
    )
    return env


@contextmanager
def world(tmp_path: Path, program: Program | None = None) -> Iterator[World]:
    """A cluster matching the fixture (pod interfaces as the compiler named them)."""
    if program is None:
        program, _ = compile_yaml(cluster_yaml())
    with Cluster() as cluster:
        node = cluster.add_node(NODE)
        ext = node.add_uplink("eth0", f"{NODE_V4}/24", None, f"{EXT_V4}/24", None, name="ext")
        for ep in sorted(program.endpoints, key=lambda e: e.id):
            if ep.is_host or ep.node != NODE:
                continue
            v4 = next(str(ip) for ip in ep.ips if ip.version == 4)
            node.add_pod(ep.id.split("/")[-1], ep.interface, v4, None)
        state = tmp_path / "state"
        env = Env(StateDir(state), netns=node.name, bpffs=tmp_path / "bpffs", lock_timeout=30)
        yield World(cluster, node, ext, env, state)


@contextmanager
def bpffs_cleanup(w: World) -> Iterator[None]:
    """Unmount the bpffs the runtime may have mounted for this world (drops every pin)."""
    try:
        yield
    finally:
        from runtime.bpffs import is_bpffs, unmount

        if w.env.bpffs.is_dir() and is_bpffs(w.env.bpffs):
            unmount(w.env.bpffs)


# -- the fixture's own tests -------------------------------------------------------------------


def test_fixture_compiles_for_every_target_shape() -> None:
    program, artifact = compile_yaml(cluster_yaml())
    assert {e.id for e in program.endpoints} >= {"demo/a", "demo/b", "demo/c"}
    assert "nftables.nft" in artifact.files  # type: ignore[attr-defined]
    _, other = compile_yaml(cluster_yaml(unrelated_port=7001))
    assert other.files != artifact.files  # type: ignore[attr-defined]


def test_runtime_table_name_matches_the_target() -> None:
    from compiler.targets.nftables import script
    from runtime import nftables

    assert (nftables.FAMILY, nftables.TABLE) == (script.FAMILY, script.TABLE)
