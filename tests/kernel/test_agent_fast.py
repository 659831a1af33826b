"""The agent's set-only fast path (runtime/nftables_fast.py) in a node netns: no artifact is
rendered and no table listed, yet packets go as the evaluator says, ``status`` sees no drift
(the record in force is applied.json + sets.json), real drift is still found (generation id),
the full record is written on an idle tick, and a kill -9 at any point is repaired by the next
agent."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from compiler.tools import nft
from runtime import nftables_fast
from runtime.agent import Agent, AgentConfig
from runtime.metrics import Metrics
from runtime.status import read_status
from tests.kernel.test_agent_incremental import _expected, _kernel, _remote_pod, _split
from tests.support.demo_cluster import NODE, POD_IPS, cluster_yaml
from tests.support.runtime_world import World, world

pytestmark = pytest.mark.kernel


def _agree(w: World, watch: Path) -> None:
    for src in ("a", "c"):
        assert _kernel(w, src) == _expected(watch, POD_IPS[src], POD_IPS["b"]), src


def _agent(w: World, watch: Path, metrics: Metrics | None = None, delay: float = 3600) -> Agent:
    return Agent(AgentConfig(NODE, watch, w.env, "nftables", 0.1, record_delay=delay), metrics)


def test_fast_updates_status_drift_and_record(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _split(watch, ("a",))
    with world(tmp_path) as w:
        metrics = Metrics()
        agent = _agent(w, watch, metrics)
        first = agent.tick()
        assert first is not None and first.mode == "full"
        record0 = w.env.state.read_record(overlay=False)
        assert record0 is not None
        steps = [(("a", "c"), None), (("c",), [_remote_pod("r1", "10.65.9.9")]), (("a",), None)]
        listed: list[object] = []
        real_read_sets = nftables_fast.read_sets
        for clients, extra in steps:
            _split(watch, clients, extra)
            # The read-back is netlink only: no ``nft list set`` (every head is known).
            nftables_fast.read_sets = lambda *a, **k: listed.append(a)  # type: ignore[assignment]
            try:
                res = agent.tick()
            finally:
                nftables_fast.read_sets = real_read_sets  # type: ignore[assignment]
            assert not listed
            assert res is not None and (res.result, res.mode) == ("applied", "sets"), res
            assert "render" not in res.timings
            _agree(w, watch)
            st = read_status(w.env)
            assert st.in_sync, st.diff
            assert st.record is not None and st.record.overlay and st.record.mode == "sets"
            # The stored record and applied/ are untouched: only sets.json was written.
            assert w.env.state.read_record(overlay=False) == record0
            assert st.current is not None and dict(st.record.counts) == dict(st.current.counts)
        overlay = w.env.state.read_overlay()
        assert overlay is not None and overlay.updates == 3
        assert "10.65.9.9" not in "".join(overlay.sets.values())  # r1 left again

        # Idle ticks: the generation id says nothing changed; nothing is listed.
        for _ in range(3):
            assert agent.tick() is None
        assert metrics.drift_checks.get("generation", 0) >= 3
        full_checks = metrics.drift_checks.get("full", 0)

        # Someone flushes the table: the generation changes, the comparison finds the drift.
        nft.run(["flush", "table", "inet", "tortie"], netns=w.node.name)
        assert not read_status(w.env).in_sync
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "full"), res
        assert res.reason.startswith("the kernel drifted")
        assert metrics.drift_checks["full"] == full_checks + 1
        _agree(w, watch)
        assert read_status(w.env).in_sync
        assert w.env.state.read_overlay() is None

        # A foreign transaction elsewhere in the namespace: a full comparison, no drift.
        _split(watch, ("a", "c"))
        assert agent.tick().mode == "sets"  # type: ignore[union-attr]
        nft.run(["add", "table", "inet", "someone_else"], netns=w.node.name)
        assert agent.tick() is None
        assert metrics.drift_checks["full"] == full_checks + 2
        _split(watch, ("c",))
        res = agent.tick()  # the fast path is still taken after that comparison
        assert res is not None and res.mode == "sets", res
        _agree(w, watch)

        # After the record delay an idle tick writes the full record; sets.json goes.
        agent = _agent(w, watch, metrics, delay=0)
        agent.tick()  # a new agent: full compile; same kernel state
        _split(watch, ("a", "c"))
        res = agent.tick()
        assert res is not None and res.mode == "sets", res
        assert w.env.state.read_overlay() is not None
        assert agent.tick() is None
        assert w.env.state.read_overlay() is None
        st = read_status(w.env)
        assert st.in_sync and st.record is not None and not st.record.overlay
        applied = (w.env.state.applied_dir / "nftables.nft").read_text()
        assert POD_IPS["c"] in applied
        assert metrics.record_writes == 1
        _agree(w, watch)


def test_non_set_change_after_fast_updates_is_a_delta(tmp_path: Path) -> None:
    """With set updates in force, a policy change is still one delta transaction (no table
    re-creation), planned from the rendering of what is in force."""
    watch = tmp_path / "watch"
    watch.mkdir()
    _split(watch, ("a",))
    with world(tmp_path) as w:
        agent = _agent(w, watch)
        agent.tick()
        _split(watch, ("a", "c"))
        assert agent.tick().mode == "sets"  # type: ignore[union-attr]
        text = cluster_yaml(7001, clients=("a", "c"))
        assert "7001" in text
        docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Pod"]
        (watch / "base.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=True))
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "update"), res
        assert read_status(w.env).in_sync
        assert w.env.state.read_overlay() is None
        _agree(w, watch)


@pytest.mark.parametrize("point", ["after_journal", "after_commit", "after_overlay"])
def test_kill_during_fast_apply_is_repaired(tmp_path: Path, point: str) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _split(watch, ("a",))
    with world(tmp_path) as w:
        agent = _agent(w, watch)
        agent.tick()
        _split(watch, ("a", "c"))
        pid = os.fork()
        if pid == 0:  # the agent process, killed at ``point``
            try:
                state = w.env.state

                def die(*_: object, **__: object) -> None:
                    os.kill(os.getpid(), signal.SIGKILL)

                if point == "after_journal":
                    nftables_fast._send = die  # type: ignore[assignment]
                elif point == "after_commit":
                    nftables_fast._read_back = die  # type: ignore[assignment]
                else:
                    real = state.write_overlay

                    def write_then_die(overlay: object, **kw: bool) -> None:
                        real(overlay, **kw)  # type: ignore[arg-type]
                        die()

                    state.write_overlay = write_then_die  # type: ignore[method-assign]
                agent.tick()
            finally:
                os._exit(3)  # not reached when killed
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert w.env.state.read_journal() is not None
        st = read_status(w.env)
        assert not st.in_sync and json.dumps(st.as_json())  # interrupted, reported
        # The next agent (restart) repairs: the journal forces a full replacement.
        agent2 = _agent(w, watch)
        res = agent2.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "full"), res
        assert w.env.state.read_journal() is None
        assert read_status(w.env).in_sync
        _agree(w, watch)
        assert _kernel(w, "c")
        # ... and the fast path works again afterwards.
        _split(watch, ("c",))
        res = agent2.tick()
        assert res is not None and res.mode == "sets", res
        assert read_status(w.env).in_sync
        _agree(w, watch)
