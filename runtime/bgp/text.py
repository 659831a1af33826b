"""Making text safe for ``bird.cfg``, and the small value parsers the BGP builder needs.

BIRD's lexer reads a string as ``"`` then anything but ``"`` and newline, then ``"``: there is
no escape sequence at all. So the only safe way to put user text into a BIRD string is to refuse
text that contains a double quote, a newline or another control character. Comments are
laxer but end at a newline; :func:`comment_text` keeps a small allowlist.

>>> bird_string('s3cr3t! pass')
'"s3cr3t! pass"'
>>> try:
...     bird_string('a"; } protocol x {')
... except UnsafeText as e:
...     print(e)
'a"; } protocol x {' cannot be written as a BIRD string (it holds a double quote)
>>> comment_text("node-1\\nprotocol static { route 0.0.0.0/0 blackhole; }")
'node-1_protocol static _ route 0.0.0.0/0 blackhole_ _'
>>> duration_seconds("2m30s"), duration_seconds("1.5h"), duration_seconds("500ms")
(150, 5400, 1)
>>> split_peer_ip("[fd00::1]:1790"), split_peer_ip("10.0.0.1")
((IPv6Address('fd00::1'), 1790), (IPv4Address('10.0.0.1'), None))
>>> protocol_id("fd00::1")
'fd00__1'
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

__all__ = [
    "UnsafeText",
    "bird_string",
    "comment_text",
    "duration_seconds",
    "hash_router_id",
    "protocol_id",
    "split_peer_ip",
    "unsafe_reason",
]

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

_COMMENT_OK = re.compile(r"[^A-Za-z0-9 ._:/@=+,()-]")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_STRING = 1024


class UnsafeText(ValueError):
    """Text that cannot be put into a BIRD string without changing the configuration."""


def unsafe_reason(text: str) -> str | None:
    """Why ``text`` cannot go between double quotes in bird.cfg (None: it can). The reason
    never repeats the text, so it is safe to print for secrets."""
    if '"' in text:
        return "it holds a double quote"
    bad = next((c for c in text if not c.isprintable() or c in "\r\n\t"), None)
    if bad is not None:
        return f"it holds the character U+{ord(bad):04X}"
    if len(text) > MAX_STRING:
        return f"it is {len(text)} characters long, more than {MAX_STRING}"
    return None


def check_bird_string(text: str) -> str:
    """``text`` itself when it can go between double quotes in bird.cfg; else UnsafeText."""
    reason = unsafe_reason(text)
    if reason is not None:
        shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
        raise UnsafeText(f"{shown} cannot be written as a BIRD string ({reason})")
    return text


def bird_string(text: str) -> str:
    """``text`` in double quotes, or UnsafeText (the Jinja filter ``bird_str``)."""
    return f'"{check_bird_string(text)}"'


def comment_text(text: str) -> str:
    """Text for a ``#`` comment: everything outside ``[A-Za-z0-9 ._:/@=+,()-]`` becomes ``_``."""
    return _COMMENT_OK.sub("_", text)[:200]


def duration_seconds(text: str) -> int:
    """A Go duration (``120s``, ``2m30s``, ``1h``) in whole seconds, at least 1."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    return max(1, int(total))


def split_peer_ip(text: str) -> tuple[IPAddr, int | None]:
    """``ip``, ``ip:port`` or ``[v6]:port`` (BGPPeer ``peerIP``) -> (address, port or None)."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad peerIP {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    addr = ipaddress.ip_address(host)
    if port is None:
        return addr, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in peerIP {text!r}")
    return addr, int(port)


def protocol_id(addr: IPAddr | str) -> str:
    """The address part of a protocol name: ``.`` and ``:`` become ``_`` (Calico's naming)."""
    return str(ipaddress.ip_address(str(addr))).replace(".", "_").replace(":", "_")


def hash_router_id(node: str) -> str:
    """An IPv4-shaped router id derived from the node name (``CALICO_ROUTER_ID=hash``).

    The first four bytes of SHA-256 of the name; 0.0.0.0 would be invalid, so it becomes 0.0.0.1.
    """
    digest = hashlib.sha256(node.encode()).digest()[:4]
    value = int.from_bytes(digest, "big") or 1
    return str(ipaddress.IPv4Address(value))
