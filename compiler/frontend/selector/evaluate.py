"""Evaluate a selector against one label set (SEMANTICS.md §Selectors, Evaluation).

This is the reference semantics: the oracle the IR evaluator, the label index and the targets are
tested against. The subtle part is absence: ``!=`` and ``not in`` are *true* for a missing label,
every other comparison is false, and ``!e`` is plain Boolean negation, so ``!a == "x"`` matches
endpoints that lack ``a``. Comparisons are exact and case-sensitive; on Python strings, code-point
comparison is the same as comparing UTF-8 bytes, including for substring tests.

>>> from compiler.frontend.selector import parse
>>> evaluate(parse('role == "db" && tier != "test"'), {"role": "db"})
True
>>> evaluate(parse('!team == "a"'), {})
True
>>> evaluate(parse('app starts with "web-"'), {})
False
>>> evaluate(parse('env not in {"prod"}'), {})
True
"""

from __future__ import annotations

from collections.abc import Mapping

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

__all__ = ["evaluate"]


def evaluate(sel: Selector, labels: Mapping[str, str]) -> bool:
    """Whether an endpoint with these (effective) labels is selected by ``sel``."""
    match sel:
        case All() | Global():
            return True
        case Has(key):
            return key in labels
        case Eq(key, value):
            return key in labels and labels[key] == value
        case Ne(key, value):
            return key not in labels or labels[key] != value
        case Contains(key, value):
            return key in labels and value in labels[key]
        case StartsWith(key, value):
            return key in labels and labels[key].startswith(value)
        case EndsWith(key, value):
            return key in labels and labels[key].endswith(value)
        case In(key, values):
            return key in labels and labels[key] in values
        case NotIn(key, values):
            return key not in labels or labels[key] not in values
        case Not(expr):
            return not evaluate(expr, labels)
        case And(operands):
            return all(evaluate(op, labels) for op in operands)
        case Or(operands):
            return any(evaluate(op, labels) for op in operands)
    raise TypeError(f"not a selector node: {sel!r}")
