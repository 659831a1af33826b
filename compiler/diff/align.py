"""The evaluator's walk for one owner and direction as **stations**, and what changed in it.

For one owner and direction, the evaluator walks a fixed sequence of stations: for a host
endpoint first the failsafe ports; then per hook, per tier, each applicable policy's rules, then
the tier's end (a deny when the tier's default action is Deny and the hook has end-of-tier
drops); then the profiles' rules and finally "no profile allowed" (a deny). A non-endpoint is
one station, "allow". A rule that does not match is a no-op, and so is a tier end with default
Pass. Two facts follow, and ``tables.py`` relies on both:

1. **The verdict is a function of which stations match, in order.** Align the base and head
   walks (``difflib``), keyed by (hook, tier, action, match). If a flow matches no unaligned
   station, and every aligned rule matches it in both trees or in neither, both trees see the
   same matching stations in the same order: the same verdict. A rule whose sets changed
   membership stays aligned, but can match a flow in one tree only — those flows are the
   candidates it contributes. Unaligned stations that match every flow (a tier end, "no
   profile", the failsafe ports, "not an endpoint") make every flow a candidate.
2. **Only the walk up to the deciding station matters.** Two flows that agree on every station
   up to and including the one that decided the first get the same verdict (and the same
   deciding step): the walk is the same until it stops. :func:`decided_at` finds that station
   from the evaluator's :class:`~compiler.ir.flow.Step`.

>>> changed([Station(("a",), None, ("x",))], [Station(("a",), None, ("x",))])
Changed(rules=[], every=False, touched=[])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from compiler.diff.rules import RuleInfo
from compiler.diff.views import View
from compiler.ir import nodes as ir
from compiler.ir.flow import Step

__all__ = ["Changed", "Station", "changed", "decided_at", "stations"]


@dataclass(frozen=True, slots=True)
class Station:
    key: Hashable  # alignment key
    rule: RuleInfo | None  # None: matches every flow
    ident: tuple  # how the evaluator's Step names it


def stations(
    program: ir.Program,
    v: View,
    direction: str,
    info: Callable[[ir.Rule], RuleInfo],
    failsafe_touched: bool = False,
) -> list[Station]:
    """The evaluator's walk for one owner and direction. ``failsafe_touched``: a failsafe
    CIDR changed membership, so the failsafe station must not align (it may differ anywhere)."""
    if v.kind == "none":
        return [Station(("not-an-endpoint",), None, ("not-calico-endpoint",))]
    out: list[Station] = []
    if v.kind == "hep":
        key: Hashable = ("failsafe", v.failsafe) if not failsafe_touched else object()
        out.append(Station(key, None, ("failsafe",)))
    for hook, plan in zip(v.hooks(direction), v.plans, strict=True):
        for tp in plan:
            for pid in tp.policies:
                for r in program.policies[pid].rules(direction):
                    ri = info(r)
                    out.append(
                        Station(
                            (hook, tp.tier, r.action, ri.key),
                            ri,
                            ("rule", hook, tp.tier, pid, r.index),
                        )
                    )
            if hook == ir.NORMAL and tp.default_action == ir.DENY:
                out.append(
                    Station((hook, tp.tier, "end-of-tier"), None, ("end-of-tier", hook, tp.tier))
                )
    for name in v.profiles:
        p = program.profiles.get(name)
        if p is not None:
            for r in p.rules(direction):
                ri = info(r)
                out.append(
                    Station(
                        ("profile", name, r.action, ri.key), ri, ("profile-rule", name, r.index)
                    )
                )
    out.append(Station(("no-profile",), None, ("no-profile",)))
    return out


def decided_at(step: Step) -> tuple | None:
    """The ident of the station that made this decision (None: not a station of a walk)."""
    if step.reason == "rule":
        return ("rule", step.hook, step.tier, step.policy, step.rule_index)
    if step.reason == "profile-rule":
        return ("profile-rule", step.policy, step.rule_index)
    if step.reason == "end-of-tier":
        return ("end-of-tier", step.hook, step.tier)
    if step.reason in ("no-profile", "failsafe", "not-calico-endpoint"):
        return (step.reason,)
    return None


@dataclass
class Changed:
    rules: list[tuple[int, RuleInfo]] = field(default_factory=list)  # unaligned: (tree, rule)
    every: bool = False  # an unaligned station matches every flow
    touched: list[tuple[RuleInfo, RuleInfo]] = field(default_factory=list)  # aligned, sets changed


def changed(base: list[Station], head: list[Station]) -> Changed:
    sm = difflib.SequenceMatcher(None, [s.key for s in base], [s.key for s in head], autojunk=False)
    out = Changed()
    aligned: tuple[set[int], set[int]] = (set(), set())
    for a, b, size in sm.get_matching_blocks():
        for i in range(size):
            aligned[0].add(a + i)
            aligned[1].add(b + i)
            rb, rh = base[a + i].rule, head[b + i].rule
            if rb is not None and rh is not None and (rb.touched or rh.touched):
                out.touched.append((rb, rh))
    for side, seq in enumerate((base, head)):
        for i, st in enumerate(seq):
            if i in aligned[side]:
                continue
            if st.rule is None:
                out.every = True
            else:
                out.rules.append((side, st.rule))
    return out
