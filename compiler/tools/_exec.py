"""What every tool module shares: how a command is run and how its failure is reported.

Every call is an argv list (never a shell), with a timeout and captured text output. A missing
binary, a timeout and a non-zero exit all raise the caller's :class:`ToolError` subclass, which
carries the argv, the exit status (127 for a missing binary, None for a timeout) and stderr.

>>> in_netns(["nft", "-f", "-"], "tortie-x")
['ip', 'netns', 'exec', 'tortie-x', 'nft', '-f', '-']
>>> in_netns(["nft", "-c", "-f", "-"], None, isolated=True)
['unshare', '--net', 'nft', '-c', '-f', '-']
>>> str(ToolError(["nft", "-f", "-"], None, "slow\\n"))
"'nft -f -' timed out: slow"
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence


def exit_status(returncode: int | None) -> str:
    return "timed out" if returncode is None else f"exited {returncode}"


class ToolError(RuntimeError):
    """An external tool failed (non-zero exit, timeout or missing binary)."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(self.summary())

    def summary(self) -> str:
        """The exception's message: the command, how it ended, and what it said."""
        return f"{' '.join(self.argv)!r} {exit_status(self.returncode)}: {self.stderr.strip()}"


def in_netns(argv: Sequence[str], netns: str | None, isolated: bool = False) -> list[str]:
    """``argv`` run in the named network namespace (``ip netns exec``), or (``isolated``) in a
    fresh, empty one that disappears with the process (``unshare --net``), so a check sees no
    existing ruleset and can never touch the caller's."""
    if netns:
        return ["ip", "netns", "exec", netns, *argv]
    return ["unshare", "--net", *argv] if isolated else list(argv)


def run(
    argv: list[str],
    error: Callable[[list[str], int | None, str], Exception],
    *,
    input: str | None = None,
    timeout: float,
    cwd: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise ``error(argv, status, stderr)`` when the binary is missing, the call
    times out or (with ``check``) it exits non-zero."""
    try:
        proc = subprocess.run(
            argv, input=input, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as e:
        raise error(argv, 127, str(e)) from None
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise error(argv, None, stderr) from None
    if check and proc.returncode != 0:
        raise error(argv, proc.returncode, proc.stderr)
    return proc
