"""A small cluster shared by the diff tests, as YAML text (one namespace per team)."""

from __future__ import annotations

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import ResourceSet

__all__ = ["CLUSTER", "NAMESPACES", "load"]

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata: {name: frontend, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: backend, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: misc}}
"""

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: frontend, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c}]}
status: {podIP: 10.0.1.1, podIPs: [{ip: 10.0.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: frontend, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c}]}
status: {podIP: 10.0.1.2, podIPs: [{ip: 10.0.1.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: backend, labels: {app: api}}
spec: {nodeName: node1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.2.1, podIPs: [{ip: 10.0.2.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: backend, labels: {app: api}}
spec: {nodeName: node2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.2.2, podIPs: [{ip: 10.0.2.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: backend, labels: {app: db}}
spec: {nodeName: node2, containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}
status: {podIP: 10.0.2.3, podIPs: [{ip: 10.0.2.3}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool-0, namespace: other, labels: {app: tool}}
spec: {nodeName: node2, containers: [{name: c}]}
status: {podIP: 10.0.3.1, podIPs: [{ip: 10.0.3.1}]}
"""

CLUSTER = NAMESPACES + "---\n" + PODS


def load(*texts: str, name: str = "policy.yaml", cluster: str = CLUSTER) -> ResourceSet:
    """The cluster plus ``texts`` (YAML documents), read as one tree; fails on any error."""
    sink, sources = DiagnosticSink(), SourceRegistry()
    docs = "\n---\n".join(t.strip("\n") for t in texts if t.strip())
    rs = load_text(cluster + ("---\n" + docs + "\n" if docs else ""), name, sink, sources)
    assert not sink.has_errors, [str(d) for d in sink.diagnostics]
    return rs
