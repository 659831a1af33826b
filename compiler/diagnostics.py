"""Source spans and diagnostics.

Every user-facing problem is a :class:`Diagnostic` with a :class:`Span`. The CLI renders it as::

    policy.yaml:12:7: error[E012]: invalid selector: expected a label or '('
      selector: role == "db" &&
                              ^

Library code never prints and never raises for user errors: it adds diagnostics to a
:class:`DiagnosticSink` and carries on, so that all problems of a run are reported together.
Exceptions stay for bugs and broken environments.

>>> sink = DiagnosticSink()
>>> sources = SourceRegistry()
>>> sources.add("p.yaml", "a: 1\\nselector: x ==\\n")
>>> sink.error("E100", "invalid selector: expected a string", Span("p.yaml", 2, 14))
>>> print(render_all(sink.diagnostics, sources))
p.yaml:2:14: error[E100]: invalid selector: expected a string
  selector: x ==
               ^
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True, order=True, init=False)
class Span:
    """A place in a source file. Lines and columns are 1-based; ``end_col`` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    def __init__(self, file: str, line: int, col: int, end_line: int = 0, end_col: int = 0) -> None:
        # What the frozen dataclass's own __init__ does (object.__setattr__ per field), through
        # the slots' setters: 40 % less, and the frontend makes a span for every rule, peer,
        # port and resource it reads (130,000 at 10,000 policies).
        _set_file(self, file)
        _set_line(self, line)
        _set_col(self, col)
        _set_end_line(self, end_line)
        _set_end_col(self, end_col)

    def at_offset(self, offset: int) -> Span:
        """The span ``offset`` characters to the right on the same line (for a token inside a scalar)."""
        return Span(self.file, self.line, self.col + offset)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_set_file = Span.__dict__["file"].__set__
_set_line = Span.__dict__["line"].__set__
_set_col = Span.__dict__["col"].__set__
_set_end_line = Span.__dict__["end_line"].__set__
_set_end_col = Span.__dict__["end_col"].__set__

NO_SPAN = Span("<unknown>", 0, 0)


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    level: Level
    message: str
    span: Span
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "level": self.level.value,
            "code": self.code,
            "message": self.message,
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class DiagnosticSink:
    """Collects diagnostics; stages add to it and keep going."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Errors among diagnostics[:_scanned] (see error_count); not part of the value.
    _scanned: int = field(default=0, repr=False, compare=False)
    _error_count: int = field(default=0, repr=False, compare=False)

    def add(self, diag: Diagnostic) -> None:
        self.diagnostics.append(diag)

    def error(self, code: str, message: str, span: Span, *notes: str) -> None:
        self.add(Diagnostic(code, Level.ERROR, message, span, tuple(notes)))

    def warning(self, code: str, message: str, span: Span, *notes: str) -> None:
        self.add(Diagnostic(code, Level.WARNING, message, span, tuple(notes)))

    @property
    def error_count(self) -> int:
        """How many of the diagnostics are errors. Readers ask before and after each document
        and rule; only diagnostics added since the last question are looked at, so an input
        with tens of thousands of warnings is not quadratic. (``diagnostics`` is a plain list
        that callers may extend directly: it only grows, or is emptied, which restarts.)"""
        diags = self.diagnostics
        if len(diags) < self._scanned:
            self._scanned = self._error_count = 0
        if len(diags) > self._scanned:
            self._error_count += sum(1 for d in diags[self._scanned :] if d.level is Level.ERROR)
            self._scanned = len(diags)
        return self._error_count

    @property
    def has_errors(self) -> bool:
        return self.error_count > 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.level is Level.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.level is Level.WARNING]

    def sorted(self) -> list[Diagnostic]:
        """Stable, readable order: by file, line, column, then code."""
        seen: set[Diagnostic] = set()
        out = []
        for d in sorted(self.diagnostics, key=lambda d: (d.span, d.code, d.message)):
            if d not in seen:
                seen.add(d)
                out.append(d)
        return out


class SourceRegistry:
    """The text of every file read, so diagnostics can quote the offending line."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}
        self._texts: dict[str, str] = {}  # split into lines when a diagnostic first needs one

    def add(self, name: str, text: str) -> None:
        self._texts[name] = text
        self._lines.pop(name, None)

    def line(self, name: str, lineno: int) -> str | None:
        lines = self._lines.get(name)
        if lines is None and name in self._texts:
            lines = self._lines[name] = self._texts[name].splitlines()
        if lines is None or not 1 <= lineno <= len(lines):
            return None
        return lines[lineno - 1]


class HashingSources(SourceRegistry):
    """A source registry that also remembers the SHA-256 of every input text (for the
    artifact manifest's ``inputs``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hashes: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        super().add(name, text)
        self.hashes[name] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _printable(text: str) -> str:
    """Never echo control characters from user input to a terminal."""
    return "".join(ch if ch == "\t" or ch.isprintable() else "?" for ch in text)


def render(diag: Diagnostic, sources: SourceRegistry | None = None) -> str:
    where = _printable(str(diag.span) if diag.span.line > 0 else diag.span.file)
    head = f"{where}: {diag.level.value}[{diag.code}]: {_printable(diag.message)}"
    out = [head]
    src = sources.line(diag.span.file, diag.span.line) if sources else None
    if src is not None:
        shown = _printable(src)
        # Keep tabs so the caret lines up with the terminal's rendering of the line.
        pad = "".join("\t" if ch == "\t" else " " for ch in shown[: max(diag.span.col - 1, 0)])
        out.append(f"  {shown}")
        out.append(f"  {pad}^")
    out.extend(f"  = note: {_printable(n)}" for n in diag.notes)
    return "\n".join(out)


def render_all(diags: Iterable[Diagnostic], sources: SourceRegistry | None = None) -> str:
    return "\n".join(render(d, sources) for d in diags)
