"""A node built to match the demo cluster (:mod:`tests.support.demo_cluster`), and the
``tortie`` CLI run against that node's network namespace.

The runtime runs in the test process's namespaces and sends every kernel command into the
node's netns (``Env.netns`` / the hidden ``--netns`` CLI option); state dirs and bpffs mounts
are temporary directories. Nothing touches the root namespace's ruleset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from compiler.ir.nodes import Program
from compiler.tools import nft
from runtime.plan import Env
from runtime.state import StateDir
from tests.support.demo_cluster import EXT_V4, NODE, NODE_V4, cluster_yaml, compile_yaml
from tests.support.netns import Cluster, External, Node

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from compiler.cli import main; main()"]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class World:
    """One node netns with pods a, b, c and an external host behind eth0."""

    cluster: Cluster
    node: Node
    ext: External
    env: Env
    state_dir: Path

    def cli(self, *args: str, timeout: float = 120) -> Ran:
        """``tortie ARGS`` aimed at this node (netns, state dir), in-process (click's runner)."""
        from click.testing import CliRunner

        from compiler.cli import main

        result = CliRunner().invoke(main, list(args), env=cli_env(self), catch_exceptions=False)
        return Ran(result.exit_code, result.stdout, result.stderr)

    def cli_process(self, *args: str, timeout: float = 120) -> Ran:
        """``tortie ARGS`` as a subprocess (for concurrency and kill tests)."""
        proc = subprocess.run(
            [*CLI, *args],
            cwd=ROOT,
            env=cli_env(self),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def nft_table(self) -> str | None:
        try:
            return nft.list_table("inet", "tortie", netns=self.node.name)
        except nft.NftError:
            return None


def cli_env(world: World) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TORTIE_NETNS=world.node.name,
        TORTIE_STATE_DIR=str(world.state_dir),
        TORTIE_BPFFS=str(world.env.bpffs),
        PYTHONPATH=str(ROOT),
    )
    return env


@contextmanager
def world(tmp_path: Path, program: Program | None = None) -> Iterator[World]:
    """A cluster matching the fixture (pod interfaces as the compiler named them)."""
    if program is None:
        program, _ = compile_yaml(cluster_yaml())
    with Cluster() as cluster:
        node = cluster.add_node(NODE)
        ext = node.add_uplink("eth0", f"{NODE_V4}/24", None, f"{EXT_V4}/24", None, name="ext")
        for ep in sorted(program.endpoints, key=lambda e: e.id):
            if ep.is_host or ep.node != NODE:
                continue
            v4 = next(str(ip) for ip in ep.ips if ip.version == 4)
            node.add_pod(ep.id.split("/")[-1], ep.interface, v4, None)
        state = tmp_path / "state"
        env = Env(StateDir(state), netns=node.name, bpffs=tmp_path / "bpffs", lock_timeout=30)
        yield World(cluster, node, ext, env, state)


@contextmanager
def bpffs_cleanup(w: World) -> Iterator[None]:
    """Unmount the bpffs the runtime may have mounted for this world (drops every pin)."""
    try:
        yield
    finally:
        from runtime.bpffs import is_bpffs, unmount

        if w.env.bpffs.is_dir() and is_bpffs(w.env.bpffs):
            unmount(w.env.bpffs)


def killed_apply(
    cmd: list[str],
    env: dict[str, str],
    journal: Path,
    delay: float,
    after_journal: bool,
    journal_timeout: float = 10.0,
) -> None:
    """Run ``cmd`` (an apply) in its own session and ``kill -9`` it after ``delay`` seconds —
    counted from when it wrote ``journal`` if ``after_journal`` (waiting at most
    ``journal_timeout``), else from its start."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if after_journal:
            deadline = time.monotonic() + journal_timeout
            while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
        time.sleep(delay)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
