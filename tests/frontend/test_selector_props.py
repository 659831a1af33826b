"""Property tests: canon/parse round trip, the parser never crashes, the index agrees with
evaluate(), and rewrites keep their meaning."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

from compiler.frontend.selector import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    In,
    LabelIndex,
    Ne,
    Not,
    NotIn,
    Or,
    Selector,
    SelectorError,
    StartsWith,
    canon,
    evaluate,
    parse,
    prefix_keys,
    unique_id,
)
from compiler.frontend.selector.parse import _parser

# TORTIE_SELECTOR_EXAMPLES=5000 for a long run; the default keeps the suite quick.
EXAMPLES = int(os.environ.get("TORTIE_SELECTOR_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies ---------------------------------------------------------------------------------

KEYWORDS = ["in", "not", "contains", "starts", "ends", "with", "has", "all", "global", "notin"]
keys = st.one_of(
    st.sampled_from(KEYWORDS),
    st.from_regex(r"[A-Za-z0-9_./-]{1,24}", fullmatch=True),
)
long_keys = st.sampled_from(["k" * 512, "/" * 511 + "z"])
values = st.text(max_size=12).filter(lambda v: not ('"' in v and "'" in v))


def _leaves(key: st.SearchStrategy[str], value: st.SearchStrategy[str]) -> st.SearchStrategy:
    value_sets = st.lists(value, max_size=4).map(tuple)
    return st.one_of(
        st.just(All()),
        st.just(Global()),
        st.builds(Has, key),
        *(st.builds(cls, key, value) for cls in (Eq, Ne, Contains, StartsWith, EndsWith)),
        st.builds(In, key, value_sets),
        st.builds(NotIn, key, value_sets),
    )


def _trees(leaves: st.SearchStrategy) -> st.SearchStrategy[Selector]:
    """Every AST the parser can produce, except Not(Not(...)) (which canon cannot round-trip)."""

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        operands = st.lists(children, min_size=2, max_size=4).map(tuple)
        return st.one_of(
            children.map(lambda c: c.expr if isinstance(c, Not) else Not(c)),
            operands.map(And),
            operands.map(Or),
        )

    return st.recursive(leaves, extend, max_leaves=16)


selectors = _trees(_leaves(keys, values))
selectors_with_long_keys = _trees(_leaves(st.one_of(keys, long_keys), values))

# A tiny vocabulary, so that random labels and random selectors actually meet.
small_keys = st.sampled_from(["a", "b", "c", "in"])
small_values = st.sampled_from(["", "x", "xy", "yx", "y", 'q"'])
small_selectors = _trees(_leaves(small_keys, small_values))
label_sets = st.dictionaries(small_keys, small_values, max_size=4)

TOKENS = [
    "a", "b", "in", "not", "contains", "starts", "ends", "with", "has", "all", "global",
    "has(", "all(", "global(", "(", ")", "{", "}", ",", '"x"', "'y'", '"', "'", "==", "!=",
    "!", "&&", "||", "=", "&", "|", " ", " ", "\t", "\n", "%", "\\", "k" * 513, "é",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(TOKENS), max_size=24).map("".join)


def _lit(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from([text, text + " ", " " + text + "\t"])


_EXPLICIT = {
    "LABEL": st.sampled_from(KEYWORDS + ["a", "b/c", "-1", "x.y"]),
    "STRING": st.sampled_from(['"v"', "'w'", '""', "'a\"b'"]),
    "HAS": st.sampled_from(["has(a)", "has( in )", "has(\tx.y\t)"]),
    "ALL": st.sampled_from(["all()", "all( )"]),
    "GLOBAL": st.sampled_from(["global()", "global(\t)"]),
    "BANGS": st.sampled_from(["!", "!!", "! !", "!!!"]),
    "_EQ": _lit("=="),
    "_NE": _lit("!="),
    "_CONTAINS": _lit("contains"),
    "_STARTSWITH": st.sampled_from(["starts with", "startswith", "starts \t with"]),
    "_ENDSWITH": st.sampled_from(["ends with", "endswith"]),
    "_IN": _lit("in"),
    "_NOTIN": st.sampled_from(["not in", "notin", "not\tin"]),
    "_AND": _lit("&&"),
    "_OR": _lit("||"),
    "_LPAR": _lit("("),
    "_RPAR": _lit(")"),
    "_LBRACE": _lit("{"),
    "_RBRACE": _lit("}"),
    "_COMMA": _lit(","),
}
# Tokens glued without spaces can fuse (a label straight after another token such as "in"), so
# this strategy only checks "AST or SelectorError"; the padded one below must always parse.
grammar_text = from_lark(_parser(), explicit=_EXPLICIT)
padded_grammar_text = from_lark(
    _parser(), explicit={name: s.map(lambda t: " " + t + " ") for name, s in _EXPLICIT.items()}
)


def _has_double_not(sel: Selector) -> bool:
    match sel:
        case Not(Not()):
            return True
        case Not(expr):
            return _has_double_not(expr)
        case And(operands) | Or(operands):
            return any(_has_double_not(op) for op in operands)
    return False


def _check_parse_outcome(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError as err:
        assert isinstance(err.message, str) and err.message
        assert 0 <= err.offset <= len(text)
        return
    text2 = canon(sel)
    again = parse(text2)  # a canonical form always parses
    if not _has_double_not(sel):
        assert again == sel
        assert canon(again) == text2


# -- round trip ---------------------------------------------------------------------------------


@SETTINGS
@given(selectors)
def test_canon_then_parse_gives_the_same_ast(sel: Selector) -> None:
    text = canon(sel)
    assert parse(text) == sel
    assert canon(parse(text)) == text
    assert unique_id(parse(text)) == unique_id(sel)


@settings(max_examples=50, deadline=None)
@given(selectors_with_long_keys)
def test_round_trip_with_512_character_keys(sel: Selector) -> None:
    assert parse(canon(sel)) == sel


@SETTINGS
@given(selectors, st.sampled_from(["", " ", "\t", "  \t "]))
def test_surrounding_blanks_do_not_matter(sel: Selector, pad: str) -> None:
    assert parse(pad + canon(sel) + pad) == sel


# -- never crashes ------------------------------------------------------------------------------


@SETTINGS
@given(st.text())
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    _check_parse_outcome(text)


@SETTINGS
@given(st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x7F), max_size=40))
def test_arbitrary_ascii_parses_or_raises_selector_error(text: str) -> None:
    _check_parse_outcome(text)


@SETTINGS
@given(token_soup)
def test_token_soup_parses_or_raises_selector_error(text: str) -> None:
    _check_parse_outcome(text)


@SETTINGS
@given(grammar_text)
def test_grammar_fuzz_parses_or_raises_selector_error(text: str) -> None:
    _check_parse_outcome(text)


@SETTINGS
@given(padded_grammar_text)
def test_grammar_sentences_always_parse(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError as err:
        assume("nested too deeply" not in err.message)
        raise
    assert parse(canon(sel)) == sel or _has_double_not(sel)


# -- evaluation and the index -------------------------------------------------------------------


@SETTINGS
@given(small_selectors, st.lists(label_sets, max_size=12))
def test_index_matches_brute_force(sel: Selector, labels: list[dict[str, str]]) -> None:
    items = {f"item{n}": lab for n, lab in enumerate(labels)}
    index = LabelIndex(items)
    expected = frozenset(i for i, lab in items.items() if evaluate(sel, lab))
    assert index.select(sel) == expected
    assert index.select(sel) == expected  # memoised answer too


@settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))
@given(st.lists(small_selectors, min_size=1, max_size=6), st.lists(label_sets, max_size=10))
def test_index_with_shared_memo_matches_brute_force(
    sels: list[Selector], labels: list[dict[str, str]]
) -> None:
    items = {f"item{n}": lab for n, lab in enumerate(labels)}
    index = LabelIndex(items)
    for sel in sels:
        assert index.select(sel) == {i for i, lab in items.items() if evaluate(sel, lab)}


@SETTINGS
@given(small_selectors, label_sets)
def test_evaluate_is_stable_under_canon(sel: Selector, labels: dict[str, str]) -> None:
    assert evaluate(parse(canon(sel)), labels) == evaluate(sel, labels)


@SETTINGS
@given(small_selectors, label_sets)
def test_negation_is_complement(sel: Selector, labels: dict[str, str]) -> None:
    assert evaluate(Not(sel), labels) is not evaluate(sel, labels)


@SETTINGS
@given(small_selectors, label_sets)
def test_prefix_keys_matches_prefixed_labels(sel: Selector, labels: dict[str, str]) -> None:
    prefixed = {"pcns." + k: v for k, v in labels.items()}
    assert evaluate(prefix_keys(sel, "pcns."), prefixed) == evaluate(sel, labels)
    # unprefixed labels are invisible to a prefixed selector, except through all()/global()
    text = canon(prefix_keys(sel, "pcns."))
    assert parse(text) == prefix_keys(sel, "pcns.")


# -- the recursive-descent parser is the LALR parser on valid input ------------------------------


def _same_as_lalr(text: str) -> None:
    from compiler.frontend.selector.ast import nesting
    from compiler.frontend.selector.parse import _descent, _lalr

    fast = _descent(text)
    try:
        slow = _lalr(text)
    except SelectorError:
        assert fast is None, text  # invalid: left to the LALR parser, which reports
        return
    if fast is not None:  # None only for nesting the LALR parser also rejects
        assert fast == slow and canon(fast) == canon(slow), text
        assert nesting(fast) == nesting(slow)


@SETTINGS
@given(st.one_of(grammar_text, padded_grammar_text, token_soup, selectors.map(canon)))
def test_descent_parser_agrees_with_lalr(text: str) -> None:
    _same_as_lalr(text)


@SETTINGS
@given(st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x7F), max_size=40))
def test_descent_parser_agrees_with_lalr_on_ascii(text: str) -> None:
    _same_as_lalr(text)


def test_descent_parser_takes_valid_selectors() -> None:
    from compiler.frontend.selector.parse import _descent

    for text in ['a == "x" && !has(b)', "(a in {'x', 'y',} || !!b == 'z') && all()", "", " "]:
        assert _descent(text) is not None, text
    assert _descent("a == ") is None and _descent("(a == 'x'") is None
