"""The cluster a kernel test builds from a compiled Program, and probes as evaluator flows.

The topology follows the program: one node netns per node that has endpoints, with the node's
known addresses (``Program.host_ips``, which include HostEndpoint expectedIPs) on ``lo``; one pod
netns per workload endpoint, on its node, with the endpoint's interface name and IPs; one
"external host" behind its own uplink of the first node per outside address the test names.
Nodes are joined by veths to the first node.

Every target is checked against the evaluator on this same topology; only loading differs:
:class:`NftTopology` loads nftables scripts, :class:`IptTopology` iptables artifacts on one of
the two backends (the eBPF tests subclass :class:`Topology` the same way).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from compiler.ir.flow import Flow
from compiler.ir.nodes import Program, replace_program
from compiler.targets import iptables as iptables_target
from compiler.targets import nftables as nftables_target
from compiler.targets.iptables.apply import apply as apply_iptables
from compiler.tools import iptables as iptables_tool
from compiler.tools import nft
from tests.support.netns import Cluster, Node, in_netns
from tests.support.traffic import Probe

PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132}
ECHO_REQUEST = {4: 8, 6: 128}

_src_ports = itertools.cycle(range(20000, 60000))


def next_src_port() -> int:
    """A fresh source port per probe, so no probe meets a conntrack entry of an earlier one."""
    return next(_src_ports)


def flush_conntrack(ns: str) -> None:
    """Forget every connection of ``ns`` (between differently-policied runs on one cluster)."""
    from pyroute2 import Conntrack

    with in_netns(ns), Conntrack() as ct:
        ct.flush()


@dataclass
class Topology:
    """The cluster for one program (or one program per node), and where everything lives.

    Target-neutral: a subclass per target says how a node loads its artifact (:meth:`load`)."""

    cluster: Cluster
    programs: Mapping[str, Program]  # node name -> program compiled for it
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # endpoint id -> netns key
    externals: dict[str, str] = field(default_factory=dict)  # outside IP -> netns key
    uplink_ifaces: dict[str, str] = field(default_factory=dict)  # external key -> first node iface
    node_addrs: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = field(
        default_factory=dict
    )
    _route_src: dict[tuple[str, object], ipaddress.IPv4Address | ipaddress.IPv6Address] = field(
        default_factory=dict
    )

    @property
    def program(self) -> Program:
        """The program used as the oracle (the first node's; the evaluator does not depend on
        the node a program was compiled for, except for per-node FelixConfiguration)."""
        return self.programs[sorted(self.programs)[0]]

    @classmethod
    def build(
        cls,
        cluster: Cluster,
        programs: Mapping[str, Program],
        externals: Iterable[str] = (),
        uplinks: Iterable[tuple[str, str | None, str | None, str | None, str | None]] = (),
    ) -> Topology:
        """``externals``: outside addresses, each behind its own uplink of the first node.
        ``uplinks``: (iface, node v4, node v6, external v4, external v6) of the first node,
        for tests that need a particular interface name (a named host endpoint)."""
        prog = next(iter(programs.values()))
        names = sorted({e.node for e in prog.endpoints} | set(programs))
        # Nodes without a program of their own get the same program compiled for them.
        full = {n: programs.get(n) or replace_program(prog, node=n) for n in names}
        topo = cls(cluster, full)
        first = names[0]
        for i, name in enumerate(names):
            node = cluster.add_node(name)
            topo.nodes[name] = node
            addrs = list(prog.host_ips.get(name, ()))
            topo.node_addrs[name] = addrs
            for addr in addrs:
                node.add_address(str(addr))
            if name != first:
                cluster.connect(
                    topo.nodes[first],
                    node,
                    iface_a=f"n{i}",
                    iface_b="n0",
                    ipv4=(f"198.19.{i}.1", f"198.19.{i}.2"),
                    ipv6=(f"fd00:ff19:{i}::1", f"fd00:ff19:{i}::2"),
                )
        for ep in prog.endpoints:
            if ep.is_host:
                continue
            v4 = next((str(ip) for ip in ep.ips if ip.version == 4), None)
            v6 = next((str(ip) for ip in ep.ips if ip.version == 6), None)
            if v4 is None and v6 is None:
                continue
            topo.nodes[ep.node].add_pod(ep.id, ep.interface, v4, v6)
            topo.pods[ep.id] = ep.id
        for iface, node_v4, node_v6, ext_v4, ext_v6 in uplinks:
            key = f"ext-{iface}"
            topo.nodes[first].add_uplink(iface, node_v4, node_v6, ext_v4, ext_v6, name=key)
            topo.uplink_ifaces[key] = iface
            for addr in (ext_v4, ext_v6):
                if addr is not None:
                    topo.externals[addr] = key
        known = {str(a) for addrs in topo.node_addrs.values() for a in addrs} | set(topo.externals)
        known |= {str(ip) for e in prog.endpoints if not e.is_host for ip in e.ips}
        for i, text in enumerate(sorted(set(externals) - known)):
            ip = ipaddress.ip_address(text)
            key = f"ext-{text}"
            if ip.version == 4:
                topo.nodes[first].add_uplink(f"x{i}", f"198.18.{i}.1", None, text, None, name=key)
            else:
                topo.nodes[first].add_uplink(
                    f"x{i}", None, f"fd00:ff18:{i}::1", None, text, name=key
                )
            topo.externals[text] = key
            topo.uplink_ifaces[key] = f"x{i}"
        return topo

    def via(self, probe: Probe) -> str | None:
        """The host endpoint (id) of the first node whose interface the probe is forwarded
        through, for ``evaluate(..., via=)``: an external host's probe entering through its
        uplink (not to the node itself), or a first-node pod's probe leaving through one."""
        first = sorted(self.programs)[0]
        heps = {e.interface: e.id for e in self.program.endpoints if e.is_host and e.node == first}
        iface = self.uplink_ifaces.get(probe.src)
        if iface is not None:
            if probe.address in set(self.node_addrs.get(first, ())):
                return None
            return heps.get(iface)
        out = self.uplink_ifaces.get(self.externals.get(str(probe.address), ""))
        pod = next((e for e in self.program.endpoints if e.id == probe.src), None)
        if out is None or pod is None or pod.is_host or pod.node != first:
            return None
        return heps.get(out)

    def load(self, artifacts: Mapping[str, object] | None = None) -> None:
        """Load every node's artifact into its netns: what differs between targets."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to load a target")

    def flush(self) -> None:
        for node in self.nodes.values():
            flush_conntrack(node.name)

    # -- probes -------------------------------------------------------------------------------

    def source_ip(
        self, key: str, dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The source address the kernel of ``key`` uses towards ``dst`` (nodes have several
        addresses, so ask the routing table; pods and external hosts have one per family)."""
        ns = self.cluster.get(key)
        if isinstance(ns, Node):
            if (key, dst) not in self._route_src:
                out = ns.run(["ip", "route", "get", str(dst)]).stdout
                m = re.search(r"\bsrc (\S+)", out)
                if m is None:
                    raise KeyError(f"{key} has no route with a source address to {dst}: {out}")
                self._route_src[(key, dst)] = ipaddress.ip_address(m[1])
            return self._route_src[(key, dst)]
        for addr in ns.addresses:
            if addr.version == dst.version:
                return addr
        raise KeyError(f"{key} has no IPv{dst.version} address")

    def flow(self, probe: Probe) -> Flow:
        family = probe.address.version
        src = self.source_ip(probe.src, probe.address)
        number = PROTO_NUMBERS[probe.protocol]
        if probe.protocol in ("ICMP", "ICMPv6"):
            return Flow(src, probe.address, number, icmp_type=ECHO_REQUEST[family], icmp_code=0)
        return Flow(src, probe.address, number, src_port=probe.src_port, dst_port=probe.dst_port)

    def probe(self, src_key: str, dst_ip: str, protocol: str, port: int | None) -> Probe:
        if protocol == "ICMP" and ipaddress.ip_address(dst_ip).version == 6:
            protocol = "ICMPv6"
        if protocol in ("ICMP", "ICMPv6"):
            return Probe(src_key, dst_ip, protocol)  # type: ignore[arg-type]
        return Probe(src_key, dst_ip, protocol, port, next_src_port())  # type: ignore[arg-type]

    def pod_probes(self, ports: tuple[int, ...], extra_dests: tuple[str, ...] = ()) -> list[Probe]:
        """ICMP echo, and TCP and UDP to each of ``ports``, from every pod to every other pod's
        addresses (and to ``extra_dests``), in the address families the source pod has."""
        local = [e for e in self.program.endpoints if not e.is_host and e.id in self.pods]
        dests = [(a, str(addr)) for a, b in itertools.permutations(local, 2) for addr in b.ips]
        dests += [(a, dst) for a in local for dst in extra_dests]
        probes = []
        for a, dst in dests:
            probes.append(self.probe(a.id, dst, "ICMP", None))
            for proto, port in itertools.product(("TCP", "UDP"), ports):
                probes.append(self.probe(a.id, dst, proto, port))
        versions = {key: {x.version for x in self.cluster.get(key).addresses} for key in self.pods}
        return [p for p in probes if p.address.version in versions.get(p.src, {4, 6})]


@dataclass
class NftTopology(Topology):
    """A :class:`Topology` whose nodes load nftables scripts."""

    def load(self, scripts: Mapping[str, str] | None = None) -> None:  # type: ignore[override]
        """Load every node's script (rendered from its program unless given)."""
        for name, program in sorted(self.programs.items()):
            script = (scripts or {}).get(name) or nftables_target.render_program(program).script
            nft.load(script, netns=self.nodes[name].name)


@dataclass
class IptTopology(Topology):
    """A :class:`Topology` whose nodes load iptables artifacts with ``backend``."""

    backend: str = "legacy"

    @classmethod
    def make(
        cls, cluster: Cluster, programs: Mapping[str, Program], backend: str, **kw: object
    ) -> IptTopology:
        topo = cls.build(cluster, programs, **kw)  # type: ignore[arg-type]
        assert isinstance(topo, IptTopology)
        topo.backend = backend
        return topo

    def load(self, files: Mapping[str, Mapping[str, bytes]] | None = None) -> None:  # type: ignore[override]
        """Apply every node's artifact (rendered from its program unless given)."""
        for name, program in sorted(self.programs.items()):
            node_files = (files or {}).get(name) or iptables_target.render_program(program).files
            left = apply_iptables(node_files, backend=self.backend, netns=self.nodes[name].name)
            assert not left, f"stale sets left on {name}: {left}"

    def save(self, node: str, family: int = 4) -> str:
        return iptables_tool.save(family=family, backend=self.backend, netns=self.nodes[node].name)
