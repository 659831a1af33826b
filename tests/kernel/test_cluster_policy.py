"""Three nodes, two dataplane targets, one policy: pods on different nodes reach each other
exactly as the evaluator says, with routes from BGP (BIRD) or from the VXLAN overlay.

Topology (tests/support/cluster_setup.py): three node namespaces on one L2 segment (a bridge
in a "switch" netns, ``eth0`` = 192.168.77.N/24). IPAM (the state file, as ``tortie ipam``
would use it) gives each node a block and two pods an address from it; the YAML below then
names those pods (``nodeName``, ``status.podIP``), so every node holds a pod of each namespace.
Tortie's workload routes and block blackholes are reconciled on each node (protocol 81), and:

- ``bgp``: every node runs BIRD on the configuration ``runtime.bgp`` renders (full mesh,
  AS 64512); the test waits until each node's kernel has a ``proto bird`` route to every other
  node's block, through the other node's eth0;
- ``vxlan``: the pool has ``vxlanMode: Always``; each node gets a tunnel address from IPAM and
  ``vxlan.calico`` with static neighbours / FDB and routes to the other blocks through it.

Policy, compiled for each node and loaded through the ``tortie apply`` machinery
(``runtime.apply`` with ``Env.netns``): **nftables on n1 and n2, iptables on n3**, so a flow
between n3 and another node has its egress checked by one target and its ingress by the other.

- ``shop``: k8s default-deny ingress; ``api`` admits TCP 8080 / UDP 5353 from ``role: client``
  pods of any namespace; ``db`` admits TCP 8080 from ``api``;
- ``ops``: k8s egress policy: ``role: client`` pods may only open TCP 8080 / 9090;
- tier ``security`` (order 100) with a GlobalNetworkPolicy on every endpoint: ingress Deny
  from ``quarantine == 'true'``, Allow ICMP echo, else Pass; egress Deny UDP to ``team == 'x'``,
  else Pass.

Checks: TCP 8080, TCP 9090, UDP 5353 and ICMP echo between every ordered pair of pods (cross-node
and same-node) arrive exactly when ``evaluate(program, flow).allowed`` (the program compiled for
the whole cluster, ``node=None``). A few verdicts are pinned, so a typo in the YAML cannot make
the check vacuous, and conntrack shows *where* a flow stopped (SEMANTICS.md §Evaluation order
item 9): a flow denied by ingress has an entry on the source node only (egress passed there, the
destination node dropped it), a flow denied by egress has none anywhere. In BGP mode, stopping
n3's BIRD then withdraws n3's block from n1 and n2: flows to and from n3 stop, the rest of the
matrix still matches the evaluator.

Cleanup: BIRDs are stopped by PID and the namespaces deleted (with their rulesets, ipsets and
conntrack tables) also when the test fails.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from compiler.artifact import write_artifact
from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import ResourceSet
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.nodes import Program
from compiler.pipeline import compile_program
from compiler.targets import get_target
from compiler.tools import bird, nft
from compiler.tools import ipset as ipset_tool
from compiler.tools import iptables as iptables_tool
from runtime.apply import apply_artifact, load_dir
from runtime.ipam import IPAM
from runtime.ipam_state import IPAMState, StateFile
from runtime.iptables import detect_backend
from runtime.plan import Env
from runtime.state import StateDir
from runtime.vxlan import DEVICE, allocate_tunnel_address, vteps
from tests.support.cluster_setup import (
    Daemons,
    add_workloads,
    l2_segment,
    reconcile_routes,
    reconcile_vxlan,
    wait_for,
    workload_key,
)
from tests.support.compare import describe_verdict as describe
from tests.support.netns import Cluster, Node, in_netns
from tests.support.traffic import Probe, send_probes


def _skip_reason() -> str | None:
    if not nft.available():
        return "nft is not installed"
    backend = detect_backend()
    if not iptables_tool.available(backend):
        return f"iptables {backend} tools (iptables-{backend}-restore/-save) are not installed"
    if not ipset_tool.available():
        return "ipset is not installed"
    return None


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

NODE_IPS = {"n1": "192.168.77.1", "n2": "192.168.77.2", "n3": "192.168.77.3"}
TARGETS = {"n1": "nftables", "n2": "nftables", "n3": "iptables"}
# (node, namespace, pod, labels): two pods per node, one of each namespace.
PODS = (
    ("n1", "shop", "web", {"app": "web"}),
    ("n1", "ops", "tool-a", {"team": "x"}),
    ("n2", "shop", "api", {"app": "api"}),
    ("n2", "ops", "tool-b", {"role": "client", "quarantine": "true"}),
    ("n3", "shop", "db", {"app": "db"}),
    ("n3", "ops", "tool-c", {"role": "client"}),
)
# (protocol, port) probed between every pair of pods.
SERVICES = (("TCP", 8080), ("TCP", 9090), ("UDP", 5353), ("ICMP", None))
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1}
TIMEOUT = 1.5  # seconds a denied probe is given (drops are only known by waiting)

POLICY_YAML = """
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {tenant: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {tenant: ops}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector: {matchLabels: {role: client}}
    ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-egress, namespace: ops}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 9090}]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Ingress, Egress]
  ingress:
  - action: Deny
    source: {selector: quarantine == 'true'}
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
  - action: Pass
  egress:
  - action: Deny
    protocol: UDP
    destination: {selector: team == 'x'}
  - action: Pass
"""

# Verdicts pinned by hand (src, dst, protocol, port) -> allowed, each saying which node decides.
PINNED = {
    ("ops/tool-c", "shop/api", "TCP", 8080): True,  # client: iptables egress n3, nft ingress n2
    ("ops/tool-c", "shop/api", "UDP", 5353): False,  # k8s egress on n3 (iptables)
    ("shop/web", "shop/api", "TCP", 8080): False,  # default-deny ingress on n2
    ("shop/web", "shop/api", "ICMP", None): True,  # the security tier allows echo
    ("ops/tool-b", "shop/api", "TCP", 8080): False,  # a client, but quarantined (tier Deny)
    ("shop/api", "ops/tool-a", "UDP", 5353): False,  # GNP egress Deny on n2
    ("shop/api", "ops/tool-a", "TCP", 9090): True,
    ("shop/api", "shop/db", "TCP", 8080): True,  # ingress allowed by iptables on n3
    ("shop/api", "shop/db", "TCP", 9090): False,  # ingress denied by iptables on n3
    ("shop/db", "ops/tool-a", "UDP", 5353): False,  # GNP egress Deny on n3 (iptables)
    ("shop/db", "ops/tool-b", "UDP", 5353): True,
}
# Where a flow leaves a conntrack entry: (src, dst, protocol, port) -> nodes with an entry.
# Policy sees only a flow's first packet, and a dropped packet's entry is never confirmed.
CONNTRACK = {
    ("shop/web", "shop/api", "TCP", 8080): {"n1"},  # ingress-denied on n2 (nftables)
    ("shop/api", "shop/db", "TCP", 9090): {"n2"},  # ingress-denied on n3 (iptables)
    ("ops/tool-c", "ops/tool-a", "UDP", 5353): set(),  # egress-denied on n3 (iptables)
    ("shop/api", "ops/tool-a", "UDP", 5353): set(),  # egress-denied on n2 (nftables)
    ("ops/tool-c", "shop/api", "TCP", 8080): {"n3", "n2"},  # allowed
}


def yaml_for(mode: str, pod_ips: Mapping[str, str] | None = None) -> str:
    """The cluster in ``mode``; the pods only once IPAM has given them ``pod_ips``."""
    vxlan = ", vxlanMode: Always" if mode == "vxlan" else ""
    text = f"""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.65.0.0/16, blockSize: 26{vxlan}}}
"""
    if mode == "bgp":
        text += """---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
"""
    for name, ip in NODE_IPS.items():
        text += f"""---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {name}}}
spec:
  bgp: {{ipv4Address: {ip}/24}}
"""
    text += POLICY_YAML
    for node, ns, pod, labels in PODS:
        if pod_ips is None:  # before IPAM: pools and nodes only
            break
        ip = pod_ips[f"{ns}/{pod}"]
        text += f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {ns}
  labels: {{{", ".join(f"{k}: '{v}'" for k, v in labels.items())}}}
spec: {{nodeName: {node}}}
status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"""
    return text


def load(text: str) -> ResourceSet:
    sink = DiagnosticSink()
    rs = load_text(text, "cluster.yaml", sink, SourceRegistry())
    assert not sink.diagnostics, [d.message for d in sink.sorted()]
    return rs


@dataclass
class PolicyCluster:
    mode: str
    cluster: Cluster
    nodes: dict[str, Node]
    rs: ResourceSet
    state: IPAMState
    program: Program  # the oracle: compiled for the whole cluster (node=None)
    pods: dict[str, str]  # "<ns>/<pod>" -> IPv4
    pod_node: dict[str, str]  # "<ns>/<pod>" -> node
    daemons: Daemons = field(default_factory=Daemons)

    def blocks(self, node: str) -> list[str]:
        return [str(b.cidr) for b in self.state.sorted_blocks() if b.affinity == node]

    def routes(self, node: str) -> str:
        return self.nodes[node].run(["ip", "-4", "route", "show", "table", "main"]).stdout

    def flow(self, probe: Probe) -> Flow:
        src = ipaddress.ip_address(self.pods[probe.src])
        dst = ipaddress.ip_address(probe.dst_ip)
        if probe.protocol == "ICMP":
            return Flow(src, dst, 1, icmp_type=8, icmp_code=0)
        return Flow(src, dst, PROTO_NUMBERS[probe.protocol], dst_port=probe.dst_port)

    def probe(self, src: str, dst: str, protocol: str, port: int | None) -> Probe:
        return Probe(src, self.pods[dst], protocol, port)  # type: ignore[arg-type]

    def key(self, probe: Probe) -> tuple[str, str, str, int | None]:
        dst = next(k for k, ip in self.pods.items() if ip == probe.dst_ip)
        return (probe.src, dst, probe.protocol, probe.dst_port)


def build(cluster: Cluster, tmp: Path, mode: str, daemons: Daemons) -> PolicyCluster:
    _, nodes = l2_segment(cluster, NODE_IPS, static_neighbours=True)
    base = load(yaml_for(mode))
    # IPAM through the state file, as `tortie ipam allocate` does: tunnel addresses (VXLAN)
    # first, then one address per pod from its node's block.
    state_file = StateFile(str(tmp / "ipam.json"))
    pod_ips: dict[str, str] = {}
    with state_file.transaction() as st:
        ipam = IPAM(st, base.ip_pools, {n.name: dict(n.labels) for n in base.nodes})
        if mode == "vxlan":
            for name in NODE_IPS:
                allocate_tunnel_address(ipam, name)
        for node, ns, pod, _ in PODS:
            pod_ips[f"{ns}/{pod}"] = str(ipam.allocate(node, f"{ns}/{pod}"))
    state = state_file.read()
    rs = load(yaml_for(mode, pod_ips))
    sink = DiagnosticSink()
    program = compile_program(rs, None, sink)
    assert not sink.has_errors, [d.message for d in sink.sorted()]

    pods = add_workloads(nodes, rs.endpoints)
    assert pods == pod_ips, (pods, pod_ips)
    pod_node = {workload_key(e): e.node for e in rs.endpoints if not e.is_host}
    for name, node in nodes.items():
        if mode == "vxlan":
            reconcile_vxlan(node, name, rs, state, rs.endpoints)
        else:
            reconcile_routes(node, name, rs.endpoints, state.sorted_blocks())

    # The policy: compiled per node, written as an artifact directory, applied into the node's
    # netns by the runtime (what `tortie compile` + `tortie apply --netns` do).
    for name, node in nodes.items():
        sink = DiagnosticSink()
        node_program = compile_program(rs, name, sink)
        target = get_target(TARGETS[name])
        target.check(node_program, sink)
        assert not sink.has_errors, [d.message for d in sink.sorted()]
        directory = write_artifact(target.render(node_program), tmp / name / "artifact")
        env = Env(StateDir(tmp / name / "state"), netns=node.name, bpffs=tmp / name / "bpffs")
        outcome = apply_artifact(load_dir(directory, name), env)
        assert outcome.applied and outcome.after is not None, outcome

    if mode == "bgp":
        for name, node in nodes.items():
            daemons.start_bird(rs, name, node, state.sorted_blocks(), tmp / name / "bird")
    return PolicyCluster(mode, cluster, nodes, rs, state, program, pods, pod_node, daemons)


@pytest.fixture(
    params=[
        pytest.param(
            "bgp",
            marks=pytest.mark.skipif(
                not bird.available(), reason="bird/birdc (bird2) not installed"
            ),
        ),
        "vxlan",
    ]
)
def pc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PolicyCluster]:
    with Cluster() as cluster:
        daemons = Daemons()
        try:
            yield build(cluster, tmp_path, request.param, daemons)
        finally:
            daemons.stop_all()  # BIRDs first, then the namespaces they live in


def conntrack_flows(node: Node) -> set[tuple[str, str, int, int | None]]:
    """(src, dst, protocol, dst port) of the original direction of every entry in ``node``."""
    from pyroute2 import Conntrack

    out = set()
    with in_netns(node.name), Conntrack() as ct:
        for e in ct.dump_entries():
            t = e.tuple_orig
            out.add((str(t.saddr), str(t.daddr), int(t.proto), t.dport))
    return out


def wait_for_routes(pc: PolicyCluster) -> None:
    """Every node routes every other node's block: learnt through BGP (via the owner's eth0)
    or through the tunnel; and packets to a remote pod leave the way the mode says."""
    for name in NODE_IPS:
        for other, other_ip in NODE_IPS.items():
            if other == name:
                continue
            for block in pc.blocks(other):
                if pc.mode == "bgp":
                    want = f"{block} via {other_ip} dev eth0 proto bird"
                else:
                    want = f"{block} via "  # checked below: through vxlan.calico
                wait_for(f"{block} of {other} on {name}", lambda n=name, w=want: w in pc.routes(n))
    dev = "eth0" if pc.mode == "bgp" else DEVICE
    for pod, ip in pc.pods.items():
        for name in NODE_IPS:
            if pc.pod_node[pod] == name:
                continue
            got = pc.nodes[name].run(["ip", "-4", "route", "get", ip]).stdout
            assert f" dev {dev} " in got, (name, pod, got)
    if pc.mode == "vxlan":
        tunnels = {v.node: v for v in vteps(pc.rs.nodes, pc.rs.ip_pools, pc.state)}
        for name in NODE_IPS:
            routes = pc.routes(name)
            for other, vtep in tunnels.items():
                for block in pc.blocks(other) if other != name else ():
                    assert f"{block} via {vtep.tunnel_ip} dev {DEVICE} proto 81" in routes, routes


def all_probes(pc: PolicyCluster, pairs: list[tuple[str, str]]) -> list[Probe]:
    return [pc.probe(s, d, proto, port) for s, d in pairs for proto, port in SERVICES]


def mismatches(pc: PolicyCluster, results: Mapping[Probe, bool], label: str) -> list[str]:
    out = []
    for probe, arrived in results.items():
        verdict = evaluate(pc.program, pc.flow(probe))
        if arrived != verdict.allowed:
            src, dst, proto, port = pc.key(probe)
            out.append(
                f"{label}: {src}@{pc.pod_node[src]} -> {dst}@{pc.pod_node[dst]} {proto} "
                f"{port or ''}: kernel {'delivered' if arrived else 'did not deliver'}, "
                f"evaluator {'allow' if verdict.allowed else 'deny'}\n{describe(verdict)}"
            )
    return out


def test_cluster_policy_matches_evaluator(pc: PolicyCluster) -> None:
    wait_for_routes(pc)
    keys = sorted(pc.pods)
    pairs = [(s, d) for s in keys for d in keys if s != d]
    cross = [(s, d) for s, d in pairs if pc.pod_node[s] != pc.pod_node[d]]
    assert len(cross) == 24 and len(pairs) == 30

    # The oracle itself: pinned verdicts, and both outcomes between every two nodes.
    for (src, dst, proto, port), want in PINNED.items():
        got = evaluate(pc.program, pc.flow(pc.probe(src, dst, proto, port))).allowed
        assert got is want, (src, dst, proto, port, got)
    for a in NODE_IPS:
        for b in NODE_IPS:
            between = [(s, d) for s, d in cross if (pc.pod_node[s], pc.pod_node[d]) == (a, b)]
            verdicts = {evaluate(pc.program, pc.flow(p)).allowed for p in all_probes(pc, between)}
            assert a == b or verdicts == {True, False}, (a, b, verdicts)

    probes = all_probes(pc, pairs)
    results = send_probes(pc.cluster, probes, timeout=TIMEOUT)
    errors = mismatches(pc, results, pc.mode)
    assert not errors, f"{len(errors)} of {len(probes)} probes disagree:\n" + "\n".join(errors)
    assert sum(results.values()) not in (0, len(results))

    # Where each flow stopped: egress on the source node, ingress on the destination node.
    entries = {name: conntrack_flows(node) for name, node in pc.nodes.items()}
    for (src, dst, proto, port), where in CONNTRACK.items():
        flow = (pc.pods[src], pc.pods[dst], PROTO_NUMBERS[proto], port)
        found = {name for name, flows in entries.items() if flow in flows}
        assert found == where, (src, dst, proto, port, found)

    if pc.mode != "bgp":
        return
    # Stopping n3's BIRD withdraws its block from n1 and n2. (n3 keeps the routes it learnt:
    # the kernel protocol is ``persist``, as in Calico, so a BIRD restart does not cut traffic.)
    # Replies to n3 no longer route, so TCP and ICMP between n3 and the others stop, and so
    # does UDP towards n3; one-way UDP *from* n3 still arrives when the policy allows it.
    pc.daemons.stop_bird("n3")
    for name in ("n1", "n2"):
        for block in pc.blocks("n3"):
            wait_for(
                f"{block} withdrawn from {name}",
                lambda n=name, b=block: f"{b} via" not in pc.routes(n),
            )
    after = send_probes(pc.cluster, probes, timeout=TIMEOUT)
    errors = []
    cut = 0
    for probe, arrived in after.items():
        src, dst, _, _ = pc.key(probe)
        nodes = (pc.pod_node[src], pc.pod_node[dst])
        if (
            "n3" in nodes
            and nodes[0] != nodes[1]
            and not (probe.protocol == "UDP" and nodes[0] == "n3")
        ):
            cut += 1
            if arrived:
                errors.append(f"{pc.key(probe)} arrived, but n3's block is withdrawn")
        else:
            errors.extend(mismatches(pc, {probe: arrived}, "after withdrawal"))
    assert not errors, "\n".join(errors)
    # 2 pods on n3 x 4 elsewhere, both directions, every service but UDP out of n3.
    assert cut == 2 * 4 * 2 * len(SERVICES) - 2 * 4
