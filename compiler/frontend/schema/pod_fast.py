"""The fast path for well-formed Pods: a 10,000-pod ``kubectl get pods -o yaml`` is most of a
cluster's YAML, and nearly every pod in it is valid.

:func:`read_pod_fast` reads exactly the fields :func:`k8s_core.read_pod` reads, with the same
rules, but straight from the node tree, without :class:`Fields` objects or diagnostics. The
moment anything would be a diagnostic (a wrong type, an invalid name, label or address, a
missing ``containerPort``...) it gives up and returns None, and the general reader runs: it
reports every problem with its span, as before. So for any input the result is the one of the
general reader; ``tests/frontend/test_pod_fast_path.py`` checks that on generated pods.
"""

from __future__ import annotations

import math

from compiler.frontend.model import PROTOCOLS, IPAddr, NamedPort
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, Sequence

from .meta import Doc, Meta
from .values import _valid_name, check_label_key, check_label_value, ip_address

__all__ = ["PodFields", "read_pod_fast"]

PodFields = tuple[
    Meta, bool, str | None, str | None, tuple[NamedPort, ...], tuple[IPAddr, ...], str | None
]
_CONTAINER_PROTOCOLS = ("TCP", "UDP", "SCTP")


class _Bail(Exception):
    """Something the general reader would report: let it."""


def _get(m: Mapping, key: str) -> Node | None:
    """``Fields.get``: the value of ``key``, None when absent or null."""
    i = m._index.get(key)
    if i is None:
        return None
    node = m.items[i][1]
    if node.__class__ is Scalar and node.value is None:  # type: ignore[union-attr]
        return None
    return node


def _str(m: Mapping, key: str) -> str | None:
    node = _get(m, key)
    if node is None:
        return None
    if node.__class__ is not Scalar or node.value.__class__ is not str:  # type: ignore[union-attr]
        raise _Bail
    return node.value  # type: ignore[union-attr,return-value]


def _map(node: Node | None) -> Mapping | None:
    """``expect_map``: None for absent or null, the mapping, or bail."""
    if node is None or (node.__class__ is Scalar and node.value is None):  # type: ignore[union-attr]
        return None
    if node.__class__ is not Mapping:
        raise _Bail
    return node  # type: ignore[return-value]


def _seq(m: Mapping, key: str) -> list[Node]:
    node = _get(m, key)
    if node is None:
        return []
    if node.__class__ is not Sequence:
        raise _Bail
    return node.items  # type: ignore[union-attr]


def _meta(doc: Doc) -> Meta:
    md = _map(doc.node.get("metadata"))
    if md is None:
        raise _Bail
    name_node = _get(md, "name")
    if name_node is None or name_node.__class__ is not Scalar:
        raise _Bail
    name = name_node.value  # type: ignore[union-attr]
    if name.__class__ is not str or not _valid_name(name, False):
        raise _Bail
    namespace = _str(md, "namespace")
    if namespace is None:
        namespace = "default"
    elif not _valid_name(namespace, True):
        raise _Bail
    labels: dict[str, str] = {}
    lm = _map(md.get("labels"))
    for key, value in lm.items if lm is not None else ():
        k = str(key.value)
        if check_label_key(k) is not None:
            raise _Bail
        if value.__class__ is Scalar and value.value is None:  # type: ignore[union-attr]
            labels[k] = ""
            continue
        if value.__class__ is not Scalar or value.value.__class__ is not str:  # type: ignore[union-attr]
            raise _Bail
        if check_label_value(value.value) is not None:  # type: ignore[union-attr,arg-type]
            raise _Bail
        labels[k] = value.value  # type: ignore[union-attr,assignment]
    am = _map(_get(md, "annotations"))
    for _, value in am.items if am is not None else ():
        if value.__class__ is not Scalar or (
            value.value is not None and value.value.__class__ is not str  # type: ignore[union-attr]
        ):
            raise _Bail
    return Meta(name=name, namespace=namespace, labels=labels, name_span=name_node.span)


def _container_port(p: Mapping) -> int:
    node = _get(p, "containerPort")
    if node is None or node.__class__ is not Scalar:
        raise _Bail
    v = node.value  # type: ignore[union-attr]
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise _Bail
    return v


def _ports(spec: Mapping) -> tuple[NamedPort, ...]:
    out: dict[str, NamedPort] = {}
    for c in _seq(spec, "containers"):
        cm = _map(c)
        if cm is None:
            continue
        for p in _seq(cm, "ports"):
            pm = _map(p)
            if pm is None:
                continue
            name = _str(pm, "name")
            port = _container_port(pm)
            proto = _str(pm, "protocol")
            if proto is not None and proto not in _CONTAINER_PROTOCOLS:
                raise _Bail
            proto = proto or "TCP"
            if name is None:
                continue  # unnamed ports play no part in policy
            if not _valid_name(name, True):
                raise _Bail
            out.setdefault(f"{name}/{proto}", NamedPort(name, PROTOCOLS[proto], port))
    return tuple(sorted(out.values(), key=lambda p: (p.name, p.protocol, p.port)))


def _ip(text: str) -> IPAddr:
    try:
        return ip_address(text.strip())
    except ValueError:
        raise _Bail from None


def _ips(status: Mapping | None) -> tuple[IPAddr, ...]:
    if status is None:
        return ()
    ips: list[IPAddr] = []
    texts: list[str] = []
    for item in _seq(status, "podIPs"):
        m = _map(item)
        if m is not None:
            text = _str(m, "ip")
            if text is not None:
                texts.append(text)
                ip = _ip(text)
                if ip not in ips:
                    ips.append(ip)
    single = _str(status, "podIP")
    if single and single not in texts:  # podIP normally repeats podIPs[0]: already in ips
        ip = _ip(single)
        if ip not in ips:
            ips.append(ip)
    return tuple(sorted(ips, key=lambda a: (a.version, int(a))))


def read_pod_fast(doc: Doc) -> PodFields | None:
    """What ``read_pod`` validates, for a pod with nothing to report; None otherwise."""
    try:
        meta = _meta(doc)
        spec = _map(doc.node.get("spec"))
        status = _map(doc.node.get("status"))
        if spec is None:
            return None
        host_network = _get(spec, "hostNetwork")
        if host_network is not None and (
            host_network.__class__ is not Scalar or host_network.value.__class__ is not bool  # type: ignore[union-attr]
        ):
            return None
        node = _str(spec, "nodeName")
        sa = _str(spec, "serviceAccountName")
        if sa is None:
            sa = _str(spec, "serviceAccount")
        if sa is not None and sa and not _valid_name(sa, False):
            return None
        ports = _ports(spec)
        ips = _ips(status)
        phase = _str(status, "phase") if status is not None else None
    except _Bail:
        return None
    return (
        meta,
        bool(host_network.value) if host_network is not None else False,  # type: ignore[union-attr]
        node,
        sa or None,
        ports,
        ips,
        phase,
    )
