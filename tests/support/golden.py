"""Golden files: compare text with a file kept in the tree, and make accepting a change a ``mv``.

A mismatch (or a missing golden) writes ``<golden>.actual`` next to the golden and fails with a
unified diff; ``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens instead. A match removes a stale
``.actual`` left by an earlier run.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

UPDATE = os.environ.get("TORTIE_UPDATE_GOLDENS") == "1"


def assert_golden(actual: str, path: Path) -> None:
    stale = path.with_name(path.name + ".actual")
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        stale.unlink(missing_ok=True)
        return
    expected = path.read_text() if path.exists() else ""
    if actual == expected:
        stale.unlink(missing_ok=True)
        return
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(actual)
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(True), actual.splitlines(True), str(path), str(stale)
        )
    )
    pytest.fail(
        f"{path.name} differs from the golden; wrote {stale.name} "
        f"(accept with: mv {stale} {path}, or TORTIE_UPDATE_GOLDENS=1)\n{diff[:6000]}"
    )
