"""The plan's diff of large nftables scripts (runtime/nftables.py ``plan_diff``): block by block
above DIFF_WHOLE bytes (difflib over a whole 10 MB table takes minutes), the same text as
``unified_diff`` below it."""

from __future__ import annotations

from runtime.nftables import DIFF_WHOLE, plan_diff
from runtime.plan import unified_diff


def _script(chains: dict[str, list[str]], sets: dict[str, list[str]]) -> str:
    out = ["table inet tortie {", '\tcomment "managed by tortie"']
    for name, elements in sets.items():
        out += [f"\tset {name} {{", "\t\ttype ipv4_addr", "\t\tflags interval"]
        out.append(f"\t\telements = {{ {', '.join(elements)} }}")
        out.append("\t}")
    for name, rules in chains.items():
        out += [f"\tchain {name} {{", f'\t\tcomment "{name}"', *(f"\t\t{r}" for r in rules)]
        out.append("\t}")
    return "\n".join([*out, "}"]) + "\n"


def _world(n: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    chains = {
        f"pol-ingress/p{i:05d}": [
            f"ip saddr @s{i % 50} tcp dport {1000 + j} return" for j in range(8)
        ]
        for i in range(n)
    }
    sets = {f"s{i}": [f"10.{i}.{j}.0/24" for j in range(20)] for i in range(50)}
    return chains, sets


def test_small_texts_are_one_unified_diff() -> None:
    chains, sets = _world(10)
    old = _script(chains, sets)
    chains["pol-ingress/p00003"][2] = "ip saddr @s3 tcp dport 9 drop"
    new = _script(chains, sets)
    assert len(old) + len(new) <= DIFF_WHOLE
    assert plan_diff(old, new, "a", "b") == unified_diff(old, new, "a", "b")


def test_large_texts_are_diffed_block_by_block() -> None:
    chains, sets = _world(3000)
    old = _script(chains, sets)
    assert len(old) * 2 > DIFF_WHOLE
    chains["pol-ingress/p00007"][2] = "ip saddr @s7 tcp dport 9 drop"
    del chains["pol-ingress/p00100"]
    chains["pol-ingress/zz-new"] = ["tcp dport 22 return"]
    sets["s4"] = [*sets["s4"][:-1], "192.168.0.0/16"]
    new = _script(chains, sets)

    diff = plan_diff(old, new, "applied", "new")
    headers = [line for line in diff.splitlines() if line.startswith("--- ")]
    assert headers == [
        "--- applied chain pol-ingress/p00007",
        "--- applied chain pol-ingress/p00100",
        "--- applied chain pol-ingress/zz-new",
        "--- applied set s4",
    ]
    changed = {line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in "---+++"}
    assert changed == {
        "-\t\tip saddr @s7 tcp dport 1002 return",
        "+\t\tip saddr @s7 tcp dport 9 drop",
        *(
            f"-{line}"
            for line in _script(
                {"pol-ingress/p00100": _world(101)[0]["pol-ingress/p00100"]}, {}
            ).splitlines()[2:-1]
        ),
        *(
            f"+{line}"
            for line in _script({"pol-ingress/zz-new": ["tcp dport 22 return"]}, {}).splitlines()[
                2:-1
            ]
        ),
        "-\t\telements = { " + ", ".join(_world(1)[1]["s4"]) + " }",
        "+\t\telements = { " + ", ".join(sets["s4"]) + " }",
    }
    assert plan_diff(old, old, "applied", "new") == ""


def test_large_text_that_does_not_parse_gets_a_note() -> None:
    big = "x\n" * (DIFF_WHOLE // 2 + 1)
    diff = plan_diff(big, big + "y\n", "kernel", "new")
    assert diff.startswith("--- kernel\n+++ new\n# not diffed:")
