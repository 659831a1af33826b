"""Run code in another Python process with another ``PYTHONHASHSEED``: set and dict orders
differ there, so output that depends on them differs too (the determinism tests' tool)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_stdout(code: str, *args: str, seed: str, timeout: float = 120) -> str:
    """stdout of ``python -c CODE ARGS`` run from the repository root (importable there)."""
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=timeout,
    ).stdout


def cli_compile(args: list[str], out: Path, *, seed: str) -> dict[str, bytes]:
    """``tortie compile ARGS -o OUT`` in another process: the files it wrote, by name."""
    cli = "from compiler.cli import main; main()"
    python_stdout(cli, "compile", *args, "-o", str(out), seed=seed)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}
