"""The compiler pipeline: frontend resources -> IR -> passes.

A pass is a pure function ``(Program, PassContext) -> Program``; the pipeline is an ordered tuple
(``compiler.ir.passes.DEFAULT_PASSES``). A ``dump`` hook sees the program after every pass, which
is how ``tortie ir --dump-after`` and the pass property tests observe each stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import ResourceSet
from compiler.ir.build import build
from compiler.ir.nodes import Program
from compiler.perf import paused_gc


@dataclass
class PassContext:
    sink: DiagnosticSink = field(default_factory=DiagnosticSink)
    options: dict[str, object] = field(default_factory=dict)
    #: Facts the passes of one run share (e.g. address sets as intervals); never semantics.
    cache: dict[str, object] = field(default_factory=dict)


class Pass(Protocol):
    __name__: str

    def __call__(self, program: Program, ctx: PassContext) -> Program: ...


def run_passes(
    program: Program,
    ctx: PassContext,
    passes: Sequence[Pass] | None = None,
    dump: Callable[[str, Program], None] | None = None,
) -> Program:
    from compiler.ir.passes import DEFAULT_PASSES

    try:
        for p in DEFAULT_PASSES if passes is None else passes:
            with paused_gc():  # each pass builds an acyclic program: see compiler/perf.py
                program = p(program, ctx)
            if dump is not None:
                dump(p.__module__.rsplit(".", 1)[-1], program)
    finally:
        ctx.cache.clear()  # per run: a context reused for the next compile starts empty
    return program


def compile_program(
    resources: ResourceSet,
    node: str | None,
    sink: DiagnosticSink,
    passes: Sequence[Pass] | None = None,
    dump: Callable[[str, Program], None] | None = None,
    *,
    local_only: bool = False,
) -> Program:
    """Build the IR for ``node`` and run the passes; warnings go to ``sink``.

    ``local_only``: only what the node's endpoints use (``build``): the same artifacts for a
    one-node compile, less work; node-scoped warnings then cover only the node's policies."""
    ctx = PassContext(sink)
    return run_passes(build(resources, node, local_only=local_only), ctx, passes, dump)
