"""What decided a flow in one tree, in a form that many flows can share.

A :class:`Decision` keeps the evaluator's deciding :class:`~compiler.ir.flow.Step` of each
direction that matters — the first direction that denies, or both when the flow is allowed —
with the endpoint id removed (a diff row stands for many endpoints, the step for all of them).

>>> from compiler.ir.flow import DirectionVerdict, Step
>>> from compiler.diagnostics import Span
>>> deny = Step("rule", "deny", "ns/a", tier="default", policy="np/ns/p", rule_index=1,
...             span=Span("p.yaml", 12, 5))
>>> d = decision(DirectionVerdict("egress", True, Step("not-calico-endpoint", "allow")),
...              DirectionVerdict("ingress", False, deny))
>>> d.text()
'denied by ingress: np/ns/p rule 2 (Deny) at p.yaml:12, tier default'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.diagnostics import NO_SPAN
from compiler.ir import nodes as ir
from compiler.ir.flow import DirectionVerdict, Step

__all__ = ["Decision", "decision", "step_dict", "step_text"]

_HOOKS = {
    ir.NORMAL: "",
    ir.FORWARD: "[applyOnForward] ",
    ir.PRE_DNAT: "[preDNAT] ",
    ir.UNTRACKED: "[doNotTrack] ",
}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    steps: tuple[tuple[str, Step], ...]  # (direction, deciding step without endpoint)

    def text(self) -> str:
        parts = [f"{direction}: {step_text(step)}" for direction, step in self.steps]
        return f"{'allowed' if self.allowed else 'denied'} by {'; '.join(parts)}"

    def short(self) -> str:
        """One line for a table: the verdict and the policy rules that decided it (a profile or
        "not an endpoint" only when nothing else did)."""
        verdict = "allowed" if self.allowed else "denied"
        ruled = [(d, s) for d, s in self.steps if s.reason == "rule"] or list(self.steps)
        if len(ruled) == 1:
            return f"{verdict}: {_short(ruled[0][1])}"
        return f"{verdict}: " + "; ".join(f"{d} {_short(s)}" for d, s in ruled)

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "decided_by": [{"direction": d, **step_dict(s)} for d, s in self.steps],
        }


def _strip(step: Step) -> Step:
    return replace(step, endpoint=None)


def decision(egress: DirectionVerdict, ingress: DirectionVerdict) -> Decision:
    if not egress.allowed:
        return Decision(False, ((ir.EGRESS, _strip(egress.decided_by)),))
    if not ingress.allowed:
        return Decision(False, ((ir.INGRESS, _strip(ingress.decided_by)),))
    return Decision(
        True, ((ir.EGRESS, _strip(egress.decided_by)), (ir.INGRESS, _strip(ingress.decided_by)))
    )


def _where(step: Step) -> str:
    return "" if step.span == NO_SPAN else f" at {step.span.file}:{step.span.line}"


def step_text(step: Step) -> str:
    """One deciding step in words; rules are numbered from 1, as written."""
    hook = _HOOKS.get(step.hook, f"[{step.hook}] ")
    number = None if step.rule_index is None else step.rule_index + 1
    action = step.action.capitalize()
    if step.reason == "rule":
        return f"{hook}{step.policy} rule {number} ({action}){_where(step)}, tier {step.tier}"
    if step.reason == "profile-rule":
        return f"profile {step.policy} rule {number} ({action}){_where(step)}"
    if step.reason == "end-of-tier":
        return f"{hook}end of tier {step.tier} (no rule of its policies matched)"
    if step.reason == "no-profile":
        return "no profile allowed it (or no profiles)"
    if step.reason == "failsafe":
        return "failsafe port"
    if step.reason == "not-calico-endpoint":
        return "not a Calico endpoint (nothing enforced)"
    if step.reason == "endpoint-to-host":
        return f"workload to its own node: defaultEndpointToHostAction ({action})"
    if step.reason == "no-policy":
        return f"{hook}no policy applies ({action})"
    return f"{step.reason} ({action})"


def _short(step: Step) -> str:
    if step.reason == "rule":
        return f"{step.policy} rule {(step.rule_index or 0) + 1}{_where(step)}"
    if step.reason == "profile-rule":
        return f"profile {step.policy} rule {(step.rule_index or 0) + 1}"
    return step_text(step)


def step_dict(step: Step) -> dict[str, object]:
    return {
        "reason": step.reason,
        "action": step.action,
        "hook": step.hook,
        "tier": step.tier,
        "policy": step.policy if step.reason == "rule" else None,
        "profile": step.policy if step.reason == "profile-rule" else None,
        "rule": None if step.rule_index is None else step.rule_index + 1,
        "file": None if step.span == NO_SPAN else step.span.file,
        "line": None if step.span == NO_SPAN else step.span.line,
        "text": step_text(step),
    }
