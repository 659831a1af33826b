"""Selector fields: parse, check the structural rules, point errors at the bad token.

The selector package parses; this module turns its :class:`SelectorError` offset into a span
inside the YAML scalar (``Scalar.span_at`` walks quotes and escapes), and adds the checks that
only resource validation can make: the 1024-character limit and where ``global()`` may appear
(SEMANTICS.md §Selectors, Invalid forms 7).
"""

from __future__ import annotations

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.selector import Selector, SelectorError, canon, parse, validate_no_global
from compiler.frontend.yaml_loader import Scalar

from .fields import Fields

__all__ = ["MAX_SELECTOR_LEN", "check_selector", "selector_field"]

MAX_SELECTOR_LEN = 1024
# Texts known to be valid selectors without global(): such a text passes every check below,
# whatever the field, and the same few selectors recur across thousands of policies.
_CLEAN: set[str] = set()
_MAX_CLEAN = 65536


def check_selector(
    sink: DiagnosticSink, node: Scalar, what: str, *, global_ok: bool = False
) -> str | None:
    """The selector text if valid (unchanged: rewrites happen in ir/build.py), else None.

    ``global_ok`` is for an EntityRule's ``namespaceSelector``, where ``global()`` is allowed
    only as the entire selector.
    """
    text = str(node.value)
    if text in _CLEAN:
        return text
    if len(text) > MAX_SELECTOR_LEN:
        sink.error(
            "E032",
            f"{what} is {len(text)} characters long; the limit is {MAX_SELECTOR_LEN}",
            node.span,
        )
        return None
    try:
        sel = parse(text)
    except SelectorError as e:
        sink.error("E030", f"invalid {what}: {e.message}", node.span_at(e.offset))
        return None
    except RecursionError:  # defensive: the parser is iterative, but never crash on input
        sink.error("E030", f"invalid {what}: nested too deeply", node.span)
        return None
    if not validate_no_global(sel):
        return _global_selector(sink, node, sel, what, global_ok=global_ok)
    if len(_CLEAN) >= _MAX_CLEAN:
        _CLEAN.clear()
    _CLEAN.add(text)
    return text


def _global_selector(
    sink: DiagnosticSink, node: Scalar, sel: Selector, what: str, *, global_ok: bool
) -> str | None:
    """A valid selector that contains ``global()``: allowed only as the whole selector of a
    field that takes it."""
    text = str(node.value)
    if not global_ok:
        sink.error(
            "E031",
            f"global() is not allowed in {what}: it is valid only as the whole namespaceSelector "
            "of a rule's source or destination",
            node.span_at(text.find("global(")),
        )
        return None
    if canon(sel) != "global()":
        sink.error(
            "E031",
            f"global() must be the entire {what}, not combined with other expressions",
            node.span_at(text.find("global(")),
        )
        return None
    return text


def selector_field(
    f: Fields, key: str, what: str | None = None, *, global_ok: bool = False
) -> str | None:
    """Read ``key`` from ``f`` as a selector; None when absent or invalid."""
    node = f.str_node(key)
    if node is None:
        return None
    return check_selector(f.sink, node, what or key, global_ok=global_ok)
