"""LabelIndex: set algebra over an inverted index, checked against evaluate()."""

from __future__ import annotations

import random
import time

import pytest

from compiler.frontend.selector import LabelIndex, evaluate, parse

NS = "projectcalico.org/namespace"

ITEMS: dict[str, dict[str, str]] = {
    "prod/db-0": {NS: "prod", "role": "db", "tier": "backend"},
    "prod/web-0": {NS: "prod", "role": "web", "app": "web-1"},
    "prod/web-1": {NS: "prod", "role": "web", "app": "web-2", "canary": ""},
    "dev/db-0": {NS: "dev", "role": "db", "tier": "test"},
    "dev/tool": {NS: "dev"},
    "host-1": {"host": "h1"},
    "netset": {"kind": 'a"b'},
}


@pytest.fixture(scope="module")
def index() -> LabelIndex:
    return LabelIndex(ITEMS)


CASES: list[tuple[str, set[str]]] = [
    ("all()", set(ITEMS)),
    ("!all()", set()),
    ("global()", set(ITEMS)),
    (f"has({NS})", {"prod/db-0", "prod/web-0", "prod/web-1", "dev/db-0", "dev/tool"}),
    (f"!has({NS})", {"host-1", "netset"}),
    ('role == "db"', {"prod/db-0", "dev/db-0"}),
    ('role != "db"', set(ITEMS) - {"prod/db-0", "dev/db-0"}),
    ('role == "db" && tier != "test"', {"prod/db-0"}),
    ('tier not in {"test"}', set(ITEMS) - {"dev/db-0"}),
    ('tier in {"test", "backend", "nope"}', {"dev/db-0", "prod/db-0"}),
    ("tier in {}", set()),
    ("tier not in {}", set(ITEMS)),
    ('app starts with "web-"', {"prod/web-0", "prod/web-1"}),
    ('app ends with "-2"', {"prod/web-1"}),
    ('app contains ""', {"prod/web-0", "prod/web-1"}),
    ("has(canary)", {"prod/web-1"}),
    ('canary == ""', {"prod/web-1"}),
    ("kind == 'a\"b'", {"netset"}),
    ('!(role == "db")', set(ITEMS) - {"prod/db-0", "dev/db-0"}),
    ('x == "1" || role == "web" && app != "web-1"', {"prod/web-1"}),
    (f'!has(role) && {NS} == "dev"', {"dev/tool"}),
    ('!has(role) && !has(host) && !kind == "x"', {"dev/tool", "netset"}),
    (
        f'(role == "db" || role == "web") && {NS} in {{"prod"}}',
        {"prod/db-0", "prod/web-0", "prod/web-1"},
    ),
    ('missing == "x"', set()),
    ('missing != "x"', set(ITEMS)),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_select(index: LabelIndex, text: str, expected: set[str]) -> None:
    sel = parse(text)
    assert index.select(sel) == frozenset(expected)
    assert index.select(text) == frozenset(expected)
    brute = {item for item, labels in ITEMS.items() if evaluate(sel, labels)}
    assert brute == expected


def test_empty_index() -> None:
    empty = LabelIndex({})
    assert len(empty) == 0
    assert empty.select(parse("all()")) == frozenset()
    assert empty.select(parse('!a == "x"')) == frozenset()


def test_results_are_memoised(index: LabelIndex) -> None:
    sel = parse('role == "db" && tier != "test"')
    assert index.select(sel) is index.select(parse('role == "db" && tier != "test"'))


def test_memo_budget_evicts_but_stays_correct() -> None:
    items = {f"i{n}": {"k": str(n % 7)} for n in range(200)}
    index = LabelIndex(items)
    index.MEMO_BUDGET = 300  # type: ignore[misc]
    for round_ in range(3):
        for v in range(7):
            sel = parse(f'k != "{v}"')
            got = index.select(sel)
            assert got == {i for i, labels in items.items() if labels["k"] != str(v)}, round_
    assert index._memo_size <= 300 or len(index._memo) == 1


def _cluster(n_items: int, rng: random.Random) -> dict[str, dict[str, str]]:
    items: dict[str, dict[str, str]] = {}
    for n in range(n_items):
        ns = f"ns{n % 100}"
        labels = {NS: ns, "app": f"app{n % 300}", "tier": rng.choice(["web", "db", "cache"])}
        if n % 10 == 0:
            labels["canary"] = "true"
        items[f"{ns}/pod{n}"] = labels
    for h in range(50):
        items[f"host{h}"] = {"host": f"h{h}"}
    return items


def test_scale_ten_thousand_items() -> None:
    rng = random.Random(7)
    items = _cluster(10_000, rng)
    start = time.perf_counter()
    index = LabelIndex(items)
    selectors = []
    for n in range(1_000):
        ns, app = f"ns{n % 100}", f"app{rng.randrange(300)}"
        selectors.append(
            parse(
                rng.choice(
                    [
                        f'(app == "{app}") && {NS} == "{ns}"',
                        f'tier in {{"web", "db"}} && !has(canary) && {NS} == "{ns}"',
                        f'app starts with "app1" && {NS} != "{ns}"',
                        f'!app == "{app}"',
                    ]
                )
            )
        )
    results = [index.select(sel) for sel in selectors]
    elapsed = time.perf_counter() - start
    # spot-check against brute force
    for sel, got in list(zip(selectors, results, strict=True))[:40]:
        assert got == {i for i, labels in items.items() if evaluate(sel, labels)}
    assert elapsed < 20, elapsed
