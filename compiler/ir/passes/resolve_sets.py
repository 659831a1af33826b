"""Resolve every selector set to its members through a label index.

Selector sets become the IPs (as /32 or /128 networks) and nets of the selectables whose
effective labels match; named-port sets become (ip, protocol, port) triples of the selected
endpoints that declare the port name (with the rule's protocol, or any when it has none).
One index query per set, with set algebra inside the index — never selector × endpoint.

>>> from compiler.ir.nodes import AddrSet, Selectable, make_program
>>> from compiler.frontend.model import FelixConfig
>>> import ipaddress
>>> web = Selectable("ns/web", "WorkloadEndpoint", (("app", "web"),), (ipaddress.ip_network("10.0.0.1/32"),))
>>> s = AddrSet("s:x", 'app == "web"')
>>> prog = make_program(node=None, tiers=(), policies=(), profiles=(), sets=(s,), endpoints=(),
...                     selectables=(web,), felix=FelixConfig(), host_ips={})
>>> sorted(map(str, run(prog, None).sets["s:x"].members))
['10.0.0.1/32']
"""

from __future__ import annotations

from ipaddress import IPv4Network

from compiler.frontend.selector import LabelIndex, parse
from compiler.ir.nodes import AddrSet, Program, Selectable, replace_program, replacer

_resolved = replacer(AddrSet)


def family_parts(ctx: object, *, take: bool = False) -> dict[int, tuple[frozenset, dict]]:
    """The run's ``id(members) -> (members, {4: v4 part, 6: v6 part})`` table: this pass builds
    each membership from per-family parts, so ``split_families`` can take them instead of
    partitioning (and rehashing) the members. An entry holds ``members`` itself, so the id
    cannot be reused while the entry exists."""
    return _shared(ctx, "family_parts", take)


def _shared(ctx: object, name: str, take: bool) -> dict:
    """A table in ``ctx.cache`` (a fresh dict without one); ``take``: removed from the cache
    (by its one reader, so that it is freed)."""
    cache = getattr(ctx, "cache", None)
    if not isinstance(cache, dict):
        return {}
    return cache.pop(name, {}) if take else cache.setdefault(name, {})


def _ports_by_name(
    order: list[str], by_id: dict[str, Selectable]
) -> dict[str, list[tuple[str, int, int, tuple, tuple]]]:
    """Port name -> (selectable id, protocol, port, v4 nets, v6 nets) of every selectable's
    declaration of it, in ``order``: a named-port set then looks only at its own name, and the
    nets are split by family once, not once per set."""
    out: dict[str, list[tuple[str, int, int, tuple, tuple]]] = {}
    for cid in order:
        sel = by_id[cid]
        if not sel.ports:
            continue
        v4 = tuple(n for n in sel.nets if n.__class__ is IPv4Network)
        v6 = tuple(n for n in sel.nets if n.__class__ is not IPv4Network)
        for port in sel.ports:
            out.setdefault(port.name, []).append((cid, port.protocol, port.port, v4, v6))
    return out


def run(program: Program, ctx: object) -> Program:
    by_id = {s.id: s for s in program.selectables}
    index = LabelIndex({s.id: dict(s.labels) for s in program.selectables})
    out = {}
    parts = family_parts(ctx)
    # Different selectors often select the same endpoints: build each distinct member set once
    # (a frozenset of networks hashes every member in Python), and share it, which also lets
    # the later passes' per-membership memos hit by identity. Members are unions of
    # per-selectable, per-family frozensets, which reuse their stored hashes: each network is
    # hashed (in Python) once per run, not once per set.
    members: dict[tuple[frozenset[str], int | None], frozenset] = {}
    empty: frozenset = frozenset()
    # Per selectable, by its position in ``program.selectables`` (sorted): unions are made in
    # that order, so the result does not depend on how a set of strings iterates.
    order = list(by_id)
    position = {cid: i for i, cid in enumerate(order)}
    own4: list[frozenset] = []
    own6: list[frozenset] = []
    for cid in order:
        nets = by_id[cid].nets
        v4 = [n for n in nets if n.__class__ is IPv4Network]
        if len(v4) == len(nets):
            own4.append(frozenset(nets))
            own6.append(empty)
        elif not v4:
            own4.append(empty)
            own6.append(frozenset(nets))
        else:
            own4.append(frozenset(v4))
            own6.append(frozenset([n for n in nets if n.__class__ is not IPv4Network]))

    ports_by_name: dict[str, list[tuple[str, int, int, tuple, tuple]]] | None = None
    for sid, s in program.sets.items():
        chosen = index.select(parse(s.selector))
        fam = s.family
        if s.is_named_port:
            if ports_by_name is None:
                ports_by_name = _ports_by_name(order, by_id)
            by_fam: dict[int, list] = {4: [], 6: []}
            for cid, protocol, port, v4, v6 in ports_by_name.get(s.port_name, ()):
                if cid in chosen and s.port_protocol in (None, protocol):
                    by_fam[4] += [(net, protocol, port) for net in v4]
                    by_fam[6] += [(net, protocol, port) for net in v6]
            if fam is not None:
                triples = frozenset(by_fam[fam])
            else:
                four, six = frozenset(by_fam[4]), frozenset(by_fam[6])
                triples = four | six if four and six else (four or six)
                parts[id(triples)] = (triples, {4: four, 6: six})
            out[sid] = _resolved(s, port_members=triples)
        else:
            key = (chosen, fam)
            nets = members.get(key)
            if nets is None:
                at = sorted(map(position.__getitem__, chosen))
                if fam is None:
                    four = empty.union(*map(own4.__getitem__, at))
                    six = empty.union(*map(own6.__getitem__, at))
                    nets = four.union(six) if four and six else (four or six)
                    parts[id(nets)] = (nets, {4: four, 6: six})
                else:
                    nets = empty.union(*map((own4 if fam == 4 else own6).__getitem__, at))
                members[key] = nets
            out[sid] = _resolved(s, members=nets)
    return replace_program(program, sets=out)
