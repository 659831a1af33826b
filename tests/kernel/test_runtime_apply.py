"""``tortie apply`` / ``tortie status`` with the nftables target, in a node netns.

Every test runs the real CLI (a subprocess) against its own node namespace and state dir.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compiler.artifact import Artifact, write_artifact
from compiler.tools import nft
from runtime.apply import apply_artifact, load_dir
from runtime.lock import apply_lock
from runtime.nftables import NftablesDataplane, normalise
from runtime.plan import ApplyFailed
from tests.support.demo_cluster import (
    EXT_V4,
    FLOW_TCP,
    FLOW_UDP,
    NODE_V4,
    POD_IPS,
    cluster_yaml,
    compile_dir,
)
from tests.support.runtime_world import CLI, World, cli_env, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    with world(tmp_path) as made:
        yield made


def _handles(w: World) -> str:
    """The table with rule handles: a reload would renumber them, so equal text proves the
    kernel was not touched."""
    return nft.run(["-a", "list", "table", "inet", "tortie"], netns=w.node.name).stdout


def test_apply_is_idempotent_and_status_in_sync(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    first = w.cli("apply", str(art), "--node", "n1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied nftables artifact"), first.stdout
    before = _handles(w)
    again = w.cli("apply", str(art), "--node", "n1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("no change"), again.stdout
    assert _handles(w) == before
    st = w.cli("status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert "in sync" in st.stdout
    doc = json.loads(w.cli("status", "-o", "json").stdout)
    assert doc["in_sync"] is True and doc["drift"] == []
    assert doc["applied"]["target"] == "nftables"
    assert doc["applied"]["counts"]["chains"] > 5 and doc["applied"]["counts"]["rules"] > 10
    assert doc["kernel"]["counts"] == doc["applied"]["counts"]


def test_failsafe_port_stays_open_under_deny_all(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    probes = {
        "ssh (failsafe)": Probe("ext", NODE_V4, "TCP", 22),
        "http (denied)": Probe("ext", NODE_V4, "TCP", 80),
        "a->b tcp": Probe("a", POD_IPS["b"], "TCP", FLOW_TCP),
        "a->b udp": Probe("a", POD_IPS["b"], "UDP", FLOW_UDP),
        "c->b tcp (not a client)": Probe("c", POD_IPS["b"], "TCP", FLOW_TCP),
    }
    got = send_probes(w.cluster, probes.values(), timeout=1.0)
    seen = {name: got[p] for name, p in probes.items()}
    assert seen == {
        "ssh (failsafe)": True,
        "http (denied)": False,
        "a->b tcp": True,
        "a->b udp": True,
        "c->b tcp (not a client)": False,
    }
    assert EXT_V4  # the probe source is the external host behind eth0


def test_refuses_other_node_and_tampered_files(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    other = w.cli("apply", str(art), "--node", "n2")
    assert other.returncode == 1
    assert "compiled for node 'n1'" in other.stderr and "'n2'" in other.stderr
    script = art / "nftables.nft"
    script.write_text(script.read_text().replace("tcp . 22", "tcp . 2222"))
    tampered = w.cli("apply", str(art), "--node", "n1")
    assert tampered.returncode == 1
    assert "tampered" in tampered.stderr and "nftables.nft" in tampered.stderr
    assert w.nft_table() is None  # nothing was loaded
    missing = w.cli("apply", str(tmp_path), "--node", "n1")
    assert missing.returncode == 1 and "not an artifact directory" in missing.stderr


def test_dry_run_changes_nothing_and_shows_the_diff(w: World, tmp_path: Path) -> None:
    a = compile_dir(cluster_yaml(7000), tmp_path / "a")
    b = compile_dir(cluster_yaml(7001), tmp_path / "b")
    dry = w.cli("apply", str(a), "--node", "n1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would apply") and "+table inet tortie {" in dry.stdout
    assert w.nft_table() is None
    assert w.cli("apply", str(a), "--node", "n1").returncode == 0
    same = w.cli("apply", str(a), "--node", "n1", "--dry-run")
    assert same.stdout.startswith("no change"), same.stdout
    before = _handles(w)
    diff = w.cli("apply", str(b), "--node", "n1", "--dry-run")
    assert diff.returncode == 0, diff.stderr
    minus = [x for x in diff.stdout.splitlines() if x.startswith("-") and "7000" in x]
    plus = [x for x in diff.stdout.splitlines() if x.startswith("+") and "7001" in x]
    assert minus and plus, diff.stdout
    assert _handles(w) == before
    doc = json.loads(w.cli("apply", str(b), "--node", "n1", "--dry-run", "-o", "json").stdout)
    assert doc["changed"] is True and doc["applied"] is False and "7001" in doc["diff"]


@pytest.mark.parametrize(
    "tamper",
    [
        ["flush", "table", "inet", "tortie"],
        ["add", "chain", "inet", "tortie", "intruder"],
        ["delete", "table", "inet", "tortie"],
    ],
    ids=["flush-table", "add-chain", "delete-table"],
)
def test_status_detects_drift_and_apply_repairs_it(
    w: World, tmp_path: Path, tamper: list[str]
) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    good = w.nft_table()
    nft.run(tamper, netns=w.node.name)
    st = w.cli("status")
    assert st.returncode == 1, st.stdout
    assert "DRIFT" in st.stdout
    doc = json.loads(w.cli("status", "-o", "json").stdout)
    assert doc["in_sync"] is False and doc["drift"] == ["nft inet tortie"]
    dry = w.cli("apply", str(art), "--node", "n1", "--dry-run")
    assert "drifted" in dry.stdout
    fix = w.cli("apply", str(art), "--node", "n1")
    assert fix.returncode == 0 and "drifted" in fix.stdout, fix.stdout + fix.stderr
    assert w.nft_table() == good
    assert w.cli("status").returncode == 0


def test_deleted_set_element_is_drift(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    table = w.nft_table() or ""
    iface = next(
        line.split('"')[1]
        for line in table.splitlines()
        if "elements = {" in line and '"cali' in line
    )
    nft.run(
        ["delete", "element", "inet", "tortie", "wl-ifaces", "{", f'"{iface}"', "}"],
        netns=w.node.name,
    )
    st = w.cli("status")
    assert st.returncode == 1 and iface in st.stdout


def test_kernel_refusal_keeps_the_old_ruleset(w: World, tmp_path: Path) -> None:
    good = compile_dir(cluster_yaml(), tmp_path / "good")
    assert w.cli("apply", str(good), "--node", "n1").returncode == 0
    before = _handles(w)
    script = (good / "nftables.nft").read_text()
    broken_script = script.replace("jump wl-ingress/", "jump no-such-chain-", 1)
    broken = write_artifact(
        Artifact("nftables", "n1", {"nftables.nft": broken_script.encode()}), tmp_path / "bad"
    )
    res = w.cli("apply", str(broken), "--node", "n1")
    assert res.returncode == 1
    assert "apply failed" in res.stderr and "previous state is in force" in res.stderr
    assert "no-such-chain" in res.stderr  # nft's own message says why
    assert _handles(w) == before
    assert w.cli("status").returncode == 0


def test_rollback_after_a_committed_step(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the new table was committed (here: the read-back check) puts the old
    table back. The kernel was not read before the apply (its stamp proved it as recorded), so
    the old table is reloaded from the recorded listing: the same objects, listed in sorted
    order (every base chain has its own hook and priority, so the order means nothing)."""
    a = load_dir(compile_dir(cluster_yaml(7000), tmp_path / "a"), "n1")
    b = load_dir(compile_dir(cluster_yaml(7001), tmp_path / "b"), "n1")
    apply_artifact(a, w.env)
    old = w.nft_table()
    monkeypatch.setattr(NftablesDataplane, "verify", lambda self, plan, after: ["injected"])
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(b, w.env)
    assert info.value.restored and "injected" in str(info.value)
    assert normalise(w.nft_table() or "") == normalise(old or "")
    assert "7000" in (old or "") and "7001" not in (old or "")
    monkeypatch.undo()
    assert w.cli("status").returncode == 0


def test_lock_makes_a_second_apply_wait_or_give_up(w: World, tmp_path: Path) -> None:
    a = compile_dir(cluster_yaml(7000), tmp_path / "a")
    b = compile_dir(cluster_yaml(7001), tmp_path / "b")
    with apply_lock(w.state_dir):
        res = w.cli("apply", str(a), "--node", "n1", "--lock-timeout", "0.5")
    assert res.returncode == 1 and "another tortie apply is running" in res.stderr
    assert w.nft_table() is None
    # Two applies at once: both succeed, one after the other; the kernel holds one of them.
    procs = [
        subprocess.Popen(
            [*CLI, "apply", str(d), "--node", "n1", "-v"],
            env=cli_env(w),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in (a, b)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    table = w.nft_table() or ""
    assert ("7000" in table) != ("7001" in table)
    assert w.cli("status").returncode == 0


def test_dry_run_reports_what_the_kernel_would_refuse(w: World, tmp_path: Path) -> None:
    good = compile_dir(cluster_yaml(), tmp_path / "good")
    script = (good / "nftables.nft").read_text().replace("jump wl-ingress/", "jump nowhere-", 1)
    bad = write_artifact(
        Artifact("nftables", "n1", {"nftables.nft": script.encode()}), tmp_path / "bad"
    )
    res = w.cli("apply", str(bad), "--node", "n1", "--dry-run")
    assert res.returncode == 1
    assert (
        "dry run: the kernel would refuse this artifact" in res.stderr and "nowhere-" in res.stderr
    )
    assert w.nft_table() is None
