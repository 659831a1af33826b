"""One hand-written case per kind of change, with the exact groups expected.

Each case is two trees over the same small cluster (``cluster.py``); a group is written as
(change, sources, destinations, services, decided before, decided after).
"""

from __future__ import annotations

from compiler.diff import semantic_diff
from compiler.diff.report import ChangeGroup
from compiler.frontend.model import ResourceSet
from tests.diff.cluster import CLUSTER, load

API = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: backend}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: web}}}]
    ports: [{port: 8080}]
"""

DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: backend}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16%s}}]
    ports: [{port: 5432}]
"""

WEB = ("frontend/web-0", "frontend/web-1")
APIS = ("backend/api-0", "backend/api-1")
DB0 = ("backend/db-0",)
TOOL = ("other/tool-0",)
DEFAULT_DENY = "denied: end of tier default (no rule of its policies matched)"
KNP_API = "allowed: knp/backend/api-ingress rule 1 at policy.yaml:55"


def groups(
    base: ResourceSet, head: ResourceSet
) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str, str, str]]:
    d = semantic_diff(base, head)
    assert not d.endpoints
    return [summary(g) for g in d.groups]


def summary(g: ChangeGroup) -> tuple[str, tuple[str, ...], tuple[str, ...], str, str, str]:
    """(change, sources, destinations, services, decided before, decided after)."""
    return (
        "allowed" if g.now_allowed else "denied",
        g.sources.names,
        g.destinations.names,
        g.services.text(),
        g.before.short(),
        g.after.short(),
    )


def test_namespace_label_change() -> None:
    head = load(API, cluster=CLUSTER.replace("{team: misc}", "{team: web}"))
    assert groups(load(API), head) == [
        ("allowed", TOOL, APIS, "IPv4: TCP 8080", DEFAULT_DENY, KNP_API),
    ]


def test_new_deny() -> None:
    deny = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-web-to-api}
spec:
  order: 10
  selector: app == 'api'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    source: {namespaceSelector: team == 'web'}
    destination: {ports: [8080]}
"""
    assert groups(load(API), load(API, deny)) == [
        (
            "denied",
            WEB,
            APIS,
            "IPv4: TCP 8080",
            KNP_API,
            "denied: gnp/deny-web-to-api rule 1 at policy.yaml:66",
        ),
    ]


TIERS = """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: %d}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: second}
spec: {order: %d}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.allow-web}
spec:
  tier: first
  selector: app == 'api'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {namespaceSelector: team == 'web'}
    destination: {ports: [8080]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: second.deny-all}
spec:
  tier: second
  selector: app == 'api'
  types: [Ingress]
  ingress:
  - action: Deny
"""


def test_reordered_tiers() -> None:
    # Before, tier "first" allows web -> api:8080 and ends with a deny for the rest, so
    # "second" never decides; after, "second" comes first and denies everything to api. Only
    # web -> api:8080 changes: every other flow to api was denied before and still is.
    assert groups(load(TIERS % (100, 200)), load(TIERS % (300, 200))) == [
        (
            "denied",
            WEB,
            APIS,
            "IPv4: TCP 8080",
            "allowed: gnp/first.allow-web rule 1 at policy.yaml:67",
            "denied: gnp/second.deny-all rule 1 at policy.yaml:80",
        ),
    ]


GUARD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: backend}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {}}]
    ports: [{port: 8080}]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.guard}
spec:
  tier: security
  selector: app == 'api'
  types: [Ingress]
  ingress:
%s  - action: Deny
    source: {namespaceSelector: team == 'misc'}
"""

PASS = """\
  - action: Pass
    protocol: TCP
    source: {namespaceSelector: team == 'misc'}
    destination: {ports: [8080]}
"""


def test_pass_inserted() -> None:
    # The Pass hands tool -> api:8080 on to the default tier, where the Kubernetes policy
    # allows it; other ports from tool still meet the guard's Deny.
    assert groups(load(GUARD % ""), load(GUARD % PASS)) == [
        (
            "allowed",
            TOOL,
            APIS,
            "IPv4: TCP 8080",
            "denied: gnp/security.guard rule 1 at policy.yaml:71",
            KNP_API,
        ),
    ]


def test_port_range_widened() -> None:
    head = load(API.replace("port: 8080}", "port: 8080, endPort: 8090}"))
    assert groups(load(API), head) == [
        ("allowed", WEB, APIS, "IPv4: TCP 8081-8090", DEFAULT_DENY, KNP_API),
    ]


def test_ipblock_except_added() -> None:
    # Pods in 10.0.1.0/24 and every other address of that block lose TCP 5432 to db.
    before = "allowed: knp/backend/db-ingress rule 1 at policy.yaml:55"
    assert groups(load(DB % ""), load(DB % ", except: [10.0.1.0/24]")) == [
        (
            "denied",
            ("10.0.1.0/24 except 2 addresses",),
            DB0,
            "IPv4: TCP 5432",
            before,
            DEFAULT_DENY,
        ),
        ("denied", WEB, DB0, "IPv4: TCP 5432", before, DEFAULT_DENY),
    ]


def test_policy_deleted() -> None:
    # db-ingress isolated db; without it, db's namespace profile allows everything. TCP 5432 was
    # already allowed from 10.0.0.0/16 (every pod), so for those only the other services change.
    everything_else = "IPv4: any protocol except TCP 5432"
    after_external = "allowed: egress not a Calico endpoint (nothing enforced); ingress profile kns.backend rule 1"
    assert groups(load(API, DB % ""), load(API)) == [
        (
            "allowed",
            ("10.0.0.0/16 except 6 addresses", "any other IPv4 address"),
            DB0,
            everything_else,
            DEFAULT_DENY,
            after_external,
        ),
        (
            "allowed",
            ("any other IPv4 address",),
            DB0,
            "IPv4: TCP 5432",
            DEFAULT_DENY,
            after_external,
        ),
        (
            "allowed",
            (*APIS, "backend/db-0"),
            DB0,
            everything_else,
            DEFAULT_DENY,
            "allowed: egress profile kns.backend rule 1; ingress profile kns.backend rule 1",
        ),
        (
            "allowed",
            WEB,
            DB0,
            everything_else,
            DEFAULT_DENY,
            "allowed: egress profile kns.frontend rule 1; ingress profile kns.backend rule 1",
        ),
        (
            "allowed",
            TOOL,
            DB0,
            everything_else,
            DEFAULT_DENY,
            "allowed: egress profile kns.other rule 1; ingress profile kns.backend rule 1",
        ),
    ]


def test_decisions_carry_file_and_line() -> None:
    d = semantic_diff(load(API), load(API.replace("port: 8080}", "port: 8080, endPort: 8090}")))
    (g,) = d.groups
    ((direction, step),) = [s for s in g.after.steps if s[1].reason == "rule"]
    assert (direction, step.policy, step.rule_index, step.span.file, step.span.line) == (
        "ingress",
        "knp/backend/api-ingress",
        0,
        "policy.yaml",
        55,
    )


def test_endpoints_on_one_side_are_added_or_removed() -> None:
    extra = """\
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: frontend, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c}]}
status: {podIP: 10.0.1.3, podIPs: [{ip: 10.0.1.3}]}
"""
    d = semantic_diff(load(API), load(API, extra))
    assert [(c.change, c.name, c.after) for c in d.endpoints] == [
        ("added", "frontend/web-2", ("10.0.1.3",))
    ]
    assert d.groups == [] and d.changed
    d = semantic_diff(load(API, extra), load(API))
    assert [(c.change, c.name) for c in d.endpoints] == [("removed", "frontend/web-2")]


# -- flows forwarded through a host endpoint (applyOnForward) ------------------------------------

HEP = """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: %s}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [192.168.1.1]
  profiles: [projectcalico-default-allow]
"""

FWD = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: fwd}
spec:
  order: 10
  selector: role == 'gw'
  applyOnForward: %s
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [5432]}
  - action: Allow
"""

PRE_DNAT = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pre}
spec:
  order: 5
  selector: role == 'gw'
  applyOnForward: true
  preDNAT: true
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [5432]}
"""

# Forward ingress only for traffic between addresses the host itself never has.
FWD_IN = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: fwd-in}
spec:
  selector: role == 'gw'
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Deny
    source: {nets: [172.16.0.0/16]}
    destination: {nets: [10.0.2.0/24]}
  - action: Allow
"""

NO_FWD_POLICY = "allowed: [applyOnForward] no policy applies (Allow)"
FWD_DENY = "denied: gnp/fwd rule 1 at policy.yaml:67"
# Leaving node1 through its host endpoint: the workloads on node1, to every destination that is
# not node1's own address (workload -> own host is denied by defaultEndpointToHostAction Drop).
NODE1_SOURCES = (("backend/api-0",), WEB)
ANYWHERE = (("any other IPv4 address",), APIS + DB0, WEB, TOOL)


def forwarded(
    base: ResourceSet, head: ResourceSet
) -> tuple[int, list[tuple[str, str, tuple[str, ...], tuple[str, ...], str, str, str]]]:
    """(number of ordinary groups, forwarded groups as (via, change, sources, destinations,
    services, before, after))."""
    d = semantic_diff(base, head)
    assert not d.endpoints
    return len(d.groups), [(f.via, *summary(f.group)) for f in d.forward]


def _leaving_node1(change: str, before: str, after: str) -> list[tuple]:
    return sorted(
        ("node1-eth0", change, src, dst, "IPv4: TCP 5432", before, after)
        for src in NODE1_SOURCES
        for dst in ANYWHERE
    )


def test_new_apply_on_forward_deny() -> None:
    """Workloads on node1 lose TCP 5432 to everyone when forwarded out through the HEP; the
    policy also runs for the host's own traffic (the ordinary groups)."""
    ordinary, fwd = forwarded(load(HEP % "gw"), load(HEP % "gw", FWD % "true"))
    assert ordinary == 4
    assert sorted(fwd) == _leaving_node1("denied", NO_FWD_POLICY, FWD_DENY)


def test_host_endpoint_label_change() -> None:
    """The HEP stops matching the applyOnForward policy: the forwarded flows it denied pass."""
    ordinary, fwd = forwarded(load(HEP % "gw", FWD % "true"), load(HEP % "edge", FWD % "true"))
    assert ordinary == 4
    assert sorted(fwd) == _leaving_node1("allowed", FWD_DENY, NO_FWD_POLICY)


def test_pre_dnat_policy_changes_nothing_forwarded() -> None:
    """A preDNAT policy runs for traffic to the host (ordinary groups); the evaluator does not
    consult it for forwarded flows (evaluate.py: only the forward hook), so no forwarded group."""
    ordinary, fwd = forwarded(load(HEP % "gw"), load(HEP % "gw", PRE_DNAT))
    assert ordinary > 0
    assert fwd == []


def test_policy_without_apply_on_forward_changes_nothing_forwarded() -> None:
    ordinary, fwd = forwarded(load(HEP % "gw"), load(HEP % "gw", FWD % "false"))
    assert ordinary == 4
    assert fwd == []


def test_forwarded_change_alone_is_a_change() -> None:
    """A forward deny that no host traffic can match: no ordinary group, only forwarded ones."""
    base, head = load(HEP % "gw"), load(HEP % "gw", FWD_IN)
    d = semantic_diff(base, head)
    assert d.groups == [] and d.changed
    assert [(f.via, f.group.sources.names, f.group.destinations.names) for f in d.forward] == [
        ("node1-eth0", ("172.16.0.0/16",), ("10.0.2.0/24 except 3 addresses",)),
        ("node1-eth0", ("172.16.0.0/16",), APIS + DB0),
    ]
    assert d.forward[0].group.services.text() == "IPv4: any protocol"


def test_workload_to_own_host_leaving_through_the_endpoint() -> None:
    """With defaultEndpointToHostAction Accept, node1's workloads reach node1's host endpoint;
    forwarded out through that endpoint, the new forward egress deny applies (pairs evaluated
    one by one: ``forward._special_rows``)."""
    felix = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {defaultEndpointToHostAction: Accept}
"""
    _, fwd = forwarded(load(HEP % "gw", felix), load(HEP % "gw", felix, FWD % "true"))
    to_host = [f for f in fwd if f[3] == ("node1-eth0",)]
    deny = "denied: gnp/fwd rule 1 at policy.yaml:72"
    assert sorted(to_host) == [
        ("node1-eth0", "denied", src, ("node1-eth0",), "IPv4: TCP 5432", NO_FWD_POLICY, deny)
        for src in NODE1_SOURCES
    ]
