"""``tortie agent``: watch a directory of YAML (a GitOps checkout), recompile for this node when it
changes, and apply only what changed.

Each tick (every ``interval`` seconds):

1. **Scan** the directory: (path, size, mtime) of every ``.yaml``/``.yml``/``.json`` file, hidden
   directories (``.git``) skipped. Polling, not inotify: it works on every filesystem, sees the
   atomic symlink swaps git-sync does, and costs one ``stat`` per file.
2. If the scan changed, **hash the contents**; a touch that changed no byte compiles nothing.
3. **Compile** (frontend -> IR -> passes -> target check -> render). Errors are logged as
   diagnostics and counted; the state in force stays in force.
4. **Apply** through ``runtime/apply.py``. When the target offers ``render_set_update(old, new)``
   (nftables does) and the kernel still holds exactly the previous program's artifact, only
   set elements are changed; otherwise one full transaction. The same artifact: nothing.
5. Otherwise, **check for drift** (someone flushed the table): a drifted kernel is re-applied
   in full.

Every reconcile is logged with its timings and recorded in :class:`runtime.metrics.Metrics`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import DiagnosticSink, HashingSources, Level, SourceRegistry, render
from compiler.frontend import load
from compiler.ir.nodes import Program
from compiler.ir.passes import MEMBERSHIP_STABLE_PASSES
from compiler.pipeline import compile_program
from compiler.targets import BUILTIN, get_target
from runtime.apply import apply_artifact, dataplane_for
from runtime.metrics import Metrics
from runtime.plan import Env, LoadedArtifact

__all__ = ["Agent", "AgentConfig", "ReconcileResult", "scan"]

logger = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


def scan(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime_ns) of every input file below ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.endswith(SUFFIXES):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while we looked
                continue
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def content_hash(root: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _, _ in files:
        h.update(rel.encode() + b"\0")
        try:
            h.update(hashlib.sha256((root / rel).read_bytes()).digest())
        except FileNotFoundError:
            h.update(b"-")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node: str
    watch: Path
    env: Env
    target: str = "nftables"
    interval: float = 2.0


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    result: str  # "applied" | "unchanged" | "error"
    mode: str  # "full" | "sets" | "none"
    reason: str
    timings: dict[str, float]  # phase -> seconds
    counts: dict[str, int] | None = None
    error: str = ""
    input_error: bool = False  # the inputs did not compile (vs. the kernel refused)


class Agent:
    def __init__(self, config: AgentConfig, metrics: Metrics | None = None) -> None:
        if config.target not in BUILTIN:
            raise ValueError(f"unknown target {config.target!r}")
        self.config = config
        self.metrics = metrics or Metrics()
        self.reconciles = 0
        self._scan: tuple[tuple[str, int, int], ...] | None = None
        self._content: str | None = None
        self._program: Program | None = None  # what the last apply came from
        self._artifact: str | None = None
        module = importlib.import_module(BUILTIN[config.target].split(":")[0])
        self._set_update: Callable[[Program, Program], str | None] | None = getattr(
            module, "render_set_update", None
        )

    # -- one tick -------------------------------------------------------------------------

    def tick(self) -> ReconcileResult | None:
        """Reconcile if the inputs changed or the kernel drifted; None when nothing to do."""
        files = scan(self.config.watch)
        if files != self._scan:
            content = content_hash(self.config.watch, files)
            self._scan = files
            if content != self._content:
                result = self.reconcile()
                if result.result != "error":
                    self._content = content
                else:
                    # Broken input: wait for the next change (even back to the last good one).
                    # A kernel or lock failure: try again next tick.
                    self._content = None
                    if not result.input_error:
                        self._scan = None
                return result
        if self._drifted():
            logger.warning("the kernel drifted from the last apply: re-applying everything")
            result = self.reconcile(force_full=True)
            self.metrics.observe_drift(True, repaired=result.result == "applied")
            return result
        return None

    def _drifted(self) -> bool:
        env = self.config.env
        record = env.state.read_record()
        if record is None or record.target != self.config.target:
            return False
        try:
            current = dataplane_for(record.target, env).read()
        except Exception as e:  # noqa: BLE001 - try again next tick
            logger.warning("cannot read the kernel to check for drift: %s", e)
            return False
        drifted = bool(current.differs(record.kernel)) or env.state.read_journal() is not None
        self.metrics.observe_drift(drifted)
        return drifted

    # -- reconcile ------------------------------------------------------------------------

    def reconcile(self, force_full: bool = False) -> ReconcileResult:
        self.reconciles += 1
        n = self.reconciles
        timings: dict[str, float] = {}
        start = time.monotonic()
        try:
            program, loaded = self._compile(timings)
            set_update, base = None, None
            if not force_full and self._set_update is not None and self._program is not None:
                t0 = time.monotonic()
                set_update, base = self._set_update(self._program, program), self._artifact
                timings["diff"] = time.monotonic() - t0
            t0 = time.monotonic()
            outcome = apply_artifact(
                loaded, self.config.env, set_update=set_update, set_update_base=base
            )
            timings["apply"] = time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - compile errors, ApplyFailed, LockBusy: keep going
            seconds = time.monotonic() - start
            timings["total"] = seconds
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.metrics.observe_reconcile("error", seconds, error=message)
            logger.error("reconcile #%d failed after %.0f ms: %s", n, seconds * 1000, message)
            return ReconcileResult(
                "error",
                "none",
                message,
                timings,
                error=message,
                input_error=isinstance(e, _CompileError),
            )
        self._program, self._artifact = program, loaded.hash
        seconds = time.monotonic() - start
        timings["total"] = seconds
        result = "applied" if outcome.applied else "unchanged"
        counts = dict(outcome.after.counts) if outcome.after is not None else None
        self.metrics.observe_reconcile(result, seconds, counts, mode=outcome.plan.mode)
        logger.info(
            "reconcile #%d: %s (%s: %s) artifact %s; %s",
            n,
            result,
            outcome.plan.mode,
            outcome.plan.reason,
            loaded.hash[:12],
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()),
        )
        return ReconcileResult(result, outcome.plan.mode, outcome.plan.reason, timings, counts)

    def _compile(self, timings: dict[str, float]) -> tuple[Program, LoadedArtifact]:
        cfg = self.config
        sink = DiagnosticSink()
        sources = HashingSources()
        t0 = time.monotonic()
        resources = load([str(cfg.watch)], sink, sources)
        timings["load"] = time.monotonic() - t0
        _raise_errors(sink, sources)
        known = {n.name for n in resources.nodes} | {e.node for e in resources.endpoints}
        if cfg.node not in known:
            raise _CompileError(f"node {cfg.node!r} is not in the inputs")
        t0 = time.monotonic()
        program = compile_program(resources, cfg.node, sink, passes=MEMBERSHIP_STABLE_PASSES)
        target = get_target(cfg.target)
        if not sink.has_errors:
            target.check(program, sink)
        timings["compile"] = time.monotonic() - t0
        _raise_errors(sink, sources)
        for d in sink.sorted():
            logger.warning("%s", render(d, sources))
        t0 = time.monotonic()
        artifact = dataclasses.replace(
            target.render(program), inputs=dict(sorted(sources.hashes.items()))
        )
        timings["render"] = time.monotonic() - t0
        return program, LoadedArtifact.from_artifact(artifact, f"agent:{cfg.watch}")

    # -- loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, once: bool = False) -> int:
        """Tick until ``stop`` is set (or once); returns 1 if the last reconcile failed."""
        stop = stop or threading.Event()
        last: ReconcileResult | None = None
        logger.info(
            "agent for node %s: watching %s every %.1fs (%s)",
            self.config.node,
            self.config.watch,
            self.config.interval,
            self.config.target,
        )
        while True:
            t0 = time.monotonic()
            try:
                result = self.tick()
            except Exception as e:  # noqa: BLE001 - never let one tick end the agent
                logger.exception("tick failed: %s", e)
                result = None
            if result is not None:
                last = result
            if once or stop.wait(max(self.config.interval - (time.monotonic() - t0), 0.05)):
                break
        return 1 if last is not None and last.result == "error" else 0


class _CompileError(RuntimeError):
    pass


def _raise_errors(sink: DiagnosticSink, sources: SourceRegistry) -> None:
    errors = [d for d in sink.sorted() if d.level is Level.ERROR]
    if not errors:
        return
    for d in errors:
        logger.error("%s", render(d, sources))
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise _CompileError(f"{len(errors)} error(s) in the inputs: {first.message}{more}")
