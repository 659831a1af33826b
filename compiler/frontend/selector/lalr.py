"""The LALR parser of ``selector.lark`` and its error messages (lark is imported only here).

:func:`~.parse.parse` reads valid selectors with its recursive-descent parser; this module runs
when that one gives up, to report the leftmost error with its usual message (or to read an
input the descent parser does not take). A compile of valid selectors never imports lark
(~60 ms at start-up).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedToken
from lark.lexer import Lexer, LexerState

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
from .errors import SelectorError
from .lexer import MAX_NESTING, OPERATOR_TEXT, TokenStream

__all__ = ["lalr", "parser"]


class _TooDeep(Exception):
    """Raised inside the parser; ``parse`` turns it into a SelectorError at the current token."""


class _StreamLexer(Lexer):
    """Hands lark the tokens of the :class:`TokenStream` that ``parse`` passes in as its input."""

    __future_interface__ = 2

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Any:
        stream: TokenStream = lexer_state.text  # type: ignore[assignment]
        return iter(stream)


def _checked(node: And | Or) -> Selector:
    # The canonical form has one pair of parentheses per nested and/or; keep it within the
    # lexer's parenthesis limit so that every canonical string parses again.
    if node.nesting > MAX_NESTING:
        raise _TooDeep
    return node


@v_args(inline=True)
class _ToAst(Transformer[Token, Selector]):
    """Runs inside the LALR parser: one callback per grammar alternative."""

    def start(self, expr: Selector) -> Selector:
        return expr

    def empty(self) -> Selector:
        return All()

    def or_expr(self, *operands: Selector) -> Selector:
        return _checked(Or(operands))

    def and_expr(self, *operands: Selector) -> Selector:
        return _checked(And(operands))

    def negate(self, bangs: Token, expr: Selector) -> Selector:
        return Not(expr) if bangs.count("!") % 2 else expr

    def has(self, tok: Token) -> Selector:
        return Has(str(tok))

    def all(self, _tok: Token) -> Selector:
        return All()

    def global_(self, _tok: Token) -> Selector:
        return Global()

    def eq(self, key: Token, value: Token) -> Selector:
        return Eq(str(key), str(value))

    def ne(self, key: Token, value: Token) -> Selector:
        return Ne(str(key), str(value))

    def contains(self, key: Token, value: Token) -> Selector:
        return Contains(str(key), str(value))

    def starts_with(self, key: Token, value: Token) -> Selector:
        return StartsWith(str(key), str(value))

    def ends_with(self, key: Token, value: Token) -> Selector:
        return EndsWith(str(key), str(value))

    def in_(self, key: Token, values: tuple[str, ...]) -> Selector:
        return In(str(key), values)

    def not_in(self, key: Token, values: tuple[str, ...]) -> Selector:
        return NotIn(str(key), values)

    def set_literal(self, *values: Token) -> tuple[str, ...]:
        return tuple(str(v) for v in values)


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built on first use (~35 ms): the descent parser reads most selectors,
    and a compile that meets no other kind never needs it."""
    return Lark.open(
        "selector.lark",
        rel_to=__file__,
        parser="lalr",
        lexer=_StreamLexer,
        propagate_positions=True,
        transformer=_ToAst(),
    )


#: How each terminal is named in messages, in the order they are listed.
_SHOWN: dict[str, str] = {
    "LABEL": "a label",
    "HAS": "'has('",
    "ALL": "'all()'",
    "GLOBAL": "'global()'",
    "BANGS": "'!'",
    "_LPAR": "'('",
    "STRING": "a quoted string",
    "_EQ": "'=='",
    "_NE": "'!='",
    "_CONTAINS": "'contains'",
    "_STARTSWITH": "'starts with'",
    "_ENDSWITH": "'ends with'",
    "_IN": "'in'",
    "_NOTIN": "'not in'",
    "_LBRACE": "'{'",
    "_COMMA": "','",
    "_RBRACE": "'}'",
    "_AND": "'&&'",
    "_OR": "'||'",
    "_RPAR": "')'",
    "$END": "end of selector",
}
_EXPRESSION_START = frozenset({"LABEL", "HAS", "ALL", "GLOBAL", "_LPAR"})
_OPERATORS = frozenset({"_EQ", "_NE", "_CONTAINS", "_STARTSWITH", "_ENDSWITH", "_IN", "_NOTIN"})


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of selector"
    if tok.type == "LABEL":
        return f'label "{tok}"'
    if tok.type == "STRING":
        return f"string {_quote(str(tok))}"
    if tok.type == "HAS":
        return f"'has({tok})'"
    if tok.type == "BANGS":
        return "'!'"
    return f"'{tok}'"


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def _join_alternatives(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _message(err: UnexpectedToken, stream: TokenStream) -> str:
    expected = set(err.accepts or err.expected)
    if expected and expected <= _OPERATORS:
        return f'expected {OPERATOR_TEXT} after label "{stream.last_label}"'
    items: list[str] = []
    if expected >= _EXPRESSION_START:
        expected -= _EXPRESSION_START | {"BANGS"}
        items.append("an expression")
    items += [shown for name, shown in _SHOWN.items() if name in expected]
    found = _describe_token(err.token)
    if not items:
        return f"unexpected {found}"
    return f"unexpected {found}; expected {_join_alternatives(items)}"


def lalr(text: str) -> Selector:
    """Parse ``text`` with the LALR parser: the AST, or SelectorError for the leftmost error."""
    stream = TokenStream(text)
    try:
        result: Selector = parser().parse(stream)  # type: ignore[arg-type]
    except UnexpectedToken as err:
        offset = len(text) if err.token.type == "$END" else err.token.start_pos
        raise SelectorError(_message(err, stream), offset) from None
    except _TooDeep:
        raise SelectorError(
            f"selector nested too deeply (more than {MAX_NESTING} nested '&&'/'||' groups)",
            stream.last_start,
        ) from None
    except LarkError as err:  # pragma: no cover - defensive: the grammar has no other failures
        raise SelectorError(f"invalid selector ({err.__class__.__name__})", 0) from None
    return result
