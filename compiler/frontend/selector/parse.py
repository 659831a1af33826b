"""Selector text → AST.

``selector.lark`` is the grammar; :class:`~.lexer.TokenStream` is its lexer (the lexical rules are
context-sensitive, see lexer.py). Valid selectors are read by the recursive-descent parser
below, which builds the same AST as the grammar; at the first error, the LALR parser of
:mod:`.lalr` reads the text again and reports (it builds the AST during its reductions through an
embedded transformer, so no parse tree is built and nothing recurses on the input's depth).

Every bad input raises :class:`SelectorError` with the offset of the leftmost offending token;
nothing else escapes :func:`parse`.
"""

from __future__ import annotations

from .ast import (
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
    Selector,
    StartsWith,
)
from .canon import canon
from .errors import SelectorError
from .lexer import MAX_NESTING, TokenStream

__all__ = ["SelectorError", "canonical", "parse"]


def parse(text: str) -> Selector:
    """Parse one selector. Empty or blank (spaces/tabs only) text is ``all()``.

    Raises :class:`SelectorError` for every invalid input, and nothing else. Results are cached:
    the same selector strings recur across policies and rules, and the AST is immutable.

    >>> parse('a == "x" && !has(b)')
    And(operands=(Eq(key='a', value='x'), Not(expr=Has(key='b'))))
    """
    if not isinstance(text, str):
        raise SelectorError(f"selector must be a string, not {type(text).__name__}", 0)
    return _parse_cached(text)


class _NotFast(Exception):
    """The descent parser stops: lark parses the text again and reports."""


def _descent(text: str) -> Selector | None:
    """The grammar of ``selector.lark`` by recursive descent, for *valid* selectors: the same
    AST as the LALR parser, several times faster (build parses thousands of rewritten
    selectors). None at the first error (or a lexer error anywhere), so that :func:`_lalr`
    reports the leftmost one with its usual message. Recursion is bounded by the lexer's
    parenthesis limit (three frames per level)."""
    try:
        toks = [(kind, value) for kind, value, _, _ in TokenStream(text).scan()]
    except SelectorError:
        return None
    if not toks:
        return All()
    toks.append(("$END", ""))
    parser = _Descent(toks)
    try:
        result = parser.or_expr()
    except _NotFast:
        return None
    return result if toks[parser.pos][0] == "$END" else None


class _Descent:
    """One rule per method; ``pos`` indexes ``toks`` (``(type, value)`` pairs, ``$END`` last)."""

    __slots__ = ("pos", "toks")

    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks = toks
        self.pos = 0

    def or_expr(self) -> Selector:
        operands = [self.and_expr()]
        while self.toks[self.pos][0] == "_OR":
            self.pos += 1
            operands.append(self.and_expr())
        if len(operands) == 1:
            return operands[0]
        node = Or(tuple(operands))
        if node.nesting > MAX_NESTING:
            raise _NotFast
        return node

    def and_expr(self) -> Selector:
        operands = [self.op()]
        while self.toks[self.pos][0] == "_AND":
            self.pos += 1
            operands.append(self.op())
        if len(operands) == 1:
            return operands[0]
        node = And(tuple(operands))
        if node.nesting > MAX_NESTING:
            raise _NotFast
        return node

    def op(self) -> Selector:
        kind, value = self.toks[self.pos]
        if kind == "BANGS":
            self.pos += 1
            expr = self.atom()
            return Not(expr) if value.count("!") % 2 else expr
        return self.atom()

    def string(self) -> str:
        kind, value = self.toks[self.pos]
        if kind != "STRING":
            raise _NotFast
        self.pos += 1
        return value

    def atom(self) -> Selector:  # noqa: C901, PLR0911
        toks = self.toks
        kind, value = toks[self.pos]
        self.pos += 1
        if kind == "HAS":
            return Has(value)
        if kind == "ALL":
            return All()
        if kind == "GLOBAL":
            return Global()
        if kind == "_LPAR":
            expr = self.or_expr()
            if toks[self.pos][0] != "_RPAR":
                raise _NotFast
            self.pos += 1
            return expr
        if kind != "LABEL":
            raise _NotFast
        operator = toks[self.pos][0]
        self.pos += 1
        if operator in _BINARY:
            return _BINARY[operator](value, self.string())
        if operator != "_IN" and operator != "_NOTIN":
            raise _NotFast
        if toks[self.pos][0] != "_LBRACE":
            raise _NotFast
        self.pos += 1
        values: list[str] = []
        if toks[self.pos][0] != "_RBRACE":
            values.append(self.string())
            while toks[self.pos][0] == "_COMMA":
                self.pos += 1
                if toks[self.pos][0] == "_RBRACE":
                    break
                values.append(self.string())
            if toks[self.pos][0] != "_RBRACE":
                raise _NotFast
        self.pos += 1
        return In(value, tuple(values)) if operator == "_IN" else NotIn(value, tuple(values))


_BINARY = {
    "_EQ": Eq,
    "_NE": Ne,
    "_CONTAINS": Contains,
    "_STARTSWITH": StartsWith,
    "_ENDSWITH": EndsWith,
}


_CACHE: dict[str, Selector] = {}  # text -> AST; ASTs are immutable
_CACHE_MAX = 65536


def _parse_cached(text: str) -> Selector:
    hit = _CACHE.get(text)
    if hit is None:
        fast = _descent(text)
        hit = fast if fast is not None else _lalr(text)
        _remember(text, hit)
    return hit


def _remember(text: str, sel: Selector) -> None:
    if len(_CACHE) >= _CACHE_MAX:  # a long-running process: stay bounded
        _CACHE.clear()
    _CACHE[text] = sel


def canonical(text: str) -> str:
    """``canon(parse(text))``; :func:`parse` of the result then returns the same AST without
    reading it again. The label rewrites (``rewrite.py``) make thousands of canonical strings
    that the builder parses next: half the selector parsing of a 10,000-policy build.

    >>> canonical("(a=='x')&&has( b )")
    '(a == "x" && has(b))'
    """
    sel = parse(text)
    out = canon(sel)
    # parse(canon(sel)) == sel except for Not(Not(x)), printed "!!x" (which reads as x); any
    # text holding "!!" (a quoted value may too) is simply left to be parsed.
    if "!!" not in out and out not in _CACHE:
        _remember(out, sel)
    return out


def _lalr(text: str) -> Selector:
    """The LALR parser (:mod:`.lalr`, imported on first use: lark costs ~60 ms to import)."""
    from .lalr import lalr

    return lalr(text)


def _parser():  # noqa: ANN202 - a lark.Lark, not imported here
    """The LALR parser object (tests build inputs from its grammar)."""
    from .lalr import parser

    return parser()
