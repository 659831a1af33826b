"""Label rewrites: namespaceSelector, serviceAccountSelector and global() (SEMANTICS.md §Selectors,
Label rewrites).

Felix never sees namespace or service-account selectors. The control plane folds them into
endpoint-label selectors over the ``pcns.``/``pcsa.`` labels that profiles put on every pod. The
composition is *textual*, as in Calico's update processors, and its odd corners are part of the
contract because the result's canonical form names IP sets:

* pieces are glued as strings such as ``"(" + S + ") && " + P``, then parsed, so a parenthesised
  and/or stays a nested node (no flattening);
* ``all()`` is replaced as text, even inside a quoted value (``a == "all()"`` changes too);
* selector arguments are used as given. Pass canonical strings (the caller's contract); a raw
  ``all( )`` would, as in Calico, escape the textual replacement.

Blank arguments (``""``, spaces/tabs, or ``None``) mean "not given". The helpers return canonical
strings and raise SelectorError only if their inputs were not valid selectors, or if a prefixed key
grows past 512 characters (Felix would reject that selector too).
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
from .parse import canonical, parse

__all__ = [
    "NAMESPACE_LABEL",
    "NAMESPACE_PREFIX",
    "SERVICE_ACCOUNT_LABEL",
    "SERVICE_ACCOUNT_PREFIX",
    "contains_global",
    "entity_rule_selector",
    "gnp_policy_selector",
    "np_policy_selector",
    "prefix_keys",
    "validate_no_global",
]

NAMESPACE_LABEL = "projectcalico.org/namespace"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
_HAS_NAMESPACE = f"has({NAMESPACE_LABEL})"
_HAS_SERVICE_ACCOUNT = f"has({SERVICE_ACCOUNT_LABEL})"


def prefix_keys(sel: Selector, prefix: str) -> Selector:
    """``P_x``: ``sel`` with every label key prefixed by ``prefix``; structure is unchanged."""
    match sel:
        case All() | Global():
            return sel
        case Has(key):
            return Has(prefix + key)
        case Eq(key, value):
            return Eq(prefix + key, value)
        case Ne(key, value):
            return Ne(prefix + key, value)
        case Contains(key, value):
            return Contains(prefix + key, value)
        case StartsWith(key, value):
            return StartsWith(prefix + key, value)
        case EndsWith(key, value):
            return EndsWith(prefix + key, value)
        case In(key, values):
            return In(prefix + key, values)
        case NotIn(key, values):
            return NotIn(prefix + key, values)
        case Not(expr):
            return Not(prefix_keys(expr, prefix))
        case And(operands):
            return And(tuple(prefix_keys(op, prefix) for op in operands))
        case Or(operands):
            return Or(tuple(prefix_keys(op, prefix) for op in operands))
    raise TypeError(f"not a selector node: {sel!r}")


def contains_global(sel: Selector | str) -> bool:
    """Whether ``global()`` occurs anywhere in ``sel`` (a string is parsed first)."""
    stack: list[Selector] = [parse(sel) if isinstance(sel, str) else sel]
    while stack:
        node = stack.pop()
        match node:
            case Global():
                return True
            case Not(expr):
                stack.append(expr)
            case And(operands) | Or(operands):
                stack.extend(operands)
    return False


def validate_no_global(sel: Selector | str) -> bool:
    """True when ``sel`` has no ``global()``. Resource validation needs this for every selector
    field except an EntityRule's ``namespaceSelector``, where ``global()`` must be the whole
    selector (SEMANTICS.md §Selectors, Invalid forms 7)."""
    return not contains_global(sel)


def _given(text: str | None) -> bool:
    return text is not None and text.strip(" \t") != ""


def _prefixed(text: str, prefix: str) -> str:
    """``canon(P_prefix(text))``: what Calico's parseSelectorAttachPrefix returns."""
    return canon(prefix_keys(parse(text), prefix))


def _prefix_and_append(current: str, new: str | None, prefix: str) -> str:
    """Calico's prefixAndAppendSelector: ``(current) && P(new)``, or ``P(new)`` alone."""
    if not _given(new):
        return current
    assert new is not None
    prefixed = _prefixed(new, prefix)
    return f"({current}) && {prefixed}" if current else prefixed


def _namespace_term(namespace: str) -> str:
    return canon(Eq(NAMESPACE_LABEL, namespace))


def np_policy_selector(selector: str, namespace: str, sa_selector: str) -> str:
    """Endpoint selector of a namespaced NetworkPolicy in ``namespace``.

    ``(S) && projectcalico.org/namespace == "ns"`` (just the namespace term when S is blank),
    then ``(that) && P_pcsa.(A)`` when a serviceAccountSelector A is given.
    """
    term = _namespace_term(namespace)
    current = f"({selector}) && {term}" if _given(selector) else term
    current = _prefix_and_append(current, sa_selector, SERVICE_ACCOUNT_PREFIX)
    return canonical(current)


def gnp_policy_selector(selector: str, namespace_selector: str, sa_selector: str) -> str:
    """Endpoint selector of a GlobalNetworkPolicy.

    With a namespaceSelector N: ``(S) && P_pcns.(N)`` (or ``P_pcns.(N)``), then every ``all()``
    in that text, S included, becomes ``has(projectcalico.org/namespace)``. With a
    serviceAccountSelector A: ``(…) && P_pcsa.(A)``, then every ``all()`` becomes
    ``has(projectcalico.org/serviceaccount)``. Nothing given at all means ``all()``.
    """
    current = selector if _given(selector) else ""
    if _given(namespace_selector):
        current = _prefix_and_append(current, namespace_selector, NAMESPACE_PREFIX)
        current = current.replace("all()", _HAS_NAMESPACE)
    if _given(sa_selector):
        current = _prefix_and_append(current, sa_selector, SERVICE_ACCOUNT_PREFIX)
        current = current.replace("all()", _HAS_SERVICE_ACCOUNT)
    return canonical(current)


def entity_rule_selector(
    *,
    policy_namespace: str | None,
    selector: str | None,
    not_selector_present: bool,
    namespace_selector: str | None,
    sa_names: tuple[str, ...],
    sa_selector: str | None,
) -> str | None:
    """The positive selector of an EntityRule (source or destination), canonical, or None.

    Steps 1–4 of SEMANTICS.md: ``nsSel`` from the namespaceSelector (``all()`` → has-namespace,
    ``global()`` → no-namespace, as text) or from the policy's own namespace; ``saSel`` from the
    service-account selector and names; ``sel`` = saSel and/or the selector; then
    ``(nsSel) && (sel)`` when nsSel is set and any selector field (selector, service accounts,
    notSelector or namespaceSelector) is present. The notSelector itself is never rewritten and
    is not part of this result; ``policy_namespace`` is None for a global policy.
    """
    # 1. nsSel
    ns_sel = ""
    if _given(namespace_selector):
        assert namespace_selector is not None
        ns_sel = _prefixed(namespace_selector, NAMESPACE_PREFIX)
        ns_sel = ns_sel.replace("all()", _HAS_NAMESPACE)
        ns_sel = ns_sel.replace("global()", "!" + _HAS_NAMESPACE)
    elif policy_namespace:
        ns_sel = _namespace_term(policy_namespace)

    # 2. saSel
    sa_sel = _prefixed(sa_selector, SERVICE_ACCOUNT_PREFIX) if _given(sa_selector) else ""
    if sa_names:
        names = canon(In(SERVICE_ACCOUNT_LABEL, sa_names))
        sa_sel = f"({sa_sel}) && ({names})" if sa_sel else names

    # 3. sel
    parts = [p for p in (sa_sel, selector if _given(selector) else "") if p]
    sel = f"({parts[0]}) && ({parts[1]})" if len(parts) == 2 else "".join(parts)

    # 4. namespace-limit it
    if ns_sel and (sel or not_selector_present or _given(namespace_selector)):
        result = f"({ns_sel}) && ({sel})" if sel else ns_sel
    else:
        result = sel
    return canonical(result) if result else None
