"""``tortie status``: what is loaded, and does the kernel still match it?

Drift detection compares the dataplane's read-back now with the read-back recorded right after
the last apply, unit by unit (``runtime/plan.py``). Anything that changes Tortie's objects shows
up: ``nft flush table inet tortie``, a deleted chain or set element, a flushed iptables chain, a
detached bpf program. Objects Tortie does not own are never read, so other software's rules are
not drift. A journal left by a killed apply is reported too (the kernel may hold the old state,
the new one, or, for multi-step dataplanes, a mix of per-unit states until the next apply).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.apply import dataplane_for
from runtime.lock import LockBusy, apply_lock
from runtime.plan import Env, KernelState, unified_diff
from runtime.stamp import unchanged_since
from runtime.state import Journal, Record

__all__ = ["Status", "read_status", "render_text"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Status:
    record: Record | None
    current: KernelState | None
    drift: tuple[str, ...]  # units that differ from the record
    diff: str
    journal: Journal | None = None
    busy: bool = False  # an apply held the lock while we read
    error: str = ""  # the kernel could not be read
    foreign: tuple[str, ...] = field(default=())  # targets with objects but no record
    # How the kernel was checked: "full" (read back and compared) or "stamp" (its stamp is the
    # one recorded at the apply, so it holds what was read then: runtime/stamp.py).
    checked: str = "full"

    @property
    def in_sync(self) -> bool:
        if self.record is None or self.error or self.drift:
            return False
        return self.journal is None or self.busy

    def as_json(self) -> dict[str, Any]:
        rec = self.record
        return {
            "in_sync": self.in_sync,
            "applied": None
            if rec is None
            else {
                "target": rec.target,
                "node": rec.node,
                "artifact": rec.artifact,
                "source": rec.source,
                "compiler": rec.compiler,
                "applied_at": _iso(rec.applied_at),
                "mode": rec.mode,
                "counts": dict(rec.counts),
            },
            "kernel": None if self.current is None else {"counts": dict(self.current.counts)},
            "drift": list(self.drift),
            "interrupted_apply": None
            if self.journal is None or self.busy
            else {"artifact": self.journal.artifact, "pid": self.journal.pid},
            "apply_in_progress": self.busy,
            "error": self.error or None,
            "unrecorded_targets": list(self.foreign),
            "checked": self.checked,
        }


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def read_status(env: Env, lock_wait: float = 2.0, *, full: bool = False) -> Status:
    """Read the record and the kernel; waits up to ``lock_wait`` s for a running apply.

    The kernel is not read back when its stamp proves it unchanged since the apply
    (runtime/stamp.py), unless ``full``."""
    if not env.state.root.is_dir():
        # Nothing was ever applied with this state dir; a status must not create it.
        return _read(env, busy=False, full=full)
    try:
        with apply_lock(env.state.root, lock_wait):
            return _read(env, busy=False, full=full)
    except LockBusy:
        return _read(env, busy=True, full=full)
    except OSError as e:  # a state dir we cannot lock (read-only, not ours): read anyway
        logger.warning("cannot take the lock in %s: %s", env.state.root, e.strerror or e)
        return _read(env, busy=False, full=full)


def _read(env: Env, busy: bool, full: bool) -> Status:
    record = env.state.read_record()
    journal = env.state.read_journal()
    if record is None:
        return Status(None, None, (), "", journal, busy, foreign=_foreign(env))
    try:
        dp = dataplane_for(record.target, env)
        unchanged = None if full or busy or journal is not None else unchanged_since(dp, record)
        if unchanged is not None:
            return Status(record, unchanged, (), "", None, False, checked="stamp")
        current = dp.read()
    except Exception as e:  # noqa: BLE001 - a status must always answer
        return Status(record, None, (), "", journal, busy, error=f"cannot read the kernel: {e}")
    drift = tuple(current.differs(record.kernel))
    diffs = [
        unified_diff(
            record.kernel.get(u) or "", current.units.get(u) or "", f"applied {u}", f"kernel {u}"
        )
        for u in drift
    ]
    return Status(record, current, drift, "".join(diffs), journal, busy)


def _foreign(env: Env) -> tuple[str, ...]:
    """Targets whose objects exist in the kernel although nothing is recorded."""
    out = []
    for target in ("nftables", "iptables", "ebpf"):
        try:
            if not dataplane_for(target, env).read().empty:
                out.append(target)
        except Exception as e:  # noqa: BLE001 - a missing tool means "none of its objects"
            logger.debug("cannot read %s objects: %s", target, e)
    return tuple(out)


def _counts(counts: Mapping[str, int]) -> str:
    order = ("chains", "rules", "sets", "maps", "elements", "programs", "attachments")
    keys = [k for k in order if k in counts] + sorted(set(counts) - set(order) - {"tables"})
    return ", ".join(f"{counts[k]} {k}" for k in keys) or "nothing"


def render_text(st: Status, max_diff_lines: int = 40) -> str:
    lines: list[str] = []
    rec = st.record
    if rec is None:
        lines.append("applied:   nothing (no record in the state dir)")
        if st.foreign:
            lines.append(
                f"kernel:    Tortie objects present without a record: {', '.join(st.foreign)}"
            )
    else:
        age = max(time.time() - rec.applied_at, 0)
        lines += [
            f"target:    {rec.target}",
            f"node:      {rec.node}",
            f"artifact:  {rec.artifact[:16]}  ({rec.source})",
            f"applied:   {_iso(rec.applied_at)} ({age:.0f}s ago, {rec.mode})",
            f"loaded:    {_counts(rec.counts)}",
        ]
        if st.current is not None:
            lines.append(f"kernel:    {_counts(st.current.counts)}")
    if st.busy:
        lines.append("note:      an apply is running right now")
    elif st.journal is not None:
        lines.append(
            f"WARNING:   an apply of artifact {st.journal.artifact[:16]} (pid {st.journal.pid}) was "
            "interrupted; run `tortie apply` again"
        )
    if st.error:
        lines.append(f"ERROR:     {st.error}")
    if st.drift:
        lines.append(
            f"DRIFT:     the kernel no longer matches the last apply: {', '.join(st.drift)}"
        )
        diff = st.diff.splitlines()
        lines += diff[:max_diff_lines]
        if len(diff) > max_diff_lines:
            lines.append(
                f"... {len(diff) - max_diff_lines} more diff lines (use -o json or nft/iptables-save)"
            )
    elif rec is not None and not st.error:
        if st.checked == "stamp":
            lines.append(
                "state:     in sync (nothing committed to the kernel's tables since the apply: "
                "same nf_tables generation; --full reads it back)"
            )
        else:
            lines.append("state:     in sync")
    return "\n".join(lines)
