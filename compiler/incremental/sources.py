"""Per-file (and per-list-item) caching of the frontend for ``tortie agent``.

:class:`SourceCache` answers "what does ``load([root])`` give now?" without re-reading what did
not change:

1. **Scan**: every input file as :func:`compiler.frontend.sources.discover` would list it (same
   walk, order and names), with ``(size, mtime_ns)``. Files whose size and mtime are unchanged
   are not opened; the others are read and compared with their previous text (one memcmp),
   and a file whose text is unchanged is treated as unchanged. The SHA-256 of a text (the
   manifest's ``inputs``) is computed only when asked for (``LoadResult.hashes`` is lazy).
2. **Splice** (the fast path): a changed file is compared with its previous text (common
   prefix and suffix, compared in C); the changed characters are mapped to the items of its
   ``kind: List`` (or, for a small file, to the whole file), and only those items are parsed,
   before and after, with their spans moved to their lines in the file, so that every span is
   the one a full load gives. Anchors, aliases, tabs and CRs in the changed items, or a line
   count change with items after it, take the full path. When both versions hold only
   endpoints (pods,
   WorkloadEndpoints, HostEndpoints) and none of the cross-resource rules of the frontend's
   ``Collector`` can see the difference (no duplicate ids, every profile an endpoint names
   exists, no diagnostics), the endpoints are swapped in the previous ``ResourceSet``.
3. Otherwise (**full**): the frontend's schema stage runs over every file's YAML tree (with
   ``keep_trees``, re-parsing only the files whose text changed).

Either way the result equals ``load([root])``: same ``ResourceSet`` (dataclass equality), same
diagnostics, same input hashes. ``tests/property/test_incremental.py`` checks this on random
edits.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass, field

from compiler.diagnostics import Diagnostic, DiagnosticSink, Level, SourceRegistry
from compiler.frontend import load
from compiler.frontend.model import Endpoint, ResourceSet
from compiler.frontend.schema import read_documents
from compiler.frontend.sources import decode, walk
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, Sequence, load_documents

__all__ = ["LoadResult", "SourceCache"]

#: A file below this size that is not a ``kind: List`` is spliced as a whole.
SMALL_FILE = 256 * 1024
#: Diagnostics of the frontend's cross-resource checks that name *some* endpoint: a splice
#: could change which one, so a load that has them is never spliced.
_CROSS_CODES = frozenset({"W004", "W007", "W009"})


def _empty_resources() -> ResourceSet:
    return read_documents([], DiagnosticSink())


_versions = itertools.count(1)


@dataclass
class _File:
    name: str
    size: int
    mtime: int
    text: str
    # Which text this is: a new number for every text read that differs from the previous one
    # (two loads with the same versions read the same texts; :meth:`SourceCache.peek`).
    version: int = field(default_factory=lambda: next(_versions))
    docs: list[Node] | None = None  # YAML trees of the current text (None: parse again)
    diags: list[Diagnostic] = field(default_factory=list)  # the YAML stage's, for ``docs``
    # The items of the file's single ``v1 List`` (None when the file is not one such list).
    units: _Units | None = None
    _digest: str | None = None  # SHA-256 of ``text``, computed when first asked for

    @property
    def sha(self) -> str:
        if self._digest is None:
            self._digest = _sha(self.text)
        return self._digest


@dataclass(frozen=True)
class LoadResult:
    resources: ResourceSet
    diagnostics: tuple[Diagnostic, ...]
    hashes: Mapping_[str, str]  # file name -> SHA-256 of its text (the manifest's ``inputs``)
    path: str  # "unchanged" | "splice" | "full" | "load"
    changed: tuple[str, ...]  # names of the files that changed
    # Splice only: (old endpoints, new endpoints) that were swapped.
    removed: tuple[Endpoint, ...] = ()
    added: tuple[Endpoint, ...] = ()
    reason: str = ""  # why the splice was not taken
    base: ResourceSet | None = None  # splice / unchanged: the resources this load started from

    @property
    def has_errors(self) -> bool:
        return any(d.level is Level.ERROR for d in self.diagnostics)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _line_starts(text: str, lines: list[int]) -> list[int]:
    """Character offset of the start of each of ``lines`` (0-based, ascending)."""
    out = []
    pos, line = 0, 0
    for want in lines:
        while line < want:
            nl = text.find("\n", pos)
            if nl < 0:
                pos = len(text)
                break
            pos, line = nl + 1, line + 1
        out.append(pos)
    return out


@dataclass(frozen=True)
class _Units:
    """Where the items of a file's ``v1 List`` start: their character offsets and 0-based
    lines, each list ending with where the items end (so ``len - 1`` items). Never mutated:
    a splice builds new lists (two lists of ints, not a list of tuples, so that shifting the
    items after a change is a C-level map, not 10,000 tuples)."""

    offsets: list[int]
    lines: list[int]


def _list_units(docs: list[Node], text: str) -> _Units | None:
    """The offsets and 0-based lines of the start of every item, then of the end of the
    items, when the file is one ``apiVersion: v1, kind: List`` document whose items are
    block-sequence mappings (``- key: ...``) that are not lists themselves."""
    if len(docs) != 1 or not isinstance(docs[0], Mapping):
        return None
    top = docs[0]
    av, kind, items = top.get("apiVersion"), top.get("kind"), top.get("items")
    if not (isinstance(av, Scalar) and av.value == "v1" and av.style == ""):
        return None
    if not (isinstance(kind, Scalar) and kind.value == "List" and kind.style == ""):
        return None
    if not isinstance(items, Sequence) or not items.items:
        return None
    starts = []
    for item in items.items:
        if not isinstance(item, Mapping):
            return None
        k = item.get("kind")
        if not isinstance(k, Scalar) or str(k.value).endswith("List"):
            return None
        starts.append((item.span.line - 1, item.span.col - 1))
    if [x for x, _ in starts] != sorted({x for x, _ in starts}):
        return None
    last = starts[-1][0]
    after = [k.span.line - 1 for k, _ in top.items if k.span.line - 1 > last]
    total = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    end = min(after) if after else total
    offsets = _line_starts(text, [x for x, _ in starts] + [end])
    for (_, col), off in zip(starts, offsets, strict=False):
        if col < 2 or text[off : off + col].strip() != "-":
            return None  # not "<indent>- key: ..." (JSON, flow style, "- - ")
    return _Units(offsets, [x for x, _ in starts] + [end])


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix (block compares in C, then a bisection)."""
    n = min(len(a), len(b))
    step = 1 << 16
    i = 0
    while i < n and a[i : i + step] == b[i : i + step]:
        i += step
    lo, hi = i, min(i + step, n)
    while lo < hi:  # a[:lo] == b[:lo]; find the first difference in [lo, hi)
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    n = min(len(a), len(b), limit)
    step = 1 << 16
    i = 0
    while (
        i < n
        and a[len(a) - min(i + step, n) : len(a) - i] == b[len(b) - min(i + step, n) : len(b) - i]
    ):
        i = min(i + step, n)
    lo, hi = i, min(i + step, n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid : len(a) - lo] == b[len(b) - mid : len(b) - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _NoSplice(Exception):
    pass


def _file_chunk(f: _File | None) -> str:
    return f.text if f is not None else ""


class SourceCache:
    """The frontend's inputs under ``root``, cached between loads.

    ``keep_trees``: keep every file's YAML tree, so that a change the splice cannot take
    re-parses only the changed files. Off by default: at 10,000 policies x 10,000 pods the
    trees hold ~90 MB for the agent's whole life (peak 521 MB instead of 431 MB), and they
    only speed up the rarer changes (policies, namespaces) that take the full compile anyway.
    """

    keep_trees = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.files: dict[str, _File] = {}
        self.last: LoadResult | None = None  # the last good (error-free) load
        # Large trees a splice made stale: freeing 750,000 nodes takes 0.1 s, so it waits for
        # :meth:`release` (the agent calls it after the apply).
        self._trash: list[object] = []
        self._peeked: tuple[dict[str, _File], list[str], bool] | None = None

    def release(self) -> None:
        """Free what the last load no longer needs."""
        self._trash.clear()

    # -- scanning --------------------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, _File], list[str], bool]:
        """(current files, names of changed ones, whether a plain ``load`` must be used)."""
        names = walk(self.root) if os.path.isdir(self.root) else []
        out: dict[str, _File] = {}
        changed: list[str] = []
        seen: set[str] = set()
        for name in names:
            key = os.path.realpath(name)
            if key in seen:
                return out, changed, True  # two names for one file: let discover decide
            seen.add(key)
            try:
                st = os.stat(name)
            except OSError:
                return out, changed, True
            prev = self.files.get(name)
            if prev is not None and (prev.size, prev.mtime) == (st.st_size, st.st_mtime_ns):
                out[name] = prev
                continue
            try:
                with open(name, "rb") as fh:
                    data = fh.read()
            except OSError:
                return out, changed, True
            text = decode(data, name, DiagnosticSink())
            if text is None:
                return out, changed, True
            if prev is not None and prev.text == text:  # one memcmp; no hash needed
                out[name] = dataclasses.replace(prev, size=st.st_size, mtime=st.st_mtime_ns)
                continue
            out[name] = _File(name, st.st_size, st.st_mtime_ns, text)
            changed.append(name)
        changed += [n for n in self.files if n not in out]  # removed files
        return out, changed, not names

    def peek(self) -> tuple[tuple[str, int], ...] | None:
        """(name, text version) of every input file now (None: unreadable, a plain load will
        tell): equal answers mean the same texts. Reads only the files whose size or mtime
        changed (a file whose bytes did not change keeps its version), and keeps what it read
        for the next :meth:`load`."""
        files, changed, plain = self._scan()
        self._peeked = (files, changed, plain)
        if plain:
            return None
        if not changed:
            self.files = files  # only stat information changed
            self._peeked = None
        return tuple((f.name, f.version) for f in files.values())

    def changed(self) -> bool:
        """Cheap check (stat only): did any input file appear, go, or change size or mtime?"""
        names = walk(self.root) if os.path.isdir(self.root) else []
        if set(names) != set(self.files):
            return True
        for name in names:
            try:
                st = os.stat(name)
            except OSError:
                return True
            f = self.files[name]
            if (f.size, f.mtime) != (st.st_size, st.st_mtime_ns):
                return True
        return False

    # -- loading ---------------------------------------------------------------------------

    def load(self, allow_splice: bool = True) -> LoadResult:
        """What ``compiler.frontend.load([root])`` returns now, computed incrementally."""
        peeked, self._peeked = self._peeked, None
        files, changed, plain = peeked if peeked is not None else self._scan()
        if plain:
            return self._plain(files, changed)
        prev = self.last
        if prev is not None and not changed and set(files) == set(self.files):
            self.files = files
            return dataclasses.replace(
                prev,
                path="unchanged",
                changed=(),
                removed=(),
                added=(),
                base=prev.resources,
            )
        reason = "no previous load" if prev is None else "splicing disabled"
        if prev is not None and allow_splice:
            try:
                return self._splice(prev, files, changed)
            except _NoSplice as e:
                reason = str(e)
        return self._full(files, changed, reason)

    def _plain(self, files: dict[str, _File], changed: list[str]) -> LoadResult:
        sink = DiagnosticSink()
        sources = _Hashing()
        rs = load([self.root], sink, sources)
        self.files = {}  # nothing trusted: the next load reads everything
        result = LoadResult(
            rs, tuple(sink.diagnostics), dict(sources.hashes), "load", tuple(changed)
        )
        self.last = None
        return result

    def _full(self, files: dict[str, _File], changed: list[str], reason: str) -> LoadResult:
        sink = DiagnosticSink()
        docs: list[Node] = []
        for f in files.values():
            if f.docs is None:
                sub = DiagnosticSink()
                f.docs = load_documents(f.text, f.name, sub)
                f.diags = list(sub.diagnostics)
                f.units = _list_units(f.docs, f.text)
            sink.diagnostics.extend(f.diags)
            docs.extend(f.docs)
        rs = read_documents(docs, sink)
        if not self.keep_trees:
            for f in files.values():
                f.docs = None
        self.files = files
        result = LoadResult(
            rs,
            tuple(sink.diagnostics),
            _Hashes(files.values()),
            "full",
            tuple(changed),
            reason=reason,
        )
        self.last = result if not sink.has_errors else None
        return result

    # -- the splice ------------------------------------------------------------------------

    def _splice(self, prev: LoadResult, files: dict[str, _File], changed: list[str]) -> LoadResult:
        if any(d.level is Level.ERROR or d.code in _CROSS_CODES for d in prev.diagnostics):
            raise _NoSplice("the previous load had errors or cross-resource warnings")
        rs = prev.resources
        removed: list[Endpoint] = []
        added: list[Endpoint] = []
        kinds = Counter(dict(rs.kind_counts))
        skipped = Counter(dict(rs.skipped))
        updates: dict[str, _File] = {}
        for name in changed:
            old, new = self.files.get(name), files.get(name)
            old_chunk, new_chunk, units = self._chunks(old, new, prev)
            for sign, chunk in ((-1, old_chunk), (1, new_chunk)):
                part, eps = _mini(name, chunk)
                for k, n in part.kind_counts:
                    kinds[k] += sign * n
                for k, n in part.skipped:
                    skipped[k] += sign * n
                (removed if sign < 0 else added).extend(eps)
            if old is not None and old.docs is not None:
                self._trash.append(old.docs)
            if new is not None:
                new.units = units
                new.docs = None  # parsed again if a full load is ever needed
                updates[name] = new
        endpoints = _swap(rs, removed, added)
        kind_counts = tuple(sorted((k, n) for k, n in kinds.items() if n > 0))
        if any(n < 0 for n in kinds.values()) or any(n < 0 for n in skipped.values()):
            raise _NoSplice("kind counts went negative")
        resources = dataclasses.replace(
            rs,
            endpoints=endpoints,
            kind_counts=kind_counts,
            skipped=tuple(sorted((k, n) for k, n in skipped.items() if n > 0)),
        )
        files.update(updates)
        self.files = files
        result = LoadResult(
            resources,
            prev.diagnostics,
            _Hashes(files.values()),
            "splice",
            tuple(changed),
            tuple(removed),
            tuple(added),
            base=rs,
        )
        self.last = result
        return result

    def _chunks(
        self, old: _File | None, new: _File | None, prev: LoadResult
    ) -> tuple[str, str, _Units | None]:
        """The old and new text of the changed part of one file, padded with newlines to its
        line in the file, and the new file's list units."""
        if old is None or new is None or old.units is None:
            for f in (old, new):
                if f is not None and len(f.text) > SMALL_FILE:
                    raise _NoSplice(f"{f.name}: a large file that is not a v1 List changed")
            name = (old or new).name  # type: ignore[union-attr]
            if any(d.span.file == name for d in prev.diagnostics):
                raise _NoSplice(f"{name} has diagnostics")
            units = None
            if new is not None:
                units = _list_units(load_documents(new.text, new.name, DiagnosticSink()), new.text)
            return _file_chunk(old), _file_chunk(new), units
        a, b = old.text, new.text
        p = _common_prefix(a, b)
        sfx = _common_suffix(a, b, min(len(a), len(b)) - p)
        q = len(a) - sfx  # old characters [p, q) became new characters [p, len(b) - sfx)
        delta = len(b) - len(a)
        offs, lines = old.units.offsets, old.units.lines
        n = len(offs) - 1  # items; offs[n], lines[n]: where they end
        if p < offs[0] or q > offs[n]:
            raise _NoSplice(f"{old.name}: the change is outside the list's items")
        i = bisect.bisect_right(offs, p, 0, n) - 1  # the first changed item
        j = max(i, bisect.bisect_left(offs, q, 1, n + 1) - 1)  # the last one
        lo, lo_line, hi = offs[i], lines[i], offs[j + 1]
        old_chunk, new_chunk = a[lo:hi], b[lo : hi + delta]
        line_delta = new_chunk.count("\n") - old_chunk.count("\n")
        if line_delta and j != n - 1:
            raise _NoSplice(f"{old.name}: lines moved under later items")
        if any(d.span.file == old.name for d in prev.diagnostics):
            raise _NoSplice(f"{old.name} has diagnostics")
        for t in (old_chunk, new_chunk):
            if "&" in t or "*" in t or "\t" in t or "\r" in t:
                raise _NoSplice(f"{old.name}: anchors, aliases, tabs or CRs in the changed items")
        old_text = _Chunk(old_chunk, lo_line)
        new_text = _Chunk(new_chunk, lo_line)
        # New unit boundaries: the re-parsed items' lines, later ones shifted (only their
        # offsets: lines move only when the change is in the last item).
        docs = new_text.items(old.name)
        mid_lines = [it.span.line - 1 - lo_line for it in docs]
        if any(m < 0 for m in mid_lines):
            raise _NoSplice(f"{old.name}: unexpected item lines")
        mid_offs = [lo + o for o in _line_starts(new_chunk, mid_lines)]
        later = offs[j + 1 :]
        if delta:
            later = list(map(delta.__add__, later))
        new_offs = offs[:i] + mid_offs + later
        new_lines = lines[:i] + [lo_line + m for m in mid_lines] + lines[j + 1 :]
        new_lines[-1] += line_delta
        if len(new_offs) == 1:  # no items left
            return old_text, new_text, None
        return old_text, new_text, _Units(new_offs, new_lines)


def _shift(root: Node, lines: int) -> None:
    """Move every span of a tree ``lines`` lines down (a chunk parsed out of its file)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node._span is None:
            node._line += lines
        else:
            sp = node._span
            node._span = dataclasses.replace(
                sp, line=sp.line + lines, end_line=sp.end_line + lines if sp.end_line else 0
            )
        if isinstance(node, Mapping):
            for k, v in node.items:
                stack.append(k)
                stack.append(v)
        elif isinstance(node, Sequence):
            stack.extend(node.items)


class _Chunk(str):
    """Text of consecutive list items that starts at line ``line0`` (0-based) of its file."""

    line0: int
    _items: list[Node] | None

    def __new__(cls, text: str, line0: int) -> _Chunk:
        obj = super().__new__(cls, text)
        obj.line0 = line0
        obj._items = None
        return obj

    def items(self, name: str) -> list[Node]:
        if self._items is None:
            self._items = _parse_items(name, str(self), self.line0)
        return self._items


def _parse_items(name: str, text: str, line0: int) -> list[Node]:
    """The items of a chunk of a block sequence (no diagnostics allowed), with the spans they
    have in the whole file."""
    sink = DiagnosticSink()
    docs = load_documents(text, name, sink)
    if docs and line0:
        for d in docs:
            _shift(d, line0)
    if sink.diagnostics:
        raise _NoSplice(f"{name}: the changed items do not parse on their own")
    if not docs:
        return []
    if len(docs) != 1 or not isinstance(docs[0], Sequence):
        raise _NoSplice(f"{name}: the changed lines are not list items")
    for item in docs[0].items:
        if not isinstance(item, Mapping):
            raise _NoSplice(f"{name}: a list item is not a resource")
        k = item.get("kind")
        if not isinstance(k, Scalar) or str(k.value).endswith("List"):
            raise _NoSplice(f"{name}: a list item is a list")
    return list(docs[0].items)


_EMPTY: ResourceSet | None = None


def _mini(name: str, chunk: str) -> tuple[ResourceSet, tuple[Endpoint, ...]]:
    """Resources of a chunk (a padded list slice or a whole small file) that must be endpoints
    only, read without any diagnostic but the missing-profile warnings (checked later)."""
    global _EMPTY
    if _EMPTY is None:
        _EMPTY = _empty_resources()
    if not chunk.strip():
        return _EMPTY, ()
    if isinstance(chunk, _Chunk):
        docs = chunk.items(name)
    else:
        sink = DiagnosticSink()
        docs = load_documents(chunk, name, sink)
        if sink.diagnostics:
            raise _NoSplice(f"{name} has YAML diagnostics")
    sink = DiagnosticSink()
    part = read_documents(docs, sink)
    if any(d.code not in ("W004", "W009") for d in sink.diagnostics):
        raise _NoSplice(f"{name}: the changed resources have diagnostics")
    rest = dataclasses.replace(part, endpoints=(), kind_counts=(), skipped=())
    if rest != _EMPTY:
        raise _NoSplice(f"{name}: resources other than endpoints changed")
    return part, part.endpoints


def _key(e: Endpoint) -> tuple[str, str, str]:
    return (e.kind, e.id, e.name)


def _swap(rs: ResourceSet, removed: list[Endpoint], added: list[Endpoint]) -> tuple[Endpoint, ...]:
    """``rs.endpoints`` without ``removed`` and with ``added``, in the frontend's order (by
    kind, id, name), or _NoSplice when the frontend's cross-resource checks could tell the
    difference. Binary searches only: the endpoints are sorted."""
    out = list(rs.endpoints)
    for e in removed:
        i = bisect.bisect_left(out, _key(e), key=_key)
        if i >= len(out) or out[i] != e:
            raise _NoSplice(f"endpoint {e.id} is not what the file held")
        del out[i]
    kinds = ("HostEndpoint", "WorkloadEndpoint")
    profiles = {p.name for p in rs.profiles}
    new_ids: set[str] = set()
    for e in added:
        eid = e.id
        if eid in new_ids or any(_has_id(out, k, eid) for k in kinds):
            raise _NoSplice(f"endpoint {eid} is defined twice")
        new_ids.add(eid)
        if any(p not in profiles and not p.startswith("ksa.") for p in e.profiles):
            raise _NoSplice(f"endpoint {eid} names a missing profile")
    for e in added:
        bisect.insort(out, e, key=_key)
    return tuple(out)


def _has_id(endpoints: list[Endpoint], kind: str, eid: str) -> bool:
    i = bisect.bisect_left(endpoints, (kind, eid), key=lambda e: (e.kind, e.id))
    return i < len(endpoints) and endpoints[i].kind == kind and endpoints[i].id == eid


class _Hashes(Mapping_):
    """file name -> SHA-256 of its text, each hashed when first asked for (the agent's fast
    path never asks: hashing the pods file alone costs ~5 ms a change)."""

    def __init__(self, files: Iterable[_File]) -> None:
        self._files = {f.name: f for f in files}

    def __getitem__(self, name: str) -> str:
        return self._files[name].sha

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Hashing(SourceRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.hashes: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        super().add(name, text)
        self.hashes[name] = _sha(text)


class _LazyRegistry(SourceRegistry):
    """Splits a file into lines only when a diagnostic in it is rendered."""

    def __init__(self, texts: dict[str, str]) -> None:
        super().__init__()
        self._texts = texts

    def line(self, name: str, lineno: int) -> str | None:
        if name not in self._lines and name in self._texts:
            self._lines[name] = self._texts[name].splitlines()
        return super().line(name, lineno)


def registry(cache: SourceCache) -> SourceRegistry:
    """A SourceRegistry of the cached texts (to render diagnostics with their lines)."""
    return _LazyRegistry({f.name: f.text for f in cache.files.values()})
