"""One hand-written case per kind of change, with the exact groups expected.

Each case is two trees over the same small cluster (``cluster.py``); a group is written as
(change, sources, destinations, services, decided before, decided after).
"""

from __future__ import annotations

from compiler.diff import semantic_diff
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
    return [
        (
            "allowed" if g.now_allowed else "denied",
            g.sources.names,
            g.destinations.names,
            g.services.text(),
            g.before.short(),
            g.after.short(),
        )
        for g in d.groups
    ]


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
