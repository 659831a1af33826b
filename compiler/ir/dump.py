"""A stable, readable text form of a :class:`~compiler.ir.nodes.Program` (``tortie ir``).

The dump is for people and for golden files, so it is sorted everywhere, free of Python reprs and
independent of the machine: tiers in evaluation order, then policies, profiles, sets, network
sets and endpoints by id. Each rule is one line::

    #2 allow v4 proto=TCP src{sets=s:…:4} dst{ports=80,8000:8100,n:…:4}  @policy.yaml:14:7

Rule numbers are 1-based positions in the list the user wrote (the IR keeps them through every
pass, so a gap means a rule was dropped, and the v4 and v6 copies of one rule share a number).

>>> from compiler.ir.nodes import Match, PortMatch, Side
>>> format_match(Match(ip_version=4, protocol=6, dst=Side(ports=PortMatch(((80, 80), (8000, 8100))))))
'v4 proto=TCP dst{ports=80,8000:8100}'
"""

from __future__ import annotations

import math

from compiler.diagnostics import NO_SPAN, Span
from compiler.frontend.model import PROTOCOL_NAMES
from compiler.ir.nodes import DIRECTIONS, HOOKS, Match, PortMatch, Program, Rule, Side

__all__ = ["dump", "format_match", "format_rule", "protocol_name", "rule_words"]


_CONVERTED_KINDS = frozenset({"KubernetesNetworkPolicy", "StagedKubernetesNetworkPolicy"})


def rule_words(kind: str | None, index: int) -> str:
    """``rule N`` counted from 1. A Kubernetes NetworkPolicy's rules are numbered in its Calico
    form (one rule per peer and protocol), which can differ from the YAML's list, so say so."""
    if kind in _CONVERTED_KINDS:
        return f"converted rule {index + 1}"
    return f"rule {index + 1}"


def protocol_name(proto: int) -> str:
    return PROTOCOL_NAMES.get(proto, str(proto))


def _order(order: float | None) -> str:
    if order is None or math.isinf(order):
        return "none"
    return f"{order:.15g}"


def _ports(pm: PortMatch) -> str:
    parts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in pm.ranges]
    parts += list(pm.named_sets)
    return ",".join(parts) if parts else "(none)"


def _side(side: Side) -> str:
    parts = []
    if side.nets is not None:
        parts.append("nets=" + (",".join(map(str, side.nets)) or "(none)"))
    if side.not_nets:
        parts.append("!nets=" + ",".join(map(str, side.not_nets)))
    if side.sets:
        parts.append("sets=" + ",".join(side.sets))
    if side.not_sets:
        parts.append("!sets=" + ",".join(side.not_sets))
    if side.ports is not None:
        parts.append("ports=" + _ports(side.ports))
    if side.not_ports is not None:
        parts.append("!ports=" + _ports(side.not_ports))
    return " ".join(parts)


def _icmp(t: int, c: int | None) -> str:
    return f"{t}" if c is None else f"{t}/{c}"


def format_match(m: Match) -> str:
    """The match criteria on one line (``any`` when there are none)."""
    parts = []
    if m.ip_version is not None:
        parts.append(f"v{m.ip_version}")
    if m.protocol is not None:
        parts.append(f"proto={protocol_name(m.protocol)}")
    if m.not_protocol is not None:
        parts.append(f"!proto={protocol_name(m.not_protocol)}")
    if m.icmp_type is not None:
        parts.append(f"icmp={_icmp(m.icmp_type, m.icmp_code)}")
    if m.not_icmp_type is not None:
        parts.append(f"!icmp={_icmp(m.not_icmp_type, m.not_icmp_code)}")
    for name, side in (("src", m.src), ("dst", m.dst)):
        if not side.is_any:
            parts.append(f"{name}{{{_side(side)}}}")
    return " ".join(parts) if parts else "any"


def _at(span: Span) -> str:
    return "" if span == NO_SPAN else f"  @{span}"


def format_rule(r: Rule) -> str:
    http = " (http match not enforced)" if r.http_ignored else ""
    return f"#{r.index + 1} {r.action} {format_match(r.match)}{http}{_at(r.origin)}"


def _rule_lists(out: list[str], rules_of, directions: tuple[str, ...]) -> None:  # noqa: ANN001
    for d in directions:
        rules = rules_of(d)
        out.append(f"    {d}:" + ("" if rules else " (no rules)"))
        out.extend(f"      {format_rule(r)}" for r in rules)


def _flags(p) -> str:  # noqa: ANN001 - a Policy
    flags = [
        name
        for name, on in (
            ("staged", p.staged),
            ("doNotTrack", p.do_not_track),
            ("preDNAT", p.pre_dnat),
            ("applyOnForward", p.apply_on_forward),
        )
        if on
    ]
    return (" " + " ".join(flags)) if flags else ""


def dump(program: Program) -> str:
    """The whole program as text (ends with a newline)."""
    out = [f"program node={program.node or '*'}"]
    felix = program.felix
    out.append(
        f"felix deny={felix.deny_action} endpoint-to-host={felix.default_endpoint_to_host_action}"
    )
    tiers = sorted(
        program.tiers.values(),
        key=lambda t: (t.order is None, math.inf if t.order is None else t.order, t.name),
    )
    out.append("tiers:")
    out.extend(f"  {t.name} order={_order(t.order)} default={t.default_action}" for t in tiers)

    out.append("policies:")
    for pid, p in program.policies.items():
        out.append(
            f"  {pid} tier={p.tier} order={_order(p.order)} types={','.join(p.types)}{_flags(p)}"
            f"{_at(p.origin)}"
        )
        out.append(f"    selector: {p.selector}")
        _rule_lists(out, p.rules, tuple(d for d in DIRECTIONS if d in p.types))
    out.append("profiles:")
    for name, prof in program.profiles.items():
        out.append(f"  {name}{_at(prof.origin)}")
        _rule_lists(out, prof.rules, DIRECTIONS)

    out.append("sets:")
    for sid, s in program.sets.items():
        fam = f" v{s.family}" if s.family else ""
        if s.is_named_port:
            proto = protocol_name(s.port_protocol) if s.port_protocol is not None else "any"
            out.append(f"  {sid}{fam} named-port {s.port_name}/{proto} of: {s.selector}")
            if s.port_members is None:
                out.append("    (unresolved)")
            else:
                members = sorted(s.port_members, key=lambda t: (t[0].version, t[0], t[1], t[2]))
                text = " ".join(
                    f"{n.network_address}/{protocol_name(pr)}:{po}" for n, pr, po in members
                )
                out.append(f"    members: {text or '(none)'}")
        else:
            out.append(f"  {sid}{fam} selector: {s.selector}")
            if s.members is None:
                out.append("    (unresolved)")
            else:
                text = " ".join(str(n) for n in sorted(s.members, key=lambda n: (n.version, n)))
                out.append(f"    members: {text or '(none)'}")

    netsets = [x for x in program.selectables if x.kind in ("NetworkSet", "GlobalNetworkSet")]
    out.append("network sets:")
    for x in sorted(netsets, key=lambda x: x.id):
        nets = " ".join(str(n) for n in sorted(x.nets, key=lambda n: (n.version, n)))
        out.append(f"  {x.id} {x.kind} nets: {nets or '(none)'}")
        out.append("    labels: " + _labels(x.labels))

    out.append("endpoints:")
    for e in program.endpoints:
        ips = ",".join(map(str, e.ips)) or "(none)"
        out.append(f"  {e.id} {e.kind} node={e.node} iface={e.interface or '-'} ips={ips}")
        out.append("    labels: " + _labels(e.labels))
        out.append("    profiles: " + (",".join(e.profiles) or "(none)"))
        if e.ports:
            ports = sorted((p.name, p.protocol, p.port) for p in e.ports)
            out.append(
                "    ports: " + " ".join(f"{n}={protocol_name(pr)}:{po}" for n, pr, po in ports)
            )
        for hook in HOOKS:
            for d in DIRECTIONS:
                plan = e.plan(d, hook)
                if plan:
                    tiers_txt = " > ".join(
                        f"{t.tier}({t.default_action})[{' '.join(t.policies)}]" for t in plan
                    )
                    out.append(f"    {hook} {d}: {tiers_txt}")

    if program.host_ips:
        out.append("host ips:")
        for node, ips in program.host_ips.items():
            out.append(f"  {node}: {','.join(map(str, ips))}")
    if program.dropped_rules:
        out.append("dropped rules:")
        out.extend(f"  {owner} {d} #{i + 1}" for owner, i, d in program.dropped_rules)
    return "\n".join(out) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels) or "(none)"
