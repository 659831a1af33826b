"""Calico policies and rules → model objects: defaults, normalisation, and what is kept."""

from __future__ import annotations

import ipaddress
import textwrap

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import IcmpSpec, PortSpec, ResourceSet


def run(text: str) -> tuple[ResourceSet, DiagnosticSink]:
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(textwrap.dedent(text), "t.yaml", sink, sources)
    return rs, sink


def codes(sink: DiagnosticSink) -> list[str]:
    return [d.code for d in sink.sorted()]


def test_network_policy_defaults() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p}
        spec: {}
        """
    )
    assert not sink.diagnostics
    (p,) = rs.policies
    assert (p.kind, p.namespace, p.tier, p.order, p.selector, p.types) == (
        "NetworkPolicy",
        "default",  # a namespaced resource without a namespace lands in "default"
        "default",
        None,
        "",
        ("Ingress",),
    )
    assert p.id == "np/default/p"


def test_types_default_from_the_rules_present() -> None:
    base = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: %s}\nspec: %s\n---\n"
    text = (
        base % ("none", "{}")
        + base % ("egress-only", "{egress: [{action: Allow}]}")
        + base % ("both", "{ingress: [{action: Deny}], egress: [{action: Allow}]}")
        + base % ("given", "{types: [Egress, Ingress]}")
        + base % ("empty", "{types: [], egress: [{action: Allow}]}")
    )
    rs, sink = run(text)
    assert not sink.diagnostics
    assert {p.name: p.types for p in rs.policies} == {
        "both": ("Ingress", "Egress"),
        "egress-only": ("Egress",),
        "empty": ("Egress",),  # an empty list is defaulted like a missing one
        "given": ("Ingress", "Egress"),
        "none": ("Ingress",),
    }


def test_global_policy_fields() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: Tier
        metadata: {name: security}
        spec: {order: 100, defaultAction: Pass}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.untracked}
        spec:
          tier: security
          order: 1.5
          selector: has(host-endpoint)
          namespaceSelector: ''
          serviceAccountSelector: role == "x"
          doNotTrack: true
          applyOnForward: true
          performanceHints: [AssumeNeededOnEveryNode]
          ingress: [{action: Allow}]
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: pre}
        spec:
          preDNAT: true
          applyOnForward: true
          ingress: [{action: Deny, protocol: TCP, destination: {ports: [30000:32767]}}]
        """
    )
    assert not sink.diagnostics
    pre, untracked = rs.policies
    assert (
        untracked.tier,
        untracked.order,
        untracked.do_not_track,
        untracked.apply_on_forward,
    ) == ("security", 1.5, True, True)
    assert untracked.selector == "has(host-endpoint)"
    assert untracked.service_account_selector == 'role == "x"'
    assert pre.pre_dnat and pre.types == ("Ingress",)
    assert pre.ingress[0].destination.ports == (
        PortSpec(30000, 32767, None, pre.ingress[0].destination.ports[0].span),
    )
    tiers = {t.name: (t.order, t.default_action) for t in rs.tiers}
    assert tiers == {
        "default": (1_000_000.0, "Deny"),
        "kube-admin": (1000.0, "Pass"),
        "kube-baseline": (10_000_000.0, "Pass"),
        "security": (100.0, "Pass"),
    }


def test_rules_are_normalised() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        spec:
          ingress:
          - action: Allow
            protocol: tcp
            notProtocol: 17
            source:
              nets: [10.0.0.1/24, 192.168.1.1]
              notNets: [10.0.0.128/25]
              notSelector: role == 'bad'
              namespaceSelector: global()
              serviceAccounts: {names: [api, web], selector: team == 'a'}
            destination:
              ports: [80, "8080:8090", http, "443"]
              notPorts: [22]
            metadata:
              annotations: {z: last, a: first}
          - action: Log
            protocol: ICMPv6
            ipVersion: 6
            icmp: {type: 128, code: 0}
            notICMP: {type: 1}
            source: {nets: ["fd00::1"]}
          - action: Allow
            protocol: TCP
            http: {methods: [GET], paths: [{prefix: /api}]}
        """
    )
    assert codes(sink) == ["W001"]
    r1, r2, r3 = rs.policies[0].ingress
    assert (r1.action, r1.protocol, r1.not_protocol) == ("Allow", 6, 17)
    assert r1.source.nets == (
        ipaddress.ip_network("10.0.0.0/24"),
        ipaddress.ip_network("192.168.1.1/32"),
    )
    assert r1.source.not_nets == (ipaddress.ip_network("10.0.0.128/25"),)
    assert r1.source.not_selector == "role == 'bad'"
    assert r1.source.namespace_selector == "global()"
    assert (r1.source.sa_names, r1.source.sa_selector) == (("api", "web"), "team == 'a'")
    assert [(p.min, p.max, p.name) for p in r1.destination.ports] == [
        (80, 80, None),
        (8080, 8090, None),
        (0, 0, "http"),
        (443, 443, None),
    ]
    assert [(p.min, p.max) for p in r1.destination.not_ports] == [(22, 22)]
    assert r1.annotations == (("a", "first"), ("z", "last"))
    assert dict(r1.source.field_spans)["nets"].line == 10
    assert (r2.action, r2.ip_version, r2.protocol, r2.icmp, r2.not_icmp) == (
        "Log",
        6,
        58,
        IcmpSpec(128, 0),
        IcmpSpec(1, None),
    )
    assert r2.source.nets == (ipaddress.ip_network("fd00::1/128"),)
    assert r3.has_http


def test_staged_policies() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: StagedNetworkPolicy
        metadata: {name: s, namespace: ns}
        spec: {stagedAction: Delete}
        ---
        apiVersion: projectcalico.org/v3
        kind: StagedGlobalNetworkPolicy
        metadata: {name: g}
        spec: {selector: all(), ingress: [{action: Deny}]}
        ---
        apiVersion: projectcalico.org/v3
        kind: StagedKubernetesNetworkPolicy
        metadata: {name: k, namespace: ns}
        spec: {podSelector: {}, stagedAction: Set}
        """
    )
    assert not sink.diagnostics
    assert [(p.id, p.staged, p.staged_action) for p in rs.policies] == [
        ("sgnp/g", True, "Set"),
        ("sknp/ns/k", True, "Set"),
        ("snp/ns/s", True, "Delete"),
    ]


def test_profile_and_default_allow() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: Profile
        metadata: {name: legacy}
        spec:
          labelsToApply: {env: prod}
          ingress: [{action: Allow, source: {selector: env == 'prod'}}]
          egress: [{action: Allow}]
        """
    )
    assert not sink.diagnostics
    profiles = {p.name: p for p in rs.profiles}
    assert profiles["legacy"].labels_to_apply == (("env", "prod"),)
    assert profiles["legacy"].ingress[0].source.selector == "env == 'prod'"
    allow = profiles["projectcalico-default-allow"]
    assert [r.action for r in allow.ingress + allow.egress] == ["Allow", "Allow"]


def test_a_rule_with_an_error_is_dropped_and_the_policy_too() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        spec:
          ingress:
          - action: Allow
          - action: Allow
            source: {nets: [not-an-ip]}
        """
    )
    assert codes(sink) == ["E040"]
    assert rs.policies == ()  # never compile a policy that silently lost a rule


def test_all_problems_are_reported_together() -> None:
    rs, sink = run(
        """\
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: Bad}
        spec:
          tier: nope
          selectr: x
          ingress:
          - action: Reject
          - action: Allow
            protocol: TCP
            source: {selector: "a ==", nets: [1.2.3.4/40]}
            destination: {ports: [99999]}
        ---
        apiVersion: projectcalico.org/v3
        kind: HostEndpoint
        metadata: {name: h}
        spec: {interfaceName: "this-is-too-long-for-linux"}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: k, namespace: n}
        spec:
          podSelector: {matchLabels: {app: "a b"}}
          ingress: [{ports: [{port: 0}]}]
        """
    )
    found = [f"{d.span.line}:{d.span.col} {d.code}" for d in sink.sorted()]
    assert found == [
        "3:18 E025",  # bad name: the rest of the document is still checked
        "5:9 E064",
        "6:3 E020",
        "8:13 E060",
        "11:29 E030",  # at the closing quote: the selector ended too early
        "11:39 E040",
        "12:27 E050",
        "17:7 E022",
        "17:7 E071",
        "17:23 E070",
        "23:36 E027",
        "24:29 E050",
    ]
    assert rs.policies == () and rs.endpoints == ()


def test_order_with_an_exponent_is_a_number_as_kubectl_reads_it() -> None:
    """YAML 1.1 floats need a dot, so PyYAML reads ``1e3`` as a string; go-yaml (kubectl,
    calicoctl) reads it as 1000.0, and that is what the cluster would hold."""

    def with_order(text: str) -> tuple[ResourceSet, DiagnosticSink]:
        return run(
            f"""\
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {{name: p}}
            spec: {{order: {text}}}
            """
        )

    for text, want in (("1e3", 1000.0), ("-5E+1", -50.0), ("2.5e2", 250.0)):
        rs, sink = with_order(text)
        assert not sink.diagnostics, text
        assert rs.policies[0].order == want
    for quoted in ("'1e3'", '"1e3"', "e3", "1e"):
        _, sink = with_order(quoted)
        assert codes(sink) == ["E021"], quoted
