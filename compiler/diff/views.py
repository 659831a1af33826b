"""The owner side of an address: which tiers, policies and profiles run for it, per direction.

For one direction, the evaluator runs an address's owner (``subjects.Owner``) the same way for
every address whose owner has the same **view**: the tier plans of the hooks it consults, its
profiles, and for a host endpoint the failsafe ports. A view names policies by id; its
**fingerprint** replaces the ids by what they mean (each rule's action and match, each tier's
default action), so a renamed or moved but otherwise identical policy has the same fingerprint.

:class:`Refs` is everything a view's rules look at: set ids, inline nets, failsafe CIDRs, and the
protocols / ports / ICMP they tell apart (``services.Mentions``).

>>> View("none").hooks(ir.INGRESS)
()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from compiler.diff.services import Mentions
from compiler.diff.subjects import Owner
from compiler.ir import nodes as ir

__all__ = ["Refs", "View", "fingerprint", "named_ports", "refs", "view"]


@dataclass(frozen=True, slots=True)
class View:
    """``kind`` "wep" (workload), "hep" (host endpoint, or a node address through the node's
    ``*`` host endpoint) or "none" (not a Calico endpoint: nothing is enforced)."""

    kind: str
    plans: tuple[tuple[ir.TierPlan, ...], ...] = ()  # per consulted hook, in evaluation order
    profiles: tuple[str, ...] = ()
    failsafe: tuple[tuple[int, int, ir.IPNet | None], ...] = ()

    def hooks(self, direction: str) -> tuple[str, ...]:
        if self.kind == "wep":
            return (ir.NORMAL,)
        if self.kind == "hep":
            if direction == ir.INGRESS:
                return (ir.UNTRACKED, ir.PRE_DNAT, ir.NORMAL)
            return (ir.UNTRACKED, ir.NORMAL)
        return ()

    def policy_ids(self) -> list[str]:
        return [pid for plan in self.plans for tp in plan for pid in tp.policies]


def view(program: ir.Program, owner: Owner, direction: str) -> View:
    ep = owner.endpoint
    if owner.kind == "none" or ep is None:
        return View("none")
    if owner.kind == "wep":
        return View("wep", (ep.plan(direction),), ep.profiles)
    ports = (
        program.felix.failsafe_inbound
        if direction == ir.INGRESS
        else program.felix.failsafe_outbound
    )
    plans = tuple(ep.plan(direction, hook) for hook in View("hep").hooks(direction))
    return View("hep", plans, ep.profiles, tuple((f.protocol, f.port, f.net) for f in ports))


def _rules(rules: Iterable[ir.Rule]) -> tuple[tuple[str, ir.Match], ...]:
    return tuple((r.action, r.match) for r in rules)


def fingerprint(program: ir.Program, v: View, direction: str, memo: dict | None = None) -> tuple:
    """What the view means, without names: equal fingerprints (and equal set memberships)
    give equal verdicts for every flow. ``memo`` caches per-policy parts (keyed by program)."""
    memo = {} if memo is None else memo

    def policy(pid: str) -> tuple:
        key = (id(program), pid, direction)
        got = memo.get(key)
        if got is None:
            got = memo[key] = _rules(program.policies[pid].rules(direction))
        return got

    plans = tuple(
        tuple((tp.default_action, tuple(policy(pid) for pid in tp.policies)) for tp in plan)
        for plan in v.plans
    )
    profiles = tuple(
        None if (p := program.profiles.get(name)) is None else _rules(p.rules(direction))
        for name in v.profiles
    )
    return (v.kind, plans, profiles, v.failsafe)


@dataclass
class Refs:
    sets: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)
    nets: set[ir.IPNet] = field(default_factory=set)
    failsafe: set[ir.IPNet] = field(default_factory=set)
    mentions: Mentions = field(default_factory=Mentions)

    def update(self, other: Refs) -> None:
        self.sets |= other.sets
        self.named |= other.named
        self.nets |= other.nets
        self.failsafe |= other.failsafe
        self.mentions.update(other.mentions)


def named_ports(programs: Iterable[ir.Program]) -> dict[str, set[tuple[int, int]]]:
    """Named-port set id -> the ``(protocol, port)`` pairs its members have, in any tree."""
    out: dict[str, set[tuple[int, int]]] = {}
    for prog in programs:
        for sid, s in prog.sets.items():
            if s.is_named_port:
                out.setdefault(sid, set()).update((p, n) for _, p, n in s.port_members or ())
    return out


def rule_lists(program: ir.Program, v: View, direction: str) -> list[tuple[ir.Rule, ...]]:
    out = [program.policies[pid].rules(direction) for pid in v.policy_ids()]
    out += [
        p.rules(direction) for name in v.profiles if (p := program.profiles.get(name)) is not None
    ]
    return out


def refs(
    program: ir.Program, v: View, direction: str, named: Mapping[str, set[tuple[int, int]]]
) -> Refs:
    out = Refs()
    for rules in rule_lists(program, v, direction):
        for r in rules:
            m = r.match
            out.mentions.add_match(m, named)  # type: ignore[arg-type]
            for side in (m.src, m.dst):
                out.sets.update(side.sets)
                out.sets.update(side.not_sets)
                out.nets.update(side.nets or ())
                out.nets.update(side.not_nets)
                for pm in (side.ports, side.not_ports):
                    if pm is not None:
                        out.named.update(pm.named_sets)
    out.mentions.add_failsafe((proto, port) for proto, port, _ in v.failsafe)
    out.failsafe.update(net for _, _, net in v.failsafe if net is not None)
    return out
