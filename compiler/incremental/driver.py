"""One object that turns "the directory now" into a Program, incrementally when it can:
:class:`IncrementalCompiler` (used by ``tortie agent``, the property tests and
``benchmarks/agent.py``).

``compile()`` loads through the :class:`~.sources.SourceCache`, then either derives the program
from the previous one (:func:`~.program.update`) or runs the full pipeline
(``compile_program`` with the given passes). The new state is only *pending* until
:meth:`IncrementalCompiler.commit` (the agent commits once the kernel took the result), so a
failed apply leaves the previous state as the base of the next compile.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from compiler.diagnostics import Diagnostic, DiagnosticSink
from compiler.incremental.program import CompileState, Update, full_state, update
from compiler.incremental.sources import LoadResult, SourceCache
from compiler.ir.nodes import Program
from compiler.ir.passes import MEMBERSHIP_STABLE_PASSES
from compiler.perf import paused_gc
from compiler.pipeline import Pass, compile_program

__all__ = ["Compiled", "IncrementalCompiler"]


@dataclass
class Compiled:
    load: LoadResult
    program: Program | None  # None when the inputs have errors (see ``diagnostics``)
    path: str  # "incremental" | "full" | "" (not compiled)
    reason: str
    diagnostics: tuple[Diagnostic, ...]  # the load's and the compile's
    update: Update | None = None
    timings: dict[str, float] = field(default_factory=dict)  # load, compile (seconds)


class IncrementalCompiler:
    def __init__(
        self,
        root: str,
        node: str | None,
        passes: Sequence[Pass] = MEMBERSHIP_STABLE_PASSES,
        incremental: bool = True,
    ) -> None:
        self.sources = SourceCache(root)
        self.node = node
        self.passes = tuple(passes)
        self.incremental = incremental and self.passes == MEMBERSHIP_STABLE_PASSES
        self.state: CompileState | None = None
        self.pending: CompileState | None = None
        # The passes' diagnostics of the full compile the state came from (an incremental
        # compile reports them again, as a full compile would).
        self._diags: tuple[Diagnostic, ...] = ()
        self._pending_diags: tuple[Diagnostic, ...] = ()

    def commit(self) -> None:
        """The last compiled program is now the base of the next compile."""
        if self.pending is not None:
            self.state, self._diags = self.pending, self._pending_diags
        self.pending = None

    def compile(self) -> Compiled:
        with paused_gc():
            try:
                return self._compile()
            finally:
                self.sources.release()

    def _compile(self) -> Compiled:
        timings: dict[str, float] = {}
        self.pending = None
        self._pending_diags = self._diags
        t0 = time.monotonic()
        loaded = self.sources.load(allow_splice=self.incremental)
        timings["load"] = time.monotonic() - t0
        if loaded.has_errors:
            return Compiled(loaded, None, "", "", loaded.diagnostics, timings=timings)
        rs = loaded.resources
        t0 = time.monotonic()
        state, why = self.state, "no previous compile"
        if not self.incremental:
            state, why = None, "incremental compile disabled"
        if state is not None:
            # The load is relative to the previous *load*; the state to the last commit. They
            # differ when a compiled result was not committed (the apply failed).
            based = loaded.base is state.resources
            if loaded.path == "unchanged" and based:
                got: Update | str = Update(state.program, state, (), (), False)
            elif loaded.path == "splice" and based:
                got = update(state, rs, loaded.removed, loaded.added)
            else:
                got = update(state, rs)
            if isinstance(got, Update):
                self.pending = got.state
                timings["compile"] = time.monotonic() - t0
                reason = (
                    f"load {loaded.path}; {len(got.endpoints_changed)} endpoint(s), "
                    f"{len(got.sets_changed)} set(s) changed"
                    + ("; a local endpoint changed" if got.local_changed else "")
                )
                return Compiled(
                    loaded,
                    got.program,
                    "incremental",
                    reason,
                    (*loaded.diagnostics, *self._diags),
                    got,
                    timings,
                )
            why = got
        sink = DiagnosticSink()
        program = compile_program(rs, self.node, sink, passes=self.passes)
        if sink.has_errors:
            timings["compile"] = time.monotonic() - t0
            diags = (*loaded.diagnostics, *sink.diagnostics)
            return Compiled(loaded, None, "", "", diags, timings=timings)
        if self.incremental:
            self.pending = full_state(rs, self.node, program)
            self._pending_diags = tuple(sink.diagnostics)
        timings["compile"] = time.monotonic() - t0
        return Compiled(
            loaded,
            program,
            "full",
            f"load {loaded.path}; {why}",
            (*loaded.diagnostics, *sink.diagnostics),
            timings=timings,
        )
