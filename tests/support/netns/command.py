"""Running things in a network namespace: commands (``ip netns exec``) and the current thread
(``in_netns``, for sockets and sysctls).

Nothing here creates or deletes a namespace; :mod:`.cluster` does that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.netns.namespaces import Netns

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
COMMAND_TIMEOUT = 30.0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError, ``str()`` shows stderr and the stdin script."""

    def __init__(self, result: subprocess.CompletedProcess[str], input: str | None) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.input = input

    def __str__(self) -> str:
        text = f"{' '.join(map(str, self.cmd))!r} exited {self.returncode}: {self.stderr.strip()}"
        if self.input:
            text += f"\n--- stdin ---\n{self.input}"
        return text


def run_command(
    argv: Sequence[str], *, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a timeout and captured text output; raise CommandError on failure."""
    result = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if check and result.returncode != 0:
        raise CommandError(result, input)
    return result


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(ns: str | Netns) -> Iterator[None]:
    """Run the body with the *current thread* in network namespace ``ns``, then switch back.

    Sockets created in the body belong to ``ns`` for their whole life, so a test can open listeners and
    clients in many namespaces from one thread without starting processes. ``setns(2)`` with
    CLONE_NEWNET only affects the calling thread (threads it starts meanwhile inherit the netns,
    as do subprocesses); ``os.setns`` is Python 3.12+, hence ctypes.
    """
    name = ns if isinstance(ns, str) else ns.name
    path = name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            # Guard against writing sysctls into the wrong namespace if setns lied to us.
            if os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(target).st_ino:
                _setns(own)
                raise RuntimeError(f"setns into {path} did not take effect")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
