"""Find rules that an earlier rule of the same list always pre-empts; warn and drop them.

Why: in ``[Allow from app=web, Deny from app=web on port 80]`` the Deny can never decide
anything. The author almost certainly meant something else, so it deserves a warning (W101)
naming both rules' ``file:line``; and since it can never be reached, the targets need not render
it.

A rule ``L`` is *shadowed* by an earlier rule ``E`` of the same policy (or profile) and
direction when

* ``E``'s action is terminal — ``Allow``, ``Deny`` or ``Pass`` all end the walk down this rule
  list (``Log`` does not, so a Log rule never shadows anything; it can itself be shadowed), and
* every flow ``L`` matches, ``E`` matches too (:meth:`~._analysis.Analysis.covers`: a sound
  field-by-field proof, with set criteria compared by their resolved members and addresses as
  exact interval sets; when in doubt, not shadowed).

Then ``L`` is never reached by any flow it matches, so dropping it changes no verdict and no
trace. Only single earlier rules are considered (not unions of several), which keeps the check
simple and quadratic only in the length of one rule list. Rules dropped here are recorded in
``program.dropped_rules`` once no copy (v4 or v6) of them is left.

>>> from compiler.frontend.model import FelixConfig
>>> from compiler.ir.nodes import Match, Policy, Rule, Side, PortMatch, make_program
>>> r0 = Rule("allow", Match(ip_version=4, protocol=6), 0)
>>> r1 = Rule("deny", Match(ip_version=4, protocol=6, dst=Side(ports=PortMatch(((80, 80),)))), 1)
>>> pol = Policy("gnp/p", "p", None, "GlobalNetworkPolicy", "default", None, "all()",
...              ("ingress",), ingress=(r0, r1))
>>> prog = make_program(node=None, tiers=(), policies=(pol,), profiles=(), sets=(),
...                     endpoints=(), selectables=(), felix=FelixConfig(), host_ips={})
>>> from compiler.pipeline import PassContext
>>> ctx = PassContext()
>>> out = run(prog, ctx)
>>> [r.index for r in out.policies["gnp/p"].ingress], out.dropped_rules
([0], (('gnp/p', 1, 'ingress'),))
>>> ctx.sink.warnings[0].code
'W101'
"""

from __future__ import annotations

from collections import defaultdict

from compiler.diagnostics import DiagnosticSink
from compiler.ir.dump import rule_words
from compiler.ir.nodes import ALLOW, DENY, PASS, Program, Rule
from compiler.ir.passes._analysis import Analysis, RuleFacts
from compiler.ir.passes._rules import drop_rules, dropped_entries

CODE = "W101"
TERMINAL = frozenset({ALLOW, DENY, PASS})


def _owner(program: Program, owner: str) -> str:
    p = program.policies.get(owner)
    if p is None:
        return f"profile {owner}"
    return f"{p.kind} {p.qualified_name}"


def _report(
    sink: DiagnosticSink,
    program: Program,
    owner: str,
    direction: str,
    rules: tuple[Rule, ...],
    shadowed: list[tuple[Rule, Rule]],
) -> None:
    copies: dict[int, int] = defaultdict(int)
    for r in rules:
        copies[r.index] += 1
    by_pair: dict[tuple[int, int], list[tuple[Rule, Rule]]] = defaultdict(list)
    for later, earlier in shadowed:
        by_pair[(later.index, earlier.index)].append((later, earlier))
    policy = program.policies.get(owner)
    kind = policy.kind if policy is not None else None
    for (li, ei), pairs in sorted(by_pair.items()):
        later, earlier = pairs[0]
        lw, ew = rule_words(kind, li), rule_words(kind, ei)
        fams = sorted({x.match.ip_version for x, _ in pairs if x.match.ip_version})
        scope = ""
        if len(pairs) < copies[li] and fams:
            scope = " for " + " and ".join(f"IPv{f}" for f in fams)
        sink.warning(
            CODE,
            f"{direction} {lw} of {_owner(program, owner)} can never match{scope}: "
            f"{ew} ({earlier.action.capitalize()}) comes first and matches every packet it "
            "would; the rule was removed",
            later.origin,
            f"shadowed {lw} (numbered from 1) is at {later.origin}",
            f"shadowing {ew} is at {earlier.origin}",
        )


def run(program: Program, ctx: object) -> Program:
    analysis = Analysis(program, ctx)
    sink: DiagnosticSink | None = getattr(ctx, "sink", None)
    dropped: set[tuple[str, int, str]] = set()
    # (id(earlier match), id(later match)) -> verdict: a proof depends on the two matches only,
    # and the same pairs recur across policies (equal matches are shared objects). The matches
    # live in ``program`` for the whole run, so their ids stay theirs.
    proofs: dict[tuple[int, int], bool] = {}

    def covers(earlier: RuleFacts, later: RuleFacts) -> bool:
        key = (id(earlier.rule.match), id(later.rule.match))
        got = proofs.get(key)
        if got is None:
            got = proofs[key] = analysis.covers(earlier, later)
        return got

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        kept: list[Rule] = []
        shadowers: list[RuleFacts] = []
        shadowed: list[tuple[Rule, Rule]] = []
        for r in rs:
            facts = analysis.facts(r)
            by = next((e for e in shadowers if covers(e, facts)), None)
            if by is not None:
                shadowed.append((r, by.rule))
                continue
            kept.append(r)
            if r.action in TERMINAL:
                shadowers.append(facts)
        if not shadowed:
            return rs
        dropped.update(dropped_entries(owner, direction, rs, tuple(kept)))
        if sink is not None:
            _report(sink, program, owner, direction, rs, shadowed)
        return tuple(kept)

    return drop_rules(program, rules, dropped)
