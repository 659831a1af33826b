"""The one place that runs ``ipset``.

Every call is an argv list (never a shell), with a timeout and captured output; a failure raises
:class:`IpsetError` with the argv, exit status and stderr. ``netns`` runs the command in a named
network namespace (ipsets are per network namespace).

>>> argv(["list", "-n"], netns="tortie-x")
['ip', 'netns', 'exec', 'tortie-x', 'ipset', 'list', '-n']
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence

from compiler.tools._exec import ToolError, in_netns
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 60.0
IPSET = "ipset"


class IpsetError(ToolError):
    """``ipset`` failed (non-zero exit, timeout or missing binary)."""


def available() -> bool:
    return shutil.which(IPSET) is not None


def argv(args: Sequence[str], netns: str | None = None) -> list[str]:
    return in_netns([IPSET, *args], netns)


def run(
    args: Sequence[str],
    *,
    input: str | None = None,
    netns: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    return run_tool(argv(args, netns), IpsetError, input=input, timeout=timeout).stdout


def restore(script: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``ipset restore``: runs the commands in order and stops at the first error (commands
    before it stay applied: ipset restore is not a transaction)."""
    run(["restore"], input=script, netns=netns, timeout=timeout)


def list_names(*, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Names of every set in the namespace."""
    return run(["list", "-n"], netns=netns, timeout=timeout).split()


def save(*, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """``ipset save``: every set's ``create`` line and members."""
    return run(["save"], netns=netns, timeout=timeout)


def members(name: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The members of one set, as ``ipset save`` prints them."""
    out = run(["save", name], netns=netns, timeout=timeout)
    return [line.split(" ", 2)[2] for line in out.splitlines() if line.startswith("add ")]


def destroy(
    names: Iterable[str], *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Destroy the named sets in one ``ipset restore`` run (a set still referenced by a rule
    cannot be destroyed: the call fails there)."""
    script = "".join(f"destroy {n}\n" for n in names)
    if script:
        restore(script, netns=netns, timeout=timeout)


def save_set(name: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """``ipset save NAME``: one set's ``create`` line and members (fails when it is absent)."""
    return run(["save", name], netns=netns, timeout=timeout)


def swap(a: str, b: str, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``ipset swap A B``: exchange the two sets' contents in one kernel operation (rules that
    reference ``A`` see ``B``'s members from then on, and the other way round)."""
    run(["swap", a, b], netns=netns, timeout=timeout)
