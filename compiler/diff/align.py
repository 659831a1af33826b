"""Which rules of a group can make a verdict differ: align the two trees' rule sequences.

For one owner and direction, the evaluator walks a fixed sequence of **stations**: per hook, per
tier, each applicable policy's rules, then the tier's end (a deny when the tier's default action
is Deny and the hook has end-of-tier drops); then the profiles' rules and finally "no profile
allowed" (a deny). Host endpoints start with the failsafe ports; a non-endpoint is one station,
"allow". A rule that does not match is a no-op, and so is a tier end with default Pass. The
verdict is therefore a function of *which stations match, in order, with their hook and tier*.

Align the base and head sequences (``difflib``), keyed by (hook, tier, action, match); a rule
whose sets or nets changed membership gets a key of its own, so it never aligns. Stations left
unaligned are **changed**. If a flow matches no changed station (in its tree), both trees see
the same matching stations in the same order: the same verdict. So the cells that can change
are those where a changed rule matches — unless a changed station matches every flow (a tier
end, "no profile", failsafe, "not an endpoint"), in which case every cell can.

>>> from compiler.ir import nodes as ir
>>> changed_stations([("a", None)], [("a", None)])
([], False)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable

from compiler.diff.rules import RuleInfo
from compiler.diff.views import View
from compiler.ir import nodes as ir

__all__ = ["changed_stations", "stations"]

Station = tuple[Hashable, RuleInfo | None]  # (alignment key, rule; None = matches every flow)


def stations(program: ir.Program, v: View, direction: str, info: Callable[[ir.Rule], RuleInfo]) -> list[Station]:
    """The evaluator's walk for one owner and direction, as stations."""
    out: list[Station] = []

    def rule(prefix: tuple, r: ir.Rule) -> None:
        ri = info(r)
        key: Hashable = (*prefix, r.action, ri.key) if not ri.touched else object()
        out.append((key, ri))

    if v.kind == "none":
        return [(("not-an-endpoint",), None)]
    if v.kind == "hep":
        out.append((("failsafe", v.failsafe), None))
    for hook, plan in zip(v.hooks(direction), v.plans, strict=True):
        for tp in plan:
            for pid in tp.policies:
                for r in program.policies[pid].rules(direction):
                    rule((hook, tp.tier), r)
            if hook == ir.NORMAL and tp.default_action == ir.DENY:
                out.append(((hook, tp.tier, "end-of-tier"), None))
    for name in v.profiles:
        p = program.profiles.get(name)
        if p is not None:
            for r in p.rules(direction):
                rule(("profile", name), r)
    out.append((("no-profile",), None))
    return out


def changed_stations(base: list[Station], head: list[Station]) -> tuple[list[tuple[int, RuleInfo]], bool]:
    """The changed rules as (tree, rule), and whether a changed station matches every flow."""
    sm = difflib.SequenceMatcher(None, [k for k, _ in base], [k for k, _ in head], autojunk=False)
    aligned: tuple[set[int], set[int]] = (set(), set())
    for a, b, size in sm.get_matching_blocks():
        aligned[0].update(range(a, a + size))
        aligned[1].update(range(b, b + size))
    out: list[tuple[int, RuleInfo]] = []
    every = False
    for side, seq in enumerate((base, head)):
        for i, (_, ri) in enumerate(seq):
            if i in aligned[side]:
                continue
            if ri is None:
                every = True
            else:
                out.append((side, ri))
    return out, every
