"""``tortie ir``: print the optimised IR (or the IR after a given pass) and the passes' warnings.

Also home of :func:`load_program`, the "inputs -> optimised IR" step that ``explain`` and
``matrix`` share.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from compiler.cli.common import (
    EXIT_ERRORS,
    counts_line,
    emit_diagnostics,
    file_option,
    load_inputs,
)
from compiler.diagnostics import DiagnosticSink, Level, SourceRegistry, render
from compiler.ir.dump import dump
from compiler.ir.nodes import Program
from compiler.ir.passes import BY_NAME
from compiler.pipeline import compile_program

__all__ = ["LoadedProgram", "ir_cmd", "load_program"]


@dataclass
class LoadedProgram:
    program: Program
    sink: DiagnosticSink
    sources: SourceRegistry


def load_program(
    files: tuple[str, ...],
    node: str | None = None,
    stages: list[tuple[str, Program]] | None = None,
) -> LoadedProgram:
    """Read the inputs and run the whole pipeline. On input errors: diagnostics to stderr and
    exit 1. ``stages``, if given, receives ``(name, program)`` for ``build`` and every pass."""
    loaded = load_inputs(files)
    if loaded.sink.has_errors:
        emit_diagnostics(loaded.sink.sorted(), loaded.sources)
        click.echo(f"tortie: {counts_line(loaded.sink)}", err=True)
        sys.exit(EXIT_ERRORS)

    if node is not None:
        known = {n.name for n in loaded.resources.nodes}
        known.update(e.node for e in loaded.resources.endpoints if e.node)
        if node not in known:
            listed = ", ".join(sorted(known)) or "none"
            click.echo(f"tortie: unknown node {node!r} (nodes in the input: {listed})", err=True)
            sys.exit(EXIT_ERRORS)

    def record(name: str, prog: Program) -> None:
        if stages is not None:
            stages.append((name, prog))

    if stages is not None:
        from compiler.ir.build import build

        record("build", build(loaded.resources, node))
    program = compile_program(loaded.resources, node, loaded.sink, dump=record)
    return LoadedProgram(program, loaded.sink, loaded.sources)


@click.command("ir")
@file_option
@click.option(
    "--node",
    metavar="NODE",
    default=None,
    help="Compile for this node (default: the whole cluster).",
)
@click.option(
    "--dump-after",
    "dump_after",
    type=click.Choice(["all", "build", *BY_NAME]),
    default=None,
    help="Print the IR after this pass instead (all: after build and after every pass).",
)
def ir_cmd(files: tuple[str, ...], node: str | None, dump_after: str | None) -> None:
    """Print the optimised IR as stable text, then the warnings of the passes.

    Tiers, policies with one rule per line (rules numbered from 1 as written; a gap means the
    rule was dropped), sets with their members, network sets, and endpoints with the tiers and
    policies that apply to them per hook and direction. Everything is sorted, so the output can be
    diffed and kept as a golden file.

    \b
    Example:
      tortie ir -f examples/demo/
      tortie ir -f examples/demo/ --dump-after all
      tortie ir -f examples/demo/ --dump-after split_families
    """
    stages: list[tuple[str, Program]] = []
    loaded = load_program(files, node, stages)
    if dump_after is None:
        click.echo(dump(loaded.program), nl=False)
    else:
        chosen = stages if dump_after == "all" else [s for s in stages if s[0] == dump_after]
        for i, (name, prog) in enumerate(chosen):
            if i:
                click.echo("")
            click.echo(f"=== after {name} ===")
            click.echo(dump(prog), nl=False)
    warnings = [d for d in loaded.sink.sorted() if d.level is not Level.ERROR]
    click.echo("")
    click.echo(f"warnings: {len(warnings)}")
    for d in warnings:
        click.echo(render(d, loaded.sources))
