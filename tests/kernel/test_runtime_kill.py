"""``kill -9`` at random points of an apply leaves one complete ruleset: the old or the new.

Each iteration starts from a known state (the "old" artifact applied), starts ``tortie apply
NEW`` as a process group and kills the whole group (the CLI and its ``nft`` child) with SIGKILL
after a random delay, then reads the kernel. Half of the delays are drawn over the whole life
of the process (most land in Python's start-up), half after the apply's journal appears, i.e.
while the kernel is being changed, so the critical window is hit often.

``TORTIE_KILL_ITERATIONS`` sets the number of iterations (default 40).
"""

from __future__ import annotations

import collections
import os
import random
import time
from pathlib import Path

import pytest

from runtime.apply import apply_artifact, load_dir
from runtime.nftables import UNIT, NftablesDataplane
from runtime.status import read_status
from tests.support.demo_cluster import cluster_yaml, compile_dir
from tests.support.runtime_world import CLI, cli_env, killed_apply, world

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ITERATIONS = int(os.environ.get("TORTIE_KILL_ITERATIONS", "40"))


def test_kill_9_during_nftables_apply_leaves_old_or_new(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        dirs = {
            "A": compile_dir(cluster_yaml(7000), tmp_path / "A"),
            "B": compile_dir(cluster_yaml(7001), tmp_path / "B"),
        }
        arts = {k: load_dir(d, "n1") for k, d in dirs.items()}
        dp = NftablesDataplane(w.env)
        listing = {}
        for k in ("A", "B"):
            apply_artifact(arts[k], w.env)
            listing[k] = dp.read().units[UNIT]
        assert listing["A"] != listing["B"]
        # How long a whole CLI apply takes here (upper bound of the random delays).
        t0 = time.monotonic()
        assert w.cli_process("apply", str(dirs["A"]), "--node", "n1").returncode == 0
        whole = time.monotonic() - t0
        rng = random.Random(1234)
        seen: collections.Counter[str] = collections.Counter()
        journal = w.state_dir / "journal.json"
        for i in range(ITERATIONS):
            old, new = ("A", "B") if i % 2 == 0 else ("B", "A")
            apply_artifact(arts[old], w.env)  # known start; also clears an earlier kill's journal
            assert dp.read().units[UNIT] == listing[old]
            after_journal = i % 4 >= 2
            delay = rng.uniform(0, 0.15) if after_journal else rng.uniform(0, whole)
            cmd = [*CLI, "apply", str(dirs[new]), "--node", "n1"]
            killed_apply(cmd, cli_env(w), journal, delay, after_journal)
            now = dp.read().units[UNIT]
            assert now in (listing[old], listing[new]), f"iteration {i}: a mixed or empty table"
            state = "new" if now == listing[new] else "old"
            interrupted = journal.exists()
            seen[f"{state}{'+journal' if interrupted else ''}"] += 1
            if interrupted:  # status says so, and exits 1
                assert not read_status(w.env).in_sync
        print(
            f"\nkill -9 loop: {ITERATIONS} iterations, whole apply {whole * 1000:.0f} ms: {dict(seen)}"
        )
        assert seen["old"] + seen["old+journal"] > 0 and seen["new"] + seen["new+journal"] > 0
        # After all that, one more apply leaves the node in sync.
        apply_artifact(arts["A"], w.env)
        assert read_status(w.env).in_sync
