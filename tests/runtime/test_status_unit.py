"""``tortie status`` rendering and exit codes, against a fake dataplane (no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from runtime.apply import apply_artifact, load_dir
from runtime.plan import Env
from runtime.state import StateDir
from runtime.status import read_status, render_text
from tests.runtime.test_apply_unit import FakeDataplane, _artifact, install_fake


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDataplane]:
    return install_fake(monkeypatch)


def _status(state: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["status", "--state-dir", str(state)])
    return res.exit_code, res.stdout


def test_nothing_applied(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    st = read_status(Env(StateDir(tmp_path)))
    assert not st.in_sync and st.record is None
    assert "nothing" in render_text(st)
    code, out = _status(tmp_path)
    assert code == 1 and "applied:   nothing" in out


def test_in_sync_then_drift(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    art = load_dir(_artifact(tmp_path), "n1")
    apply_artifact(art, env)
    code, out = _status(env.state.root)
    assert code == 0, out
    assert "state:     in sync" in out and art.hash[:16] in out and "3 rules" in out
    fake.KERNEL["u1"] = "changed by hand"
    code, out = _status(env.state.root)
    assert code == 1 and "DRIFT" in out and "+changed by hand" in out
    res = CliRunner().invoke(main, ["status", "--state-dir", str(env.state.root), "-o", "json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1
    assert doc["in_sync"] is False and doc["drift"] == ["u1"]
    assert doc["applied"]["artifact"] == art.hash and doc["applied"]["counts"] == {"rules": 3}
    assert doc["kernel"]["counts"] == {"rules": 3}


def test_interrupted_apply_is_reported(tmp_path: Path, fake: type[FakeDataplane]) -> None:
    env = Env(StateDir(tmp_path / "state"))
    apply_artifact(load_dir(_artifact(tmp_path), "n1"), env)
    env.state.begin("nftables", "f" * 64, None)
    st = read_status(env)
    assert not st.in_sync and st.journal is not None
    assert "interrupted" in render_text(st)
    assert st.as_json()["interrupted_apply"]["artifact"] == "f" * 64


def test_unreadable_kernel_is_an_error_not_a_crash(
    tmp_path: Path, fake: type[FakeDataplane], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = Env(StateDir(tmp_path / "state"))
    apply_artifact(load_dir(_artifact(tmp_path), "n1"), env)

    def broken(self: FakeDataplane) -> None:
        raise RuntimeError("nft: permission denied")

    monkeypatch.setattr(FakeDataplane, "read", broken)
    st = read_status(env)
    assert not st.in_sync and "permission denied" in st.error
    assert "ERROR" in render_text(st)
