"""Turn an evaluator :class:`~compiler.ir.flow.Verdict` into words and into a stable dict.

``tortie explain`` answers "why is this flow allowed / denied?". The evaluator already records
every step it took (Log and Pass events included) and the one that decided each direction; this
module only names things the way the user wrote them: the tier, the policy's kind and
``namespace/name``, the rule's number **counted from 1** in the list it was written in, and the
``file:line`` of the rule — or which default decided (end of tier, no profile matched, failsafe,
not a Calico endpoint, defaultEndpointToHostAction).

It also resolves what the user typed as ``--from``/``--to`` (:func:`find_peer`,
:func:`choose_addresses`), so that the command stays thin.

>>> from compiler.ir.flow import Step
>>> from compiler.ir.nodes import make_program
>>> from compiler.frontend.model import FelixConfig
>>> prog = make_program(node=None, tiers=(), policies=(), profiles=(), sets=(), endpoints=(),
...                     selectables=(), felix=FelixConfig(), host_ips={})
>>> describe_step(prog, Step("end-of-tier", "deny", "x/a", tier="default"), "ingress")
'end of tier default: no rule of its policies that apply matched, so the tier denies'
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.diagnostics import NO_SPAN, Span
from compiler.ir import nodes as ir
from compiler.ir.dump import protocol_name, rule_words
from compiler.ir.flow import DirectionVerdict, Flow, Step, Verdict

__all__ = [
    "ExplainError",
    "Peer",
    "choose_addresses",
    "describe_step",
    "explain_dict",
    "explain_text",
    "find_peer",
]

_HOOK_WORDS = {
    ir.NORMAL: "",
    ir.FORWARD: "[forwarded traffic, applyOnForward] ",
    ir.PRE_DNAT: "[pre-DNAT] ",
    ir.UNTRACKED: "[untracked, doNotTrack] ",
}
_OUTCOME = {
    ir.ALLOW: "allows",
    ir.DENY: "denies",
    ir.PASS: "passes to the next tier",
    ir.LOG: "logs the packet; evaluation continues",
}


class ExplainError(ValueError):
    """What the user asked for cannot be explained (unknown peer, no common address family)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of the flow as the user named it."""

    text: str
    endpoint: ir.Endpoint | None
    ips: tuple[ir.IPAddr, ...]

    @property
    def label(self) -> str:
        return self.endpoint.id if self.endpoint is not None else self.text


def find_peer(program: ir.Program, text: str) -> Peer | None:
    """``namespace/pod``, a host endpoint name (optionally ``host:NAME``) or an IP address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        ep = next((e for e in program.endpoints if not e.is_host and ip in e.ips), None)
        ep = ep or next((e for e in program.endpoints if e.is_host and ip in e.ips), None)
        return Peer(text, ep, (ip,))
    name = text.removeprefix("host:")
    host = text.startswith("host:") or "/" not in text
    for e in program.endpoints:
        if e.id == name and e.is_host == host:
            return Peer(text, e, e.ips)
    return None


def choose_addresses(src: Peer, dst: Peer) -> tuple[ir.IPAddr, ir.IPAddr]:
    """One address per side, of one family: the first IPv4 of each, unless a side has only
    IPv6 addresses (an IPv6 literal, or an endpoint without IPv4), which forces IPv6."""
    for peer in (src, dst):
        if not peer.ips:
            raise ExplainError(
                f"{peer.label} has no IP address (a host endpoint without expectedIPs), "
                "so no flow can be built to or from it; name an address instead"
            )
    families = [{ip.version for ip in p.ips} for p in (src, dst)]
    common = families[0] & families[1]
    if not common:
        raise ExplainError(
            f"{src.label} and {dst.label} have no address family in common "
            f"(IPv{'/IPv'.join(map(str, sorted(families[0])))} vs "
            f"IPv{'/IPv'.join(map(str, sorted(families[1])))})"
        )
    family = 4 if 4 in common else 6
    pick = [next(ip for ip in p.ips if ip.version == family) for p in (src, dst)]
    return pick[0], pick[1]


# -- words --------------------------------------------------------------------------------------


def _where(span: Span) -> str:
    return "(no source location)" if span == NO_SPAN else f"{span.file}:{span.line}"


def _policy_words(program: ir.Program, pid: str | None) -> str:
    p = program.policies.get(pid) if pid else None
    if p is None:
        return f"policy {pid}"
    return f"{p.kind} {p.qualified_name}"


def _tier_policies(program: ir.Program, step: Step, direction: str) -> list[str]:
    ep = next((e for e in program.endpoints if e.id == step.endpoint), None)
    if ep is None:
        return []
    for plan in ep.plan(direction, step.hook):
        if plan.tier == step.tier:
            return [_policy_words(program, pid) for pid in plan.policies]
    return []


def describe_step(program: ir.Program, step: Step, direction: str) -> str:
    """One step of the trace in words (rule numbers counted from 1)."""
    hook = _HOOK_WORDS.get(step.hook, f"[{step.hook}] ")
    number = None if step.rule_index is None else step.rule_index + 1
    if step.reason == "rule":
        policy = program.policies.get(step.policy or "")
        rule = rule_words(policy.kind if policy else None, step.rule_index or 0)
        return (
            f"{hook}tier {step.tier}: {_policy_words(program, step.policy)}, {rule} "
            f"({step.action.capitalize()}) at {_where(step.span)} {_OUTCOME[step.action]}"
        )
    if step.reason == "profile-rule":
        outcome = "passes to the next profile" if step.action == ir.PASS else _OUTCOME[step.action]
        return (
            f"profile {step.policy}, rule {number} ({step.action.capitalize()}) at "
            f"{_where(step.span)} {outcome}"
        )
    if step.reason == "end-of-tier":
        names = _tier_policies(program, step, direction)
        which = f" ({', '.join(names)})" if names else " that apply"
        return (
            f"{hook}end of tier {step.tier}: no rule of its policies{which} matched, "
            "so the tier denies"
        )
    if step.reason == "no-profile":
        ep = next((e for e in program.endpoints if e.id == step.endpoint), None)
        if ep is None or not ep.profiles:
            return "no tier decided and the endpoint has no profiles, so it is denied"
        return f"no tier decided and no profile ({', '.join(ep.profiles)}) allowed, so it is denied"
    if step.reason == "failsafe":
        return f"failsafe port on host endpoint {step.endpoint} (checked before any policy) allows"
    if step.reason == "not-calico-endpoint":
        side = "source" if direction == ir.EGRESS else "destination"
        return f"the {side} is not a Calico endpoint, so nothing is enforced on this side (allow)"
    if step.reason == "endpoint-to-host":
        verb = "allows" if step.action == ir.ALLOW else "denies"
        return f"workload {step.endpoint} to its own node: defaultEndpointToHostAction {verb}"
    if step.reason == "host-to-local-workload":
        return (
            f"the node's host to its own workload {step.endpoint} is never policed "
            "(as in Felix), so it is allowed"
        )
    if step.reason == "no-policy":
        return f"{hook}no policy applies: {_OUTCOME.get(step.action, step.action)}"
    return f"{step.reason}: {step.action}"


def _flow_words(flow: Flow) -> str:
    proto = protocol_name(flow.protocol)
    if flow.icmp_type is not None:
        code = "" if flow.icmp_code is None else f" code {flow.icmp_code}"
        return f"{proto} type {flow.icmp_type}{code}"
    if flow.dst_port is not None:
        return f"{proto} port {flow.dst_port}"
    return proto


def _side_title(d: DirectionVerdict, peer: Peer) -> str:
    if d.decided_by.reason == "endpoint-to-host":
        return f"to the host of {d.decided_by.endpoint} (workload to its own node)"
    if d.direction == ir.EGRESS:
        return f"egress of {peer.label} (source)"
    return f"ingress of {peer.label} (destination)"


def explain_text(
    program: ir.Program, flow: Flow, verdict: Verdict, src: Peer, dst: Peer, via: str | None = None
) -> str:
    """The verdict and the trace of both directions, for a person to read."""
    head = f"{src.label} ({flow.src_ip}) -> {dst.label} ({flow.dst_ip}), {_flow_words(flow)}" + (
        f", forwarded through host endpoint {via}" if via else ""
    )
    if verdict.allowed:
        outcome = "ALLOWED: the source's egress and the destination's ingress both allow it"
    else:
        denied = [
            name
            for name, d in (
                ("source's egress", verdict.egress),
                ("destination's ingress", verdict.ingress),
            )
            if not d.allowed
        ]
        outcome = f"DENIED by the {' and the '.join(denied)}"
    out = [head, f"verdict: {outcome}", "(rules are numbered from 1, in the order written)"]
    for d, peer in ((verdict.egress, src), (verdict.ingress, dst)):
        out.append("")
        out.append(f"{_side_title(d, peer)}: {'allowed' if d.allowed else 'denied'}")
        for i, step in enumerate(d.events, 1):
            mark = "  <- decides" if step == d.decided_by else ""
            out.append(f"  {i}. {describe_step(program, step, d.direction)}{mark}")
    return "\n".join(out) + "\n"


# -- data ---------------------------------------------------------------------------------------


def _step_dict(program: ir.Program, step: Step, direction: str) -> dict[str, object]:
    policy = program.policies.get(step.policy) if step.reason == "rule" and step.policy else None
    return {
        "reason": step.reason,
        "action": step.action,
        "endpoint": step.endpoint,
        "hook": step.hook,
        "tier": step.tier,
        "policy": step.policy if step.reason == "rule" else None,
        "kind": policy.kind if policy else None,
        "namespace": policy.namespace if policy else None,
        "name": policy.name if policy else None,
        "profile": step.policy if step.reason == "profile-rule" else None,
        "rule": None if step.rule_index is None else step.rule_index + 1,
        "rule_index": step.rule_index,
        "file": None if step.span == NO_SPAN else step.span.file,
        "line": None if step.span == NO_SPAN else step.span.line,
        "col": None if step.span == NO_SPAN else step.span.col,
        "text": describe_step(program, step, direction),
    }


def _direction_dict(program: ir.Program, d: DirectionVerdict) -> dict[str, object]:
    return {
        "direction": d.direction,
        "endpoint": d.decided_by.endpoint,
        "allowed": d.allowed,
        "decided_by": _step_dict(program, d.decided_by, d.direction),
        "events": [_step_dict(program, s, d.direction) for s in d.events],
    }


def _peer_dict(peer: Peer, ip: ir.IPAddr) -> dict[str, object]:
    return {
        "peer": peer.text,
        "endpoint": peer.endpoint.id if peer.endpoint is not None else None,
        "ip": str(ip),
    }


def explain_dict(
    program: ir.Program, flow: Flow, verdict: Verdict, src: Peer, dst: Peer, via: str | None = None
) -> dict[str, object]:
    """A JSON-able, stable dict: the flow, the verdict, and each direction's steps.

    ``rule`` is counted from 1 (as in the text), ``rule_index`` from 0 (as in the IR).
    """
    return {
        "from": _peer_dict(src, flow.src_ip),
        "to": _peer_dict(dst, flow.dst_ip),
        "family": flow.family,
        "protocol": protocol_name(flow.protocol),
        "port": flow.dst_port,
        "icmp_type": flow.icmp_type,
        "icmp_code": flow.icmp_code,
        "via": via,
        "allowed": verdict.allowed,
        "egress": _direction_dict(program, verdict.egress),
        "ingress": _direction_dict(program, verdict.ingress),
    }
