"""Kubernetes → Calico form: NetworkPolicy conversion (selector strings exactly as Calico writes
them), Pods → WorkloadEndpoints, Namespaces and ServiceAccounts → profiles, ClusterNetworkPolicy."""

from __future__ import annotations

import hashlib
import ipaddress
import textwrap

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.frontend.model import NamedPort, Policy, ResourceSet, Rule
from compiler.frontend.schema.k8s_core import interface_name, wep_name

ORCH = "projectcalico.org/orchestrator == 'k8s'"


def run(text: str) -> tuple[ResourceSet, DiagnosticSink, SourceRegistry]:
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(textwrap.dedent(text), "t.yaml", sink, sources)
    return rs, sink, sources


def knp(spec: str, name: str = "np", namespace: str = "ns") -> Policy:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
    )
    rs, sink, sources = run(text)
    assert not sink.diagnostics, render_all(sink.sorted(), sources)
    (p,) = rs.policies
    return p


def summary(rule: Rule) -> tuple:
    """A rule as (action, protocol, side, selector, nsSelector, nets, notNets, ports)."""
    side = (
        rule.source
        if (rule.source.selector or rule.source.nets or rule.source.namespace_selector)
        else rule.destination
    )
    ports = tuple(
        p.name or (f"{p.min}" if p.min == p.max else f"{p.min}:{p.max}")
        for p in rule.destination.ports
    )
    return (
        rule.action,
        rule.protocol,
        side.selector,
        side.namespace_selector,
        tuple(map(str, side.nets)),
        tuple(map(str, side.not_nets)),
        ports,
    )


def test_policy_selector_and_defaults() -> None:
    p = knp(
        """\
        podSelector:
          matchLabels: {tier: web, app: shop}
          matchExpressions:
          - {key: env, operator: In, values: [prod, staging]}
          - {key: canary, operator: NotIn, values: ["true"]}
          - {key: owner, operator: Exists}
          - {key: legacy, operator: DoesNotExist}
        """
    )
    assert p.kind == "KubernetesNetworkPolicy" and p.id == "knp/ns/np"
    assert (p.tier, p.order, p.namespace) == ("default", 1000.0, "ns")
    assert p.selector == (
        "projectcalico.org/orchestrator == 'k8s' && app == 'shop' && tier == 'web' && "
        "env in { 'prod', 'staging' } && canary not in { 'true' } && has(owner) && ! has(legacy)"
    )
    assert p.types == ("Ingress",)
    assert p.ingress == () and p.egress == ()


def test_empty_pod_selector_is_the_orchestrator_term() -> None:
    assert knp("podSelector: {}\n").selector == ORCH


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ("podSelector: {}\n", ("Ingress",)),
        ("podSelector: {}\negress: [{}]\n", ("Ingress", "Egress")),
        ("podSelector: {}\negress: []\n", ("Ingress",)),
        ("podSelector: {}\npolicyTypes: [Egress]\n", ("Egress",)),
        ("podSelector: {}\npolicyTypes: [Egress, Ingress]\n", ("Ingress", "Egress")),
    ],
)
def test_policy_types_defaulting(spec: str, types: tuple[str, ...]) -> None:
    assert knp(spec).types == types


def test_peers_become_one_rule_each() -> None:
    p = knp(
        """\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {app: a}}
          - namespaceSelector: {matchLabels: {team: x}}
          - namespaceSelector: {}
            podSelector: {matchLabels: {app: b}}
          - ipBlock: {cidr: 10.1.0.5/16, except: [10.1.2.0/24, 10.1.3.0/24]}
        """
    )
    assert [summary(r) for r in p.ingress] == [
        ("Allow", None, f"{ORCH} && app == 'a'", None, (), (), ()),
        ("Allow", None, ORCH, "team == 'x'", (), (), ()),
        ("Allow", None, f"{ORCH} && app == 'b'", "all()", (), (), ()),
        ("Allow", None, None, None, ("10.1.0.0/16",), ("10.1.2.0/24", "10.1.3.0/24"), ()),
    ]


def test_ports_one_rule_per_protocol_per_peer_merged_and_coalesced() -> None:
    p = knp(
        """\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {app: a}}
          - podSelector: {matchLabels: {app: b}}
          ports:
          - {port: 81}
          - {protocol: UDP, port: 53}
          - {port: 80}
          - {port: http}
          - {protocol: TCP, port: 8000, endPort: 8080}
          - {protocol: TCP, port: 8081}
          - {protocol: SCTP, port: 9000}
        """
    )
    sel_a, sel_b = f"{ORCH} && app == 'a'", f"{ORCH} && app == 'b'"
    tcp = ("http", "80:81", "8000:8081")
    assert [summary(r) for r in p.ingress] == [
        ("Allow", 132, sel_a, None, (), (), ("9000",)),
        ("Allow", 132, sel_b, None, (), (), ("9000",)),
        ("Allow", 6, sel_a, None, (), (), tcp),
        ("Allow", 6, sel_b, None, (), (), tcp),
        ("Allow", 17, sel_a, None, (), (), ("53",)),
        ("Allow", 17, sel_b, None, (), (), ("53",)),
    ]


def test_a_port_without_number_opens_its_protocol() -> None:
    p = knp(
        """\
        podSelector: {}
        ingress:
        - ports:
          - {protocol: UDP}
          - {protocol: UDP, port: 53}
          - {port: 443}
        """
    )
    assert [summary(r) for r in p.ingress] == [
        ("Allow", 6, None, None, (), (), ("443",)),
        ("Allow", 17, None, None, (), (), ()),
    ]


def test_egress_rules_put_peer_and_ports_on_the_destination() -> None:
    p = knp(
        """\
        podSelector: {matchLabels: {app: api}}
        policyTypes: [Egress]
        egress:
        - to: [{ipBlock: {cidr: "fd00::/64"}}]
          ports: [{port: 443}]
        - {}
        """
    )
    first, second = p.egress
    assert first.source.nets == () and first.destination.nets == (
        ipaddress.ip_network("fd00::/64"),
    )
    assert [(x.min, x.max) for x in first.destination.ports] == [(443, 443)]
    assert first.protocol == 6
    assert (second.protocol, second.destination.selector, second.destination.nets) == (
        None,
        None,
        (),
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "podSelector: {}\ningress: [{ports: [{port: 80, endPort: 79}]}]\n",
            "t.yaml:7:42: error[E050]: endPort 79 is below port 80\n"
            "    ingress: [{ports: [{port: 80, endPort: 79}]}]\n"
            "                                           ^",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: Http_1}]}]\n",
            "t.yaml:7:29: error[E050]: invalid named port 'Http_1': at most 15 lower-case letters, digits and '-', with at least one letter\n"
            "    ingress: [{ports: [{port: Http_1}]}]\n"
            "                              ^",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{protocol: ICMP}]}]\n",
            't.yaml:7:33: error[E023]: "protocol" must be one of SCTP, TCP, UDP, not "ICMP"\n'
            "    ingress: [{ports: [{protocol: ICMP}]}]\n"
            "                                  ^",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]\n",
            "t.yaml:7:59: error[E040]: ipBlock except 11.0.0.0/8 must be a strict subset of cidr 10.0.0.0/8\n"
            "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]\n"
            "                                                            ^",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
            "t.yaml:7:22: error[E023]: a peer with ipBlock cannot also have podSelector or namespaceSelector\n"
            "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n"
            "                       ^",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
            "t.yaml:6:45: error[E023]: operator In needs at least one value\n"
            "    podSelector: {matchExpressions: [{key: a, operator: In}]}\n"
            "                                              ^",
        ),
        (
            "ingress: []\n",
            't.yaml:6:3: error[E022]: missing required field "podSelector" in NetworkPolicy spec\n'
            "    ingress: []\n"
            "    ^",
        ),
    ],
)
def test_conversion_errors(spec: str, expected: str) -> None:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\nspec:\n"
        + textwrap.indent(spec, "  ")
    )
    _, sink, sources = run(text)
    assert render_all(sink.sorted(), sources) == expected


def test_a_rule_that_fails_is_dropped_the_policy_is_kept() -> None:
    text = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: np, namespace: ns}
    spec:
      podSelector: {}
      ingress:
      - ports: [{port: 99999}]
      - ports: [{port: 80}]
    """
    rs, sink, _ = run(text)
    assert [d.code for d in sink.diagnostics] == ["E050"]
    (p,) = rs.policies
    assert [summary(r)[-1] for r in p.ingress] == [("80",)]


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, pcns.team: evil, pcsa.x: y, projectcalico.org/namespace: other}
  managedFields: [{manager: kubectl}]
spec:
  nodeName: node1
  serviceAccountName: frontend
  containers:
  - name: web
    image: nginx
    ports:
    - {name: http, containerPort: 8080}
    - {name: dns, containerPort: 53, protocol: UDP}
    - {containerPort: 9999}
  - name: sidecar
    ports: [{name: metrics, containerPort: 9090, protocol: TCP}]
status:
  phase: Running
  podIP: 10.65.0.10
  podIPs: [{ip: 10.65.0.10}, {ip: "fd00:65::10"}]
  conditions: [{type: Ready, status: "True"}]
"""


def test_pod_becomes_a_workload_endpoint() -> None:
    rs, sink, _ = run(POD)
    assert [d.code for d in sink.diagnostics] == [
        "W004"
    ]  # namespace "shop" has no Namespace object
    (ep,) = rs.endpoints
    assert ep.id == "shop/web-1"
    assert ep.name == "node1-k8s-web--1-eth0"
    assert (ep.kind, ep.namespace, ep.node, ep.pod, ep.service_account) == (
        "WorkloadEndpoint",
        "shop",
        "node1",
        "web-1",
        "frontend",
    )
    assert dict(ep.labels) == {
        "app": "web",
        "projectcalico.org/namespace": "shop",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "frontend",
    }
    assert ep.profiles == ("kns.shop", "ksa.shop.frontend")
    assert ep.interface == "cali" + hashlib.sha1(b"shop.web-1").hexdigest()[:11]
    assert (
        ep.interface == "cali751425ce827"
    )  # printf shop.web-1 | sha1sum → 751425ce827f... and len(ep.interface) == 15
    assert ep.ips == (ipaddress.ip_address("10.65.0.10"), ipaddress.ip_address("fd00:65::10"))
    assert ep.ports == (
        NamedPort("dns", 17, 53),
        NamedPort("http", 6, 8080),
        NamedPort("metrics", 6, 9090),
    )


def test_interface_name_against_a_hand_computed_sha1() -> None:
    # sha1("default.nginx") = 7b2e5b4e1c6...: computed once by hand with `printf default.nginx | sha1sum`.
    assert (
        interface_name("default", "nginx")
        == "cali" + hashlib.sha1(b"default.nginx").hexdigest()[:11]
    )
    assert wep_name("my-node", "my-pod") == "my--node-k8s-my--pod-eth0"


def test_host_networked_pods_are_counted_not_endpoints() -> None:
    rs, _, _ = run(POD.replace("spec:\n", "spec:\n  hostNetwork: true\n"))
    assert rs.endpoints == () and dict(rs.skipped) == {"Pod: hostNetwork": 1}


def test_unscheduled_finished_and_ip_less_pods_are_skipped() -> None:
    text = "\n---\n".join(
        [
            POD.replace("  nodeName: node1\n", ""),
            POD.replace("name: web-1", "name: web-2").replace("phase: Running", "phase: Succeeded"),
            POD.replace("name: web-1", "name: web-3")
            .replace("  podIP: 10.65.0.10\n", "")
            .replace('  podIPs: [{ip: 10.65.0.10}, {ip: "fd00:65::10"}]\n', ""),
        ]
    )
    rs, _, _ = run(text)
    assert rs.endpoints == ()
    assert dict(rs.skipped) == {"Pod: finished": 1, "Pod: no IP": 1, "Pod: not scheduled": 1}


def test_namespaces_and_service_accounts_become_profiles() -> None:
    rs, sink, _ = run(
        POD
        + """\
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: shop, labels: {role: web}}
"""
    )
    assert not sink.diagnostics
    profiles = {p.name: p for p in rs.profiles}
    kns = profiles["kns.shop"]
    assert dict(kns.labels_to_apply) == {
        "pcns.kubernetes.io/metadata.name": "shop",
        "pcns.projectcalico.org/name": "shop",
        "pcns.team": "shop",
    }
    assert [r.action for r in kns.ingress + kns.egress] == ["Allow", "Allow"]
    ksa = profiles["ksa.shop.frontend"]
    assert dict(ksa.labels_to_apply) == {
        "pcsa.projectcalico.org/name": "frontend",
        "pcsa.role": "web",
    }
    assert ksa.ingress == ksa.egress == ()
    assert [(n.name, dict(n.labels)) for n in rs.namespaces] == [
        ("shop", {"kubernetes.io/metadata.name": "shop", "team": "shop"})
    ]


def test_kubernetes_node() -> None:
    rs, sink, _ = run(
        """\
        apiVersion: v1
        kind: Node
        metadata:
          name: node1
          labels: {zone: a}
          annotations:
            projectcalico.org/IPv4Address: 10.65.1.1/24
            projectcalico.org/ASNumber: "64513"
            projectcalico.org/RouteReflectorClusterID: 224.0.0.1
        status:
          addresses: [{type: InternalIP, address: 10.65.1.1}]
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: node2}
        status:
          addresses: [{type: Hostname, address: node2}, {type: InternalIP, address: 10.65.1.2}]
        """
    )
    assert not sink.diagnostics
    n1, n2 = rs.nodes
    assert (str(n1.ipv4), n1.asn, n1.route_reflector_cluster_id, dict(n1.labels)) == (
        "10.65.1.1/24",
        64513,
        "224.0.0.1",
        {"zone": "a"},
    )
    assert str(n2.ipv4) == "10.65.1.2/32"


def test_cluster_network_policy() -> None:
    rs, sink, sources = run(
        """\
        apiVersion: policy.networking.k8s.io/v1alpha2
        kind: ClusterNetworkPolicy
        metadata: {name: isolate}
        spec:
          tier: Admin
          priority: 10
          subject:
            pods:
              namespaceSelector: {matchLabels: {team: shop}}
              podSelector: {matchLabels: {app: db}}
          ingress:
          - name: from-monitoring
            action: Accept
            from: [{namespaces: {matchLabels: {team: platform}}}]
            protocols:
            - tcp: {destinationPort: {number: 9187}}
            - tcp: {destinationPort: {range: {start: 5432, end: 5433}}}
            - destinationNamedPort: metrics
          - action: Deny
            from: [{namespaces: {}}]
          egress:
          - action: Pass
            to: [{networks: [10.0.0.0/8]}]
        ---
        apiVersion: policy.networking.k8s.io/v1alpha2
        kind: ClusterNetworkPolicy
        metadata: {name: base}
        spec:
          tier: Baseline
          priority: 0
          subject: {namespaces: {}}
          egress:
          - action: Deny
            to: [{nodes: {}}]
        """
    )
    assert [d.code for d in sink.sorted()] == ["E067"], render_all(sink.sorted(), sources)
    base, isolate = rs.policies
    assert (isolate.id, isolate.tier, isolate.order, isolate.types) == (
        "kcnp/isolate",
        "kube-admin",
        10.0,
        ("Ingress", "Egress"),
    )
    assert isolate.selector == f"{ORCH} && app == 'db'"
    assert isolate.namespace_selector == "team == 'shop'"
    assert [summary(r) for r in isolate.ingress] == [
        ("Allow", None, ORCH, "team == 'platform'", (), (), ("metrics",)),
        ("Allow", 6, ORCH, "team == 'platform'", (), (), ("5432:5433", "9187")),
        ("Deny", None, ORCH, "all()", (), (), ()),
    ]
    assert isolate.ingress[0].annotations == (("name", "from-monitoring"),)
    assert [summary(r) for r in isolate.egress] == [
        ("Pass", None, None, None, ("10.0.0.0/8",), (), ())
    ]
    # The unsupported nodes peer is an error, and the rule fails closed (deny everything).
    assert (base.tier, base.selector, base.namespace_selector) == ("kube-baseline", ORCH, "all()")
    assert [(r.action, r.destination.selector, r.destination.nets) for r in base.egress] == [
        ("Deny", None, ())
    ]
