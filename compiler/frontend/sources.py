"""Input discovery: which files to read, in which order, under which names.

``-f`` takes files, directories and ``-`` (stdin). Directories are walked recursively for
``.yaml``, ``.yml`` and ``.json`` files in sorted order, so the same tree always gives the same
diagnostics in the same order. A file named explicitly is read whatever its extension. Hidden
entries (``.git``, editor swap files) are skipped while walking, as a team's repository is full of
them. Names in diagnostics are the paths as the user wrote them, never made absolute, so output
does not depend on the machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from compiler.diagnostics import DiagnosticSink, Span

__all__ = ["STDIN_NAME", "Source", "discover", "decode"]

STDIN_NAME = "<stdin>"
EXTENSIONS = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    text: str


def decode(data: bytes, name: str, sink: DiagnosticSink) -> str | None:
    """UTF-8 text without a BOM, or None (and E003 at the first bad byte's line and column)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start
        head = data[:start]
        line = head.count(b"\n") + 1
        col = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        sink.error(
            "E003", f"input is not UTF-8 text (byte 0x{data[start]:02x})", Span(name, line, col)
        )
        return None


def walk(root: str) -> list[str]:
    """The YAML/JSON files under ``root`` as ``discover`` reads them: regular files only, hidden
    entries skipped, sorted on path components."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            full = os.path.join(dirpath, f)
            # Regular files only: a FIFO or device named *.yaml would block or never end.
            if not f.startswith(".") and f.lower().endswith(EXTENSIONS) and os.path.isfile(full):
                found.append(full)
    # Sort on path components so "a/b.yaml" < "a-c.yaml" does not depend on the separator.
    return sorted(found, key=lambda p: p.split(os.sep))


def _read(path: str, sink: DiagnosticSink) -> Source | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        sink.error("E002", f"cannot read {path}: {e.strerror or e}", Span(path, 0, 0))
        return None
    text = decode(data, path, sink)
    return None if text is None else Source(path, text)


def discover(
    paths: Iterable[str], sink: DiagnosticSink, stdin: TextIO | None = None
) -> list[Source]:
    """The sources named by ``paths``, each file once (first mention wins), in a stable order."""
    out: list[Source] = []
    seen: set[str] = set()
    for path in paths:
        if path == "-":
            if STDIN_NAME in seen:
                continue
            seen.add(STDIN_NAME)
            stream = stdin if stdin is not None else sys.stdin
            try:
                raw = stream.read()
            except (OSError, UnicodeDecodeError) as e:
                sink.error("E002", f"cannot read standard input: {e}", Span(STDIN_NAME, 0, 0))
                continue
            if isinstance(raw, bytes):
                decoded = decode(raw, STDIN_NAME, sink)
                if decoded is None:
                    continue
                text = decoded
            else:
                text = raw.removeprefix("\ufeff")
            out.append(Source(STDIN_NAME, text))
            continue
        if os.path.isdir(path):
            files = walk(path)
            if not files:
                sink.warning(
                    "W003", f"no .yaml, .yml or .json files under {path}", Span(path, 0, 0)
                )
        elif os.path.exists(path):
            files = [path]
        else:
            sink.error("E002", f"cannot read {path}: no such file or directory", Span(path, 0, 0))
            continue
        for f in files:
            key = os.path.realpath(f)
            if key in seen:
                continue
            seen.add(key)
            src = _read(f, sink)
            if src is not None:
                out.append(src)
    return out
