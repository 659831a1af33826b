"""The namespaces of a simulated cluster: nodes, the pods on them and external hosts behind
their uplinks, and how each is wired (see the package docstring for the topology).

Objects here are made by :class:`~tests.support.netns.cluster.Cluster`, which names, creates
and deletes the namespaces; a node asks its cluster for new namespaces, MACs and addresses.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tests.support.netns.command import in_netns, run_command

if TYPE_CHECKING:
    from tests.support.netns.cluster import Cluster

HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"  # Calico's host-side veth MAC
POD_GATEWAY_V4 = "169.254.1.1"
POD_GATEWAY_V6 = "fe80::1"
IFNAMSIZ = 15  # IFNAMSIZ - 1: the longest Linux interface name

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> tuple[IPAddress, int | None]:
    """``"10.0.0.1"`` or ``"10.0.0.1/24"`` -> (address, prefix length or None)."""
    if "/" in text:
        iface = ipaddress.ip_interface(text)
        return iface.ip, iface.network.prefixlen
    return ipaddress.ip_address(text), None


def host_prefix(addr: IPAddress) -> str:
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
        return run_command(["ip", "netns", "exec", self.name, *argv], check=check, input=input)

    def ip_batch(self, commands: Iterable[str]) -> None:
        """Run ``ip`` commands (one per line, without the leading ``ip``) in this netns."""
        script = "".join(f"{line}\n" for line in commands)
        if script:
            run_command(["ip", "-n", self.name, "-batch", "-"], input=script)

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

    def _announce(self, addrs: Iterable[IPAddress], peers: Iterable[Node] | None = None) -> None:
        """Give every connected node (or just ``peers``) a route to ``addrs`` via us."""
        addrs = list(addrs)
        for peer in self.peers if peers is None else peers:
            peer_iface, via_v4, via_v6 = peer.peers[self]
            lines = []
            for addr in addrs:
                via = via_v4 if addr.version == 4 else via_v6
                if via is not None:
                    lines.append(f"route add {host_prefix(addr)} via {via} dev {peer_iface}")
            peer.ip_batch(lines)

    def _check_iface(self, iface: str) -> None:
        if not (0 < len(iface) <= IFNAMSIZ) or not re.fullmatch(r"[A-Za-z0-9_-]+", iface):
            raise ValueError(f"bad interface name {iface!r} (1-{IFNAMSIZ} chars of [A-Za-z0-9_-])")
        if iface in self.interfaces or iface == "lo":
            raise ValueError(f"interface {iface!r} already exists on node {self.key!r}")

    def _veth_to_eth0(
        self, iface: str, mac: str, peer: Netns, peer_mac: str, *, proxy_arp: bool
    ) -> None:
        """A veth ``iface`` here whose other end is ``eth0`` in ``peer`` (a pod or external host)."""
        self.ip_batch(
            [
                f"link add {iface} address {mac} type veth"
                f" peer name eth0 address {peer_mac} netns {peer.name}"
            ]
        )
        self.set_sysctls(self._veth_sysctls(iface, proxy_arp=proxy_arp))
        peer.set_sysctls({"net.ipv6.conf.eth0.accept_dad": 0})

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

        self._veth_to_eth0(iface, HOST_VETH_MAC, pod, mac, proxy_arp=True)
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

        self._veth_to_eth0(iface, node_mac, ext, ext_mac, proxy_arp=False)
        node_cmds = [f"link set {iface} up"]
        ext_cmds = ["link set lo up", "link set eth0 up"]
        node_ips: list[IPAddress] = []
        for local_text, remote_text in pairs:
            if local_text is None or remote_text is None:
                continue
            (local, plen), (remote, rplen) = parse_address(local_text), parse_address(remote_text)
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
                    f"addr add {host_prefix(local)} dev {iface}{nodad}",
                    f"route add {host_prefix(remote)} dev {iface}",
                ]
                ext_cmds += [
                    f"addr add {host_prefix(remote)} dev eth0{nodad}",
                    f"route add {host_prefix(local)} dev eth0",
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
        self.ip_batch([f"addr add {host_prefix(addr)} dev lo"])
        self._announce([addr])
