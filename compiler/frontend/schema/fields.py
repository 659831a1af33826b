"""Typed, span-aware access to one YAML mapping.

Each resource reader opens its mappings through :class:`Fields`, which reports unknown keys at
once (with a "did you mean" from difflib) and offers getters that check types. A getter that
finds a problem reports it and returns None, so the reader carries on and the user sees every
problem of a file in one run. An explicit ``null`` counts as "not given", as it does when
Kubernetes decodes JSON.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable
from functools import lru_cache

from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, Sequence, type_name

__all__ = ["Fields", "did_you_mean", "expect_map", "expect_str"]

# A plain scalar that go-yaml (kubectl, calicoctl) resolves to a float: exponents without a dot.
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` when a choice is close to ``word``, else ``""``."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f' (did you mean "{close[0]}"?)' if close else ""


def expect_map(sink: DiagnosticSink, node: Node | None, what: str) -> Mapping | None:
    """``node`` as a mapping, or None (with E021 unless the node is absent or null)."""
    if node is None or (isinstance(node, Scalar) and node.value is None):
        return None
    if not isinstance(node, Mapping):
        sink.error("E021", f"{what} must be a mapping, not {type_name(node)}", node.span)
        return None
    return node


def expect_str(sink: DiagnosticSink, node: Node | None, what: str) -> Scalar | None:
    """``node`` if it is a string scalar, else None (with E021 unless it is absent or null)."""
    if node is None or (isinstance(node, Scalar) and node.value is None):
        return None
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        hint = " (quote it)" if isinstance(node, Scalar) else ""
        sink.error("E021", f"{what} must be a string, not {type_name(node)}{hint}", node.span)
        return None
    return node


@lru_cache(maxsize=1024)
def _accepted_pair(known: Collection[str], ignored: Collection[str]) -> frozenset[str]:
    return frozenset(known) | frozenset(ignored)


def _accepted(known: Collection[str], ignored: Collection[str]) -> frozenset[str]:
    """``known`` and ``ignored`` as one set; readers pass the same few constant tuples each
    time, so the set is made once per pair."""
    try:
        return _accepted_pair(known, ignored)
    except TypeError:  # an unhashable collection (a list): no caching
        return frozenset(known) | frozenset(ignored)


class Fields:
    """One mapping being read. ``where`` names it in messages ("NetworkPolicy spec").

    ``known`` fields are read by the caller; ``ignored`` ones are accepted and skipped without
    a word (status, managedFields...). Anything else is E020, unless ``strict`` is False (the
    Kubernetes core kinds, where kubectl prints far more than Tortie needs).
    """

    def __init__(
        self,
        sink: DiagnosticSink,
        node: Mapping,
        where: str,
        known: Collection[str],
        ignored: Collection[str] = (),
        *,
        strict: bool = True,
    ) -> None:
        self.sink = sink
        self.node = node
        self.where = where
        # The keys written, null values included. A getter asked for a key not in here returns
        # None and reports nothing (unless the key is required), so hot readers test this dict
        # first and skip the absent fields without a call.
        self.present = node._index
        # The index holds every key's text: when all are accepted there is nothing to report.
        if strict and not _accepted(known, ignored).issuperset(self.present):
            for key, _ in node.items:
                name = str(key.value)
                if name not in known and name not in ignored:
                    hint = did_you_mean(name, known)
                    sink.error("E020", f'unknown field "{name}" in {where}{hint}', key.span)

    # -- raw access --------------------------------------------------------------------------
    def get(self, key: str) -> Node | None:
        """The node for ``key``; None when absent or null."""
        i = self.present.get(key)  # Mapping.get inlined: readers call this a million times
        if i is None:
            return None
        node = self.node.items[i][1]
        if node.__class__ is Scalar and node.value is None:  # type: ignore[union-attr]
            return None
        return node

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def span(self, key: str) -> Span:
        """Where ``key``'s value is, or the mapping itself when the key is absent."""
        node = self.node.get(key)
        return node.span if node is not None else self.node.span

    def key_span(self, key: str) -> Span:
        k = self.node.key_node(key)
        return k.span if k is not None else self.node.span

    def missing(self, key: str) -> None:
        self.sink.error("E022", f'missing required field "{key}" in {self.where}', self.node.span)

    def wrong(self, key: str, want: str, node: Node, hint: str = "") -> None:
        self.sink.error("E021", f'"{key}" must be {want}, not {type_name(node)}{hint}', node.span)

    # -- typed getters -----------------------------------------------------------------------
    def scalar(self, key: str, *, required: bool = False) -> Scalar | None:
        node = self.get(key)
        if node is None:
            if required:
                self.missing(key)
            return None
        if not isinstance(node, Scalar):
            self.wrong(key, "a single value", node)
            return None
        return node

    def str_node(self, key: str, *, required: bool = False) -> Scalar | None:
        i = self.present.get(key)  # the common cases inlined: absent, or a string
        if i is None and not required:
            return None
        if i is not None:
            found = self.node.items[i][1]
            if found.__class__ is Scalar and found.value.__class__ is str:  # type: ignore[union-attr]
                return found  # type: ignore[return-value]
        node = self.scalar(key, required=required)
        if node is None:
            return None
        if not isinstance(node.value, str):
            self.wrong(key, "a string", node, " (quote it)")
            return None
        return node

    def str(self, key: str, *, required: bool = False) -> str | None:
        node = self.str_node(key, required=required)
        return None if node is None else str(node.value)

    def bool(self, key: str, *, required: bool = False) -> bool | None:
        node = self.scalar(key, required=required)
        if node is None:
            return None
        if not isinstance(node.value, bool):
            self.wrong(key, "true or false", node)
            return None
        return node.value

    def int(
        self, key: str, lo: int | None = None, hi: int | None = None, *, required: bool = False
    ) -> int | None:
        node = self.scalar(key, required=required)
        if node is None:
            return None
        v = node.value
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.wrong(key, "an integer", node)
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = (
                f"{lo}..{hi}"
                if lo is not None and hi is not None
                else (f">= {lo}" if lo is not None else f"<= {hi}")
            )
            self.sink.error("E023", f'"{key}" must be in {rng}, not {v}', node.span)
            return None
        return v

    def number(self, key: str, *, required: bool = False) -> float | None:
        node = self.scalar(key, required=required)
        if node is None:
            return None
        v = node.value
        if node.style == "" and isinstance(v, str) and _GO_FLOAT.fullmatch(v):
            # "1e3" is a string to YAML 1.1 (its floats need a dot) but a number to kubectl
            # and calicoctl (go-yaml), which is how the cluster would read it.
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.wrong(key, "a number", node)
            return None
        if not math.isfinite(v):
            self.sink.error("E023", f'"{key}" must be a finite number', node.span)
            return None
        return float(v)

    def enum(
        self, key: str, choices: Collection[str], *, required: bool = False, fold: bool = False
    ) -> str | None:
        """One of ``choices``; with ``fold`` the match ignores case and returns the choice's spelling."""
        node = self.str_node(key, required=required)
        if node is None:
            return None
        text = str(node.value)
        if text in choices:
            return text
        if fold:
            for c in choices:
                if c.lower() == text.lower():
                    return c
        listed = ", ".join(sorted(choices))
        self.sink.error(
            "E023",
            f'"{key}" must be one of {listed}, not "{text}"{did_you_mean(text, choices)}',
            node.span,
        )
        return None

    def map(self, key: str, *, required: bool = False) -> Mapping | None:
        node = self.get(key)
        if node is None:
            if required:
                self.missing(key)
            return None
        return expect_map(self.sink, node, f'"{key}"')

    def seq(self, key: str, *, required: bool = False, max_items: int | None = None) -> list[Node]:
        node = self.get(key)
        if node is None:
            if required:
                self.missing(key)
            return []
        if not isinstance(node, Sequence):
            self.wrong(key, "a list", node)
            return []
        if max_items is not None and len(node.items) > max_items:
            self.sink.error(
                "E028",
                f'"{key}" has {len(node.items)} items; at most {max_items} are allowed',
                node.span,
            )
        return list(node.items)

    def str_list(
        self, key: str, *, required: bool = False, max_items: int | None = None
    ) -> list[Scalar]:
        out = []
        for item in self.seq(key, required=required, max_items=max_items):
            s = expect_str(self.sink, item, f'an item of "{key}"')
            if s is not None:
                out.append(s)
            elif isinstance(item, Scalar) and item.value is None:
                self.sink.error("E021", f'an item of "{key}" must be a string, not null', item.span)
        return out
