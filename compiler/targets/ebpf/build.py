"""Build the rendered C with clang, once per distinct program, in parallel.

Objects are content-addressed (``render.object_name``), so endpoints that share a policy list
share an object and the build cost grows with distinct policy lists, not with endpoints. The
build runs in a private temporary directory with relative paths, so the objects do not depend
on where they were built (see ``compiler/tools/clang.py``).
"""

from __future__ import annotations

import os
import tempfile
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


def build_all(
    sources: Mapping[str, str], headers: Mapping[str, bytes], *, jobs: int | None = None
) -> dict[str, bytes]:
    """``{name: C source}`` -> ``{name: object bytes}``; clang runs in a thread pool."""
    if not sources:
        return {}
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
            return name, (root / "obj" / f"{name}.bpf.o").read_bytes()

        workers = jobs or min(len(sources), os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            results = list(pool.map(one, sorted(sources)))
    return dict(results)
