"""Hand-made IR programs for the nftables target's golden, unit and kernel tests.

They are built straight from ``compiler.ir.nodes`` (no YAML, no passes), already in the shape
``targets/base.py`` promises a target: sets resolved and split by family, every rule with an
``ip_version``. Each one exercises a part of the renderer; see the docstrings.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from compiler.diagnostics import Span
from compiler.frontend.model import FailsafePort, FelixConfig, NamedPort
from compiler.ir import nodes as ir
from compiler.ir.nodes import (
    AddrSet,
    Endpoint,
    Match,
    PortMatch,
    Profile,
    Rule,
    Selectable,
    Side,
    Tier,
    TierPlan,
    make_program,
)

NODE = "n1"


def net(text: str) -> ir.IPNet:
    return ipaddress.ip_network(text)


def ip(text: str) -> ir.IPAddr:
    return ipaddress.ip_address(text)


def rule(
    action: str,
    index: int,
    line: int = 0,
    *,
    file: str = "policy.yaml",
    http_ignored: bool = False,
    **kw: object,
) -> Rule:
    span = Span(file, line, 3) if line else ir.NO_SPAN
    return Rule(action, Match(**kw), index, span, http_ignored)  # type: ignore[arg-type]


def policy(
    pid: str,
    tier: str,
    order: float | None,
    ingress: tuple[Rule, ...] = (),
    egress: tuple[Rule, ...] = (),
    line: int = 1,
    **kw: object,
) -> ir.Policy:
    kind, _, rest = pid.partition("/")
    ns, _, name = rest.rpartition("/")
    types = tuple(d for d, rules in ((ir.INGRESS, ingress), (ir.EGRESS, egress)) if rules) or (
        ir.INGRESS,
    )
    return ir.Policy(
        id=pid,
        name=name,
        namespace=ns or None,
        kind={
            "np": "NetworkPolicy",
            "gnp": "GlobalNetworkPolicy",
            "knp": "KubernetesNetworkPolicy",
        }[kind],
        tier=tier,
        order=order,
        selector="all()",
        types=kw.pop("types", types),  # type: ignore[arg-type]
        ingress=ingress,
        egress=egress,
        origin=Span("policy.yaml", line, 1),
        **kw,  # type: ignore[arg-type]
    )


def workload(
    eid: str,
    iface: str,
    v4: str,
    v6: str | None,
    plans: dict[tuple[str, str], tuple[TierPlan, ...]],
    profiles: tuple[str, ...] = ("kns.ns1",),
    node: str = NODE,
    labels: tuple[tuple[str, str], ...] = (),
    ports: tuple[NamedPort, ...] = (),
) -> Endpoint:
    ns, _, name = eid.partition("/")
    ips = tuple(ip(x) for x in (v4, v6) if x)
    return Endpoint(
        id=eid,
        kind="WorkloadEndpoint",
        name=name,
        namespace=ns,
        node=node,
        interface=iface,
        ips=ips,
        labels=labels,
        profiles=profiles,
        ports=ports,
        plans=tuple(sorted(plans.items())),
        origin=Span("pods.yaml", 10, 1),
    )


def selectable(ep: Endpoint) -> Selectable:
    return Selectable(
        ep.id, ep.kind, ep.labels, tuple(ipaddress.ip_network(x) for x in ep.ips), ep.ports
    )


ALLOW_ALL_PROFILE = Profile(
    "kns.ns1",
    ingress=(rule("allow", 0, ip_version=4), rule("allow", 0, ip_version=6)),
    egress=(rule("allow", 0, ip_version=4), rule("allow", 0, ip_version=6)),
    origin=Span("namespaces.yaml", 3, 1),
)


def workloads_program(felix: FelixConfig | None = None) -> ir.Program:
    """Three local pods and one remote; tier ``security`` (Pass default) with Log/Deny/Pass
    rules, tier ``default`` with an allow from a selector set on numeric and named ports, and
    pod ``c`` with no policy (allowed by its namespace profile)."""
    web4 = AddrSet(
        "s:web:4",
        '(app == "web")',
        family=4,
        members=frozenset({net("10.65.0.1/32"), net("10.65.0.2/32")}),
    )
    web6 = AddrSet(
        "s:web:6",
        '(app == "web")',
        family=6,
        members=frozenset({net("fd00:65::1/128"), net("fd00:65::2/128")}),
    )
    http4 = AddrSet(
        "n:http:4",
        "all()",
        port_name="http",
        port_protocol=6,
        family=4,
        port_members=frozenset({(net("10.65.0.2/32"), 6, 8080), (net("10.65.1.5/32"), 6, 8080)}),
    )
    empty4 = AddrSet("s:nobody:4", '(app == "nobody")', family=4, members=frozenset())
    sec = policy(
        "gnp/security",
        "security",
        10.0,
        ingress=(
            rule("log", 0, 20, ip_version=4, protocol=6, dst=Side(ports=PortMatch(((22, 22),)))),
            rule("deny", 1, 22, ip_version=4, protocol=6, dst=Side(ports=PortMatch(((22, 22),)))),
            rule("deny", 2, 25, ip_version=4, src=Side(sets=("s:nobody:4",))),
            rule("pass", 3, 28, ip_version=4),
            rule("pass", 3, 28, ip_version=6),
        ),
        egress=(
            rule(
                "deny",
                0,
                31,
                ip_version=4,
                protocol=17,
                dst=Side(nets=(net("192.0.2.0/25"), net("192.0.2.128/25"), net("198.51.100.7/32"))),
            ),
            rule("deny", 0, 31, ip_version=6, protocol=1),
            rule("allow", 1, 33, ip_version=6, protocol=58, icmp_type=128, icmp_code=0),
            rule("deny", 2, 35, ip_version=4, protocol=1, not_icmp_type=8, not_icmp_code=0),
            rule("pass", 3, 37, ip_version=4),
            rule("pass", 3, 37, ip_version=6),
        ),
        line=15,
    )
    web = policy(
        "np/ns1/allow-web",
        "default",
        100.0,
        ingress=(
            rule(
                "allow",
                0,
                50,
                ip_version=4,
                protocol=6,
                src=Side(sets=("s:web:4",), not_nets=(net("10.65.0.2/32"),)),
                dst=Side(
                    ports=PortMatch(
                        ((80, 80), (443, 443), (8000, 8100), (8050, 8200)), ("n:http:4",)
                    )
                ),
            ),
            rule(
                "allow",
                0,
                50,
                ip_version=6,
                protocol=6,
                src=Side(sets=("s:web:6",)),
                dst=Side(ports=PortMatch(((80, 80),))),
            ),
            rule("allow", 1, 55, ip_version=4, protocol=17, src=Side(nets=()), http_ignored=True),
            rule(
                "allow",
                2,
                57,
                ip_version=4,
                protocol=132,
                dst=Side(not_ports=PortMatch(((1, 1023),))),
            ),
        ),
        line=45,
    )
    plans_a = {
        (ir.NORMAL, ir.INGRESS): (
            TierPlan("security", ir.PASS, ("gnp/security",)),
            TierPlan("default", ir.DENY, ("np/ns1/allow-web",)),
        ),
        (ir.NORMAL, ir.EGRESS): (TierPlan("security", ir.PASS, ("gnp/security",)),),
    }
    a = workload(
        "ns1/a", "cali0000000000a", "10.65.0.1", "fd00:65::1", plans_a, labels=(("app", "web"),)
    )
    b = workload(
        "ns1/b",
        "cali0000000000b",
        "10.65.0.2",
        "fd00:65::2",
        plans_a,
        labels=(("app", "web"),),
        ports=(NamedPort("http", 6, 8080),),
    )
    c = workload("ns1/c", "cali0000000000c", "10.65.0.3", "fd00:65::3", {})
    remote = workload(
        "ns1/r",
        "cali0000000000r",
        "10.65.1.5",
        None,
        plans_a,
        node="n2",
        ports=(NamedPort("http", 6, 8080),),
    )
    eps = (a, b, c, remote)
    return make_program(
        node=NODE,
        tiers=(Tier("security", 10.0, ir.PASS), Tier("default", 1_000_000.0, ir.DENY)),
        policies=(sec, web),
        profiles=(ALLOW_ALL_PROFILE,),
        sets=(web4, web6, http4, empty4),
        endpoints=eps,
        selectables=tuple(selectable(e) for e in eps),
        felix=felix or FelixConfig(),
        host_ips={NODE: (ip("10.65.9.1"),), "n2": (ip("10.65.9.2"),)},
    )


def host_program() -> ir.Program:
    """Host endpoints: a ``*`` HEP (expectedIPs 10.65.9.1) and an ``eth0`` HEP (192.168.100.1)
    with normal, doNotTrack, preDNAT and applyOnForward policy; Reject, endpoint-to-host Return,
    custom failsafes (one with a net), a log prefix with placeholders, no invalid check."""
    felix = FelixConfig(
        deny_action="Reject",
        default_endpoint_to_host_action="Return",
        failsafe_inbound=(
            FailsafePort(6, 22),
            FailsafePort(17, 68),
            FailsafePort(6, 6443, net("10.0.0.0/8")),
        ),
        failsafe_outbound=(FailsafePort(17, 53), FailsafePort(6, 179, net("fd00::/8"))),
        disable_conntrack_invalid_check=True,
        log_prefix="%k-%t-%p",
        log_rate_limit="10/minute",
    )
    host_allow = policy(
        "gnp/host-allow",
        "default",
        10.0,
        ingress=(
            rule("log", 0, 5, ip_version=4, protocol=6),
            rule("allow", 1, 7, ip_version=4, protocol=6, dst=Side(ports=PortMatch(((80, 80),)))),
        ),
        egress=(rule("allow", 0, 9, ip_version=4), rule("allow", 0, 9, ip_version=6)),
    )
    untracked = policy(
        "gnp/untracked",
        "default",
        5.0,
        ingress=(
            rule(
                "allow",
                0,
                12,
                ip_version=4,
                protocol=17,
                dst=Side(ports=PortMatch(((5353, 5353),))),
            ),
            rule("deny", 1, 13, ip_version=4, src=Side(nets=(net("203.0.113.0/24"),))),
        ),
        egress=(
            rule(
                "allow",
                0,
                15,
                ip_version=4,
                protocol=17,
                src=Side(ports=PortMatch(((5353, 5353),))),
            ),
        ),
        do_not_track=True,
        apply_on_forward=True,
    )
    prednat = policy(
        "gnp/prednat",
        "default",
        6.0,
        ingress=(
            rule(
                "deny",
                0,
                18,
                ip_version=4,
                protocol=6,
                dst=Side(ports=PortMatch(((30000, 32767),))),
            ),
        ),
        pre_dnat=True,
        apply_on_forward=True,
    )
    fwd = policy(
        "gnp/forward",
        "default",
        7.0,
        egress=(rule("allow", 0, 21, ip_version=4, protocol=6),),
        apply_on_forward=True,
    )
    default_tier = lambda *p: (TierPlan("default", ir.DENY, p),)  # noqa: E731
    plans = {
        (ir.NORMAL, ir.INGRESS): default_tier("gnp/host-allow"),
        (ir.NORMAL, ir.EGRESS): default_tier("gnp/host-allow"),
        (ir.UNTRACKED, ir.INGRESS): default_tier("gnp/untracked"),
        (ir.UNTRACKED, ir.EGRESS): default_tier("gnp/untracked"),
        (ir.PRE_DNAT, ir.INGRESS): default_tier("gnp/prednat"),
        (ir.FORWARD, ir.EGRESS): default_tier("gnp/forward"),
    }
    star = Endpoint(
        id="n1-all",
        kind="HostEndpoint",
        name="n1-all",
        namespace=None,
        node=NODE,
        interface="*",
        ips=(ip("10.65.9.1"),),
        labels=(("host", "all"),),
        profiles=(),
        plans=tuple(sorted(plans.items())),
        origin=Span("hosts.yaml", 1, 1),
    )
    eth0 = Endpoint(
        id="n1-eth0",
        kind="HostEndpoint",
        name="n1-eth0",
        namespace=None,
        node=NODE,
        interface="eth0",
        ips=(ip("192.168.100.1"), ip("fd00:100::1")),
        labels=(("host", "eth0"),),
        profiles=("projectcalico-default-allow",),
        plans=tuple(sorted({k: v for k, v in plans.items() if k[0] != ir.NORMAL}.items())),
        origin=Span("hosts.yaml", 12, 1),
    )
    pod = workload("ns1/a", "cali0000000000a", "10.65.0.1", "fd00:65::1", {})
    default_allow = Profile(
        "projectcalico-default-allow",
        ingress=(rule("allow", 0, ip_version=4), rule("allow", 0, ip_version=6)),
        egress=(rule("allow", 0, ip_version=4), rule("allow", 0, ip_version=6)),
    )
    eps = (star, eth0, pod)
    return make_program(
        node=NODE,
        tiers=(Tier("default", 1_000_000.0, ir.DENY),),
        policies=(host_allow, untracked, prednat, fwd),
        profiles=(ALLOW_ALL_PROFILE, default_allow),
        sets=(),
        endpoints=eps,
        selectables=tuple(selectable(e) for e in eps),
        felix=felix,
        host_ips={NODE: (ip("10.65.9.1"), ip("192.168.100.1"), ip("fd00:100::1"))},
    )


HOSTILE = 'evil" ; flush ruleset ; add rule x "\n# $var \\ {}; ünï'


def hostile_program() -> ir.Program:
    """Names, spans and a log prefix that try to break out of nft strings and comments."""
    felix = FelixConfig(log_prefix=HOSTILE + "%n")
    bad = ir.Policy(
        id=f"gnp/{HOSTILE}",
        name=HOSTILE,
        namespace=None,
        kind="GlobalNetworkPolicy",
        tier="default",
        order=1.0,
        selector="all()",
        types=(ir.INGRESS,),
        ingress=(
            Rule("log", Match(ip_version=4), 0, Span(HOSTILE + ".yaml", 3, 1)),
            Rule("deny", Match(ip_version=4, protocol=6), 1, Span("/abs/path/p.yaml", 4, 1)),
        ),
        origin=Span(HOSTILE, 1, 1),
    )
    prof = Profile(HOSTILE, ingress=(Rule("allow", Match(ip_version=4), 0),))
    s = AddrSet(f"s:{HOSTILE}:4", HOSTILE, family=4, members=frozenset({net("10.0.0.0/8")}))
    bad = dataclasses.replace(
        bad,
        egress=(Rule("allow", Match(ip_version=4, dst=Side(sets=(s.id,))), 0),),
        types=(ir.INGRESS, ir.EGRESS),
    )
    plans = {
        (ir.NORMAL, ir.INGRESS): (TierPlan("default", ir.PASS, (bad.id,)),),
        (ir.NORMAL, ir.EGRESS): (TierPlan("default", ir.PASS, (bad.id,)),),
    }
    ep = Endpoint(
        id="ns1/a",
        kind="WorkloadEndpoint",
        name="a",
        namespace="ns1",
        node=NODE,
        interface="cali0000000000a",
        ips=(ip("10.65.0.1"),),
        labels=(),
        profiles=(HOSTILE,),
        plans=tuple(sorted(plans.items())),
        origin=Span(HOSTILE, 1, 1),
    )
    return make_program(
        node=NODE,
        tiers=(Tier("default", 1_000_000.0, ir.DENY),),
        policies=(bad,),
        profiles=(prof,),
        sets=(s,),
        endpoints=(ep,),
        selectables=(selectable(ep),),
        felix=felix,
        host_ips={},
    )


def empty_program() -> ir.Program:
    """A node with nothing on it: just the base chains."""
    return make_program(
        node=NODE,
        tiers=(),
        policies=(),
        profiles=(),
        sets=(),
        endpoints=(),
        selectables=(),
        felix=FelixConfig(),
        host_ips={},
    )


PROGRAMS = {
    "workloads": workloads_program,
    "hosts": host_program,
    "hostile": hostile_program,
    "empty": empty_program,
}


def test_programs_build() -> None:
    for name, make in PROGRAMS.items():
        prog = make()
        assert prog.node == NODE, name
        for s in prog.sets.values():
            assert s.resolved and s.family in (4, 6)
        for p in prog.policies.values():
            assert all(r.match.ip_version in (4, 6) for d in ir.DIRECTIONS for r in p.rules(d))
