"""``tortie agent``: watch a directory of YAML (a GitOps checkout), recompile for this node when it
changes, and apply only what changed.

Each tick (every ``interval`` seconds):

1. **Scan** the directory: (path, size, mtime) of every ``.yaml``/``.yml``/``.json`` file, hidden
   directories (``.git``) skipped. Polling, not inotify: it works on every filesystem, sees the
   atomic symlink swaps git-sync does, and costs one ``stat`` per file.
2. If the scan changed, **load** through :class:`compiler.incremental.sources.SourceCache`: only
   files whose bytes changed are read, and inside them only the list items that changed are
   parsed and spliced into the previous resources when that is provably what a full load gives
   (else the frontend reads every file again). A touch that changed no byte compiles nothing.
3. **Compile** (frontend -> IR -> passes -> target check -> render). When only endpoints changed,
   :func:`compiler.incremental.program.update` derives the new program from the previous one,
   recomputing only the affected sets and endpoints and reusing every other IR object; anything
   else takes the full compile (:class:`compiler.incremental.driver.IncrementalCompiler`). The
   log line of each reconcile ends with ``compiled incremental|full (why)``, and
   :class:`~runtime.metrics.Metrics` counts the paths (``tortie_compiles_total``) and times the
   stages (``tortie_reconcile_stage_seconds``: load = parse, compile, render, diff =
   ``render_set_update``, apply, total). Errors are logged as diagnostics and counted; the state
   in force stays in force, and the incremental state only advances once an apply succeeded.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import Diagnostic, DiagnosticSink, Level, SourceRegistry, render
from compiler.incremental.driver import IncrementalCompiler
from compiler.incremental.sources import SourceCache, registry
from compiler.ir.nodes import Program
from compiler.perf import paused_gc
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
    path: str = ""  # how it compiled: "incremental" | "full" (+ why, in ``path_reason``)
    path_reason: str = ""


class Agent:
    def __init__(self, config: AgentConfig, metrics: Metrics | None = None) -> None:
        if config.target not in BUILTIN:
            raise ValueError(f"unknown target {config.target!r}")
        self.config = config
        self.metrics = metrics or Metrics()
        self.reconciles = 0
        self._scan: tuple[tuple[str, int, int], ...] | None = None
        self._content: object = _UNKNOWN  # the inputs (names and hashes) last compiled
        self._program: Program | None = None  # what the last apply came from
        self._artifact: str | None = None
        # Incremental compiles; its state is committed only once the kernel took the result.
        self._compiler = IncrementalCompiler(str(config.watch), config.node)
        module = importlib.import_module(BUILTIN[config.target].split(":")[0])
        self._set_update: Callable[[Program, Program], str | None] | None = getattr(
            module, "render_set_update", None
        )

    # -- one tick -------------------------------------------------------------------------

    def tick(self) -> ReconcileResult | None:
        """Reconcile if the inputs changed or the kernel drifted; None when nothing to do."""
        files = scan(self.config.watch)
        if files != self._scan:
            self._scan = files
            content = self._compiler.sources.peek()  # reads only files whose size or mtime changed
            if content != self._content:
                result = self.reconcile()
                if result.result != "error":
                    self._content = content
                else:
                    # Broken input: wait for the next change (even back to the last good one).
                    # A kernel or lock failure: try again next tick.
                    self._content = _UNKNOWN
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
        with paused_gc():  # no collector pauses inside a reconcile (compiler/perf.py)
            try:
                return self._reconcile(force_full)
            finally:
                self._compiler.sources.release()

    def _reconcile(self, force_full: bool) -> ReconcileResult:
        self.reconciles += 1
        n = self.reconciles
        timings: dict[str, float] = {}
        start = time.monotonic()
        path: list[str] = ["", ""]
        try:
            program, loaded = self._compile(timings, path)
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
            self.metrics.observe_stages(timings, path[0])
            logger.error("reconcile #%d failed after %.0f ms: %s", n, seconds * 1000, message)
            return ReconcileResult(
                "error",
                "none",
                message,
                timings,
                error=message,
                input_error=isinstance(e, _CompileError),
                path=path[0],
                path_reason=path[1],
            )
        self._program, self._artifact = program, loaded.hash
        self._compiler.commit()
        seconds = time.monotonic() - start
        timings["total"] = seconds
        result = "applied" if outcome.applied else "unchanged"
        counts = dict(outcome.after.counts) if outcome.after is not None else None
        self.metrics.observe_reconcile(result, seconds, counts, mode=outcome.plan.mode)
        self.metrics.observe_stages(timings, path[0])
        logger.info(
            "reconcile #%d: %s (%s: %s) artifact %s; %s; compiled %s (%s)",
            n,
            result,
            outcome.plan.mode,
            outcome.plan.reason,
            loaded.hash[:12],
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()),
            path[0],
            path[1],
        )
        return ReconcileResult(
            result,
            outcome.plan.mode,
            outcome.plan.reason,
            timings,
            counts,
            path=path[0],
            path_reason=path[1],
        )

    def _compile(
        self, timings: dict[str, float], path: list[str]
    ) -> tuple[Program, LoadedArtifact]:
        cfg = self.config
        compiled = self._compiler.compile()
        timings.update(compiled.timings)
        path[:] = [compiled.path, compiled.reason]
        program = compiled.program
        _raise_errors(compiled.diagnostics, self._compiler.sources)
        assert program is not None
        t0 = time.monotonic()
        known = {n.name for n in compiled.load.resources.nodes} | {
            e.node for e in program.endpoints
        }
        if cfg.node not in known:
            raise _CompileError(f"node {cfg.node!r} is not in the inputs")
        sink = DiagnosticSink()
        target = get_target(cfg.target)
        target.check(program, sink)
        timings["compile"] = timings.get("compile", 0.0) + time.monotonic() - t0
        _raise_errors(sink.diagnostics, self._compiler.sources)
        warnings = sorted({*compiled.diagnostics, *sink.diagnostics}, key=_order)
        if warnings:
            sources = registry(self._compiler.sources)
            for d in warnings:
                logger.warning("%s", render(d, sources))
        t0 = time.monotonic()
        artifact = dataclasses.replace(
            target.render(program), inputs=dict(sorted(compiled.load.hashes.items()))
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


_UNKNOWN = object()  # equal to no content, so the next scan change always compiles


def _order(d: Diagnostic) -> tuple[object, ...]:
    return (d.span, d.code, d.message)


def _raise_errors(diagnostics: Iterable[Diagnostic], cache: SourceCache) -> None:
    errors = sorted({d for d in diagnostics if d.level is Level.ERROR}, key=_order)
    if not errors:
        return
    sources: SourceRegistry = registry(cache)
    for d in errors:
        logger.error("%s", render(d, sources))
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise _CompileError(f"{len(errors)} error(s) in the inputs: {first.message}{more}")
