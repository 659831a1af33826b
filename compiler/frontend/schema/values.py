"""Validators for the value types that many kinds share: names, labels, strings that reach
artifacts, addresses, ports, protocols, interface names.

Each validator reports at the value's span and returns the normalised value or None. The rules are
Kubernetes' and Calico's own (DNS-1123 names, label syntax, numorstring ports), plus one of
Tortie's: a string that can end up in a generated file (a rule comment, a log prefix, a BIRD
config) must not hold a newline, a quote, a backslash or a control character, because those are
exactly the characters that would let a value break out of its quoting there.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from socket import AF_INET6, inet_pton

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import PORT_PROTOCOLS, PROTOCOLS, IPAddr, IPNet, PortSpec
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, type_name

from .fields import expect_str

__all__ = [
    "check_interface",
    "check_label_key",
    "check_label_value",
    "check_labels",
    "check_name",
    "check_safe",
    "parse_cidr",
    "parse_ip",
    "parse_port",
    "parse_protocol",
    "unsafe_reason",
]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_IFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}\Z")
_NAMED_PORT = re.compile(r"[a-zA-Z0-9_.-]{1,128}\Z")
_PORT_NUMBER = re.compile(r"-?[0-9]{1,9}")
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0-255 without leading zeros
_DOTTED_QUAD = re.compile(r"\.".join([_OCTET] * 4))
# IPv6 text of hex digits and colons only (no dotted tail, no %scope): there the C library's
# inet_pton accepts exactly what ipaddress accepts (checked on 640,000 generated strings).
_PLAIN_V6 = re.compile(r"[0-9A-Fa-f:]+")
_PROTOCOL_ALIASES = {name: num for name, num in PROTOCOLS.items()} | {
    name.lower(): num for name, num in PROTOCOLS.items()
}


def unsafe_reason(text: str) -> str | None:
    """Why ``text`` may not reach an artifact, or None when it is safe."""
    for ch in text:
        if ch in "\n\r":
            return "a newline"
        if ch in '"\\':
            return f"the character {ch}"
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"the control character U+{ord(ch):04X}"
    return None


def check_safe(sink: DiagnosticSink, node: Scalar, what: str) -> bool:
    reason = unsafe_reason(str(node.value))
    if reason is None:
        return True
    sink.error(
        "E026", f"{what} must not contain {reason}: it is written into generated files", node.span
    )
    return False


@lru_cache(maxsize=65536)
def _valid_name(text: str, label: bool) -> bool:
    limit, pattern = (63, _DNS_LABEL) if label else (253, _DNS_SUBDOMAIN)
    return bool(pattern.match(text)) and len(text) <= limit


def check_name(sink: DiagnosticSink, node: Scalar, what: str, *, label: bool = False) -> bool:
    """A DNS-1123 subdomain (≤ 253, dots allowed) or, with ``label``, a DNS-1123 label (≤ 63)."""
    text = str(node.value)
    if _valid_name(text, label):  # names repeat (namespaces, ports): validate each text once
        return True
    limit = 63 if label else 253
    shape = "a DNS-1123 label" if label else "a DNS-1123 subdomain"
    rule = "lower-case letters, digits and '-'" + ("" if label else ", in '.'-separated parts")
    reason = unsafe_reason(text)
    if reason is not None:
        sink.error("E026", f"{what} {text!r} must not contain {reason}", node.span)
        return False
    sink.error(
        "E025",
        f"invalid {what} {text!r}: must be {shape} ({rule}, starting and ending with a letter or "
        f"digit, at most {limit} characters)",
        node.span,
    )
    return False


@lru_cache(maxsize=65536)  # label keys and values repeat across thousands of pods
def check_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "its prefix must be a DNS-1123 subdomain (lower-case, at most 253 characters)"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            "its name must be at most 63 characters of letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


@lru_cache(maxsize=65536)
def check_label_value(value: str) -> str | None:
    if value == "" or (len(value) <= 63 and _LABEL_NAME.match(value)):
        return None
    return (
        "a label value must be empty or at most 63 characters of letters, digits, '-', '_' "
        "and '.', starting and ending with a letter or digit"
    )


def check_labels(sink: DiagnosticSink, node: Node | None, what: str = "labels") -> dict[str, str]:
    """A ``labels``-style mapping of string to string, every key and value valid."""
    if node is None or (isinstance(node, Scalar) and node.value is None):
        return {}
    if not isinstance(node, Mapping):
        sink.error("E021", f"{what} must be a mapping, not {type_name(node)}", node.span)
        return {}
    out: dict[str, str] = {}
    for key, value in node.items:
        k = str(key.value)
        ok = True
        reason = check_label_key(k)
        if reason is not None:
            sink.error("E027", f"invalid label key {k!r}: {reason}", key.span)
            ok = False
        if isinstance(value, Scalar) and value.value is None:
            v = ""  # Kubernetes decodes `key:` as the empty string
        else:
            s = expect_str(sink, value, f"the value of label {k!r}")
            if s is None:
                continue
            v = str(s.value)
            reason = check_label_value(v)
            if reason is not None:
                sink.error("E027", f"invalid value {v!r} for label {k!r}: {reason}", value.span)
                ok = False
        if ok:
            out[k] = v
    return out


def _dotted_quad(text: str) -> int | None:
    """The integer of ``a.b.c.d`` exactly as :mod:`ipaddress` accepts it (ASCII digits, no
    leading zeros, each at most 255), or None for anything else (then ipaddress decides)."""
    m = _DOTTED_QUAD.fullmatch(text)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def ip_address(text: str) -> IPAddr:
    """``ipaddress.ip_address`` (raises ValueError alike), several times faster for the common
    dotted quad: a 10,000-pod inventory parses 20,000 of them."""
    n = _dotted_quad(text)
    if n is not None:
        return ipaddress.IPv4Address(n)
    if ":" in text:
        if _PLAIN_V6.fullmatch(text) is not None:
            try:  # the C parser: ipaddress's own is the cost of a dual-stack inventory
                return ipaddress.IPv6Address(int.from_bytes(inet_pton(AF_INET6, text), "big"))
            except OSError:
                pass  # invalid: ipaddress raises its usual error
        return ipaddress.IPv6Address(text)  # what ip_address ends up calling, minus a failed v4 try
    return ipaddress.ip_address(text)


_NETWORKS: dict[str, IPNet] = {}  # feeds and policies repeat CIDRs; networks are immutable


def ip_network(text: str) -> IPNet:
    """``ipaddress.ip_network(text, strict=False)``, with the fast path of :func:`ip_address`."""
    net = _NETWORKS.get(text)
    if net is not None:
        return net
    addr, slash, plen = text.partition("/")
    n = _dotted_quad(addr)
    if n is not None and (not slash or (plen.isascii() and plen.isdigit() and int(plen) <= 32)):
        net = ipaddress.IPv4Network((n, int(plen) if slash else 32), strict=False)
    else:
        net = ipaddress.ip_network(text, strict=False)
    if len(_NETWORKS) >= 100_000:
        _NETWORKS.clear()
    _NETWORKS[text] = net
    return net


def parse_cidr(sink: DiagnosticSink, node: Scalar, what: str = "CIDR") -> IPNet | None:
    """A CIDR or bare IP (→ /32, /128) with host bits masked off, as Calico normalises nets."""
    if not isinstance(node.value, str):
        sink.error("E021", f"{what} must be a string, not {type_name(node)}", node.span)
        return None
    text = node.value.strip()
    try:
        return ip_network(text)
    except ValueError:
        sink.error(
            "E040",
            f"invalid {what} {node.value!r}: expected an address like 10.0.0.0/24 or fd00::/64",
            node.span,
        )
        return None


def parse_ip(sink: DiagnosticSink, node: Scalar, what: str = "IP address") -> IPAddr | None:
    if not isinstance(node.value, str):
        sink.error("E021", f"{what} must be a string, not {type_name(node)}", node.span)
        return None
    try:
        return ip_address(node.value.strip())
    except ValueError:
        sink.error("E040", f"invalid {what} {node.value!r}", node.span)
        return None


def parse_protocol(sink: DiagnosticSink, node: Node, what: str = "protocol") -> int | None:
    """TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (or all lower case), or a number 1–255."""
    if isinstance(node, Scalar):
        v = node.value
        if isinstance(v, int) and not isinstance(v, bool):
            if 1 <= v <= 255:
                return v
            sink.error("E052", f"{what} number must be 1-255, not {v}", node.span)
            return None
        if isinstance(v, str) and v in _PROTOCOL_ALIASES:
            return _PROTOCOL_ALIASES[v]
        if isinstance(v, str):
            from .fields import did_you_mean

            hint = did_you_mean(v, PROTOCOLS)
            sink.error(
                "E052",
                f"unknown {what} {v!r}: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255{hint}",
                node.span,
            )
            return None
    sink.error("E021", f"{what} must be a name or a number, not {type_name(node)}", node.span)
    return None


def _port_number(text: str) -> int | None:
    """The integer in ``text`` (sign allowed, so "-1" is "out of range", not a named port)."""
    return int(text) if _PORT_NUMBER.fullmatch(text) else None


def parse_port(
    sink: DiagnosticSink, node: Node, *, lo: int = 0, allow_named: bool = True
) -> PortSpec | None:
    """One Calico port: an integer, ``"min:max"`` (inclusive), ``"80"``, or a named port."""
    if not isinstance(node, Scalar) or isinstance(node.value, bool) or node.value is None:
        sink.error("E021", f"a port must be a number or a string, not {type_name(node)}", node.span)
        return None
    v = node.value
    if isinstance(v, float):
        sink.error("E050", f"port {v} is not an integer", node.span)
        return None
    if isinstance(v, int):
        if lo <= v <= 65535:
            return PortSpec(v, v, None, node.span)
        sink.error("E050", f"port {v} is out of range {lo}-65535", node.span)
        return None
    text = str(v)
    first, colon, second = text.partition(":")
    a, b = _port_number(first), _port_number(second) if colon else _port_number(first)
    if a is not None and b is not None:
        for n in (a, b):
            if not lo <= n <= 65535:
                sink.error("E050", f"port {n} in {text!r} is out of range {lo}-65535", node.span)
                return None
        if a > b:
            sink.error("E050", f"port range {text!r} has its minimum above its maximum", node.span)
            return None
        return PortSpec(a, b, None, node.span)
    if colon or not allow_named or not _NAMED_PORT.match(text):
        what = "port range" if colon else "port"
        rule = (
            ""
            if colon or not allow_named
            else " (named ports are 1-128 of letters, digits, '_', '.', '-')"
        )
        sink.error("E050", f"invalid {what} {text!r}{rule}", node.span)
        return None
    return PortSpec(0, 0, text, node.span)


def is_numeric(port: PortSpec) -> bool:
    return port.name is None


def supports_ports(protocol: int | None) -> bool:
    return protocol in PORT_PROTOCOLS


def check_interface(
    sink: DiagnosticSink, node: Scalar, *, allow_star: bool = False, allow_empty: bool = False
) -> str | None:
    """An interface name: ≤ 15 characters (the kernel's IFNAMSIZ - 1) of ``[A-Za-z0-9_.:-]``."""
    text = str(node.value)
    if (allow_star and text == "*") or (allow_empty and text == ""):
        return text
    if _IFACE.match(text):
        return text
    reason = unsafe_reason(text)
    if reason is not None:
        sink.error("E026", f"interface name {text!r} must not contain {reason}", node.span)
    else:
        extra = ", or * for every interface" if allow_star else ""
        sink.error(
            "E070",
            f"invalid interface name {text!r}: 1-15 characters of letters, digits, '_', '.', ':', '-'{extra}",
            node.span,
        )
    return None
