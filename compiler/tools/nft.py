"""The one place that runs ``nft`` (nftables' command-line tool).

Every call is an argv list (never a shell), with a timeout and captured output. A failure raises
:class:`NftError`, which carries the argv, the exit status and stderr, so callers can turn it
into a diagnostic or a test failure that says exactly what the kernel refused.

``netns`` runs the command inside a named network namespace (``ip netns exec NAME nft ...``);
tests use it to load scripts into throwaway namespaces and never touch the host's ruleset.

>>> nft_argv(["-c", "-f", "-"], netns="tortie-x")
['ip', 'netns', 'exec', 'tortie-x', 'nft', '-c', '-f', '-']
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.tools._exec import ToolError, in_netns
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 60.0
NFT = "nft"


@dataclass(frozen=True)
class NftResult:
    argv: tuple[str, ...]
    stdout: str
    stderr: str


class NftError(ToolError):
    """``nft`` failed (non-zero exit, timeout or missing binary)."""


def available() -> bool:
    """Whether the ``nft`` binary is on PATH."""
    return shutil.which(NFT) is not None


def nft_argv(args: Sequence[str], netns: str | None = None, isolated: bool = False) -> list[str]:
    """argv for ``nft ARGS``: in the named netns, or (``isolated``) in a fresh, empty one
    that disappears with the process (``unshare --net``), so a check sees no existing ruleset
    and can never touch the caller's."""
    return in_netns([NFT, *args], netns, isolated)


def run(
    args: Sequence[str],
    *,
    input: str | None = None,
    netns: str | None = None,
    isolated: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> NftResult:
    """Run ``nft ARGS`` (optionally in ``netns``) and return its output; raise NftError on failure."""
    argv = nft_argv(args, netns, isolated)
    proc = run_tool(argv, NftError, input=input, timeout=timeout)
    return NftResult(tuple(argv), proc.stdout, proc.stderr)


def check(
    script: str,
    *,
    netns: str | None = None,
    isolated: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """``nft -c -f -``: parse and validate against the kernel without committing anything."""
    run(["-c", "-f", "-"], input=script, netns=netns, isolated=isolated, timeout=timeout)


def load(script: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``nft -f -``: apply ``script`` as one transaction (all of it, or nothing)."""
    run(["-f", "-"], input=script, netns=netns, timeout=timeout)


def list_table(
    family: str, table: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """``nft list table FAMILY TABLE`` as text."""
    return run(["list", "table", family, table], netns=netns, timeout=timeout).stdout


def list_table_json(
    family: str, table: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, object]]:
    """``nft -j list table FAMILY TABLE``: the ``nftables`` array of JSON objects."""
    out = run(["-j", "list", "table", family, table], netns=netns, timeout=timeout).stdout
    return json.loads(out)["nftables"]


def list_ruleset_json(
    *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, object]]:
    out = run(["-j", "list", "ruleset"], netns=netns, timeout=timeout).stdout
    return json.loads(out)["nftables"]
