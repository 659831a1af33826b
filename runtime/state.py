"""The runtime's memory on disk: what was applied, and whether an apply was cut short.

Everything lives in one directory (``--state-dir``, default :data:`DEFAULT_STATE_DIR`; tests use
a temporary one)::

    lock            flock(2) target (runtime/lock.py)
    applied.json    Record of the last successful apply, with the kernel snapshot it produced
    applied/        copy of the artifact files that were applied (diffs for --dry-run)
    sets.json       the agent's set-only updates applied since applied.json was written
                    (:class:`SetOverlay`; runtime/nftables_fast.py): the state in force is the
                    record with these sets' listings in its kernel snapshot
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_STATE_DIR", "Journal", "Record", "SetOverlay", "StateDir", "atomic_write"]

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/tortie")
RECORD_FORMAT = 1


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename.

    ``durable=False``: no fsync of the file or the directory (still never torn for a killed
    process: the page cache outlives it). For files that only describe the kernel's volatile
    state (the fast path's journal and set overlay): after a machine crash the kernel's
    ruleset is gone too, and a lost or empty file there makes the next apply compare and
    replace everything (unreadable journal = unfinished apply; unreadable overlay = ignored,
    so the record differs from the kernel)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
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
    # The kernel's stamp when ``kernel`` was read (runtime/stamp.py; "" when none): while the
    # stamp is unchanged, the kernel still holds exactly ``kernel``.
    stamp: str = ""
    # Set only on a record read with its SetOverlay merged in (never stored): the program the
    # agent put in force with set-only updates on top of ``artifact``, and how many updates.
    overlay: str = ""
    overlay_updates: int = 0

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record in ``data``; TypeError when a field is missing or of the wrong type (a
        hand-edited or corrupted applied.json must not crash ``status`` or ``apply``)."""
        known = {f for f in cls.__dataclass_fields__}
        record = cls(**{k: v for k, v in data.items() if k in known})
        strings = (
            record.target,
            record.node,
            record.artifact,
            record.source,
            record.compiler,
            record.stamp,
        )
        if not all(isinstance(v, str) for v in (*strings, record.mode)):
            raise TypeError(
                "target, node, artifact, source, compiler, stamp and mode must be strings"
            )
        if isinstance(record.applied_at, bool) or not isinstance(record.applied_at, int | float):
            raise TypeError("applied_at must be a number")
        for name, mapping, ok in (
            ("counts", record.counts, lambda v: isinstance(v, int)),
            ("summary", record.summary, lambda v: isinstance(v, int)),
            ("kernel", record.kernel, lambda v: v is None or isinstance(v, str)),
        ):
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and ok(v) for k, v in mapping.items()
            ):
                raise TypeError(f"{name} must map names to values of the right type")
        return record


@dataclass(frozen=True, slots=True)
class SetOverlay:
    """Set-only updates the agent applied on top of the record (``sets.json``).

    Valid only for the record it was made on: ``base`` (its artifact) and ``base_record``
    ((inode, size, mtime_ns) of that ``applied.json``); a record written later makes it stale.
    ``sets``: block name -> the block as ``nft list table`` prints it, now; or, for the names in
    ``masked`` (chains and sets a chain update made: ``runtime/nftables_chains.py``), a
    stand-in holding the SHA-256 of the object as the kernel's netlink dump returns it (nft's
    listing costs ~0.5 s at 10,000 policies, even for one chain), with ``masked[name]`` =
    [kind, its rules or elements] for the record's counts. ``removed``: blocks of the base that
    updates deleted.
    """

    base: str
    base_record: list[int]
    program: str  # the agent's name for the program in force
    updates: int
    applied_at: float
    sets: Mapping[str, str]
    masked: Mapping[str, list] = field(default_factory=dict)  # name -> [kind, count]
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        # (not asdict(): it deep-copies every block text first; the agent writes this file on
        # every fast update)
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


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
    def overlay_path(self) -> Path:
        return self.root / "sets.json"

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

    def read_record(self, overlay: bool = True) -> Record | None:
        """The record in force: ``applied.json`` with the agent's :class:`SetOverlay` merged
        in when one was made on it (``overlay=False``: the stored record alone)."""
        try:
            with open(self.record_path, "rb") as f:
                st = os.fstat(f.fileno())
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable %s: %s", self.record_path, e)
            return None
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
            logger.warning("ignoring %s of unknown format %r", self.record_path, fmt)
            return None
        try:
            record = Record.from_json(data)
        except (TypeError, ValueError) as e:
            logger.warning("ignoring malformed %s: %s", self.record_path, e)
            return None
        if not overlay:
            return record
        sets = self.read_overlay()
        if sets is None or sets.base != record.artifact:
            return record
        if list(sets.base_record) != [st.st_ino, st.st_size, st.st_mtime_ns]:
            return record  # stale: made on an earlier applied.json
        from runtime.nftables_fast import overlay_record  # nftables is the only user

        # The stamp was taken for the stored record, not for the updates on top of it.
        return replace(overlay_record(record, sets), stamp="")

    def masked_overlay(self) -> SetOverlay | None:
        """The overlay in force when it has netlink stand-ins (``masked``), else None: what
        reading the kernel needs to know (``runtime.nftables.NftablesDataplane.read``)."""
        overlay = self.read_overlay() if self.overlay_path.exists() else None
        if overlay is None or not overlay.masked:
            return None
        if list(overlay.base_record) != list(self.record_stat() or ()):
            return None  # stale: made on an earlier applied.json
        return overlay

    def record_stat(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime_ns) of ``applied.json``: changes whenever it is replaced."""
        try:
            st = self.record_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def write_record(self, record: Record, files: Mapping[str, bytes] | None = None) -> None:
        """Store ``record`` (and, when given, a copy of the applied artifact's files); any
        :class:`SetOverlay` is dropped first (the new record describes the whole kernel)."""
        self.ensure()
        self.clear_overlay()
        if files is not None:
            self._write_applied_files(files)
        atomic_write(self.record_path, record.to_json())

    # -- set overlay ----------------------------------------------------------------------

    def read_overlay(self) -> SetOverlay | None:
        try:
            data = json.loads(self.overlay_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable %s: %s", self.overlay_path, e)
            return None
        try:
            optional = ("masked", "removed")  # not in overlays of older versions
            return SetOverlay(
                **{
                    k: data[k]
                    for k in SetOverlay.__dataclass_fields__
                    if k in data or k not in optional
                }
            )
        except (KeyError, TypeError) as e:
            logger.warning("ignoring %s: %s", self.overlay_path, e)
            return None

    def write_overlay(self, overlay: SetOverlay, *, durable: bool = True) -> None:
        self.ensure()
        atomic_write(self.overlay_path, overlay.to_json(), durable=durable)

    def clear_overlay(self) -> None:
        try:
            self.overlay_path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.root)

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

    def begin(
        self, target: str, artifact: str, previous: str | None, *, durable: bool = True
    ) -> Journal:
        self.ensure()
        journal = Journal(target, artifact, previous, os.getpid(), time.time())
        atomic_write(self.journal_path, journal.to_json(), durable=durable)
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
        if not isinstance(data, dict):
            return Journal("?", "?", None, 0, 0.0)
        known = {f for f in Journal.__dataclass_fields__}
        try:
            journal = Journal(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return Journal("?", "?", None, 0, 0.0)
        if not isinstance(journal.artifact, str) or not isinstance(journal.pid, int):
            return Journal("?", "?", None, 0, 0.0)
        return journal
