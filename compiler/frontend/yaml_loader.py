"""YAML (and JSON) → a small node tree in which every key, value and item keeps its :class:`Span`.

Why not ``yaml.safe_load``: plain Python objects forget where they came from, and every diagnostic
must point at a file, line and column (and inside a selector string, at the bad token). So we read
the parser's *event* stream ourselves and build :class:`Scalar` / :class:`Mapping` /
:class:`Sequence` nodes with an explicit stack:

* no recursion on the input's depth (PyYAML's composers recurse, and the C one has no guard);
* anchors and aliases are resolved here, with a budget on how many nodes aliases may add, so an
  alias bomb ("billion laughs") is one diagnostic instead of an out-of-memory kill;
* duplicate keys are errors (Kubernetes' strict decoding rejects them; PyYAML keeps the last);
* only the JSON-compatible core tags are accepted: a ``!python/...`` or ``!!binary`` tag is an
  error, and a plain scalar that YAML 1.1 would read as a timestamp stays a string, as it does
  when kubectl turns YAML into JSON;
* merge keys (``<<: *base``) work as in Kubernetes' YAML library.

Nothing here raises for bad input: problems go to the :class:`DiagnosticSink` (code E001 and
friends, see ``codes.py``) and the documents that could be read are returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from compiler.diagnostics import DiagnosticSink, Span

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "Mapping",
    "Node",
    "Scalar",
    "Sequence",
    "load_documents",
    "type_name",
]

MAX_DEPTH = 200  # nesting of mappings/sequences; real resources stay below 20
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to one document

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML's printable set (YAML 1.1 §5.1). Anything else is a reader error; we find it ourselves
# because the C reader reports a byte offset, not a line and column.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


@dataclass(eq=False, slots=True)
class Scalar:
    """A scalar with its resolved value (str, int, float, bool or None) and where it was written.

    ``raw`` is the exact source text of a one-line scalar (quotes included) and None otherwise;
    :meth:`span_at` uses it to point at a character inside the value.
    """

    value: object
    span: Span
    style: str = ""  # "" plain, "'" or '"' quoted, "|" or ">" block
    raw: str | None = None

    def span_at(self, offset: int) -> Span:
        """The span of character ``offset`` of the (string) value.

        Plain one-line scalars map directly. Quoted ones start one column after the quote, and
        escapes (``''``, ``\\"``, ``\\x41``...) are walked so that the column still lands on the
        character. Block and multi-line scalars point at the scalar's start: their lines are
        folded and the column would be a guess.
        """
        if self.raw is None or not isinstance(self.value, str):
            return self.span
        columns = _value_columns(self.raw, self.style, self.value)
        if columns is None:
            return self.span
        offset = max(0, min(offset, len(columns) - 1))
        return Span(self.span.file, self.span.line, self.span.col + columns[offset])


@dataclass(eq=False, slots=True)
class Mapping:
    """A mapping whose keys are strings (the source text of the key scalar)."""

    items: list[tuple[Scalar, Node]]
    span: Span
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> Node | None:
        i = self._index.get(key)
        return None if i is None else self.items[i][1]

    def key_node(self, key: str) -> Scalar | None:
        i = self._index.get(key)
        return None if i is None else self.items[i][0]

    def keys(self) -> list[str]:
        return [str(k.value) for k, _ in self.items]

    def __contains__(self, key: str) -> bool:
        return key in self._index


@dataclass(eq=False, slots=True)
class Sequence:
    items: list[Node]
    span: Span


Node = Scalar | Mapping | Sequence


def type_name(node: Node | None) -> str:
    """How a node's type is named in messages ("a string", "a list"...)."""
    if node is None:
        return "nothing"
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    return "a string"


def _value_columns(raw: str, style: str, value: str) -> list[int] | None:
    """Column offset (from the scalar's start) of each character of ``value``, plus one past the
    end; None when the source text does not decode to ``value`` (then we do not guess)."""
    if style in ("", None):
        cols = list(range(len(value) + 1))
        return cols if raw.startswith(value) else None
    if style == "'":
        cols, out, i = [], [], 1
        while i < len(raw) - 1:
            cols.append(i)
            out.append(raw[i])
            i += 2 if raw[i] == "'" and raw[i + 1 : i + 2] == "'" else 1
        cols.append(len(raw) - 1)
        return cols if "".join(out) == value else None
    if style == '"':
        return _double_quoted_columns(raw, value)
    return None


_ESCAPE_LEN = {"x": 2, "u": 4, "U": 8}


def _double_quoted_columns(raw: str, value: str) -> list[int] | None:
    cols, out, i = [], [], 1
    end = len(raw) - 1
    while i < end:
        cols.append(i)
        if raw[i] != "\\":
            out.append(raw[i])
            i += 1
            continue
        code = raw[i + 1 : i + 2]
        width = _ESCAPE_LEN.get(code, 0)
        try:
            decoded = yaml.safe_load('"' + raw[i : i + 2 + width] + '"')
        except yaml.YAMLError:
            return None
        out.append(str(decoded))
        i += 2 + width
    cols.append(end)
    return cols if "".join(out) == value else None


class _Budget(Exception):
    """Aborts one document: too deep or too many alias expansions."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.message = message
        self.span = span


@dataclass(slots=True)
class _Frame:
    node: Mapping | Sequence
    anchor: str | None
    pending_key: Scalar | None = None
    merges: list[tuple[Scalar, Node]] = field(default_factory=list)
    size: int = 1


class _Builder:
    """Turns the event stream of one file into documents; see the module docstring."""

    def __init__(self, name: str, lines: list[str], sink: DiagnosticSink) -> None:
        self.name = name
        self.lines = lines
        self.sink = sink
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.reset()

    def reset(self) -> None:
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Node, int]] = {}
        self.alias_nodes = 0
        self.root: Node | None = None
        self.sizes: dict[int, int] = {}

    def span(self, mark: yaml.Mark) -> Span:
        return Span(self.name, mark.line + 1, mark.column + 1)

    # -- scalars ---------------------------------------------------------------------------
    def scalar(self, ev: yaml.ScalarEvent) -> Scalar:
        span = self.span(ev.start_mark)
        style = ev.style or ""
        tag = ev.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        value: object
        if tag in _CORE_TAGS:
            try:
                value = self.constructor.construct_object(yaml.ScalarNode(tag, ev.value))
            except (ConstructorError, ValueError, OverflowError):
                value = ev.value
        elif tag in ("tag:yaml.org,2002:timestamp", _MERGE_TAG) and ev.tag in (None, "!"):
            value = ev.value  # JSON has no timestamps: kubectl keeps the text
        else:
            self.sink.error("E005", f"unsupported YAML tag {tag!r}", span)
            value = ev.value
        raw = None
        if ev.start_mark.line == ev.end_mark.line and style in ("", "'", '"'):
            line = self.lines[ev.start_mark.line] if ev.start_mark.line < len(self.lines) else ""
            raw = line[ev.start_mark.column : ev.end_mark.column]
        node = Scalar(value, span, style, raw)
        if tag == _MERGE_TAG and ev.tag in (None, "!"):
            node.style = "<<"
        return node

    # -- structure ---------------------------------------------------------------------------
    def add(self, node: Node, size: int, anchor: str | None) -> None:
        if anchor:
            self.anchors[anchor] = (node, size)
        if not self.stack:
            self.root = node
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.node, Sequence):
            top.node.items.append(node)
            return
        if top.pending_key is None:
            if not isinstance(node, Scalar):
                self.sink.error(
                    "E021", "mapping keys must be strings, not " + type_name(node), node.span
                )
                node = Scalar("?", node.span)
            top.pending_key = node
            return
        key, top.pending_key = top.pending_key, None
        if key.style == "<<":
            top.merges.append((key, node))
            return
        self.put(top.node, key, node)

    def put(self, mapping: Mapping, key: Scalar, value: Node, merged: bool = False) -> None:
        text = _key_text(key)
        if text in mapping._index:
            if merged:
                return  # explicit keys win over merged ones
            first = mapping.items[mapping._index[text]][0]
            self.sink.error(
                "E004",
                f"duplicate key {text!r} in this mapping",
                key.span,
                f"first given at {first.span}",
            )
            return
        mapping._index[text] = len(mapping.items)
        mapping.items.append((Scalar(text, key.span, key.style, key.raw), value))

    def finish_mapping(self, frame: _Frame) -> None:
        assert isinstance(frame.node, Mapping)
        for key, value in frame.merges:
            sources = value.items if isinstance(value, Sequence) else [value]
            for src in sources:
                if not isinstance(src, Mapping):
                    self.sink.error(
                        "E021", "a merge key (<<) needs a mapping or a list of mappings", key.span
                    )
                    continue
                for k, v in src.items:
                    self.put(frame.node, k, v, merged=True)

    def alias(self, ev: yaml.AliasEvent) -> None:
        span = self.span(ev.start_mark)
        if ev.anchor not in self.anchors:
            self.sink.error("E001", f"malformed YAML: unknown alias {ev.anchor!r}", span)
            self.add(Scalar(None, span), 1, None)
            return
        node, size = self.anchors[ev.anchor]
        self.alias_nodes += size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise _Budget(
                f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing to expand them",
                span,
            )
        self.add(node, size, None)

    def event(self, ev: yaml.Event) -> Node | None:
        """Feed one event; returns a finished document's root at DocumentEnd."""
        if isinstance(ev, yaml.ScalarEvent):
            self.add(self.scalar(ev), 1, ev.anchor)
        elif isinstance(ev, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            span = self.span(ev.start_mark)
            if len(self.stack) >= MAX_DEPTH:
                raise _Budget(f"YAML nested more than {MAX_DEPTH} levels deep", span)
            want = _MAP_TAG if isinstance(ev, yaml.MappingStartEvent) else _SEQ_TAG
            if ev.tag not in (None, "!", want):
                self.sink.error("E005", f"unsupported YAML tag {ev.tag!r}", span)
            node: Mapping | Sequence = Mapping([], span) if want == _MAP_TAG else Sequence([], span)
            self.stack.append(_Frame(node, ev.anchor))
        elif isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = self.stack.pop()
            if isinstance(frame.node, Mapping):
                self.finish_mapping(frame)
            self.add(frame.node, frame.size, frame.anchor)
        elif isinstance(ev, yaml.AliasEvent):
            self.alias(ev)
        elif isinstance(ev, yaml.DocumentEndEvent):
            root = self.root
            self.reset()
            return root
        return None


def _key_text(key: Scalar) -> str:
    """Keys are compared and looked up as their source text: ``80:`` and ``"80":`` are both
    ``"80"``, and ``on:`` stays ``"on"`` (not YAML 1.1's True)."""
    if key.raw is not None and key.style == "":
        return key.raw.strip()
    return key.value if isinstance(key.value, str) else str(key.value)


def _first_bad_char(text: str, name: str) -> tuple[Span, str] | None:
    m = _NON_PRINTABLE.search(text)
    if m is None:
        return None
    line = text.count("\n", 0, m.start()) + 1
    col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return Span(name, line, col), f"U+{ord(m.group()):04X}"


def load_documents(text: str, name: str, sink: DiagnosticSink) -> list[Node]:
    """Every non-empty document of ``text`` (YAML or JSON). Malformed input → diagnostics.

    Documents before a syntax error are kept, so that all problems of a run are reported
    together; nothing after the error is read, because a YAML parser cannot resynchronise.
    """
    bad = _first_bad_char(text, name)
    if bad is not None:
        sink.error(
            "E001", f"malformed YAML: character {bad[1]} is not allowed in YAML text", bad[0]
        )
        return []
    builder = _Builder(name, text.splitlines(), sink)
    docs: list[Node] = []
    loader = _LOADER(text)
    try:
        while True:
            ev = loader.get_event()
            if ev is None or isinstance(ev, yaml.StreamEndEvent):
                break
            root = builder.event(ev)
            if root is not None and not (isinstance(root, Scalar) and root.value is None):
                docs.append(root)
    except _Budget as e:
        sink.error("E006", e.message, e.span)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(name, mark.line + 1, mark.column + 1) if mark else Span(name, 1, 1)
        notes = []
        if e.context and e.context_mark:
            notes.append(
                f"{e.context} at {Span(name, e.context_mark.line + 1, e.context_mark.column + 1)}"
            )
        sink.error("E001", f"malformed YAML: {e.problem or e.context}", span, *notes)
    except yaml.YAMLError as e:  # reader errors without marks (encoding problems)
        sink.error("E001", f"malformed YAML: {str(e).splitlines()[0]}", Span(name, 1, 1))
    finally:
        loader.dispose()
    return docs
