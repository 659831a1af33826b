"""Build the rendered C with clang, once per distinct program, in parallel.

Objects are content-addressed (``render.object_name``), so endpoints that share a policy list
share an object and the build cost grows with distinct policy lists, not with endpoints. The
build runs in a private temporary directory with relative paths, so the objects do not depend
on where they were built (see ``compiler/tools/clang.py``). The entry program, the same for all
objects of a kind, is compiled once and linked in (``build_all``'s ``entries``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.tools import bpftool, clang


class BuildError(RuntimeError):
    """clang rejected a rendered program: a bug in the target or its headers, never a user
    error (user input only reaches the C as numbers and sanitised comments)."""

    def __init__(self, name: str, error: clang.ClangError) -> None:
        self.name = name
        self.stderr = error.stderr
        self.argv = error.argv
        super().__init__(f"building {name}: {error}")


_CACHE: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_CACHE_MAX = 512
_CACHE_LOCK = threading.Lock()
LINKED_ENTRY = "TORTIE_LINKED_ENTRY"


def _cached(name: str) -> bytes | None:
    with _CACHE_LOCK:
        key = (clang.version(), name)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    return None


def _remember(name: str, obj: bytes) -> None:
    with _CACHE_LOCK:
        _CACHE[(clang.version(), name)] = obj
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)


def can_link() -> bool:
    """Whether shared entry programs can be linked in (``bpftool gen object``, libbpf's static
    linker); without bpftool every object is compiled whole."""
    return bpftool.available()


def build_all(
    sources: Mapping[str, str],
    headers: Mapping[str, bytes],
    *,
    entries: Mapping[str, tuple[str, str]] | None = None,
    jobs: int | None = None,
) -> dict[str, bytes]:
    """``{name: C source}`` -> ``{name: object bytes}``; clang runs in a thread pool.

    ``entries`` maps a policy object to its entry program ``(name, C)``. The entry program
    (parse, conntrack: ~0.2 s of clang, a small policy's whole build) is the same for every
    policy object of a kind, so it is compiled once per kind and linked into each object whose
    own C is compiled without it (``-DTORTIE_LINKED_ENTRY``). Without bpftool the objects are
    compiled whole: the same programs, other bytes.

    Names are content addresses (C and headers), so objects built earlier in this process are
    reused as they are (an agent recompiling after a change rebuilds only what changed)."""
    link = bool(entries) and can_link()
    entries = entries if link and entries else {}
    mode = "+linked" if link else ""
    done = {name: obj for name in sources if (obj := _cached(name + mode)) is not None}
    sources = {name: src for name, src in sources.items() if name not in done}
    if not sources:
        return dict(sorted(done.items()))
    entry_src = {entries[n][0]: entries[n][1] for n in sources if n in entries}
    with tempfile.TemporaryDirectory(prefix="tortie-bpf-") as tmp:
        root = Path(tmp)
        (root / "include").mkdir()
        (root / "obj").mkdir()
        for name, data in headers.items():
            (root / "include" / name).write_bytes(data)
        for name, text in [*sources.items(), *entry_src.items()]:
            (root / f"{name}.bpf.c").write_text(text)

        def compile_one(name: str, out: str, defines: tuple[str, ...] = ()) -> Path:
            try:
                clang.compile_bpf(f"{name}.bpf.c", out, ["include"], cwd=tmp, defines=defines)
            except clang.ClangError as e:
                raise BuildError(name, e) from None
            return root / out

        def entry(name: str) -> tuple[str, bytes]:
            obj = _cached(name)
            if obj is None:
                obj = compile_one(name, f"obj/{name}.bpf.o").read_bytes()
                _remember(name, obj)
            else:
                (root / "obj" / f"{name}.bpf.o").write_bytes(obj)
            return name, obj

        def one(name: str) -> tuple[str, bytes]:
            out = root / "obj" / f"{name}.bpf.o"
            if name in entries:
                part = compile_one(name, f"obj/{name}.part.o", (LINKED_ENTRY,))
                linked_entry = root / "obj" / f"{entries[name][0]}.bpf.o"
                try:
                    bpftool.run(["gen", "object", str(out), str(part), str(linked_entry)])
                except bpftool.BpftoolError as e:
                    raise BuildError(
                        name, clang.ClangError(e.argv, e.returncode, e.stderr)
                    ) from None
            else:
                compile_one(name, f"obj/{name}.bpf.o")
            obj = out.read_bytes()
            _remember(name + mode, obj)
            return name, obj

        workers = jobs or min(len(sources), os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            list(pool.map(entry, sorted(entry_src)))
            results = list(pool.map(one, sorted(sources)))
    return dict(sorted([*done.items(), *results]))
