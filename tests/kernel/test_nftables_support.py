"""Kernel-test support for the nftables target: a Cluster built from a Program, probes as
evaluator flows, and a comparison that explains every disagreement.

(Kept in a ``test_nftables_*`` module so it lives with the tests that use it; its own tests at
the bottom check the probe -> flow translation.)

The topology follows the program: one node netns per node that has endpoints, with the node's
known addresses (``Program.host_ips``, which include HostEndpoint expectedIPs) on ``lo``; one pod
netns per workload endpoint, on its node, with the endpoint's interface name and IPs; one
"external host" behind its own uplink of the first node per outside address the test names.
Nodes are joined by veths to the first node. Every node loads the script compiled for it.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow, Verdict
from compiler.ir.nodes import Program, replace_program
from compiler.targets.nftables import render_program
from compiler.tools import nft
from tests.support.netns import Cluster, Node, in_netns
from tests.support.traffic import Probe, send_probes

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
    """The cluster for one program (or one program per node), and where everything lives."""

    cluster: Cluster
    programs: Mapping[str, Program]  # node name -> program compiled for it
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # endpoint id -> netns key
    externals: dict[str, str] = field(default_factory=dict)  # outside IP -> netns key
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
        return topo

    def load(self, scripts: Mapping[str, str] | None = None) -> None:
        """Load every node's script (rendered from its program unless given)."""
        for name, program in sorted(self.programs.items()):
            script = (scripts or {}).get(name) or render_program(program).script
            nft.load(script, netns=self.nodes[name].name)

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


def describe(verdict: Verdict) -> str:
    lines = []
    for dv in (verdict.egress, verdict.ingress):
        lines.append(f"    {dv.direction}: {'allow' if dv.allowed else 'deny'}")
        for step in dv.events:
            where = f" {step.span}" if step.span.line else ""
            rule = f" rule {step.rule_index}" if step.rule_index is not None else ""
            tier = f" tier {step.tier}" if step.tier else ""
            lines.append(
                f"      {step.reason}: {step.action} endpoint={step.endpoint} hook={step.hook}"
                f"{tier} {step.policy or ''}{rule}{where}"
            )
    return "\n".join(lines)


def mismatch_report(
    topo: Topology,
    results: Mapping[Probe, bool],
    expected: Mapping[Probe, bool] | None = None,
    label: str = "",
) -> list[str]:
    """One explanation per probe where the kernel disagrees with the evaluator (or with
    ``expected``, e.g. a conformance case's table)."""
    out = []
    for probe, arrived in results.items():
        flow = topo.flow(probe)
        verdict = evaluate(topo.program, flow)
        want = verdict.allowed if expected is None else expected[probe]
        if arrived == want and (expected is None or verdict.allowed == want):
            continue
        policies = sorted(
            {s.policy for dv in (verdict.egress, verdict.ingress) for s in dv.events if s.policy}
        )
        out.append(
            f"{label}{probe.src} -> {probe.dst_ip} {probe.protocol} {probe.dst_port or ''}"
            f" (flow {flow.src_ip}:{flow.src_port} -> {flow.dst_ip}:{flow.dst_port}):"
            f" kernel {'delivered' if arrived else 'did not deliver'},"
            f" evaluator {'allow' if verdict.allowed else 'deny'}"
            + (f", expected {'allow' if want else 'deny'}" if expected is not None else "")
            + f"; policies {policies}\n{describe(verdict)}"
        )
    return out


def run_and_compare(
    topo: Topology,
    probes: list[Probe],
    expected: Mapping[Probe, bool] | None = None,
    timeout: float = 0.5,
) -> list[str]:
    results = send_probes(topo.cluster, probes, timeout=timeout)
    return mismatch_report(topo, results, expected)


# -- tests of the support code itself (no kernel needed) -----------------------------------


def test_probe_flow_translation() -> None:
    topo = Topology(Cluster(), {})
    with pytest.raises(KeyError):
        topo.source_ip("nowhere", ipaddress.ip_address("10.0.0.1"))
    probe = Probe("a", "10.0.0.2", "ICMP")
    assert probe.protocol == "ICMP"
    assert next_src_port() != next_src_port()
