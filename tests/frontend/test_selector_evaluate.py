"""Evaluation against label sets (SEMANTICS.md §Selectors, Evaluation), absence included."""

from __future__ import annotations

import pytest

from compiler.frontend.selector import evaluate, parse

# (selector, labels, expected)
CASES: list[tuple[str, dict[str, str], bool]] = [
    # the SEMANTICS.md examples table
    ('role == "db" && tier != "test"', {"role": "db"}, True),
    ('env not in {"prod","stage",}', {}, True),
    ('app starts with "web-"', {}, False),
    ('app starts with "web-"', {"app": "web-1"}, True),
    ('x == "1" || y == "2" && z == "3"', {"y": "2"}, False),
    ('!(team == "a")', {}, True),
    ('(p == "1" && q == "2") && r == "3"', {"p": "1", "q": "2", "r": "3"}, True),
    ('k in {"b", "a", "b"}', {"k": "a"}, True),
    ("msg == 'a\"b'", {"msg": 'a"b'}, True),
    # ==
    ('k == "v"', {"k": "v"}, True),
    ('k == "v"', {"k": "w"}, False),
    ('k == "v"', {}, False),
    ('k == ""', {"k": ""}, True),
    ('k == ""', {}, False),
    # != is true when absent
    ('k != "v"', {"k": "v"}, False),
    ('k != "v"', {"k": "w"}, True),
    ('k != "v"', {}, True),
    ('k != ""', {"k": ""}, False),
    # in / not in
    ('k in {"a", "b"}', {"k": "b"}, True),
    ('k in {"a", "b"}', {"k": "c"}, False),
    ('k in {"a", "b"}', {}, False),
    ("k in {}", {"k": ""}, False),
    ('k not in {"a", "b"}', {"k": "a"}, False),
    ('k not in {"a", "b"}', {"k": "c"}, True),
    ('k not in {"a", "b"}', {}, True),
    ("k not in {}", {}, True),
    ("k not in {}", {"k": "x"}, True),
    # contains / starts with / ends with: "" matches any present value, absence is false
    ('k contains "ell"', {"k": "hello"}, True),
    ('k contains "elo"', {"k": "hello"}, False),
    ('k contains ""', {"k": ""}, True),
    ('k contains ""', {"k": "x"}, True),
    ('k contains ""', {}, False),
    ('k starts with "he"', {"k": "hello"}, True),
    ('k starts with "lo"', {"k": "hello"}, False),
    ('k starts with ""', {"k": ""}, True),
    ('k starts with ""', {}, False),
    ('k ends with "lo"', {"k": "hello"}, True),
    ('k ends with "he"', {"k": "hello"}, False),
    ('k ends with ""', {"k": "x"}, True),
    ('k ends with ""', {}, False),
    ('k starts with "hello!"', {"k": "hello"}, False),
    # has, all, global
    ("has(k)", {"k": "v"}, True),
    ("has(k)", {"k": ""}, True),
    ("has(k)", {}, False),
    ("has(k)", {"K": "v"}, False),
    ("all()", {}, True),
    ("all()", {"a": "b"}, True),
    ("!all()", {}, False),
    ("!all()", {"a": "b"}, False),
    ("global()", {}, True),
    ("!global()", {"a": "b"}, False),
    # negation is not absence
    ('!k == "v"', {}, True),
    ('!k == "v"', {"k": "w"}, True),
    ('!k == "v"', {"k": "v"}, False),
    ('!k != "v"', {}, False),
    ('!k != "v"', {"k": "v"}, True),
    ('!k in {"v"}', {}, True),
    ('!k not in {"v"}', {}, False),
    ("!has(k)", {}, True),
    ("!has(k)", {"k": ""}, False),
    ('!(!k == "v")', {"k": "v"}, True),
    ('!!k == "v"', {}, False),
    # byte-exact, case-sensitive comparison, no Unicode normalisation
    ('k == "V"', {"k": "v"}, False),
    ('K == "v"', {"k": "v"}, False),
    ('k == "é"', {"k": "e\u0301"}, False),
    ('k == "é"', {"k": "é"}, True),
    ('k contains "\u0301"', {"k": "e\u0301"}, True),
    ('k contains "é"', {"k": "caf\u00e9s"}, True),
    ('k starts with "日"', {"k": "日本"}, True),
    ('k == "v "', {"k": "v"}, False),
    ('k in {"a", "A"}', {"k": "a"}, True),
    # and / or
    ("has(a) && has(b)", {"a": "1"}, False),
    ("has(a) && has(b)", {"a": "1", "b": "2"}, True),
    ("has(a) || has(b)", {"b": "2"}, True),
    ("has(a) || has(b)", {}, False),
    ('has(a) && (b == "1" || c != "1")', {"a": "x"}, True),
    ('has(a) && (b == "1" || c != "1")', {"a": "x", "c": "1"}, False),
    ('in in {"a"}', {"in": "a"}, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), CASES)
def test_evaluate(text: str, labels: dict[str, str], expected: bool) -> None:
    assert evaluate(parse(text), labels) is expected


def test_evaluate_accepts_any_mapping() -> None:
    from types import MappingProxyType

    labels = MappingProxyType({"a": "1"})
    assert evaluate(parse('a == "1" && b != "2"'), labels) is True


def test_evaluate_rejects_non_nodes() -> None:
    with pytest.raises(TypeError):
        evaluate("has(a)", {})  # type: ignore[arg-type]
