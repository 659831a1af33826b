"""The :class:`Cluster`: names, creates and deletes every namespace of one simulated cluster,
joins nodes to each other, and finds a namespace by name or by address.

Safety: every netns is named ``tortie-t<random>-...``; ``close`` (also ``__exit__`` and an
``atexit`` hook) deletes every netns the cluster created, which also destroys the veths in them.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import secrets
import threading
from types import TracebackType
from typing import TypeVar

from tests.support.netns.command import NETNS_RUN_DIR, run_command
from tests.support.netns.namespaces import (
    IFNAMSIZ,
    External,
    IPAddress,
    Netns,
    Node,
    Pod,
    host_prefix,
)

NAME_PREFIX = "tortie-t"


class Cluster:
    """A set of simulated nodes, pods and external hosts; a context manager that deletes them all.

    ``Cluster()`` creates nothing; namespaces appear on ``add_node`` / ``add_pod`` / ``add_uplink``.
    ``close()`` (and ``__exit__``) deletes every namespace created, also after a failure halfway
    through building, and may be called again. An ``atexit`` hook closes clusters a test leaked.
    """

    def __init__(self) -> None:
        self.prefix = f"{NAME_PREFIX}{secrets.token_hex(4)}-"
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.externals: dict[str, External] = {}
        self._by_key: dict[str, Netns] = {}
        self._by_addr: dict[IPAddress, Netns] = {}
        self._created: list[str] = []  # netns names, in creation order
        self._counter = 0
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- building -------------------------------------------------------------------------------

    def add_node(self, name: str, ipv4: str | None = None, ipv6: str | None = None) -> Node:
        """A node netns that forwards, with relaxed rp_filter and no DAD; ``ipv4``/``ipv6`` go on lo."""
        node = self._new_ns(Node, name)
        self.nodes[name] = node
        node.set_sysctls(
            {
                "net.ipv4.ip_forward": 1,
                "net.ipv6.conf.all.forwarding": 1,
                "net.ipv4.conf.all.rp_filter": 0,
                "net.ipv4.conf.default.rp_filter": 0,
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
            }
        )
        node.ip_batch(["link set lo up"])
        for address in (ipv4, ipv6):
            if address is not None:
                node.add_address(address)
        return node

    def connect(
        self,
        a: Node,
        b: Node,
        *,
        iface_a: str | None = None,
        iface_b: str | None = None,
        ipv4: tuple[str, str] | None = None,
        ipv6: tuple[str, str] | None = None,
    ) -> None:
        """Join two nodes by a veth (``iface_a`` on a, ``iface_b`` on b) with host addresses
        ``ipv4``/``ipv6`` = (a's, b's), and route each node's pods, node IPs and external hosts
        through it, including ones added later. Without addresses, a family is not routed."""
        if a is b or b in a.peers:
            raise ValueError(f"cannot connect {a.key!r} and {b.key!r}")
        iface_a = iface_a or f"to-{b.key}"[:IFNAMSIZ]
        iface_b = iface_b or f"to-{a.key}"[:IFNAMSIZ]
        a._check_iface(iface_a)
        b._check_iface(iface_b)
        a.interfaces.add(iface_a)
        b.interfaces.add(iface_b)
        mac_a, mac_b = self._new_mac(), self._new_mac()
        a.ip_batch(
            [
                f"link add {iface_a} address {mac_a} type veth"
                f" peer name {iface_b} address {mac_b} netns {b.name}"
            ]
        )
        a.set_sysctls(a._veth_sysctls(iface_a, proxy_arp=False))
        b.set_sysctls(b._veth_sysctls(iface_b, proxy_arp=False))
        cmds_a, cmds_b = [f"link set {iface_a} up"], [f"link set {iface_b} up"]
        links: dict[int, tuple[IPAddress, IPAddress]] = {}
        for pair in (ipv4, ipv6):
            if pair is None:
                continue
            addr_a, addr_b = (ipaddress.ip_address(x) for x in pair)
            if addr_a.version != addr_b.version:
                raise ValueError(f"{pair} mixes address families")
            links[addr_a.version] = (addr_a, addr_b)
            a._own(addr_a)
            b._own(addr_b)
            a.link_addresses.add(addr_a)
            b.link_addresses.add(addr_b)
            nodad = " nodad" if addr_a.version == 6 else ""
            cmds_a += [
                f"addr add {host_prefix(addr_a)} dev {iface_a}{nodad}",
                f"route add {host_prefix(addr_b)} dev {iface_a}",
                f"neigh replace {addr_b} lladdr {mac_b} dev {iface_a} nud permanent",
            ]
            cmds_b += [
                f"addr add {host_prefix(addr_b)} dev {iface_b}{nodad}",
                f"route add {host_prefix(addr_a)} dev {iface_b}",
                f"neigh replace {addr_a} lladdr {mac_a} dev {iface_b} nud permanent",
            ]
        a.ip_batch(cmds_a)
        b.ip_batch(cmds_b)
        v4, v6 = links.get(4), links.get(6)
        # Each side records its own iface and the *other* side's link addresses (its next hops).
        a.peers[b] = (iface_a, v4[1] if v4 else None, v6[1] if v6 else None)
        b.peers[a] = (iface_b, v4[0] if v4 else None, v6[0] if v6 else None)
        a._announce(a.routed_addresses(), [b])
        b._announce(b.routed_addresses(), [a])

    # -- lookup ---------------------------------------------------------------------------------

    def get(self, key: str) -> Netns:
        """The namespace for a pod id, node name or external name (or a full netns name)."""
        ns = self._by_key.get(key)
        if ns is None:
            ns = next((n for n in self._by_key.values() if n.name == key), None)
        if ns is None:
            raise KeyError(f"no pod, node or external host named {key!r} in this cluster")
        return ns

    def owner(self, ip: str | IPAddress) -> Netns:
        """The namespace that owns address ``ip`` (where a probe to ``ip`` is delivered)."""
        addr = ipaddress.ip_address(ip)
        try:
            return self._by_addr[addr]
        except KeyError:
            raise KeyError(f"no namespace in this cluster owns {addr}") from None

    @property
    def namespaces(self) -> list[Netns]:
        return list(self._by_key.values())

    @property
    def netns_names(self) -> list[str]:
        """Every netns name this cluster created (or tried to), in creation order."""
        return list(self._created)

    # -- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Delete every netns this cluster created (their veths go with them). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _LIVE.pop(id(self), None)
            names = [n for n in reversed(self._created) if n.startswith(self.prefix)]
            if names:
                # -force: keep going past a netns that is already gone.
                run_command(
                    ["ip", "-force", "-batch", "-"],
                    check=False,
                    input="".join(f"netns delete {n}\n" for n in names),
                )
            left = [n for n in names if os.path.exists(os.path.join(NETNS_RUN_DIR, n))]
        if left:
            raise RuntimeError(f"could not delete network namespaces: {left}")

    # -- internals ------------------------------------------------------------------------------

    def _new_ns(self, cls: type[_N], key: str, **kwargs: object) -> _N:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Cluster is closed")
            if not key or key in self._by_key:
                raise ValueError(f"name {key!r} is empty or already used in this cluster")
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:40]
            name = f"{self.prefix}{cls.KIND}{self._counter}-{safe}"
            self._counter += 1
            # Register before creating, so a failure halfway still gets cleaned up.
            self._created.append(name)
            _LIVE[id(self)] = self
        run_command(["ip", "netns", "add", name])
        ns = cls(self, key, name, **kwargs)  # type: ignore[arg-type]
        self._by_key[key] = ns
        return ns

    def _new_mac(self) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        # Locally administered unicast; unique within the cluster, which is all a veth needs.
        return f"02:74:74:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"

    def _claim(self, addr: IPAddress, ns: Netns) -> None:
        if addr in self._by_addr:
            raise ValueError(f"{addr} is already used by {self._by_addr[addr]!r}")
        self._by_addr[addr] = ns


_N = TypeVar("_N", bound=Netns)

_LIVE: dict[int, Cluster] = {}


@atexit.register
def _close_leaked_clusters() -> None:
    """Safety net for clusters a test forgot to close (not for SIGKILL, which nothing survives)."""
    for cluster in list(_LIVE.values()):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            cluster.close()
