"""The ``tortie`` executable (``compiler.cli.run``) ends the process with ``os._exit`` once a
command is done: exit statuses, and stdout/stderr, must be exactly what the command produced
(CliRunner, which calls ``main`` in-process, is the reference)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from compiler.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo")


def tortie(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_large_output_is_complete_and_the_status_is_zero() -> None:
    proc = tortie("ir", "-f", DEMO)
    ref = CliRunner().invoke(main, ["ir", "-f", DEMO])
    assert proc.returncode == 0 == ref.exit_code
    assert len(proc.stdout) > 2000
    assert proc.stdout == ref.stdout


def test_compile_writes_its_artifact_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "a"
    proc = tortie("compile", "-f", DEMO, "--node", "node1", "--target", "nftables", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}")
    assert (out / "manifest.json").is_file() and (out / "nftables.nft").stat().st_size > 0


def test_input_errors_exit_1_with_the_diagnostic() -> None:
    proc = tortie("check", "-f", "-", stdin="kind: NetworkPolicy\napiVersion: nope/v1\n")
    assert proc.returncode == 1
    assert "error[" in proc.stderr


def test_usage_errors_exit_2() -> None:
    proc = tortie("compile", "-f", DEMO, "--target", "nftables", "-o", "/nonexistent/x")
    assert proc.returncode == 2
    assert "--node" in proc.stderr
