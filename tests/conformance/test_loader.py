"""Checks on the conformance corpus itself: every case parses and names only things that exist."""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .loader import (
    BASE_CLUSTER,
    CASES_DIR,
    HEADER_KIND,
    ROOT,
    Case,
    CaseError,
    case_paths,
    expand_pattern,
    load_case,
    load_cases,
    parse_rule,
)

CASES = load_cases()
CASE_IDS = [case.name for case in CASES]
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# apiVersion -> kinds a case may contain.
KNOWN_KINDS = {
    "v1": {"List", "Namespace", "Pod", "ServiceAccount", "Node"},
    "networking.k8s.io/v1": {"NetworkPolicy"},
    "projectcalico.org/v3": {
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
        "Tier",
        "NetworkSet",
        "GlobalNetworkSet",
        "HostEndpoint",
        "Profile",
        "FelixConfiguration",
    },
}
NAMESPACED = {
    "Pod",
    "ServiceAccount",
    "NetworkPolicy",
    "StagedNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "NetworkSet",
}
CALICO_TIERED = {
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
}
BASE_IPS = {
    "x/a": 10,
    "x/b": 11,
    "x/c": 12,
    "y/a": 20,
    "y/b": 21,
    "y/c": 22,
    "z/a": 30,
    "z/b": 31,
    "z/c": 32,
}


@functools.cache
def _parse_all(text: str) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None)


def _docs(case: Case) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in _parse_all(case.documents_yaml_text):
        if doc is None:
            continue
        out.extend(doc["items"] if doc["kind"] == "List" else [doc])
    return out


def _header(path: Path) -> dict[str, Any]:
    return next(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def test_corpus_size_and_families() -> None:
    assert len(CASES) >= 45
    families = {case.name.split("/")[0] for case in CASES}
    for family in (
        "k8s-default-deny",
        "k8s-ports",
        "k8s-ipblock",
        "calico-tiers",
        "calico-staged",
        "host-endpoints",
        "ipv6",
    ):
        assert family in families


def test_base_cluster() -> None:
    items = yaml.safe_load(BASE_CLUSTER.read_text(encoding="utf-8"))
    assert items["apiVersion"] == "v1" and items["kind"] == "List"
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items["items"]:
        by_kind.setdefault(item["kind"], []).append(item)
    assert [ns["metadata"]["name"] for ns in by_kind["Namespace"]] == ["x", "y", "z"]
    for ns in by_kind["Namespace"]:
        name = ns["metadata"]["name"]
        assert ns["metadata"]["labels"] == {"ns": name, "kubernetes.io/metadata.name": name}
    assert {
        (sa["metadata"]["namespace"], sa["metadata"]["name"]) for sa in by_kind["ServiceAccount"]
    } == {(ns, "default") for ns in "xyz"}
    (node,) = by_kind["Node"]
    assert {"address": "10.65.1.1", "type": "InternalIP"} in node["status"]["addresses"]
    pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in by_kind["Pod"]}
    assert set(pods) == set(BASE_IPS)
    for pod_id, pod in pods.items():
        last = BASE_IPS[pod_id]
        assert pod["metadata"]["labels"] == {"pod": pod_id.split("/")[1]}
        assert pod["spec"]["nodeName"] == "node1"
        assert pod["spec"]["serviceAccountName"] == "default"
        assert pod["status"]["podIP"] == f"10.65.0.{last}"
        assert pod["status"]["podIPs"] == [{"ip": f"10.65.0.{last}"}, {"ip": f"fd00:65::{last}"}]
        ports = {
            (port["name"], port["containerPort"], port["protocol"])
            for container in pod["spec"]["containers"]
            for port in container["ports"]
        }
        assert ports == {
            (f"serve-{num}-{proto.lower()}", num, proto)
            for num in (80, 81)
            for proto in ("TCP", "UDP", "SCTP")
        }


def test_every_case_file_is_loaded() -> None:
    assert len(case_paths()) == len(CASES)
    assert all(path.parent.parent == CASES_DIR for path in case_paths())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case_file_shape(case: Case) -> None:
    text = case.path.read_text(encoding="utf-8")
    assert text.startswith("# "), "a case opens with a comment describing the scenario"
    assert re.fullmatch(r"[a-z0-9-]+/[a-z0-9-]+", case.name)
    header = _header(case.path)
    assert header["kind"] == HEADER_KIND
    assert case.description and "\n" not in case.description
    assert HEADER_KIND not in case.documents_yaml_text.replace(f"# {HEADER_KIND}", "")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_checks_are_complete(case: Case) -> None:
    assert case.checks
    pods = sorted(case.pods)
    assert len(pods) >= 2
    for check in case.checks:
        assert check.expected
        assert (check.port is None) == (check.protocol == "ICMP")
        pairs = {(s, d) for s in pods for d in pods if s != d}
        assert pairs <= set(check.expected), "every ordered pod pair has a verdict"
        for src, dst in check.expected:
            assert src != dst
            for end in (src, dst):
                if end in case.pods:
                    assert check.family in case.pods[end]
                elif end.startswith("host:"):
                    continue
                else:
                    assert ipaddress.ip_address(end).version == check.family
    keys = [(c.protocol, c.port, c.family) for c in case.checks]
    assert len(keys) == len(set(keys)), "one check per protocol/port/family"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_patterns_name_existing_pods_or_valid_ips(case: Case) -> None:
    hosts = {doc["metadata"]["name"] for doc in _docs(case) if doc["kind"] == "HostEndpoint"}
    for raw in _header(case.path)["expect"]:
        family = raw.get("family", 4)
        for line in raw.get("rules") or []:
            src, dst, _ = parse_rule(line)
            for pattern in (src, dst):
                assert expand_pattern(pattern, case.pods, hosts, family)
                if "/" not in pattern and not pattern.startswith("host:"):
                    assert not any(pattern == ips.get(family) for ips in case.pods.values()), (
                        f"{pattern} is a pod's address; name the pod instead"
                    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_resources_are_well_formed(case: Case) -> None:
    docs = _docs(case)
    seen: set[tuple[str, str, str, str]] = set()
    tiers = {"default"} | {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Tier"}
    namespaces = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace"}
    nodes = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Node"}
    for doc in docs:
        api, kind, meta = doc.get("apiVersion"), doc.get("kind"), doc.get("metadata") or {}
        assert kind in KNOWN_KINDS.get(api, set()), f"unexpected {api} {kind}"
        assert meta.get("name"), f"{kind} without metadata.name"
        if kind in NAMESPACED:
            assert meta.get("namespace") in namespaces, (
                f"{kind} {meta['name']} in unknown namespace"
            )
        else:
            assert "namespace" not in meta
        identity = (api, kind, meta.get("namespace", ""), meta["name"])
        assert identity not in seen, f"duplicate {identity}"
        seen.add(identity)
        spec = doc.get("spec") or {}
        if api == "projectcalico.org/v3" and kind in CALICO_TIERED:
            tier = spec.get("tier", "default")
            assert tier in tiers, f"{meta['name']} uses undefined tier {tier}"
            if tier != "default":
                assert meta["name"].startswith(f"{tier}."), (
                    "non-default tier names carry the prefix"
                )
        if kind == "Pod":
            assert spec["nodeName"] in nodes
        if kind == "HostEndpoint":
            assert spec["node"] in nodes
        if api == "networking.k8s.io/v1" or kind == "StagedKubernetesNetworkPolicy":
            assert spec.get("policyTypes"), "k8s policies spell out policyTypes"


def _selectors(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.lower().endswith("selector") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_selectors(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_selectors(value))
    return found


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_calico_selectors_are_single_line(case: Case) -> None:
    for doc in _docs(case):
        if doc["apiVersion"] == "projectcalico.org/v3":
            for selector in _selectors(doc.get("spec")):
                assert selector == selector.strip() and "\n" not in selector


def test_base_override_replaces_item() -> None:
    (case,) = [c for c in CASES if c.name == "k8s-updates/updated-pod-after"]
    pods = [d for d in _docs(case) if d["kind"] == "Pod" and d["metadata"]["name"] == "b"]
    x_b = [p for p in pods if p["metadata"]["namespace"] == "x"]
    assert len(x_b) == 1 and x_b[0]["metadata"]["labels"]["pod2"] == "updated"
    assert len([d for d in _docs(case) if d["kind"] == "Pod"]) == 9


def test_parse_rule() -> None:
    assert parse_rule("*/* -> x/a: deny") == ("*/*", "x/a", False)
    assert parse_rule("x/b -> fd00:65::10: allow") == ("x/b", "fd00:65::10", True)
    assert parse_rule("host:node1-all -> x/a: allow") == ("host:node1-all", "x/a", True)
    for bad in ("x/a -> x/b", "x/a => x/b: deny", "x/a -> x/b: accept", "x/a->x/b: deny"):
        with pytest.raises(CaseError):
            parse_rule(bad)


def test_expand_pattern() -> None:
    pods = {pod_id: {4: f"10.65.0.{n}", 6: f"fd00:65::{n}"} for pod_id, n in BASE_IPS.items()}
    assert expand_pattern("x/*", pods, set(), 4) == ["x/a", "x/b", "x/c"]
    assert expand_pattern("*/b", pods, set(), 4) == ["x/b", "y/b", "z/b"]
    assert len(expand_pattern("*/*", pods, set(), 4)) == 9
    assert expand_pattern("192.0.2.10", pods, set(), 4) == ["192.0.2.10"]
    assert expand_pattern("host:h", pods, {"h"}, 4) == ["host:h"]
    for bad, family in (
        ("w/*", 4),
        ("x/d", 4),
        ("x", 4),
        ("x/a/b", 4),
        ("192.0.2.10", 6),
        ("fd00:65::10", 4),
        ("fd00:65:0::10", 6),
        ("host:missing", 4),
        ("10.65.0.300", 4),
    ):
        with pytest.raises(CaseError):
            expand_pattern(bad, pods, {"h"}, family)


def _write_case(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cases" / "fam" / "case.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_case_applies_rules_in_order(tmp_path: Path) -> None:
    path = _write_case(
        tmp_path,
        "# c\nkind: ConformanceCase\ndescription: d\nbase: true\nexpect:\n"
        "  - {protocol: TCP, port: 80, default: allow, rules: ['*/* -> x/*: deny', 'x/b -> x/a: allow']}\n"
        "  - {protocol: ICMP, family: 6, default: deny, rules: ['2001:db8::1 -> y/c: allow']}\n",
    )
    case = load_case(path, cases_dir=tmp_path / "cases")
    tcp, icmp = case.checks
    assert tcp.expected[("x/b", "x/a")] is True
    assert tcp.expected[("x/c", "x/a")] is False
    assert tcp.expected[("y/a", "x/b")] is False
    assert tcp.expected[("x/a", "y/a")] is True
    assert ("x/a", "x/a") not in tcp.expected
    assert icmp.port is None and icmp.family == 6
    assert icmp.expected[("2001:db8::1", "y/c")] is True
    assert icmp.expected[("x/a", "y/c")] is False
    assert case.documents_yaml_text == BASE_CLUSTER.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "body",
    [
        "kind: Other\ndescription: d\nexpect: [{protocol: TCP, port: 80, default: allow}]\n",
        "kind: ConformanceCase\nexpect: [{protocol: TCP, port: 80, default: allow}]\n",
        "kind: ConformanceCase\ndescription: d\nexpect: []\n",
        "kind: ConformanceCase\ndescription: d\nexpect: [{protocol: TCP, default: allow}]\n",
        "kind: ConformanceCase\ndescription: d\nexpect: [{protocol: ICMP, port: 1, default: deny}]\n",
        "kind: ConformanceCase\ndescription: d\nexpect: [{protocol: TCP, port: 80, default: maybe}]\n",
        "kind: ConformanceCase\ndescription: d\nexpect: [{protocol: TCP, port: 80, default: allow, rules: ['x/a -> x/a: deny']}]\n",
        "kind: ConformanceCase\ndescription: d\nextra: 1\nexpect: [{protocol: TCP, port: 80, default: allow}]\n",
        "kind: ConformanceCase\ndescription: d\nexpect: [{protocol: TCP, port: 80, default: allow}]\n"
        "---\nkind: ConformanceCase\n",
    ],
)
def test_load_case_rejects_malformed(tmp_path: Path, body: str) -> None:
    path = _write_case(tmp_path, body)
    with pytest.raises(CaseError):
        load_case(path, cases_dir=tmp_path / "cases")


def test_readme_lists_every_case() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for case in CASES:
        assert f"| `{case.name}` |" in readme
