"""Output formats: the Markdown for a pull request is a golden file; text and JSON agree with it.

Goldens go through ``tests/support/golden.py``: a mismatch writes ``<golden>.actual`` next to
the golden; accepting a change is a ``mv`` (or run with ``TORTIE_UPDATE_GOLDENS=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.diff import render, semantic_diff
from compiler.diff.artifacts import diff_artifacts
from compiler.diff.staged import promote
from tests.diff.cluster import load
from tests.diff.test_cases import API, DB
from tests.diff.test_cli import STAGED
from tests.support.golden import assert_golden as _assert_golden

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(actual: str, name: str) -> None:
    _assert_golden(actual, GOLDEN / name)


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


def test_markdown_fits_a_pull_request_comment(monkeypatch) -> None:  # noqa: ANN001
    d = semantic_diff(load(API, DB % ""), load(API))
    full = render.markdown(d)
    monkeypatch.setattr(render, "COMMENT_LIMIT", len(full) // 2)
    short = render.markdown(d)
    assert len(short) <= len(full) // 2
    assert "more groups not shown; run `tortie diff -o json` for all." in short
