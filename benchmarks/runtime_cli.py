"""What a user waits for on a node: ``tortie apply`` and ``tortie status`` end to end, at scale.

    python3 -m benchmarks.runtime_cli --artifact /tmp/out/node-001 [--runs 3]

``benchmarks/apply.py`` times the kernel tools alone (``nft -f``); this script times the whole
commands as a user runs them, in a private network namespace (deleted afterwards) with a
temporary state directory: a first apply into the empty namespace, the same apply again (nothing
to do), ``status`` (trusting the nf_tables generation when it is unchanged) and ``status --full``
(reading the ruleset back). Each row: wall seconds and CPU seconds of the command and its
children (``nft``), median of ``--runs``. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.apply import private_netns

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "compiler.cli"]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s incl. children, exit code) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
    return wall, cpu, proc.returncode


def measure(artifact: Path, node: str, runs: int) -> list[tuple[str, float, float]]:
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        with private_netns() as ns, tempfile.TemporaryDirectory(prefix="tortie-bench-") as st:
            env = dict(os.environ, TORTIE_NETNS=ns, TORTIE_STATE_DIR=st, PYTHONPATH=str(ROOT))
            steps = [
                ("apply (empty namespace)", ["apply", str(artifact), "--node", node]),
                ("apply again (nothing to do)", ["apply", str(artifact), "--node", node]),
                ("status", ["status"]),
                ("status --full", ["status", "--full"]),
            ]
            for name, args in steps:
                wall, cpu, code = _run([*CLI, *args], env)
                if code != 0:
                    raise SystemExit(f"{name}: exit {code}")
                rows.setdefault(name, []).append((wall, cpu))
    return [
        (name, statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for name, v in rows.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, required=True, help="an nftables artifact directory")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    manifest = json.loads((args.artifact / "manifest.json").read_text())
    if manifest.get("target") != "nftables":
        raise SystemExit("give an nftables artifact")
    rows = measure(args.artifact, manifest["node"], args.runs)
    summary = manifest.get("summary", {})
    print(
        f"artifact {args.artifact}: {summary.get('rules', '?')} rules, "
        f"{summary.get('sets', '?')} sets, {summary.get('set_elements', '?')} elements; "
        f"median of {args.runs}; load {os.getloadavg()[0]:.1f}"
    )
    print(f"| {'command':<28} | {'wall s':>7} | {'CPU s':>7} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|")
    for name, wall, cpu in rows:
        print(f"| {name:<28} | {wall:7.2f} | {cpu:7.2f} |")


if __name__ == "__main__":
    main()
