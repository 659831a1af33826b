"""One apply at a time: an exclusive ``flock(2)`` on ``<state dir>/lock``.

``flock`` locks belong to the open file description, so the kernel drops the lock when the
holder exits for any reason, ``kill -9`` included: a crashed apply never leaves a stale lock
behind, and no PID-file heuristics are needed. The holder writes its PID into the file only so
that the message of a waiting apply can say who holds it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with apply_lock(d):
...     try:
...         with apply_lock(d, timeout=0):
...             pass
...     except LockBusy as e:
...         print("busy")
busy
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILE", "LockBusy", "apply_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE = "lock"
_POLL = 0.05


class LockBusy(RuntimeError):
    """Another apply (or agent reconcile) holds the lock."""

    def __init__(self, path: Path, holder: str, waited: float) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder}" if holder else "another process"
        super().__init__(
            f"another tortie apply is running ({who} holds {path}); gave up after {waited:.1f}s"
        )


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def apply_lock(state_dir: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the state dir's lock for the body; wait up to ``timeout`` seconds for it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise LockBusy(path, _holder(fd), waited) from None
                time.sleep(_POLL)
        waited = time.monotonic() - start
        if waited > _POLL:
            logger.info("waited %.2fs for the apply lock %s", waited, path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
