"""The kernel stamp (runtime/stamp.py): ``status`` and a repeated ``apply`` skip reading the
nftables table back when no transaction committed since the apply — and only then.

Each test has its own node netns and state dir (tests/support/runtime_world.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.tools import nft
from runtime.iptables import IptablesDataplane
from runtime.nftables import NftablesDataplane
from runtime.stamp import kernel_stamp, read_stamped
from runtime.state import SetOverlay
from tests.support.demo_cluster import cluster_yaml, compile_dir
from tests.support.netns import Cluster
from tests.support.runtime_world import World, world

pytestmark = pytest.mark.kernel


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    with world(tmp_path) as made:
        yield made


def _status(w: World, *extra: str) -> dict:
    ran = w.cli("status", "-o", "json", *extra)
    return json.loads(ran.stdout)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = NftablesDataplane.read

    def counting(self: NftablesDataplane):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(self)

    monkeypatch.setattr(NftablesDataplane, "read", counting)
    return calls


def test_status_and_reapply_trust_an_unchanged_generation(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    record = json.loads((w.state_dir / "applied.json").read_text())
    assert record["stamp"].startswith("nft-gen:") and record["stamp"] == kernel_stamp(
        NftablesDataplane(w.env)
    )
    reads = _count_reads(monkeypatch)
    doc = _status(w)
    assert doc["in_sync"] is True and doc["checked"] == "stamp" and reads == []
    assert doc["kernel"]["counts"] == doc["applied"]["counts"]
    again = w.cli("apply", str(art), "--node", "n1")
    assert again.returncode == 0 and again.stdout.startswith("no change"), again.stdout
    assert "same nf_tables generation" in again.stdout and reads == []
    # --full reads the kernel back and compares, whatever the stamp says.
    doc = _status(w, "--full")
    assert doc["in_sync"] is True and doc["checked"] == "full" and reads == [1]


def test_any_commit_falls_back_to_reading_the_kernel(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    # A commit that does not touch Tortie's table: read back, still in sync.
    nft.run(["add", "table", "ip", "someone-else"], netns=w.node.name)
    reads = _count_reads(monkeypatch)
    doc = _status(w)
    assert doc["in_sync"] is True and doc["checked"] == "full" and reads == [1]
    # A commit that does: drift, found by the read-back.
    nft.run(["add", "chain", "inet", "tortie", "intruder"], netns=w.node.name)
    doc = _status(w)
    assert doc["in_sync"] is False and doc["drift"] == ["nft inet tortie"]
    assert doc["checked"] == "full"
    # The repair records a new stamp, trusted again afterwards.
    fix = w.cli("apply", str(art), "--node", "n1")
    assert fix.returncode == 0 and "drifted" in fix.stdout, fix.stdout
    reads.clear()
    doc = _status(w)
    assert doc["in_sync"] is True and doc["checked"] == "stamp" and reads == []


def test_no_op_apply_refreshes_an_outdated_stamp(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    nft.run(["add", "table", "ip", "someone-else"], netns=w.node.name)
    assert _status(w)["checked"] == "full"
    again = w.cli("apply", str(art), "--node", "n1")  # reads back, in sync: new stamp kept
    assert again.returncode == 0 and again.stdout.startswith("no change"), again.stdout
    assert _status(w)["checked"] == "stamp"


def test_a_stamp_from_another_namespace_never_matches(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    stamp = json.loads((w.state_dir / "applied.json").read_text())["stamp"]
    with Cluster() as other:
        node = other.add_node("n1")
        from runtime.plan import Env

        elsewhere = Env(w.env.state, netns=node.name, bpffs=w.env.bpffs)
        # Generation ids of different namespaces may coincide: the namespace is in the stamp.
        theirs = kernel_stamp(NftablesDataplane(elsewhere))
        assert theirs and theirs != stamp
        assert theirs.split(":")[2:4] != stamp.split(":")[2:4]
        from runtime.status import read_status

        st = read_status(elsewhere)
        assert st.checked == "full" and not st.in_sync  # the table is not there


def test_read_stamped_drops_a_stamp_when_something_commits_meanwhile(w: World) -> None:
    def read_with_commit() -> str:
        nft.run(["add", "table", "ip", "meanwhile"], netns=w.node.name)
        return "x"

    dp = NftablesDataplane(w.env)
    assert read_stamped(dp, lambda: "x") == ("x", kernel_stamp(dp))
    value, stamp = read_stamped(dp, read_with_commit)
    assert value == "x" and stamp == ""
    assert read_stamped(IptablesDataplane(w.env), lambda: "y") == ("y", "")


def test_a_record_with_set_updates_on_top_has_no_stamp(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    stored = w.env.state.read_record(overlay=False)
    assert stored is not None and stored.stamp
    st = w.env.state.record_stat()
    assert st is not None
    w.env.state.write_overlay(SetOverlay(stored.artifact, list(st), "p", 1, 0.0, {}))
    merged = w.env.state.read_record()
    assert merged is not None and merged.overlay == "p" and merged.stamp == ""


def test_a_new_artifact_is_planned_from_the_record_when_the_stamp_holds(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the read-back after the apply reads the kernel; the result is the same as with a
    read before (the delta from the recorded artifact), and packets see the new ruleset."""
    a = compile_dir(cluster_yaml(7000), tmp_path / "a")
    b = compile_dir(cluster_yaml(7001), tmp_path / "b")
    assert w.cli("apply", str(a), "--node", "n1").returncode == 0
    reads = _count_reads(monkeypatch)
    ran = w.cli("apply", str(b), "--node", "n1")
    assert ran.returncode == 0 and ran.stdout.startswith("applied"), ran.stdout + ran.stderr
    assert reads == [1]  # the read-back only
    table = w.nft_table() or ""
    assert "7001" in table and "7000" not in table
    doc = _status(w, "--full")
    assert doc["in_sync"] is True and doc["checked"] == "full"
    # After a commit by someone else the kernel is read before the apply again.
    nft.run(["add", "table", "ip", "someone-else"], netns=w.node.name)
    reads.clear()
    assert w.cli("apply", str(a), "--node", "n1").returncode == 0
    assert reads == [1, 1]
