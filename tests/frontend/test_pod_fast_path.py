"""The Pod fast path (schema/pod_fast.py) gives exactly what the general reader gives: the same
resources, skip counts and diagnostics, for valid pods and for every way a pod can be wrong."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.frontend.schema import k8s_core

MISSING = object()

# Values of every shape a field can be given: wrong types, null, empty, invalid.
_ANY = [None, "", "x", "Bad_Name", 7, 7.0, 1.5, True, [], ["a"], {}, {"a": 1}, MISSING]
_NAMES = ["web-1", "a.b", "Web", "-x", "", "x" * 64, "x" * 254, 3, None, MISSING]
_BAD: dict[tuple[str, ...], list[object]] = {
    ("metadata",): _ANY,
    ("metadata", "name"): _NAMES,
    ("metadata", "namespace"): _NAMES,
    ("metadata", "labels"): _ANY,
    ("metadata", "labels", "app"): ["", "v1.2", "bad value", "-x", "x" * 64, None, 3, True, ["a"]],
    ("metadata", "labels", "bad key"): ["web"],
    ("metadata", "labels", "-x"): ["web"],
    ("metadata", "labels", "pcns.x"): ["web"],
    ("metadata", "labels", "example.com/team"): ["red"],
    ("metadata", "labels", "Bad.com/team"): ["red"],
    ("metadata", "annotations"): _ANY,
    ("metadata", "annotations", "a"): _ANY,
    ("spec",): _ANY,
    ("spec", "nodeName"): _ANY,
    ("spec", "hostNetwork"): [*_ANY, False],
    ("spec", "serviceAccountName"): _NAMES,
    ("spec", "serviceAccount"): _NAMES,
    ("spec", "containers"): _ANY,
    ("spec", "containers", 0): _ANY,
    ("spec", "containers", 0, "ports"): _ANY,
    ("spec", "containers", 0, "ports", 0): _ANY,
    ("spec", "containers", 0, "ports", 0, "name"): _NAMES,
    ("spec", "containers", 0, "ports", 0, "containerPort"): [
        0,
        65536,
        1.5,
        80.0,
        "80",
        True,
        None,
        MISSING,
    ],
    ("spec", "containers", 0, "ports", 0, "protocol"): ["UDP", "SCTP", "tcp", "", 6, None, MISSING],
    ("status",): _ANY,
    ("status", "podIP"): [
        "10.65.0.9",
        "fd00::9",
        " 10.65.0.2 ",
        "10.65.0.256",
        "01.2.3.4",
        "",
        5,
        None,
        MISSING,
    ],
    ("status", "podIPs"): _ANY,
    ("status", "podIPs", 0): _ANY,
    ("status", "podIPs", 0, "ip"): ["fd00::2", "10.65.0.256", "1.2.3", "x", "", 5, None, MISSING],
    ("status", "phase"): ["Failed", "Succeeded", *_ANY],
}


def _pod() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "ns-a",
            "labels": {"app": "web", "tier": "db"},
            "annotations": {"a": "x"},
        },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "default",
            "containers": [
                {"name": "m", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}
            ],
        },
        "status": {"phase": "Running", "podIP": "10.65.0.1", "podIPs": [{"ip": "10.65.0.1"}]},
    }


def _set(doc: dict, path: tuple[str | int, ...], value: object) -> None:
    """Put ``value`` at ``path`` (MISSING deletes it); a path through a non-container is a no-op."""
    node: object = doc
    for step in path[:-1]:
        if (
            isinstance(node, dict)
            and step in node
            or isinstance(node, list)
            and isinstance(step, int)
            and step < len(node)
        ):
            node = node[step]
        else:
            return
    last = path[-1]
    if isinstance(node, dict):
        if value is MISSING:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if value is MISSING:
            del node[last]
        else:
            node[last] = value


@st.composite
def pods(draw: st.DrawFn) -> dict:
    """A valid pod with zero to three fields made wrong."""
    pod = _pod()
    paths = sorted(_BAD, key=str)
    for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
        _set(pod, path, draw(st.sampled_from(_BAD[path])))
    return pod


def _read(text: str) -> tuple[object, str]:
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(text, "pods.yaml", sink, sources)
    return (rs.endpoints, rs.skipped, rs.kind_counts), render_all(sink.sorted(), sources)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pods(), min_size=1, max_size=3))
def test_fast_path_changes_nothing(docs: list[dict]) -> None:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    fast = _read(text)
    original = k8s_core.read_pod_fast
    k8s_core.read_pod_fast = lambda doc: None  # type: ignore[assignment]
    try:
        general = _read(text)
    finally:
        k8s_core.read_pod_fast = original
    assert fast == general


def test_fast_path_takes_well_formed_pods() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "ns-a", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "m", "ports": [{"name": "http", "containerPort": 80}]}],
        },
        "status": {"podIP": "10.65.0.1", "podIPs": [{"ip": "10.65.0.1"}, {"ip": "fd00::1"}]},
    }
    from compiler.frontend.schema.meta import Doc
    from compiler.frontend.yaml_loader import load_documents

    (node,) = load_documents(yaml.safe_dump(pod), "p.yaml", DiagnosticSink())
    got = k8s_core.read_pod_fast(Doc("v1", "Pod", node, DiagnosticSink(), node.span))
    assert got is not None
    meta, host_network, node_name, sa, ports, ips, phase = got
    assert (meta.name, meta.namespace, meta.labels) == ("web-1", "ns-a", {"app": "web"})
    assert (host_network, node_name, sa, phase) == (False, "node-1", None, None)
    assert [(p.name, p.port) for p in ports] == [("http", 80)] and len(ips) == 2
