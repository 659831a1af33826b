"""Calico label selectors: parse, canonical form and ids, evaluation, label rewrites, indexing.

SEMANTICS.md §Selectors is the specification. Every node offers Calico's four capabilities:
evaluate against labels (:func:`evaluate`, :class:`LabelIndex` for many items at once), print a
canonical string that round-trips (:func:`canon`), give a stable id hashed from it
(:func:`unique_id`), and be rewritten onto namespace/service-account labels (:mod:`.rewrite`).
"""

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
from .canon import canon, make_unique_id, unique_id
from .errors import SelectorError
from .evaluate import evaluate
from .index import LabelIndex
from .lexer import MAX_LABEL_LENGTH, MAX_NESTING
from .parse import canonical, parse
from .rewrite import (
    entity_rule_selector,
    gnp_policy_selector,
    np_policy_selector,
    prefix_keys,
    validate_no_global,
)

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NESTING",
    "All",
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "Global",
    "Has",
    "In",
    "LabelIndex",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Selector",
    "SelectorError",
    "StartsWith",
    "canon",
    "canonical",
    "entity_rule_selector",
    "evaluate",
    "gnp_policy_selector",
    "make_unique_id",
    "np_policy_selector",
    "parse",
    "prefix_keys",
    "unique_id",
    "validate_no_global",
]
