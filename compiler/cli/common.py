"""What every command shares: the ``-f`` and ``-o`` options, loading, rendering diagnostics,
exit codes."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from compiler import perf
from compiler.diagnostics import Diagnostic, DiagnosticSink, Level, SourceRegistry, Span, render
from compiler.frontend import load
from compiler.frontend.model import ResourceSet
from compiler.frontend.sources import STDIN_NAME, decode

__all__ = [
    "EXIT_ERRORS",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "Loaded",
    "counts_line",
    "diagnostics_json",
    "echo_json",
    "emit_diagnostics",
    "exit_code",
    "fail",
    "file_option",
    "load_inputs",
    "output_option",
]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70

F = TypeVar("F", bound=Callable[..., Any])


def file_option(f: F) -> F:
    """``-f/--file PATH`` (repeatable): a file, a directory (read recursively) or ``-`` for stdin."""
    return click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        required=True,
        metavar="PATH",
        help="YAML/JSON file, directory (recursive) or - for stdin; repeatable.",
    )(f)


def output_option(f: F) -> F:
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(f)


class Loaded:
    """The result of reading the inputs: resources plus the diagnostics and source text."""

    def __init__(
        self, resources: ResourceSet, sink: DiagnosticSink, sources: SourceRegistry
    ) -> None:
        self.resources = resources
        self.sink = sink
        self.sources = sources


def load_inputs(
    files: tuple[str, ...],
    sink: DiagnosticSink | None = None,
    sources: SourceRegistry | None = None,
) -> Loaded:
    sink = sink if sink is not None else DiagnosticSink()
    sources = sources if sources is not None else SourceRegistry()
    files = _regular(files, sink)
    stdin = _stdin_text(sink) if "-" in files else None
    # No cyclic GC while reading (an acyclic tree of millions of objects), and since the inputs
    # live until the command ends, none re-scanning them afterwards either (compiler/perf.py);
    # undone when the command returns. They are frozen before the collector is back on:
    # otherwise its first young collection walks every object just loaded to find a handful
    # of garbage cycles (0.2 s at 10,000 policies, for 5 objects).
    with perf.paused_gc():
        resources = load(list(files), sink, sources, stdin=stdin)
        restore = perf.batch_mode()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(restore)
    else:
        restore()
    return Loaded(resources, sink, sources)


def _regular(files: tuple[str, ...], sink: DiagnosticSink) -> tuple[str, ...]:
    """``files`` without devices and sockets (each an E002 error): reading /dev/zero would
    never end. Pipes stay allowed, for ``-f <(kubectl get ... -o yaml)``."""
    keep = []
    for path in files:
        mode = os.stat(path).st_mode if path != "-" and os.path.exists(path) else None
        if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)):
            sink.error(
                "E002",
                f"cannot read {path}: a device or socket, not a file (use - for stdin)",
                Span(path, 0, 0),
            )
            continue
        keep.append(path)
    return tuple(keep)


def _stdin_text(sink: DiagnosticSink) -> io.StringIO:
    """Standard input read as bytes and decoded like a file, so that bad bytes get the same
    located E003 error (``<stdin>:LINE:COL``) instead of a decoding failure of the stream."""
    try:
        stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        data = stream.read()
        if isinstance(data, str):  # a text-only stdin (replaced by a caller): as UTF-8 bytes
            data = data.encode("utf-8", "surrogateescape")
    except OSError as e:
        sink.error("E002", f"cannot read standard input: {e.strerror or e}", Span(STDIN_NAME, 0, 0))
        data = b""
    text = decode(data, STDIN_NAME, sink)
    return io.StringIO(text if text is not None else "")


def emit_diagnostics(diags: list[Diagnostic], sources: SourceRegistry) -> None:
    """Render to stderr, sorted by place, each with its source line and caret."""
    for d in diags:
        click.echo(render(d, sources), err=True)


def diagnostics_json(diags: list[Diagnostic]) -> list[dict[str, object]]:
    return [d.as_dict() for d in diags]


def fail(message: str) -> NoReturn:
    """Say what is wrong on stderr and exit with the input-error status."""
    click.echo(f"tortie: {message}", err=True)
    sys.exit(EXIT_ERRORS)


def exit_code(sink: DiagnosticSink) -> int:
    return EXIT_ERRORS if sink.has_errors else EXIT_OK


def counts_line(sink: DiagnosticSink) -> str:
    errors = sum(1 for d in sink.sorted() if d.level is Level.ERROR)
    warnings = sum(1 for d in sink.sorted() if d.level is Level.WARNING)
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))
