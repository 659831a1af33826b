"""pyroute2 helpers in the ``ensure()`` style: dump first, then add or change only what differs.

Everything takes an open ``pyroute2.IPRoute`` so the caller picks the namespace
(``IPRoute(netns=NAME)`` in tests) and the socket's lifetime. Kernel objects come back as small
frozen value objects (:class:`KernelRoute`, :class:`Neighbour`, :class:`FdbEntry`) with
``from_netlink`` constructors, so reconcilers compare plain data, not netlink messages.

Idempotence, as in pyroute2's own ``ensure()``: "add" tolerates nothing (a conflict is a fact
the caller must decide about), "delete" tolerates "already gone" (ESRCH/ENOENT/ENODEV), and a
second run over an unchanged kernel performs no writes at all.

>>> r = KernelRoute(4, ipaddress.ip_network("10.65.0.0/26"), "blackhole", 81, 254, 1024)
>>> r.key
(4, IPv4Network('10.65.0.0/26'), 254, 1024)
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

__all__ = [
    "NUD_PERMANENT",
    "RTN_TYPES",
    "FdbEntry",
    "KernelRoute",
    "Neighbour",
    "add_route",
    "delete_route",
    "dump_fdb",
    "dump_neighbours",
    "dump_routes",
    "ensure_address",
    "ensure_fdb",
    "ensure_link_up",
    "ensure_neighbour",
    "link_index",
    "remove_fdb",
    "remove_neighbour",
    "replace_route",
]

logger = logging.getLogger(__name__)

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

RTN_TYPES = {1: "unicast", 2: "local", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
_RTN_NUMBERS = {v: k for k, v in RTN_TYPES.items()}
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL)
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route as Tortie sees it. ``key`` is what the kernel treats as the route's identity
    (family, prefix, table, metric): two routes with the same key cannot coexist."""

    family: int
    dst: IPNet
    type: str  # "unicast" | "blackhole" | ...
    proto: int
    table: int
    priority: int
    oif: int | None = None
    gateway: IPAddr | None = None
    onlink: bool = False

    @property
    def key(self) -> tuple[int, IPNet, int, int]:
        return (self.family, self.dst, self.table, self.priority)

    def same_target(self, other: KernelRoute) -> bool:
        """Same kind of route to the same place (ignoring protocol).

        The kernel reports IPv6 blackholes on ``lo``; the oif of a blackhole is meaningless.
        """
        if self.type != other.type:
            return False
        if self.type != "unicast":
            return True
        return (self.oif, self.gateway, self.onlink) == (other.oif, other.gateway, other.onlink)

    @classmethod
    def from_netlink(cls, msg: Any) -> KernelRoute:
        family = 4 if msg["family"] == socket.AF_INET else 6
        plen = msg["dst_len"]
        dst_text = msg.get("dst") or ("0.0.0.0" if family == 4 else "::")
        gw = msg.get("gateway")
        return cls(
            family=family,
            dst=ipaddress.ip_network(f"{dst_text}/{plen}"),
            type=RTN_TYPES.get(msg["type"], str(msg["type"])),
            proto=msg["proto"],
            table=msg.get("table") or msg["table"],
            priority=msg.get("priority") or 0,
            oif=msg.get("oif"),
            gateway=ipaddress.ip_address(gw) if gw else None,
            onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        )

    def netlink_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "family": _AF[self.family],
            "dst": str(self.dst),
            "table": self.table,
            "proto": self.proto,
            "priority": self.priority,
            "type": _RTN_NUMBERS[self.type],
        }
        if self.type == "unicast":
            if self.oif is not None:
                args["oif"] = self.oif
            if self.gateway is not None:
                args["gateway"] = str(self.gateway)
            else:
                args["scope"] = RT_SCOPE_LINK
            if self.onlink:
                args["flags"] = RTNH_F_ONLINK
        return args


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def dump_routes(ipr: Any, family: int, table: int = 254) -> list[KernelRoute]:
    """Every route of ``family`` in ``table`` (any protocol), sorted by key."""
    out = []
    for msg in ipr.route("dump", family=_AF[family], table=table):
        route = KernelRoute.from_netlink(msg)
        # RTA_TABLE filtering is best effort in the kernel; check ourselves.
        if route.table == table and route.type in (
            "unicast",
            "blackhole",
            "unreachable",
            "prohibit",
        ):
            out.append(route)
    return sorted(out, key=lambda r: (r.dst, r.priority, r.proto))


def add_route(ipr: Any, route: KernelRoute) -> None:
    """Add a route; EEXIST propagates (the caller decides what a conflict means)."""
    logger.debug("route add %s", route)
    ipr.route("add", **route.netlink_args())


def replace_route(ipr: Any, route: KernelRoute) -> None:
    logger.debug("route replace %s", route)
    ipr.route("replace", **route.netlink_args())


def delete_route(ipr: Any, route: KernelRoute) -> bool:
    """Delete exactly this route (by key and protocol); False when it was already gone."""
    args = {
        "family": _AF[route.family],
        "dst": str(route.dst),
        "table": route.table,
        "proto": route.proto,
        "priority": route.priority,
        "type": _RTN_NUMBERS.get(route.type, 1),
        # IPv4 deletes match the scope exactly unless it is RT_SCOPE_NOWHERE (what `ip route
        # del` sends): without this a link-scope route would never match.
        "scope": RT_SCOPE_NOWHERE,
    }
    logger.debug("route del %s", route)
    try:
        ipr.route("del", **args)
    except NetlinkError as e:
        if e.code in _GONE:
            return False
        raise
    return True


def ensure_link_up(ipr: Any, index: int) -> None:
    link = ipr.get_links(index)[0]
    if not link["flags"] & 1:  # IFF_UP
        ipr.link("set", index=index, state="up")


def ensure_address(ipr: Any, index: int, address: IPAddr, prefixlen: int) -> bool:
    """Give interface ``index`` the address; True when it had to be added."""
    for msg in ipr.get_addr(index=index, family=_AF[address.version]):
        if msg.get("address") == str(address) and msg["prefixlen"] == prefixlen:
            return False
    ipr.addr("add", index=index, address=str(address), prefixlen=prefixlen)
    return True


# -- neighbours (ARP/NDP) and bridge FDB ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Neighbour:
    ifindex: int
    dst: IPAddr
    lladdr: str
    permanent: bool

    @classmethod
    def from_netlink(cls, msg: Any) -> Neighbour | None:
        dst, ll = msg.get("dst"), msg.get("lladdr")
        if not dst or not ll:
            return None
        return cls(
            msg["ifindex"],
            ipaddress.ip_address(dst),
            ll.lower(),
            bool(msg["state"] & NUD_PERMANENT),
        )


def dump_neighbours(ipr: Any, ifindex: int) -> list[Neighbour]:
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.neigh("dump", ifindex=ifindex, family=family):
            n = Neighbour.from_netlink(msg)
            if n is not None and n.ifindex == ifindex:
                out.append(n)
    return sorted(out, key=lambda n: (n.dst.version, n.dst))


def ensure_neighbour(ipr: Any, ifindex: int, dst: IPAddr, lladdr: str) -> bool:
    """A permanent neighbour entry ``dst -> lladdr``; True when something was written."""
    want = Neighbour(ifindex, dst, lladdr.lower(), True)
    if want in dump_neighbours(ipr, ifindex):
        return False
    ipr.neigh("replace", ifindex=ifindex, dst=str(dst), lladdr=lladdr, state=NUD_PERMANENT)
    return True


def remove_neighbour(ipr: Any, n: Neighbour) -> bool:
    try:
        ipr.neigh("del", ifindex=n.ifindex, dst=str(n.dst), lladdr=n.lladdr)
    except NetlinkError as e:
        if e.code in _GONE:
            return False
        raise
    return True


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A VXLAN forwarding entry: frames for ``lladdr`` go to the VTEP at ``dst``."""

    ifindex: int
    lladdr: str
    dst: IPAddr

    @classmethod
    def from_netlink(cls, msg: Any) -> FdbEntry | None:
        dst, ll = msg.get("dst"), msg.get("lladdr")
        if not dst or not ll:
            return None
        return cls(msg["ifindex"], ll.lower(), ipaddress.ip_address(dst))


def dump_fdb(ipr: Any, ifindex: int) -> list[FdbEntry]:
    out = []
    for msg in ipr.fdb("dump", ifindex=ifindex):
        e = FdbEntry.from_netlink(msg)
        if e is not None and e.ifindex == ifindex:
            out.append(e)
    return sorted(out, key=lambda e: (e.lladdr, e.dst.version, e.dst))


def ensure_fdb(ipr: Any, ifindex: int, lladdr: str, dst: IPAddr) -> bool:
    want = FdbEntry(ifindex, lladdr.lower(), dst)
    if want in dump_fdb(ipr, ifindex):
        return False
    # NTF_SELF: the entry belongs to the VXLAN device itself, not to a bridge above it.
    ipr.fdb(
        "replace", ifindex=ifindex, lladdr=lladdr, dst=str(dst), state=NUD_PERMANENT, flags=NTF_SELF
    )
    return True


def remove_fdb(ipr: Any, e: FdbEntry) -> bool:
    try:
        ipr.fdb("del", ifindex=e.ifindex, lladdr=e.lladdr, dst=str(e.dst))
    except NetlinkError as err:
        if err.code in _GONE:
            return False
        raise
    return True
