"""Canonical form and unique ids of selectors (SEMANTICS.md §Selectors, Canonical form).

The canonical string is what Calico prints for a parsed selector. Its hash names IP sets, so it
must be byte-for-byte stable: ``and``/``or`` are always parenthesised (the top level too) and
never flattened, ``!`` is printed with no space and no added parentheses, set values come out
deduplicated and sorted, and a value is single-quoted only when it holds ``"``.

>>> from compiler.frontend.selector import parse
>>> canon(parse('x == "1" || y == "2" && z == "3"'))
'(x == "1" || (y == "2" && z == "3"))'
>>> canon(parse("!(team == 'a')"))
'!team == "a"'
>>> canon(parse('env not in {"prod","stage",}'))
'env not in {"prod", "stage"}'
>>> unique_id(parse(""))
's:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug'
"""

from __future__ import annotations

import base64
import hashlib

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

__all__ = ["canon", "make_unique_id", "quote", "unique_id"]

_VALUE_OPS: dict[type, str] = {
    Eq: " == ",
    Ne: " != ",
    Contains: " contains ",
    StartsWith: " starts with ",
    EndsWith: " ends with ",
}


def quote(value: str) -> str:
    """``"v"``, or ``'v'`` when ``v`` holds a double quote (a value never holds both kinds)."""
    return f"'{value}'" if '"' in value else f'"{value}"'


def canon(sel: Selector) -> str:
    """The canonical string of ``sel``; ``parse(canon(sel)) == sel`` for every parsed AST
    except those with ``Not(Not(…))`` (from ``!(!x)``), which print as ``!!x`` like Calico does.
    """
    match sel:
        case All():
            return "all()"
        case Global():
            return "global()"
        case Has(key):
            return f"has({key})"
        case Eq() | Ne() | Contains() | StartsWith() | EndsWith():
            return sel.key + _VALUE_OPS[type(sel)] + quote(sel.value)
        case In(key, values):
            return f"{key} in {{{', '.join(map(quote, values))}}}"
        case NotIn(key, values):
            return f"{key} not in {{{', '.join(map(quote, values))}}}"
        case Not(expr):
            return "!" + canon(expr)
        case And(operands):
            return "(" + " && ".join([canon(op) for op in operands]) + ")"
        case Or(operands):
            return "(" + " || ".join([canon(op) for op in operands]) + ")"
    raise TypeError(f"not a selector node: {sel!r}")


def _b64url_nopad(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def make_unique_id(prefix: str, content: str) -> str:
    """Calico's ``MakeUniqueID``: ``p + ":" + b64url_nopad(SHA-224(p + ":" + c))``.

    Used with ``"s"`` for selectors, ``"n"`` for named-port sets and service prefixes elsewhere.
    Lone surrogates (which YAML escapes can produce) are hashed with ``surrogatepass`` rather than
    crashing.

    >>> make_unique_id("s", "all()")
    's:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug'
    """
    data = f"{prefix}:{content}".encode("utf-8", "surrogatepass")
    return f"{prefix}:{_b64url_nopad(hashlib.sha224(data).digest())}"


def unique_id(sel: Selector) -> str:
    """The id of a selector: ``make_unique_id("s", canon(sel))``."""
    return make_unique_id("s", canon(sel))
