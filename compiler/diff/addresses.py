"""The address half of a flow: what the evaluator can observe about one IP address.

Rules see an address only through

* membership of selector sets (``members``: IPs and network-set CIDRs),
* membership of named-port sets (exact ``(host, protocol, port)`` triples),
* containment in inline ``nets`` / ``notNets`` CIDRs,
* containment in failsafe-port CIDRs (host endpoints only),

and the evaluator finds the *owner* of an address (first workload endpoint with it, else a host
endpoint, else a node's own address through the node's ``*`` host endpoint) — see
``subjects.py`` for the owner side.

All of those are prefixes, and CIDRs either nest or are disjoint, so one sweep over the prefix
boundaries of **both** trees cuts each family's address space into intervals whose addresses are
indistinguishable: :func:`sweep`. Endpoint and node addresses are cut out as single-address
intervals of their own (they are compared by who they belong to, not as anonymous addresses).

>>> import ipaddress
>>> net = ipaddress.ip_network
>>> regions = sweep({net("10.0.0.0/8"): frozenset({"a"}), net("10.1.0.0/16"): frozenset({"b"})},
...                 [int(ipaddress.ip_address("10.1.2.3"))], 4)
>>> [(str(ipaddress.ip_address(r.lo)), sorted(r.tags), r.point) for r in regions][:5]
[('0.0.0.0', [], False), ('10.0.0.0', ['a'], False), ('10.1.0.0', ['a', 'b'], False), ('10.1.2.3', ['a', 'b'], True), ('10.1.2.4', ['a', 'b'], False)]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from compiler.ir import nodes as ir

__all__ = ["EMPTY", "AddrProps", "Region", "Tags", "collect", "props", "sweep", "top"]

Tags = frozenset
EMPTY: frozenset = frozenset()


def top(family: int) -> int:
    return (1 << (32 if family == 4 else 128)) - 1


@dataclass(frozen=True, slots=True)
class Region:
    """An interval ``[lo, hi]`` of addresses with the same tags; ``point`` for a cut-out address."""

    lo: int
    hi: int
    tags: frozenset
    point: bool = False


def sweep(
    prefixes: Mapping[ir.IPNet, frozenset], points: Iterable[int], family: int
) -> list[Region]:
    """Cut the family's address space at every prefix boundary and around every point.

    Relies on CIDRs nesting (a prefix that starts inside another ends inside it), so the prefixes
    covering an interval form a stack and their tags accumulate down it."""
    items = sorted(
        ((int(n.network_address), int(n.broadcast_address), t) for n, t in prefixes.items()),
        key=lambda x: (x[0], -x[1]),
    )
    pts = set(points)
    bounds = {0, top(family) + 1}
    for lo, hi, _ in items:
        bounds.update((lo, hi + 1))
    for p in pts:
        bounds.update((p, p + 1))
    cuts = sorted(bounds)
    stack: list[tuple[int, frozenset]] = []
    out: list[Region] = []
    j = 0
    for start, nxt in zip(cuts, cuts[1:], strict=False):
        while stack and stack[-1][0] < start:
            stack.pop()
        while j < len(items) and items[j][0] == start:
            _, hi, tags = items[j]
            parent = stack[-1][1] if stack else EMPTY
            stack.append((hi, parent | tags))
            j += 1
        tags = stack[-1][1] if stack else EMPTY
        out.append(Region(start, nxt - 1, tags, start in pts and nxt == start + 1))
    return out


@dataclass(frozen=True, slots=True)
class AddrProps:
    """What one tree's rules can see of one address (see the module docstring)."""

    sets: frozenset[str] = EMPTY
    named: frozenset[tuple[str, int, int]] = EMPTY  # (set id, protocol, port)
    nets: frozenset[ir.IPNet] = EMPTY  # inline nets / notNets containing it
    failsafe: frozenset[ir.IPNet] = EMPTY


def props(tags: frozenset, side: int, named: frozenset[tuple[str, int, int]] = EMPTY) -> AddrProps:
    """Tags of :func:`collect` -> the props one tree (``side`` 0 base, 1 head) sees."""
    sets, nets, fs = [], [], []
    for t in tags:
        if t[0] == "S":
            if t[1] == side:
                sets.append(t[2])
        elif t[0] == "N":
            nets.append(t[1])
        else:
            fs.append(t[1])
    return AddrProps(frozenset(sets), named, frozenset(nets), frozenset(fs))


def _rule_nets(program: ir.Program) -> Iterable[ir.IPNet]:
    owners = list(program.policies.values()) + list(program.profiles.values())
    for owner in owners:
        for rules in (owner.ingress, owner.egress):
            for r in rules:
                for side in (r.match.src, r.match.dst):
                    yield from side.nets or ()
                    yield from side.not_nets


def collect(
    programs: tuple[ir.Program, ir.Program], family: int
) -> tuple[dict[ir.IPNet, frozenset], tuple[dict[int, frozenset], dict[int, frozenset]]]:
    """Prefix tags for :func:`sweep` and, per tree, named-port memberships by host address.

    Tags: ``("S", side, set_id)`` selector-set member, ``("N", net)`` inline net,
    ``("F", net)`` failsafe CIDR. Inline and failsafe tags do not name a side: containment is
    geometry, the same in both trees."""
    tags: dict[ir.IPNet, set] = {}
    named: tuple[dict[int, set], dict[int, set]] = ({}, {})
    for side, prog in enumerate(programs):
        for sid, s in prog.sets.items():
            if s.is_named_port:
                for net, proto, port in s.port_members or ():
                    if net.version == family and net.num_addresses == 1:
                        named[side].setdefault(int(net.network_address), set()).add(
                            (sid, proto, port)
                        )
                continue
            for net in s.members or ():
                if net.version == family:
                    tags.setdefault(net, set()).add(("S", side, sid))
        for net in _rule_nets(prog):
            if net.version == family:
                tags.setdefault(net, set()).add(("N", net))
        for fp in (*prog.felix.failsafe_inbound, *prog.felix.failsafe_outbound):
            if fp.net is not None and fp.net.version == family:
                tags.setdefault(fp.net, set()).add(("F", fp.net))
    frozen_named = tuple({k: frozenset(v) for k, v in d.items()} for d in named)
    return {k: frozenset(v) for k, v in tags.items()}, frozen_named  # type: ignore[return-value]


def summarize(lo: int, hi: int, family: int) -> list[ir.IPNet]:
    return list(_summary(lo, hi, family))


@lru_cache(maxsize=1 << 16)
def _summary(lo: int, hi: int, family: int) -> tuple[ir.IPNet, ...]:
    """The report names an external class once per group it is in: summarize once."""
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return tuple(ipaddress.summarize_address_range(cls(lo), cls(hi)))
