"""Who is compared: the subjects of a diff, and who owns an address in each tree.

A flow is compared between the trees when both of its ends exist in both:

* a **workload** or **host endpoint** present in both trees (same id and kind) — with its own
  address in each tree, so an endpoint whose IP changed is still the same end;
* a **node** address (a node's own IP) present in both trees and belonging to no endpoint;
* an **external** address class: addresses that belong to no endpoint or node in either tree,
  cut at every CIDR any rule, network set or failsafe port mentions in either tree
  (``addresses.sweep``), addresses with identical tags merged into one subject.

Endpoints present in only one tree are reported as added / removed (:class:`EndpointChange`);
flows to and from them are not verdict changes, and their addresses are not compared as
anonymous external addresses either (they were or become that endpoint).

Subjects are per address family. An endpoint with several addresses of one family has one
subject per position (its first IPv4 address in base is paired with its first in head, ...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.diff import addresses
from compiler.diff.addresses import AddrProps
from compiler.ir import nodes as ir

__all__ = ["EndpointChange", "Owner", "ProgramIndex", "Subject", "endpoint_changes", "subjects"]

WORKLOAD = "workload"
HOST_ENDPOINT = "host-endpoint"
NODE = "node"
EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # WORKLOAD | HOST_ENDPOINT | NODE | EXTERNAL
    name: str  # endpoint id, node name, or a CIDR summary for externals
    family: int
    ips: tuple[ir.IPAddr, ir.IPAddr]  # the address used in base, in head
    props: tuple[AddrProps, AddrProps]  # what each tree's rules see of it
    namespace: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()  # externals: the address ranges it stands for
    anywhere: bool = False  # externals: in no CIDR any rule or set names ("everything else")
    labels: tuple[tuple[str, str], ...] = ()  # endpoints: effective labels in head

    @property
    def is_endpoint(self) -> bool:
        return self.kind in (WORKLOAD, HOST_ENDPOINT)

    @property
    def cidrs(self) -> tuple[ir.IPNet, ...]:
        """Externals: the CIDRs the subject stands for (computed when shown)."""
        return tuple(n for lo, hi in self.ranges for n in addresses.summarize(lo, hi, self.family))

    def contains(self, ip: ir.IPAddr) -> bool:
        """Externals: whether the class holds ``ip``."""
        n = int(ip)
        return ip.version == self.family and any(lo <= n <= hi for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whom the evaluator runs for an address: a workload, a host endpoint (also a node's own
    address through the node's ``*`` host endpoint: ``node`` is then set), or nobody."""

    kind: str  # "wep" | "hep" | "none"
    endpoint: ir.Endpoint | None = None
    node: str | None = None  # set when reached through a node address


class ProgramIndex:
    """Address lookups done exactly as the evaluator does them (first match in id order)."""

    def __init__(self, program: ir.Program) -> None:
        self.program = program
        self.wep: dict[ir.IPAddr, ir.Endpoint] = {}
        self.hep: dict[ir.IPAddr, ir.Endpoint] = {}
        self.star: dict[str, ir.Endpoint] = {}
        for e in program.endpoints:
            for ip in e.ips:
                (self.hep if e.is_host else self.wep).setdefault(ip, e)
            if e.is_host and e.interface == "*":
                self.star.setdefault(e.node, e)
        self.host_node: dict[ir.IPAddr, str] = {}
        for node, ips in program.host_ips.items():
            for ip in ips:
                self.host_node.setdefault(ip, node)

    def owner(self, ip: ir.IPAddr) -> Owner:
        if ip in self.wep:
            return Owner("wep", self.wep[ip])
        if ip in self.hep:
            return Owner("hep", self.hep[ip])
        node = self.host_node.get(ip)
        if node is not None and node in self.star:
            return Owner("hep", self.star[node], node)
        return Owner("none")

    def own_node(self, ip: ir.IPAddr) -> str | None:
        """The node an address is a host address of, as workload -> own-host traffic sees it."""
        hep = self.hep.get(ip)
        return hep.node if hep is not None else self.host_node.get(ip)


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """An endpoint (or node) present in one tree only, or whose addresses changed."""

    change: str  # "added" | "removed" | "addresses"
    kind: str
    name: str
    namespace: str | None
    before: tuple[str, ...] = ()  # addresses in base
    after: tuple[str, ...] = ()  # addresses in head


def _endpoint_kind(e: ir.Endpoint) -> str:
    return HOST_ENDPOINT if e.is_host else WORKLOAD


def endpoint_changes(programs: tuple[ir.Program, ir.Program]) -> list[EndpointChange]:
    base = {(_endpoint_kind(e), e.id): e for e in programs[0].endpoints}
    head = {(_endpoint_kind(e), e.id): e for e in programs[1].endpoints}
    out: list[EndpointChange] = []
    for key in sorted(base.keys() | head.keys()):
        b, h = base.get(key), head.get(key)
        e = h or b
        assert e is not None
        ips_b = tuple(map(str, b.ips)) if b else ()
        ips_h = tuple(map(str, h.ips)) if h else ()
        if b is None or h is None:
            change = "added" if b is None else "removed"
            out.append(EndpointChange(change, key[0], e.id, e.namespace, ips_b, ips_h))
        elif ips_b != ips_h:
            out.append(EndpointChange("addresses", key[0], e.id, e.namespace, ips_b, ips_h))
    nodes_b, nodes_h = set(programs[0].host_ips), set(programs[1].host_ips)
    for node in sorted(nodes_b ^ nodes_h):
        change = "added" if node in nodes_h else "removed"
        ips = tuple(map(str, (programs[1] if node in nodes_h else programs[0]).host_ips[node]))
        out.append(
            EndpointChange(
                change,
                NODE,
                node,
                None,
                () if change == "added" else ips,
                ips if change == "added" else (),
            )
        )
    return out


def _label(ranges: tuple[tuple[int, int], ...], family: int) -> str:
    """A short name for an external address class: its CIDRs when few, else the CIDR that
    encloses it "except" what it leaves out (endpoint addresses, named sub-ranges)."""
    cidrs = [n for lo, hi in ranges for n in addresses.summarize(lo, hi, family)]
    if len(cidrs) <= 3:
        return ", ".join(map(str, cidrs))
    lo, hi = ranges[0][0], ranges[-1][1]
    bits = 32 if family == 4 else 128
    plen = bits - (lo ^ hi).bit_length()
    enclosing = ipaddress.ip_network((lo >> (bits - plen) << (bits - plen), plen))
    size = sum(h - lo_ + 1 for lo_, h in ranges)
    left_out = enclosing.num_addresses - size
    if left_out * 2 <= enclosing.num_addresses:
        return f"{enclosing} except {left_out} address{'es' * (left_out != 1)}"
    return f"{size} addresses in {len(cidrs)} CIDRs from {cidrs[0]}"


def subjects(programs: tuple[ir.Program, ir.Program], family: int) -> list[Subject]:
    """Every subject of one family, in a stable order: endpoints, nodes, external classes."""
    prefixes, named = addresses.collect(programs, family)
    base = {(_endpoint_kind(e), e.id): e for e in programs[0].endpoints}
    head = {(_endpoint_kind(e), e.id): e for e in programs[1].endpoints}
    points: set[int] = set()
    endpoint_ips: set[ir.IPAddr] = set()
    for prog in programs:
        for e in prog.endpoints:
            for ip in e.ips:
                if ip.version == family:
                    points.add(int(ip))
                    endpoint_ips.add(ip)
        for ips in prog.host_ips.values():
            points.update(int(ip) for ip in ips if ip.version == family)
    regions = addresses.sweep(prefixes, points, family)
    at_point = {r.lo: r.tags for r in regions if r.point}

    def point_props(ip: ir.IPAddr) -> tuple[AddrProps, AddrProps]:
        tags = at_point.get(int(ip), addresses.EMPTY)
        return tuple(  # type: ignore[return-value]
            addresses.props(tags, side, named[side].get(int(ip), addresses.EMPTY))
            for side in (0, 1)
        )

    def mixed_props(ip_b: ir.IPAddr, ip_h: ir.IPAddr) -> tuple[AddrProps, AddrProps]:
        return point_props(ip_b)[0], point_props(ip_h)[1]

    out: list[Subject] = []
    for key in sorted(base.keys() & head.keys()):
        b, h = base[key], head[key]
        ips_b = [ip for ip in b.ips if ip.version == family]
        ips_h = [ip for ip in h.ips if ip.version == family]
        for i, (ip_b, ip_h) in enumerate(zip(ips_b, ips_h, strict=False)):
            name = h.id if i == 0 else f"{h.id} ({ip_h})"
            out.append(
                Subject(
                    key[0],
                    name,
                    family,
                    (ip_b, ip_h),
                    mixed_props(ip_b, ip_h),
                    h.namespace,
                    labels=h.labels,
                )
            )
    for node in sorted(set(programs[0].host_ips) & set(programs[1].host_ips)):
        common = set(programs[0].host_ips[node]) & set(programs[1].host_ips[node])
        for ip in sorted(a for a in common if a.version == family and a not in endpoint_ips):
            out.append(Subject(NODE, node, family, (ip, ip), point_props(ip)))
    by_tags: dict[frozenset, list[addresses.Region]] = {}
    for r in regions:
        if not r.point:
            by_tags.setdefault(r.tags, []).append(r)
    for tags, regs in sorted(by_tags.items(), key=lambda kv: kv[1][0].lo):
        ranges = tuple((r.lo, r.hi) for r in regs)
        rep = addresses.summarize(*ranges[0], family)[0].network_address
        p = tuple(addresses.props(tags, side) for side in (0, 1))
        label = f"any other IPv{family} address" if not tags else _label(ranges, family)
        out.append(
            Subject(EXTERNAL, label, family, (rep, rep), p, ranges=ranges, anywhere=not tags)
        )  # type: ignore[arg-type]
    return out
