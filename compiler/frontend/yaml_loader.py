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

Most files are plain block YAML as tools write it; :mod:`compiler.frontend.yaml_fast` reads
those line by line into the same tree, several times faster, and hands everything else (and
every file with a problem) to the event reader here.
"""

from __future__ import annotations

import re
from collections.abc import Container

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from compiler.diagnostics import DiagnosticSink, Span
from compiler.perf import paused_gc

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


class Scalar:
    """A scalar with its resolved value (str, int, float, bool or None) and where it was written.

    ``raw`` is the exact source text of a one-line scalar (quotes included) and None otherwise,
    and also None when a tag or an anchor comes first (the span then starts at ``!``/``&``);
    :meth:`span_at` uses it to point at a character inside the value, and a plain key's text is
    its ``raw`` text (``80:`` is the key "80").

    Nodes are plain slotted classes rather than dataclasses, and their :class:`Span` is made on
    first use: a 10,000-pod file has over half a million scalars, readers look at the span of a
    handful of them per document, and building a frozen ``Span`` costs more than the node itself.
    """

    __slots__ = ("value", "style", "raw", "_span", "_file", "_line", "_col")

    def __init__(self, value: object, span: Span, style: str = "", raw: str | None = None) -> None:
        self.value = value
        self.style = style  # "" plain, "'" or '"' quoted, "|" or ">" block, "<<" merge key
        self.raw = raw
        self._span: Span | None = span

    @property
    def span(self) -> Span:
        s = self._span
        if s is None:
            s = self._span = Span(self._file, self._line + 1, self._col + 1)
        return s

    def __repr__(self) -> str:
        return f"Scalar(value={self.value!r}, span={self.span!r}, style={self.style!r})"

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
        span = self.span
        return Span(span.file, span.line, span.col + columns[offset])


class Mapping:
    """A mapping whose keys are strings (the source text of the key scalar)."""

    __slots__ = ("items", "_index", "_span", "_file", "_line", "_col")

    def __init__(self, items: list[tuple[Scalar, Node]], span: Span) -> None:
        self.items = items
        self._index: dict[str, int] = {}
        for i, (k, _) in enumerate(items):
            self._index.setdefault(str(k.value), i)
        self._span: Span | None = span

    @property
    def span(self) -> Span:
        s = self._span
        if s is None:
            s = self._span = Span(self._file, self._line + 1, self._col + 1)
        return s

    def __repr__(self) -> str:
        return f"Mapping(items={self.items!r}, span={self.span!r})"

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


class Sequence:
    __slots__ = ("items", "_span", "_file", "_line", "_col")

    def __init__(self, items: list[Node], span: Span) -> None:
        self.items = items
        self._span: Span | None = span

    @property
    def span(self) -> Span:
        s = self._span
        if s is None:
            s = self._span = Span(self._file, self._line + 1, self._col + 1)
        return s

    def __repr__(self) -> str:
        return f"Sequence(items={self.items!r}, span={self.span!r})"


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


class _Frame:
    """An open mapping or sequence. ``size`` counts the nodes below it (for the alias budget)."""

    __slots__ = ("node", "items", "is_map", "anchor", "pending_key", "merges", "size")

    def __init__(self, node: Mapping | Sequence, is_map: bool, anchor: str | None) -> None:
        self.node = node
        self.items = node.items
        self.is_map = is_map
        self.anchor = anchor
        self.pending_key: Scalar | None = None
        self.merges: list[tuple[Scalar, Node]] = []
        self.size = 1


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# First characters for which YAML 1.1 may resolve a plain scalar to something else than a string
# (the implicit resolvers' table); every other plain scalar is a string without asking.
_RESOLVABLE_FIRST: Container[str | None] = (
    frozenset(_RESOLVER.yaml_implicit_resolvers)
    if None not in _RESOLVER.yaml_implicit_resolvers
    else _Everything()  # a resolver for any first character: always ask
)


# Digits with two or more dots (an IPv4 address or CIDR): no YAML 1.1 resolver matches them
# (floats have one dot, sexagesimal numbers need a colon, timestamps a dash), so they are strings.
_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+){2,}(?:/[0-9]+)?\Z")


def _resolve_plain(text: str) -> tuple[object, str]:
    """A plain (unquoted, untagged) scalar's value and how to treat it: ``""`` as a value,
    ``"<<"`` as a merge key, anything else is the unsupported tag it resolves to."""
    if _DOTTED.match(text):
        return text, ""
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    if tag in _CORE_TAGS:
        try:
            return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text)), ""
        except (ConstructorError, ValueError, OverflowError):
            return text, ""
    if tag == _TIMESTAMP_TAG:
        return text, ""  # JSON has no timestamps: kubectl keeps the text
    if tag == _MERGE_TAG:
        return text, "<<"
    return text, tag


def _tagged_scalar(ev: yaml.ScalarEvent, span: Span, sink: DiagnosticSink) -> tuple[object, str]:
    """Value and treatment (as :func:`_resolve_plain`) of a scalar written with a tag."""
    tag = ev.tag
    if tag == "!":
        tag = _RESOLVER.resolve(yaml.ScalarNode, ev.value, ev.implicit)
    if tag in _CORE_TAGS:
        try:
            return _CONSTRUCTOR.yaml_constructors[tag](
                _CONSTRUCTOR, yaml.ScalarNode(tag, ev.value)
            ), ""
        except (ConstructorError, ValueError, OverflowError):
            return ev.value, ""
    if tag in (_TIMESTAMP_TAG, _MERGE_TAG) and ev.tag == "!":
        return ev.value, "<<" if tag == _MERGE_TAG else ""
    sink.error("E005", f"unsupported YAML tag {tag!r}", span)
    return ev.value, ""


class _Reader:
    """Turns the event stream of one file into documents; see the module docstring.

    One loop with local variables does the work, because it runs once per event: a 10,000-pod
    file has about 750,000 of them, and method calls per event cost more than parsing them.
    """

    def __init__(self, name: str, text: str, sink: DiagnosticSink) -> None:
        self.name = name
        self.source = text
        self.sink = sink
        # Plain scalars repeat (keys, label values): resolve each distinct text once.
        self.plain: dict[str, tuple[object, str]] = {}

    def span(self, mark: yaml.Mark) -> Span:
        return Span(self.name, mark.line + 1, mark.column + 1)

    def put(self, frame: _Frame, key: Scalar, value: Node, merged: bool = False) -> None:
        text = _key_text(key)
        mapping = frame.node
        index = mapping._index  # type: ignore[union-attr]
        if text in index:
            if merged:
                return  # explicit keys win over merged ones
            first = frame.items[index[text]][0]
            self.sink.error(
                "E004",
                f"duplicate key {text!r} in this mapping",
                key.span,
                f"first given at {first.span}",
            )
            return
        index[text] = len(frame.items)
        if text is not key.value:
            key = _scalar(text, key.style, key.raw, key.span)
        frame.items.append((key, value))

    def finish_mapping(self, frame: _Frame) -> None:
        for key, value in frame.merges:
            sources = value.items if isinstance(value, Sequence) else [value]
            for src in sources:
                if not isinstance(src, Mapping):
                    self.sink.error(
                        "E021", "a merge key (<<) needs a mapping or a list of mappings", key.span
                    )
                    continue
                for k, v in src.items:
                    self.put(frame, k, v, merged=True)

    def add(self, stack: list[_Frame], node: Node, size: int) -> Node | None:
        """Attach ``node`` to the open collection; returns it when it is a document's root."""
        if not stack:
            return node
        top = stack[-1]
        top.size += size
        if not top.is_map:
            top.items.append(node)
        elif top.pending_key is None:
            if not isinstance(node, Scalar):
                self.sink.error(
                    "E021", "mapping keys must be strings, not " + type_name(node), node.span
                )
                node = Scalar("?", node.span)
            top.pending_key = node
        else:
            key, top.pending_key = top.pending_key, None
            if key.style == "<<":
                top.merges.append((key, node))
            else:
                self.put(top, key, node)
        return None

    def documents(self, get_event: object, docs: list[Node]) -> None:  # noqa: C901, PLR0912, PLR0915
        """Read events until the stream ends, appending each non-empty document to ``docs``."""
        name, source, sink, plain = self.name, self.source, self.sink, self.plain
        new_scalar = Scalar.__new__
        new_mapping = Mapping.__new__
        new_sequence = Sequence.__new__
        stack: list[_Frame] = []
        anchors: dict[str, tuple[Node, int]] = {}
        alias_nodes = 0
        root: Node | None = None
        while True:
            ev = get_event()  # type: ignore[operator]
            cls = ev.__class__
            if cls is ScalarEvent:
                mark = ev.start_mark
                line = mark.line
                col = mark.column
                text = ev.value
                style = ev.style or ""
                raw = None
                if ev.tag is None:
                    if style:
                        value: object = text  # quoted and block scalars are strings
                        kind = ""
                        if style != "|" and style != ">" and ev.end_mark.line == line:
                            # Marks' indexes are character offsets into the text.
                            raw = source[mark.index : ev.end_mark.index]
                    else:
                        if text and text[0] not in _RESOLVABLE_FIRST:
                            value, kind = text, ""
                        else:
                            hit = plain.get(text)
                            if hit is None:
                                hit = plain[text] = _resolve_plain(text)
                            value, kind = hit
                            if kind and kind != "<<":
                                sink.error(
                                    "E005",
                                    f"unsupported YAML tag {kind!r}",
                                    Span(name, line + 1, col + 1),
                                )
                                kind = ""
                        if ev.end_mark.line == line:
                            # A one-line plain scalar is its own source text (and a cached
                            # string value is that text: share it, so keys compare by identity).
                            raw = value if value.__class__ is str else text
                else:
                    value, kind = _tagged_scalar(ev, Span(name, line + 1, col + 1), sink)
                    # raw stays None: the span starts at the tag, not at the value's text
                if ev.anchor:
                    raw = None  # the span starts at the anchor, not at the value's text
                node = new_scalar(Scalar)
                node.value = value
                node.style = kind or style
                node.raw = raw
                node._span = None
                node._file = name
                node._line = line
                node._col = col
                if ev.anchor:
                    anchors[ev.anchor] = (node, 1)
                # Attach to the open collection (inline: this is the hottest path).
                if not stack:
                    root = node
                    continue
                top = stack[-1]
                top.size += 1
                if not top.is_map:
                    top.items.append(node)
                elif top.pending_key is None:
                    top.pending_key = node
                else:
                    key = top.pending_key
                    top.pending_key = None
                    if key.style == "<<":
                        top.merges.append((key, node))
                        continue
                    ktext = key.value
                    if ktext.__class__ is not str or (
                        not key.style and key.raw is not None and key.raw.strip() is not ktext
                    ):
                        self.put(top, key, node)  # the key's text differs from its value
                        continue
                    index = top.node._index  # type: ignore[union-attr]
                    if ktext in index:
                        self.put(top, key, node)
                        continue
                    index[ktext] = len(top.items)
                    top.items.append((key, node))
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                mark = ev.start_mark
                if len(stack) >= MAX_DEPTH:
                    raise _Budget(f"YAML nested more than {MAX_DEPTH} levels deep", self.span(mark))
                is_map = cls is MappingStartEvent
                if (
                    ev.tag is not None
                    and ev.tag != "!"
                    and ev.tag != (_MAP_TAG if is_map else _SEQ_TAG)
                ):
                    sink.error("E005", f"unsupported YAML tag {ev.tag!r}", self.span(mark))
                coll: Mapping | Sequence
                if is_map:
                    coll = new_mapping(Mapping)
                    coll._index = {}
                else:
                    coll = new_sequence(Sequence)
                coll.items = []
                coll._span = None
                coll._file = name
                coll._line = mark.line
                coll._col = mark.column
                stack.append(_Frame(coll, is_map, ev.anchor))
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    self.finish_mapping(frame)
                if frame.anchor:
                    anchors[frame.anchor] = (frame.node, frame.size)
                if self.add(stack, frame.node, frame.size) is not None:
                    root = frame.node
            elif cls is AliasEvent:
                span = self.span(ev.start_mark)
                if ev.anchor not in anchors:
                    sink.error("E001", f"malformed YAML: unknown alias {ev.anchor!r}", span)
                    missing = Scalar(None, span)
                    if self.add(stack, missing, 1) is not None:
                        root = missing
                    continue
                target, size = anchors[ev.anchor]
                alias_nodes += size
                if alias_nodes > MAX_ALIAS_NODES:
                    raise _Budget(
                        f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes; "
                        "refusing to expand them",
                        span,
                    )
                if self.add(stack, target, size) is not None:
                    root = target
            elif cls is DocumentEndEvent:
                if root is not None and not (isinstance(root, Scalar) and root.value is None):
                    docs.append(root)
                stack, anchors, alias_nodes, root = [], {}, 0, None
            elif ev is None or cls is StreamEndEvent:
                return


def _scalar(value: object, style: str, raw: str | None, span: Span) -> Scalar:
    return Scalar(value, span, style, raw)


ScalarEvent = yaml.ScalarEvent
MappingStartEvent = yaml.MappingStartEvent
MappingEndEvent = yaml.MappingEndEvent
SequenceStartEvent = yaml.SequenceStartEvent
SequenceEndEvent = yaml.SequenceEndEvent
AliasEvent = yaml.AliasEvent
DocumentEndEvent = yaml.DocumentEndEvent
StreamEndEvent = yaml.StreamEndEvent


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
    from compiler.frontend.yaml_fast import fast_documents  # imports this module

    with paused_gc():  # the node tree is acyclic: see compiler/perf.py
        fast = fast_documents(text, name)
    if fast is not None:
        return fast
    return _event_documents(text, name, sink)


def _event_documents(text: str, name: str, sink: DiagnosticSink) -> list[Node]:
    """:func:`load_documents` through libyaml's event stream (any YAML, with diagnostics)."""
    reader = _Reader(name, text, sink)
    docs: list[Node] = []
    loader = _LOADER(text)
    try:
        with paused_gc():  # the node tree is acyclic: see compiler/perf.py
            reader.documents(loader.get_event, docs)
    except _Budget as e:
        sink.error("E006", e.message, e.span)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(name, mark.line + 1, mark.column + 1) if mark else Span(name, 1, 1)
        if "nesting depth" in str(e.problem or e.context or ""):
            # Newer libyaml (PyYAML >= 6.0.4) stops deep nesting itself, before our own
            # MAX_DEPTH check sees it: the same budget error either way.
            sink.error("E006", f"YAML nested more than {MAX_DEPTH} levels deep", span)
            return docs
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
