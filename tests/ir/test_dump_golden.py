"""Golden IR dumps: ``tortie ir -f examples/<name>/`` for every example, as text.

A mismatch writes ``tests/ir/golden/<name>.ir.txt.actual`` next to the golden and fails with a
diff (accept with ``mv``); ``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens instead. Paths in the
dump are relative to the repository root, so the test runs from there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from tests.support.golden import assert_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = (
    sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    if (ROOT / "examples").is_dir()
    else []
)


@pytest.mark.parametrize("name", EXAMPLES)
def test_ir_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["ir", "-f", f"examples/{name}"])
    assert result.exit_code == 0, result.output
    assert_golden(result.stdout, GOLDEN / f"{name}.ir.txt")
