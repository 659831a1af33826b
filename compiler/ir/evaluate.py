"""The reference evaluator: the verdict for the first packet of a flow, straight from the
semantics (SEMANTICS.md §Evaluation order, §Host endpoints). It is the oracle that every pass and
every target is tested against, so it stays small and literal and shares no code with targets.

A flow from A to B needs egress(A) AND ingress(B):

* a side that is a workload endpoint runs that endpoint's tiers, then its profiles;
* a side that is a host endpoint (by expectedIPs) runs: untracked (doNotTrack) policy, the
  failsafe ports, pre-DNAT policy (ingress), then the normal host tiers and profiles;
* workload -> its own node's host: the workload's egress, then ``defaultEndpointToHostAction``
  (Drop / Accept / Return; with Return the node's ``*`` host endpoint, if any, decides);
* a side that is neither is "not a Calico endpoint": nothing to enforce there.

Choices where Calico's dataplanes disagree or the semantics leave room (documented here, as
SEMANTICS.md asks):

* ``Pass`` inside a *profile* moves on to the next profile (Calico's iptables behaviour).
* Forwarded traffic through a host endpoint's ``applyOnForward`` policies is evaluated only when
  the caller names the host endpoint the flow crosses (``via=``); without it, forward hooks are
  not consulted (they default to allow anyway when no applyOnForward policy applies).
* A flow *entering* the node through a host endpoint ``h`` with a named interface (``via=h``,
  forwarded to a workload or elsewhere) meets ``h``'s hooks in Felix's order (raw PREROUTING,
  mangle PREROUTING, filter FORWARD, all dispatched by ``h``'s interface):

  1. the inbound failsafe ports: a match skips steps 2 and 3 (as in Felix's raw and mangle
     ``cali-fh-*`` chains; it does not allow the flow, the forward tiers still run);
  2. ``h``'s doNotTrack ingress tiers, no end-of-tier drop: Deny drops; Allow accepts the flow
     untracked and ends ``h``'s part (its preDNAT and applyOnForward tiers are skipped, as
     Felix's FORWARD skips the from-HEP-forward dispatch for packets carrying the accept mark),
     but the destination's own policy (a workload's ingress) still applies; no match continues;
  3. ``h``'s preDNAT tiers, no end-of-tier drop: Deny drops, Allow or no match continues;
  4. the destination's own policy and then ``h``'s applyOnForward ingress tiers, as before.

* A flow *leaving* through ``h`` (a local workload's flow, ``via=h``) runs only ``h``'s
  applyOnForward egress tiers: ``h``'s doNotTrack egress tiers do **not** apply. They live in raw
  OUTPUT, which only sees locally generated packets, and a forwarded packet was already tracked
  in PREROUTING, so there is nothing left to leave untracked.
* ``*`` host endpoints and endpoints without an interface name (``""``) have no interface to
  dispatch forwarded traffic by, so their doNotTrack/preDNAT policy applies only to host traffic
  (by address), never to forwarded flows (``via`` such an endpoint runs only its forward tiers).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from weakref import WeakKeyDictionary

from compiler.frontend.selector import evaluate as selector_matches
from compiler.frontend.selector import parse
from compiler.ir import nodes as ir
from compiler.ir.flow import DirectionVerdict, Flow, Step, Verdict

_ICMP = (1, 58)


class _Members:
    """Set membership for one program: resolved members when a pass filled them, otherwise the
    selector evaluated on every selectable's labels (memoised per program)."""

    _cache: WeakKeyDictionary[ir.Program, dict[str, frozenset]] = WeakKeyDictionary()

    @classmethod
    def of(cls, program: ir.Program, set_id: str) -> frozenset:
        per_prog = cls._cache.setdefault(program, {})
        if set_id not in per_prog:
            per_prog[set_id] = cls._compute(program, program.sets[set_id])
        return per_prog[set_id]

    @staticmethod
    def _compute(program: ir.Program, s: ir.AddrSet) -> frozenset:
        if s.is_named_port and s.port_members is not None:
            return s.port_members
        if not s.is_named_port and s.members is not None:
            return s.members
        sel = parse(s.selector)
        chosen = [x for x in program.selectables if selector_matches(sel, dict(x.labels))]
        if not s.is_named_port:
            nets = {n for x in chosen for n in x.nets}
            return frozenset(n for n in nets if s.family is None or n.version == s.family)
        out = set()
        for x in chosen:
            for port in x.ports:
                if port.name == s.port_name and s.port_protocol in (None, port.protocol):
                    for n in x.nets:
                        if s.family is None or n.version == s.family:
                            out.add((n, port.protocol, port.port))
        return frozenset(out)


class _NetLookup:
    """Is an address in a union of prefixes? Binary search over the merged address intervals.

    Same answer as ``any(ip in n for n in nets)``, but a set can hold thousands of CIDRs and the
    matrix asks millions of questions, so a linear scan per question is too slow.
    """

    _cache: WeakKeyDictionary[ir.Program, dict[str, _NetLookup]] = WeakKeyDictionary()

    def __init__(self, nets: frozenset) -> None:
        self.starts: dict[int, list[int]] = {4: [], 6: []}
        self.ends: dict[int, list[int]] = {4: [], 6: []}
        spans = sorted((n.version, int(n.network_address), int(n.broadcast_address)) for n in nets)
        for version, lo, hi in spans:
            starts, ends = self.starts[version], self.ends[version]
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)

    def __contains__(self, ip: ir.IPAddr) -> bool:
        n = int(ip)
        i = bisect_right(self.starts[ip.version], n) - 1
        return i >= 0 and n <= self.ends[ip.version][i]

    @classmethod
    def of(cls, program: ir.Program, set_id: str) -> _NetLookup:
        per_prog = cls._cache.setdefault(program, {})
        if set_id not in per_prog:
            per_prog[set_id] = cls(_Members.of(program, set_id))
        return per_prog[set_id]


def _in_nets(ip: ir.IPAddr, nets: tuple[ir.IPNet, ...] | frozenset) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def _in_set(program: ir.Program, ip: ir.IPAddr, set_id: str) -> bool:
    return ip in _NetLookup.of(program, set_id)


def _port_match(
    program: ir.Program, pm: ir.PortMatch, ip: ir.IPAddr, proto: int, port: int | None
) -> bool:
    if port is None:
        return False
    if any(lo <= port <= hi for lo, hi in pm.ranges):
        return True
    host = ipaddress.ip_network(ip)
    return any((host, proto, port) in _Members.of(program, sid) for sid in pm.named_sets)


def _side_matches(
    program: ir.Program, side: ir.Side, ip: ir.IPAddr, proto: int, port: int | None
) -> bool:
    if side.nets is not None and not _in_nets(ip, side.nets):
        return False
    if _in_nets(ip, side.not_nets):
        return False
    if not all(_in_set(program, ip, s) for s in side.sets):
        return False
    if any(_in_set(program, ip, s) for s in side.not_sets):
        return False
    if side.ports is not None and not _port_match(program, side.ports, ip, proto, port):
        return False
    return not (
        side.not_ports is not None and _port_match(program, side.not_ports, ip, proto, port)
    )


def _icmp_matches(t: int | None, c: int | None, flow: Flow) -> bool:
    if flow.protocol not in _ICMP or flow.icmp_type != t:
        return False
    return c is None or flow.icmp_code == c


def rule_matches(program: ir.Program, m: ir.Match, flow: Flow) -> bool:
    """All criteria of the rule, ANDed."""
    if m.ip_version is not None and flow.family != m.ip_version:
        return False
    if m.protocol is not None and flow.protocol != m.protocol:
        return False
    if m.not_protocol is not None and flow.protocol == m.not_protocol:
        return False
    if m.icmp_type is not None and not _icmp_matches(m.icmp_type, m.icmp_code, flow):
        return False
    if m.not_icmp_type is not None and _icmp_matches(m.not_icmp_type, m.not_icmp_code, flow):
        return False
    src_ok = _side_matches(program, m.src, flow.src_ip, flow.protocol, flow.src_port)
    return src_ok and _side_matches(program, m.dst, flow.dst_ip, flow.protocol, flow.dst_port)


def _run_tiers(
    program: ir.Program,
    ep: ir.Endpoint,
    direction: str,
    hook: str,
    flow: Flow,
    events: list[Step],
    end_of_tier_deny: bool,
) -> Step | None:
    """Tiers in order; returns the deciding step, or None to fall through (to profiles)."""
    for plan in ep.plan(direction, hook):
        passed = False
        for pid in plan.policies:
            policy = program.policies[pid]
            for rule in policy.rules(direction):
                if not rule_matches(program, rule.match, flow):
                    continue
                step = Step(
                    "rule", rule.action, ep.id, hook, plan.tier, pid, rule.index, rule.origin
                )
                events.append(step)
                if rule.action == ir.LOG:
                    continue
                if rule.action == ir.PASS:
                    passed = True
                    break
                return step
            if passed:
                break
        if passed or plan.default_action == ir.PASS or not end_of_tier_deny:
            continue
        step = Step("end-of-tier", ir.DENY, ep.id, hook, plan.tier)
        events.append(step)
        return step
    return None


def forward_step(program: ir.Program, via: ir.Endpoint, direction: str, flow: Flow) -> Step | None:
    """The forward step of a flow through host endpoint ``via``: its ``applyOnForward`` tiers of
    ``direction`` (egress: the flow leaves the node through ``via``; ingress: it enters through
    it), as :func:`evaluate` runs them once the flow's ordinary verdict allowed it. Returns the
    deciding step (a rule, or an end-of-tier deny), or None when no tier decides (the hook
    allows). Callers that need the whole flow use :func:`evaluate` with ``via=``."""
    return _run_tiers(program, via, direction, ir.FORWARD, flow, [], True)


def _run_profiles(
    program: ir.Program, ep: ir.Endpoint, direction: str, flow: Flow, events: list[Step]
) -> Step:
    for name in ep.profiles:
        profile = program.profiles.get(name)
        if profile is None:
            continue
        for rule in profile.rules(direction):
            if not rule_matches(program, rule.match, flow):
                continue
            step = Step(
                "profile-rule", rule.action, ep.id, ir.NORMAL, None, name, rule.index, rule.origin
            )
            events.append(step)
            if rule.action in (ir.ALLOW, ir.DENY):
                return step
            if rule.action == ir.PASS:
                break  # next profile
    step = Step("no-profile", ir.DENY, ep.id)
    events.append(step)
    return step


def _endpoint_verdict(
    program: ir.Program, ep: ir.Endpoint, direction: str, flow: Flow, events: list[Step]
) -> Step:
    step = _run_tiers(program, ep, direction, ir.NORMAL, flow, events, True)
    return step if step is not None else _run_profiles(program, ep, direction, flow, events)


def _failsafe(program: ir.Program, direction: str, flow: Flow) -> bool:
    ports = (
        program.felix.failsafe_inbound
        if direction == ir.INGRESS
        else program.felix.failsafe_outbound
    )
    peer = flow.src_ip if direction == ir.INGRESS else flow.dst_ip
    for fp in ports:
        if fp.protocol != flow.protocol or fp.port != flow.dst_port:
            continue
        if fp.net is None or (peer.version == fp.net.version and peer in fp.net):
            return True
    return False


def _host_verdict(
    program: ir.Program, hep: ir.Endpoint, direction: str, flow: Flow, events: list[Step]
) -> Step:
    """Traffic to (ingress) or from (egress) the host through a host endpoint."""
    if _failsafe(program, direction, flow):
        step = Step("failsafe", ir.ALLOW, hep.id)
        events.append(step)
        return step
    step = _run_tiers(program, hep, direction, ir.UNTRACKED, flow, events, False)
    if step is not None:
        return step
    if direction == ir.INGRESS:
        step = _run_tiers(program, hep, direction, ir.PRE_DNAT, flow, events, False)
        if step is not None and step.action == ir.DENY:
            return step
    return _endpoint_verdict(program, hep, direction, flow, events)


_BY_IP: WeakKeyDictionary[ir.Program, dict[tuple[bool, ir.IPAddr], ir.Endpoint]] = (
    WeakKeyDictionary()
)


def _find(program: ir.Program, ip: ir.IPAddr, host: bool) -> ir.Endpoint | None:
    """The first endpoint (in program order) of that kind with that address."""
    index = _BY_IP.get(program)
    if index is None:
        index = {}
        for ep in program.endpoints:
            for a in ep.ips:
                index.setdefault((ep.is_host, a), ep)
        _BY_IP[program] = index
    return index.get((host, ip))


def _host_node(program: ir.Program, ip: ir.IPAddr) -> str | None:
    for node, ips in program.host_ips.items():
        if ip in ips:
            return node
    return None


def _star_hep(program: ir.Program, node: str) -> ir.Endpoint | None:
    for ep in program.endpoints:
        if ep.is_host and ep.node == node and ep.interface == "*":
            return ep
    return None


def _direction(
    program: ir.Program, flow: Flow, direction: str, via: ir.Endpoint | None
) -> DirectionVerdict:
    events: list[Step] = []
    untracked = False
    if via is not None and direction == ir.INGRESS:
        deny, untracked = _forward_pre(program, via, flow, events)
        if deny is not None:
            return DirectionVerdict(direction, False, deny, tuple(events))
    ip = flow.src_ip if direction == ir.EGRESS else flow.dst_ip
    wep = _find(program, ip, host=False)
    if wep is not None:
        step = _endpoint_verdict(program, wep, direction, flow, events)
    else:
        hep = _find(program, ip, host=True)
        if hep is None and _host_node(program, ip) is not None:
            hep = _star_hep(program, _host_node(program, ip))  # type: ignore[arg-type]
        if hep is not None:
            step = _host_verdict(program, hep, direction, flow, events)
        else:
            step = Step("not-calico-endpoint", ir.ALLOW)
            events.append(step)
    if step.action == ir.ALLOW and via is not None and not untracked:
        fwd = _run_tiers(program, via, direction, ir.FORWARD, flow, events, True)
        if fwd is not None:
            step = fwd
    return DirectionVerdict(direction, step.action == ir.ALLOW, step, tuple(events))


def _forward_pre(
    program: ir.Program, via: ir.Endpoint, flow: Flow, events: list[Step]
) -> tuple[Step | None, bool]:
    """A flow entering the node through ``via`` (forwarded): failsafes, then ``via``'s
    doNotTrack and preDNAT ingress tiers. Returns (a deny step or None, untracked allow)."""
    if not _named(via) or _failsafe(program, ir.INGRESS, flow):
        return None, False
    step = _run_tiers(program, via, ir.INGRESS, ir.UNTRACKED, flow, events, False)
    if step is not None:
        return (step, False) if step.action == ir.DENY else (None, True)
    step = _run_tiers(program, via, ir.INGRESS, ir.PRE_DNAT, flow, events, False)
    if step is not None and step.action == ir.DENY:
        return step, False
    return None, False


def _named(ep: ir.Endpoint) -> bool:
    return bool(ep.interface) and ep.interface != "*"


def _to_own_host(
    program: ir.Program, flow: Flow, egress: DirectionVerdict
) -> DirectionVerdict | None:
    """Workload -> its own node: defaultEndpointToHostAction after the workload's egress."""
    src = _find(program, flow.src_ip, host=False)
    if src is None:
        return None
    dst_hep = _find(program, flow.dst_ip, host=True)
    dst_node = dst_hep.node if dst_hep is not None else _host_node(program, flow.dst_ip)
    if dst_node != src.node:
        return None
    action = program.felix.default_endpoint_to_host_action
    if action == "Return":
        star = _star_hep(program, src.node)
        if star is None:
            step = Step("endpoint-to-host", ir.ALLOW, src.id)
            return DirectionVerdict(ir.INGRESS, True, step, (step,))
        events: list[Step] = []
        step = _host_verdict(program, star, ir.INGRESS, flow, events)
        return DirectionVerdict(ir.INGRESS, step.action == ir.ALLOW, step, tuple(events))
    verdict = ir.ALLOW if action == "Accept" else ir.DENY
    step = Step("endpoint-to-host", verdict, src.id)
    return DirectionVerdict(ir.INGRESS, verdict == ir.ALLOW, step, (step,))


def _host_to_local_workload(program: ir.Program, flow: Flow) -> Verdict | None:
    """Felix does not police host -> local workload traffic at all (felix/rules/static.go,
    filterOutputChain: "We don't currently police host -> endpoint according to the endpoint's
    ingress policy"): the OUTPUT chain returns for packets to a workload interface before any
    host endpoint dispatch, so neither the host's egress nor the workload's ingress applies."""
    dst = _find(program, flow.dst_ip, host=False)
    if dst is None or _host_node(program, flow.src_ip) != dst.node:
        return None
    step = Step("host-to-local-workload", ir.ALLOW, dst.id)
    return Verdict(
        True,
        DirectionVerdict(ir.EGRESS, True, step, (step,)),
        DirectionVerdict(ir.INGRESS, True, step, (step,)),
    )


def evaluate(program: ir.Program, flow: Flow, via: str | None = None) -> Verdict:
    """Verdict and trace for the first packet of ``flow``.

    ``via`` optionally names the host endpoint (id) the flow is forwarded through, so that its
    applyOnForward policies are consulted: its forward ingress for a flow entering the node through
    it (after its doNotTrack and preDNAT ingress tiers, when it has a named interface: see the
    module docstring), its forward egress for a flow from one of the node's workloads leaving
    through it.
    """
    local = _host_to_local_workload(program, flow)
    if local is not None:
        return local
    via_ep = None
    if via is not None:
        via_ep = next((e for e in program.endpoints if e.id == via and e.is_host), None)
    # A flow crossing ``via`` either leaves the node through it (the source is a workload on
    # that node: the HEP's forward *egress* applies) or enters through it (the HEP's forward
    # *ingress* applies) — never both.
    src_wep = _find(program, flow.src_ip, host=False)
    leaving = via_ep is not None and src_wep is not None and src_wep.node == via_ep.node
    egress = _direction(program, flow, ir.EGRESS, via_ep if leaving else None)
    ingress = _to_own_host(program, flow, egress) if egress.allowed else None
    if ingress is None:
        ingress = _direction(program, flow, ir.INGRESS, None if leaving else via_ep)
    return Verdict(egress.allowed and ingress.allowed, egress, ingress)
