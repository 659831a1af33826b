"""The frontend: YAML files → typed, validated resources (``model.ResourceSet``).

>>> from compiler.diagnostics import DiagnosticSink, SourceRegistry
>>> sink, sources = DiagnosticSink(), SourceRegistry()
>>> rs = load_text('''
... apiVersion: projectcalico.org/v3
... kind: GlobalNetworkPolicy
... metadata: {name: deny-all}
... spec: {selector: all()}
... ''', "p.yaml", sink, sources)
>>> [p.id for p in rs.policies], sink.diagnostics
(['gnp/deny-all'], [])

Nothing here raises for bad input: every problem is a diagnostic in ``sink`` (see ``codes.py``)
and the result holds what could be read. Callers decide, from ``sink.has_errors``, whether to go
on. The stages are ``sources`` (which files), ``yaml_loader`` (text → spanned nodes) and
``schema`` (nodes → resources).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TextIO

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend.model import ResourceSet
from compiler.frontend.schema import read_documents
from compiler.frontend.sources import discover
from compiler.frontend.yaml_loader import Node, load_documents

__all__ = ["load", "load_text"]


def _documents(name: str, text: str, sink: DiagnosticSink, sources: SourceRegistry) -> list[Node]:
    text = text.removeprefix("\ufeff")
    sources.add(name, text)
    return load_documents(text, name, sink)


def load(
    paths: Sequence[str],
    sink: DiagnosticSink,
    sources: SourceRegistry,
    stdin: TextIO | None = None,
) -> ResourceSet:
    """Read files, directories (recursively) and ``-`` (stdin) into one :class:`ResourceSet`.

    Each file's documents are read into resources as soon as the file is parsed, so only one
    file's node tree is alive at a time (the trees are most of the parse's memory).
    """

    def documents() -> Iterator[Node]:
        for src in discover(paths, sink, stdin):
            yield from _documents(src.name, src.text, sink, sources)

    return read_documents(documents(), sink)


def load_text(text: str, name: str, sink: DiagnosticSink, sources: SourceRegistry) -> ResourceSet:
    """Like :func:`load` for one in-memory document stream named ``name`` (tests, tools)."""
    return read_documents(_documents(name, text, sink, sources), sink)
