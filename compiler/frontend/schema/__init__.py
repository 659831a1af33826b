"""Validate documents and convert them to typed resources (``compiler.frontend.model``).

The dispatch is a plain table from (apiVersion, kind) to a reader function; each reader lives
in a small module per kind family. A reader validates its document, reports every problem with
a span, and hands a valid object to the :class:`Collector`, which does the cross-resource
checks and the final sorting.

Lists are unpacked first: ``kind: List`` (what ``kubectl get a,b -o yaml`` prints) and Calico's
``*List`` kinds (what ``calicoctl get ... -o yaml`` prints; their items may omit apiVersion and
kind, which are then inherited from the list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import ResourceSet
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, Sequence, type_name
from compiler.perf import paused_gc

from . import bgp, cnp, endpoints, felix, ippool, k8s, k8s_core, node, policy
from .collect import Collector
from .fields import Fields, did_you_mean
from .meta import Doc

__all__ = ["READERS", "read_documents"]

Reader = Callable[[Doc, Collector], None]
CALICO = "projectcalico.org/v3"

READERS: dict[tuple[str, str], Reader] = {
    (CALICO, "NetworkPolicy"): policy.read_calico_policy,
    (CALICO, "GlobalNetworkPolicy"): policy.read_calico_policy,
    (CALICO, "StagedNetworkPolicy"): policy.read_calico_policy,
    (CALICO, "StagedGlobalNetworkPolicy"): policy.read_calico_policy,
    (CALICO, "StagedKubernetesNetworkPolicy"): k8s.read_k8s_policy,
    (CALICO, "Tier"): policy.read_tier,
    (CALICO, "Profile"): policy.read_profile,
    (CALICO, "NetworkSet"): endpoints.read_network_set,
    (CALICO, "GlobalNetworkSet"): endpoints.read_network_set,
    (CALICO, "HostEndpoint"): endpoints.read_host_endpoint,
    (CALICO, "WorkloadEndpoint"): endpoints.read_workload_endpoint,
    (CALICO, "IPPool"): ippool.read_ip_pool,
    (CALICO, "BGPConfiguration"): bgp.read_bgp_configuration,
    (CALICO, "BGPPeer"): bgp.read_bgp_peer,
    (CALICO, "Node"): node.read_calico_node,
    (CALICO, "FelixConfiguration"): felix.read_felix,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.read_k8s_policy,
    ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"): cnp.read_cluster_network_policy,
    ("v1", "Pod"): k8s_core.read_pod,
    ("v1", "Namespace"): k8s_core.read_namespace,
    ("v1", "ServiceAccount"): k8s_core.read_service_account,
    ("v1", "Node"): k8s_core.read_node,
}
# Kubernetes core kinds print much more than we read: their unknown fields are not errors.
LENIENT = {("v1", "Pod"), ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "Node")}

# Calico kinds that exist but change nothing Tortie produces.
CALICO_UNUSED = {
    "KubeControllersConfiguration",
    "ClusterInformation",
    "IPAMConfiguration",
    "IPReservation",
    "BGPFilter",
    "BlockAffinity",
    "IPAMBlock",
    "IPAMHandle",
    "CalicoNodeStatus",
}
UNSUPPORTED = {
    (
        "policy.networking.k8s.io/v1alpha1",
        "AdminNetworkPolicy",
    ): "AdminNetworkPolicy (v1alpha1) is not "
    "supported: rewrite it as a policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy with tier Admin",
    (
        "policy.networking.k8s.io/v1alpha1",
        "BaselineAdminNetworkPolicy",
    ): "BaselineAdminNetworkPolicy "
    "(v1alpha1) is not supported: rewrite it as a policy.networking.k8s.io/v1alpha2 "
    "ClusterNetworkPolicy with tier Baseline",
    ("extensions/v1beta1", "NetworkPolicy"): "extensions/v1beta1 NetworkPolicy was removed from "
    "Kubernetes: use networking.k8s.io/v1",
}
# API groups whose objects kubectl may print alongside the ones we read; never policy.
SKIPPED_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "admissionregistration.k8s.io",
    "coordination.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
    "metrics.k8s.io",
    "apiregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
    "networking.k8s.io",
}
TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_MAX_LIST_DEPTH = 4


def _type(
    sink: DiagnosticSink, node: Mapping, inherit: tuple[str, str] | None
) -> tuple[Scalar, Scalar] | None:
    f = Fields(sink, node, "resource", (), strict=False)
    av, kind = f.get("apiVersion"), f.get("kind")
    if (av is None or kind is None) and inherit is not None:
        return Scalar(inherit[0], node.span), Scalar(inherit[1], node.span)
    if av is None or kind is None:
        missing = " and ".join(k for k, v in (("apiVersion", av), ("kind", kind)) if v is None)
        sink.error("E010", f"a resource needs {missing}", node.span)
        return None
    av_s, kind_s = f.str_node("apiVersion"), f.str_node("kind")
    return None if av_s is None or kind_s is None else (av_s, kind_s)


def _unknown(sink: DiagnosticSink, av: Scalar, kind: Scalar) -> None:
    a, k = str(av.value), str(kind.value)
    if a.startswith("crd.projectcalico.org/"):
        sink.error(
            "E012",
            f"{a} is Calico's internal storage format: export resources as projectcalico.org/v3 "
            "(calicoctl get -o yaml, or kubectl with the Calico API server)",
            av.span,
        )
        return
    versions = {v for v, _ in READERS}
    kinds = {kk for v, kk in READERS if v == a}
    if a not in versions:
        sink.error("E011", f"unknown apiVersion {a!r}{did_you_mean(a, versions)}", av.span)
    else:
        sink.error(
            "E011", f"unknown kind {k!r} for apiVersion {a}{did_you_mean(k, kinds)}", kind.span
        )


def _dispatch(
    sink: DiagnosticSink, node: Node, col: Collector, inherit: tuple[str, str] | None, depth: int
) -> None:
    if not isinstance(node, Mapping):
        sink.error(
            "E007",
            f"expected a resource (a mapping with apiVersion and kind), not {type_name(node)}",
            node.span,
        )
        return
    typed = _type(sink, node, inherit)
    if typed is None:
        return
    av, kind = typed
    a, k = str(av.value), str(kind.value)
    if k.endswith("List") and (a == "v1" or a == CALICO or (a, k[:-4]) in READERS):
        if depth >= _MAX_LIST_DEPTH:
            sink.error("E006", "lists nested too deeply", kind.span)
            return
        items = node.get("items")
        if (
            items is not None
            and not isinstance(items, Sequence)
            and not (isinstance(items, Scalar) and items.value is None)
        ):
            sink.error("E021", f'"items" must be a list, not {type_name(items)}', items.span)
            return
        child = (a, k[:-4]) if k != "List" else None
        for item in items.items if isinstance(items, Sequence) else ():
            _dispatch(sink, item, col, child, depth + 1)
        return
    doc = Doc(a, k, node, sink, kind.span)
    reader = READERS.get((a, k))
    group = a.rpartition("/")[0]
    if reader is not None:
        col.kind_counts[doc.label] += 1
        col.doc_start = sink.error_count
        if (a, k) not in LENIENT:
            Fields(sink, node, k, TOP_FIELDS, ("status",))
        reader(doc, col)
    elif (a, k) in UNSUPPORTED:
        sink.error("E012", UNSUPPORTED[(a, k)], kind.span)
    elif a == CALICO and k in CALICO_UNUSED:
        col.kind_counts[doc.label] += 1
        col.skipped[k] += 1
        sink.warning(
            "W005", f"{k} is a Calico kind that Tortie does not use; it is ignored", kind.span
        )
    elif group in SKIPPED_GROUPS and "/" in a or a == "v1":
        col.kind_counts[doc.label] += 1
        col.skipped[doc.label] += 1
    else:
        _unknown(sink, av, kind)


def read_documents(docs: Iterable[Node], sink: DiagnosticSink) -> ResourceSet:
    """Every document → the :class:`ResourceSet`; problems go to ``sink``."""
    col = Collector(sink)
    with paused_gc():  # many small acyclic objects: see compiler/perf.py
        for doc in docs:
            _dispatch(sink, doc, col, None, 0)
        return col.finish()
