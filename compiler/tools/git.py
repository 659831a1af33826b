"""The one place that runs ``git`` (``tortie diff --base-rev/--head-rev``).

Every call is an argv list (never a shell) with a timeout; output is bytes (``git archive``
writes a tar). A missing binary, a timeout or a non-zero exit raise :class:`GitError`, whose
message names the command, how it ended and what git said.

>>> git_argv(["rev-parse", "HEAD"], "/repo")
['git', '-C', '/repo', 'rev-parse', 'HEAD']
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from compiler.tools._exec import ToolError

__all__ = ["GitError", "git", "git_argv"]

TIMEOUT = 120.0


class GitError(ToolError):
    """git failed: a bad revision, not a repository, git missing, a timeout."""

    def summary(self) -> str:
        if self.returncode == 127:
            return "git is not installed"
        return super().summary()


def git_argv(args: Sequence[str], cwd: str) -> list[str]:
    return ["git", "-C", cwd, *args]


def git(args: Sequence[str], cwd: str, timeout: float = TIMEOUT) -> bytes:
    """Run ``git -C cwd ARGS`` and return its standard output."""
    argv = git_argv(args, cwd)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise GitError(argv, 127, str(e)) from None
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else ""
        raise GitError(argv, None, stderr) from None
    if done.returncode != 0:
        raise GitError(argv, done.returncode, done.stderr.decode("utf-8", "replace"))
    return done.stdout
