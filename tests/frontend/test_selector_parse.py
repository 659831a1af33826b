"""Parsing selectors: valid forms and their canonical strings, invalid forms and their offsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.frontend.selector import (
    MAX_NESTING,
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
    SelectorError,
    StartsWith,
    canon,
    parse,
)

KEY_512 = "k" * 512
KEY_513 = "k" * 513


def _ids(cases: list[tuple[str, object]]) -> list[str]:
    """Readable test ids: long keys shortened, control characters escaped."""
    return [
        ascii(text.replace(KEY_513, "K513").replace(KEY_512, "K512"))[1:-1] for text, _ in cases
    ]


# (input, canonical form)
VALID: list[tuple[str, str]] = [
    # SEMANTICS.md §Selectors, the examples table
    ('role == "db" && tier != "test"', '(role == "db" && tier != "test")'),
    ('env not in {"prod","stage",}', 'env not in {"prod", "stage"}'),
    ('app starts with "web-"', 'app starts with "web-"'),
    ('x == "1" || y == "2" && z == "3"', '(x == "1" || (y == "2" && z == "3"))'),
    ('!(team == "a")', '!team == "a"'),
    ('(p == "1" && q == "2") && r == "3"', '((p == "1" && q == "2") && r == "3")'),
    ('k in {"b", "a", "b"}', 'k in {"a", "b"}'),
    ("msg == 'a\"b'", "msg == 'a\"b'"),
    # empty and blank
    ("", "all()"),
    ("   ", "all()"),
    ("\t \t", "all()"),
    # functions
    ("all()", "all()"),
    ("all( )", "all()"),
    ("all(\t)", "all()"),
    ("  all()  ", "all()"),
    ("global()", "global()"),
    ("global( \t)", "global()"),
    ("has(a)", "has(a)"),
    ("has( a )", "has(a)"),
    ("has(\ta\t)", "has(a)"),
    ("has(kubernetes.io/metadata.name)", "has(kubernetes.io/metadata.name)"),
    # operators, spacing and the one-word forms of the two-word operators
    ('a=="x"', 'a == "x"'),
    ('a\t==\t"x"', 'a == "x"'),
    ('a!="x"', 'a != "x"'),
    ('a contains "x"', 'a contains "x"'),
    ('a contains"x"', 'a contains "x"'),
    ('a startswith "x"', 'a starts with "x"'),
    ('a starts  \t with "x"', 'a starts with "x"'),
    ('a endswith "x"', 'a ends with "x"'),
    ('a ends with "x"', 'a ends with "x"'),
    ('a notin {"x"}', 'a not in {"x"}'),
    ("a not\tin {}", "a not in {}"),
    ('a in{"x"}', 'a in {"x"}'),
    ('a startswith"x"&&b notin{}', '(a starts with "x" && b not in {})'),
    # keywords are not reserved as keys
    ('in in {"a"}', 'in in {"a"}'),
    ('contains contains "x"', 'contains contains "x"'),
    ('not in {"a"}', 'not in {"a"}'),
    ('not not in {"a"}', 'not not in {"a"}'),
    ('starts starts with "x"', 'starts starts with "x"'),
    ('has == "x"', 'has == "x"'),
    ('all != "x"', 'all != "x"'),
    ("global in {}", "global in {}"),
    ('with ends with "w"', 'with ends with "w"'),
    # quoting
    ("a == 'x'", 'a == "x"'),
    ('a == "it\'s"', 'a == "it\'s"'),
    ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
    ('a in {"x", \'y"z\'}', 'a in {"x", \'y"z\'}'),
    ('a == ""', 'a == ""'),
    ('a contains ""', 'a contains ""'),
    ('a == "x\ny"', 'a == "x\ny"'),  # a literal may hold any character but its own quote
    ('a == "é✓ 日本"', 'a == "é✓ 日本"'),
    ('a == "%\\\\"', 'a == "%\\\\"'),
    # sets
    ("a in {}", "a in {}"),
    ("a not in {}", "a not in {}"),
    ('a in {"a",}', 'a in {"a"}'),
    ('a in { "b" , "a" , }', 'a in {"a", "b"}'),
    ('a in {"b", "B", "a", "b", ""}', 'a in {"", "B", "a", "b"}'),
    ('a in {"é", "z", "~"}', 'a in {"z", "~", "é"}'),  # UTF-8 byte order
    # keys
    ('my.key/with-dash_and_0 == "x"', 'my.key/with-dash_and_0 == "x"'),
    ('0start == "x"', '0start == "x"'),
    ('-a == "x"', '-a == "x"'),
    ('/a == "x"', '/a == "x"'),
    ('.a == "x"', '.a == "x"'),
    ("has(...)", "has(...)"),
    (f'{KEY_512} == "x"', f'{KEY_512} == "x"'),
    (f"has({KEY_512})", f"has({KEY_512})"),
    # structure: parentheses add no node, no flattening
    ('((a == "x"))', 'a == "x"'),
    ('(a == "x" && b == "y")', '(a == "x" && b == "y")'),
    ('a == "x" && b == "y" && c == "z"', '(a == "x" && b == "y" && c == "z")'),
    ('a == "x" && (b == "y" && c == "z")', '(a == "x" && (b == "y" && c == "z"))'),
    ('((a == "x" && b == "y")) && c == "z"', '((a == "x" && b == "y") && c == "z")'),
    ('(a == "x" || b == "y") && c == "z"', '((a == "x" || b == "y") && c == "z")'),
    ('a == "x" || b == "y" || c == "z"', '(a == "x" || b == "y" || c == "z")'),
    ('a == "x"&&b == "y"||c == "z"', '((a == "x" && b == "y") || c == "z")'),
    ('a=="x"&&!has(b)||all()', '((a == "x" && !has(b)) || all())'),
    # negation
    ('!!a == "x"', 'a == "x"'),
    ('!!!a == "x"', '!a == "x"'),
    ('! ! a == "x"', 'a == "x"'),
    ("!\t!\t!has(a)", "!has(a)"),
    ('!a != "x"', '!a != "x"'),
    ("!has(a)", "!has(a)"),
    ("!all()", "!all()"),
    ("!global()", "!global()"),
    ('!(a == "x" && b == "y")', '!(a == "x" && b == "y")'),
    ('!!(a == "x" && b == "y")', '(a == "x" && b == "y")'),
    ('!a == "x" && b == "y"', '(!a == "x" && b == "y")'),
    ('!a in {"x"}', '!a in {"x"}'),
    ('!(!a == "x")', '!!a == "x"'),  # like Calico: two separate bang runs give Not(Not(...))
    ('global() && a == "x"', '(global() && a == "x")'),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=_ids(VALID))
def test_valid_selector_canonical_form(text: str, expected: str) -> None:
    assert canon(parse(text)) == expected


@pytest.mark.parametrize(("text", "expected"), VALID, ids=_ids(VALID))
def test_canonical_form_reparses_to_itself(text: str, expected: str) -> None:
    if text == '!(!a == "x")':
        # The one documented exception: Not(Not(x)) prints as "!!x", which collapses.
        assert canon(parse(expected)) == 'a == "x"'
        return
    assert parse(expected) == parse(text)
    assert canon(parse(expected)) == expected


ASTS: list[tuple[str, object]] = [
    ("", All()),
    ("global()", Global()),
    ("has( a )", Has("a")),
    ('a == "x"', Eq("a", "x")),
    ('a != "x"', Ne("a", "x")),
    ('a contains "x"', Contains("a", "x")),
    ('a starts with "x"', StartsWith("a", "x")),
    ('a ends with "x"', EndsWith("a", "x")),
    ('a in {"y", "x", "y"}', In("a", ("x", "y"))),
    ('a not in {"y", "x"}', NotIn("a", ("x", "y"))),
    ('!a == "x"', Not(Eq("a", "x"))),
    ('!!a == "x"', Eq("a", "x")),
    ('!(!a == "x")', Not(Not(Eq("a", "x")))),
    ("has(a) && has(b) && has(c)", And((Has("a"), Has("b"), Has("c")))),
    ("(has(a) && has(b)) && has(c)", And((And((Has("a"), Has("b"))), Has("c")))),
    ("has(a) && (has(b) && has(c))", And((Has("a"), And((Has("b"), Has("c")))))),
    ("has(a) || has(b) && has(c)", Or((Has("a"), And((Has("b"), Has("c")))))),
    ("(has(a) || has(b)) && has(c)", And((Or((Has("a"), Has("b"))), Has("c")))),
    ("((((has(a)))))", Has("a")),
    ("!(has(a) || has(b))", Not(Or((Has("a"), Has("b"))))),
]


@pytest.mark.parametrize(("text", "expected"), ASTS, ids=_ids(ASTS))
def test_ast_shape(text: str, expected: object) -> None:
    assert parse(text) == expected


# (input, offset of the error)
INVALID: list[tuple[str, int]] = [
    # 1. literal on the left, label on the right, bare label, no operator, no literal, has()
    ('"a" == b', 0),
    ("'a' == 'b'", 0),
    ("a == b", 5),
    ("a", 1),
    ("  a  ", 5),
    ('a && b == "x"', 2),
    ("a ==", 4),
    ('a == && b == "x"', 5),
    ('a in && b == "x"', 5),
    ("has()", 4),
    ("has( )", 5),
    ('has("a")', 4),
    ("has(a b)", 6),
    # 2. missing ( ) { } or quote; () as an expression
    ("has a)", 4),
    ('(a == "x"', 9),
    ('((a == "x")', 11),
    ('a == "x")', 8),
    (")", 0),
    ("has(a", 5),
    ("all(", 4),
    ("all(x)", 4),
    ("global(", 7),
    ('a in "x"}', 5),
    ('a in "x"', 5),
    ('a in {"x"', 9),
    ('a in {"x",', 10),
    ('a == "x', 5),
    ("a == 'x", 5),
    ("a == 'x\"", 5),
    ('a == "x" && b == "', 17),
    ('"', 0),
    ("()", 1),
    ("(())", 2),
    ("!()", 2),
    ("has(a) && ()", 11),
    # 3. dangling ! && ||
    ("!", 1),
    ("!!", 2),
    ("! ", 2),
    ('a == "x" &&', 11),
    ('a == "x" ||', 11),
    ('&& a == "x"', 0),
    ('|| a == "x"', 0),
    ('a == "x" !', 9),
    ('a == "x" && || b == "y"', 12),
    ('(a == "x" &&)', 12),
    # 4. juxtaposed expressions, trailing tokens
    ("has(a) has(b)", 7),
    ('a == "b", c == "d"', 8),
    ('a == "x" b == "y"', 9),
    ("all() all()", 6),
    ('(a == "x") (b == "y")', 11),
    ('a == "x" "y"', 9),
    ('a == "x" == "y"', 9),
    ("a in {} {}", 8),
    # 5. unknown word operators, single = & |
    ("a and b", 2),
    ("a or b", 2),
    ('a starts foo "x"', 2),
    ('a starts "x"', 2),
    ('a ends "x"', 2),
    ('a not {"x"}', 2),
    ('a == "x" and b == "y"', 9),
    ('a = "x"', 2),
    ("=", 0),
    ("&", 0),
    ("|", 0),
    ("has(a) & has(b)", 7),
    ("has(a) | has(b)", 7),
    ('a === "x"', 4),
    ('a !== "x"', 4),
    ("a inf {}", 2),
    ("a in in {}", 5),
    ('a ends withs "x"', 2),
    ('a containsx "x"', 2),
    ('a notinx {"x"}', 2),
    ("has (a)", 4),
    ("all ()", 4),
    ("global ()", 7),
    ("has(a) in {}", 7),
    # 6. characters outside the token set; keys over 512 characters
    ("%", 0),
    ('a == "x" %', 9),
    ("\\", 0),
    ('a == "x" \\', 9),
    ('a == "x"\n', 8),
    ('a == "x"\r\n', 8),
    ('\na == "x"', 0),
    ('a\n== "x"', 1),
    ('a == "x" # comment', 9),
    ('a == "x";', 8),
    ('a\u00a0== "x"', 1),
    ('é == "x"', 0),
    ("a == \u201cx\u201d", 5),
    ('a == "x"\x00', 8),
    (KEY_513 + ' == "x"', 0),
    (f"has({KEY_513})", 4),
    (f"has( {KEY_513} )", 5),
    (f'a == "x" && {KEY_513} == "y"', 12),
    (f'a in {{"x"}} || !{KEY_513} == "y"', 15),
    # the set literal
    ("a in {,}", 6),
    ('a in {"a" "b"}', 10),
    ('a in {"a",,}', 10),
    ('a in {,"a"}', 6),
    ("a in {a}", 6),
    ("a in {has(b)}", 6),
    ('a == {"x"}', 5),
    ("a in ()", 5),
]


@pytest.mark.parametrize(("text", "offset"), INVALID, ids=_ids(INVALID))
def test_invalid_selector_offset(text: str, offset: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert info.value.offset == offset, info.value.message
    assert 0 <= info.value.offset <= len(text)


MESSAGES: list[tuple[str, str]] = [
    ('a = "x"', "unexpected '='; did you mean '=='?"),
    ("&", "unexpected '&'; did you mean '&&'?"),
    ("|", "unexpected '|'; did you mean '||'?"),
    ('a == "x', "unterminated string literal"),
    ("%", "unexpected character '%'"),
    ('a == "x"\n', "unexpected character '\\n'"),
    (KEY_513 + ' == "x"', "label too long (513 > 512 characters)"),
    ("has()", "expected a label after 'has(', found ')'"),
    ("has(a", "expected ')' to close 'has(', found end of selector"),
    (
        "a",
        "expected '==', '!=', 'contains', 'starts with', 'ends with', 'in' or 'not in' "
        'after label "a"',
    ),
    (
        "has (a)",
        "expected '==', '!=', 'contains', 'starts with', 'ends with', 'in' or 'not in' "
        'after label "has"',
    ),
    ('a == "x" &&', "unexpected end of selector; expected an expression"),
    ("()", "unexpected ')'; expected an expression"),
    ("has(a) has(b)", "unexpected 'has(b)'; expected '&&', '||' or end of selector"),
    ("(has(a) has(b))", "unexpected 'has(b)'; expected '&&', '||' or ')'"),
    ("a in {,}", "unexpected ','; expected a quoted string or '}'"),
    ('a in {"a" "b"}', "unexpected string \"b\"; expected ',' or '}'"),
    ("a ==", "unexpected end of selector; expected a quoted string"),
    ('a in "x"', "unexpected string \"x\"; expected '{'"),
    ('"a" == b', 'unexpected string "a"; expected an expression or end of selector'),
]


@pytest.mark.parametrize(("text", "message"), MESSAGES, ids=_ids(MESSAGES))
def test_error_messages(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert info.value.message == message
    assert str(info.value) == f"{message} (at offset {info.value.offset})"


def test_selector_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse("%")


@pytest.mark.parametrize("value", [None, 1, b"has(a)", ["has(a)"]])
def test_non_string_input_is_a_selector_error(value: object) -> None:
    with pytest.raises(SelectorError):
        parse(value)  # type: ignore[arg-type]


def test_global_is_accepted_anywhere_by_the_parser() -> None:
    assert parse("!global() || (has(a) && global())") == Or(
        (Not(Global()), And((Has("a"), Global())))
    )


# -- limits ----------------------------------------------------------------------------------


def test_ten_thousand_open_parens_is_an_error_not_a_crash() -> None:
    with pytest.raises(SelectorError) as info:
        parse("(" * 10_000)
    assert info.value.offset == MAX_NESTING
    assert f"more than {MAX_NESTING}" in info.value.message


def test_parenthesis_depth_limit_is_exact() -> None:
    ok = "(" * MAX_NESTING + 'a == "x"' + ")" * MAX_NESTING
    assert parse(ok) == Eq("a", "x")
    with pytest.raises(SelectorError) as info:
        parse("(" + ok + ")")
    assert info.value.offset == MAX_NESTING


def _chain(depth: int) -> str:
    """``a == "0" || (a == "1" && (…))``: one and/or node per parenthesis level, alternating."""
    text = f'a == "{depth}"'
    for level in range(depth - 1, 0, -1):
        op = "&&" if level % 2 else "||"
        text = f'a == "{level}" {op} ({text})'
    return text


def test_and_or_nesting_limit_keeps_canonical_forms_parseable() -> None:
    # `x || y && z` nests two nodes in one parenthesis level, but the canonical form needs a
    # pair of parentheses per node, so the parser caps and/or nesting at the same limit.
    deepest = parse(_chain(MAX_NESTING + 1))
    assert deepest.nesting == MAX_NESTING
    text = canon(deepest)
    assert parse(text) == deepest
    assert canon(parse(text)) == text
    too_deep = _chain(MAX_NESTING + 1) + ' || b == "x"'
    with pytest.raises(SelectorError) as info:
        parse(too_deep)
    assert info.value.message == (
        f"selector nested too deeply (more than {MAX_NESTING} nested '&&'/'||' groups)"
    )
    assert info.value.offset == len(too_deep)


def test_long_runs_of_bangs_are_cheap() -> None:
    assert parse("!" * 10_000 + "has(a)") == Has("a")
    assert parse("! " * 10_001 + "has(a)") == Not(Has("a"))


def test_long_flat_expressions() -> None:
    text = " && ".join(f'k{i} == "{i}"' for i in range(5000))
    sel = parse(text)
    assert isinstance(sel, And) and len(sel.operands) == 5000
    assert parse(canon(sel)) == sel


def test_parse_is_cached() -> None:
    text = 'cached == "yes" && other != "no"'
    assert parse(text) is parse(text)


def test_fixture_corpus_round_trips() -> None:
    path = Path(__file__).parent / "fixtures" / "selectors.txt"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert len(lines) >= 20
    for line in lines:
        assert canon(parse(line)) == line, line
