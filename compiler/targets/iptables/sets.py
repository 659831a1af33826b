"""ipsets: one per selector set and per named-port set (per family), plus the node's addresses.

Types:

* selector sets -> ``hash:net``: members are endpoint addresses (host prefixes) *and* network
  set CIDRs. ``hash:net`` cannot hold a zero-length prefix ("A network address with zero prefix
  size cannot be stored"), so ``0.0.0.0/0`` is stored as its two halves (as Felix does).
* named-port sets -> ``hash:ip,port``: members are ``(endpoint address, protocol, port)``, which
  is exactly an ``ip,proto:port`` entry; ``-m set --match-set N dst,dst`` compares the packet's
  address, protocol and port in one lookup. (``hash:net,port`` would also work but adds a prefix
  length loop per lookup that endpoint addresses never need.)

Every set is (re)filled atomically: the restore script creates the real set if missing, fills a
temporary set, ``swap``s the two and destroys the temporary one, so a rule never sees a
half-filled set (``ipset restore`` itself is not atomic). ``swap`` also carries new metadata
(``maxelem``) over, which ``create -exist`` with different options would refuse; the applier
(:mod:`.apply`) drops the ``create`` line of a set that exists already.

>>> import ipaddress
>>> net_members([ipaddress.ip_network("0.0.0.0/0")])
('0.0.0.0/1', '128.0.0.0/1')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compiler.ir import nodes as ir
from compiler.targets.iptables.names import file_comment, host_set_name, set_name, temp_set_name

HASH_NET = "hash:net"
HASH_IP_PORT = "hash:ip,port"
_PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}


@dataclass(frozen=True, slots=True)
class SetDecl:
    name: str
    family: int
    type: str
    members: tuple[str, ...]  # ipset member text, sorted
    comment: str = ""


def _net_key(n: ir.IPNet) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def net_members(nets: Iterable[ir.IPNet]) -> tuple[str, ...]:
    out: set[ir.IPNet] = set()
    for n in nets:
        out.update(n.subnets(prefixlen_diff=1) if n.prefixlen == 0 else (n,))
    return tuple(str(n) for n in sorted(out, key=_net_key))


def port_members(triples: Iterable[tuple[ir.IPNet, int, int]]) -> tuple[str, ...]:
    out = []
    for net, proto, port in sorted(set(triples), key=lambda t: (_net_key(t[0]), t[1], t[2])):
        if net.prefixlen != net.max_prefixlen:
            raise ValueError(f"named-port member {net} is not a single address")
        if proto not in _PORT_PROTOCOLS:
            raise ValueError(
                f"named-port member with protocol {proto}: ipset needs tcp/udp/sctp/udplite"
            )
        out.append(f"{net.network_address},{_PORT_PROTOCOLS[proto]}:{port}")
    return tuple(out)


def decl_of(s: ir.AddrSet) -> SetDecl:
    """The ipset for an IR set (resolved and family-split, as the target contract says)."""
    assert s.family in (4, 6), f"set {s.id} has no family"
    name = set_name(s.id, s.family)
    if s.is_named_port:
        members = port_members(s.port_members or ())
        what = f"named port {s.port_name!r} of {s.selector}"
        return SetDecl(name, s.family, HASH_IP_PORT, members, f"{s.id}: {what}")
    return SetDecl(name, s.family, HASH_NET, net_members(s.members or ()), f"{s.id}: {s.selector}")


def host_decl(addresses: Iterable[ir.IPAddr], family: int) -> SetDecl:
    nets = (ipaddress.ip_network(a) for a in addresses if a.version == family)
    return SetDecl(
        host_set_name(family), family, HASH_NET, net_members(nets), "this node's addresses"
    )


def set_names(program: ir.Program) -> dict[str, str]:
    """IR set id -> ipset name, checked for collisions (names are cut to 31 characters)."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for sid, s in program.sets.items():
        name = set_name(sid, s.family or 4)
        if seen.setdefault(name, sid) != sid:
            raise ValueError(f"ipset name collision: {seen[name]} and {sid} -> {name}")
        out[sid] = name
    return out


def _create(decl: SetDecl, name: str, maxelem: int) -> str:
    family = "inet" if decl.family == 4 else "inet6"
    return f"create {name} {decl.type} family {family} maxelem {maxelem} -exist"


def refill_lines(decl: SetDecl, maxelem: int, create_real: bool = True) -> list[str]:
    """Make ``decl.name`` hold exactly ``decl.members``, atomically for readers of the set."""
    tmp = temp_set_name(decl.name)
    lines = [file_comment(f"{decl.name}: {decl.comment}")]
    if create_real:
        lines.append(_create(decl, decl.name, maxelem))
    lines += [_create(decl, tmp, maxelem), f"flush {tmp}"]
    lines += [f"add {tmp} {m}" for m in decl.members]
    lines += [f"swap {tmp} {decl.name}", f"destroy {tmp}"]
    return lines


def render_restore(decls: Iterable[SetDecl], maxelem: int, header: Iterable[str] = ()) -> str:
    lines = list(header)
    for decl in sorted(decls, key=lambda d: d.name):
        lines += refill_lines(decl, maxelem)
    return "\n".join(lines) + "\n"


def render_refill(decls: Iterable[SetDecl], maxelem: int, header: Iterable[str] = ()) -> str:
    """Refill existing sets only (the set-only update: no ``create`` of the real sets)."""
    lines = list(header)
    for decl in sorted(decls, key=lambda d: d.name):
        lines += refill_lines(decl, maxelem, create_real=False)
    return "\n".join(lines) + "\n"


def by_name(decls: Iterable[SetDecl]) -> Mapping[str, SetDecl]:
    return {d.name: d for d in decls}
