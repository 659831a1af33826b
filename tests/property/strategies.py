"""Hypothesis strategies: small random clusters (ResourceSets) and flows through them.

Everything is drawn from small alphabets on purpose, so that selectors actually select, CIDRs
overlap and contain each other, named ports collide across pods, and flows hit endpoints, network
sets, the node and outsiders in both families. Resources are built directly as frontend model
objects (as ``tests/ir/test_evaluate_model.py`` does), so these tests need no YAML.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import strategies as st

from compiler.frontend import model as m
from compiler.ir.flow import Flow

TCP, UDP, ICMP, ICMP6, SCTP = 6, 17, 1, 58, 132

KEYS = ("app", "tier", "env")
VALUES = ("a", "b", "c")
NAMESPACES = ("n1", "n2")
NODE_V4, NODE_V6 = "10.0.2.2", "fd00:2::2"
HEP_V4, HEP_V6 = "10.0.2.1", "fd00:2::1"

POD_V4 = tuple(f"10.0.0.{i}" for i in range(1, 9)) + ("10.0.1.1", "10.0.1.2", "10.0.0.130")
POD_V6 = tuple(f"fd00::{i}" for i in range(1, 9)) + ("fd00::1:1", "fd00::1:2")
CIDRS_V4 = (
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.0.0/25",
    "10.0.0.128/25",
    "10.0.1.0/24",
    "10.0.0.4/30",
    "10.0.0.5/32",
    "10.0.0.2/31",
    "192.168.0.0/16",
    "10.0.2.0/24",
)
CIDRS_V6 = ("fd00::/64", "fd00::/120", "fd00::4/126", "fd00::5/128", "fd00::2/127", "fd01::/32")
OUTSIDERS_V4 = ("192.168.1.1", "172.16.0.1", "10.0.0.200", "10.0.1.77", "10.0.5.5")
OUTSIDERS_V6 = ("fd01::1", "fd02::1", "fd00::77", "fd00::4")
NAMED_PORTS = (
    m.NamedPort("http", TCP, 8080),
    m.NamedPort("http", TCP, 8081),
    m.NamedPort("web", TCP, 80),
    m.NamedPort("dns", UDP, 53),
    m.NamedPort("dns", TCP, 53),
)
PORT_POOL = (80, 53, 8080, 8081, 8050, 22, 443)

ATOMS = (
    'app == "a"',
    'app != "b"',
    "has(tier)",
    "!has(env)",
    'env in {"a", "b"}',
    'tier not in {"c"}',
    "all()",
    'app starts with "a"',
    'host == "yes"',
)
NS_ATOMS = ('team == "x"', "all()", "global()", "has(team)", 'team != "y"')


def _net(text: str) -> m.IPNet:
    return ipaddress.ip_network(text)


def _ip(text: str) -> m.IPAddr:
    return ipaddress.ip_address(text)


@st.composite
def selectors(draw: st.DrawFn) -> str:
    a = draw(st.sampled_from(ATOMS))
    shape = draw(st.integers(0, 4))
    if shape <= 1:
        return a
    b = draw(st.sampled_from(ATOMS))
    if shape == 2:
        return f"{a} && {b}"
    if shape == 3:
        return f"{a} || {b}"
    return f"!({a} && {b})"


@st.composite
def label_sets(draw: st.DrawFn) -> dict[str, str]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
    return {k: draw(st.sampled_from(VALUES)) for k in keys}


@st.composite
def port_specs(draw: st.DrawFn, protocol: int | None) -> tuple[m.PortSpec, ...]:
    numeric = protocol in (TCP, UDP, SCTP)
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 2)) if numeric else 2
        if kind == 0:
            p = draw(st.sampled_from(PORT_POOL))
            items.append(m.PortSpec(p, p))
        elif kind == 1:
            lo = draw(st.sampled_from((0, 50, 80, 8000, 8080)))
            hi = draw(st.sampled_from((80, 100, 8080, 8100, 65535)))
            if lo > hi:
                lo, hi = hi, lo
            items.append(m.PortSpec(lo, hi))
        else:
            items.append(m.PortSpec(name=draw(st.sampled_from(("http", "web", "dns", "none")))))
    return tuple(items)


@st.composite
def entity_rules(draw: st.DrawFn, protocol: int | None, family: int) -> m.EntityRule:
    pool = CIDRS_V4 if family == 4 else CIDRS_V6
    nets = ()
    if draw(st.integers(0, 3)) == 0:
        nets = tuple(_net(x) for x in draw(st.lists(st.sampled_from(pool), max_size=3)))
    not_nets = ()
    if draw(st.integers(0, 4)) == 0:
        not_nets = tuple(
            _net(x) for x in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2))
        )
    selector = draw(st.none() | selectors()) if draw(st.booleans()) else None
    not_selector = draw(st.sampled_from(ATOMS)) if draw(st.integers(0, 5)) == 0 else None
    ns_selector = draw(st.sampled_from(NS_ATOMS)) if draw(st.integers(0, 5)) == 0 else None
    ports = draw(port_specs(protocol)) if draw(st.integers(0, 2)) == 0 else ()
    not_ports = draw(port_specs(protocol)) if draw(st.integers(0, 6)) == 0 else ()
    return m.EntityRule(
        nets=nets,
        not_nets=not_nets,
        selector=selector,
        not_selector=not_selector,
        namespace_selector=ns_selector,
        ports=ports,
        not_ports=not_ports,
    )


@st.composite
def rules(draw: st.DrawFn, line: int) -> m.Rule:
    action = draw(st.sampled_from(("Allow", "Deny", "Pass", "Log", "Allow", "Deny")))
    protocol = draw(st.sampled_from((None, None, TCP, TCP, UDP, ICMP, SCTP)))
    family = draw(st.sampled_from((4, 4, 6)))
    ip_version = draw(st.sampled_from((None, None, None, None, family)))
    icmp = not_icmp = None
    if protocol == ICMP and draw(st.booleans()):
        icmp = m.IcmpSpec(draw(st.sampled_from((0, 8))), draw(st.sampled_from((None, 0))))
    if protocol == ICMP and draw(st.integers(0, 3)) == 0:
        not_icmp = m.IcmpSpec(draw(st.sampled_from((0, 8))), draw(st.sampled_from((None, 0))))
    not_protocol = draw(st.sampled_from((UDP, TCP))) if draw(st.integers(0, 8)) == 0 else None
    # Sources rarely carry ports (flows mostly have no source port), destinations often do.
    src = draw(entity_rules(None if draw(st.integers(0, 3)) else protocol, family))
    dst = draw(entity_rules(protocol, family))
    return m.Rule(
        action=action,
        ip_version=ip_version,
        protocol=protocol,
        not_protocol=not_protocol,
        icmp=icmp,
        not_icmp=not_icmp,
        source=src,
        destination=dst,
        span=m.Span("gen.yaml", line, 5),
    )


@st.composite
def narrowed(draw: st.DrawFn, rule: m.Rule, line: int) -> m.Rule:
    """A rule that matches a subset of what ``rule`` matches (often: so shadowing happens)."""
    how = draw(st.integers(0, 4))
    out = rule
    if how == 1 and rule.protocol is None:
        out = dataclasses.replace(rule, protocol=draw(st.sampled_from((TCP, UDP))))
    elif how == 2:
        proto = rule.protocol if rule.protocol in (TCP, UDP, SCTP) else None
        dst = dataclasses.replace(rule.destination, ports=draw(port_specs(proto)))
        out = dataclasses.replace(rule, destination=dst)
    elif how == 3:
        nets = tuple(
            _net(x) for x in draw(st.lists(st.sampled_from(CIDRS_V4), min_size=1, max_size=2))
        )
        out = dataclasses.replace(rule, source=dataclasses.replace(rule.source, nets=nets))
    elif how == 4:
        src = dataclasses.replace(rule.source, selector=draw(selectors()))
        out = dataclasses.replace(rule, source=src)
    action = draw(st.sampled_from(("Allow", "Deny", "Pass", "Log")))
    return dataclasses.replace(out, action=action, span=m.Span("gen.yaml", line, 5))


@st.composite
def rule_lists(draw: st.DrawFn, base_line: int, max_size: int = 4) -> tuple[m.Rule, ...]:
    n = draw(st.integers(0, max_size))
    out: list[m.Rule] = []
    for i in range(n):
        if out and draw(st.integers(0, 2)) == 0:
            out.append(draw(narrowed(draw(st.sampled_from(out)), base_line + i)))
        else:
            out.append(draw(rules(base_line + i)))
    return tuple(out)


@st.composite
def policies(draw: st.DrawFn, i: int) -> m.Policy:
    kind = draw(
        st.sampled_from(("NetworkPolicy", "GlobalNetworkPolicy", "StagedGlobalNetworkPolicy"))
    )
    staged = kind.startswith("Staged") and draw(st.integers(0, 2)) == 0
    if kind.startswith("Staged") and not staged:
        kind = "GlobalNetworkPolicy"
    namespaced = kind == "NetworkPolicy"
    types = draw(st.sampled_from((("Ingress",), ("Egress",), ("Ingress", "Egress"))))
    dnt = pre_dnat = aof = False
    if not namespaced and draw(st.integers(0, 5)) == 0:
        flavour = draw(st.sampled_from(("dnt", "predenat", "aof")))
        aof = True
        dnt = flavour == "dnt"
        pre_dnat = flavour == "predenat"
        if pre_dnat:
            types = ("Ingress",)
    ingress = draw(rule_lists(100 * i + 10)) if "Ingress" in types else ()
    egress = draw(rule_lists(100 * i + 50)) if "Egress" in types else ()
    return m.Policy(
        kind=kind,
        name=f"p{i}",
        namespace=draw(st.sampled_from(NAMESPACES)) if namespaced else None,
        tier=draw(st.sampled_from(("default", "default", "t1", "t2"))),
        order=draw(st.sampled_from((None, 1.0, 5.0, 10.0))),
        selector=draw(st.sampled_from(("", "all()") + ATOMS[:6])),
        namespace_selector=(
            draw(st.sampled_from(('team == "x"', "has(team)")))
            if not namespaced and draw(st.integers(0, 5)) == 0
            else ""
        ),
        types=types,
        ingress=ingress,
        egress=egress,
        do_not_track=dnt,
        pre_dnat=pre_dnat,
        apply_on_forward=aof,
        staged=staged,
        span=m.Span("gen.yaml", 100 * i, 1),
    )


@st.composite
def pods(draw: st.DrawFn, i: int) -> m.Endpoint:
    ns = draw(st.sampled_from(NAMESPACES))
    own = draw(label_sets())
    own.update({"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s"})
    v4 = POD_V4[i]
    ips = [_ip(v4)]
    if draw(st.integers(0, 3)):
        ips.append(_ip(POD_V6[i]))
    ports = tuple(draw(st.lists(st.sampled_from(NAMED_PORTS), unique=True, max_size=2)))
    return m.Endpoint(
        kind="WorkloadEndpoint",
        name=f"pod{i}",
        pod=f"pod{i}",
        namespace=ns,
        node=draw(st.sampled_from(("node1", "node1", "node2"))),
        interface=f"cali{i}",
        ips=tuple(ips),
        labels=m.labels_of(own),
        profiles=(f"kns.{ns}",),
        ports=ports,
        span=m.Span("gen.yaml", 1000 + i, 1),
    )


@st.composite
def host_endpoints(draw: st.DrawFn) -> m.Endpoint:
    own = draw(label_sets())
    own["host"] = "yes"
    return m.Endpoint(
        kind="HostEndpoint",
        name="hep1",
        namespace=None,
        node="node1",
        interface=draw(st.sampled_from(("*", "eth0"))),
        ips=(_ip(HEP_V4), _ip(HEP_V6)),
        labels=m.labels_of(own),
        profiles=draw(st.sampled_from(((), ("projectcalico-default-allow",)))),
        ports=(m.NamedPort("web", TCP, 80),),
        span=m.Span("gen.yaml", 2000, 1),
    )


@st.composite
def network_sets(draw: st.DrawFn, i: int) -> m.NetworkSet:
    ns = draw(st.sampled_from((None,) + NAMESPACES))
    labels = draw(label_sets())
    if ns is not None:
        labels["projectcalico.org/namespace"] = ns
    nets = draw(st.lists(st.sampled_from(CIDRS_V4 + CIDRS_V6), min_size=1, max_size=3))
    return m.NetworkSet(
        name=f"set{i}",
        namespace=ns,
        labels=m.labels_of(labels),
        nets=tuple(_net(x) for x in nets),
        profiles=(f"kns.{ns}",) if ns else (),
    )


@st.composite
def profiles(draw: st.DrawFn, ns: str) -> m.Profile:
    ingress: tuple[m.Rule, ...] = (m.Rule("Allow"),)
    egress: tuple[m.Rule, ...] = (m.Rule("Allow"),)
    if draw(st.integers(0, 3)) == 0:
        ingress = draw(rule_lists(3000, 2)) + ingress
    if draw(st.integers(0, 3)) == 0:
        egress = draw(rule_lists(3100, 2)) + egress
    team = draw(st.sampled_from(("x", "y")))
    return m.Profile(
        name=f"kns.{ns}",
        labels_to_apply=m.labels_of({"pcns.projectcalico.org/name": ns, "pcns.team": team}),
        ingress=ingress,
        egress=egress,
    )


@st.composite
def resource_sets(draw: st.DrawFn) -> m.ResourceSet:
    n_pods = draw(st.integers(3, 6))
    endpoints = [draw(pods(i)) for i in range(n_pods)]
    if draw(st.integers(0, 2)) == 0:
        endpoints.append(draw(host_endpoints()))
    profs = [draw(profiles(ns)) for ns in NAMESPACES]
    profs.append(
        m.Profile("projectcalico-default-allow", (), (m.Rule("Allow"),), (m.Rule("Allow"),))
    )
    tiers = (
        m.Tier("t1", 10.0, draw(st.sampled_from(("Deny", "Pass")))),
        m.Tier("t2", None, draw(st.sampled_from(("Deny", "Pass")))),
    )
    pols = tuple(draw(policies(i)) for i in range(draw(st.integers(1, 4))))
    sets = tuple(draw(network_sets(i)) for i in range(draw(st.integers(0, 2))))
    felix = m.FelixConfig(
        default_endpoint_to_host_action=draw(st.sampled_from(("Drop", "Return", "Accept")))
    )
    node = m.Node(
        "node1",
        ipv4=ipaddress.IPv4Interface(f"{NODE_V4}/24"),
        ipv6=ipaddress.IPv6Interface(f"{NODE_V6}/64"),
    )
    return m.ResourceSet(
        policies=pols,
        tiers=tiers,
        profiles=tuple(profs),
        network_sets=sets,
        endpoints=tuple(endpoints),
        felix=felix,
        nodes=(node,),
    )


def addresses(res: m.ResourceSet, family: int) -> list[str]:
    """Every interesting address of one family: endpoints, the node, network sets, outsiders."""
    out = [str(ip) for e in res.endpoints for ip in e.ips if ip.version == family]
    out += [NODE_V4] if family == 4 else [NODE_V6]
    for s in res.network_sets:
        for n in s.nets:
            if n.version == family:
                out.append(str(n.network_address))
                out.append(str(n.broadcast_address))
    out += list(OUTSIDERS_V4 if family == 4 else OUTSIDERS_V6)
    return sorted(set(out))


@st.composite
def flows(draw: st.DrawFn, res: m.ResourceSet) -> Flow:
    family = draw(st.sampled_from((4, 4, 6)))
    pool = addresses(res, family)
    src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
    protocol = draw(st.sampled_from((TCP, TCP, UDP, SCTP, ICMP if family == 4 else ICMP6, ICMP)))
    if protocol in (ICMP, ICMP6):
        return Flow(
            _ip(src),
            _ip(dst),
            protocol,
            icmp_type=draw(st.sampled_from((0, 8, 3))),
            icmp_code=draw(st.sampled_from((0, 1))),
        )
    src_port = draw(st.sampled_from((None, None, None) + PORT_POOL))
    return Flow(_ip(src), _ip(dst), protocol, src_port, draw(st.sampled_from(PORT_POOL)))
