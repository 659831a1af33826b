"""Canonical strings, unique ids and the AST value semantics they rely on."""

from __future__ import annotations

import base64
import doctest
import hashlib
import importlib

import pytest

from compiler.frontend.selector import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    StartsWith,
    canon,
    make_unique_id,
    parse,
    unique_id,
)

# The package re-exports functions named like their modules, so import the modules by name.
canon_module = importlib.import_module("compiler.frontend.selector.canon")
evaluate_module = importlib.import_module("compiler.frontend.selector.evaluate")
parse_module = importlib.import_module("compiler.frontend.selector.parse")


def _by_hand(prefix: str, content: str) -> str:
    digest = hashlib.sha224(f"{prefix}:{content}".encode()).digest()
    return prefix + ":" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_unique_id_check_value() -> None:
    assert unique_id(All()) == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert unique_id(parse("")) == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    assert unique_id(parse("  all( )  ")) == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"


KNOWN_IDS = [
    ('role == "db" && tier != "test"', "s:gxHvdV7hGXWEGgGLoVxqc6G991xBeIl4aLIYBw"),
    ('env not in {"stage","prod","prod",}', "s:pEzsBBtMdEqMG2Dy7gs1pZtkgap8I1__m63U0A"),
    ('!(team == "a")', "s:op_fZV34GaAoyXIbFTA_7faH5ll8BJzT9nd_NA"),
    ("msg == 'a\"b'", "s:flrCsuWidw1PV0hoYE5fZG4viSiKsIUJgLoRUA"),
    ("has( projectcalico.org/namespace )", "s:2dAotJA2sZ5pOhC_BaBuAFekzFsoGV350DfHsw"),
]


@pytest.mark.parametrize(("text", "expected"), KNOWN_IDS)
def test_known_unique_ids(text: str, expected: str) -> None:
    sel = parse(text)
    assert unique_id(sel) == expected
    assert unique_id(sel) == _by_hand("s", canon(sel))
    assert len(expected) == 2 + 38  # 28-byte digest, base64 without padding


def test_make_unique_id_general_form() -> None:
    assert make_unique_id("n", "tcp:http") == "n:X1QOcP5oYXusvzvhmL-2ivnOijp9fpDJtwgrsQ"
    assert make_unique_id("n", "tcp:http") == _by_hand("n", "tcp:http")
    assert make_unique_id("s", "all()") == unique_id(All())


def test_unique_id_tracks_structure_not_meaning() -> None:
    # No flattening: the same conjunction, grouped differently, is a different set.
    flat = parse('p == "1" && q == "2" && r == "3"')
    nested = parse('(p == "1" && q == "2") && r == "3"')
    assert unique_id(flat) != unique_id(nested)
    assert unique_id(parse('a in {"x", "y"}')) == unique_id(parse("a in {'y','x','y',}"))


def test_unique_id_survives_lone_surrogates() -> None:
    assert make_unique_id("s", 'a == "\ud800"').startswith("s:")


HAND_BUILT = [
    (All(), "all()"),
    (Global(), "global()"),
    (Has("a"), "has(a)"),
    (Eq("a", "x"), 'a == "x"'),
    (Ne("a", "x"), 'a != "x"'),
    (Contains("a", "x"), 'a contains "x"'),
    (StartsWith("a", "x"), 'a starts with "x"'),
    (EndsWith("a", "x"), 'a ends with "x"'),
    (In("a", ()), "a in {}"),
    (NotIn("a", ()), "a not in {}"),
    (In("a", ("b", "a", "b")), 'a in {"a", "b"}'),
    (NotIn("a", ('q"', "é", "z", "")), 'a not in {"", \'q"\', "z", "é"}'),
    (Eq("a", 'x"y'), "a == 'x\"y'"),
    (Eq("a", "x'y"), 'a == "x\'y"'),
    (Not(Eq("a", "x")), '!a == "x"'),
    (Not(Not(Has("a"))), "!!has(a)"),
    (Not(And((Has("a"), Has("b")))), "!(has(a) && has(b))"),
    (And((Has("a"), Has("b"), Has("c"))), "(has(a) && has(b) && has(c))"),
    (Or((And((Has("a"), Has("b"))), Has("c"))), "((has(a) && has(b)) || has(c))"),
    (And((Or((Has("a"), Not(Has("b")))), Global())), "((has(a) || !has(b)) && global())"),
]


@pytest.mark.parametrize(("sel", "expected"), HAND_BUILT, ids=[e for _, e in HAND_BUILT])
def test_canon_of_hand_built_asts(sel: object, expected: str) -> None:
    assert canon(sel) == expected  # type: ignore[arg-type]
    assert str(sel) == expected


def test_canon_rejects_non_nodes() -> None:
    with pytest.raises(TypeError):
        canon("has(a)")  # type: ignore[arg-type]


def test_set_values_are_normalised_on_construction() -> None:
    assert In("k", ("b", "a", "b")) == In("k", ("a", "b"))
    assert In("k", ("b", "a", "b")).values == ("a", "b")
    assert hash(NotIn("k", ["y", "x"])) == hash(NotIn("k", ("x", "y")))  # type: ignore[arg-type]
    assert In("k", ("a",)) != NotIn("k", ("a",))


def test_nodes_are_frozen_hashable_and_slotted() -> None:
    sel = parse('(a == "x" || !has(b)) && c in {"1"}')
    assert hash(sel) == hash(parse('(a == "x" || !has(b)) && c in {"1"}'))
    assert {sel: 1}[parse(canon(sel))] == 1
    with pytest.raises(AttributeError):
        sel.operands = ()  # type: ignore[misc]
    assert not hasattr(sel, "__dict__")
    assert And([Has("a"), Has("b")]).operands == (Has("a"), Has("b"))  # type: ignore[arg-type]


def test_nesting_counts_and_or_levels() -> None:
    assert parse("has(a) && has(b)").nesting == 1
    assert parse("has(a) || has(b) && has(c)").nesting == 2
    assert parse("!(has(a) || !(has(b) && has(c)))").nesting == 2
    assert And((Has("a"), Has("b"))) == And((Has("a"), Has("b")))


@pytest.mark.parametrize("module", [canon_module, evaluate_module, parse_module])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
