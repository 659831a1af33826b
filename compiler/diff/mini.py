"""Mini programs: the part of a program the evaluator reads for a few given flows.

The diff asks the reference evaluator about representative flows of classes. Asking it on the
whole program would make every set-membership test scan sets of thousands of members; a mini
program holds only the endpoints that must be found, the policies and profile rules that run,
and every set cut down to the representative addresses it contains — so every membership test
the evaluator makes for those addresses has the same answer, and is cheap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache

from compiler.diff.addresses import AddrProps
from compiler.diff.services import Piece
from compiler.diff.subjects import Owner
from compiler.diff.views import View
from compiler.ir import nodes as ir
from compiler.ir.flow import Flow

__all__ = ["mini_program", "probe_flow"]


@lru_cache(maxsize=1 << 16)
def _host(ip: ir.IPAddr) -> ir.IPNet:
    return ipaddress.ip_network(ip)


def probe_flow(piece: Piece, src: ir.IPAddr, dst: ir.IPAddr) -> Flow:
    proto, sport, dport, itype, icode = piece.probe()
    return Flow(src, dst, proto, sport, dport, itype, icode)


def mini_program(
    program: ir.Program,
    owners: Iterable[tuple[Owner, str]],
    views: Iterable[tuple[View, str]],
    members: Iterable[tuple[ir.IPAddr, AddrProps]],
    host_ips: dict[str, tuple[ir.IPAddr, ...]] | None = None,
) -> ir.Program:
    """The part of ``program`` the evaluator reads for flows between the given addresses.

    ``owners``: (owner, direction) — endpoints that must be found for an address, each kept
    with its tier plans of that direction only; ``views``: (view, direction) whose policies and
    profile rules are kept; ``members``: the addresses of the flows with their props — every
    referenced set keeps exactly those of them it contains.

    Everything else is dropped, which no flow between these addresses can notice *in the
    directions asked*. The evaluator also runs the other direction of an endpoint that is in
    the program (a peer that happens to be an owner); stripped of its plans and profile rules
    there, that direction just denies, and nobody reads it."""
    pids: set[str] = set()
    profile_dirs: dict[str, set[str]] = {}
    for v, direction in views:
        pids.update(v.policy_ids())
        for name in v.profiles:
            if name in program.profiles:
                profile_dirs.setdefault(name, set()).add(direction)
    profiles = {}
    rules: list[tuple[ir.Rule, ...]] = [program.policies[pid].ingress for pid in pids]
    rules += [program.policies[pid].egress for pid in pids]
    for name, dirs in profile_dirs.items():
        p = program.profiles[name]
        p = ir.Profile(
            p.name,
            p.ingress if ir.INGRESS in dirs else (),
            p.egress if ir.EGRESS in dirs else (),
            p.origin,
        )
        profiles[name] = p
        rules += [p.ingress, p.egress]
    sids: set[str] = set()
    for rs in rules:
        for r in rs:
            for side in (r.match.src, r.match.dst):
                sids.update(side.sets)
                sids.update(side.not_sets)
                for pm in (side.ports, side.not_ports):
                    if pm is not None:
                        sids.update(pm.named_sets)
    nets: dict[str, set[ir.IPNet]] = {sid: set() for sid in sids}
    ports: dict[str, set[tuple[ir.IPNet, int, int]]] = {sid: set() for sid in sids}
    for ip, p in members:
        host = _host(ip)
        for sid in p.sets & sids:
            nets[sid].add(host)
        for sid, proto, port in p.named:
            if sid in sids:
                ports[sid].add((host, proto, port))
    sets = []
    for sid in sids:
        s = program.sets[sid]
        named = s.is_named_port
        sets.append(
            ir.AddrSet(
                s.id,
                s.selector,
                s.port_name,
                s.port_protocol,
                s.family,
                s.members if named else frozenset(nets[sid]),
                frozenset(ports[sid]) if named else s.port_members,
                s.origin,
            )
        )
    keep: dict[str, tuple[ir.Endpoint, set[str]]] = {}
    for o, direction in owners:
        if o.endpoint is not None:
            keep.setdefault(o.endpoint.id + "\0" + o.endpoint.kind, (o.endpoint, set()))[1].add(
                direction
            )
    endpoints = tuple(
        replace(ep, plans=tuple(kv for kv in ep.plans if kv[0][1] in dirs))
        for ep, dirs in keep.values()
    )
    return ir.make_program(
        node=program.node,
        tiers=program.tiers,
        policies={pid: program.policies[pid] for pid in pids},
        profiles=profiles,
        sets=tuple(sets),
        endpoints=endpoints,
        selectables=(),
        felix=program.felix,
        host_ips=host_ips or {},
    )
