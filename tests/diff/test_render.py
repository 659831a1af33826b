"""Output formats: the Markdown for a pull request is a golden file; text and JSON agree with it.

On a mismatch the test writes ``<golden>.actual`` next to the golden; accepting a change is a
``mv`` (or run with ``TORTIE_UPDATE_GOLDENS=1``).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from compiler.diff import render, semantic_diff
from compiler.diff.artifacts import diff_artifacts
from compiler.diff.staged import promote
from tests.diff.cluster import load
from tests.diff.test_cases import API, DB
from tests.diff.test_cli import STAGED

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(actual: str, name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TORTIE_UPDATE_GOLDENS"):
        path.write_text(actual)
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        path.with_name(path.name + ".actual").write_text(actual)
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(path), "actual"
            )
        )
        raise AssertionError(f"{name} differs from the golden (wrote {path.name}.actual):\n{diff}")


def test_markdown_golden() -> None:
    base = load(API, DB % "")
    head = load(API.replace("port: 8080}", "port: 8080, endPort: 8090}"))
    assert_golden(render.markdown(semantic_diff(base, head)), "policy_change.md")


def test_markdown_truncates_beyond_max_groups() -> None:
    d = semantic_diff(load(API, DB % ""), load(API))
    assert len(d.groups) == 5
    assert_golden(render.markdown(d, max_groups=2), "truncated.md")
    text = render.text(d, max_groups=2)
    assert "… 3 more groups not shown (--max-groups, or -o json for all)" in text


def test_markdown_with_staged_and_artifacts() -> None:
    base = load(API, STAGED)
    head, notes = promote(base)
    nft = b"table inet t {\n  set s {\n    type ipv4_addr\n    elements = { 10.0.0.1 }\n  }\n}\n"
    art = diff_artifacts(
        "nftables", "node1", {"a.nft": nft}, {"a.nft": nft.replace(b"10.0.0.1", b"10.0.0.2")}
    )
    assert_golden(
        render.markdown(semantic_diff(base, head), art, notes, max_groups=3), "staged_artifacts.md"
    )


def test_no_change() -> None:
    d = semantic_diff(load(API), load(API))
    assert render.markdown(d) == "### Tortie policy diff\n\n**no change in connectivity**\n"
    assert render.text(d) == "tortie diff: no change in connectivity\n"
    assert json.loads(json.dumps(render.as_json(d)))["changed"] is False
