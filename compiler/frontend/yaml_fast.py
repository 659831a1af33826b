"""A fast reader for the plain block-style YAML that tools write (kubectl, PyYAML's dumper).

:func:`compiler.frontend.yaml_loader.load_documents` reads libyaml's event stream, which costs
two Python objects per event plus a ``Mark`` pair: at 10,000 pods that is 750,000 events and
most of the parse. Almost every real input is the same small subset of YAML, one line at a
time: block mappings and sequences by indentation, ``key: value`` with a plain or single-line
quoted scalar, ``- `` items, comments and ``---``. This module reads exactly that subset, line
by line, into the *same* node tree (same values, styles, ``raw`` text, lines and columns) and
returns ``None`` the moment it sees anything else — flow collections, anchors, aliases, tags,
block or multi-line scalars, escapes, tabs, CR, non-ASCII text, a key that is not a plain
string, a null value, a duplicate key, odd indentation... — so that the full loader reads the
file instead (and reports whatever is wrong with it). It never reports anything itself.

``tests/frontend/test_yaml_fast.py`` checks it against the libyaml path node by node, on every
YAML file of the repository and on generated documents.

The same reader exists in C (``_yaml_lines.c``, built by ``setup.py`` when a compiler is there,
about four times faster): :func:`_read` below is its specification, and the tests run every check
on both and compare the two with each other. :data:`IMPLEMENTATION` says which one is in use;
``TORTIE_PURE_PYTHON=1`` in the environment selects the Python reader.
"""

from __future__ import annotations

import os

from compiler.frontend.yaml_loader import (
    _RESOLVABLE_FIRST,
    MAX_DEPTH,
    Mapping,
    Node,
    Scalar,
    Sequence,
    _resolve_plain,
)

__all__ = ["IMPLEMENTATION", "fast_documents"]

try:
    if os.environ.get("TORTIE_PURE_PYTHON"):
        raise ImportError("TORTIE_PURE_PYTHON is set")
    from compiler.frontend import _yaml_lines  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time): the Python reader
    _yaml_lines = None
IMPLEMENTATION = "python" if _yaml_lines is None else "c"

# A plain scalar cannot start with these (YAML's c-indicators; '-', '?' and ':' only when a
# space or the end follows, checked separately; quotes are read as quoted scalars).
_BAD_FIRST = frozenset(",[]{}#&*!|>%@`")


class _Bail(Exception):
    """Not in the subset: the full loader reads this text."""


def _quoted(c: str, start: int) -> tuple[str, str, int]:
    """The quoted scalar at ``c[start]``: (value, style, end index past the closing quote)."""
    q = c[start]
    if q == '"':
        end = c.find('"', start + 1)
        if end < 0:
            raise _Bail
        value = c[start + 1 : end]
        if "\\" in value:
            raise _Bail  # escapes: leave them to libyaml
        return value, '"', end + 1
    parts = []
    i = start + 1
    while True:
        end = c.find("'", i)
        if end < 0:
            raise _Bail  # multi-line
        parts.append(c[i:end])
        if c.startswith("'", end + 1):
            parts.append("'")
            i = end + 2
            continue
        return "".join(parts), "'", end + 1


def fast_documents(text: str, name: str) -> list[Node] | None:
    """The documents of ``text`` as :func:`load_documents` reads them, or None when ``text``
    is outside the subset this reader knows (then nothing is returned, not even a prefix)."""
    if not text.isascii() or "\t" in text or "\r" in text:
        return None
    if _yaml_lines is not None:
        return _yaml_lines.read(
            text,
            name,
            Scalar,
            Mapping,
            Sequence,
            _resolve_plain,
            _RESOLVABLE_FIRST,
            _BAD_FIRST,
            MAX_DEPTH,
        )
    try:
        return _read(text, name)
    except (_Bail, RecursionError):
        return None


def _read(text: str, name: str) -> list[Node]:  # noqa: C901, PLR0912, PLR0915
    plain: dict[str, tuple[object, str]] = {}
    good_keys: set[str] = set()
    resolvable = _RESOLVABLE_FIRST
    bad_first = _BAD_FIRST
    new_scalar = Scalar.__new__
    new_mapping = Mapping.__new__
    new_sequence = Sequence.__new__
    docs: list[Node] = []
    # Open collections: [indent, is_map, node]; a mapping's indent is its keys' column, a
    # sequence's is its dashes' column.
    stack: list[list] = []
    root: Node | None = None
    # A key whose value is on the following lines: (its mapping's entry, key node, key column).
    pending: tuple[Mapping, Scalar, int] | None = None

    for lineno, line in enumerate(text.split("\n")):
        c = line.lstrip(" ")
        if not c:
            continue
        c0 = c[0]
        if c0 == "#":
            continue
        ind = len(line) - len(c)
        if c[-1] == " ":
            raise _Bail
        if ind == 0 and (c0 == "-" or c0 == "." or c0 == "%"):
            if c == "---":
                if pending is not None:
                    raise _Bail
                if root is not None:
                    docs.append(root)
                root = None
                stack = []
                continue
            if c.startswith(("--- ", "...", "%")):
                raise _Bail
        # -- where does this line go? ------------------------------------------------------
        dash = c0 == "-" and (len(c) == 1 or c[1] == " ")
        if pending is not None:
            pmap, pkey, pind = pending
            pending = None
            if ind > pind or (ind == pind and dash):
                if len(stack) >= MAX_DEPTH:
                    raise _Bail
                coll: Mapping | Sequence
                if dash:
                    coll = new_sequence(Sequence)
                    entry = [ind, False, coll]
                else:
                    coll = new_mapping(Mapping)
                    coll._index = {}
                    entry = [ind, True, coll]
                coll.items = []
                coll._span = None
                coll._file = name
                coll._line = lineno
                coll._col = ind
                pmap._index[pkey.value] = len(pmap.items)  # type: ignore[index]
                pmap.items.append((pkey, coll))
                stack.append(entry)
                top = entry
            else:
                raise _Bail  # a null value (or a scalar on the next line)
        elif not stack:
            if root is not None or ind != 0:
                raise _Bail
            coll = new_sequence(Sequence) if dash else new_mapping(Mapping)
            if not dash:
                coll._index = {}
            coll.items = []
            coll._span = None
            coll._file = name
            coll._line = lineno
            coll._col = 0
            root = coll
            top = [0, not dash, coll]
            stack.append(top)
        else:
            top = stack[-1]
            while top[0] != ind or top[1] is dash:  # else: the common case, same collection
                tind = top[0]
                if tind > ind or (
                    tind == ind
                    and not top[1]
                    and not dash
                    and len(stack) > 1
                    and stack[-2][0] == ind
                ):
                    stack.pop()
                    if not stack:
                        raise _Bail
                    top = stack[-1]
                    continue
                break
            if top[0] != ind or top[1] == dash:
                raise _Bail
        # -- the line's content -----------------------------------------------------------
        col = ind
        if dash:
            if len(c) == 1:
                raise _Bail  # "-" alone: item on the next lines
            j = 2
            while j < len(c) and c[j] == " ":
                j += 1
            c = c[j:]
            col = ind + j
            if c[0] == "#" or (c[0] == "-" and (len(c) == 1 or c[1] == " ")):
                raise _Bail
            seq = top[2]
            # A mapping in this item?
            first = c[0]
            if first == '"' or first == "'":
                value, style, end = _quoted(c, 0)
                rest = c[end:]
                if rest and not (rest.lstrip(" ").startswith("#") and rest[0] == " "):
                    raise _Bail  # a quoted key, or text after the closing quote
                node = new_scalar(Scalar)
                node.value = value
                node.style = style
                node.raw = c[:end]
                node._span = None
                node._file = name
                node._line = lineno
                node._col = col
                seq.items.append(node)
                continue
            k = c.find(": ")
            if k < 0 and c[-1] == ":":
                k = len(c) - 1
            if k < 0:
                # A plain scalar item.
                node = _plain(c, col, lineno, name, plain, resolvable, bad_first, new_scalar)
                seq.items.append(node)
                continue
            if len(stack) >= MAX_DEPTH:
                raise _Bail
            coll = new_mapping(Mapping)
            coll._index = {}
            coll.items = []
            coll._span = None
            coll._file = name
            coll._line = lineno
            coll._col = col
            seq.items.append(coll)
            top = [col, True, coll]
            stack.append(top)
        else:
            k = c.find(": ")
            if k < 0:
                if c[-1] != ":":
                    raise _Bail  # a scalar where a key belongs
                k = len(c) - 1
        # c[:k] is a key of the mapping ``top[2]``; the value starts after ": ".
        ktext = c[:k]
        if ktext not in good_keys:  # keys repeat: each distinct one is checked once
            _check_key(ktext, k, plain, resolvable, bad_first)
            good_keys.add(ktext)
        mapping = top[2]
        index = mapping._index
        if ktext in index:
            raise _Bail  # duplicate key: the full loader reports it
        key = new_scalar(Scalar)
        key.value = ktext
        key.style = ""
        key.raw = ktext
        key._span = None
        key._file = name
        key._line = lineno
        key._col = col
        j = k + 1
        n = len(c)
        while j < n and c[j] == " ":
            j += 1
        if j == n or c[j] == "#":
            pending = (mapping, key, col)
            continue
        vcol = col + j
        first = c[j]
        if first == '"' or first == "'":
            value, style, end = _quoted(c, j)
            rest = c[end:]
            if rest and not (rest[0] == " " and rest.lstrip(" ").startswith("#")):
                raise _Bail
            node = new_scalar(Scalar)
            node.value = value
            node.style = style
            node.raw = c[j:end]
            node._span = None
            node._file = name
            node._line = lineno
            node._col = vcol
        elif (first == "{" or first == "[") and (
            c.endswith(("{}", "[]"), j, j + 2) and (j + 2 == n or c[j + 2] == " ")
        ):
            # An empty flow collection ("podSelector: {}"), possibly with a comment after it.
            rest = c[j + 2 :]
            if rest and not rest.lstrip(" ").startswith("#"):
                raise _Bail
            if first == "{":
                node = new_mapping(Mapping)
                node._index = {}
            else:
                node = new_sequence(Sequence)
            node.items = []
            node._span = None
            node._file = name
            node._line = lineno
            node._col = vcol
        else:
            # A plain scalar (inline: the hottest path).
            v = c[j:] if j else c
            cut = v.find(" #")
            if cut >= 0:
                v = v[:cut].rstrip(" ")
            if first in bad_first or (
                (first == "-" or first == "?" or first == ":") and (len(v) == 1 or v[1] == " ")
            ):
                raise _Bail
            if v[-1] == ":" or ": " in v:
                raise _Bail  # libyaml: "mapping values are not allowed here"
            if first in resolvable:
                hit = plain.get(v)
                if hit is None:
                    hit = plain[v] = _resolve_plain(v)
                value, kind = hit
                if kind:
                    raise _Bail  # merge key or an unsupported tag
                raw = value if value.__class__ is str else v
            else:
                value = raw = v
            node = new_scalar(Scalar)
            node.value = value
            node.style = ""
            node.raw = raw
            node._span = None
            node._file = name
            node._line = lineno
            node._col = vcol
        index[ktext] = len(mapping.items)
        mapping.items.append((key, node))
    if pending is not None:
        raise _Bail
    if root is not None:
        docs.append(root)
    return docs


def _check_key(
    ktext: str,
    k: int,
    plain: dict[str, tuple[object, str]],
    resolvable: object,
    bad_first: frozenset[str],
) -> None:
    """Bail unless ``ktext`` is a plain key the event reader reads as the same string."""
    if not ktext or k > 1000 or ktext[-1] == " " or "#" in ktext:
        raise _Bail  # libyaml: no simple key longer than 1024 characters
    first = ktext[0]
    if first in bad_first or first == '"' or first == "'":
        raise _Bail
    if (first == "-" or first == "?" or first == ":") and (len(ktext) == 1 or ktext[1] == " "):
        raise _Bail
    if first in resolvable:  # type: ignore[operator]
        hit = plain.get(ktext)
        if hit is None:
            hit = plain[ktext] = _resolve_plain(ktext)
        if hit[1]:
            raise _Bail  # a merge key, or a tag the event reader reports
        # A key is its source text, even when it would resolve to something else ("on").


def _plain(
    v: str,
    col: int,
    lineno: int,
    name: str,
    plain: dict[str, tuple[object, str]],
    resolvable: object,
    bad_first: frozenset[str],
    new_scalar: object,
) -> Scalar:
    """The plain scalar ``v`` (the rest of a line, maybe with a trailing comment)."""
    cut = v.find(" #")
    if cut >= 0:
        v = v[:cut].rstrip(" ")
    first = v[0]
    if first in bad_first or first == '"' or first == "'":
        raise _Bail
    if (first == "-" or first == "?" or first == ":") and (len(v) == 1 or v[1] == " "):
        raise _Bail
    if ": " in v or v[-1] == ":":
        raise _Bail  # libyaml: "mapping values are not allowed here"
    if first in resolvable:  # type: ignore[operator]
        hit = plain.get(v)
        if hit is None:
            hit = plain[v] = _resolve_plain(v)
        value, kind = hit
        if kind:
            raise _Bail  # merge key or an unsupported tag
        raw = value if value.__class__ is str else v
    else:
        value = raw = v
    node = new_scalar(Scalar)  # type: ignore[operator]
    node.value = value
    node.style = ""
    node.raw = raw
    node._span = None
    node._file = name
    node._line = lineno
    node._col = col
    return node
