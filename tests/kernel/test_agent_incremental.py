"""``tortie agent``'s incremental path against a node netns (nftables): pods kept in one
``kind: List`` file, a label change is spliced in, compiled incrementally, applied as set
elements, and the kernel then decides real packets as the evaluator says for a full compile
of the same tree."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.passes import MEMBERSHIP_STABLE_PASSES
from compiler.pipeline import compile_program
from compiler.tools import nft
from runtime.agent import Agent, AgentConfig
from runtime.metrics import Metrics
from tests.support.demo_cluster import FLOW_TCP, NODE, POD_IPS, cluster_yaml
from tests.support.runtime_world import World, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel


def _split(watch: Path, clients: tuple[str, ...], extra: list[dict] | None = None) -> None:
    """The demo cluster as two files: everything but the pods, and the pods as a v1 List
    (dumped the way kubectl does, one item per pod), written in place."""
    docs = [d for d in yaml.safe_load_all(cluster_yaml(clients=clients)) if d]
    pods = [d for d in docs if d["kind"] == "Pod"] + (extra or [])
    for pod in pods:  # every pod has a role, so a change of role moves no line
        pod["metadata"]["labels"].setdefault("role", "none")
    rest = [d for d in docs if d["kind"] != "Pod"]
    (watch / "base.yaml").write_text(yaml.safe_dump_all(rest, sort_keys=True))
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}, sort_keys=True)
    (watch / "pods.yaml").write_text(text)


def _remote_pod(name: str, ip: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"role": "client"}},
        "spec": {"nodeName": "n2"},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _local_pod(name: str, ip: str) -> dict:
    """A pod on this node with no interface in the test node (nftables needs none)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"nodeName": NODE},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _expected(watch: Path, src: str, dst: str) -> bool:
    """What the evaluator says for TCP src -> dst:FLOW_TCP on a full compile of the tree."""
    sink = DiagnosticSink()
    rs = load([str(watch)], sink, SourceRegistry())
    program = compile_program(rs, NODE, sink, passes=MEMBERSHIP_STABLE_PASSES)
    assert not sink.has_errors
    flow = Flow(ipaddress.ip_address(src), ipaddress.ip_address(dst), 6, 40000, FLOW_TCP)
    return evaluate(program, flow).allowed


def _kernel(w: World, src: str) -> bool:
    p = Probe(src, POD_IPS["b"], "TCP", FLOW_TCP)
    return send_probes(w.cluster, [p], timeout=0.5)[p]


def test_label_change_is_incremental_and_reaches_the_kernel(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _split(watch, ("a",))
    with world(tmp_path) as w:
        metrics = Metrics()
        agent = Agent(AgentConfig(NODE, watch, w.env, "nftables", 0.1), metrics)
        first = agent.tick()
        assert first is not None and (first.result, first.mode, first.path) == (
            "applied",
            "full",
            "full",
        )
        for src in ("a", "c"):
            assert _kernel(w, src) == _expected(watch, POD_IPS[src], POD_IPS["b"])
        assert not _kernel(w, "c")

        # c becomes a client: one list item changes -> spliced, incremental, set elements.
        _split(watch, ("a", "c"))
        res = agent.tick()
        assert res is not None, "the change was not seen"
        assert (res.result, res.mode, res.path) == ("applied", "sets", "incremental"), res
        assert "load splice" in res.path_reason
        assert {"load", "compile", "diff", "apply", "total"} <= set(res.timings)
        assert "render" not in res.timings  # the fast path renders no artifact
        for src in ("a", "c"):
            assert _kernel(w, src) == _expected(watch, POD_IPS[src], POD_IPS["b"])
        assert _kernel(w, "c")

        # a stops being a client (a local pod's labels) and a remote client pod appears.
        remote = _remote_pod("r1", "10.65.9.9")
        _split(watch, ("c",), [remote])
        res = agent.tick()
        assert res is not None and res.path == "incremental", res
        assert res.result == "applied" and res.mode == "sets", res
        for src in ("a", "c"):
            assert _kernel(w, src) == _expected(watch, POD_IPS[src], POD_IPS["b"])
        assert not _kernel(w, "a") and _kernel(w, "c")
        listing = nft.run(["list", "table", "inet", "tortie"], netns=w.node.name).stdout
        assert "10.65.9.9" in listing

        text = metrics.render()
        assert 'tortie_compiles_total{path="incremental"} 2' in text
        assert 'tortie_compiles_total{path="full"} 1' in text
        assert 'tortie_last_reconcile_stage_seconds{stage="compile"}' in text
