"""The Calico ``Node`` resource: BGP addresses, AS number, route-reflector cluster id.

A Kubernetes ``v1`` Node of the same name describes the same machine; the collector merges the
two (the Calico Node's BGP settings win, the Kubernetes labels are kept).
"""

from __future__ import annotations

import ipaddress

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import Node, labels_of
from compiler.frontend.yaml_loader import Mapping, Scalar
from compiler.frontend.yaml_loader import Node as YNode

from .bgp import asn_field
from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .values import parse_ip

__all__ = ["read_calico_node"]


def _iface(
    sink: DiagnosticSink, node: YNode | None, version: int
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if not isinstance(node, Scalar) or not isinstance(node.value, str) or not node.value:
        return None
    try:
        iface = ipaddress.ip_interface(node.value.strip())
    except ValueError:
        sink.error("E040", f"invalid address {node.value!r}", node.span)
        return None
    if iface.version != version:
        sink.error("E040", f"address {node.value!r} is not IPv{version}", node.span)
        return None
    return iface


def read_calico_node(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    known = [
        "bgp",
        "ipv4VXLANTunnelAddr",
        "ipv6VXLANTunnelAddr",
        "vxlanTunnelMACAddr",
        "vxlanTunnelMACAddrV6",
        "orchRefs",
        "addresses",
        "wireguard",
    ]
    m = expect_map(sink, doc.node.get("spec"), '"spec"')
    f = Fields(sink, m if m is not None else Mapping([], doc.span), "Node spec", known)
    before = sink.error_count
    ipv4 = ipv6 = None
    asn = None
    rr = None
    b = f.map("bgp")
    if b is not None:
        bf = Fields(
            sink,
            b,
            "Node bgp",
            (
                "ipv4Address",
                "ipv6Address",
                "asNumber",
                "routeReflectorClusterID",
                "ipv4IPIPTunnelAddr",
            ),
        )
        ipv4 = _iface(sink, bf.get("ipv4Address"), 4)
        ipv6 = _iface(sink, bf.get("ipv6Address"), 6)
        asn = asn_field(bf, "asNumber")
        rr_node = bf.str_node("routeReflectorClusterID")
        if (
            rr_node is not None
            and rr_node.value
            and parse_ip(sink, rr_node, "routeReflectorClusterID") is not None
        ):
            rr = str(rr_node.value)
        tun = bf.str_node("ipv4IPIPTunnelAddr")
        if tun is not None and tun.value:
            parse_ip(sink, tun, "ipv4IPIPTunnelAddr")
    vx_node = f.str_node("ipv4VXLANTunnelAddr")
    vxlan = (
        parse_ip(sink, vx_node, "VXLAN tunnel address")
        if vx_node is not None and vx_node.value
        else None
    )
    if sink.error_count == before and col.claim(
        "CalicoNode", None, meta.name, meta.name_span, "Node"
    ):
        col.calico_nodes[meta.name] = Node(
            meta.name, ipv4, ipv6, asn, rr, labels_of(meta.labels), vxlan, doc.span
        )  # type: ignore[arg-type]
