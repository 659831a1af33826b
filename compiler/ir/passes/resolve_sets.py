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

import dataclasses

from compiler.frontend.selector import LabelIndex, parse
from compiler.ir.nodes import Program, replace_program


def run(program: Program, ctx: object) -> Program:
    by_id = {s.id: s for s in program.selectables}
    index = LabelIndex({s.id: dict(s.labels) for s in program.selectables})
    out = {}
    # Different selectors often select the same endpoints: build each distinct member set once
    # (a frozenset of networks hashes every member in Python), and share it, which also lets
    # the later passes' per-membership memos hit by identity.
    members: dict[tuple[tuple[str, ...], int | None], frozenset] = {}
    own: dict[str, frozenset] = {}

    def own_nets(cid: str) -> frozenset:
        got = own.get(cid)
        if got is None:
            got = own[cid] = frozenset(by_id[cid].nets)
        return got

    for sid, s in program.sets.items():
        chosen = sorted(index.select(parse(s.selector)))
        fam_ok = (lambda n: True) if s.family is None else (lambda n, f=s.family: n.version == f)
        if s.is_named_port:
            triples = frozenset(
                (net, port.protocol, port.port)
                for cid in chosen
                for port in by_id[cid].ports
                if port.name == s.port_name and s.port_protocol in (None, port.protocol)
                for net in by_id[cid].nets
                if fam_ok(net)
            )
            out[sid] = dataclasses.replace(s, port_members=triples)
        else:
            key = (tuple(chosen), s.family)
            nets = members.get(key)
            if nets is None:
                if s.family is None:
                    # A union of per-selectable frozensets reuses their stored hashes: each
                    # network is hashed (in Python) once per run, not once per set.
                    nets = frozenset().union(*(own_nets(cid) for cid in chosen))
                else:
                    nets = frozenset(n for cid in chosen for n in by_id[cid].nets if fam_ok(n))
                members[key] = nets
            out[sid] = dataclasses.replace(s, members=nets)
    return replace_program(program, sets=out)
