"""A simulated Kubernetes node built from network namespaces, for kernel-backed tests.

Usage::

    with Cluster() as cluster:
        node = cluster.add_node("n1")
        ext = node.add_uplink("eth0", "192.168.100.1", "fd00:100::1", "192.168.100.2", "fd00:100::2")
        a = node.add_pod("a", "cali0000000000a", "10.65.0.1", "fd00:65::1")
        b = node.add_pod("b", "cali0000000000b", "10.65.0.2", "fd00:65::2")
        node.run(["nft", "-f", "-"], input=RULESET)
        results = send_probes(cluster, [Probe("a", "10.65.0.2", "TCP", 80)])  # tests/support/traffic.py

Topology, the way Calico wires a node (routed, no bridge):

- A pod is a netns whose ``eth0`` is the peer of a host-side veth ``cali...`` in the node netns. The pod
  has ``ipv4/32`` and ``ipv6/128``, a default route via ``169.254.1.1`` (IPv4) and ``fe80::1`` (IPv6)
  on eth0. The host veth has Calico's MAC ``ee:ee:ee:ee:ee:ee``, ``proxy_arp=1`` and ``fe80::1``.
  The node has one ``/32`` and one ``/128`` route per pod to the host veth, and forwards, so
  pod-to-pod traffic goes through the node's forward hook.
- An uplink is a veth from the node to an "external host" netns whose default route points at the
  node, so outside traffic to pods is forwarded by the node and traffic to node IPs hits its input hook.
- ``Cluster.connect`` joins two nodes by a veth and routes each side's pods, node IPs and external
  hosts through it.

Every neighbour entry is installed ``nud permanent`` on both sides of every veth. Calico itself lets the
node ARP for pods; we don't, for two reasons: a burst of hundreds of first packets to an unresolved
neighbour overflows its ``unres_qlen_bytes`` queue (dropped SYNs are retransmitted only after 1 s, a
flake), and a firewall under test that drops ARP or NDP would otherwise fail probes for reasons the test
isn't about. IPv6 DAD is off and every address is added ``nodad``, so addresses are usable at once.

Safety: every netns is named ``tortie-t<random>-...``; all ``ip`` commands run with ``-n <our netns>``;
sysctls are written from a thread that ``in_netns`` has switched (and verified) into our netns. The
root namespace is never changed. ``Cluster.close`` (also ``__exit__`` and an ``atexit`` hook) deletes
every netns the cluster created, which also destroys the veths in them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
NAME_PREFIX = "tortie-t"
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"  # Calico's host-side veth MAC
POD_GATEWAY_V4 = "169.254.1.1"
POD_GATEWAY_V6 = "fe80::1"
IFNAMSIZ = 15  # IFNAMSIZ - 1: the longest Linux interface name
COMMAND_TIMEOUT = 30.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError, ``str()`` shows stderr and the stdin script."""

    def __init__(self, result: subprocess.CompletedProcess[str], input: str | None) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.input = input

    def __str__(self) -> str:
        text = f"{' '.join(map(str, self.cmd))!r} exited {self.returncode}: {self.stderr.strip()}"
        if self.input:
            text += f"\n--- stdin ---\n{self.input}"
        return text


def _exec(
    argv: Sequence[str], *, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if check and result.returncode != 0:
        raise CommandError(result, input)
    return result


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(ns: str | Netns) -> Iterator[None]:
    """Run the body with the *current thread* in network namespace ``ns``, then switch back.

    Sockets created in the body belong to ``ns`` for their whole life, so a test can open listeners and
    clients in many namespaces from one thread without starting processes. ``setns(2)`` with
    CLONE_NEWNET only affects the calling thread (threads it starts meanwhile inherit the netns,
    as do subprocesses); ``os.setns`` is Python 3.12+, hence ctypes.
    """
    name = ns.name if isinstance(ns, Netns) else ns
    path = name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            # Guard against writing sysctls into the wrong namespace if setns lied to us.
            if os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(target).st_ino:
                _setns(own)
                raise RuntimeError(f"setns into {path} did not take effect")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _address(text: str) -> tuple[IPAddress, int | None]:
    """``"10.0.0.1"`` or ``"10.0.0.1/24"`` -> (address, prefix length or None)."""
    if "/" in text:
        iface = ipaddress.ip_interface(text)
        return iface.ip, iface.network.prefixlen
    return ipaddress.ip_address(text), None


def _host_prefix(addr: IPAddress) -> str:
    return f"{addr}/{addr.max_prefixlen}"


class Netns:
    """One network namespace of a Cluster: ``name`` is the netns name, ``key`` the test's short name."""

    KIND = "ns"

    def __init__(self, cluster: Cluster, key: str, name: str) -> None:
        self.cluster = cluster
        self.key = key
        self.name = name
        self.addresses: list[IPAddress] = []  # addresses owned here: probes to them land here

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r}, netns={self.name!r})"

    def run(
        self, argv: Sequence[str], check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this netns (``ip netns exec``); raise CommandError on failure."""
        return _exec(["ip", "netns", "exec", self.name, *argv], check=check, input=input)

    def ip_batch(self, commands: Iterable[str]) -> None:
        """Run ``ip`` commands (one per line, without the leading ``ip``) in this netns."""
        script = "".join(f"{line}\n" for line in commands)
        if script:
            _exec(["ip", "-n", self.name, "-batch", "-"], input=script)

    def set_sysctls(self, values: dict[str, str | int]) -> None:
        """Write ``net.*`` sysctls of this netns (dotted keys, so no dots in interface names)."""
        with in_netns(self.name):
            for key, value in values.items():
                if not key.startswith("net."):
                    raise ValueError(f"only per-netns net.* sysctls can be set, not {key}")
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(f"{value}\n")

    def _own(self, addr: IPAddress) -> None:
        self.cluster._claim(addr, self)
        self.addresses.append(addr)


class Pod(Netns):
    KIND = "p"

    def __init__(
        self,
        cluster: Cluster,
        key: str,
        name: str,
        node: Node,
        iface: str,
        ipv4: IPAddress | None,
        ipv6: IPAddress | None,
    ) -> None:
        super().__init__(cluster, key, name)
        self.node = node
        self.iface = iface
        self.ipv4 = ipv4
        self.ipv6 = ipv6

    @property
    def id(self) -> str:
        return self.key


class External(Netns):
    """A host outside the node, behind the uplink ``iface``; its default route points at the node."""

    KIND = "x"

    def __init__(self, cluster: Cluster, key: str, name: str, node: Node, iface: str) -> None:
        super().__init__(cluster, key, name)
        self.node = node
        self.iface = iface
        self.ipv4: IPAddress | None = None
        self.ipv6: IPAddress | None = None


class Node(Netns):
    KIND = "n"

    def __init__(self, cluster: Cluster, key: str, name: str) -> None:
        super().__init__(cluster, key, name)
        self.pods: dict[str, Pod] = {}
        self.externals: dict[str, External] = {}
        # Nodes joined by Cluster.connect: peer -> (our iface, peer's link IPv4, peer's link IPv6).
        self.peers: dict[Node, tuple[str, IPAddress | None, IPAddress | None]] = {}
        self.interfaces: set[str] = set()
        self.link_addresses: set[IPAddress] = set()  # our ends of Cluster.connect links

    def routed_addresses(self) -> list[IPAddress]:
        """What a connected node must route via us: our node IPs, pods and external hosts."""
        out = [a for a in self.addresses if a not in self.link_addresses]
        for ns in [*self.pods.values(), *self.externals.values()]:
            out.extend(ns.addresses)
        return out

    def _announce(self, addrs: Iterable[IPAddress]) -> None:
        """Give every connected node a route to ``addrs`` via us."""
        addrs = list(addrs)
        for peer in self.peers:
            peer_iface, via_v4, via_v6 = peer.peers[self]
            lines = []
            for addr in addrs:
                via = via_v4 if addr.version == 4 else via_v6
                if via is not None:
                    lines.append(f"route add {_host_prefix(addr)} via {via} dev {peer_iface}")
            peer.ip_batch(lines)

    def _check_iface(self, iface: str) -> None:
        if not (0 < len(iface) <= IFNAMSIZ) or not re.fullmatch(r"[A-Za-z0-9_-]+", iface):
            raise ValueError(f"bad interface name {iface!r} (1-{IFNAMSIZ} chars of [A-Za-z0-9_-])")
        if iface in self.interfaces or iface == "lo":
            raise ValueError(f"interface {iface!r} already exists on node {self.key!r}")

    def _veth_sysctls(self, iface: str, proxy_arp: bool) -> dict[str, str | int]:
        values: dict[str, str | int] = {
            f"net.ipv4.conf.{iface}.rp_filter": 0,
            f"net.ipv6.conf.{iface}.accept_dad": 0,
        }
        if proxy_arp:
            values[f"net.ipv4.conf.{iface}.proxy_arp"] = 1
            values[f"net.ipv4.neigh.{iface}.proxy_delay"] = 0
        return values

    def add_pod(self, pod_id: str, iface: str, ipv4: str | None, ipv6: str | None) -> Pod:
        """A pod netns joined by a veth: ``iface`` here, ``eth0`` in the pod (see module doc)."""
        self._check_iface(iface)
        if ipv4 is None and ipv6 is None:
            raise ValueError("a pod needs an IPv4 or an IPv6 address")
        v4 = ipaddress.IPv4Address(ipv4) if ipv4 is not None else None
        v6 = ipaddress.IPv6Address(ipv6) if ipv6 is not None else None
        pod = self.cluster._new_ns(Pod, pod_id, node=self, iface=iface, ipv4=v4, ipv6=v6)
        self.interfaces.add(iface)
        self.pods[pod_id] = pod
        mac = self.cluster._new_mac()
        for addr in (v4, v6):
            if addr is not None:
                pod._own(addr)

        self.ip_batch(
            [
                f"link add {iface} address {HOST_VETH_MAC} type veth"
                f" peer name eth0 address {mac} netns {pod.name}"
            ]
        )
        self.set_sysctls(self._veth_sysctls(iface, proxy_arp=True))
        pod.set_sysctls({"net.ipv6.conf.eth0.accept_dad": 0})
        node_cmds = [f"link set {iface} up"]
        pod_cmds = ["link set lo up", "link set eth0 up"]
        if v4 is not None:
            node_cmds += [
                f"route add {v4}/32 dev {iface} scope link",
                f"neigh replace {v4} lladdr {mac} dev {iface} nud permanent",
            ]
            pod_cmds += [
                f"addr add {v4}/32 dev eth0",
                f"route add {POD_GATEWAY_V4} dev eth0 scope link",
                f"route add default via {POD_GATEWAY_V4} dev eth0",
                f"neigh replace {POD_GATEWAY_V4} lladdr {HOST_VETH_MAC} dev eth0 nud permanent",
            ]
        if v6 is not None:
            node_cmds += [
                f"addr add {POD_GATEWAY_V6}/64 dev {iface} nodad",
                f"route add {v6}/128 dev {iface}",
                f"neigh replace {v6} lladdr {mac} dev {iface} nud permanent",
            ]
            pod_cmds += [
                f"addr add {v6}/128 dev eth0 nodad",
                f"route add ::/0 via {POD_GATEWAY_V6} dev eth0",
                f"neigh replace {POD_GATEWAY_V6} lladdr {HOST_VETH_MAC} dev eth0 nud permanent",
            ]
        self.ip_batch(node_cmds)
        pod.ip_batch(pod_cmds)
        self._announce(pod.addresses)
        return pod

    def add_uplink(
        self,
        iface: str,
        node_ipv4: str | None,
        node_ipv6: str | None = None,
        peer_ipv4: str | None = None,
        peer_ipv6: str | None = None,
        *,
        name: str | None = None,
    ) -> External:
        """A veth ``iface`` from this node to a new external-host netns (``name``, its eth0).

        Addresses may carry a prefix (``"192.168.100.1/24"``: an ordinary subnet) or not (then each
        side gets a host address and a host route to the other). The node addresses are node IPs:
        pods reach them through their default route, the external host reaches pods via the node.
        """
        self._check_iface(iface)
        pairs = [(node_ipv4, peer_ipv4), (node_ipv6, peer_ipv6)]
        for local, remote in pairs:
            if (local is None) != (remote is None):
                raise ValueError("give the node and the peer address of a family together")
        if node_ipv4 is None and node_ipv6 is None:
            raise ValueError("an uplink needs IPv4 or IPv6 addresses")
        key = name if name is not None else f"{self.key}-{iface}"
        ext = self.cluster._new_ns(External, key, node=self, iface=iface)
        self.interfaces.add(iface)
        self.externals[key] = ext
        node_mac, ext_mac = self.cluster._new_mac(), self.cluster._new_mac()

        self.ip_batch(
            [
                f"link add {iface} address {node_mac} type veth"
                f" peer name eth0 address {ext_mac} netns {ext.name}"
            ]
        )
        self.set_sysctls(self._veth_sysctls(iface, proxy_arp=False))
        ext.set_sysctls({"net.ipv6.conf.eth0.accept_dad": 0})
        node_cmds = [f"link set {iface} up"]
        ext_cmds = ["link set lo up", "link set eth0 up"]
        node_ips: list[IPAddress] = []
        for local_text, remote_text in pairs:
            if local_text is None or remote_text is None:
                continue
            (local, plen), (remote, rplen) = _address(local_text), _address(remote_text)
            if local.version != remote.version:
                raise ValueError(f"{local_text} and {remote_text} are of different families")
            node_ips.append(local)
            self._own(local)
            ext._own(remote)
            if remote.version == 4:
                ext.ipv4 = remote
            else:
                ext.ipv6 = remote
            nodad = " nodad" if local.version == 6 else ""
            if plen is None or rplen is None:
                # Host addresses plus a route to the other end (`addr ... peer` adds no IPv6 route).
                node_cmds += [
                    f"addr add {_host_prefix(local)} dev {iface}{nodad}",
                    f"route add {_host_prefix(remote)} dev {iface}",
                ]
                ext_cmds += [
                    f"addr add {_host_prefix(remote)} dev eth0{nodad}",
                    f"route add {_host_prefix(local)} dev eth0",
                ]
            else:
                node_cmds.append(f"addr add {local}/{plen} dev {iface}{nodad}")
                ext_cmds.append(f"addr add {remote}/{rplen} dev eth0{nodad}")
            default = "default" if local.version == 4 else "::/0"
            node_cmds.append(f"neigh replace {remote} lladdr {ext_mac} dev {iface} nud permanent")
            ext_cmds += [
                f"neigh replace {local} lladdr {node_mac} dev eth0 nud permanent",
                f"route add {default} via {local} dev eth0",
            ]
        self.ip_batch(node_cmds)
        ext.ip_batch(ext_cmds)
        self._announce([*node_ips, *ext.addresses])
        return ext

    def add_address(self, address: str) -> None:
        """Give the node an extra node IP on ``lo`` (useful when it has no uplink)."""
        addr = ipaddress.ip_address(address)
        self._own(addr)
        self.ip_batch([f"addr add {_host_prefix(addr)} dev lo"])
        self._announce([addr])


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
                f"addr add {_host_prefix(addr_a)} dev {iface_a}{nodad}",
                f"route add {_host_prefix(addr_b)} dev {iface_a}",
                f"neigh replace {addr_b} lladdr {mac_b} dev {iface_a} nud permanent",
            ]
            cmds_b += [
                f"addr add {_host_prefix(addr_b)} dev {iface_b}{nodad}",
                f"route add {_host_prefix(addr_a)} dev {iface_b}",
                f"neigh replace {addr_a} lladdr {mac_a} dev {iface_b} nud permanent",
            ]
        a.ip_batch(cmds_a)
        b.ip_batch(cmds_b)
        v4, v6 = links.get(4), links.get(6)
        # Each side records its own iface and the *other* side's link addresses (its next hops).
        a.peers[b] = (iface_a, v4[1] if v4 else None, v6[1] if v6 else None)
        b.peers[a] = (iface_b, v4[0] if v4 else None, v6[0] if v6 else None)
        for node, other in ((a, b), (b, a)):
            iface, via_v4, via_v6 = other.peers[node]
            lines = []
            for addr in node.routed_addresses():
                via = via_v4 if addr.version == 4 else via_v6
                if via is not None:
                    lines.append(f"route add {_host_prefix(addr)} via {via} dev {iface}")
            other.ip_batch(lines)

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
                _exec(
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
        _exec(["ip", "netns", "add", name])
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
