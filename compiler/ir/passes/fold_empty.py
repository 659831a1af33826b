"""Drop rules that can never match: an empty positive set, an empty ``nets``, and the like.

Why: a rule whose positive selector matches no endpoint (``selector: app == "gone"``), whose
named port no selected endpoint declares, or whose ``nets`` list the family split emptied, can
never match any packet. Rendering it costs a rule and a kernel set per target and makes every
packet that reaches it pay a lookup for nothing. Removing it changes no verdict and no trace:
a rule that never matches never decides and never logs.

"Can never match" is decided by :meth:`~._analysis.Analysis.never_matches`, which is sound
(it proves emptiness or says no): the addresses a side accepts (``nets`` ∩ positive sets −
``notNets`` − negated sets) are empty, or ``ports`` accepts no port value (empty named-port sets,
or ranges all inside ``notPorts``), or the protocol criteria contradict each other
(``protocol`` = ``notProtocol``, an ICMP match on a non-ICMP protocol).

Run it after ``resolve_sets`` (unresolved sets prove nothing) and before ``shadowed_rules``.
Dropped rules are recorded in ``program.dropped_rules`` once no copy of them (v4 or v6) is left;
sets that only the dropped rules used are removed.

>>> import ipaddress
>>> from compiler.frontend.model import FelixConfig
>>> from compiler.ir.nodes import AddrSet, Match, Policy, Rule, Side, make_program
>>> gone = AddrSet("s:gone", 'app == "gone"', members=frozenset())
>>> rules = (Rule("allow", Match(src=Side(sets=("s:gone",))), 0), Rule("deny", Match(), 1))
>>> pol = Policy("gnp/p", "p", None, "GlobalNetworkPolicy", "default", None, "all()",
...              ("ingress",), ingress=rules)
>>> prog = make_program(node=None, tiers=(), policies=(pol,), profiles=(), sets=(gone,),
...                     endpoints=(), selectables=(), felix=FelixConfig(), host_ips={})
>>> out = run(prog, None)
>>> [r.index for r in out.policies["gnp/p"].ingress], out.dropped_rules, list(out.sets)
([1], (('gnp/p', 0, 'ingress'),), [])
"""

from __future__ import annotations

from compiler.ir.nodes import Match, Program, Rule
from compiler.ir.passes._analysis import Analysis
from compiler.ir.passes._rules import drop_rules, dropped_entries


def run(program: Program, ctx: object) -> Program:
    analysis = Analysis(program, ctx)
    dropped: set[tuple[str, int, str]] = set()

    never: dict[int, tuple[Match, bool]] = {}  # id(match) -> (match, verdict); holds the match

    def dead(r: Rule) -> bool:
        hit = never.get(id(r.match))
        if hit is None:
            hit = never[id(r.match)] = (r.match, analysis.never_matches(analysis.facts(r)))
        return hit[1]

    def rules(owner: str, direction: str, rs: tuple[Rule, ...]) -> tuple[Rule, ...]:
        kept = tuple(r for r in rs if not dead(r))
        if len(kept) != len(rs):
            dropped.update(dropped_entries(owner, direction, rs, kept))
        return kept

    return drop_rules(program, rules, dropped)
