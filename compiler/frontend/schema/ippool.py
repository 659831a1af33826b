"""IPPool (SEMANTICS.md §Resources and fields, IPPool; §IPAM).

Block size defaults to 26 (IPv4) or 122 (IPv6) and must be 20–32 or 116–128; the pool must hold
at least one block. IPIP is IPv4-only and cannot be combined with VXLAN. LoadBalancer pools
cannot also serve workloads or tunnels (Calico's rule: the two kinds of address are managed by
different controllers).
"""

from __future__ import annotations

from compiler.frontend.model import IPPool
from compiler.frontend.yaml_loader import Mapping

from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .selectors import selector_field
from .values import parse_cidr

__all__ = ["read_ip_pool"]

POOL_FIELDS = (
    "cidr",
    "blockSize",
    "ipipMode",
    "vxlanMode",
    "natOutgoing",
    "disabled",
    "disableBGPExport",
    "nodeSelector",
    "namespaceSelector",
    "allowedUses",
    "assignmentMode",
)
MODES = ("Never", "Always", "CrossSubnet")
USES = ("Workload", "Tunnel", "LoadBalancer")


def read_ip_pool(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    m = expect_map(sink, doc.node.get("spec"), '"spec"')
    f = Fields(sink, m if m is not None else Mapping([], doc.span), "IPPool spec", POOL_FIELDS)
    before = sink.error_count
    cidr_node = f.str_node("cidr", required=True)
    cidr = parse_cidr(sink, cidr_node, "pool CIDR") if cidr_node is not None else None
    ipip = f.enum("ipipMode", MODES) or "Never"
    vxlan = f.enum("vxlanMode", MODES) or "Never"
    uses: list[str] = []
    for item in f.str_list("allowedUses"):
        if item.value not in USES:
            sink.error(
                "E023",
                f'allowedUses must be Workload, Tunnel or LoadBalancer, not "{item.value}"',
                item.span,
            )
        elif item.value not in uses:
            uses.append(str(item.value))
    if not f.has("allowedUses"):
        uses = ["Workload", "Tunnel"]
    if "LoadBalancer" in uses and len(uses) > 1:
        sink.error(
            "E080",
            "allowedUses LoadBalancer cannot be combined with Workload or Tunnel",
            f.span("allowedUses"),
        )
    block = None
    if cidr is not None:
        lo, hi, default = (20, 32, 26) if cidr.version == 4 else (116, 128, 122)
        block = f.int("blockSize", lo, hi)
        if block is None and not f.has("blockSize"):
            block = default
        if block is not None and cidr.prefixlen > block:
            sink.error(
                "E080",
                f"pool {cidr} is smaller than one /{block} block",
                f.span("blockSize") if f.has("blockSize") else cidr_node.span,
            )  # type: ignore[union-attr]
        if ipip != "Never" and cidr.version == 6:
            sink.error("E080", "IPIP encapsulation is IPv4-only", f.span("ipipMode"))
    if ipip != "Never" and vxlan != "Never":
        sink.error("E080", "ipipMode and vxlanMode cannot both be enabled", f.key_span("vxlanMode"))
    pool = IPPool(
        name=meta.name,
        cidr=cidr,  # type: ignore[arg-type]
        block_size=block or 0,
        ipip_mode=ipip,
        vxlan_mode=vxlan,
        nat_outgoing=bool(f.bool("natOutgoing")),
        disabled=bool(f.bool("disabled")),
        disable_bgp_export=bool(f.bool("disableBGPExport")),
        node_selector=selector_field(f, "nodeSelector") or "all()",
        allowed_uses=tuple(u for u in USES if u in uses),
        assignment_mode=f.enum("assignmentMode", ("Automatic", "Manual")) or "Automatic",
        namespace_selector=selector_field(f, "namespaceSelector") or "",
        span=doc.span,
    )
    valid = sink.error_count == before and cidr is not None and block is not None
    if valid and col.claim("IPPool", None, meta.name, meta.name_span, "IPPool"):
        col.ip_pools.append(pool)
