"""The one place that runs ``iptables-restore`` / ``iptables-save`` (and the ip6tables ones).

Debian ships two backends of the same tools: ``iptables-legacy-*`` (x_tables) and
``iptables-nft-*`` (the nf_tables kernel API with xtables semantics). Callers name the backend
and the family; the binary is ``{ip,ip6}tables-{legacy,nft}-{restore,save}``.

Every call is an argv list (never a shell), with a timeout and captured output. A failure raises
:class:`IptablesError`, carrying the argv, the exit status and stderr. ``netns`` runs the command
inside a named network namespace (``ip netns exec NAME …``); ``isolated`` runs it in a fresh,
empty one that disappears with the process (``unshare --net``), for ``--test`` runs that must
never see or touch the caller's rules.

>>> argv(4, "nft", "restore", ["--noflush"], netns="tortie-x")
['ip', 'netns', 'exec', 'tortie-x', 'iptables-nft-restore', '--noflush']
>>> argv(6, "legacy", "save", ["-t", "raw"])
['ip6tables-legacy-save', '-t', 'raw']
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.tools._exec import ToolError, in_netns
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 60.0
BACKENDS = ("legacy", "nft")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    stdout: str
    stderr: str


class IptablesError(ToolError):
    """An iptables tool failed (non-zero exit, timeout or missing binary)."""


def binary(family: int, backend: str, tool: str) -> str:
    if family not in (4, 6) or backend not in BACKENDS or tool not in ("restore", "save"):
        raise ValueError(f"no iptables tool for family {family}, backend {backend!r}, {tool!r}")
    return f"{'ip6' if family == 6 else 'ip'}tables-{backend}-{tool}"


def available(backend: str) -> bool:
    """Whether all four tools of ``backend`` are on PATH."""
    return all(shutil.which(binary(f, backend, t)) for f in (4, 6) for t in ("restore", "save"))


def argv(
    family: int,
    backend: str,
    tool: str,
    args: Sequence[str],
    netns: str | None = None,
    isolated: bool = False,
) -> list[str]:
    return in_netns([binary(family, backend, tool), *args], netns, isolated)


def _run(cmd: list[str], input: str | None, timeout: float) -> Result:
    proc = run_tool(cmd, IptablesError, input=input, timeout=timeout)
    return Result(tuple(cmd), proc.stdout, proc.stderr)


def restore(
    text: str,
    *,
    family: int,
    backend: str,
    noflush: bool = True,
    test: bool = False,
    netns: str | None = None,
    isolated: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """``iptables-restore [--noflush] [--test]`` with ``text`` on stdin. Each ``COMMIT`` replaces
    one table atomically; a failure leaves the table that failed as it was."""
    args = (["--noflush"] if noflush else []) + (["--test"] if test else [])
    return _run(argv(family, backend, "restore", args, netns, isolated), text, timeout)


def save(
    *,
    family: int,
    backend: str,
    table: str | None = None,
    counters: bool = False,
    netns: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """``iptables-save [-c] [-t TABLE]`` as text (only tables that are loaded appear; ``-c``
    prefixes every rule with its ``[packets:bytes]`` counters)."""
    args = (["-c"] if counters else []) + (["-t", table] if table else [])
    return _run(argv(family, backend, "save", args, netns), None, timeout).stdout
