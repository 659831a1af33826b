"""VXLAN mode (IPPool ``vxlanMode: Always``, no BGP): runtime/vxlan.py in network namespaces.

Three nodes share an L2 segment (a bridge in a "switch" netns). IPAM gives each node a tunnel
address and pod addresses; each node gets ``vxlan.calico`` with static neighbour and FDB entries
for the others, and routes to their blocks through it (protocol 81, reconciled together with the
workload and blackhole routes). Pods on different nodes then reach each other, and the
encapsulated traffic is the only thing that crosses the segment: nodes have no route to each
other's pod blocks except through the tunnel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import Endpoint, ResourceSet
from runtime.ipam import IPAM
from runtime.ipam_state import IPAMState, StateFile
from runtime.routes import block_routes, reconcile, workload_routes
from runtime.vxlan import DEVICE, allocate_tunnel_address, reconcile_device, vteps, vxlan_routes
from tests.support.netns import Cluster, Node
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel

NODES = {"v1": "192.168.88.1", "v2": "192.168.88.2", "v3": "192.168.88.3"}
YAML = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: overlay}
spec: {cidr: 10.66.0.0/16, blockSize: 26, vxlanMode: Always}
""" + "".join(
    f"""---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {name}}}
spec:
  bgp: {{ipv4Address: {ip}/24}}
"""
    for name, ip in NODES.items()
)


@dataclass
class Overlay:
    cluster: Cluster
    nodes: dict[str, Node]
    rs: ResourceSet
    state: IPAMState
    endpoints: list[Endpoint]
    pods: dict[str, list[tuple[str, str]]]

    def apply(self, name: str) -> tuple[bool, bool]:
        """Reconcile node ``name``: (device changed, routes changed)."""
        from pyroute2 import IPRoute

        all_vteps = vteps(self.rs.nodes, self.rs.ip_pools, self.state)
        local = next(v for v in all_vteps if v.node == name)
        with IPRoute(netns=self.nodes[name].name) as ipr:
            dev = reconcile_device(ipr, local, all_vteps)
            wanted = (
                workload_routes(self.endpoints, name)
                + block_routes(self.state.sorted_blocks(), name)
                + vxlan_routes(name, all_vteps)
            )
            routes = reconcile(ipr, wanted, families=(4,))
            assert not routes.skipped, routes.skipped
        return dev.changed, routes.changed


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Overlay]:
    with Cluster() as cluster:
        switch = cluster.add_node("switch")
        switch.ip_batch(["link add br0 type bridge", "link set br0 up"])
        nodes = {}
        for name, addr in NODES.items():
            node = nodes[name] = cluster.add_node(name)
            node.ip_batch(
                [
                    f"link add eth0 type veth peer name p-{name} netns {switch.name}",
                    f"addr add {addr}/24 dev eth0",
                    "link set eth0 up",
                ]
            )
            switch.ip_batch([f"link set p-{name} master br0", f"link set p-{name} up"])
        sink, sources = DiagnosticSink(), SourceRegistry()
        rs = load_text(YAML, "overlay.yaml", sink, sources)
        assert not sink.diagnostics, sink.diagnostics
        sf = StateFile(str(tmp_path / "ipam.json"))
        pods: dict[str, list[tuple[str, str]]] = {}
        with sf.transaction() as state:
            ipam = IPAM(state, rs.ip_pools, {n.name: dict(n.labels) for n in rs.nodes})
            for name in NODES:
                allocate_tunnel_address(ipam, name)
                pods[name] = [
                    (f"{name}-p{i}", str(ipam.allocate(name, f"default/{name}-p{i}")))
                    for i in range(2)
                ]
        state = sf.read()
        endpoints = []
        for name, node in nodes.items():
            for i, (pod_id, addr) in enumerate(pods[name]):
                iface = f"cali{name}{i}"
                node.add_pod(pod_id, iface, addr, None)
                node.ip_batch(
                    [f"route del {addr}/32 dev {iface}"]
                )  # Tortie's route replaces the harness's
                endpoints.append(
                    Endpoint(
                        "WorkloadEndpoint",
                        pod_id,
                        "default",
                        name,
                        iface,
                        (ipaddress.ip_address(addr),),
                        pod=pod_id,
                    )
                )
        yield Overlay(cluster, nodes, rs, state, endpoints, pods)


def test_vxlan_overlay(overlay: Overlay) -> None:
    o = overlay
    tunnels = {v.node: v for v in vteps(o.rs.nodes, o.rs.ip_pools, o.state)}
    assert sorted(tunnels) == sorted(NODES)
    for name in NODES:
        assert o.apply(name) == (True, True)

    v1 = o.nodes["v1"]
    link = v1.run(["ip", "-d", "link", "show", DEVICE]).stdout
    assert "vxlan id 4096" in link and "dstport 4789" in link and "nolearning" in link
    assert f"local {NODES['v1']}" in link and tunnels["v1"].mac in link
    assert f"{tunnels['v1'].tunnel_ip}/32" in v1.run(["ip", "-4", "addr", "show", DEVICE]).stdout
    routes = v1.run(["ip", "-4", "route", "show", "proto", "81"]).stdout
    for other in ("v2", "v3"):
        t = tunnels[other]
        for block in t.blocks:
            assert f"{block} via {t.tunnel_ip} dev {DEVICE} metric 1024 onlink" in routes, routes
        fdb = v1.run(["bridge", "fdb", "show", "dev", DEVICE]).stdout
        assert f"{t.mac} dst {t.node_ip} self permanent" in fdb, fdb
        neigh = v1.run(["ip", "neigh", "show", "dev", DEVICE]).stdout
        assert f"{t.tunnel_ip} lladdr {t.mac} PERMANENT" in neigh, neigh

    probes = [
        Probe(pod, ip, "TCP", 8080)
        for node, pods in o.pods.items()
        for pod, _ in pods
        for other, other_pods in o.pods.items()
        if other != node
        for _, ip in other_pods
    ]
    results = send_probes(o.cluster, probes, timeout=5.0)
    assert all(results.values()), [p for p, ok in results.items() if not ok]

    # Idempotent: nothing changes on a second pass.
    for name in NODES:
        assert o.apply(name) == (False, False)


def test_vxlan_removes_what_it_did_not_ask_for(overlay: Overlay) -> None:
    o = overlay
    o.apply("v1")
    v1 = o.nodes["v1"]
    v1.ip_batch(
        [
            f"neigh replace 10.66.9.9 lladdr 66:00:00:00:00:99 dev {DEVICE} nud permanent",
            f"addr add 10.66.9.1/32 dev {DEVICE}",
        ]
    )
    v1.run(["bridge", "fdb", "append", "66:00:00:00:00:99", "dev", DEVICE, "dst", "192.168.88.99"])
    assert o.apply("v1")[0] is True
    assert "10.66.9.9" not in v1.run(["ip", "neigh", "show", "dev", DEVICE]).stdout
    assert "192.168.88.99" not in v1.run(["bridge", "fdb", "show", "dev", DEVICE]).stdout
    assert "10.66.9.1" not in v1.run(["ip", "-4", "addr", "show", DEVICE]).stdout
    # A device with the wrong VNI is replaced.
    v1.ip_batch(
        [
            f"link del {DEVICE}",
            f"link add {DEVICE} type vxlan id 7 dstport 4789 local {NODES['v1']}",
        ]
    )
    assert o.apply("v1") == (True, True)  # routes via the old device vanished with it
    assert "vxlan id 4096" in v1.run(["ip", "-d", "link", "show", DEVICE]).stdout
