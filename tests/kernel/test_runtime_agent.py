"""``tortie agent`` against a node netns: recompile on change, set-only updates, drift repair,
errors that keep the old state, Prometheus metrics on 127.0.0.1."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from compiler.tools import nft
from runtime.agent import Agent, AgentConfig
from runtime.metrics import Metrics, serve
from runtime.status import read_status
from tests.support.demo_cluster import FLOW_TCP, POD_IPS, cluster_yaml
from tests.support.runtime_world import World, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel


def _write(watch: Path, text: str) -> None:
    """Replace the watched file (new content, new mtime) the way git does: write and rename."""
    tmp = watch / ".cluster.yaml.tmp"
    tmp.write_text(text)
    tmp.rename(watch / "cluster.yaml")


def _c_to_b(w: World) -> bool:
    p = Probe("c", POD_IPS["b"], "TCP", FLOW_TCP)
    return send_probes(w.cluster, [p], timeout=0.5)[p]


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in metrics:\n{text}"
    return float(m[1])


def test_agent_once_via_cli(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, cluster_yaml())
    with world(tmp_path) as w:
        res = w.cli("agent", "--node", "n1", "--watch", str(watch), "--once")
        assert res.returncode == 0, res.stderr
        assert "reconcile #1: applied" in res.stderr  # logged with timings
        assert re.search(r"load \d+ ms, compile \d+ ms, render \d+ ms, apply \d+ ms", res.stderr)
        assert w.nft_table() is not None
        assert w.cli("status").returncode == 0
        again = w.cli("agent", "--node", "n1", "--watch", str(watch), "--once")
        assert again.returncode == 0 and "reconcile #1: unchanged" in again.stderr
        bad = w.cli("agent", "--node", "nX", "--watch", str(watch), "--once")
        assert bad.returncode == 1 and "'nX' is not in the inputs" in bad.stderr


def test_agent_applies_only_what_changed(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, cluster_yaml(clients=("a",)))
    with world(tmp_path) as w:
        metrics = Metrics()
        agent = Agent(AgentConfig("n1", watch, w.env, "nftables", 0.1), metrics)
        first = agent.tick()
        assert first is not None and (first.result, first.mode) == ("applied", "full")
        assert agent.tick() is None  # nothing changed, no drift
        assert not _c_to_b(w)

        # Only a label changed: c joins the clients set -> set elements only.
        _write(watch, cluster_yaml(clients=("a", "c")))
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "sets"), res
        assert _c_to_b(w)
        assert read_status(w.env).in_sync

        # An unrelated policy changed -> one transaction touching only that policy's chain.
        _write(watch, cluster_yaml(7001, clients=("a", "c")))
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "update"), res
        assert "7001" in (w.nft_table() or "")

        # A touch without a byte changed compiles nothing.
        (watch / "cluster.yaml").touch()
        assert agent.tick() is None

        # Broken input: error, counted, the ruleset in force stays.
        before = w.nft_table()
        _write(
            watch, cluster_yaml(7001, clients=("a", "c")) + "---\nkind: NetworkPolicy\nspec: [\n"
        )
        res = agent.tick()
        assert res is not None and res.result == "error"
        assert w.nft_table() == before
        assert metrics.last_error
        _write(watch, cluster_yaml(7001, clients=("a", "c")))
        res = agent.tick()
        assert res is not None and res.result == "unchanged"  # same artifact as before the error
        assert not metrics.last_error

        # Drift: someone flushed the table; the next tick re-applies everything.
        nft.run(["flush", "table", "inet", "tortie"], netns=w.node.name)
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "full")
        assert res.reason.startswith("the kernel drifted")
        assert read_status(w.env).in_sync and _c_to_b(w)
        assert metrics.drift_repairs == 1

        text = metrics.render()
        assert _metric(text, 'tortie_reconciles_total{result="applied"}') == 4
        assert _metric(text, 'tortie_reconciles_total{result="error"}') == 1
        assert _metric(text, 'tortie_applies_total{mode="sets"}') == 1
        assert _metric(text, "tortie_last_error") == 0
        assert _metric(text, "tortie_loaded_rules") > 10
        assert _metric(text, "tortie_loaded_elements") > 0


def test_agent_loop_with_metrics_endpoint(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, cluster_yaml())
    with world(tmp_path) as w:
        metrics = Metrics()
        server = serve(metrics, 0)  # 127.0.0.1, an ephemeral port
        stop = threading.Event()
        agent = Agent(AgentConfig("n1", watch, w.env, "nftables", 0.05), metrics)
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.port}/metrics"

            def scrape() -> str:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    return r.read().decode()

            deadline = time.monotonic() + 30
            while _metric(scrape(), 'tortie_reconciles_total{result="applied"}') < 1:
                assert time.monotonic() < deadline, scrape()
                time.sleep(0.05)
            _write(watch, cluster_yaml(clients=("a", "c")))
            while _metric(scrape(), 'tortie_reconciles_total{result="applied"}') < 2:
                assert time.monotonic() < deadline, scrape()
                time.sleep(0.05)
            text = scrape()
            assert _metric(text, 'tortie_applies_total{mode="sets"}') == 1
            assert _metric(text, "tortie_reconcile_duration_seconds_count") >= 2
            assert _metric(text, "tortie_loaded_sets") >= 1
            assert _c_to_b(w)
        finally:
            stop.set()
            thread.join(timeout=10)
            server.close()
        assert not thread.is_alive()


def test_agent_set_only_update_with_iptables(tmp_path: Path) -> None:
    """The iptables target's render_set_update: only the changed ipsets are refilled."""
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, cluster_yaml(clients=("a",)))
    with world(tmp_path) as w:
        agent = Agent(AgentConfig("n1", watch, w.env, "iptables", 0.1))
        first = agent.tick()
        assert first is not None and (first.result, first.mode) == ("applied", "full"), first
        assert not _c_to_b(w)
        _write(watch, cluster_yaml(clients=("a", "c")))
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "sets"), res
        assert _c_to_b(w) and read_status(w.env).in_sync


def test_dry_run_of_iptables_checks_in_a_throwaway_namespace(tmp_path: Path) -> None:
    from tests.support.demo_cluster import compile_dir

    art = compile_dir(cluster_yaml(), tmp_path / "a", "iptables")
    with world(tmp_path) as w:
        res = w.cli("apply", str(art), "--node", "n1", "--dry-run")
        assert res.returncode == 0, res.stderr
        assert "iptables-restore --noflush: IPv4 filter" in res.stdout
        assert "tt-" not in w.node.run(["iptables-save"]).stdout
        assert w.node.run(["ipset", "list", "-n"]).stdout.strip() == ""


def test_agent_process_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real ``tortie agent`` process: port 0 on 127.0.0.1, scraped, stopped by its PID."""
    import signal
    import subprocess

    from tests.support.runtime_world import CLI, ROOT, cli_env

    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, cluster_yaml())
    with world(tmp_path) as w:
        proc = subprocess.Popen(
            [
                *CLI,
                "agent",
                "--node",
                "n1",
                "--watch",
                str(watch),
                "--interval",
                "0.2",
                "--metrics-port",
                "0",
            ],
            cwd=ROOT,
            env=cli_env(w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True
        )  # type: ignore[union-attr]
        reader.start()
        try:
            port = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                port is None or not any("reconcile #1" in x for x in lines)
            ):
                found = [
                    re.match(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", x) for x in list(lines)
                ]
                port = next((int(m[1]) for m in found if m), None)
                time.sleep(0.05)
            assert port is not None, "".join(lines)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert _metric(text, 'tortie_reconciles_total{result="applied"}') == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
