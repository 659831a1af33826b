"""Every non-policy kind → model objects; Lists; skipped kinds; cross-resource rules."""

from __future__ import annotations

import ipaddress
import textwrap

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.frontend.model import (
    DEFAULT_FAILSAFE_OUT,
    FailsafePort,
    FelixConfig,
    NamedPort,
    ResourceSet,
)
from compiler.frontend.schema.k8s_core import interface_name

C = "apiVersion: projectcalico.org/v3\n"


def run(text: str) -> tuple[ResourceSet, DiagnosticSink, SourceRegistry]:
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(textwrap.dedent(text), "t.yaml", sink, sources)
    return rs, sink, sources


def clean(text: str) -> ResourceSet:
    rs, sink, sources = run(text)
    assert not sink.diagnostics, render_all(sink.sorted(), sources)
    return rs


def test_network_sets() -> None:
    rs = clean(
        C
        + """\
kind: NetworkSet
metadata: {name: ext, namespace: shop, labels: {role: ext, pcns.fake: x}}
spec: {nets: [10.0.0.1/24, 192.168.0.0/16, "fd00::1"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {blocklist: "true"}}
spec: {nets: [203.0.113.0/24, 198.51.100.7]}
"""
    )
    g, n = rs.network_sets
    assert (g.id, dict(g.labels), g.profiles) == ("blocked", {"blocklist": "true"}, ())
    assert [str(x) for x in g.nets] == ["198.51.100.7/32", "203.0.113.0/24"]
    assert n.id == "shop/ext"
    assert dict(n.labels) == {"role": "ext", "projectcalico.org/namespace": "shop"}
    assert n.profiles == ("kns.shop",)
    assert [str(x) for x in n.nets] == ["10.0.0.0/24", "192.168.0.0/16", "fd00::1/128"]


def test_host_endpoints() -> None:
    rs = clean(
        C
        + """\
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: edge}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [10.0.0.1, "fd00::1"]
  profiles: [projectcalico-default-allow]
  ports: [{name: ssh, protocol: TCP, port: 22}]
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: all-node2}
spec: {node: node2, interfaceName: "*"}
"""
    )
    star, eth0 = rs.endpoints
    assert (eth0.kind, eth0.id, eth0.node, eth0.interface, eth0.is_host) == (
        "HostEndpoint",
        "node1-eth0",
        "node1",
        "eth0",
        True,
    )
    assert eth0.ips == (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1"))
    assert dict(eth0.labels) == {"role": "edge"}  # no implicit labels on host endpoints
    assert eth0.profiles == ("projectcalico-default-allow",)
    assert eth0.ports == (NamedPort("ssh", 6, 22),)
    assert (star.id, star.interface, star.ips) == ("all-node2", "*", ())


def test_workload_endpoints() -> None:
    rs, sink, _ = run(
        C
        + """\
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-db--0-eth0
  namespace: shop
  labels: {app: db, pcsa.fake: x}
spec:
  orchestrator: k8s
  node: node1
  pod: db-0
  endpoint: eth0
  serviceAccountName: db
  ipNetworks: [10.65.0.30/32]
  profiles: [kns.shop, ksa.shop.db]
  ports: [{name: pg, protocol: TCP, port: 5432, hostPort: 0}]
  allowSpoofedSourcePrefixes: [10.99.0.0/16]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: vm1, namespace: vms}
spec: {node: node2, interfaceName: tap1234, ipNetworks: ["fd00::5/128"]}
"""
    )
    # shop's WEP lists kns.shop, which does not exist here; vm1 lists no profiles at all.
    assert [(d.code, d.span.line) for d in sink.diagnostics] == [("W004", 1)]
    (db, vm) = rs.endpoints
    assert db.id == "shop/db-0"
    assert db.interface == interface_name("shop", "db-0")  # derived from the pod: none was given
    assert dict(db.labels) == {
        "app": "db",
        "projectcalico.org/namespace": "shop",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "db",
    }
    assert db.allow_spoofed_source_prefixes == (ipaddress.ip_network("10.99.0.0/16"),)
    assert (vm.id, vm.interface, vm.ips) == (
        "vms/vm1",
        "tap1234",
        (ipaddress.ip_address("fd00::5"),),
    )
    assert dict(vm.labels) == {"projectcalico.org/namespace": "vms"}


def test_a_workload_endpoint_wins_over_its_pod() -> None:
    rs, sink, _ = run(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {name: db-0, namespace: shop}
        spec: {nodeName: node1}
        status: {podIP: 10.65.0.30}
        ---
        apiVersion: projectcalico.org/v3
        kind: WorkloadEndpoint
        metadata: {name: node1-k8s-db--0-eth0, namespace: shop}
        spec: {node: node1, orchestrator: k8s, pod: db-0, interfaceName: caliXYZ, ipNetworks: [10.65.0.30/32]}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        """
    )
    assert [d.code for d in sink.diagnostics] == ["W007"]
    (ep,) = rs.endpoints
    assert ep.interface == "caliXYZ"


def test_ip_pools() -> None:
    rs = clean(
        C
        + """\
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.65.0.0/16, vxlanMode: CrossSubnet, natOutgoing: true, nodeSelector: "zone == 'a'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:65::/64", allowedUses: [Workload], disabled: true, assignmentMode: Manual}
"""
    )
    v4, v6 = rs.ip_pools
    assert (
        str(v4.cidr),
        v4.block_size,
        v4.vxlan_mode,
        v4.ipip_mode,
        v4.nat_outgoing,
        v4.node_selector,
        v4.allowed_uses,
    ) == (
        "10.65.0.0/16",
        26,
        "CrossSubnet",
        "Never",
        True,
        "zone == 'a'",
        ("Workload", "Tunnel"),
    )
    assert (v6.block_size, v6.allowed_uses, v6.disabled, v6.assignment_mode, v6.node_selector) == (
        122,
        ("Workload",),
        True,
        "Manual",
        "all()",
    )


def test_bgp_resources_and_node_merge() -> None:
    rs = clean(
        C
        + """\
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64512
  nodeToNodeMeshEnabled: false
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  communities: [{name: hi, value: "64512:100"}]
  prefixAdvertisements: [{cidr: 10.65.0.0/16, communities: [hi, "1:2:3"]}]
  nodeMeshPassword: {secretKeyRef: {name: bgp-secrets, key: mesh}}
  nodeMeshMaxRestartTime: 120s
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {nodeSelector: "rack == 'r1'", peerIP: "10.0.0.254:1179", asNumber: "1.10", keepaliveTime: 30s, ttlSecurity: 2}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec:
  bgp: {ipv4Address: 10.65.1.1/24, asNumber: 64600, routeReflectorClusterID: 224.0.0.1}
---
apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {rack: r1}
  annotations: {projectcalico.org/IPv6Address: "fd00:1::1/64"}
"""
    )
    (cfg,) = rs.bgp_configurations
    assert (
        cfg.as_number,
        cfg.node_to_node_mesh,
        cfg.node_mesh_password,
        cfg.node_mesh_max_restart_time,
    ) == (
        64512,
        False,
        "bgp-secrets/mesh",
        "120s",
    )
    assert [str(n) for n in cfg.service_cluster_ips] == ["10.96.0.0/12"]
    assert cfg.prefix_advertisements[0].communities == ("hi", "1:2:3")
    (peer,) = rs.bgp_peers
    assert (peer.peer_ip, peer.as_number, peer.node_selector, peer.ttl_security) == (
        "10.0.0.254:1179",
        65546,
        "rack == 'r1'",
        2,
    )
    (node,) = rs.nodes
    assert (
        str(node.ipv4),
        str(node.ipv6),
        node.asn,
        node.route_reflector_cluster_id,
        dict(node.labels),
    ) == (
        "10.65.1.1/24",
        "fd00:1::1/64",
        64600,
        "224.0.0.1",
        {"rack": "r1"},
    )


def test_felix_configuration() -> None:
    rs, sink, sources = run(
        C
        + """\
kind: FelixConfiguration
metadata: {name: default}
spec:
  iptablesFilterDenyAction: reject
  defaultEndpointToHostAction: ACCEPT
  failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 10.0.0.0/8}, {port: 443}]
  disableConntrackInvalidCheck: true
  logPrefix: "tortie %t %n"
  logActionRateLimit: 10/second
  logActionRateLimitBurst: 3
  iptablesMarkMask: 0xff000000
  nftablesMarkMask: "0x00ff0000"
  maxIpsetSize: 2048
  chainInsertMode: Append
  bpfEnabled: false
  reportingInterval: 0s
  prometheusMetricsEnabled: true
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node1}
spec: {logPrefix: node1, failsafeInboundHostPorts: []}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node2}
spec: {iptablesMarkMsk: 0xff}
"""
    )
    assert render_all(sink.sorted(), sources) == (
        't.yaml:28:8: error[E020]: unknown field "iptablesMarkMsk" in FelixConfiguration spec (did you mean "iptablesMarkMask"?)\n'
        "  spec: {iptablesMarkMsk: 0xff}\n"
        "         ^"
    )
    f = rs.felix
    assert (
        f.deny_action,
        f.default_endpoint_to_host_action,
        f.disable_conntrack_invalid_check,
    ) == ("Reject", "Accept", True)
    assert f.failsafe_inbound == (
        FailsafePort(6, 22, ipaddress.ip_network("10.0.0.0/8")),
        FailsafePort(6, 443),
    )
    assert f.failsafe_outbound == DEFAULT_FAILSAFE_OUT
    assert (f.log_prefix, f.log_rate_limit, f.log_rate_limit_burst) == (
        "tortie %t %n",
        "10/second",
        3,
    )
    assert (f.mark_mask, f.nft_mark_mask, f.max_ipset_size, f.chain_insert_mode) == (
        0xFF000000,
        0x00FF0000,
        2048,
        "append",
    )
    ((node, per_node),) = rs.felix_per_node
    assert node == "node1"
    assert (per_node.log_prefix, per_node.failsafe_inbound, per_node.deny_action) == (
        "node1",
        (),
        "Reject",
    )


def test_felix_defaults_without_a_resource() -> None:
    assert clean("apiVersion: v1\nkind: List\nitems: []\n").felix == FelixConfig()


def test_lists_are_unpacked() -> None:
    rs = clean(
        """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Namespace
          metadata: {name: a}
        - apiVersion: v1
          kind: Service
          metadata: {name: svc, namespace: a}
        - apiVersion: apps/v1
          kind: Deployment
          metadata: {name: d, namespace: a}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicyList
        items:
        - metadata: {name: one}
          spec: {selector: all()}
        - apiVersion: projectcalico.org/v3
          kind: GlobalNetworkPolicy
          metadata: {name: two}
        """
    )
    assert [p.id for p in rs.policies] == ["gnp/one", "gnp/two"]
    assert dict(rs.kind_counts) == {
        "Deployment.apps": 1,
        "GlobalNetworkPolicy": 2,
        "Namespace": 1,
        "Service": 1,
    }
    assert dict(rs.skipped) == {"Deployment.apps": 1, "Service": 1}


def test_calico_kinds_tortie_does_not_use_are_warnings() -> None:
    rs, sink, _ = run(C + "kind: BGPFilter\nmetadata: {name: f}\nspec: {}\n")
    assert [d.code for d in sink.diagnostics] == ["W005"]
    assert dict(rs.skipped) == {"BGPFilter": 1}


def test_duplicates_across_documents_and_generated_profiles() -> None:
    _, sink, sources = run(
        """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        ---
        apiVersion: projectcalico.org/v3
        kind: Profile
        metadata: {name: kns.shop}
        """
    )
    assert render_all(sink.sorted(), sources) == (
        "t.yaml:7:18: error[E024]: duplicate Profile 'kns.shop'\n"
        "  metadata: {name: kns.shop}\n"
        "                   ^\n"
        "  = note: Namespace 'shop' (profile) 'kns.shop' is first defined at t.yaml:3:18"
    )


def test_a_builtin_tier_may_be_restated_unchanged() -> None:
    rs = clean(
        C + "kind: Tier\nmetadata: {name: default}\nspec: {order: 1000000, defaultAction: Deny}\n"
    )
    assert [t.name for t in rs.tiers] == ["default", "kube-admin", "kube-baseline"]
