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
4. **Apply**. When the target's ``render_set_update(old, new)`` gives a set-only script and the
   dataplane is nftables, the **fast path** (``runtime/nftables_fast.py``) applies just that
   script: no artifact is rendered, nothing but the touched sets is read back, and the state
   dir gets ``sets.json`` (the touched sets' listings on top of ``applied.json``) instead of a
   new artifact copy; it requires that nothing changed since the agent last knew the kernel
   (nf_tables generation id, record file, no journal). Otherwise (or when it declines) the
   artifact is rendered and applied through ``runtime/apply.py``: set elements only, a delta,
   or one full transaction; the same artifact: nothing. After ``record_delay`` idle seconds
   the artifact of the program in force is rendered and the full record written (the kernel
   is compared with the record with the overlay first).
5. Otherwise, **check for drift** (someone flushed the table): for nftables the generation id
   is read every tick (~1 ms) and the whole table is listed and compared only when it changed
   (or every ``drift_interval`` seconds); iptables/ebpf compare every tick (or every
   ``drift_interval``). A drifted kernel is re-applied in full.

Every reconcile is logged with its timings and recorded in :class:`runtime.metrics.Metrics`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import Diagnostic, DiagnosticSink, Level, SourceRegistry, render
from compiler.incremental.driver import IncrementalCompiler
from compiler.incremental.sources import SourceCache, registry
from compiler.ir.nodes import Endpoint, Program
from compiler.perf import paused_gc
from compiler.targets import BUILTIN, get_target
from compiler.targets.nftables.batch import Unencodable
from compiler.targets.nftables.batch_delta import encode_delta
from compiler.targets.nftables.chain_update import carry, chain_update, prepare
from compiler.targets.nftables.incremental import _same_objects
from compiler.targets.nftables.script import RENDERED, keeping_renderers
from runtime.apply import Outcome, apply_artifact, dataplane_for
from runtime.metrics import Metrics
from runtime.nftables import UNIT, NftablesDataplane
from runtime.nftables_chains import apply_chains
from runtime.nftables_fast import (
    Declined,
    FastResult,
    apply_sets,
    block_heads,
    generation,
    touched_sets,
)
from runtime.plan import ApplyFailed, Env, LoadedArtifact
from runtime.state import SetOverlay

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
    # Seconds between full drift comparisons (list everything, compare with the record).
    # None: every tick for iptables/ebpf; for nftables only when the nf_tables generation id
    # (read every tick, ~1 ms) says someone committed a transaction. A number: at most that
    # long between full comparisons (for nftables: in addition to the generation trigger).
    drift_interval: float | None = None
    # Idle seconds after the last set-only fast update before the full artifact is rendered
    # and the record rewritten (runtime/nftables_fast.py); until then sets.json is in force.
    record_delay: float = 5.0


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
        self._inputs: Mapping[str, str] = {}  # input hashes of the program in force
        # The fast path (nftables only; runtime/nftables_fast.py): what the agent last knew
        # of the kernel and the state dir. None: unknown, the general path runs.
        self._fast = config.target == "nftables" and isinstance(
            dataplane_for(config.target, config.env), NftablesDataplane
        )
        self._overlay: SetOverlay | None = None  # sets.json as this agent last wrote it
        self._gen: int | None = None  # nf_tables generation id matching the record in force
        self._record_stat: tuple[int, int, int] | None = None
        # set name -> the head of its block in the record (nftables_fast.block_heads): the fast
        # path renders the touched sets' blocks from their netlink read-back with it.
        self._heads: dict[str, str] = {}
        self._pending = False  # set-only updates not yet in a full record
        self._last_change = time.monotonic()
        self._last_full_check = 0.0
        # This reconcile's answer of _check_unchanged (None: not asked): False means the
        # nftables set-update check will render the new program.
        self._skeleton_same: bool | None = None
        # This reconcile's incremental compile changed a local endpoint in more than its
        # labels (its policies, addresses, ports, profiles or interface: its chains).
        self._rules_changed = False

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
        if self._pending and time.monotonic() - self._last_change >= self.config.record_delay:
            self._write_record()
        return None

    def _generation(self) -> int | None:
        if not self._fast:
            return None
        try:
            return generation(self.config.env.netns)
        except OSError as e:
            logger.warning("cannot read the nf_tables generation id: %s", e)
            return None

    def _drifted(self) -> bool:
        env = self.config.env
        now = time.monotonic()
        interval = self.config.drift_interval
        journal = env.state.journal_path.exists()
        gen = self._generation()
        if not journal:
            due = interval is not None and now - self._last_full_check >= interval
            if gen is not None and gen == self._gen and not due:
                self.metrics.observe_drift_check("generation")
                return False  # nobody committed anything since we last knew the kernel
            if gen is None and interval is not None and not due:
                return False
        self._last_full_check = now
        self.metrics.observe_drift_check("full")
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
        if not drifted and gen is not None and self._generation() == gen:
            self._gen = gen  # the comparison saw the kernel of this generation
            if record.artifact == self._artifact and record.overlay == self._overlay_name:
                self._record_stat = env.state.record_stat()
                self._heads = block_heads(record.kernel.get(UNIT) or "")
            else:  # someone else's apply is in force: the next change takes the full path
                self._record_stat = None
        return drifted

    @property
    def _overlay_name(self) -> str:
        return self._overlay.program if self._overlay is not None else ""

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
            self._skeleton_same, self._rules_changed = None, False
            program, inputs = self._compile(timings, path)
            set_update = None
            loaded: LoadedArtifact | None = None
            fast = None
            if not force_full and self._set_update is not None and self._program is not None:
                if self._skeleton_same is False and self._rules_changed:
                    # A local workload's policies changed: only its chains (and what they
                    # need) as one small batch, when that applies (runtime/nftables_chains.py).
                    fast = self._try_chains(program, timings)
                    if fast is None:
                        # Not set-only, almost surely, and the nftables set-update check would
                        # render ``program`` to find out (its identity shortcut does not hold):
                        # render the artifact first; the check reuses that rendering
                        # (script.RENDERED) instead of a second one (~1.5 s at 10,000 policies).
                        loaded = self._render(program, inputs, timings)
                if fast is None:
                    t0 = time.monotonic()
                    set_update = self._set_update(self._program, program)
                    timings["diff"] = time.monotonic() - t0
            if set_update is not None:
                fast = self._try_fast(program, set_update, timings)
            if fast is not None:
                result, mode, reason, counts = fast
            else:
                if loaded is None:
                    loaded = self._render(program, inputs, timings)
                t0 = time.monotonic()
                outcome = self._apply(loaded, set_update)
                timings["apply"] = time.monotonic() - t0
                result = "applied" if outcome.applied else "unchanged"
                mode, reason = outcome.plan.mode, outcome.plan.reason
                counts = dict(outcome.after.counts) if outcome.after is not None else None
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
        self._program, self._inputs = program, inputs
        self._compiler.commit()
        if self._fast and mode in ("full", "update"):
            # After a render: the state the next chain update starts from, made now.
            t0 = time.monotonic()
            if prepare(program):
                timings["prepare"] = time.monotonic() - t0
        seconds = time.monotonic() - start
        timings["total"] = seconds
        self.metrics.observe_reconcile(result, seconds, counts, mode=mode)
        self.metrics.observe_stages(timings, path[0])
        logger.info(
            "reconcile #%d: %s (%s: %s) artifact %s%s; %s; compiled %s (%s)",
            n,
            result,
            mode,
            reason,
            (self._artifact or "")[:12],
            f" + sets {self._overlay_name}" if self._overlay is not None else "",
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()),
            path[0],
            path[1],
        )
        return ReconcileResult(
            result, mode, reason, timings, counts, path=path[0], path_reason=path[1]
        )

    def _try_fast(
        self, program: Program, script: str, timings: dict[str, float]
    ) -> tuple[str, str, str, dict[str, int] | None] | None:
        """The set-only fast path (runtime/nftables_fast.py): (result, mode, reason, counts),
        or None when the general path must run."""
        if not self._fast or self._artifact is None:
            return None
        if not script:
            # Same set contents: nothing for the kernel; the record catches up when idle.
            self._changed()
            carry(self._program, program)  # the next chain update starts from ``program``
            return ("unchanged", "none", "only set elements changed, and none differ", None)
        info = RENDERED.get(program)
        if info is None:
            return None
        touched = set(touched_sets(script))
        want = {name: elements for _, name, _, elements in info.sets if name in touched}
        res = self._run_fast(
            "set-only",
            script,
            timings,
            lambda overlay_name: apply_sets(
                self.config.env,
                script,
                want,
                base=self._artifact,
                overlay=self._overlay,
                known_generation=self._gen,
                known_record=self._record_stat,
                program=overlay_name,
                heads=self._heads,
            ),
        )
        if res is None:
            return None
        carry(self._program, program)  # the next chain update starts from ``program``
        return ("applied", "sets", f"{res.reason} ({', '.join(res.sets)})", None)

    def _changed(self) -> None:
        """A fast path changed what is in force: the full record is owed (written when idle)."""
        self._pending = True
        self._last_change = time.monotonic()

    def _run_fast(
        self,
        kind: str,
        script: str,
        timings: dict[str, float],
        apply: Callable[[str], FastResult],
    ) -> FastResult | None:
        """Run a fast path's ``apply`` (given the overlay's name for the program it puts in
        force) and note what it did; None when the general path must run (it declined, or it
        failed: nothing committed, or a journal is left for the general path to repair)."""
        assert self._artifact is not None
        overlay_name = hashlib.sha256(
            f"{self._overlay_name}\0{self._artifact}\0{script}".encode()
        ).hexdigest()[:16]
        t0 = time.monotonic()
        try:
            res = apply(overlay_name)
        except Declined as e:
            logger.info("%s fast path not taken: %s", kind, e)
            return None
        except ApplyFailed as e:
            logger.error("%s fast update failed: %s; applying in full", kind, e)
            self._gen = self._record_stat = None
            timings["apply"] = time.monotonic() - t0
            return None
        _split_apply(timings, t0, res.committed)
        self._overlay, self._gen = res.overlay, res.generation
        self._changed()
        return res

    def _try_chains(
        self, program: Program, timings: dict[str, float]
    ) -> tuple[str, str, str, dict[str, int] | None] | None:
        """The chain-update fast path (runtime/nftables_chains.py): (result, mode, reason,
        counts), or None when the general path must run."""
        if not self._fast or self._artifact is None or self._program is None:
            return None
        t0 = time.monotonic()
        update = chain_update(self._program, program)
        if update is not None and not update.script:
            timings["diff"] = time.monotonic() - t0
            self._changed()
            return ("unchanged", "none", "the local workload's chains are the same", None)
        data = None
        if update is not None:
            try:
                data = encode_delta(update.script, update.declarations, update.empty)
            except Unencodable as e:
                logger.info("chain update not encoded (%s): the general path applies it", e)
        timings["diff"] = time.monotonic() - t0
        if update is None or data is None:
            return None
        res = self._run_fast(
            "chain-update",
            update.script,
            timings,
            lambda overlay_name: apply_chains(
                self.config.env,
                data,
                chains=[*update.created_chains, *update.flushed_chains],
                deleted_chains=update.deleted_chains,
                created_sets=update.created_sets,
                deleted_sets=update.deleted_sets,
                element_sets=update.element_sets,
                want=update.elements,
                rules=update.rules,
                dispatch=update.dispatch,
                base=self._artifact,
                overlay=self._overlay,
                known_generation=self._gen,
                known_record=self._record_stat,
                program=overlay_name,
                heads=self._heads,
            ),
        )
        if res is None:
            return None
        what = (
            f"{len(update.flushed_chains)} chain(s) changed, {len(update.created_chains)} "
            f"added, {len(update.deleted_chains)} deleted; {len(update.created_sets)} set(s) "
            f"added, {len(update.deleted_sets)} deleted, {len(update.element_sets)} changed"
        )
        return ("applied", "chains", f"{res.reason} ({what})", None)

    def _apply(self, loaded: LoadedArtifact, set_update: str | None) -> Outcome:
        """The general path: ``apply_artifact``, then note what the kernel and record are."""
        env = self.config.env
        in_force = None
        if self._overlay is not None and set_update is None and self._program is not None:
            # Not set-only, with set updates in force: render what is in force so the apply
            # can still send only the difference (no table re-creation).
            in_force = self._render(self._program, self._inputs, {}).all_files()
        gen0 = self._generation()
        self._gen = self._record_stat = None
        outcome = apply_artifact(
            loaded,
            env,
            set_update=set_update,
            set_update_base=self._artifact,
            set_update_overlay=self._overlay_name,
            in_force=in_force,
        )
        self._artifact, self._overlay, self._pending = loaded.hash, None, False
        gen1 = self._generation()
        commits = len(outcome.plan.steps) if outcome.applied else 0
        if gen0 is not None and gen1 is not None and gen1 == gen0 + commits:
            # Nobody else committed: the record's read-back is the kernel of gen1. Check that
            # the record is ours (no other apply replaced it since).
            stat = env.state.record_stat()
            record = env.state.read_record(overlay=False)
            if (
                record is not None
                and record.artifact == loaded.hash
                and env.state.record_stat() == stat
                and not env.state.overlay_path.exists()
            ):
                self._gen, self._record_stat = gen1, stat
                self._heads = block_heads(record.kernel.get(UNIT) or "")
        return outcome

    def _write_record(self) -> None:
        """Render the program in force and let ``apply_artifact`` check the kernel against the
        overlaid record and write a full record (dropping sets.json)."""
        if self._program is None:
            return
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        try:
            with paused_gc():
                loaded = self._render(self._program, self._inputs, timings)
                outcome = self._apply(loaded, "")
        except Exception as e:  # noqa: BLE001 - retried on the next idle tick
            logger.error("writing the record of the set updates in force failed: %s", e)
            self._last_change = time.monotonic()
            return
        self.metrics.observe_record_write(time.monotonic() - t0)
        logger.info(
            "record written for artifact %s (%s: %s) in %.0f ms",
            loaded.hash[:12],
            outcome.plan.mode,
            outcome.plan.reason,
            (time.monotonic() - t0) * 1000,
        )

    def _compile(
        self, timings: dict[str, float], path: list[str]
    ) -> tuple[Program, Mapping[str, str]]:
        cfg = self.config
        base = self._compiler.state
        compiled = self._compiler.compile()
        timings.update(compiled.timings)
        path[:] = [compiled.path, compiled.reason]
        program = compiled.program
        _raise_errors(compiled.diagnostics, self._compiler.sources)
        assert program is not None
        t0 = time.monotonic()
        if not any(n.name == cfg.node for n in compiled.load.resources.nodes) and not any(
            e.node == cfg.node for e in program.endpoints
        ):
            raise _CompileError(f"node {cfg.node!r} is not in the inputs")
        sink = DiagnosticSink()
        # An incremental compile from the program in force that changed no endpoint of this
        # node leaves everything the nftables check reads (FelixConfig, node, policies, this
        # node's endpoints) the same objects: the check would say what it said then.
        same = (
            cfg.target == "nftables"
            and compiled.update is not None
            and not compiled.update.local_changed
            and base is not None
            and base.program is self._program
        )
        if (
            compiled.update is not None
            and compiled.update.local_changed
            and self._program is not None
        ):
            self._rules_changed = _local_rules_changed(
                self._program, program, compiled.update.endpoints_changed
            )
        if not same:
            self._skeleton_same = self._check_unchanged(program)
            if not self._skeleton_same:
                target = get_target(cfg.target)
                old = self._program
                if (
                    cfg.target == "nftables"
                    and compiled.update is not None
                    and old is not None
                    and base is not None
                    and base.program is old
                    and old.felix is program.felix
                    and old.node == program.node
                    and _same_objects(old.policies, program.policies)
                ):
                    # Only endpoints changed since the program in force (checked then):
                    # check what the target checks of them (~1 ms, not ~15 ms at 10,000
                    # policies).
                    target.check_endpoints(program, sink)  # type: ignore[attr-defined]
                else:
                    target.check(program, sink)
        timings["compile"] = timings.get("compile", 0.0) + time.monotonic() - t0
        _raise_errors(sink.diagnostics, self._compiler.sources)
        warnings = sorted({*compiled.diagnostics, *sink.diagnostics}, key=_order)
        if warnings:
            sources = registry(self._compiler.sources)
            for d in warnings:
                logger.warning("%s", render(d, sources))
        # Hashed lazily (only a render, i.e. not the set-only fast path, asks for them).
        return program, compiled.load.hashes

    def _check_unchanged(self, program: Program) -> bool:
        """True when the target's check of ``program`` would say what it said of the program
        in force: the nftables check reads only the FelixConfig, the node, this node's
        endpoints and the policies, and ``_same_skeleton`` holds only when all of those are the
        same objects (its diagnostics were logged when that program was compiled)."""
        if self.config.target != "nftables" or self._program is None:
            return False
        from compiler.targets.nftables.incremental import _same_skeleton

        return _same_skeleton(self._program, program)

    def _render(
        self, program: Program, inputs: Mapping[str, str], timings: dict[str, float]
    ) -> LoadedArtifact:
        t0 = time.monotonic()
        target = get_target(self.config.target)
        with keeping_renderers():  # the chain updates start from this render
            rendered = target.render(program)
        artifact = dataclasses.replace(rendered, inputs=dict(sorted(inputs.items())))
        timings["render"] = timings.get("render", 0.0) + time.monotonic() - t0
        return LoadedArtifact.from_artifact(artifact, f"agent:{self.config.watch}")

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


def _endpoint(program: Program, eid: str) -> Endpoint | None:
    eps = program.endpoints  # sorted by id
    i = bisect.bisect_left(eps, eid, key=lambda e: e.id)
    return eps[i] if i < len(eps) and eps[i].id == eid else None


def _local_rules_changed(old: Program, new: Program, ids: Iterable[str]) -> bool:
    """Whether a local endpoint among ``ids`` came, went, or changed in more than its labels
    (a hint: only says whether to render the artifact before the set-update check)."""
    for eid in ids:
        a, b = _endpoint(old, eid), _endpoint(new, eid)
        if not any(x is not None and x.node == old.node for x in (a, b)):
            continue
        if a is None or b is None:
            return True
        if (a.plans, a.interface, a.ips, a.ports, a.profiles) != (
            b.plans,
            b.interface,
            b.ips,
            b.ports,
            b.profiles,
        ):
            return True
    return False


def _split_apply(timings: dict[str, float], start: float, committed: float) -> None:
    """A fast path's time: ``apply`` until the kernel acknowledged the transaction (the
    change is in force), ``verify`` the read-back and bookkeeping after it."""
    now = time.monotonic()
    timings["apply"] = committed - start
    timings["verify"] = now - committed


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
