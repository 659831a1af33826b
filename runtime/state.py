"""The runtime's memory on disk: what was applied, and whether an apply was cut short.

Everything lives in one directory (``--state-dir``, default :data:`DEFAULT_STATE_DIR`; tests use
a temporary one)::

    lock            flock(2) target (runtime/lock.py)
    applied.json    Record of the last successful apply, with the kernel snapshot it produced
    applied/        copy of the artifact files that were applied (diffs for --dry-run)
    journal.json    present only while an apply runs: an apply killed with -9 leaves it behind
    work/           scratch files handed to nft / iptables-restore / ipset (never stdin, so a
                    killed apply can never feed a tool half a script)

Every file is replaced by write-to-temp, fsync, rename, so a crash leaves the old or the new
version, never a torn one. The record is written *after* the kernel accepted the new state; a
crash in between leaves the journal, and the next apply/status sees it (see ``runtime/apply.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_STATE_DIR", "Journal", "Record", "StateDir", "atomic_write"]

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/tortie")
RECORD_FORMAT = 1


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Record:
    """What the last successful apply put into the kernel.

    ``kernel`` is the dataplane's normalised read-back right after the apply (one text per unit:
    an nft table, an iptables table of one family, the ipsets, the bpf attachments...), so a
    later read that differs is drift. ``counts`` are derived from the same read-back.
    """

    target: str
    node: str
    artifact: str  # sha256 of the artifact's manifest.json
    source: str  # where the artifact came from (a directory, or "agent:<dir>")
    compiler: str
    applied_at: float  # Unix time
    mode: str  # "full" | "sets"
    counts: Mapping[str, int]
    kernel: Mapping[str, str | None]
    summary: Mapping[str, int] = field(default_factory=dict)
    format: int = RECORD_FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Journal:
    """An apply in progress (or killed): what it was replacing with what."""

    target: str
    artifact: str
    previous: str | None  # artifact hash of the record it started from
    pid: int
    started_at: float

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()


class StateDir:
    """The state directory; creating the object creates nothing on disk."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @property
    def record_path(self) -> Path:
        return self.root / "applied.json"

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.json"

    @property
    def applied_dir(self) -> Path:
        return self.root / "applied"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def work_dir(self) -> Path:
        path = self.root / "work"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    # -- record ---------------------------------------------------------------------------

    def read_record(self) -> Record | None:
        try:
            data = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable %s: %s", self.record_path, e)
            return None
        if data.get("format") != RECORD_FORMAT:
            logger.warning("ignoring %s of unknown format %r", self.record_path, data.get("format"))
            return None
        return Record.from_json(data)

    def write_record(self, record: Record, files: Mapping[str, bytes] | None = None) -> None:
        """Store ``record`` (and, when given, a copy of the applied artifact's files)."""
        self.ensure()
        if files is not None:
            self._write_applied_files(files)
        atomic_write(self.record_path, record.to_json())

    def applied_files(self) -> dict[str, bytes]:
        """The files of the last applied artifact (empty when unknown)."""
        out: dict[str, bytes] = {}
        root = self.applied_dir
        if not root.is_dir():
            return out
        for path in sorted(root.rglob("*")):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
        return out

    def _write_applied_files(self, files: Mapping[str, bytes]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".applied.", dir=self.root))
        try:
            for name, data in sorted(files.items()):
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            old = self.root / ".applied.old"
            if old.exists():
                shutil.rmtree(old)
            if self.applied_dir.exists():
                self.applied_dir.rename(old)
            tmp.rename(self.applied_dir)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- journal --------------------------------------------------------------------------

    def begin(self, target: str, artifact: str, previous: str | None) -> Journal:
        self.ensure()
        journal = Journal(target, artifact, previous, os.getpid(), time.time())
        atomic_write(self.journal_path, journal.to_json())
        return journal

    def end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()

    def read_journal(self) -> Journal | None:
        """A journal left by an apply that did not finish (call with the lock held, or
        accept that it may belong to an apply running right now)."""
        try:
            data = json.loads(self.journal_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return Journal("?", "?", None, 0, 0.0)
        known = {f for f in Journal.__dataclass_fields__}
        return Journal(**{k: v for k, v in data.items() if k in known})
