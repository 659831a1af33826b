"""Lowering: one endpoint's policy list for one direction -> macro ops, split into chunks.

The evaluation order is SEMANTICS.md §Evaluation order, exactly as ``compiler/ir/evaluate.py``
runs it: the tiers that take part, in order; in a tier the policies in order; rules in order
(first Allow/Deny decides, Log counts and continues, Pass jumps to the next tier); the end of a
``Deny`` tier denies; then the profiles in order (Pass there moves on to the next profile, as the
evaluator chooses); then "no profile" denies.

The result is a flat list of *items* (a rule, a segment label, an end-of-tier deny), cut into
chunks that each become one tail-called BPF program. Items never straddle chunks. A Pass whose
target (the next tier or profile) lies in a later chunk stores a landing-pad id in the per-packet
state and tail-calls that chunk, which starts with ``T_RESUME`` lines for its landing pads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.targets.ebpf.layout import split_id, stable_id64

_COMMENT_OK = re.compile(r"[^A-Za-z0-9_.:/=,+@ -]")


def sanitize(text: str, limit: int = 120) -> str:
    """Text from YAML, made safe for a C comment: an allowlist of characters, nothing else.

    >>> sanitize("np/ns/web */ evil(); /*")
    'np/ns/web _/ evil___ /_'
    """
    return _COMMENT_OK.sub("_", text)[:limit]


@dataclass(frozen=True, slots=True)
class Op:
    """One line of generated C: ``MACRO(args);`` or a comment."""

    macro: str = ""
    args: tuple[str, ...] = ()
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    ops: tuple[Op, ...]


@dataclass(slots=True)
class _Item:
    ops: list[Op]
    cost: int
    kind: str = "rule"  # "rule" | "segment" | "exit"
    segment: str = ""  # kind == "segment": the name of the segment that starts here
    pass_to: str | None = None  # T_PASS target: a segment name, or NEXT
    log_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LogRule:
    id64: int
    owner: str  # policy id or "profile:<name>"
    direction: str
    rule_index: int


@dataclass(frozen=True, slots=True)
class Lowered:
    chunks: tuple[Chunk, ...]
    set_ids: frozenset[str]  # IR set ids the code refers to
    net_sets: Mapping[str, tuple[int, tuple[ir.IPNet, ...]]]  # synthetic: id -> (family, nets)
    log_rules: tuple[LogRule, ...]
    rules: int  # policy + profile rules lowered
    description: tuple[str, ...]


def _net_sort(n: ir.IPNet) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def _hex(v: int) -> str:
    return f"0x{v:08x}u"


def _net_words(net: ir.IPNet) -> tuple[list[int], list[int]]:
    addr = int(net.network_address)
    mask = int(net.netmask)
    if net.version == 4:
        return [addr], [mask]
    return (
        [(addr >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)],
        [(mask >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)],
    )


# Estimated BPF instructions per op (checked against xlated sizes by tests/kernel/
# test_ebpf_scale.py). A chunk's budget is in these units.
_COST: Mapping[str, int] = {
    "T_LABEL": 0,
    "T_GOTO": 1,
    "T_ALLOW": 1,
    "T_DENY": 1,
    "T_NET4_IN": 4,
    "T_NET6_IN": 16,
    "T_SET4_IN": 8,
    "T_SET4_OUT": 8,
    "T_SET6_IN": 9,
    "T_SET6_OUT": 9,
    "T_NPORT4_IN": 10,
    "T_NPORT6_IN": 11,
    "T_PORT_IN": 4,
    "T_ICMP_NE": 5,
    "T_ICMP_CODE_NE": 7,
    "T_ICMP_EQ": 5,
    "T_ICMP_CODE_EQ": 7,
    "T_LOG": 6,
    "T_JUMP": 6,
}
# Rules with more CIDRs than this on one side test membership of a synthetic LPM set instead
# of inline compares, which bounds the code (and the jump distances) of any one rule.
NETS_INLINE_MAX = 8


def _op_cost(op: Op) -> int:
    if op.comment is not None:
        return 0
    return _COST.get(op.macro, 2)


class _RuleLowerer:
    def __init__(self, sets: Mapping[str, ir.AddrSet]) -> None:
        self.sets = sets
        self.used_sets: set[str] = set()
        self.net_sets: dict[str, tuple[int, tuple[ir.IPNet, ...]]] = {}
        self.n = 0

    def label(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def _set_args(self, sid: str) -> tuple[str, str]:
        if sid not in self.net_sets:
            self.used_sets.add(sid)
        hi, lo = split_id(stable_id64(sid))
        return _hex(hi), _hex(lo)

    def _net_set(self, nets: Sequence[ir.IPNet], family: int) -> str | None:
        """A synthetic set for a long CIDR list (None when the list stays inline)."""
        mine = sorted({n for n in nets if n.version == family}, key=_net_sort)
        if len(mine) <= NETS_INLINE_MAX or any(n.prefixlen == 0 for n in mine):
            return None
        text = ",".join(map(str, mine))
        sid = f"tortie:nets:{hashlib.sha256(text.encode()).hexdigest()[:32]}:{family}"
        self.net_sets[sid] = (family, tuple(mine))
        return sid

    def _nets_in(self, side: str, nets: Sequence[ir.IPNet], family: int, target: str) -> list[Op]:
        ops = []
        for net in nets:
            if net.version != family:
                continue
            a, m = _net_words(net)
            if net.prefixlen == 0:
                ops.append(Op("T_GOTO", (target,)))
                break
            if family == 4:
                ops.append(Op("T_NET4_IN", (side, _hex(a[0]), _hex(m[0]), target)))
            else:
                ops.append(Op("T_NET6_IN", (side, *map(_hex, a), *map(_hex, m), target)))
        return ops

    def _ports_in(self, side: str, pm: ir.PortMatch, family: int, target: str) -> list[Op]:
        ops = []
        for lo, hi in sorted(set(pm.ranges)):
            if lo == hi:
                ops.append(Op("T_PORT_EQ", (side, str(lo), target)))
            elif lo <= 0 and hi >= 65535:
                ops.append(Op("T_GOTO", (target,)))
                break
            else:
                ops.append(Op("T_PORT_IN", (side, str(lo), str(hi), target)))
        for sid in sorted(set(pm.named_sets)):
            ops.append(Op(f"T_NPORT{family}_IN", (side, *self._set_args(sid), target)))
        return ops

    def _side(self, side_name: str, side: ir.Side, family: int, miss: str) -> list[Op]:
        ops: list[Op] = []
        if side.nets is not None:
            big = self._net_set(side.nets, family)
            if big is not None:
                ops.append(Op(f"T_SET{family}_OUT", (side_name, *self._set_args(big), miss)))
            else:
                ok = self.label("ok")
                tests = self._nets_in(side_name, side.nets, family, ok)
                ops += [*tests, Op("T_GOTO", (miss,)), Op("T_LABEL", (ok,))]
        big = self._net_set(side.not_nets, family)
        if big is not None:
            ops.append(Op(f"T_SET{family}_IN", (side_name, *self._set_args(big), miss)))
        else:
            ops += self._nets_in(side_name, side.not_nets, family, miss)
        for sid in side.sets:
            ops.append(Op(f"T_SET{family}_OUT", (side_name, *self._set_args(sid), miss)))
        for sid in side.not_sets:
            ops.append(Op(f"T_SET{family}_IN", (side_name, *self._set_args(sid), miss)))
        if side.ports is not None:
            ok = self.label("ok")
            tests = self._ports_in(side_name, side.ports, family, ok)
            ops += [Op("T_NO_PORTS", (miss,)), *tests, Op("T_GOTO", (miss,)), Op("T_LABEL", (ok,))]
        if side.not_ports is not None:
            skip = self.label("np")
            tests = self._ports_in(side_name, side.not_ports, family, miss)
            ops += [Op("T_NO_PORTS", (skip,)), *tests, Op("T_LABEL", (skip,))]
        return ops

    def match(self, m: ir.Match, miss: str) -> list[Op]:
        family = m.ip_version
        if family not in (4, 6):
            raise ValueError("eBPF lowering needs family-split rules (ip_version 4 or 6)")
        ops = [Op("T_FAMILY_NE", (str(family), miss))]
        if m.protocol is not None:
            ops.append(Op("T_PROTO_NE", (str(m.protocol), miss)))
        if m.not_protocol is not None:
            ops.append(Op("T_PROTO_EQ", (str(m.not_protocol), miss)))
        if m.icmp_type is not None:
            if m.icmp_code is None:
                ops.append(Op("T_ICMP_NE", (str(m.icmp_type), miss)))
            else:
                ops.append(Op("T_ICMP_CODE_NE", (str(m.icmp_type), str(m.icmp_code), miss)))
        if m.not_icmp_type is not None:
            if m.not_icmp_code is None:
                ops.append(Op("T_ICMP_EQ", (str(m.not_icmp_type), miss)))
            else:
                ops.append(Op("T_ICMP_CODE_EQ", (str(m.not_icmp_type), str(m.not_icmp_code), miss)))
        ops += self._side("src", m.src, family, miss)
        ops += self._side("dst", m.dst, family, miss)
        return ops


def _without_nets(m: ir.Match, side: str) -> ir.Match | None:
    """``m`` with ``side``'s positive nets cleared (None when that side has none to merge)."""
    s = m.src if side == "src" else m.dst
    if s.nets is None:
        return None
    cleared = dataclasses.replace(s, nets=None)
    return (
        dataclasses.replace(m, src=cleared)
        if side == "src"
        else dataclasses.replace(m, dst=cleared)
    )


def net_runs(rules: Sequence[ir.Rule]) -> list[tuple[list[ir.Rule], str]]:
    """``rules`` cut into runs to merge (:func:`merged`), each with the side whose CIDRs differ
    ("" for a rule alone): consecutive rules with one action (not Log) that differ only in the
    positive CIDRs of one side; every other rule alone.

    First match among rules of one action is that action whenever any of them matches, and the
    union of their CIDRs is exactly "in one of the lists", so the verdict of every packet is the
    same. A run of /32 rules (10,000 rules allowing one address each) is then one LPM set lookup
    instead of 10,000 compares (``_net_set``): the per-packet cost no longer grows with the rule
    count. The rules of a tier's policies are one sequence for this (a policy without a match
    goes on to the next one), so a run may cross policies.
    """
    out: list[tuple[list[ir.Rule], str]] = []
    run: list[ir.Rule] = []
    side = ""
    keys: dict[str, ir.Match | None] = {}  # the run's match without each side's CIDRs
    for rule in rules:
        if run and rule.action == run[0].action:
            sides = (side,) if side else ("src", "dst")
            joined = next(
                (
                    s
                    for s in sides
                    if keys[s] is not None and _without_nets(rule.match, s) == keys[s]
                ),
                "",
            )
            if joined:
                side = joined
                run.append(rule)
                continue
        if run:
            out.append((run, side))
        side = ""
        if rule.action != ir.LOG and not rule.http_ignored:
            run = [rule]
            keys = {s: _without_nets(rule.match, s) for s in ("src", "dst")}
        else:
            out.append(([rule], ""))
            run = []
    if run:
        out.append((run, side))
    return out


def merged(run: Sequence[ir.Rule], side: str) -> ir.Rule:
    """One rule for a run of :func:`net_runs`: the first, with the union of the run's CIDRs on
    ``side``."""
    first = run[0]
    if len(run) == 1:
        return first
    nets = tuple(dict.fromkeys(n for r in run for n in (getattr(r.match, side).nets or ())))
    merged_side = dataclasses.replace(getattr(first.match, side), nets=nets)
    return dataclasses.replace(first, match=dataclasses.replace(first.match, **{side: merged_side}))


def merge_net_runs(rules: Sequence[ir.Rule]) -> list[tuple[ir.Rule, int]]:
    """:func:`net_runs` merged: each rule with the index of the last rule it stands for."""
    return [(merged(run, side), run[-1].index) for run, side in net_runs(rules)]


def log_rule_id(owner: str, direction: str, index: int) -> int:
    return stable_id64(f"log:{owner}:{direction}:{index}")


def _rule_item(
    low: _RuleLowerer,
    rule: ir.Rule,
    owner: str,
    direction: str,
    allow_to: str | None = None,
    which: str | None = None,
) -> tuple[_Item, LogRule | None]:
    """One rule (``which`` names the rules it stands for when :func:`net_runs` merged several).
    Pass goes to the next segment; ``allow_to`` turns Allow into a jump to that segment
    (pre-DNAT policy: an Allow only ends the pre-DNAT stage)."""
    miss = low.label("next")
    ops = [Op(comment=f"{which or f'rule {rule.index}'}: {rule.action}")]
    ops += low.match(rule.match, miss)
    log = None
    item = _Item(ops, 0)
    if rule.action == ir.ALLOW and allow_to is not None:
        ops.append(Op("T_PASS"))
        item.pass_to = allow_to
    elif rule.action == ir.ALLOW:
        ops.append(Op("T_ALLOW"))
    elif rule.action == ir.DENY:
        ops.append(Op("T_DENY"))
    elif rule.action == ir.LOG:
        rid = log_rule_id(owner, direction, rule.index)
        hi, lo = split_id(rid)
        ops.append(Op("T_LOG", (_hex(hi), _hex(lo))))
        log = LogRule(rid, owner, direction, rule.index)
    elif rule.action == ir.PASS:
        ops.append(Op("T_PASS"))  # resolved once chunks are known
        item.pass_to = NEXT
    else:
        raise ValueError(f"unknown rule action {rule.action!r}")
    ops.append(Op("T_LABEL", (miss,)))
    item.cost = sum(_op_cost(o) for o in ops)
    return item, log


NEXT = "<next>"  # pass target: the segment after the current one


class _Builder:
    """Items in evaluation order; segments are named, Pass targets refer to names."""

    def __init__(self, program: ir.Program, direction: str) -> None:
        self.program = program
        self.direction = direction
        self.low = _RuleLowerer(program.sets)
        self.items: list[_Item] = []
        self.logs: list[LogRule] = []
        self.description: list[str] = []
        self.rules = 0

    def segment(self, key: str, comment: str) -> None:
        self.items.append(_Item([Op(comment=comment)], 0, "segment", key))

    def rule(
        self, rule: ir.Rule, owner: str, allow_to: str | None = None, which: str | None = None
    ) -> None:
        item, log = _rule_item(self.low, rule, owner, self.direction, allow_to, which)
        self.items.append(item)
        self.rules += 1
        if log:
            self.logs.append(log)

    def exit(self, macro: str, comment: str) -> None:
        self.items.append(_Item([Op(comment=comment), Op(macro)], 1, "exit"))

    def tiers(
        self,
        ep: ir.Endpoint,
        hook: str,
        end_of_tier_deny: bool,
        allow_to: str | None = None,
        key: str = "",
    ) -> None:
        for i, plan in enumerate(ep.plan(self.direction, hook)):
            name = sanitize(plan.tier)
            self.segment(f"{key}{hook}:tier:{i}", f"{hook} tier {name}")
            self.description.append(f"{hook} tier {name} (end: {plan.default_action})")
            seq: list[tuple[str, ir.Rule]] = []
            for pid in plan.policies:
                rules = self.program.policies[pid].rules(self.direction)
                self.description.append(f"  policy {sanitize(pid)}: {len(rules)} rules")
                seq += [(pid, r) for r in rules]
            pos, noted = 0, None
            for run, side in net_runs([r for _, r in seq]):
                pid, last_pid = seq[pos][0], seq[pos + len(run) - 1][0]
                pos += len(run)
                if pid != noted:
                    self.items.append(_Item([Op(comment=f"policy {sanitize(pid)}")], 0, "note"))
                which = None
                if len(run) > 1:
                    which = f"rules {run[0].index}-{run[-1].index}"
                    if last_pid != pid:
                        which = f"rules {run[0].index}.. to rule {run[-1].index} of policy {sanitize(last_pid)}"
                self.rule(merged(run, side), pid, allow_to, which)
                noted = last_pid
            if end_of_tier_deny and plan.default_action == ir.DENY:
                self.exit("T_DENY", "end of tier")

    def profiles(self, ep: ir.Endpoint) -> None:
        for i, name in enumerate(ep.profiles):
            if name not in self.program.profiles:
                continue
            self.segment(f"profile:{i}", f"profile {sanitize(name)}")
            self.description.append(f"profile {sanitize(name)}")
            for rule in self.program.profiles[name].rules(self.direction):
                self.rule(rule, f"profile:{name}")
        self.segment("no-profile", "no profile allowed")
        self.exit("T_DENY", "deny")

    def failsafes(self, key: str = "", allow_to: str | None = None) -> None:
        """Failsafe ports as Allow rules on the destination port (peer net, if any, on the
        remote side), in both families; ``allow_to`` as in :func:`_rule_item`."""
        felix = self.program.felix
        inbound = self.direction == ir.INGRESS
        ports = felix.failsafe_inbound if inbound else felix.failsafe_outbound
        self.segment(f"{key}failsafe", "failsafe ports")
        for i, fp in enumerate(ports):
            for family in (4, 6):
                if fp.net is not None and fp.net.version != family:
                    continue
                peer = ir.Side(nets=(fp.net,) if fp.net is not None else None)
                dst_ports = ir.PortMatch(((fp.port, fp.port),))
                dst = ir.Side(nets=peer.nets if not inbound else None, ports=dst_ports)
                src = peer if inbound else ir.Side()
                m = ir.Match(ip_version=family, protocol=fp.protocol, src=src, dst=dst)
                self.rule(ir.Rule(ir.ALLOW, m, i), "failsafe", allow_to)


def lower(program: ir.Program, ep: ir.Endpoint, direction: str, budget: int) -> Lowered:
    """Lower ``ep``'s policy for ``direction`` into chunks of at most ``budget`` cost units
    each (an item larger than the budget gets a chunk of its own).

    A workload runs its tiers, then its profiles. A host endpoint's program first asks whether
    the packet is host traffic (to this node's IPs at tc ingress, from them at tc egress). Host
    traffic runs, as ``evaluate._host_verdict``: failsafe ports, untracked tiers and (ingress)
    pre-DNAT tiers without end-of-tier drop (a pre-DNAT Allow only ends that stage), then the
    normal tiers and profiles. Forwarded traffic runs the applyOnForward tiers and is allowed
    when none decides (SEMANTICS.md §Host endpoints: forwarding is allowed by default).

    Forwarded traffic entering through a HEP with a named interface first meets, as in the
    evaluator's ``_forward_pre``: the inbound failsafe ports (a match skips to the
    applyOnForward tiers), its doNotTrack ingress tiers (Allow allows here and skips the
    applyOnForward tiers) and its preDNAT tiers (Allow skips to the applyOnForward tiers)."""
    b = _Builder(program, direction)
    if ep.is_host:
        b.segment("host", "host traffic?")
        skip = b.low.label("local")
        macro = "T_HOST_DST_IN" if direction == ir.INGRESS else "T_HOST_SRC_IN"
        item = _Item([Op(macro, (skip,)), Op("T_PASS"), Op("T_LABEL", (skip,))], 10, "rule")
        item.pass_to = "forward"
        b.items.append(item)
        b.failsafes()
        b.tiers(ep, ir.UNTRACKED, end_of_tier_deny=False)
        if direction == ir.INGRESS:
            b.tiers(ep, ir.PRE_DNAT, end_of_tier_deny=False, allow_to="normal")
        b.segment("normal", "normal policy")
    b.tiers(ep, ir.NORMAL, end_of_tier_deny=True)
    b.profiles(ep)
    if ep.is_host:
        b.segment("forward", "forwarded traffic")
        pre = ep.plan(direction, ir.UNTRACKED) or (
            direction == ir.INGRESS and ep.plan(direction, ir.PRE_DNAT)
        )
        if direction == ir.INGRESS and _named(ep) and pre:
            b.failsafes(key="forward-", allow_to="forward-policy")
            b.tiers(ep, ir.UNTRACKED, end_of_tier_deny=False, key="forward-")
            b.tiers(ep, ir.PRE_DNAT, False, allow_to="forward-policy", key="forward-")
            b.segment("forward-policy", "applyOnForward policy")
        b.tiers(ep, ir.FORWARD, end_of_tier_deny=True)
        b.segment("forward-allow", "forwarding is allowed by default")
        b.exit("T_ALLOW", "allow")
    return Lowered(
        chunks=_split(b.items, budget),
        set_ids=frozenset(b.low.used_sets),
        net_sets=dict(sorted(b.low.net_sets.items())),
        log_rules=tuple(b.logs),
        rules=b.rules,
        description=tuple(b.description),
    )


def _named(ep: ir.Endpoint) -> bool:
    """A HEP with one named interface (not ``*``, not found by address)."""
    return bool(ep.interface) and ep.interface != "*"


def _split(items: list[_Item], budget: int) -> tuple[Chunk, ...]:
    groups: list[list[_Item]] = [[]]
    cost = 0
    for item in items:
        if groups[-1] and cost + item.cost > budget and item.kind in ("rule", "segment", "note"):
            groups.append([])
            cost = 0
        groups[-1].append(item)
        cost += item.cost
    # Segments in order: number n has C label seg<n> and landing-pad id n + 1.
    order = [item.segment for item in items if item.kind == "segment"]
    number = {key: n for n, key in enumerate(order)}
    where: dict[int, int] = {}  # segment number -> chunk
    for ci, group in enumerate(groups):
        for item in group:
            if item.kind == "segment":
                where[number[item.segment]] = ci
    landing: dict[int, set[int]] = {}  # chunk -> segments entered by tail call
    chunks = []
    current = -1
    for ci, group in enumerate(groups):
        ops: list[Op] = []
        for item in group:
            if item.kind == "segment":
                current = number[item.segment]
                ops.append(Op("T_LABEL", (f"seg{current}",)))
            for op in item.ops:
                if op.macro != "T_PASS":
                    ops.append(op)
                    continue
                seg = current + 1 if item.pass_to == NEXT else number[item.pass_to]
                if where[seg] == ci:
                    ops.append(Op("T_GOTO", (f"seg{seg}",)))
                else:
                    landing.setdefault(where[seg], set()).add(seg)
                    ops.append(Op("T_JUMP", (str(seg + 1), str(where[seg]))))
        if ci + 1 < len(groups):
            ops.append(Op(comment="continue in the next chunk"))
            ops.append(Op("T_JUMP", ("0", str(ci + 1))))
        chunks.append(ops)
    out = []
    for ci, ops in enumerate(chunks):
        pads = [Op("T_RESUME", (str(seg + 1), f"seg{seg}")) for seg in sorted(landing.get(ci, ()))]
        out.append(Chunk(ci, tuple(pads + ops)))
    return tuple(out)


def host_ips(program: ir.Program) -> tuple[ir.IPAddr, ...]:
    """This node's own addresses (for defaultEndpointToHostAction): node IPs and the
    expectedIPs of its host endpoints, as the evaluator counts them."""
    ips = set(program.host_ips.get(program.node or "", ()))
    for ep in program.endpoints:
        if ep.is_host and ep.node == program.node:
            ips.update(ep.ips)
    return tuple(sorted(ips, key=lambda a: (a.version, int(a))))


def net_of(addr: ir.IPAddr) -> ir.IPNet:
    return ipaddress.ip_network(addr)
