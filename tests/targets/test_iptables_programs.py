"""Hand-made inputs for the iptables target's golden, unit and kernel tests.

Each one stresses a part of the iptables lowering (see the docstrings). They are YAML, read by
the frontend and run through the whole pass pipeline, so they also show what the target gets
in practice; :func:`hostile_program` is built straight from IR instead, because its names are
ones the frontend would refuse.
"""

from __future__ import annotations

import ipaddress

from compiler.diagnostics import DiagnosticSink, SourceRegistry, Span, render_all
from compiler.frontend import load_text
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.pipeline import compile_program

NODE = "node1"

_NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
"""


def _pod(ns: str, name: str, n: int, labels: str, ports: str = "", node: str = NODE) -> str:
    port_block = f"\n      ports: {ports}" if ports else ""
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec:
  nodeName: {node}
  containers:
    - name: main{port_block}
status:
  podIP: 10.65.0.{n}
  podIPs: [{{ip: 10.65.0.{n}}}, {{ip: "fd00:65::{n}"}}]
"""


_NODES = """
---
apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations:
    projectcalico.org/IPv4Address: 10.65.1.1/24
    projectcalico.org/IPv6Address: fd00:65:1::1/64
status:
  addresses: [{address: 10.65.1.1, type: InternalIP}]
"""

_PODS = (
    _pod("shop", "web", 1, "{app: web}", "[{name: http, containerPort: 8080, protocol: TCP}]")
    + _pod("shop", "db", 2, "{app: db}", "[{name: pg, containerPort: 5432, protocol: TCP}]")
    + _pod("shop", "api", 3, "{app: api}", "[{name: http, containerPort: 8081, protocol: TCP}]")
    + _pod("ops", "probe", 4, "{app: probe}")
)

_PORTS_20 = ", ".join(str(p) for p in (*range(7001, 7016), "7100:7110", 7200, 7300, 7400, 5432))

WORKLOADS = (
    _NAMESPACES
    + _PODS
    + _NODES
    + f"""
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {{name: security}}
spec: {{order: 10, defaultAction: Pass}}
---
# Security tier: log SSH, deny SSH and a blocked range, pass the rest on.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: security.baseline}}
spec:
  tier: security
  order: 1
  selector: all()
  types: [Ingress, Egress]
  ingress:
    - {{action: Log, protocol: TCP, destination: {{ports: [22]}}}}
    - {{action: Deny, protocol: TCP, destination: {{ports: [22]}}}}
    - {{action: Deny, source: {{nets: [192.0.2.0/25, 198.51.100.7/32]}}}}
    - {{action: Deny, source: {{nets: ["2001:db8::/33", "2001:db8:8000::1"]}}}}
    - action: Pass
  egress:
    - action: Deny
      protocol: UDP
      destination:
        nets: [203.0.113.0/26, 203.0.113.128/26, 10.99.0.0/16]
        notNets: [203.0.113.5/32, 203.0.113.130/32]
        ports: [{_PORTS_20}]
    - action: Pass
---
# The database takes connections from web and api on more than 15 ports and named ports.
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: db, namespace: shop}}
spec:
  order: 10
  selector: app == "db"
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app in {{"web", "api"}}
      destination:
        ports: [{_PORTS_20}, pg]
    - action: Allow
      protocol: ICMP
      icmp: {{type: 8, code: 0}}
    - action: Allow
      protocol: UDP
      source:
        nets: [10.65.0.0/30, 10.65.0.4/32]
        notPorts: [{_PORTS_20}]
      destination:
        notPorts: [{_PORTS_20}]
---
# api: egress anywhere but the probe namespace, and not UDP.
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: api-egress, namespace: shop}}
spec:
  order: 20
  selector: app == "api"
  types: [Egress]
  egress:
    - action: Deny
      destination:
        namespaceSelector: team == "ops"
    - action: Allow
      notProtocol: UDP
      destination:
        notSelector: app == "db"
---
# web: Kubernetes policy, named port ingress from anyone in the namespace.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress]
  ingress:
    - from: [{{podSelector: {{}}}}]
      ports: [{{port: http}}, {{port: 9000, endPort: 9010, protocol: TCP}}]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {{name: default}}
spec:
  logPrefix: "tt %k %n"
  logActionRateLimit: 10/second
  logActionRateLimitBurst: 20
"""
)

HOSTS = (
    _NAMESPACES
    + _pod("shop", "web", 1, "{app: web}", "[{name: http, containerPort: 8080, protocol: TCP}]")
    + _pod("ops", "probe", 4, "{app: probe}")
    + _NODES
    + """
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all, labels: {role: node, all: "yes"}}
spec: {node: node1, interfaceName: "*", expectedIPs: [10.65.9.1, "fd00:65:9::1"]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: uplink}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [192.168.100.1, "fd00:100::1"]
  profiles: [projectcalico-default-allow]
---
# Untracked: UDP 5000 allowed without conntrack, UDP 5001 dropped before conntrack.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec:
  order: 1
  selector: role == "node"
  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress:
    - {action: Allow, protocol: UDP, destination: {ports: [5000]}}
    - {action: Deny, protocol: UDP, destination: {ports: [5001]}}
  egress:
    - {action: Allow, protocol: UDP, source: {ports: [5000]}}
---
# preDNAT: NodePort range closed to one outside network.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: nodeports}
spec:
  order: 2
  selector: has(role)
  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
    - {action: Deny, protocol: TCP, source: {nets: [203.0.113.0/24]}, destination: {ports: ["30000:32767"]}}
---
# Normal host policy for the * endpoint: HTTP and ping in, anything out.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: node-in}
spec:
  order: 10
  selector: all == "yes"
  types: [Ingress, Egress]
  ingress:
    - {action: Allow, protocol: TCP, destination: {ports: [80, 8080]}}
    - {action: Allow, protocol: ICMP}
    - {action: Allow, protocol: ICMPv6}
  egress:
    - action: Allow
---
# Forwarded traffic out through eth0: TCP only.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: uplink-forward}
spec:
  order: 20
  selector: role == "uplink"
  applyOnForward: true
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: projectcalico-default-allow}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  defaultEndpointToHostAction: Return
  iptablesFilterDenyAction: Reject
"""
)


def compile_yaml(text: str, node: str = NODE, name: str = "input.yaml") -> ir.Program:
    sink, sources = DiagnosticSink(), SourceRegistry()
    resources = load_text(text, name, sink, sources)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    program = compile_program(resources, node, sink)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    return program


def workloads_program(**felix: object) -> ir.Program:
    prog = compile_yaml(WORKLOADS)
    if felix:
        fields = {f: getattr(prog.felix, f) for f in prog.felix.__slots__}  # type: ignore[attr-defined]
        fields.update(felix)
        prog = ir.replace_program(prog, felix=FelixConfig(**fields))  # type: ignore[arg-type]
    return prog


def hosts_program() -> ir.Program:
    return compile_yaml(HOSTS)


HOSTILE = 'evil" -j ACCEPT\n-A INPUT -j DROP #\\ $(reboot) \x00\u202e'


def hostile_program() -> ir.Program:
    """Names no validator should ever let through, in every place a name reaches the files:
    policy and profile ids (chain names, comments, log prefixes via %n %p), endpoint ids and
    names, span file names, the node name and the log prefix itself."""
    span = Span(f"dir/{HOSTILE}.yaml", 7, 1)
    pid = f"gnp/{HOSTILE}"
    allow = ir.Rule("allow", ir.Match(ip_version=4, protocol=6), 0, span)
    log = ir.Rule("log", ir.Match(ip_version=4), 1, span)
    log6 = ir.Rule("log", ir.Match(ip_version=6), 1, span)
    policy = ir.Policy(
        id=pid,
        name=HOSTILE,
        namespace=None,
        kind="GlobalNetworkPolicy",
        tier=HOSTILE,
        order=1.0,
        selector="all()",
        types=(ir.INGRESS,),
        ingress=(log, log6, allow),
        origin=span,
    )
    profile = ir.Profile(HOSTILE, ingress=(log,), egress=(allow,), origin=span)
    plan = ir.TierPlan(HOSTILE, ir.DENY, (pid,))
    ep = ir.Endpoint(
        id=f"ns/{HOSTILE}",
        kind="WorkloadEndpoint",
        name=HOSTILE,
        namespace="ns",
        node=HOSTILE,
        interface="cali0123456789a",
        ips=(ipaddress.ip_address("10.65.0.1"),),
        labels=(),
        profiles=(HOSTILE,),
        plans=(((ir.NORMAL, ir.INGRESS), (plan,)),),
        origin=span,
    )
    hep = ir.Endpoint(
        id=HOSTILE,
        kind="HostEndpoint",
        name=HOSTILE,
        namespace=None,
        node=HOSTILE,
        interface="eth0",
        ips=(ipaddress.ip_address("10.65.1.1"),),
        labels=(),
        profiles=(HOSTILE,),
        plans=(((ir.NORMAL, ir.INGRESS), (plan,)),),
        origin=span,
    )
    felix = FelixConfig(log_prefix=f"%n|%p|%t|{HOSTILE}")
    return ir.make_program(
        node=HOSTILE,
        tiers=(ir.Tier(HOSTILE, 1.0, ir.DENY),),
        policies=(policy,),
        profiles=(profile,),
        sets=(),
        endpoints=(ep, hep),
        selectables=(),
        felix=felix,
        host_ips={HOSTILE: (ipaddress.ip_address("10.65.1.1"),)},
    )


PROGRAMS = {
    "workloads": workloads_program,
    "hosts": hosts_program,
    "hostile": hostile_program,
}


def many_pods_yaml(count: int = 40) -> str:
    """``count`` pods in one namespace (interface names are hashes, so they spread over the
    dispatch tree), a policy denying TCP 81 to every pod, the namespace profile allowing the
    rest."""
    pods = "".join(
        f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: p{i:03d}, namespace: big, labels: {{app: p{i % 3}}}}}
spec: {{nodeName: {NODE}, containers: [{{name: main}}]}}
status: {{podIP: 10.66.{i // 200}.{i % 200 + 1}, podIPs: [{{ip: 10.66.{i // 200}.{i % 200 + 1}}}]}}
"""
        for i in range(count)
    )
    return (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n"
        + pods
        + """
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-81}
spec:
  selector: all()
  types: [Ingress]
  ingress:
    - {action: Deny, protocol: TCP, destination: {ports: [81]}}
    - action: Pass
"""
    )


def many_pods_program(count: int = 40) -> ir.Program:
    return compile_yaml(many_pods_yaml(count))
