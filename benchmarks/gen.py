"""Deterministic synthetic cluster generator for scale runs.

    python -m benchmarks.gen --policies 1000 --endpoints 10000 --nodes 100 --seed 1 -o /tmp/c

writes ``namespaces.yaml``, ``pods.yaml``, ``nodes.yaml`` (kubectl-style ``kind: List``),
``policies-k8s.yaml``, ``policies-calico.yaml`` and ``netsets.yaml``. The same arguments always
give byte-identical files.

Shapes, roughly as seen in real clusters: namespaces of very different sizes (Zipf-like), pods
with ``app``/``tier``/``version``/``team`` labels (a few values dominate), IPv4 and IPv6 per pod,
one service account per app, named container ports; policies are ~50% Kubernetes NetworkPolicy
(default deny + allow-from-app + namespace peers + ipBlock), ~35% Calico NetworkPolicy and ~15%
GlobalNetworkPolicy spread over a ``security`` tier and ``default``, using every selector
operator, Deny/Pass/Log actions, named ports and port ranges; GlobalNetworkSets with thousands of
CIDRs in total.

``--shape rules --rules N`` writes the per-packet shape instead (see :func:`generate_rules`):

    python -m benchmarks.gen --shape rules --rules 10000 -o /tmp/r
"""

from __future__ import annotations

import argparse
import ipaddress
import random
from pathlib import Path

import yaml

try:
    Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - pure-python fallback
    Dumper = yaml.SafeDumper  # type: ignore[misc]

APPS = ["web", "api", "db", "cache", "queue", "worker", "auth", "search", "billing", "ingest"]
TIERS = ["frontend", "backend", "data"]
TEAMS = ["red", "blue", "green", "gold"]
VERSIONS = ["v1", "v2", "v3"]
PORTS = [("http", 8080), ("grpc", 9090), ("metrics", 9100), ("db", 5432)]


def _zipf_sizes(rng: random.Random, total: int, buckets: int) -> list[int]:
    weights = [1.0 / (i + 1) for i in range(buckets)]
    rng.shuffle(weights)
    s = sum(weights)
    sizes = [max(1, int(total * w / s)) for w in weights]
    sizes[0] += total - sum(sizes)
    return sizes


def _dump(path: Path, items: list[dict]) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    path.write_text(yaml.dump(doc, Dumper=Dumper, sort_keys=True, default_flow_style=False))


def _pick(rng: random.Random, values: list[str]) -> str:
    # Skewed: the first values dominate.
    return values[min(int(rng.expovariate(1.2)), len(values) - 1)]


def generate(policies: int, endpoints: int, nodes: int, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    n_ns = max(2, endpoints // 100)
    namespaces = [f"ns-{i:04d}" for i in range(n_ns)]
    sizes = _zipf_sizes(rng, endpoints, n_ns)
    node_names = [f"node-{i:03d}" for i in range(nodes)]

    ns_items = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    "kubernetes.io/metadata.name": ns,
                    "team": TEAMS[i % len(TEAMS)],
                    "env": "prod" if i % 3 else "staging",
                },
            },
        }
        for i, ns in enumerate(namespaces)
    ]
    node_items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250 + 1}"},
                    {"type": "Hostname", "address": n},
                ]
            },
        }
        for i, n in enumerate(node_names)
    ]
    pod_items: list[dict] = []
    sa_items: list[dict] = []
    v4 = ipaddress.ip_network("10.64.0.0/10")
    v6 = ipaddress.ip_network("fd00:64::/64")
    counter = 0
    for ns, size in zip(namespaces, sizes, strict=True):
        for app in sorted({_pick(rng, APPS) for _ in range(min(size, 6))}):
            sa_items.append(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
                }
            )
        for j in range(size):
            counter += 1
            app = _pick(rng, APPS)
            ports = rng.sample(PORTS, rng.randint(1, 3))
            pod_items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{app}-{j:05d}",
                        "namespace": ns,
                        "labels": {
                            "app": app,
                            "tier": _pick(rng, TIERS),
                            "version": _pick(rng, VERSIONS),
                            "team": rng.choice(TEAMS),
                        },
                    },
                    "spec": {
                        "nodeName": node_names[counter % nodes],
                        "serviceAccountName": "default",
                        "containers": [
                            {
                                "name": "main",
                                "image": f"registry.example/{app}:1",
                                "ports": [
                                    {"name": n, "containerPort": p, "protocol": "TCP"}
                                    for n, p in sorted(ports)
                                ],
                            }
                        ],
                    },
                    "status": {
                        "podIP": str(v4[counter]),
                        "podIPs": [{"ip": str(v4[counter])}, {"ip": str(v6[counter])}],
                    },
                }
            )

    netsets = []
    for i in range(max(1, policies // 200)):
        base = 0x0B000000 + i * 0x100000
        nets = sorted(
            {
                str(ipaddress.ip_network((base + rng.randrange(0, 1 << 20) & ~0xFF, 24)))
                for _ in range(500)
            }
        )
        netsets.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "GlobalNetworkSet",
                "metadata": {"name": f"blocklist-{i:03d}", "labels": {"feed": f"f{i % 4}"}},
                "spec": {"nets": nets},
            }
        )

    k8s, calico = [], []
    for i in range(policies):
        ns = rng.choice(namespaces)
        app = _pick(rng, APPS)
        roll = rng.random()
        if roll < 0.5:
            k8s.append(_k8s_policy(rng, i, ns, app))
        elif roll < 0.85:
            calico.append(_calico_np(rng, i, ns, app))
        else:
            calico.append(_calico_gnp(rng, i, app))
    calico.insert(
        0,
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Tier",
            "metadata": {"name": "security"},
            "spec": {"order": 100, "defaultAction": "Pass"},
        },
    )
    return {
        "namespaces.yaml": ns_items + sa_items,
        "nodes.yaml": node_items,
        "pods.yaml": pod_items,
        "netsets.yaml": netsets,
        "policies-k8s.yaml": k8s,
        "policies-calico.yaml": calico,
    }


def _k8s_policy(rng: random.Random, i: int, ns: str, app: str) -> dict:
    peer_app = _pick(rng, APPS)
    port_name, port = rng.choice(PORTS)
    ingress = [
        {
            "from": [{"podSelector": {"matchLabels": {"app": peer_app}}}],
            "ports": [{"protocol": "TCP", "port": port_name if rng.random() < 0.3 else port}],
        }
    ]
    if rng.random() < 0.4:
        ingress.append(
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}},
                        "podSelector": {
                            "matchExpressions": [
                                {
                                    "key": "tier",
                                    "operator": "In",
                                    "values": sorted(rng.sample(TIERS, 2)),
                                }
                            ]
                        },
                    }
                ]
            }
        )
    if rng.random() < 0.2:
        ingress.append(
            {
                "from": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.1.0/24"]}}],
                "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}],
            }
        )
    spec: dict = {"podSelector": {"matchLabels": {"app": app}}, "ingress": ingress}
    if rng.random() < 0.3:
        spec["egress"] = [
            {"to": [{"podSelector": {}}]},
            {"ports": [{"protocol": "UDP", "port": 53}]},
        ]
        spec["policyTypes"] = ["Ingress", "Egress"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"knp-{i:05d}", "namespace": ns},
        "spec": spec,
    }


def _selector(rng: random.Random, app: str) -> str:
    forms = [
        f'app == "{app}"',
        f'app == "{app}" && tier != "data"',
        f'app in {{"{app}", "{_pick(rng, APPS)}"}}',
        'has(version) && version not in {"v3"}',
        f'app starts with "{app[:2]}"',
        'team contains "e" && !has(canary)',
        f'(app == "{app}" || tier == "frontend") && team ends with "d"',
    ]
    return rng.choice(forms)


def _calico_np(rng: random.Random, i: int, ns: str, app: str) -> dict:
    port_name, port = rng.choice(PORTS)
    rules = [
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": _selector(rng, _pick(rng, APPS))},
            "destination": {"ports": [port_name if rng.random() < 0.3 else port, "9000:9010"]},
        }
    ]
    if rng.random() < 0.3:
        rules.insert(0, {"action": "Log", "protocol": "TCP"})
    if rng.random() < 0.3:
        rules.append(
            {"action": "Deny", "source": {"notSelector": f'team == "{rng.choice(TEAMS)}"'}}
        )
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"cnp-{i:05d}", "namespace": ns},
        "spec": {
            "order": rng.choice([None, 100, 500, 1500]),
            "selector": _selector(rng, app),
            "types": ["Ingress"],
            "ingress": rules,
        },
    }


def _calico_gnp(rng: random.Random, i: int, app: str) -> dict:
    tier = rng.choice(["security", "default"])
    rules: list[dict] = [
        {"action": "Deny", "source": {"selector": f'feed == "f{rng.randrange(4)}"'}},
        {
            "action": "Pass" if tier == "security" else "Allow",
            "protocol": "TCP",
            "source": {"namespaceSelector": f'team == "{rng.choice(TEAMS)}"'},
        },
    ]
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": f"{tier}.gnp-{i:05d}" if tier != "default" else f"gnp-{i:05d}"},
        "spec": {
            "tier": tier,
            "order": float(rng.randrange(1, 1000)),
            "selector": _selector(rng, app),
            "types": ["Ingress"],
            "ingress": rules,
        },
    }


def _strip_none(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_strip_none(v) for v in obj]
    return obj


def write(out: Path, files: dict[str, list[dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, items in sorted(files.items()):
        _dump(out / name, _strip_none(items))  # type: ignore[arg-type]


RULES_NODE = "node-000"
RULES_NAMESPACE = "bench"
RULES_CLIENT = ("client", "10.65.0.1", "fd00:65::1")
RULES_SERVER = ("server", "10.65.0.2", "fd00:65::2")


def generate_rules(rules: int) -> dict[str, list[dict]]:
    """The per-packet shape: one node, a ``client`` and a ``server`` pod, and policies on the
    server with ``rules`` ingress rules in all. Every rule but the last allows one other /32 (so a packet
    from the client is checked against each of them); the last allows the client. A probe from
    client to server therefore walks all the rules and is allowed."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RULES_NAMESPACE,
            "labels": {"kubernetes.io/metadata.name": RULES_NAMESPACE},
        },
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": RULES_NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
    }
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": RULES_NAMESPACE, "labels": {"app": name}},
            "spec": {"nodeName": RULES_NODE, "containers": [{"name": "main", "image": "x"}]},
            "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
        }
        for name, v4, v6 in (RULES_CLIENT, RULES_SERVER)
    ]
    ingress: list[dict] = [
        {"action": "Allow", "source": {"nets": [f"10.200.{i // 250}.{i % 250 + 1}/32"]}}
        for i in range(max(0, rules - 1))
    ]
    ingress.append({"action": "Allow", "source": {"selector": "app == 'client'"}})
    # Calico allows at most 1024 rules per policy: chunks of 1000, in order, in one tier (a
    # policy none of whose rules match passes the packet on to the next one).
    policies = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"server-ingress-{i // 1000:03d}", "namespace": RULES_NAMESPACE},
            "spec": {
                "order": i // 1000 + 1,
                "selector": "app == 'server'",
                "types": ["Ingress"],
                "ingress": ingress[i : i + 1000],
            },
        }
        for i in range(0, len(ingress), 1000)
    ]
    return {"cluster.yaml": [ns, node, *pods], "policy.yaml": policies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("cluster", "rules"), default="cluster")
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rules", type=int, default=10, help="rules shape: rules on the server")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    if args.shape == "rules":
        write(args.out, generate_rules(args.rules))
    else:
        write(args.out, generate(args.policies, args.endpoints, args.nodes, args.seed))


if __name__ == "__main__":
    main()
