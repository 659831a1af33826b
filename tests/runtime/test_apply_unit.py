"""The runtime's apply machinery without a kernel: artifact refusal, state dir, lock, and the
plan/apply/rollback orchestration against a fake dataplane."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from compiler.artifact import Artifact, write_artifact
from runtime import apply as apply_mod
from runtime.apply import apply_artifact, load_dir
from runtime.lock import LockBusy, apply_lock
from runtime.plan import ApplyFailed, ArtifactRefused, Env, KernelState, LoadedArtifact, Plan, Step
from runtime.state import Record, StateDir


def _artifact(tmp_path: Path, text: str = "rules v1", node: str = "n1", name: str = "a") -> Path:
    files = {"nftables.nft": text.encode(), "extra/x.txt": b"x"}
    return write_artifact(Artifact("nftables", node, files, summary={"rules": 1}), tmp_path / name)


# -- load_dir ----------------------------------------------------------------------------------


def test_load_dir_reads_verified_bytes(tmp_path: Path) -> None:
    art = load_dir(_artifact(tmp_path), "n1")
    assert art.target == "nftables" and art.node == "n1"
    assert art.files["nftables.nft"] == b"rules v1"
    assert len(art.hash) == 64 and "manifest.json" in art.all_files()


def test_load_dir_refuses_another_node(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRefused, match="compiled for node 'n1', but this is node 'n2'"):
        load_dir(_artifact(tmp_path), "n2")


@pytest.mark.parametrize("victim", ["nftables.nft", "extra/x.txt"])
def test_load_dir_refuses_tampered_or_missing_files(tmp_path: Path, victim: str) -> None:
    path = _artifact(tmp_path)
    (path / victim).write_bytes(b"evil")
    with pytest.raises(ArtifactRefused, match=f"tampered or incomplete.*{victim}"):
        load_dir(path, "n1")
    (path / victim).unlink()
    with pytest.raises(ArtifactRefused, match=victim):
        load_dir(path, "n1")


def test_load_dir_refuses_non_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRefused, match="not an artifact directory"):
        load_dir(tmp_path, "n1")
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(ArtifactRefused, match="not valid JSON"):
        load_dir(tmp_path, "n1")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "node": "n1", "target": "x"}))
    with pytest.raises(ArtifactRefused, match="unknown target"):
        load_dir(tmp_path, "n1")


# -- state dir and lock ------------------------------------------------------------------------


def test_record_and_journal_round_trip(tmp_path: Path) -> None:
    st = StateDir(tmp_path / "s")
    assert st.read_record() is None and st.read_journal() is None
    rec = Record(
        "nftables", "n1", "h" * 64, "dir", "tortie 0", 1.0, "full", {"rules": 2}, {"u": "x"}
    )
    st.write_record(rec, {"a.txt": b"A", "sub/b.txt": b"B"})
    assert st.read_record() == rec
    assert st.applied_files() == {"a.txt": b"A", "sub/b.txt": b"B"}
    st.write_record(rec, {"c.txt": b"C"})
    assert st.applied_files() == {"c.txt": b"C"}
    st.begin("nftables", "new", "old")
    j = st.read_journal()
    assert j is not None and j.artifact == "new" and j.pid == os.getpid()
    st.end()
    assert st.read_journal() is None
    st.record_path.write_text("{garbage")
    assert st.read_record() is None


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    with (
        apply_lock(tmp_path),
        pytest.raises(LockBusy, match=f"pid {os.getpid()}"),
        apply_lock(tmp_path, timeout=0.1),
    ):
        pass
    with apply_lock(tmp_path, timeout=0):
        pass


def test_lock_of_a_killed_holder_is_released(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # child: take the lock and wait to be killed
        try:
            with apply_lock(tmp_path):
                (tmp_path / "held").touch()
                time.sleep(60)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "held").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(LockBusy), apply_lock(tmp_path, timeout=0.1):
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with apply_lock(tmp_path, timeout=1):
        pass


# -- orchestration with a fake dataplane -------------------------------------------------------


class FakeDataplane:
    """A "kernel" that is a dict; each step sets one unit. ``FAIL_AT`` makes a step fail."""

    TARGET: ClassVar[str] = "nftables"
    KERNEL: ClassVar[dict[str, str | None]] = {}
    FAIL_AT: ClassVar[int | None] = None
    ROLLBACK_BROKEN: ClassVar[bool] = False
    RUNS: ClassVar[list[str]] = []

    def __init__(self, env: Env) -> None:
        self.env = env

    def read(self) -> KernelState:
        units = dict(self.KERNEL)
        return KernelState(units, {"rules": sum(1 for v in units.values() if v)}, dict(units))  # type: ignore[arg-type]

    def plan(
        self,
        current: KernelState,
        artifact: LoadedArtifact,
        record: Record | None,
        previous: Mapping[str, bytes],
        set_update: str | None = None,
    ) -> Plan:
        text = artifact.text("nftables.nft")
        if (
            record is not None
            and record.artifact == artifact.hash
            and not current.differs(record.kernel)
        ):
            return Plan("nftables", artifact.hash, "none", "already applied", (), current)
        steps = tuple(Step("set", f"set u{i}", f"{text}#{i}", (f"u{i}",)) for i in range(3))
        return Plan("nftables", artifact.hash, "full", "changed", steps, current, "diff")

    def check(self, plan: Plan) -> None:
        self.RUNS.append("check")

    def run(self, step: Step) -> None:
        if self.FAIL_AT is not None and step.what == f"set u{self.FAIL_AT}":
            raise RuntimeError("kernel said no")
        self.RUNS.append(step.what)
        self.KERNEL[step.args[0]] = step.payload

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        return []

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        if self.ROLLBACK_BROKEN:
            raise RuntimeError("rollback broke")
        self.KERNEL.clear()
        self.KERNEL.update(plan.current.raw)

    def remove(self) -> None:
        self.KERNEL.clear()


def install_fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDataplane]:
    """Route every target to FakeDataplane with an empty "kernel" (other test modules too)."""
    for target in ("nftables", "iptables", "ebpf"):  # never read the real kernel here
        monkeypatch.setitem(apply_mod.DATAPLANES, target, f"{__name__}:FakeDataplane")
    FakeDataplane.KERNEL = {}
    FakeDataplane.FAIL_AT = None
    FakeDataplane.ROLLBACK_BROKEN = False
    FakeDataplane.RUNS = []
    return FakeDataplane


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDataplane]:
    return install_fake(monkeypatch)


def test_apply_records_and_is_idempotent(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    art = load_dir(_artifact(tmp_path), "n1")
    out = apply_artifact(art, env)
    assert out.applied and {f"u{i}": f"rules v1#{i}" for i in range(3)} == fake.KERNEL
    rec = env.state.read_record()
    assert rec is not None and rec.artifact == art.hash and rec.kernel == fake.KERNEL
    assert env.state.read_journal() is None
    runs = list(fake.RUNS)
    again = apply_artifact(art, env)
    assert not again.applied and again.plan.mode == "none" and runs == fake.RUNS


def test_dry_run_changes_nothing(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    out = apply_artifact(load_dir(_artifact(tmp_path), "n1"), env, dry_run=True)
    assert out.plan.changes and not out.applied
    assert fake.KERNEL == {} and fake.RUNS == ["check"]
    assert env.state.read_record() is None


def test_failure_rolls_back_to_the_old_state(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    old = load_dir(_artifact(tmp_path, "rules v1", name="a"), "n1")
    new = load_dir(_artifact(tmp_path, "rules v2", name="b"), "n1")
    apply_artifact(old, env)
    before = dict(fake.KERNEL)
    fake.FAIL_AT = 2
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(new, env)
    assert info.value.restored and "set u2 failed: kernel said no" in str(info.value)
    assert "previous state is in force" in str(info.value)
    assert before == fake.KERNEL
    rec = env.state.read_record()
    assert rec is not None and rec.artifact == old.hash
    assert env.state.read_journal() is None


def test_broken_rollback_keeps_the_journal(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    apply_artifact(load_dir(_artifact(tmp_path, "rules v1", name="a"), "n1"), env)
    fake.FAIL_AT, fake.ROLLBACK_BROKEN = 1, True
    new = load_dir(_artifact(tmp_path, "rules v2", name="b"), "n1")
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(new, env)
    assert not info.value.restored and "ROLLBACK INCOMPLETE" in str(info.value)
    assert env.state.read_journal() is not None
    fake.FAIL_AT, fake.ROLLBACK_BROKEN = None, False
    out = apply_artifact(new, env)  # the next apply replaces everything and clears the journal
    assert out.applied and out.interrupted and env.state.read_journal() is None


def test_interrupted_apply_forces_a_full_plan(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    art = load_dir(_artifact(tmp_path), "n1")
    apply_artifact(art, env)
    env.state.begin("nftables", "something", art.hash)  # as a killed apply leaves it
    out = apply_artifact(art, env)
    assert out.interrupted and out.applied and out.plan.mode == "full"
    assert env.state.read_journal() is None


def test_drift_makes_the_same_artifact_apply_again(
    tmp_path: Path, fake: type[FakeDataplane]
) -> None:
    env = Env(StateDir(tmp_path / "state"))
    art = load_dir(_artifact(tmp_path), "n1")
    apply_artifact(art, env)
    fake.KERNEL["u1"] = "tampered"
    out = apply_artifact(art, env)
    assert out.applied and fake.KERNEL["u1"] == "rules v1#1"


def test_lock_busy_is_reported(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"), lock_timeout=0.1)
    with apply_lock(env.state.root), pytest.raises(LockBusy):
        apply_artifact(load_dir(_artifact(tmp_path), "n1"), env)
