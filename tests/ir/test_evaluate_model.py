"""The evaluator on resources built directly from model objects (no YAML)."""

from __future__ import annotations

import ipaddress

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.ir.build import build
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.pipeline import compile_program

TCP = 6


def pod(ns: str, name: str, ip: str, **labels: str) -> m.Endpoint:
    own = dict(labels)
    own.update({"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s"})
    return m.Endpoint(
        kind="WorkloadEndpoint",
        name=name,
        pod=name,
        namespace=ns,
        node="node1",
        interface=f"cali{name}",
        ips=(ipaddress.ip_address(ip),),
        labels=m.labels_of(own),
        profiles=(f"kns.{ns}",),
        ports=(m.NamedPort("http", TCP, 8080),),
    )


def ns_profile(ns: str) -> m.Profile:
    return m.Profile(
        name=f"kns.{ns}",
        labels_to_apply=m.labels_of({"pcns.projectcalico.org/name": ns, "pcns.team": ns}),
        ingress=(m.Rule("Allow"),),
        egress=(m.Rule("Allow"),),
    )


def resources(*policies: m.Policy, tiers: tuple[m.Tier, ...] = ()) -> m.ResourceSet:
    return m.ResourceSet(
        policies=policies,
        tiers=tiers,
        profiles=(ns_profile("a"), ns_profile("b")),
        endpoints=(
            pod("a", "web", "10.0.0.1", app="web"),
            pod("a", "db", "10.0.0.2", app="db"),
            pod("b", "cli", "10.0.0.3", app="cli"),
        ),
    )


def verdict(res: m.ResourceSet, src: str, dst: str, port: int = 80, passes: bool = True) -> bool:
    prog = compile_program(res, None, DiagnosticSink()) if passes else build(res)
    return evaluate(prog, Flow.make(src, dst, TCP, port)).allowed


def both(res: m.ResourceSet, src: str, dst: str, port: int = 80) -> bool:
    a, b = verdict(res, src, dst, port, False), verdict(res, src, dst, port, True)
    assert a == b, "passes changed the verdict"
    return a


def test_no_policy_allows_through_profile() -> None:
    assert both(resources(), "10.0.0.1", "10.0.0.2")


def test_default_deny_ingress_and_selector_allow() -> None:
    allow_web = m.Policy(
        kind="NetworkPolicy",
        name="db",
        namespace="a",
        selector='app == "db"',
        ingress=(m.Rule("Allow", source=m.EntityRule(selector='app == "web"')),),
    )
    res = resources(allow_web)
    assert both(res, "10.0.0.1", "10.0.0.2")
    # cli is in namespace b: the namespaced rule selector is limited to namespace a.
    assert not both(res, "10.0.0.3", "10.0.0.2")
    # Traffic to web is not governed (no policy selects web).
    assert both(res, "10.0.0.3", "10.0.0.1")


def test_tier_deny_beats_later_allow_and_pass() -> None:
    deny = m.Policy(
        kind="GlobalNetworkPolicy",
        name="sec.deny",
        namespace=None,
        tier="sec",
        order=1,
        selector='app == "db"',
        ingress=(m.Rule("Deny", source=m.EntityRule(selector='app == "cli"')), m.Rule("Pass")),
    )
    allow_all = m.Policy(
        kind="GlobalNetworkPolicy",
        name="allow",
        namespace=None,
        selector="all()",
        ingress=(m.Rule("Allow"),),
    )
    res = resources(deny, allow_all, tiers=(m.Tier("sec", 10.0),))
    assert not both(res, "10.0.0.3", "10.0.0.2")
    assert both(res, "10.0.0.1", "10.0.0.2")


def test_named_port_and_namespace_selector() -> None:
    pol = m.Policy(
        kind="GlobalNetworkPolicy",
        name="np",
        namespace=None,
        selector='app == "db"',
        ingress=(
            m.Rule(
                "Allow",
                protocol=TCP,
                source=m.EntityRule(namespace_selector='team == "b"'),
                destination=m.EntityRule(ports=(m.PortSpec(name="http"),)),
            ),
        ),
    )
    res = resources(pol)
    assert both(res, "10.0.0.3", "10.0.0.2", 8080)
    assert not both(res, "10.0.0.3", "10.0.0.2", 80)
    assert not both(res, "10.0.0.1", "10.0.0.2", 8080)
