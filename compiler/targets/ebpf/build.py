"""Build the rendered C with clang, once per distinct program, in parallel.

Objects are content-addressed (``render.object_name``), so endpoints that share a policy list
share an object and the build cost grows with distinct policy lists, not with endpoints. The
build runs in a private temporary directory with relative paths, so the objects do not depend
on where they were built (see ``compiler/tools/clang.py``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.tools import clang


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


def build_all(
    sources: Mapping[str, str], headers: Mapping[str, bytes], *, jobs: int | None = None
) -> dict[str, bytes]:
    """``{name: C source}`` -> ``{name: object bytes}``; clang runs in a thread pool.

    Names are content addresses (C and headers), so objects built earlier in this process are
    reused as they are (an agent recompiling after a change rebuilds only what changed)."""
    done = {name: obj for name in sources if (obj := _cached(name)) is not None}
    sources = {name: src for name, src in sources.items() if name not in done}
    if not sources:
        return dict(sorted(done.items()))
    with tempfile.TemporaryDirectory(prefix="tortie-bpf-") as tmp:
        root = Path(tmp)
        (root / "include").mkdir()
        (root / "obj").mkdir()
        for name, data in headers.items():
            (root / "include" / name).write_bytes(data)
        for name, text in sources.items():
            (root / f"{name}.bpf.c").write_text(text)

        def one(name: str) -> tuple[str, bytes]:
            try:
                clang.compile_bpf(f"{name}.bpf.c", f"obj/{name}.bpf.o", ["include"], cwd=tmp)
            except clang.ClangError as e:
                raise BuildError(name, e) from None
            obj = (root / "obj" / f"{name}.bpf.o").read_bytes()
            _remember(name, obj)
            return name, obj

        workers = jobs or min(len(sources), os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            results = list(pool.map(one, sorted(sources)))
    return dict(sorted([*done.items(), *results]))
