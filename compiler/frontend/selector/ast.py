"""Selector AST (SEMANTICS.md §Selectors).

One frozen, slotted, hashable dataclass per operator, as in Calico's ``selector/parser/ast.go``.
The tree is exactly what the grammar builds: parentheses add no node, an even run of ``!`` adds no
node, and ``and``/``or`` are never flattened, so ``(A && B) && C`` is ``And((And((A, B)), C))``.

Set operands of ``In``/``NotIn`` are normalised on construction: duplicates are dropped and the
values are sorted by their UTF-8 bytes. Equal canonical forms therefore give equal (and equally
hashed) ASTs. Python's code-point order is the same as UTF-8 byte order, so a plain ``sorted`` does
it.

Invariants that ``parse`` guarantees and hand-built trees must keep for ``canon`` to round-trip:
keys match ``[A-Za-z0-9_./-]{1,512}``, no value holds both ``"`` and ``'``, ``And``/``Or``
have at least two operands, and no ``Not`` sits directly on a ``Not`` (the parser makes one only
from ``!(!x)``; it prints as ``!!x``, which reparses as ``x``, as in Calico).

``Not``, ``And`` and ``Or`` carry a derived ``nesting`` attribute (not part of equality or the
hash): the number of and/or nodes on the deepest path, which is the parenthesis depth of the
canonical form. The parser keeps it within ``MAX_NESTING`` so every canonical string parses again
and tree walks stay far from Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias


class _Node:
    __slots__ = ()

    def __str__(self) -> str:
        from .canon import canon

        return canon(self)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class All(_Node):
    """``all()``: matches everything."""


@dataclass(frozen=True, slots=True)
class Global(_Node):
    """``global()``: true on its own; only the namespaceSelector rewrite gives it meaning."""


@dataclass(frozen=True, slots=True)
class Has(_Node):
    """``has(key)``: the label is present (any value, including the empty string)."""

    key: str


@dataclass(frozen=True, slots=True)
class Eq(_Node):
    """``key == "value"``; false when the label is absent."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Ne(_Node):
    """``key != "value"``; true when the label is absent."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Contains(_Node):
    """``key contains "value"``; false when the label is absent."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class StartsWith(_Node):
    """``key starts with "value"``; false when the label is absent."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class EndsWith(_Node):
    """``key ends with "value"``; false when the label is absent."""

    key: str
    value: str


def nesting(sel: Selector) -> int:
    """How many ``and``/``or`` nodes nest on the deepest path: the parenthesis depth of ``canon``."""
    return sel.nesting if isinstance(sel, Not | And | Or) else 0


def _normalise_values(values: Iterable[str]) -> tuple[str, ...]:
    # Code-point order == UTF-8 byte order, also for lone surrogates under "surrogatepass".
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class In(_Node):
    """``key in {…}``; false when absent. ``values`` are deduplicated and sorted."""

    key: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _normalise_values(self.values))


@dataclass(frozen=True, slots=True)
class NotIn(_Node):
    """``key not in {…}``; true when absent. ``values`` are deduplicated and sorted."""

    key: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _normalise_values(self.values))


@dataclass(frozen=True, slots=True)
class Not(_Node):
    """``!expr``. Negation is not absence: ``!a == "x"`` matches endpoints without ``a``."""

    expr: Selector
    nesting: int = field(default=0, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nesting", nesting(self.expr))


@dataclass(frozen=True, slots=True)
class And(_Node):
    """``a && b && …`` with two or more operands, in source order, never flattened."""

    operands: tuple[Selector, ...]
    nesting: int = field(default=0, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        object.__setattr__(self, "nesting", 1 + max(map(nesting, self.operands), default=0))


@dataclass(frozen=True, slots=True)
class Or(_Node):
    """``a || b || …`` with two or more operands, in source order, never flattened."""

    operands: tuple[Selector, ...]
    nesting: int = field(default=0, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        object.__setattr__(self, "nesting", 1 + max(map(nesting, self.operands), default=0))


Selector: TypeAlias = (
    All | Global | Has | Eq | Ne | Contains | StartsWith | EndsWith | In | NotIn | Not | And | Or
)

#: Nodes that compare one label against one string value.
ValueOp: TypeAlias = Eq | Ne | Contains | StartsWith | EndsWith
#: Nodes that carry a label key.
Keyed: TypeAlias = Has | Eq | Ne | Contains | StartsWith | EndsWith | In | NotIn

__all__ = [
    "All",
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "Global",
    "Has",
    "In",
    "Keyed",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Selector",
    "StartsWith",
    "ValueOp",
    "nesting",
]
