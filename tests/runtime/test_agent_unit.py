"""The agent's scanning, reconcile bookkeeping and metrics endpoint, with a fake dataplane."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runtime.agent import Agent, AgentConfig, content_hash, scan
from runtime.metrics import Metrics, serve
from runtime.plan import Env
from runtime.state import StateDir
from tests.runtime.test_apply_unit import FakeDataplane, install_fake
from tests.support.demo_cluster import cluster_yaml


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDataplane]:
    return install_fake(monkeypatch)


def test_scan_sees_yaml_only_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("y")
    (tmp_path / "sub" / "notes.txt").write_text("z")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.yaml").write_text("w")
    (tmp_path / ".hidden.yaml").write_text("v")
    files = scan(tmp_path)
    assert [f[0] for f in files] == ["a.yaml", "sub/b.yml"]
    h = content_hash(tmp_path, files)
    os.utime(tmp_path / "a.yaml", ns=(1, 1))
    assert scan(tmp_path) != files and content_hash(tmp_path, scan(tmp_path)) == h
    (tmp_path / "a.yaml").write_text("x2")
    assert content_hash(tmp_path, scan(tmp_path)) != h


def test_reconcile_results_and_metrics(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "c.yaml").write_text(cluster_yaml())
    env = Env(StateDir(tmp_path / "state"))
    metrics = Metrics()
    agent = Agent(AgentConfig("n1", watch, env, "nftables", 0.01), metrics)
    first = agent.tick()
    assert first is not None and first.result == "applied"
    assert set(first.timings) >= {"load", "compile", "render", "apply", "total"}
    assert agent.tick() is None
    (watch / "c.yaml").write_text("kind: [broken")
    bad = agent.tick()
    assert bad is not None and bad.result == "error" and bad.input_error
    assert agent.tick() is None  # broken input is not recompiled until it changes
    (watch / "c.yaml").write_text(cluster_yaml())
    back = agent.tick()
    assert back is not None and back.result == "unchanged"
    fake.KERNEL["u0"] = "drift"
    repaired = agent.tick()
    assert repaired is not None and repaired.result == "applied"
    text = metrics.render()
    assert 'tortie_reconciles_total{result="applied"} 2' in text
    assert 'tortie_reconciles_total{result="error"} 1' in text
    assert 'tortie_reconciles_total{result="unchanged"} 1' in text
    assert "tortie_drift_repairs_total 1" in text
    assert re.search(r"^tortie_loaded_rules 3$", text, re.MULTILINE)


def test_agent_rejects_unknown_node(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "c.yaml").write_text(cluster_yaml())
    agent = Agent(AgentConfig("elsewhere", watch, Env(StateDir(tmp_path / "s")), "nftables", 0.01))
    res = agent.tick()
    assert (
        res is not None
        and res.result == "error"
        and "'elsewhere' is not in the inputs" in res.error
    )
    assert agent.run(once=True) == 0  # nothing changed since: no reconcile in this run


def test_metrics_endpoint_on_loopback_ephemeral_port() -> None:
    m = Metrics()
    m.observe_reconcile("error", 0.5, error='bad "quote"\nnewline')
    server = serve(m, 0)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert "tortie_last_error 1" in body
        assert 'tortie_last_error_info{message="bad \\"quote\\"\\nnewline"} 1' in body
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=5)
    finally:
        server.close()


def test_label_change_compiles_incrementally(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    """An endpoint-only change takes the incremental compile (said in the result, the log and
    the metrics); a policy change takes the full one."""
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "c.yaml").write_text(cluster_yaml(clients=("a",)))
    metrics = Metrics()
    agent = Agent(
        AgentConfig("n1", watch, Env(StateDir(tmp_path / "s")), "nftables", 0.01), metrics
    )
    first = agent.tick()
    assert first is not None and first.path == "full"
    (watch / "c.yaml").write_text(cluster_yaml(clients=("a", "c")))
    res = agent.tick()
    assert res is not None and res.result != "error" and res.path == "incremental", res
    assert "1 endpoint(s)" in res.path_reason
    (watch / "c.yaml").write_text(cluster_yaml(7001, clients=("a", "c")))
    res = agent.tick()
    assert res is not None and res.path == "full" and "policies changed" in res.path_reason
    text = metrics.render()
    assert 'tortie_compiles_total{path="incremental"} 1' in text
    assert 'tortie_compiles_total{path="full"} 2' in text
    assert re.search(r'^tortie_last_reconcile_stage_seconds\{stage="load"\} ', text, re.MULTILINE)


def test_touch_without_a_byte_changed_does_not_reconcile(
    tmp_path: Path, fake: type[FakeDataplane]
) -> None:
    """The scan sees a new mtime, the file is read again, but an unchanged text (compared, not
    hashed) reconciles nothing; a change, and a change back, each reconcile."""
    watch = tmp_path / "watch"
    watch.mkdir()
    path = watch / "c.yaml"
    path.write_text(cluster_yaml(clients=("a",)))
    agent = Agent(AgentConfig("n1", watch, Env(StateDir(tmp_path / "s")), "nftables", 0.01))
    assert agent.tick() is not None
    os.utime(path, ns=(1, 1))
    path.write_text(cluster_yaml(clients=("a",)))  # same bytes, new mtime
    assert agent.tick() is None
    path.write_text(cluster_yaml(clients=("a", "c")))
    res = agent.tick()
    assert res is not None and res.result != "error"
    path.write_text(cluster_yaml(clients=("a",)))
    res = agent.tick()
    assert res is not None and res.result != "error"
    assert agent.tick() is None


def test_target_check_skipped_only_when_no_local_endpoint_changed(
    tmp_path: Path, fake: type[FakeDataplane], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nftables check reads FelixConfig, node, policies and this node's endpoints: an
    incremental compile that changed only another node's endpoint skips it; a change of a
    local endpoint runs its endpoint part (policies and FelixConfig are the objects checked
    before)."""
    import yaml

    import runtime.agent as agent_mod

    checked: list[int] = []
    real = agent_mod.get_target

    def get_target(name: str) -> object:
        target = real(name)

        class Counting:
            def check(self, program: object, sink: object) -> None:
                checked.append(1)
                target.check(program, sink)  # type: ignore[arg-type]

            def check_endpoints(self, program: object, sink: object) -> None:
                checked.append(2)
                target.check_endpoints(program, sink)  # type: ignore[attr-defined]

            def __getattr__(self, name: str) -> object:
                return getattr(target, name)

        return Counting()

    monkeypatch.setattr(agent_mod, "get_target", get_target)

    def tree(remote_role: str, local_role: str) -> str:
        docs = [d for d in yaml.safe_load_all(cluster_yaml(clients=("a",))) if d]
        pods = [d for d in docs if d["kind"] == "Pod"]
        local = next(p for p in pods if p["spec"].get("nodeName") == "n1")
        local["metadata"]["labels"]["extra"] = local_role
        remote = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "r", "namespace": "demo", "labels": {"role": remote_role}},
            "spec": {"nodeName": "n2"},
            "status": {"podIP": "10.65.9.9", "podIPs": [{"ip": "10.65.9.9"}]},
        }
        return yaml.safe_dump_all([*docs, remote], sort_keys=True)

    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "c.yaml").write_text(tree("client", "x"))
    agent = Agent(AgentConfig("n1", watch, Env(StateDir(tmp_path / "s")), "nftables", 0.01))
    first = agent.tick()
    assert first is not None and first.result != "error" and checked == [1]
    (watch / "c.yaml").write_text(tree("none", "x"))
    res = agent.tick()
    assert res is not None and res.result != "error" and res.path == "incremental", res
    assert "local" not in res.path_reason and checked == [1]
    (watch / "c.yaml").write_text(tree("none", "y"))
    res = agent.tick()
    assert res is not None and res.result != "error" and res.path == "incremental", res
    assert "a local endpoint changed" in res.path_reason and checked == [1, 2]


def test_local_rule_change_renders_once(
    tmp_path: Path, fake: type[FakeDataplane], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local pod's label change that changes its policies is not set-only: the program is
    rendered once (the artifact), and the set-update check reuses that rendering."""
    from compiler.targets.nftables import script

    renders: list[object] = []
    real = script.ScriptRenderer.render

    def counting(self: script.ScriptRenderer) -> object:
        renders.append(self.program)
        return real(self)

    monkeypatch.setattr(script.ScriptRenderer, "render", counting)
    watch = tmp_path / "watch"
    watch.mkdir()
    text = cluster_yaml(clients=("a",))
    (watch / "c.yaml").write_text(text)
    agent = Agent(AgentConfig("n1", watch, Env(StateDir(tmp_path / "s")), "nftables", 0.01))
    assert agent.tick() is not None
    renders.clear()
    changed = text.replace("labels: {app: c}", "labels: {app: cz}")
    assert changed != text
    (watch / "c.yaml").write_text(changed)
    res = agent.tick()
    assert res is not None and res.result == "applied" and res.path == "incremental", res
    assert "a local endpoint changed" in res.path_reason
    assert len(renders) == 1, renders
