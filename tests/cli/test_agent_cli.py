"""``tortie agent`` called in-process gives the caller its signal handlers back."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main


def test_agent_restores_the_callers_signal_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.agent

    seen = {}

    def fake_run(self: object, stop: object, once: bool = False) -> int:
        seen["term"] = signal.getsignal(signal.SIGTERM)
        return 0

    monkeypatch.setattr(runtime.agent.Agent, "run", fake_run)
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    (tmp_path / "watch").mkdir()
    args = ["agent", "--node", "n1", "--watch", str(tmp_path / "watch"), "--once"]
    args += ["--state-dir", str(tmp_path / "state")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen["term"] not in before  # the agent's own handler was installed while it ran
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
