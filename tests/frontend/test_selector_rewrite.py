"""Label rewrites (SEMANTICS.md §Selectors, Label rewrites), against hand-computed strings."""

from __future__ import annotations

import pytest

from compiler.frontend.selector import (
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
    StartsWith,
    entity_rule_selector,
    evaluate,
    gnp_policy_selector,
    np_policy_selector,
    parse,
    prefix_keys,
    validate_no_global,
)
from compiler.frontend.selector.rewrite import contains_global

NS = "projectcalico.org/namespace"
SA = "projectcalico.org/serviceaccount"


def test_prefix_keys_touches_every_key_and_nothing_else() -> None:
    sel = And(
        (
            Or((Has("a"), Eq("b", "1"), Ne("c", "2"))),
            Not(Contains("d", "x")),
            StartsWith("e", "y"),
            EndsWith("f", "z"),
            In("g", ("1", "2")),
            NotIn("h", ()),
            All(),
            Global(),
        )
    )
    assert prefix_keys(sel, "pcns.") == And(
        (
            Or((Has("pcns.a"), Eq("pcns.b", "1"), Ne("pcns.c", "2"))),
            Not(Contains("pcns.d", "x")),
            StartsWith("pcns.e", "y"),
            EndsWith("pcns.f", "z"),
            In("pcns.g", ("1", "2")),
            NotIn("pcns.h", ()),
            All(),
            Global(),
        )
    )


# -- NetworkPolicy -----------------------------------------------------------------------------

NP_CASES = [
    (('role == "db"', "prod", ""), f'(role == "db" && {NS} == "prod")'),
    (("", "prod", ""), f'{NS} == "prod"'),
    (("  ", "prod", ""), f'{NS} == "prod"'),
    (("", "prod", 'app == "x"'), f'({NS} == "prod" && pcsa.app == "x")'),
    (("all()", "ns", ""), f'(all() && {NS} == "ns")'),
    (
        ('a == "1" && b == "2"', "prod", 'app == "x" || all()'),
        # no all() replacement for namespaced policy; (S) stays a nested node
        f'(((a == "1" && b == "2") && {NS} == "prod") && (pcsa.app == "x" || all()))',
    ),
    (("!has(a)", "ns", "has(x)"), f'((!has(a) && {NS} == "ns") && has(pcsa.x))'),
    (('a in {"y","x"}', "ns", "!has(x)"), f'((a in {{"x", "y"}} && {NS} == "ns") && !has(pcsa.x))'),
]


@pytest.mark.parametrize(("args", "expected"), NP_CASES)
def test_np_policy_selector(args: tuple[str, str, str], expected: str) -> None:
    assert np_policy_selector(*args) == expected


def test_np_policy_selector_selects_own_namespace_pods() -> None:
    sel = parse(np_policy_selector('role == "db"', "prod", 'team == "a"'))
    pod = {"role": "db", NS: "prod", "pcsa.team": "a"}
    assert evaluate(sel, pod)
    assert not evaluate(sel, {**pod, NS: "dev"})
    assert not evaluate(sel, {"role": "db", "pcsa.team": "a"})  # host endpoint


# -- GlobalNetworkPolicy -----------------------------------------------------------------------

GNP_CASES = [
    (('role == "db"', "", ""), 'role == "db"'),
    (("", "", ""), "all()"),
    (("all()", "", ""), "all()"),  # no namespaceSelector: all() keeps selecting host endpoints
    (("", 'team == "a"', ""), 'pcns.team == "a"'),
    (('role == "db"', 'team == "a"', ""), '(role == "db" && pcns.team == "a")'),
    (("", "all()", ""), f"has({NS})"),
    (("all()", "all()", ""), f"(has({NS}) && has({NS}))"),
    (('(a == "x" && b == "y")', 'c == "z"', ""), '((a == "x" && b == "y") && pcns.c == "z")'),
    # textual replacement reaches into quoted values
    (("", 'name == "all()"', ""), f'pcns.name == "has({NS})"'),
    (
        ('a == "all()"', 'team == "x"', "all()"),
        f'((a == "has({NS})" && pcns.team == "x") && has({SA}))',
    ),
    (('a == "x"', "", "all()"), f'(a == "x" && has({SA}))'),
    (('a == "all()"', "", 'r == "1"'), f'(a == "has({SA})" && pcsa.r == "1")'),
    (("", "", 'role in {"a"}'), 'pcsa.role in {"a"}'),
    (
        ("has(a) || all()", "!has(x)", 'all() && sa == "y"'),
        f'(((has(a) || has({NS})) && !has(pcns.x)) && (has({SA}) && pcsa.sa == "y"))',
    ),
]


@pytest.mark.parametrize(("args", "expected"), GNP_CASES)
def test_gnp_policy_selector(args: tuple[str, str, str], expected: str) -> None:
    assert gnp_policy_selector(*args) == expected


def test_gnp_with_namespace_selector_never_selects_host_endpoints() -> None:
    sel = parse(gnp_policy_selector("all()", "all()", ""))
    assert evaluate(sel, {NS: "default"})
    assert not evaluate(sel, {"host": "yes"})


# -- EntityRule -----------------------------------------------------------------------------


def er(
    policy_namespace: str | None = None,
    selector: str | None = None,
    not_selector_present: bool = False,
    namespace_selector: str | None = None,
    sa_names: tuple[str, ...] = (),
    sa_selector: str | None = None,
) -> str | None:
    return entity_rule_selector(
        policy_namespace=policy_namespace,
        selector=selector,
        not_selector_present=not_selector_present,
        namespace_selector=namespace_selector,
        sa_names=sa_names,
        sa_selector=sa_selector,
    )


def test_entity_rule_nothing_given() -> None:
    # A namespaced rule with only nets/ports is not limited to the namespace.
    assert er("ns1") is None
    assert er(None) is None
    assert er("ns1", selector="", namespace_selector=" \t", sa_selector="") is None


def test_entity_rule_step1_policy_namespace() -> None:
    assert er("ns1", selector='app == "x"') == f'({NS} == "ns1" && app == "x")'
    assert (
        er("ns1", selector='a == "1" && b == "2"') == f'({NS} == "ns1" && (a == "1" && b == "2"))'
    )
    # the rule selector's own all() is not rewritten
    assert er("ns1", selector="all()") == f'({NS} == "ns1" && all())'


def test_entity_rule_not_selector_only_in_namespaced_policy() -> None:
    # "in my namespace AND NOT X": the positive part is the namespace term alone.
    assert er("ns1", not_selector_present=True) == f'{NS} == "ns1"'
    assert er(None, not_selector_present=True) is None
    assert er("ns1", selector="has(a)", not_selector_present=True) == f'({NS} == "ns1" && has(a))'


def test_entity_rule_global_policy_selector_unchanged() -> None:
    assert er(None, selector='app == "x"') == 'app == "x"'
    assert er(None, selector="(has(a))") == "has(a)"


def test_entity_rule_step1_namespace_selector() -> None:
    assert er(None, namespace_selector='team == "a"') == 'pcns.team == "a"'
    assert er("ns1", namespace_selector='team == "a"') == 'pcns.team == "a"'
    assert er(None, namespace_selector="all()") == f"has({NS})"
    assert er(None, namespace_selector="global()") == f"!has({NS})"
    assert er("ns1", namespace_selector="global()", selector="has(x)") == f"(!has({NS}) && has(x))"
    assert (
        er(None, namespace_selector="team == 'a'", selector="has(x)", not_selector_present=True)
        == '(pcns.team == "a" && has(x))'
    )
    # "!global()" prints as "!!has(...)", which collapses when reparsed
    assert er(None, namespace_selector="!global()") == f"has({NS})"
    # replacements are textual, values included
    assert (
        er(None, namespace_selector='a == "all()" || global()')
        == f'(pcns.a == "has({NS})" || !has({NS}))'
    )


def test_entity_rule_step2_service_accounts() -> None:
    assert er(None, sa_names=("b", "a", "b")) == f'{SA} in {{"a", "b"}}'
    assert er("ns1", sa_selector='role == "r"') == f'({NS} == "ns1" && pcsa.role == "r")'
    assert er(None, sa_names=("a",), sa_selector="all()") == f'(all() && {SA} in {{"a"}})'
    assert (
        er(None, sa_names=("a",), sa_selector='role == "r"')
        == f'(pcsa.role == "r" && {SA} in {{"a"}})'
    )


def test_entity_rule_step3_service_accounts_and_selector() -> None:
    assert er(None, sa_names=("a",), selector='app == "x"') == f'({SA} in {{"a"}} && app == "x")'
    assert (
        er(None, sa_selector="has(t) && has(u)", selector="has(x) || has(y)")
        == "((has(pcsa.t) && has(pcsa.u)) && (has(x) || has(y)))"
    )


def test_entity_rule_all_steps() -> None:
    got = er(
        "ns1",
        selector='app == "x"',
        namespace_selector="all()",
        sa_names=("b", "a"),
        sa_selector='role == "r"',
    )
    assert got == (f'(has({NS}) && ((pcsa.role == "r" && {SA} in {{"a", "b"}}) && app == "x"))')


def test_entity_rule_result_is_namespace_scoped() -> None:
    sel = parse(er("ns1", selector='app == "x"') or "")
    assert evaluate(sel, {NS: "ns1", "app": "x"})
    assert not evaluate(sel, {NS: "ns2", "app": "x"})
    hep_only = parse(er(None, namespace_selector="global()") or "")
    assert evaluate(hep_only, {"host": "h1"})
    assert not evaluate(hep_only, {NS: "ns1"})


# -- global() ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "has_global"),
    [
        ("", False),
        ("all()", False),
        ('global == "x"', False),
        ('a == "global()"', False),
        ("global()", True),
        ("!global()", True),
        ("has(a) && (has(b) || !global())", True),
    ],
)
def test_validate_no_global(text: str, has_global: bool) -> None:
    assert validate_no_global(text) is not has_global
    assert validate_no_global(parse(text)) is not has_global
    assert contains_global(text) is has_global
