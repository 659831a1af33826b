"""``tortie apply`` with the iptables target (ipset swap + one iptables-restore per table), in a
node netns: idempotence, failsafe, drift, rollback of a half-done apply, kill -9 per unit."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from compiler.artifact import Artifact, write_artifact
from compiler.tools import iptables as iptables_tool
from runtime.apply import apply_artifact, load_dir
from runtime.iptables import IptablesDataplane, detect_backend
from runtime.plan import ApplyFailed
from runtime.status import read_status
from tests.support.demo_cluster import FLOW_TCP, NODE_V4, POD_IPS, cluster_yaml, compile_dir
from tests.support.runtime_world import CLI, ROOT, World, cli_env, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel

KILL_ITERATIONS = int(os.environ.get("TORTIE_KILL_ITERATIONS", "40")) // 2


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not iptables_tool.available(detect_backend()):
        pytest.skip("iptables tools missing")
    with world(tmp_path) as made:
        yield made


def _save(w: World) -> str:
    """iptables-save (both families, without the dated header comments) and ipset save."""
    backend = detect_backend()
    out = []
    for family in (4, 6):
        text = iptables_tool.save(family=family, backend=backend, netns=w.node.name)
        out += [x for x in text.splitlines() if not x.startswith("#")]
    ipsets = w.node.run(["ipset", "save"]).stdout
    # A set's hash seed is random per set; a refill swaps it with the temporary set's.
    return "\n".join(out + sorted(re.sub(r" initval 0x[0-9a-f]+", "", ipsets).splitlines()))


def test_apply_twice_changes_nothing_and_failsafe_holds(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a", "iptables")
    res = w.cli("apply", str(art), "--node", "n1")
    assert res.returncode == 0, res.stderr
    before = _save(w)
    again = w.cli("apply", str(art), "--node", "n1")
    assert again.returncode == 0 and again.stdout.startswith("no change"), again.stdout
    assert _save(w) == before
    probes = [
        Probe("ext", NODE_V4, "TCP", 22),
        Probe("ext", NODE_V4, "TCP", 80),
        Probe("a", POD_IPS["b"], "TCP", FLOW_TCP),
        Probe("c", POD_IPS["b"], "TCP", FLOW_TCP),
    ]
    got = send_probes(w.cluster, probes, timeout=1.0)
    assert [got[p] for p in probes] == [True, False, True, False]
    assert w.cli("status").returncode == 0


def test_drift_in_a_chain_or_a_set_is_reported_and_repaired(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a", "iptables")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    good = _save(w)
    backend = detect_backend()
    w.node.run([f"iptables-{backend}", "-F", "tt-INPUT"])
    st = w.cli("status")
    assert st.returncode == 1 and "ip4 filter" in st.stdout
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    assert _save(w) == good
    sets = [
        x.split()[1]
        for x in w.node.run(["ipset", "save"]).stdout.splitlines()
        if x.startswith("create tt4s")
    ]
    w.node.run(["ipset", "flush", sets[0]])
    st = w.cli("status")
    assert st.returncode == 1 and f"ipset {sets[0]}" in st.stdout
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    assert w.cli("status").returncode == 0


def test_failure_in_a_later_table_rolls_back_the_earlier_ones(w: World, tmp_path: Path) -> None:
    old = load_dir(compile_dir(cluster_yaml(7000), tmp_path / "a", "iptables"), "n1")
    new_dir = compile_dir(cluster_yaml(7001, clients=("a", "c")), tmp_path / "b", "iptables")
    apply_artifact(old, w.env)
    before = IptablesDataplane(w.env).read().units
    files = {
        n: (new_dir / n).read_bytes()
        for n in ("ipset.restore", "iptables.rules", "ip6tables.rules")
    }
    broken6 = (
        files["ip6tables.rules"]
        .decode()
        .replace("COMMIT", "-A tt-INPUT -m nosuchmatch -j ACCEPT\nCOMMIT", 1)
    )
    files["ip6tables.rules"] = broken6.encode()
    bad = load_dir(write_artifact(Artifact("iptables", "n1", files), tmp_path / "bad"), "n1")
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(bad, w.env)
    assert info.value.restored, str(info.value)
    assert "IPv6" in str(info.value)
    assert IptablesDataplane(w.env).read().units == before  # sets and IPv4 tables are back
    assert read_status(w.env).in_sync
    got = send_probes(w.cluster, [Probe("c", POD_IPS["b"], "TCP", FLOW_TCP)], timeout=0.5)
    assert list(got.values()) == [False]  # the new artifact would have allowed c


@pytest.mark.slow
def test_kill_9_leaves_every_unit_old_or_new(w: World, tmp_path: Path) -> None:
    """Each ipset and each table of each family is the old or the new version after a kill;
    across units a kill may leave a mix (counted), which the next apply replaces."""
    dirs = {
        "A": compile_dir(cluster_yaml(7000), tmp_path / "A", "iptables"),
        "B": compile_dir(cluster_yaml(7001, clients=("a", "c")), tmp_path / "B", "iptables"),
    }
    arts = {k: load_dir(d, "n1") for k, d in dirs.items()}
    dp = IptablesDataplane(w.env)
    units = {}
    for k in ("A", "B"):
        apply_artifact(arts[k], w.env)
        units[k] = dp.read().units
    rng = random.Random(99)
    seen: collections.Counter[str] = collections.Counter()
    journal = w.state_dir / "journal.json"
    for i in range(KILL_ITERATIONS):
        old, new = ("A", "B") if i % 2 == 0 else ("B", "A")
        apply_artifact(arts[old], w.env)
        proc = subprocess.Popen(
            [*CLI, "apply", str(dirs[new]), "--node", "n1"],
            cwd=ROOT,
            env=cli_env(w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.12))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        now = dp.read().units
        names = set(now) | set(units[old]) | set(units[new])
        bad = [n for n in names if now.get(n) not in (units[old].get(n), units[new].get(n))]
        assert not bad, f"iteration {i}: units neither old nor new: {bad}"
        if now == units[old]:
            seen["old"] += 1
        elif now == units[new]:
            seen["new"] += 1
        else:
            seen["mixed units"] += 1
    print(f"\niptables kill -9 loop: {KILL_ITERATIONS} iterations: {dict(seen)}")
    apply_artifact(arts["A"], w.env)
    assert dp.read().units == units["A"] and read_status(w.env).in_sync


def test_switching_target_removes_the_previous_targets_objects(w: World, tmp_path: Path) -> None:
    nft_dir = compile_dir(cluster_yaml(), tmp_path / "nft", "nftables")
    ipt_dir = compile_dir(cluster_yaml(), tmp_path / "ipt", "iptables")
    assert w.cli("apply", str(nft_dir), "--node", "n1").returncode == 0
    assert w.nft_table() is not None
    res = w.cli("apply", str(ipt_dir), "--node", "n1")
    assert res.returncode == 0, res.stderr
    assert w.nft_table() is None  # Tortie's nft table is gone; its iptables chains are in
    assert "tt-INPUT" in _save(w)
    got = send_probes(
        w.cluster, [Probe("ext", NODE_V4, "TCP", 22), Probe("ext", NODE_V4, "TCP", 80)], timeout=1.0
    )
    assert list(got.values()) == [True, False]
    assert w.cli("status").returncode == 0
