"""Which items does a selector match? Answered with an inverted label index and set algebra.

Resolving every selector of a cluster by running ``evaluate`` over every endpoint costs
selectors × endpoints; at 10,000 × 10,000 that is far too slow. Instead the index keeps, per label
key, the items that have it and, per (key, value), the items with that value, and each AST node
becomes a set operation:

* ``has(k)`` / ``k == v`` / ``k in {…}``: lookups and unions;
* ``contains``/``starts with``/``ends with``: a scan of the distinct values of one key;
* ``!e``, ``!=``, ``not in``: the complement against the universe, or, inside an ``&&``, a set
  difference from the positive operands, which avoids building large complements;
* ``&&`` / ``||``: intersection / union, stopping early at the empty set / the universe.

Results are memoised per sub-expression (AST nodes are hashable and equal exactly when their
canonical forms are), so shared pieces such as namespace terms are computed once per index. The
memo is bounded by the total number of ids it holds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

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
from .parse import parse

__all__ = ["LabelIndex"]

_EMPTY: frozenset[str] = frozenset()


class LabelIndex:
    """An inverted index over ``item id → effective labels``; see :meth:`select`.

    The index is a snapshot: it copies nothing from ``items`` except the ids and label pairs it
    needs, and later changes to ``items`` are not seen.
    """

    #: Memo budget, counted in ids held by memoised results (about 60 bytes each).
    MEMO_BUDGET = 2_000_000

    def __init__(self, items: Mapping[str, Mapping[str, str]]) -> None:
        by_key: dict[str, set[str]] = {}
        by_value: dict[str, dict[str, set[str]]] = {}
        for item_id, labels in items.items():
            for key, value in labels.items():
                by_key.setdefault(key, set()).add(item_id)
                by_value.setdefault(key, {}).setdefault(value, set()).add(item_id)
        self.universe: frozenset[str] = frozenset(items)
        self._by_key = {k: frozenset(ids) for k, ids in by_key.items()}
        self._by_value = {
            k: {v: frozenset(ids) for v, ids in values.items()} for k, values in by_value.items()
        }
        self._memo: OrderedDict[Selector, frozenset[str]] = OrderedDict()
        self._memo_size = 0

    def __len__(self) -> int:
        return len(self.universe)

    def select(self, sel: Selector | str) -> frozenset[str]:
        """The ids of the items whose labels ``sel`` matches (same answer as ``evaluate``).

        A string is parsed first (and may raise SelectorError).
        """
        if isinstance(sel, str):
            sel = parse(sel)
        memo = self._memo
        hit = memo.get(sel)
        if hit is not None:
            memo.move_to_end(sel)
            return hit
        result = self._compute(sel)
        memo[sel] = result
        self._memo_size += len(result) + 1
        while self._memo_size > self.MEMO_BUDGET and len(memo) > 1:
            _, old = memo.popitem(last=False)
            self._memo_size -= len(old) + 1
        return result

    # -- per-node set algebra -----------------------------------------------------------------

    def _values_where(self, key: str, test: Callable[[str], bool]) -> frozenset[str]:
        values = self._by_value.get(key)
        if not values:
            return _EMPTY
        return frozenset().union(*(ids for v, ids in values.items() if test(v)))

    def _equal_to(self, key: str, values: tuple[str, ...]) -> frozenset[str]:
        by_value = self._by_value.get(key)
        if not by_value:
            return _EMPTY
        return frozenset().union(*(by_value.get(v, _EMPTY) for v in values))

    def _compute(self, sel: Selector) -> frozenset[str]:
        match sel:
            case All() | Global():
                return self.universe
            case Has(key):
                return self._by_key.get(key, _EMPTY)
            case Eq(key, value):
                return self._by_value.get(key, {}).get(value, _EMPTY)
            case In(key, values):
                return self._equal_to(key, values)
            case Contains(key, value):
                return self._values_where(key, lambda v: value in v)
            case StartsWith(key, value):
                return self._values_where(key, lambda v: v.startswith(value))
            case EndsWith(key, value):
                return self._values_where(key, lambda v: v.endswith(value))
            case Ne() | NotIn() | Not():
                return self.universe - self.select(_negated(sel))
            case And(operands):
                return self._intersection(operands)
            case Or(operands):
                result: frozenset[str] = _EMPTY
                for op in operands:
                    result = result | self.select(op)
                    if len(result) == len(self.universe):
                        break
                return result
        raise TypeError(f"not a selector node: {sel!r}")

    def _intersection(self, operands: tuple[Selector, ...]) -> frozenset[str]:
        """``&&`` as (∩ positive operands) − (∪ negated operands)."""
        positive = [op for op in operands if not isinstance(op, Ne | NotIn | Not)]
        negative = [op for op in operands if isinstance(op, Ne | NotIn | Not)]
        result: frozenset[str] | None = None
        for op in positive:
            part = self.select(op)
            result = part if result is None else result & part
            if not result:
                return _EMPTY
        if result is None:
            result = self.universe
        for op in negative:
            result = result - self.select(_negated(op))
            if not result:
                return _EMPTY
        return result


def _negated(sel: Ne | NotIn | Not) -> Selector:
    """The positive node whose complement ``sel`` is (``!=`` is exactly ``!(==)``)."""
    match sel:
        case Ne(key, value):
            return Eq(key, value)
        case NotIn(key, values):
            return In(key, values)
        case Not(expr):
            return expr
    raise TypeError(sel)
