"""Golden IR dumps: ``tortie ir -f examples/<name>/`` for every example, as text.

A mismatch writes ``tests/ir/golden/<name>.ir.txt.actual`` next to the golden and fails with a
diff (accept with ``mv``); ``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens instead. Paths in the
dump are relative to the repository root, so the test runs from there.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = (
    sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    if (ROOT / "examples").is_dir()
    else []
)
UPDATE = os.environ.get("TORTIE_UPDATE_GOLDENS") == "1"


def assert_golden(actual: str, path: Path) -> None:
    stale = path.with_name(path.name + ".actual")
    if UPDATE:
        path.write_text(actual)
        stale.unlink(missing_ok=True)
        return
    expected = path.read_text() if path.exists() else ""
    if actual == expected:
        stale.unlink(missing_ok=True)
        return
    stale.write_text(actual)
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(True), actual.splitlines(True), str(path), str(stale)
        )
    )
    pytest.fail(
        f"{path.name} differs (accept with: mv {stale} {path}, or TORTIE_UPDATE_GOLDENS=1)\n"
        f"{diff[:6000]}"
    )


@pytest.mark.parametrize("name", EXAMPLES)
def test_ir_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["ir", "-f", f"examples/{name}"])
    assert result.exit_code == 0, result.output
    assert_golden(result.stdout, GOLDEN / f"{name}.ir.txt")
