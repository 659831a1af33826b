"""A resource document and its ``metadata``.

ObjectMeta is the same for every kind, so it is read here once. For the kinds Tortie validates
strictly, every ObjectMeta field kubectl may print is known (and the server-managed ones are
skipped); an unknown metadata field is an error. The Kubernetes core kinds (Pod, Namespace...)
read metadata leniently, as they read everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.yaml_loader import Mapping, Scalar

from .fields import Fields
from .values import check_labels, check_name

__all__ = ["Doc", "Meta", "read_meta"]

META_KNOWN = ("name", "namespace", "labels", "annotations")
META_IGNORED = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
)


@dataclass(slots=True)
class Doc:
    """One resource: its type, its mapping and where it starts."""

    api_version: str
    kind: str
    node: Mapping
    sink: DiagnosticSink
    kind_span: Span

    @property
    def span(self) -> Span:
        return self.node.span

    @property
    def label(self) -> str:
        """How the kind is named in summaries: ``NetworkPolicy`` for Calico and core kinds, the
        group appended for the others (``NetworkPolicy.networking.k8s.io``)."""
        group = self.api_version.rpartition("/")[0]
        if group in ("", "projectcalico.org"):
            return self.kind
        return f"{self.kind}.{group}"


@dataclass(slots=True)
class Meta:
    name: str
    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    name_span: Span = Span("<unknown>", 0, 0)
    namespace_span: Span | None = None


def _annotations(sink: DiagnosticSink, f: Fields) -> dict[str, str]:
    node = f.map("annotations")
    out: dict[str, str] = {}
    if node is None:
        return out
    for key, value in node.items:
        if isinstance(value, Scalar) and isinstance(value.value, str):
            out[str(key.value)] = value.value
        elif not (isinstance(value, Scalar) and value.value is None):
            sink.error("E021", f"annotation {str(key.value)!r} must be a string", value.span)
    return out


def read_meta(
    doc: Doc,
    *,
    namespaced: bool,
    strict: bool = True,
    label_name: bool = False,
) -> Meta:
    """The document's metadata. Problems are reported and the reader carries on with what is
    left (an empty name at worst), so that the rest of the document is validated too; the
    collector will not keep a resource whose document had errors.

    A namespaced resource without a namespace lands in ``default``, as kubectl and calicoctl
    put it. A namespace on a cluster-scoped resource is ignored with a warning.
    ``label_name`` asks for a DNS-1123 label (Namespaces, Tiers) instead of a subdomain.
    """
    sink = doc.sink
    meta = Meta(name="", namespace="default" if namespaced else None, name_span=doc.kind_span)
    node = doc.node.get("metadata")
    if node is None or (isinstance(node, Scalar) and node.value is None):
        sink.error("E022", f'{doc.kind} has no "metadata"', doc.kind_span)
        return meta
    if not isinstance(node, Mapping):
        sink.error("E021", '"metadata" must be a mapping', node.span)
        return meta
    f = Fields(sink, node, f"{doc.kind} metadata", META_KNOWN, META_IGNORED, strict=strict)
    name_node = f.str_node("name", required=True)
    if name_node is not None:
        meta.name_span = name_node.span
        if check_name(sink, name_node, f"{doc.kind} name", label=label_name):
            meta.name = str(name_node.value)
    ns_node = f.str_node("namespace")
    if namespaced and ns_node is not None:
        meta.namespace_span = ns_node.span
        if check_name(sink, ns_node, "namespace", label=True):
            meta.namespace = str(ns_node.value)
    elif ns_node is not None and ns_node.value != "":
        sink.warning(
            "W006", f"{doc.kind} is cluster-scoped; metadata.namespace is ignored", ns_node.span
        )
    meta.labels = check_labels(sink, f.get("labels"), f"{doc.kind} labels")
    meta.annotations = _annotations(sink, f)
    return meta
