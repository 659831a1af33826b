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
    segment: int = -1  # kind == "segment": which segment starts here
    pass_to: int | None = None  # rule with a Pass action: target segment
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
                ops.append(
                    Op("T_ICMP_CODE_EQ", (str(m.not_icmp_type), str(m.not_icmp_code), miss))
                )
        ops += self._side("src", m.src, family, miss)
        ops += self._side("dst", m.dst, family, miss)
        return ops


def log_rule_id(owner: str, direction: str, index: int) -> int:
    return stable_id64(f"log:{owner}:{direction}:{index}")


def _rule_item(
    low: _RuleLowerer, rule: ir.Rule, owner: str, direction: str, pass_to: int
) -> tuple[_Item, LogRule | None]:
    miss = low.label("next")
    ops = [Op(comment=f"rule {rule.index}: {rule.action}")]
    ops += low.match(rule.match, miss)
    log = None
    if rule.action == ir.ALLOW:
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
    else:
        raise ValueError(f"unknown rule action {rule.action!r}")
    ops.append(Op("T_LABEL", (miss,)))
    item = _Item(ops, sum(_op_cost(o) for o in ops))
    if rule.action == ir.PASS:
        item.pass_to = pass_to
    return item, log


def lower(
    program: ir.Program, ep: ir.Endpoint, direction: str, budget: int
) -> Lowered:
    """Lower ``ep``'s policy for ``direction`` (NORMAL hook) into chunks of at most ``budget``
    cost units each (an item larger than the budget gets a chunk of its own)."""
    low = _RuleLowerer(program.sets)
    items: list[_Item] = []
    logs: list[LogRule] = []
    description: list[str] = []
    nrules = 0
    plans = ep.plan(direction)
    profiles = [name for name in ep.profiles if name in program.profiles]
    segment = 0
    for plan in plans:
        items.append(_Item([Op(comment=f"tier {sanitize(plan.tier)}")], 0, "segment", segment))
        description.append(f"tier {sanitize(plan.tier)} (end: {plan.default_action})")
        for pid in plan.policies:
            policy = program.policies[pid]
            rules = policy.rules(direction)
            description.append(f"  policy {sanitize(pid)}: {len(rules)} rules")
            items.append(_Item([Op(comment=f"policy {sanitize(pid)}")], 0, "note"))
            for rule in rules:
                item, log = _rule_item(low, rule, pid, direction, segment + 1)
                items.append(item)
                nrules += 1
                if log:
                    logs.append(log)
        if plan.default_action == ir.DENY:
            items.append(_Item([Op(comment="end of tier"), Op("T_DENY")], 1, "exit"))
        segment += 1
    for name in profiles:
        items.append(_Item([Op(comment=f"profile {sanitize(name)}")], 0, "segment", segment))
        description.append(f"profile {sanitize(name)}")
        for rule in program.profiles[name].rules(direction):
            item, log = _rule_item(low, rule, f"profile:{name}", direction, segment + 1)
            items.append(item)
            nrules += 1
            if log:
                logs.append(log)
        segment += 1
    items.append(_Item([Op(comment="no profile allowed")], 0, "segment", segment))
    items.append(_Item([Op("T_DENY")], 1, "exit"))
    chunks = _split(items, budget)
    return Lowered(
        chunks=chunks,
        set_ids=frozenset(low.used_sets),
        net_sets=dict(sorted(low.net_sets.items())),
        log_rules=tuple(logs),
        rules=nrules,
        description=tuple(description),
    )


def _split(items: list[_Item], budget: int) -> tuple[Chunk, ...]:
    groups: list[list[_Item]] = [[]]
    cost = 0
    for item in items:
        if groups[-1] and cost + item.cost > budget and item.kind in ("rule", "segment", "note"):
            groups.append([])
            cost = 0
        groups[-1].append(item)
        cost += item.cost
    where: dict[int, tuple[int, str]] = {}  # segment -> (chunk, label)
    for ci, group in enumerate(groups):
        for item in group:
            if item.kind == "segment":
                where[item.segment] = (ci, f"seg{item.segment}")
    landing: dict[int, set[int]] = {}  # chunk -> segments entered by tail call
    chunks = []
    for ci, group in enumerate(groups):
        ops: list[Op] = []
        for item in group:
            if item.kind == "segment":
                ops.append(Op("T_LABEL", (f"seg{item.segment}",)))
            for op in item.ops:
                if op.macro != "T_PASS":
                    ops.append(op)
                    continue
                target_chunk, label = where[item.pass_to]  # type: ignore[index]
                if target_chunk == ci:
                    ops.append(Op("T_GOTO", (label,)))
                else:
                    landing.setdefault(target_chunk, set()).add(item.pass_to)  # type: ignore[arg-type]
                    ops.append(Op("T_JUMP", (str(item.pass_to + 1), str(target_chunk))))  # type: ignore[operator]
        if ci + 1 < len(groups):
            ops.append(Op(comment="continue in the next chunk"))
            ops.append(Op("T_JUMP", ("0", str(ci + 1))))
        chunks.append(ops)
    out = []
    for ci, ops in enumerate(chunks):
        pads = [
            Op("T_RESUME", (str(seg + 1), f"seg{seg}")) for seg in sorted(landing.get(ci, ()))
        ]
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
