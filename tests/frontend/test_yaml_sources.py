"""Input discovery: files, directories, stdin, unreadable paths."""

from __future__ import annotations

import io
import os
from pathlib import Path

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load
from compiler.frontend.sources import STDIN_NAME, discover

TIER = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: %s}\nspec: {order: 1}\n"


def test_directories_are_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / ".git").mkdir()
    for rel in (
        "b/z.yaml",
        "a/y.yml",
        "a-c.json",
        "top.yaml",
        ".hidden.yaml",
        ".git/x.yaml",
        "notes.txt",
    ):
        (tmp_path / rel).write_text("{}\n")
    sink = DiagnosticSink()
    names = [os.path.relpath(s.name, tmp_path) for s in discover([str(tmp_path)], sink)]
    assert names == ["a/y.yml", "a-c.json", "b/z.yaml", "top.yaml"]
    assert not sink.diagnostics


def test_an_explicit_file_is_read_whatever_its_extension(tmp_path: Path) -> None:
    f = tmp_path / "policy.txt"
    f.write_text(TIER % "t1")
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load([str(f)], sink, sources)
    assert "t1" in [t.name for t in rs.tiers]


def test_the_same_file_twice_is_read_once(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(TIER % "t1")
    sink, sources = DiagnosticSink(), SourceRegistry()
    load([str(f), str(tmp_path), str(f)], sink, sources)
    assert not sink.diagnostics  # no duplicate-resource error


def test_stdin_is_named_and_read_once() -> None:
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load(["-", "-"], sink, sources, stdin=io.StringIO(TIER % "from-stdin"))
    assert "from-stdin" in [t.name for t in rs.tiers]
    assert rs.tiers[-1].span.file == STDIN_NAME or any(t.span.file == STDIN_NAME for t in rs.tiers)
    assert not sink.diagnostics


def test_missing_path_and_bad_encoding_are_diagnostics(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: caf\xe9\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    sink, sources = DiagnosticSink(), SourceRegistry()
    load([str(tmp_path / "nope.yaml"), str(bad), str(empty)], sink, sources)
    out = render_all(sink.sorted(), sources).replace(str(tmp_path), "D")
    assert out == (
        "D/bad.yaml:2:7: error[E003]: input is not UTF-8 text (byte 0xe9)\n"
        "D/empty: warning[W003]: no .yaml, .yml or .json files under D/empty\n"
        "D/nope.yaml: error[E002]: cannot read D/nope.yaml: no such file or directory"
    )


def test_a_byte_order_mark_does_not_shift_columns(tmp_path: Path) -> None:
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbfapiVersion: projectcalico.org/v3\nkind: Tierr\n")
    sink, sources = DiagnosticSink(), SourceRegistry()
    load([str(f)], sink, sources)
    (d,) = sink.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("E011", 2, 7)


def test_a_control_character_in_a_file_name_never_reaches_the_terminal() -> None:
    from compiler.diagnostics import Diagnostic, Level, Span, render

    diag = Diagnostic(
        "E010", Level.ERROR, "a resource needs apiVersion", Span("a\nb\x1b.yaml", 1, 1)
    )
    text = render(diag)
    assert text.splitlines()[0].startswith("a?b?.yaml:1:1: error[E010]")
    assert "\x1b" not in text


def test_a_fifo_in_a_directory_is_skipped_and_bad_stdin_bytes_are_e003(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: x\n")
    os.mkfifo(tmp_path / "b.yaml")  # reading it would block forever
    sink = DiagnosticSink()
    assert [s.name for s in discover([str(tmp_path)], sink)] == [str(tmp_path / "a.yaml")]
    sink = DiagnosticSink()
    stdin = io.BytesIO(b"kind: x\n\xff\n")
    assert discover(["-"], sink, stdin=stdin) == []  # type: ignore[arg-type]
    (err,) = sink.errors
    assert err.code == "E003" and (err.span.file, err.span.line) == (STDIN_NAME, 2)
