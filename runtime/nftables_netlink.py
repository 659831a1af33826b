"""Set-element updates sent to the kernel as one nf_tables netlink batch, without ``nft``.

Why: ``nft -f`` with ``add/delete element`` first builds a cache of the table, and for interval
sets (all of Tortie's selector and named-port sets) that means dumping the elements of *every*
interval set of the table (nftables 1.0.6: one ``GETSETELEM`` per set). At 10,000 policies that
is ~1,000 dumps and ~100,000 elements: ~240 ms CPU for a one-line update. The kernel needs none
of it, so this module encodes the agent's set-update script (the text of
``compiler.targets.nftables.render_set_update``) itself and sends it as one batch
(``BATCH_BEGIN``, ``DELSETELEM``/``NEWSETELEM`` messages, ``BATCH_END``): the kernel commits all
of it or, if any message fails, none of it, like ``nft -f``.

Encoding (what ``nft`` 1.0.6 sends for the same commands; the kernel tests compare the listing
after both ways):

* ``type ipv4_addr``/``ipv6_addr; flags interval`` (rbtree): an element ``A`` or ``N/len`` is the
  closed range [lo, hi]: a start element ``lo`` and an end element ``hi + 1`` flagged
  ``NFT_SET_ELEM_INTERVAL_END``.
* ``type ipv4_addr . inet_proto . inet_service; flags interval`` (pipapo): one element with
  ``KEY`` (lo . proto . port) and ``KEY_END`` (hi . proto . port), every field padded to 4 bytes.

Only the shapes ``render_set_update`` writes are accepted; anything else (another statement, a
range touching 0 or the top of the address space, where nft's encoding has special cases) raises
:class:`Unsupported`, and the caller uses ``nft -f`` instead.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NFPROTO_INET = 1
NLA_F_NESTED = 0x8000
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_SET_ELEM_FLAGS = 3
NFTA_SET_ELEM_KEY_END = 10
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 1
CLONE_NEWNET = 0x40000000

PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}

_LINE = re.compile(r"(add|delete) element inet (\S+) (\S+) \{ (.*) \}")


class Unsupported(ValueError):
    """The script has something this encoder does not handle: use ``nft -f``."""


class NetlinkError(OSError):
    """The kernel refused the batch (nothing of it was committed)."""


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # "add" | "delete"
    table: str
    set_name: str
    elements: tuple[bytes, ...]  # encoded NFTA_LIST_ELEM payloads (attributes inside)


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _key(kind: int, value: bytes) -> bytes:
    return _nest(kind, _attr(NFTA_DATA_VALUE, value))


def _range(text: str) -> tuple[int, int, int]:
    """(version, lo, hi) of ``A`` or ``N/len``; no range touching 0 or the top (see module)."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise Unsupported(f"not an address or prefix: {text!r}") from e
    lo = int(net.network_address)
    hi = int(net.broadcast_address)
    top = (1 << net.max_prefixlen) - 1
    if lo == 0 or hi == top:
        raise Unsupported(f"range touches the edge of the address space: {text}")
    return net.version, lo, hi


def _addr_bytes(version: int, value: int) -> bytes:
    return value.to_bytes(4 if version == 4 else 16, "big")


def encode_element(text: str) -> list[bytes]:
    """The NFTA_LIST_ELEM payloads for one element of the script."""
    parts = [p.strip() for p in text.split(" . ")]
    if len(parts) == 1:
        version, lo, hi = _range(parts[0])
        return [
            _key(NFTA_SET_ELEM_KEY, _addr_bytes(version, lo)),
            _key(NFTA_SET_ELEM_KEY, _addr_bytes(version, hi + 1))
            + _attr(NFTA_SET_ELEM_FLAGS, struct.pack(">I", NFT_SET_ELEM_INTERVAL_END)),
        ]
    if len(parts) != 3:
        raise Unsupported(f"element shape not handled: {text!r}")
    version, lo, hi = _range(parts[0])
    proto = PROTOCOLS.get(parts[1])
    if proto is None:
        if not parts[1].isdigit() or int(parts[1]) > 255:
            raise Unsupported(f"protocol not handled: {parts[1]!r}")
        proto = int(parts[1])
    if not parts[2].isdigit() or int(parts[2]) > 65535:
        raise Unsupported(f"port not handled: {parts[2]!r}")
    tail = struct.pack("=B3x", proto) + struct.pack(">H2x", int(parts[2]))
    return [
        _key(NFTA_SET_ELEM_KEY, _addr_bytes(version, lo) + tail)
        + _key(NFTA_SET_ELEM_KEY_END, _addr_bytes(version, hi) + tail)
    ]


def parse(script: str) -> list[Command]:
    """The commands of a set-update script (comments and blank lines skipped)."""
    out = []
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise Unsupported(f"statement not handled: {line[:80]!r}")
        verb, table, set_name, body = m.groups()
        elems: list[bytes] = []
        for text in body.split(","):
            elems += encode_element(text)
        out.append(Command(verb, table, set_name, tuple(elems)))
    return out


def _msg(kind: int, flags: int, seq: int, res_id: int, payload: bytes, family: int) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def batch(commands: list[Command], seq0: int = 1) -> tuple[bytes, list[int]]:
    """The whole batch and the sequence numbers that must be acknowledged."""
    parts = [_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq0, NFNL_SUBSYS_NFTABLES, b"", 0)]
    acks = []
    seq = seq0
    for c in commands:
        seq += 1
        kind = NFT_MSG_NEWSETELEM if c.verb == "add" else NFT_MSG_DELSETELEM
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if c.verb == "add" else 0)
        payload = (
            _attr(NFTA_SET_ELEM_LIST_TABLE, c.table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, c.set_name.encode() + b"\0")
            + _nest(NFTA_SET_ELEM_LIST_ELEMENTS, *(_nest(NFTA_LIST_ELEM, e) for e in c.elements))
        )
        parts.append(_msg((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, 0, payload, NFPROTO_INET))
        acks.append(seq)
    seq += 1
    parts.append(_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, NFNL_SUBSYS_NFTABLES, b"", 0))
    return b"".join(parts), acks


def _socket(netns: str | None) -> socket.socket:
    """A netfilter netlink socket, in ``netns`` (a name under /run/netns) if given."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    result: list[object] = []

    def inside() -> None:
        # setns() changes only this thread, which ends right after the socket exists; the
        # socket stays in the namespace it was created in.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        except OSError as e:
            result.append(e)

    t = threading.Thread(target=inside, name="nft-netns")
    t.start()
    t.join()
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    assert isinstance(got, socket.socket)
    return got


def apply(
    script: str,
    netns: str | None = None,
    timeout: float = 30.0,
    sock: socket.socket | None = None,
) -> int:
    """Apply a set-update script as one batch; returns the number of commands.

    Raises Unsupported (before anything is sent) when the script has a shape this module does not
    encode, NetlinkError when the kernel refused it (then nothing was committed); another OSError
    (no socket, or TimeoutError: no answer, outcome unknown) leaves the read-back to decide.
    ``sock``: a socket from :func:`open_socket` to send on (kept open), else a new one."""
    commands = parse(script)
    if not commands:
        return 0
    if sock is None:
        with open_socket(netns, timeout) as own:
            return apply(script, netns, timeout, own)
    seq0 = next_seq()
    data, acks = batch(commands, seq0)
    ours = range(seq0, seq0 + len(acks) + 2)  # BATCH_BEGIN, the commands, BATCH_END
    for _ in range(len(acks) + 1):  # keep next_seq() past them
        next_seq()
    sock.settimeout(timeout)
    force = getattr(socket, "SO_SNDBUFFORCE", 32)
    if len(data) + 4096 > 200_000:
        sock.setsockopt(socket.SOL_SOCKET, force, len(data) + 65536)
    sock.sendto(data, (0, 0))
    pending = set(acks)
    errors: list[str] = []
    while pending:
        buf = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(buf):
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
            if length < 16:
                break
            if seq not in ours:
                pass  # not an answer to this batch (a shared socket)
            elif kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", buf, off + 16)
                pending.discard(seq)
                if code != 0:
                    i = acks.index(seq) if seq in acks else -1
                    what = (
                        f"{commands[i].verb} element {commands[i].set_name}"
                        if i >= 0
                        else f"message {seq}"
                    )
                    errors.append(f"{what}: {os.strerror(-code)}")
            elif kind == NLMSG_DONE:
                pending.clear()
            off += (length + 3) & ~3
        if errors:
            # The kernel aborted the whole batch; the remaining messages get no ack.
            break
    if errors:
        raise NetlinkError("nf_tables batch refused, nothing committed: " + "; ".join(errors))
    return len(commands)


# -- reading set elements back (NFT_MSG_GETSETELEM dumps) ----------------------------------------

NFT_MSG_GETSETELEM = 13
NLM_F_DUMP = 0x300
_proto_names: dict[int, str] | None = None


def proto_name(number: int) -> str:
    """A protocol as nft prints it: its name in /etc/protocols (``getprotobynumber``), else
    the number."""
    global _proto_names
    if _proto_names is None:
        names: dict[int, str] = {}
        try:
            with open("/etc/protocols", encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split("#", 1)[0].split()
                    if len(fields) >= 2 and fields[1].isdigit():
                        names.setdefault(int(fields[1]), fields[0])
        except OSError:
            names = {6: "tcp", 17: "udp", 132: "sctp"}
        _proto_names = names
    return _proto_names.get(number, str(number))


_NEWLINE = ",\n\t\t\t     "


class RawElement(NamedTuple):
    """One set element of a dump (a named tuple: tens of thousands are made per read-back)."""

    key: bytes
    key_end: bytes | None
    flags: int
    data: bytes | None = None  # NFTA_SET_ELEM_DATA's payload (a map's value), nested


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    """type -> payload of the attributes in buf[off:end] (the last one of each type wins)."""
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or off + alen > end:
            break
        out[atype & 0x3FFF] = buf[off + 4 : off + alen]
        off += (alen + 3) & ~3
    return out


_HDR = struct.Struct("=HH")


def _value(buf: bytes, start: int, end: int) -> bytes | None:
    """The NFTA_DATA_VALUE inside the nest buf[start:end] (a key or key end)."""
    while start + 4 <= end:
        alen, atype = _HDR.unpack_from(buf, start)
        if alen < 4 or start + alen > end:
            return None
        if atype & 0x3FFF == NFTA_DATA_VALUE:
            return buf[start + 4 : start + alen]
        start += (alen + 3) & ~3
    return None


def raw_elements(elements: Iterable[bytes]) -> list[RawElement]:
    """:func:`_elements` of the payloads of single NFTA_LIST_ELEM attributes (as
    ``runtime.nftables_readback.dump_set_decls`` keeps them)."""
    parts = []
    for e in elements:
        parts.append(struct.pack("=HH", len(e) + 4, NFTA_LIST_ELEM) + e + bytes(-len(e) % 4))
    return _elements(b"".join(parts))


def _elements(payload: bytes) -> list[RawElement]:
    """The elements of an NFTA_SET_ELEM_LIST_ELEMENTS payload (one pass, no dict per element:
    a read-back at 10,000 policies parses ~60,000 of them)."""
    out: list[RawElement] = []
    append, unpack = out.append, _HDR.unpack_from
    off, n = 0, len(payload)
    while off + 4 <= n:
        alen, atype = unpack(payload, off)
        if alen < 4:
            break
        end = off + alen
        if atype & 0x3FFF == NFTA_LIST_ELEM:
            key = key_end = data = None
            flags = 0
            p = off + 4
            while p + 4 <= end:
                plen, ptype = unpack(payload, p)
                if plen < 4 or p + plen > end:
                    break
                ptype &= 0x3FFF
                if ptype == NFTA_SET_ELEM_KEY:
                    key = _value(payload, p + 4, p + plen)
                elif ptype == NFTA_SET_ELEM_KEY_END:
                    key_end = _value(payload, p + 4, p + plen)
                elif ptype == NFTA_SET_ELEM_FLAGS and plen >= 8:
                    flags = int.from_bytes(payload[p + 4 : p + 8], "big")
                elif ptype == NFTA_SET_ELEM_DATA:
                    data = payload[p + 4 : p + plen]
                p += (plen + 3) & ~3
            append(RawElement(key or b"", key_end, flags, data))
        off += (alen + 3) & ~3
    return out


def open_socket(netns: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A bound netfilter netlink socket in ``netns``, for :func:`dump_sets` and
    ``runtime.nftables_fast.generation`` to share (creating one in a netns costs a thread)."""
    sock = _socket(netns)
    try:
        sock.settimeout(timeout)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


_seq = 1 << 20


def next_seq() -> int:
    """A sequence number not used before by this process (requests on a shared socket)."""
    global _seq
    _seq = _seq + 1 if _seq < (1 << 31) else 1 << 20
    return _seq


def request(
    sock: socket.socket,
    msg_type: int,
    flags: int,
    payload: bytes,
    what: str,
    family: int = NFPROTO_INET,
) -> list[bytes] | None:
    """Send one nf_tables request (``msg_type`` NFT_MSG_GET*) on ``sock``; the attribute bytes
    of every answer (a dump's messages, or a GET's one message); None when the kernel says
    ENOENT. Raises NetlinkError (``what: reason``) for any other error."""
    seq = next_seq()
    body = struct.pack("=BBH", family, 0, 0) + payload
    kind = (NFNL_SUBSYS_NFTABLES << 8) | msg_type
    sock.sendto(struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body, (0, 0))
    dump = flags & NLM_F_DUMP == NLM_F_DUMP
    out: list[bytes] = []
    while True:
        buf = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(buf):
            length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", buf, off)
            if length < 16:
                raise NetlinkError(f"{what}: malformed netlink message")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, off + 16)
                    if code == -2:  # ENOENT
                        return None
                    if code != 0:
                        raise NetlinkError(f"{what}: {os.strerror(-code)}")
                    return out
                out.append(buf[off + 20 : off + length])
                if not dump:
                    return out
            off += (length + 3) & ~3


def dump_sets(
    names: list[str],
    table: str,
    netns: str | None = None,
    timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> dict[str, list[RawElement]]:
    """name -> the set's elements in the kernel's dump order: one ``NFT_MSG_GETSETELEM`` dump
    per set, all on one socket (``sock`` from :func:`open_socket`, or a new one; no ``nft``
    process). Raises NetlinkError when the kernel refuses a dump (e.g. no such set)."""
    if not names:
        return {}
    if sock is None:
        with open_socket(netns, timeout) as own:
            return dump_sets(names, table, netns, timeout, own)
    out: dict[str, list[RawElement]] = {}
    for name in names:
        payload = _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + _attr(
            NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0"
        )
        what = f"cannot list set {name}"
        msgs = request(sock, NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP, payload, what)
        if msgs is None:
            raise NetlinkError(f"{what}: {os.strerror(2)}")
        elems: list[RawElement] = []
        for msg in msgs:
            a = _attrs(msg, 0, len(msg))
            elems += _elements(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b""))
        out[name] = elems
    return out


def ntop(value: bytes) -> str:
    """An address as nft prints it: glibc's ``inet_ntop`` (which ``socket.inet_ntop`` calls),
    embedded IPv4 forms (``::ffff:1.2.3.4``, ``::1.2.3.4``) included."""
    return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)


def _range_text(lo: bytes, hi: bytes) -> str:
    if lo == hi:
        return ntop(lo)
    a, b = int.from_bytes(lo, "big"), int.from_bytes(hi, "big")
    size = b - a + 1
    if a <= b and size & (size - 1) == 0 and a % size == 0:
        return f"{ntop(lo)}/{len(lo) * 8 - size.bit_length() + 1}"
    return f"{ntop(lo)}-{ntop(hi)}"


def decode(raw: list[RawElement]) -> list[str]:
    """The elements of a set (as :func:`dump_sets` returns them) in the form and order
    ``nft list set`` prints them: ``type ipv4_addr``/``ipv6_addr; flags interval`` (start and
    end elements, sorted) and ``type ADDR . inet_proto . inet_service; flags interval`` (``KEY``
    and ``KEY_END``, in dump order). Raises ValueError for another shape."""
    if not raw:
        return []
    width = len(raw[0].key)
    if all(e.key_end is None for e in raw) and width in (4, 16):
        top = b"\xff" * width
        items = sorted(
            (e.key, 0 if e.flags & NFT_SET_ELEM_INTERVAL_END else 1)
            for e in raw
            if len(e.key) == width
        )
        if len(items) != len(raw):
            raise ValueError("set elements of mixed widths")
        out: list[str] = []
        start: bytes | None = None
        for key, is_start in items:
            if is_start:
                if start is not None:  # open range running to the top
                    raise ValueError("interval start without end")
                start = key
            else:
                if start is None:
                    if not any(key):  # nft's end element at 0: no range starts below it
                        continue
                    raise ValueError("interval end without start")
                hi = (int.from_bytes(key, "big") - 1).to_bytes(width, "big")
                out.append(_range_text(start, hi))
                start = None
        if start is not None:
            out.append(_range_text(start, top))
        return out
    if width in (12, 24):
        n = width - 8
        out = []
        for e in raw:
            if e.key_end is None or len(e.key_end) != width or len(e.key) != width:
                raise ValueError("concatenated element without a matching key end")
            if e.key[n:] != e.key_end[n:]:
                raise ValueError("concatenated element with a range outside its address")
            proto = e.key[n]
            port = int.from_bytes(e.key[n + 4 : n + 6], "big")
            name = proto_name(proto)
            out.append(f"{_range_text(e.key[:n], e.key_end[:n])} . {name} . {port}")
        return out
    raise ValueError(f"set key of {width} bytes not handled")


_VERDICTS = {0xFFFFFFFD: "jump", 0xFFFFFFFC: "goto"}  # NFT_JUMP, NFT_GOTO (negative codes)


def decode_names(raw: list[RawElement]) -> list[str]:
    """The elements of an ``ifname`` set or an ``ifname : verdict`` map (Tortie's ``wl-ifaces``
    and dispatch maps) as the nftables target writes them: ``"cali1"``, ``"cali1" : jump
    CHAIN``. Raises ValueError for another shape."""
    out = []
    for e in raw:
        if len(e.key) != 16 or e.key_end is not None:
            raise ValueError("not an ifname key")
        key = '"' + e.key.rstrip(bytes(1)).decode("ascii") + '"'
        if e.data is None:
            out.append(key)
            continue
        nested = _attrs(e.data, 0, len(e.data)).get(2, b"")  # NFTA_DATA_VERDICT
        verdict = _attrs(nested, 0, len(nested))
        code = struct.unpack(">I", verdict.get(1, bytes(4))[:4])[0]  # NFTA_VERDICT_CODE
        chain = verdict.get(2)  # NFTA_VERDICT_CHAIN
        if code not in _VERDICTS or chain is None:
            raise ValueError(f"verdict {code:#x} not handled")
        target = chain.rstrip(bytes(1)).decode("ascii")
        out.append(f"{key} : {_VERDICTS[code]} {target}")
    return out


def elements_text(elements: list[str], width: int) -> str:
    """The ``elements = { ... }`` line(s) of a set block as nft 1.0.6 prints them (two ipv4
    addresses a line, one for anything else), or "" for an empty set."""
    if not elements:
        return ""
    parts = ["\t\telements = { "]
    per_line = 2 if width == 4 else 1
    for i, e in enumerate(elements):
        if i:
            parts.append(_NEWLINE if i % per_line == 0 else ", ")
        parts.append(e)
    parts.append(" }\n")
    return "".join(parts)


# -- whole-table batches (compiler/targets/nftables/batch.py) -----------------------------------

BATCH_MAGIC = b"tortie-nft-batch 1\n"


def read_batch(data: bytes, script: str) -> bytes | None:
    """The netlink batch of an ``nftables.batch`` file if it encodes exactly ``script`` (the
    SHA-256 in its header) for this machine's byte order; else None (use ``nft -f``). The
    format is written by ``compiler.targets.nftables.batch.with_header``."""
    import hashlib
    import json
    import sys

    if not data.startswith(BATCH_MAGIC):
        return None
    end = data.find(b"\n", len(BATCH_MAGIC))
    if end < 0:
        return None
    try:
        meta = json.loads(data[len(BATCH_MAGIC) : end])
    except ValueError:
        return None
    body = data[end + 1 :]
    if (
        not isinstance(meta, dict)
        or meta.get("bytes") != len(body)
        or meta.get("byteorder") != sys.byteorder
        or meta.get("script_sha256") != hashlib.sha256(script.encode()).hexdigest()
    ):
        return None
    return body


def _batch_messages(data: bytes) -> tuple[int, int, int]:
    """(number of messages, first seq, last seq) of a batch; ValueError if it is malformed:
    BATCH_BEGIN, nf_tables messages, BATCH_END, back to back, sequence numbers counting up by
    one, the last nf_tables message asking for an acknowledgement (send_batch waits for it).
    One pass over the message headers (~50,000 at 10,000 policies)."""
    n = len(data)
    head = struct.Struct("=IH").unpack_from
    off = count = 0
    prev = before = -1  # offsets of the last two messages
    while off < n:
        if off + 16 > n:
            raise ValueError("truncated netlink message")
        length, kind = head(data, off)
        if length < 16 or off + length > n:
            raise ValueError("bad netlink message length")
        if kind >> 8 != NFNL_SUBSYS_NFTABLES and count and off + length < n:
            raise ValueError("a message of another subsystem in the batch")
        count += 1
        before, prev, off = prev, off, off + ((length + 3) & ~3)
    if count < 3:
        raise ValueError("not a BATCH_BEGIN ... BATCH_END batch")
    first_kind, first = struct.unpack_from("=4xH2xI", data, 0)
    last_kind, last = struct.unpack_from("=4xH2xI", data, prev)
    if first_kind != NFNL_MSG_BATCH_BEGIN or last_kind != NFNL_MSG_BATCH_END:
        raise ValueError("not a BATCH_BEGIN ... BATCH_END batch")
    if last - first != count - 1:
        raise ValueError("the batch's sequence numbers do not count up by one")
    (flags,) = struct.unpack_from("=6xH", data, before)  # the message before BATCH_END
    if not flags & NLM_F_ACK:
        raise ValueError("the batch's last message asks for no acknowledgement")
    return count, first, last


_KINDS = {0: "table", 2: "table deletion", 3: "chain", 6: "rule", 9: "set", 12: "set elements"}


def _describe(data: bytes, seq: int) -> str:
    """What the batch message ``seq`` is (``rule in chain X``, ``set Y``), for error messages."""
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            break
        if mseq == seq:
            if kind >> 8 != NFNL_SUBSYS_NFTABLES:
                return "the batch"
            what = _KINDS.get(kind & 0xFF, f"message type {kind & 0xFF}")
            a = _attrs(data, off + 20, off + length)
            # NEWRULE: 2 = chain; NEWCHAIN: 3 = name; NEWSET/NEWSETELEM: 2 = set name
            name = a.get(3 if kind & 0xFF == 3 else 2, b"").rstrip(b"\0")
            text = name.decode(errors="replace")
            if kind & 0xFF == 6:
                return f"a rule in chain {text}"
            return f"{what} {text}".rstrip()
        off += (length + 3) & ~3
    return f"message {seq}"


def send_batch(
    data: bytes,
    netns: str | None = None,
    timeout: float = 60.0,
    sock: socket.socket | None = None,
) -> None:
    """Send a whole nf_tables batch (``BATCH_BEGIN`` … ``BATCH_END``) in one ``sendmsg``.

    The kernel handles the batch inside the ``sendmsg`` call: every message, then the commit,
    or, if anything failed, the abort of all of it. Its answers are queued on the socket by
    the time the call returns: an error for each message that failed (and one for the batch if
    the commit failed), and the acknowledgement the encoder asks for on the last message.
    Raises NetlinkError (nothing committed) if there is any error; OSError if the batch could
    not be sent at all (nothing committed either)."""
    count, first, last = _batch_messages(data)  # refuse a malformed batch before sending
    if sock is None:
        with open_socket(netns, timeout) as own:
            return _send(own, data, timeout, count, first, last)
    return _send(sock, data, timeout, count, first, last)


def _send(
    sock: socket.socket, data: bytes, timeout: float, count: int, first: int, last: int
) -> None:
    force = getattr(socket, "SO_SNDBUFFORCE", 32)
    sock.setsockopt(socket.SOL_SOCKET, force, len(data) + 65536)
    rcvforce = getattr(socket, "SO_RCVBUFFORCE", 33)
    sock.setsockopt(socket.SOL_SOCKET, rcvforce, 1 << 22)
    sock.settimeout(timeout)
    sent = sock.send(data)
    if sent != len(data):
        raise NetlinkError(f"nf_tables batch sent in part ({sent} of {len(data)} bytes)")
    errors: list[str] = []
    acked = False
    sock.setblocking(False)
    try:
        while True:
            try:
                buf = sock.recv(1 << 20)
            except BlockingIOError:
                if acked or errors:
                    break
                # Not expected (the answers are queued before send returns); wait for them.
                sock.settimeout(timeout)
                buf = sock.recv(1 << 20)
                sock.setblocking(False)
            off = 0
            while off + 16 <= len(buf):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
                if length < 16:
                    break
                if kind == NLMSG_ERROR and first <= seq <= last:
                    (code,) = struct.unpack_from("=i", buf, off + 16)
                    if code != 0:
                        errors.append(f"{_describe(data, seq)}: {os.strerror(-code)}")
                    elif seq == last - 1:
                        acked = True
                off += (length + 3) & ~3
    except OSError as e:  # e.g. ENOBUFS: more answers than the socket holds
        errors.append(f"reading the kernel's answers: {e}")
    if errors:
        raise NetlinkError("nf_tables batch refused, nothing committed: " + "; ".join(errors[:5]))
