"""DiagnosticSink.error_count / has_errors: readers ask before and after every document and rule,
so the count is kept incrementally (a 20,000-policy input with 40,000 warnings took 360 s to
check when each question rescanned every diagnostic; 2.9 s now). It must stay exact however
the list is changed: add(), direct extend (compiler/incremental does), or emptied."""

from __future__ import annotations

import random

from compiler.diagnostics import Diagnostic, DiagnosticSink, Level, Span

SPAN = Span("f.yaml", 1, 1)


def _diag(level: Level) -> Diagnostic:
    return Diagnostic("E999" if level is Level.ERROR else "W999", level, "m", SPAN, ())


def test_the_count_follows_every_way_the_list_changes() -> None:
    rng = random.Random(3)
    sink = DiagnosticSink()
    for _ in range(2000):
        op = rng.random()
        if op < 0.4:
            (sink.error if rng.random() < 0.3 else sink.warning)("E1", "m", SPAN)
        elif op < 0.7:
            sink.diagnostics.extend(
                _diag(rng.choice([Level.ERROR, Level.WARNING])) for _ in range(rng.randint(0, 5))
            )
        elif op < 0.72:
            sink.diagnostics.clear()
        truth = sum(1 for d in sink.diagnostics if d.level is Level.ERROR)
        assert sink.error_count == truth == len(sink.errors)
        assert sink.has_errors == (truth > 0)


def test_a_new_sink_and_equality_ignore_the_cache() -> None:
    a, b = DiagnosticSink(), DiagnosticSink()
    assert not a.has_errors and a.error_count == 0
    a.error("E1", "m", SPAN)
    b.error("E1", "m", SPAN)
    assert a.error_count == 1  # a has counted, b has not
    assert a == b
