"""Three nodes exchange their IPAM blocks through BIRD, and pods on different nodes talk.

Topology: a "switch" netns holds a Linux bridge; each node netns has ``eth0`` (192.168.77.N/24)
plugged into it, so all nodes share one L2 segment as on a real rack. Every node runs its own
BIRD (started by ``runtime.bgp.reload.apply_config`` inside the node's netns, with its config,
control socket and PID file in the test's temporary directory) on the configuration that
``runtime.bgp`` renders from the YAML below and the node's IPAM blocks. Workload routes and
block blackholes come from ``runtime.routes`` (protocol 81); the harness's own pod routes are
deleted so that only Tortie's are in place.

Checks: each node's kernel gets a ``proto bird`` route to every other node's block (and no pod
/32s: blocks are advertised as aggregates); TCP between pods on different nodes works; stopping
one node's BIRD withdraws its block from the others. With ``gobgpd`` installed, a GoBGP
"top-of-rack router" (AS 65000) peers with every node through a global BGPPeer: it receives the
blocks, and a prefix it announces lands in the nodes' kernels.

Every daemon is stopped by PID at the end, also when the test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import Endpoint, ResourceSet
from compiler.tools import bird
from runtime.bgp.build import BuildOptions
from runtime.bgp.reload import BirdPaths, Outcome, apply_config
from runtime.bgp.render import render_node
from runtime.ipam import IPAM
from runtime.ipam_state import StateFile
from runtime.routes import block_routes, reconcile, workload_routes
from tests.support.cluster_setup import plug, wait_for
from tests.support.netns import Cluster, Node
from tests.support.traffic import Probe, send_probes

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not bird.available(), reason="bird/birdc (bird2) not installed"),
]

NODES = {"n1": "192.168.77.1", "n2": "192.168.77.2", "n3": "192.168.77.3"}
TOR_IP = "192.168.77.254"
TOR_ASN = 65000
TOR_PREFIX = "172.16.99.0/24"
BORROWED = "10.65.0.10"  # inside n1's first block, used by a pod on n3

CLUSTER_YAML = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.65.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
"""
NODE_YAML = """
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {name}}}
spec:
  bgp: {{ipv4Address: {ip}/24}}
"""
TOR_YAML = f"""
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor}}
spec: {{peerIP: {TOR_IP}, asNumber: {TOR_ASN}}}
"""


@dataclass
class Setup:
    cluster: Cluster
    tmp: Path
    nodes: dict[str, Node]
    switch: Node
    rs: ResourceSet
    blocks: dict[str, list[str]] = field(default_factory=dict)  # node -> block CIDRs
    pods: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # node -> (pod id, ip)
    pids: dict[str, int] = field(default_factory=dict)  # daemon name -> PID

    def routes(self, node: str) -> str:
        return self.nodes[node].run(["ip", "-4", "route", "show", "table", "main"]).stdout


def build(cluster: Cluster, tmp: Path, with_tor: bool) -> Setup:
    switch = cluster.add_node("switch")
    switch.ip_batch(["link add br0 type bridge", "link set br0 up"])
    nodes = {name: cluster.add_node(name) for name in NODES}
    for name, addr in NODES.items():
        plug(switch, nodes[name], f"p-{name}", f"{addr}/24")
    text = CLUSTER_YAML + "".join(NODE_YAML.format(name=n, ip=ip) for n, ip in NODES.items())
    if with_tor:
        text += TOR_YAML
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(text, "cluster.yaml", sink, sources)
    assert not sink.diagnostics, sink.diagnostics
    setup = Setup(cluster, tmp, nodes, switch, rs)

    # IPAM: two pods per node, through the state file as `tortie ipam allocate` would, and on
    # n3 a third pod whose address is borrowed from n1's block (advertised as a /32 by n3).
    state_file = StateFile(str(tmp / "ipam.json"))
    with state_file.transaction() as state:
        ipam = IPAM(state, rs.ip_pools, {n.name: dict(n.labels) for n in rs.nodes})
        for name in NODES:
            setup.pods[name] = [
                (f"{name}-p{i}", str(ipam.allocate(name, f"default/{name}-p{i}"))) for i in range(2)
            ]
        borrowed = ipaddress.ip_address(BORROWED)
        ipam.assign(borrowed, "default/n3-borrowed", "n3")
        assert [str(a) for a, b in ipam.borrowed_by("n3")] == [BORROWED]
        setup.pods["n3"].append(("n3-borrowed", BORROWED))
    state = state_file.read()
    endpoints = []
    for name, node in nodes.items():
        setup.blocks[name] = [str(b.cidr) for b in state.sorted_blocks() if b.affinity == name]
        for i, (pod_id, addr) in enumerate(setup.pods[name]):
            iface = f"cali{name}{i}"
            node.add_pod(pod_id, iface, addr, None)
            node.ip_batch(
                [f"route del {addr}/32 dev {iface}"]
            )  # the harness's route: ours replace it
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
    from pyroute2 import IPRoute

    for name, node in nodes.items():
        with IPRoute(netns=node.name) as ipr:
            result = reconcile(
                ipr, workload_routes(endpoints, name) + block_routes(state.sorted_blocks(), name)
            )
            assert not result.skipped, result.skipped
    for name, node in nodes.items():
        sink = DiagnosticSink()
        paths = BirdPaths.in_dir(str(tmp / name))
        os.makedirs(tmp / name)
        text = render_node(
            rs,
            name,
            state.sorted_blocks(),
            sink,
            options=BuildOptions(log_file=str(tmp / name / "bird.log")),
        )
        assert text is not None and not sink.diagnostics, sink.diagnostics
        assert apply_config(text, paths, netns=node.name) is Outcome.STARTED
        pid = bird.read_pid(paths.pidfile)
        assert pid is not None
        setup.pids[f"bird-{name}"] = pid
        assert apply_config(text, paths, netns=node.name) is Outcome.UNCHANGED
    return setup


def stop_all(setup: Setup) -> None:
    for pid in setup.pids.values():
        bird.stop(pid)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Setup]:
    with Cluster() as cluster:
        setup: Setup | None = None
        try:
            setup = build(cluster, tmp_path, with_tor=False)
            yield setup
        finally:
            if setup is not None:
                stop_all(setup)


def block_route(setup: Setup, node: str, block: str, via: str) -> bool:
    return f"{block} via {via} dev eth0 proto bird metric 1024" in setup.routes(node)


def test_blocks_propagate_pods_talk_and_withdraw(mesh: Setup) -> None:
    s = mesh
    for node in NODES:
        for other, other_ip in NODES.items():
            if other == node:
                continue
            for block in s.blocks[other]:
                wait_for(
                    f"{block} of {other} on {node}",
                    lambda n=node, b=block, v=other_ip: block_route(s, n, b, v),
                )
    for node in ("n1", "n2"):
        wait_for(
            f"borrowed {BORROWED} on {node}",
            lambda n=node: f"{BORROWED} via {NODES['n3']}" in s.routes(n),
        )
    for node in NODES:
        bird_routes = s.nodes[node].run(["ip", "-4", "route", "show", "proto", "bird"]).stdout
        # The other nodes' blocks as aggregates; of the /32s only n3's borrowed address.
        lines = sorted(line.strip() for line in bird_routes.strip().splitlines())
        blocks = [line for line in lines if "/26 via" in line]
        hosts = [line for line in lines if "/26 via" not in line]
        assert len(blocks) == 2, bird_routes
        borrowed = f"{BORROWED} via {NODES['n3']} dev eth0 metric 1024"  # `proto bird` filtered: not printed
        assert hosts == ([] if node == "n3" else [borrowed]), bird_routes
        # The node's own block is not programmed twice: only Tortie's protocol-81 blackhole.
        for block in s.blocks[node]:
            own = s.nodes[node].run(["ip", "-4", "route", "show", block]).stdout
            assert own.strip() == f"blackhole {block} proto 81 metric 1024", own

    probes = [
        Probe(pod, ip, "TCP", 8080)
        for node, pods in s.pods.items()
        for pod, _ in pods
        for other, other_pods in s.pods.items()
        if other != node
        for _, ip in other_pods
    ]
    results = send_probes(s.cluster, probes, timeout=5.0)
    assert all(results.values()), [p for p, ok in results.items() if not ok]

    bird.stop(s.pids.pop("bird-n3"))
    for node in ("n1", "n2"):
        for block in s.blocks["n3"]:
            wait_for(f"{block} withdrawn from {node}", lambda n=node, b=block: b not in s.routes(n))
    cut = [Probe(s.pods["n1"][0][0], s.pods["n3"][0][1], "TCP", 8080)]
    assert send_probes(s.cluster, cut, timeout=1.0)[cut[0]] is False
    still = [Probe(s.pods["n1"][0][0], s.pods["n2"][0][1], "TCP", 8080)]
    assert send_probes(s.cluster, still, timeout=5.0)[still[0]] is True


# -- GoBGP as a top-of-rack router ----------------------------------------------------------------------

GOBGP_CONF = """
[global.config]
  as = {asn}
  router-id = "{router_id}"
  port = 179
  local-address-list = ["{router_id}"]
{neighbors}
"""
GOBGP_NEIGHBOR = """
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{ip}"
    peer-as = 64512
"""


def gobgp(tor: Node, *args: str) -> str:
    return tor.run(["gobgp", "-u", "127.0.0.1", *args]).stdout


@pytest.mark.skipif(
    shutil.which("gobgpd") is None or shutil.which("gobgp") is None,
    reason="gobgpd/gobgp not installed",
)
def test_gobgp_top_of_rack(tmp_path: Path) -> None:
    with Cluster() as cluster:
        setup: Setup | None = None
        try:
            setup = build(cluster, tmp_path, with_tor=True)
            tor = cluster.add_node("tor")
            plug(setup.switch, tor, "p-tor", f"{TOR_IP}/24")
            conf = tmp_path / "gobgpd.toml"
            neighbors = "".join(GOBGP_NEIGHBOR.format(ip=ip) for ip in NODES.values())
            conf.write_text(GOBGP_CONF.format(asn=TOR_ASN, router_id=TOR_IP, neighbors=neighbors))
            log = open(tmp_path / "gobgpd.log", "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    tor.name,
                    "gobgpd",
                    "-f",
                    str(conf),
                    "--api-hosts",
                    "127.0.0.1:50051",
                    "--disable-stdlog",
                    "-l",
                    "info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            setup.pids["gobgpd"] = proc.pid  # `ip netns exec` execs gobgpd: same PID
            try:
                s = setup

                def rib() -> str:
                    try:
                        return gobgp(tor, "global", "rib", "-a", "ipv4")
                    except Exception:
                        return ""

                def path_hops(block: str) -> set[str]:
                    try:
                        rib_json = json.loads(gobgp(tor, "global", "rib", "-a", "ipv4", "-j"))
                    except Exception:
                        return set()
                    return {
                        a.get("nexthop")
                        for p in rib_json.get(block, ())
                        for a in p["attrs"]
                        if a.get("type") == 3
                    }

                for name, ip in NODES.items():
                    for block in s.blocks[name]:
                        wait_for(f"{block} at the ToR", lambda b=block: b in rib())
                        # Other nodes may re-advertise a block before its owner's session is
                        # up; wait for the owner's own path before judging next hops.
                        wait_for(
                            f"{block} from its owner {ip}", lambda b=block, i=ip: i in path_hops(b)
                        )
                table = gobgp(tor, "global", "rib", "-a", "ipv4", "-j")
                paths = json.loads(table)
                # Blocks as aggregates; the only /32 is the address n3 borrowed, from n3.
                assert [p for p in paths if p.endswith("/32")] == [f"{BORROWED}/32"], sorted(paths)
                hops = {
                    a.get("nexthop")
                    for p in paths[f"{BORROWED}/32"]
                    for a in p["attrs"]
                    if a.get("type") == 3
                }
                assert NODES["n3"] in hops, paths[f"{BORROWED}/32"]
                for name, ip in NODES.items():
                    for block in s.blocks[name]:
                        nexthops = {
                            a.get("nexthop")
                            for p in paths[block]
                            for a in p["attrs"]
                            if a.get("type") == 3
                        }
                        assert ip in nexthops, (block, paths[block])

                gobgp(tor, "global", "rib", "add", "-a", "ipv4", TOR_PREFIX, "nexthop", TOR_IP)
                for name in NODES:
                    wait_for(
                        f"{TOR_PREFIX} on {name}",
                        lambda n=name: (
                            f"{TOR_PREFIX} via {TOR_IP} dev eth0 proto bird" in s.routes(n)
                        ),
                    )
                gobgp(tor, "global", "rib", "del", "-a", "ipv4", TOR_PREFIX)
                for name in NODES:
                    wait_for(
                        f"{TOR_PREFIX} withdrawn from {name}",
                        lambda n=name: TOR_PREFIX not in s.routes(n),
                    )
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                setup.pids.pop("gobgpd", None)
                log.close()
        finally:
            if setup is not None:
                stop_all(setup)
