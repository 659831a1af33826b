"""Ethernet frames for ``BPF_PROG_TEST_RUN``: the first packet of a :class:`Flow`, and the
malformed variants the parser must survive (truncation, IPv6 extension headers, fragments).

>>> from compiler.ir.flow import Flow
>>> len(frame(Flow.make("10.0.0.1", "10.0.0.2", 6, 80, src_port=1234)))
54
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from compiler.ir.flow import Flow

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("eeeeeeeeeeee")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@dataclass(frozen=True, slots=True)
class Shape:
    """How to build the frame, beyond the flow itself."""

    tcp_flags: int = SYN
    icmp_id: int = 0x1234
    payload: bytes = b""
    v6_ext: tuple[int, ...] = ()  # IPv6 extension headers (0, 43, 60, 51) before L4
    fragment: str | None = None  # None | "first" | "later"
    frag_id: int = 0x4242
    truncate: int | None = None  # cut the frame to this many bytes


def l4_header(flow: Flow, shape: Shape) -> bytes:
    sport, dport = flow.src_port or 0, flow.dst_port or 0
    if flow.protocol == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, shape.tcp_flags, 65535, 0, 0)
    if flow.protocol in (17, 136):
        return struct.pack("!HHHH", sport, dport, 8 + len(shape.payload), 0)
    if flow.protocol == 132:
        return struct.pack("!HHII", sport, dport, 0, 0)
    if flow.protocol in (1, 58):
        hdr = struct.pack("!BBHHH", flow.icmp_type or 0, flow.icmp_code or 0, 0, shape.icmp_id, 1)
        return hdr[:2] + struct.pack("!H", _csum(hdr + shape.payload)) + hdr[4:]
    return b""


def _ext(nh: int, kind: int) -> bytes:
    if kind == 51:  # AH: length in 4-octet units minus 2; 12 bytes of header + 4 of ICV
        return struct.pack("!BBHII", nh, 2, 0, 1, 1) + bytes(4)
    return struct.pack("!BB", nh, 0) + bytes(6)  # 8 bytes, padding only


def frame(flow: Flow, shape: Shape | None = None) -> bytes:
    """The Ethernet frame of ``flow``'s first packet, shaped by ``shape``."""
    shape = shape or Shape()
    l4 = l4_header(flow, shape) + shape.payload
    if shape.fragment == "later":
        l4 = bytes(16) + shape.payload  # payload of a later fragment: no header
    if flow.family == 4:
        frag = {None: 0, "first": 0x2000, "later": 0x2000 | 185}[shape.fragment]
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), shape.frag_id & 0xFFFF, frag, 64,
            flow.protocol, 0, flow.src_ip.packed, flow.dst_ip.packed,
        )  # fmt: skip
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        pkt = struct.pack("!6s6sH", ETH_DST, ETH_SRC, 0x0800) + hdr + l4
    else:
        chain = list(shape.v6_ext)
        if shape.fragment is not None:
            chain.append(44)
        nexts = [*chain[1:], flow.protocol]
        ext = b""
        for kind, nh in zip(chain, nexts[: len(chain)], strict=True):
            if kind == 44:
                off = 0 if shape.fragment == "first" else 185
                ext += struct.pack("!BBHI", nh, 0, (off << 3) | 1, shape.frag_id)
            else:
                ext += _ext(nh, kind)
        first = chain[0] if chain else flow.protocol
        hdr = struct.pack(
            "!IHBB16s16s", 6 << 28, len(ext) + len(l4), first, 64,
            flow.src_ip.packed, flow.dst_ip.packed,
        )  # fmt: skip
        pkt = struct.pack("!6s6sH", ETH_DST, ETH_SRC, 0x86DD) + hdr + ext + l4
    if shape.truncate is not None:
        pkt = pkt[: shape.truncate]
    return pkt
