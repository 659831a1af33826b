"""The script as one nf_tables netlink batch: what ``nft -f`` would send, without ``nft``.

At 10,000 policies ``nft -f nftables.nft`` costs ~2 s, of which ~1.4 s is nft's userspace
(parsing, evaluation, linearisation of 43,000 rules and 133,000 set elements) and ~0.7 s the
kernel's transaction. This module does nft's part once, at compile time, for the script Tortie
itself rendered: :func:`encode` turns the script text into the netlink messages nft 1.0.6 sends
for it (``BATCH_BEGIN``, ``NEWTABLE``/``DELTABLE``/``NEWTABLE``, every ``NEWCHAIN``, every
``NEWSET`` with its ``NEWSETELEM`` messages, every ``NEWRULE``, ``BATCH_END``). The runtime sends
the bytes in one ``sendmsg`` (``runtime.nftables_netlink.send_batch``): the kernel runs the same
all-or-nothing transaction as for ``nft -f``, and what it holds afterwards is the same — the
kernel tests load both ways into two namespaces and compare ``nft list`` and the rules'
bytecode (``nft --debug=netlink list``).

Only the statements Tortie's renderer writes are understood, in the forms it writes them; the
expressions, registers, dependencies (``meta nfproto``/``meta l4proto`` nft adds in front of
``ip``/``icmp`` matches), payload merges and userdata (set types and comments, which ``nft list``
reads back) follow what nft 1.0.6 sends for the same text. Anything else — another statement, a
form with a special case this module does not reproduce (two adjacent payload compares nft
would merge, an anonymous set of another type, a backslash in a string) — raises
:class:`Unencodable`, and the artifact simply has no batch: ``nft -f`` loads the script.

The encoding is for the byte order of the machine that compiles (netlink lengths, marks and
some keys are host-endian); the batch file says which (:func:`header`), and the runtime uses the
script on a machine of the other order.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import sys
from bisect import bisect_right
from collections.abc import Iterator
from functools import lru_cache
from itertools import accumulate, compress, count, filterfalse, repeat
from operator import add, itemgetter, mod, sub

from compiler.perf import paused_gc

__all__ = ["MAGIC", "Unencodable", "encode", "header", "with_header"]


class Unencodable(ValueError):
    """The script has something this encoder does not reproduce; use ``nft -f``."""


# -- netlink constants (linux/netfilter/nf_tables.h, nfnetlink.h) ------------------------------

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWTABLE = 0
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_NEWRULE = 6
NFT_MSG_NEWSET = 9
NFT_MSG_NEWSETELEM = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NFPROTO_INET = 1
NLA_F_NESTED = 0x8000

VERDICT_DROP = 0
VERDICT_ACCEPT = 1
VERDICT_JUMP = -3
VERDICT_GOTO = -4
VERDICT_RETURN = -5

HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50}

# nft datatypes (key type ids) and their key lengths / byte order in set userdata
# (BYTEORDER_HOST_ENDIAN = 1, BYTEORDER_BIG_ENDIAN = 2).
TYPES = {"ipv4_addr": (7, 4, 2), "ipv6_addr": (8, 16, 2), "inet_service": (13, 2, 2)}
IFNAME = (41, 16, 1)
NFT_SET_ANONYMOUS, NFT_SET_CONSTANT, NFT_SET_INTERVAL = 0x1, 0x2, 0x4
NFT_SET_MAP, NFT_SET_CONCAT = 0x8, 0x80
NFT_SET_ELEM_INTERVAL_END = 1
NFT_DATA_VERDICT = 0xFFFFFF00

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "udplite": 136}
CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
LIMIT_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warn": 4, "notice": 5, "info": 6}
LOG_LEVELS["debug"] = 7

# meta keys, payload bases, cmp ops
META_MARK, META_IIFNAME, META_OIFNAME, META_NFPROTO, META_L4PROTO = 3, 6, 7, 15, 16
BASE_NETWORK, BASE_TRANSPORT = 1, 2
CMP_EQ, CMP_NEQ, CMP_LTE, CMP_GTE = 0, 1, 3, 5

ADDR_FIELDS = {  # (keyword, field) -> (payload offset, length)
    ("ip", "saddr"): (12, 4),
    ("ip", "daddr"): (16, 4),
    ("ip6", "saddr"): (8, 16),
    ("ip6", "daddr"): (24, 16),
}
PORT_OFFSETS = {"sport": 0, "dport": 2}

# Userdata nft writes for the kinds of set Tortie declares (libnftnl NFTNL_UDATA_SET_*: key and
# data byte order, the concatenation's last field's type, "data interval"); a comment follows.
_U32 = struct.Struct("=I")
CONCAT_UDATA = bytes.fromhex("000400000000030800040d0000000100")
MAP_UDATA_TAIL = bytes.fromhex("010400000000060400000000")
# Anonymous sets nft builds from ``{ … }`` in a rule: (key type, key length, userdata).
ANON_ICMPV6_TYPE = (
    0x1D,
    1,
    bytes.fromhex("0004020000000314000407000000010c00040e000000010401000000"),
)
_ANON_PROTO_PORT_UDATA = bytes.fromhex(
    "000400000000032e00040d0000000126000e00040900000001060004100000000114000407000000010c00040b0000000104"
)


def _anon_proto_port(field: str) -> tuple[int, int, bytes]:
    # The last byte pair names the th field: 1 sport, 2 dport.
    return 0x30D, 8, _ANON_PROTO_PORT_UDATA + bytes((1 if field == "sport" else 2, 0, 0, 0))


# -- netlink encoding ----------------------------------------------------------------------------

_HDR = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_BE32S = struct.Struct(">i")


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _HDR.pack(n, kind) + payload + b"\0" * (-n % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _u32(kind: int, value: int) -> bytes:
    return _HDR.pack(8, kind) + _BE32.pack(value & 0xFFFFFFFF)


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _data(kind: int, value: bytes) -> bytes:
    return _nest(kind, _attr(1, value))  # NFTA_DATA_VALUE


def _udata_comment(text: str, kind: int = 0) -> bytes:
    """A comment as a userdata TLV: ``kind`` 0 for tables, chains and rules
    (NFTNL_UDATA_*_COMMENT), 7 for sets (NFTNL_UDATA_SET_COMMENT)."""
    raw = text.encode() + b"\0"
    if len(raw) > 255:
        raise Unencodable(f"comment longer than 254 bytes: {text[:40]!r}")
    return bytes((kind, len(raw))) + raw


def _expr(name: str, *attrs: bytes) -> bytes:
    body = _str(1, name)
    if attrs:
        body += _nest(2, *attrs)
    return _nest(1, body)  # NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }


@lru_cache(maxsize=1 << 16)
def _meta_load(key: int, reg: int = 1) -> bytes:
    return _expr("meta", _u32(2, key), _u32(1, reg))


@lru_cache(maxsize=1 << 16)
def _cmp(op: int, value: bytes, reg: int = 1) -> bytes:
    return _expr("cmp", _u32(1, reg), _u32(2, op), _data(3, value))


@lru_cache(maxsize=1 << 16)
def _payload(base: int, offset: int, length: int, reg: int = 1) -> bytes:
    return _expr("payload", _u32(1, reg), _u32(2, base), _u32(3, offset), _u32(4, length))


@lru_cache(maxsize=1 << 16)
def _lookup(name: str, set_id: int, invert: bool = False, verdict: bool = False) -> bytes:
    attrs = [_u32(2, 1)]
    if verdict:
        attrs.append(_u32(3, 0))
    attrs += [_str(1, name), _u32(4, set_id)]
    if invert:
        attrs.append(_u32(5, 1))
    return _expr("lookup", *attrs)


@lru_cache(maxsize=1 << 16)
def _bitwise(mask: bytes, xor: bytes, with_op: bool) -> bytes:
    attrs = [_u32(1, 1), _u32(2, 1)]
    if with_op:
        attrs.append(_u32(6, 0))
    attrs += [_u32(3, len(mask)), _data(4, mask), _data(5, xor)]
    return _expr("bitwise", *attrs)


@lru_cache(maxsize=1 << 16)
def _verdict(code: int, chain: str | None = None) -> bytes:
    if chain is None:
        return _verdict_data(code, b"")
    name = _str(2, chain)  # NFTA_VERDICT_CHAIN, the expression's last bytes
    return _verdict_head(code, len(name)) + name


@lru_cache(maxsize=64)
def _verdict_head(code: int, name_size: int) -> bytes:
    """A jump's or goto's immediate expression up to its chain name, of ``name_size`` bytes."""
    return _verdict_data(code, bytes(name_size))[:-name_size]


def _verdict_data(code: int, chain: bytes) -> bytes:
    inner = _HDR.pack(8, 1) + _BE32S.pack(code) + chain
    return _expr("immediate", _u32(1, 0), _nest(2, _nest(2, inner)))


# nlmsghdr (length, type, flags, seq, port id) and nfgenmsg (family inet, version 0, res_id 0)
_MSG = struct.Struct("=IHHIIBBH")
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.pack("=BBH", NFPROTO_INET, 0, 0)


def _control(kind: int, seq: int) -> bytes:
    """BATCH_BEGIN / BATCH_END: nfgenmsg with res_id = the nf_tables subsystem (big-endian)."""
    body = struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST, seq, 0) + body


def _mark(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)  # meta mark: host byte order


# -- values in the script --------------------------------------------------------------------------

_TOKEN = re.compile(r'"[^"]*"|[^\s"]+')
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|0|[1-9][0-9]*)\Z")  # no leading zeros (octal?)
_NAME = re.compile(r"[A-Za-z0-9_./%-]+\Z")


def _int(text: str, limit: int) -> int:
    if not _NUMBER.match(text):
        raise Unencodable(f"not a number: {text!r}")
    value = int(text, 0)
    if value > limit:
        raise Unencodable(f"number out of range: {text!r}")
    return value


def _name(text: str) -> str:
    if not _NAME.match(text) or len(text) > 255:
        raise Unencodable(f"not a name: {text!r}")
    return text


def _quoted(token: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise Unencodable(f"expected a quoted string, got {token!r}")
    text = token[1:-1]
    if "\\" in text or "$" in text or not text.isascii():
        raise Unencodable(f"string with an escape, variable or non-ASCII: {token!r}")
    return text


def _addr(version: int, text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, text)
    except OSError as e:
        raise Unencodable(f"not an IPv{version} address: {text!r}") from e


_PREFIX_LENGTHS = {str(n): n for n in range(129)}  # the usual spellings; _int reads the others


def _network(version: int, text: str) -> tuple[bytes, int, int, int]:
    """(address bytes, lo, hi, prefix length) of ``A`` or ``A/len`` (a network address: host
    bits zero)."""
    bits = 32 if version == 4 else 128
    addr, _, plen_text = text.partition("/")
    if plen_text:
        plen = _PREFIX_LENGTHS.get(plen_text, 255)
        if plen > bits:
            plen = _int(plen_text, bits)
    else:
        plen = bits
    raw = _addr(version, addr)
    lo = int.from_bytes(raw, "big")
    size = 1 << (bits - plen)
    if lo % size:
        raise Unencodable(f"host bits set in {text!r}")
    return raw, lo, lo + size - 1, plen


def _net(version: int, text: str) -> tuple[int, int, int]:
    """(lo, hi, prefix length) of ``A`` or ``A/len`` (a network address: host bits zero)."""
    return _network(version, text)[1:]


def _proto(text: str) -> int:
    number = PROTOCOLS.get(text)
    return number if number is not None else _int(text, 255)


def _port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    a = _int(lo, 65535)
    b = _int(hi, 65535) if sep else a
    if b < a:
        raise Unencodable(f"empty port range {text!r}")
    return a, b


# -- sets ----------------------------------------------------------------------------------------


class _Set:
    __slots__ = ("name", "set_id", "kind", "key_len", "version")

    def __init__(self, name: str, set_id: int, kind: str, key_len: int, version: int) -> None:
        self.name, self.set_id, self.kind, self.key_len = name, set_id, kind, key_len
        self.version = version


_OPEN = _attr(6, bytes.fromhex("010401000000"))  # NFTNL_UDATA_SET_ELEM_FLAGS: interval open
_END_FLAG = _u32(3, NFT_SET_ELEM_INTERVAL_END)
_ELEMS_MAX = 60_000  # bytes of elements per NEWSETELEM (the nest length is 16 bits)


def _elem_heads(width: int) -> tuple[bytes, bytes, bytes, bytes]:
    """The bytes in front of a ``width``-byte key in a start element, an end element and an open
    start element (whose userdata follows the key), and the key's padding."""
    pad = -width % 4
    value = 4 + width + pad  # NFTA_DATA_VALUE
    key = 4 + value  # NFTA_SET_ELEM_KEY
    head_key = _HDR.pack(key, 1 | NLA_F_NESTED) + _HDR.pack(4 + width, 1)
    start = _HDR.pack(4 + key, 1 | NLA_F_NESTED) + head_key
    end = _HDR.pack(4 + len(_END_FLAG) + key, 1 | NLA_F_NESTED) + _END_FLAG + head_key
    open_ = _HDR.pack(4 + key + len(_OPEN), 1 | NLA_F_NESTED) + head_key
    return start, end, open_, b"\0" * pad


_HEADS = {w: _elem_heads(w) for w in (2, 4, 16)}


def _concat_heads(width: int) -> tuple[bytes, bytes]:
    """The bytes in front of KEY's and of KEY_END's value in a named-port set element."""
    value = 4 + width + 8
    head = _HDR.pack(4 + 2 * (4 + value), 1 | NLA_F_NESTED)
    head += _HDR.pack(4 + value, 1 | NLA_F_NESTED) + _HDR.pack(value, 1)
    return head, _HDR.pack(4 + value, 10 | NLA_F_NESTED) + _HDR.pack(value, 1)


_CONCAT_HEADS = {w: _concat_heads(w) for w in (4, 16)}

# An interval set's range, parsed: (lo, hi, its elements). The elements are a start element and
# an end element (``hi + 1``, flagged), or one open start element for a range reaching the top.
_Range = tuple[int, int, bytes]


def _range(lo: int, hi: int, raw: bytes, width: int) -> _Range:
    """The range ``lo``–``hi`` of ``width``-byte keys; ``raw`` is ``lo`` in ``width`` bytes."""
    start, end, open_, pad = _HEADS[width]
    if hi == (1 << (8 * width)) - 1:
        return lo, hi, open_ + raw + pad + _OPEN
    return lo, hi, start + raw + pad + end + (hi + 1).to_bytes(width, "big") + pad


def _address_range(version: int, text: str) -> _Range:
    raw, lo, hi, _ = _network(version, text)
    return _range(lo, hi, raw, 4 if version == 4 else 16)


_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
# prefix length text -> the number of addresses, "" for none (the spellings _network reads
# faster; any other goes to _address_range)
_SIZES = {
    v: {"": 1, **{str(n): 1 << (bits - n) for n in range(bits + 1)}}
    for v, bits in ((4, 32), (6, 128))
}


def _networks(version: int, texts: list[str]) -> tuple[list[bytes], list[int], list[int]] | None:
    """(lo in bytes, lo, hi + 1) of every ``A`` or ``A/len`` in ``texts``, with one C-level pass
    per step over all of them (the sets hold some 130,000 at 10,000 policies); None if one of
    them is a mistake or a spelling only _network reads (which then says which)."""
    addrs, _, plens = zip(*map(str.partition, texts, repeat("/")), strict=True)
    sizes = list(map(_SIZES[version].get, plens))
    if None in sizes:
        return None
    try:
        raws = list(map(socket.inet_pton, repeat(_FAMILIES[version]), addrs))
    except (OSError, ValueError):
        return None
    los = list(map(int.from_bytes, raws, repeat("big")))
    if any(map(mod, los, sizes)):
        return None
    return raws, los, list(map(add, los, sizes))


def _address_ranges(version: int, texts: list[str]) -> list[_Range]:
    """``[_address_range(version, t) for t in texts]``, faster (see _networks)."""
    width = 4 if version == 4 else 16
    parsed = _networks(version, texts)
    if parsed is None or max(parsed[2]) >> (8 * width):  # (a range reaching the top: open)
        return [_address_range(version, t) for t in texts]
    raws, los, ends = parsed
    start, end, _, _ = _HEADS[width]  # (no padding after 4 or 16 bytes)
    ends_raw = map(int.to_bytes, ends, repeat(width), repeat("big"))
    pairs = map(b"".join, zip(repeat(start), raws, repeat(end), ends_raw))
    return list(zip(los, map(sub, ends, repeat(1)), pairs, strict=True))


def _address_bounds(version: int, texts: list[str]) -> list[tuple[bytes, bytes]]:
    """(lo, hi) in bytes of every ``A`` or ``A/len`` in ``texts``."""
    width = 4 if version == 4 else 16
    parsed = _networks(version, texts)
    if parsed is None:
        out = []
        for text in texts:
            raw, lo, hi, _ = _network(version, text)
            out.append((raw, hi.to_bytes(width, "big")))
        return out
    raws, _, ends = parsed
    his = map(int.to_bytes, map(sub, ends, repeat(1)), repeat(width), repeat("big"))
    return list(zip(raws, his, strict=True))


def _proto_port(text: str) -> bytes:
    """``PROTO . PORT`` of a named-port set element: two fields padded to 4 bytes."""
    proto, sep, port = text.partition(" . ")
    if not sep:
        raise Unencodable(f"element not handled: {text!r}")
    return bytes((_proto(proto), 0, 0, 0)) + _int(port, 65535).to_bytes(2, "big") + b"\0\0"


def _port_range_elements(text: str) -> _Range:
    lo, hi = _port_range(text)
    return _range(lo, hi, lo.to_bytes(2, "big"), 2)


def _ascending(ranges: list[_Range]) -> bool:
    prev_hi = -1
    for lo, hi, _ in ranges:
        if lo <= prev_hi:
            return False
        prev_hi = hi
    return True


def _interval_elements(ranges: list[_Range], width: int) -> list[bytes]:
    """nft's elements for an interval set of ``width``-byte keys: a start element per range and
    an end element (``hi + 1``, flagged) after it; an end element at 0 first unless a range
    starts there; a range reaching the top has no end element, its start is flagged "open".
    Ranges must not overlap (nft refuses that too). A range's elements come as one bytes (see
    :func:`_split_ranges`)."""
    if not _ascending(ranges):
        ranges = sorted(ranges, key=itemgetter(0))
        if not _ascending(ranges):
            raise Unencodable("overlapping intervals in a set")
    out = [r[2] for r in ranges]
    if ranges and ranges[0][0] != 0:
        start, end, open_, pad = _HEADS[width]
        out.insert(0, end + bytes(width) + pad)
    return out


def _split_ranges(elems: list[bytes], width: int) -> list[bytes]:
    """One bytes per element of :func:`_interval_elements`' list (whose start-and-end pairs
    are the only items of their length)."""
    start, end, open_, pad = _HEADS[width]
    cut = len(start) + width + len(pad)
    pair = cut + len(end) + width + len(pad)
    out: list[bytes] = []
    for e in elems:
        if len(e) == pair:
            out += (e[:cut], e[cut:])
        else:
            out.append(e)
    return out


def _split_elements(text: str) -> list[str]:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise Unencodable(f"elements not in braces: {body[:60]!r}")
    return list(filter(None, map(str.strip, body[1:-1].split(","))))


# -- the encoder -----------------------------------------------------------------------------------


class _Batch:
    def __init__(self) -> None:
        self.table = ""
        self.table_attr = b""  # NFTA_*_TABLE, in every message inside the table
        self.parts: list[bytes] = [_control(NFNL_MSG_BATCH_BEGIN, 0)]  # the batch, in pieces
        self.seq = 0  # the last message's sequence number
        self.last = 0  # its header's index in parts
        self.sets: dict[str, _Set] = {}
        self.next_id = 1
        self.chains: list[tuple[str, list[str]]] = []
        # text -> parsed element, per address family (the same addresses are in many sets)
        self.ranges: dict[int, dict[str, _Range]] = {4: {}, 6: {}}
        self.bounds: dict[int, dict[str, tuple[bytes, bytes]]] = {4: {}, 6: {}}
        self.proto_ports: dict[str, bytes] = {}

    # messages ---------------------------------------------------------------------------------

    def add(self, kind: int, flags: int, *payload: bytes) -> None:
        """A message whose payload after the nfgenmsg is the ``payload`` pieces joined."""
        self.seq += 1
        self.last = len(self.parts)
        size = 20 + sum(map(len, payload))
        kind |= NFNL_SUBSYS_NFTABLES << 8
        self.parts.append(_MSG.pack(size, kind, flags, self.seq, 0, NFPROTO_INET, 0, 0))
        self.parts += payload

    def assemble(self) -> bytes:
        """The whole batch; the batch is finished (call once)."""
        if self.seq:  # the runtime waits for one answer, to the last message
            head = bytearray(self.parts[self.last])
            struct.pack_into("=H", head, 6, struct.unpack_from("=H", head, 6)[0] | NLM_F_ACK)
            self.parts[self.last] = bytes(head)
        self.parts.append(_control(NFNL_MSG_BATCH_END, self.seq + 1))
        return b"".join(self.parts)

    # table ------------------------------------------------------------------------------------

    def table_cmd(self, line: str) -> None:
        words = line.split()
        if words[:2] == ["table", "inet"] and len(words) == 4 and words[3] == "{}":
            self.table = _name(words[2])
            self.add(NFT_MSG_NEWTABLE, NLM_F_REQUEST, _str(1, self.table) + _u32(2, 0))
        elif words[:3] == ["delete", "table", "inet"] and len(words) == 4:
            if _name(words[3]) != self.table:
                raise Unencodable("delete of another table")
            self.add(NFT_MSG_DELTABLE, NLM_F_REQUEST, _str(1, self.table))
        else:
            raise Unencodable(f"statement not handled: {line[:80]!r}")

    def table_body(self, lines: list[str], i: int, end: int) -> None:
        """The lines ``lines[i:end]``, between ``table inet NAME {`` and its ``}``."""
        self.table_attr = _str(1, self.table)
        comment = None
        sets: list[tuple[str, str, list[str]]] = []
        while i < end:
            s = lines[i].strip()
            i += 1
            if not s or s[0] == "#":
                continue
            if s.startswith("comment ") and comment is None and not sets and not self.chains:
                comment = _quoted(s[8:].strip())
                continue
            words = s.split()
            if len(words) == 3 and words[0] in ("set", "map", "chain") and words[2] == "{":
                try:
                    close = lines.index("\t}", i, end)
                except ValueError:
                    raise Unencodable(f"{words[0]} {words[1]} not closed") from None
                body = lines[i:close]
                i = close + 1
                if words[0] == "chain":
                    self.chains.append((_name(words[1]), body))
                else:
                    sets.append((words[0], _name(words[1]), body))
                continue
            raise Unencodable(f"table statement not handled: {s[:80]!r}")
        attrs = self.table_attr + _u32(2, 0)
        if comment is not None:
            attrs += _attr(6, _udata_comment(comment))
        self.add(NFT_MSG_NEWTABLE, NLM_F_REQUEST, attrs)
        rules = [(name, self.chain(name, body)) for name, body in self.chains]
        for kind, name, body in sets:
            self.set_decl(kind, name, body)
        self.rules(rules)

    def rules(self, chains: list[tuple[str, list[str]]]) -> None:
        """A NEWRULE message per rule line of every chain: its nlmsghdr, nfgenmsg, table and
        chain, then its expressions and comment, each encoded once per text."""
        enc = _Rules(self)
        encoded, comments = enc.cache.get, enc.comments.get
        parts = self.parts
        head = _NLMSGHDR.pack
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
        flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND
        seq = self.seq
        for name, texts in chains:
            prefix = _NFGENMSG + self.table_attr + _str(2, name)
            size = 16 + len(prefix)
            for text in texts:
                body, sep, tail = text.partition(' comment "')
                if sep:
                    attr = comments(tail) or enc.comment(tail)
                elif text.startswith('comment "'):
                    body, attr = "", enc.comment(text[9:])
                else:
                    attr = b""
                exprs = encoded(body)
                if exprs is None:
                    self.seq = seq
                    exprs = enc.rule(body)  # (may add an anonymous set's messages)
                    seq = self.seq
                seq += 1
                parts += (
                    head(size + len(exprs) + len(attr), kind, flags, seq, 0),
                    prefix,
                    exprs,
                    attr,
                )
        if seq != self.seq:
            self.seq, self.last = seq, len(parts) - 4

    # chains -----------------------------------------------------------------------------------

    def chain(self, name: str, body: list[str]) -> list[str]:
        """Adds the NEWCHAIN message; returns the chain's rule lines."""
        attrs = self.table_attr + _str(3, name)
        hook = comment = None
        k, n = 0, len(body)
        while k < n:  # the header: type and comment lines before the first rule
            s = body[k].strip()
            if s and s[0] != "#":
                if s.startswith("type ") and hook is None:
                    hook = s
                elif s.startswith("comment ") and comment is None:
                    comment = _quoted(s[8:].strip())
                else:
                    break
            k += 1
        rules = [s for s in map(str.strip, body[k:]) if s and s[0] != "#"]
        if hook is not None:
            m = _CHAIN_TYPE.fullmatch(hook)
            if m is None or m[1] not in HOOKS or m[2] not in PRIORITIES:
                raise Unencodable(f"chain header not handled: {hook!r}")
            attrs += _str(7, "filter") + _u32(5, 1 if m[3] == "accept" else 0)
            prio = _HDR.pack(8, 2) + _BE32S.pack(PRIORITIES[m[2]])
            attrs += _nest(4, _u32(1, HOOKS[m[1]]), prio)
        if comment is not None:
            attrs += _attr(12, _udata_comment(comment))
        self.add(NFT_MSG_NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE, attrs)
        return rules

    # sets -------------------------------------------------------------------------------------

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def set_decl(self, kind: str, name: str, body: list[str]) -> None:
        typ = flags_line = comment = None
        elements: str | None = None
        i = 0
        while i < len(body):
            s = body[i].strip()
            i += 1
            if not s or s[0] == "#":
                continue
            if s.startswith("type ") and typ is None:
                typ = s[5:]
            elif s.startswith("flags ") and flags_line is None:
                flags_line = s[6:]
            elif s.startswith("comment ") and comment is None:
                comment = _quoted(s[8:].strip())
            elif s.startswith("elements = ") and elements is None:
                # up to the first line ending with "}", the lines joined by spaces
                parts = [s[11:]]
                if not parts[0].rstrip().endswith("}"):
                    closed = map(str.endswith, map(str.rstrip, body[i:]), repeat("}"))
                    last = next(compress(count(i), closed), None)
                    if last is None:
                        raise Unencodable(f"elements of {name} not closed")
                    parts += map(str.strip, body[i : last + 1])
                    i = last + 1
                elements = " ".join(parts)
            else:
                raise Unencodable(f"set statement not handled: {s[:80]!r}")
        if typ is None:
            raise Unencodable(f"set {name} without a type")
        interval = flags_line == "interval"
        if flags_line is not None and not interval:
            raise Unencodable(f"set flags not handled: {flags_line!r}")
        items = _split_elements(elements) if elements is not None else []
        set_id = self.new_id()
        head = self.table_attr + _str(2, name)
        udata_comment = _udata_comment(comment, 7) if comment is not None else b""
        width = 0  # of an interval set's keys (its elements come in ranges)
        if kind == "map":
            key, sep, data = typ.partition(" : ")
            if data != "verdict" or interval or (key != "ifname" and key not in TYPES):
                raise Unencodable(f"map type not handled: {typ!r}")
            ktype, klen, order = IFNAME if key == "ifname" else TYPES[key]
            attrs = head + _u32(3, NFT_SET_MAP) + _u32(4, ktype) + _u32(5, klen)
            attrs += _u32(6, NFT_DATA_VERDICT) + _u32(7, 0) + _u32(10, set_id)
            udata = bytes((0, 4)) + _U32.pack(order) + MAP_UDATA_TAIL + udata_comment
            attrs += _attr(13, udata)
            self.add(NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE, attrs)
            self.sets[name] = _Set(name, set_id, "map", klen, 0)
            elems = [self._map_element(key, klen, item) for item in items]
        elif typ in TYPES and interval:
            ktype, klen, order = TYPES[typ]
            attrs = head + _u32(3, NFT_SET_INTERVAL) + _u32(4, ktype) + _u32(5, klen)
            attrs += _u32(10, set_id)
            attrs += _attr(13, bytes((0, 4)) + _U32.pack(order) + udata_comment)
            self.add(NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE, attrs)
            version = 4 if typ == "ipv4_addr" else 6 if typ == "ipv6_addr" else 0
            self.sets[name] = _Set(name, set_id, typ, klen, version)
            if version:
                parsed = self.ranges[version]
                new = list(filterfalse(parsed.__contains__, items))
                if new:
                    parsed.update(zip(new, _address_ranges(version, new), strict=True))
                ranges = list(map(parsed.__getitem__, items))
            else:
                ranges = [_port_range_elements(item) for item in items]
            elems = _interval_elements(ranges, klen)
            width = klen
        elif typ == "ifname" and not interval:
            ktype, klen, order = IFNAME
            attrs = head + _u32(3, 0) + _u32(4, ktype) + _u32(5, klen) + _u32(10, set_id)
            attrs += _attr(13, bytes((0, 4)) + _U32.pack(order) + udata_comment)
            self.add(NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE, attrs)
            self.sets[name] = _Set(name, set_id, "ifname", klen, 0)
            elems = [_nest(1, _data(1, _ifname(item))) for item in items]
        elif (
            typ
            in ("ipv4_addr . inet_proto . inet_service", "ipv6_addr . inet_proto . inet_service")
            and interval
        ):
            version = 4 if typ.startswith("ipv4") else 6
            alen = 4 if version == 4 else 16
            ktype = ((7 if version == 4 else 8) << 12) | (12 << 6) | 13
            attrs = head + _u32(3, NFT_SET_INTERVAL | NFT_SET_CONCAT) + _u32(4, ktype)
            attrs += _u32(5, alen + 8) + _u32(10, set_id)
            attrs += _nest(9, _nest(2, *(_nest(1, _u32(1, n)) for n in (alen, 1, 2))))
            attrs += _attr(13, CONCAT_UDATA + udata_comment)
            self.add(NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE, attrs)
            self.sets[name] = _Set(name, set_id, "np", alen + 8, version)
            elems = self._concat_elements(version, items)
        else:
            raise Unencodable(f"set type not handled: {typ!r} (flags {flags_line!r})")
        self.elements(name, set_id, elems, width)

    def elements(self, name: str, set_id: int, elems: list[bytes], width: int = 0) -> None:
        """NEWSETELEM messages for ``elems``, as many as their size needs. ``width``: that of an
        interval set's keys, whose ``elems`` are :func:`_interval_elements`' (in ranges)."""
        if not elems:
            return
        head = self.table_attr + _str(2, name) + _u32(4, set_id)
        flags = NLM_F_REQUEST | NLM_F_CREATE
        data = b"".join(elems)
        if len(data) <= _ELEMS_MAX:  # one message (most sets)
            self.add(NFT_MSG_NEWSETELEM, flags, head, _attr(3 | NLA_F_NESTED, data))
            return
        if width:
            elems = _split_ranges(elems, width)
        for chunk in _chunks(elems):
            self.add(NFT_MSG_NEWSETELEM, flags, head, _attr(3 | NLA_F_NESTED, b"".join(chunk)))

    def _concat_elements(self, version: int, items: list[str]) -> list[bytes]:
        """The elements of a named-port set (see _concat_element), with one C-level pass per
        step over all of them (the sets hold some 30,000 at 10,000 policies)."""
        if not items:
            return []
        width = 4 if version == 4 else 16
        head, head_end = _CONCAT_HEADS[width]
        bounds, proto_ports = self.bounds[version], self.proto_ports
        addrs, seps, tails = zip(*map(str.partition, items, repeat(" . ")), strict=True)
        try:
            if "" in seps:
                raise Unencodable("element not handled")
            for tail in set(filterfalse(proto_ports.__contains__, tails)):
                proto_ports[tail] = _proto_port(tail)
            new = list(filterfalse(bounds.__contains__, addrs))
            if new:
                bounds.update(zip(new, _address_bounds(version, new), strict=True))
        except ValueError:  # (Unencodable too) a mistake: the first one, as the items come
            for item in items:
                self._concat_element(version, item)
            raise
        lo, hi = zip(*map(bounds.__getitem__, addrs), strict=True)
        pp = list(map(proto_ports.__getitem__, tails))
        return list(map(b"".join, zip(repeat(head), lo, pp, repeat(head_end), hi, pp)))

    def _concat_element(self, version: int, item: str) -> bytes:
        """``A[/len] . PROTO . PORT`` of a named-port set: KEY (lo) and KEY_END (hi), every field
        padded to 4 bytes."""
        addr, sep, tail = item.partition(" . ")
        proto, sep2, port = tail.partition(" . ")
        if not sep or not sep2:
            raise Unencodable(f"element not handled: {item!r}")
        bounds = self.bounds[version].get(addr)
        if bounds is None:
            bounds = self.bounds[version][addr] = _address_bounds(version, [addr])[0]
        pp = self.proto_ports.get(tail)
        if pp is None:
            pp = self.proto_ports[tail] = _proto_port(tail)
        head = _CONCAT_HEADS[4 if version == 4 else 16]
        return head[0] + bounds[0] + pp + head[1] + bounds[1] + pp

    def _map_element(self, key_type: str, klen: int, item: str) -> bytes:
        key, sep, verdict = item.partition(" : ")
        if not sep:
            raise Unencodable(f"map element not handled: {item!r}")
        if key_type == "ifname":
            kbytes = _ifname(key)
        else:
            version = 4 if key_type == "ipv4_addr" else 6
            kbytes = _addr(version, key)
        words = verdict.split()
        if len(words) == 2 and words[0] in ("jump", "goto"):
            code = VERDICT_JUMP if words[0] == "jump" else VERDICT_GOTO
            inner = _HDR.pack(8, 1) + _BE32S.pack(code) + _str(2, _name(words[1]))
        elif len(words) == 1 and words[0] in ("accept", "drop"):
            code = VERDICT_ACCEPT if words[0] == "accept" else VERDICT_DROP
            inner = _HDR.pack(8, 1) + _BE32S.pack(code)
        else:
            raise Unencodable(f"map verdict not handled: {verdict!r}")
        return _nest(1, _data(1, kbytes), _nest(2, _nest(2, inner)))


_CHAIN_TYPE = re.compile(r"type filter hook (\w+) priority (\w+); policy (accept|drop);")


def _ifname(token: str) -> bytes:
    name = _quoted(token).encode()
    if not name or len(name) > 15 or b"*" in name:
        raise Unencodable(f"interface name not handled: {token!r}")
    return name.ljust(16, b"\0")


def _chunks(elems: list[bytes]) -> Iterator[list[bytes]]:
    """Runs of elements of at most _ELEMS_MAX bytes in all (an element bigger than that: alone)."""
    ends = list(accumulate(map(len, elems)))  # bytes up to and including each element
    first = base = 0
    while first < len(elems):
        k = max(bisect_right(ends, base + _ELEMS_MAX, first), first + 1)
        yield elems[first:k]
        first, base = k, ends[k - 1]


# -- rules ---------------------------------------------------------------------------------------

_NFPROTO = {"ipv4": b"\x02", "ipv6": b"\x0a"}
_VERDICTS = {"accept": VERDICT_ACCEPT, "drop": VERDICT_DROP, "return": VERDICT_RETURN}
_GUARD = re.compile(r"meta mark & (0x[0-9a-f]{8}) == (0x[0-9a-f]{8}) (jump|goto) (\S+)\Z")
# Statements whose expressions and effect depend on more than their tokens and the rule's state:
# they look at the tokens after theirs (and make anonymous sets).
_NOT_CACHED = frozenset(("icmp", "icmpv6", "reject"))
_ZEROS = bytes(8)


class _Rule:
    """One rule being encoded: its expressions, the dependencies nft would otherwise add (it puts
    ``meta nfproto``/``meta l4proto`` in front of ``ip``/``icmp`` matches that lack one), and the
    last payload compare (nft merges two adjacent ones)."""

    __slots__ = ("exprs", "nfproto", "l4proto", "last_eq", "anon")

    def __init__(self) -> None:
        self.exprs: list[bytes] = []
        self.nfproto: int | None = None  # the family a `meta nfproto` compare established
        self.l4proto = False
        self.last_eq: tuple[int, int] | None = None  # (base, end offset) of a payload == value
        self.anon = False

    def eq_payload(self, base: int, offset: int, length: int) -> None:
        if self.last_eq == (base, offset):
            raise Unencodable("adjacent payload compares (nft merges them)")
        self.last_eq = (base, offset + length)


class _Rules:
    def __init__(self, batch: _Batch) -> None:
        self.batch = batch
        self.cache: dict[str, bytes] = {}  # rule text (without comment) -> rule()
        self.comments: dict[str, bytes] = {}  # comment text after its '"' -> comment()
        # tier guard text up to the chain name -> (its mark match, its verdict code)
        self.guards: dict[str, tuple[bytes, int]] = {}
        # (rule state, *the statement's tokens) -> (its expressions, the rule state after it);
        # a rule state: (nfproto, l4proto, last_eq) of _Rule
        self.statements: dict[tuple, tuple[bytes, tuple]] = {}
        self.sizes: dict[tuple[str, ...], int] = {}  # a statement's first 3 tokens -> its size

    def rule(self, body: str) -> bytes:
        """The NFTA_RULE_EXPRESSIONS attribute of one rule line (without its comment)."""
        # The commonest rule by far (tier guards): no tokenising. A guard is its head (the mark
        # match and jump/goto, known after the first) and the chain name.
        head, _, chain = body.rpartition(" ")
        guard = self.guards.get(head)
        if guard is None or not _NAME.match(chain) or len(chain) > 255:
            guard = None
            g = _GUARD.match(body)
            if g is not None:
                mark_match = (
                    _meta_load(META_MARK)
                    + _bitwise(_mark(int(g[1], 16)), bytes(4), True)
                    + _cmp(CMP_EQ, _mark(int(g[2], 16)))
                )
                code = VERDICT_JUMP if g[3] == "jump" else VERDICT_GOTO
                guard = self.guards[head] = (mark_match, code)
                chain = _name(g[4])
        if guard is not None:
            out = guard[0] + _verdict(guard[1], chain)
            anon = False
        else:
            r = _Rule()
            tokens = body.split() if '"' not in body else _TOKEN.findall(body)
            i, n = 0, len(tokens)
            # Most statements recur in many rules. The expressions a statement adds and the
            # rule state after it depend only on its tokens and the state before it (but for
            # _NOT_CACHED's), so they are cached by both (see _statement).
            state = (r.nfproto, r.l4proto, r.last_eq)
            sizes, statements = self.sizes.get, self.statements.get
            while i < n:
                size = sizes(tuple(tokens[i : i + 3]))
                if size is not None:
                    key = (state, *tokens[i : i + size])
                    done = statements(key)
                    if done is not None:
                        r.exprs.append(done[0])
                        state = done[1]
                        i += len(key) - 1
                        continue
                r.nfproto, r.l4proto, r.last_eq = state
                before = len(r.exprs)
                i = self._statement(tokens, i, r)
                if len(r.exprs) == before:
                    raise Unencodable(f"statement without expressions in {body[:80]!r}")
                state = (r.nfproto, r.l4proto, r.last_eq)
            out = b"".join(r.exprs)
            anon = r.anon
        out = _HDR.pack(4 + len(out), 4 | NLA_F_NESTED) + out
        if not anon:  # a rule with an anonymous set gets a new set each time
            self.cache[body] = out
        return out

    def comment(self, tail: str) -> bytes:
        """The NFTA_RULE_USERDATA attribute of ``comment "TAIL`` (TAIL ends with its '"'):
        ``_attr(7, _udata_comment(_quoted('"' + tail)))``, in one go."""
        text = _quoted('"' + tail)
        n = len(text) + 1  # (ASCII)
        if n > 255:
            _udata_comment(text)  # raises
        size = 6 + n
        out = _HDR.pack(size, 7) + bytes((0, n)) + text.encode() + _ZEROS[: 1 + -size % 4]
        self.comments[tail] = out
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _set(self, token: str, *kinds: str) -> _Set:
        if not token.startswith("@"):
            raise Unencodable(f"expected @set, got {token!r}")
        s = self.batch.sets.get(token[1:])
        if s is None or s.kind not in kinds:
            raise Unencodable(f"unknown set, or a set of another type: {token!r}")
        return s

    def _anon(self, key_type: int, key_len: int, udata: bytes, keys: list[bytes]) -> _Set:
        """An anonymous constant set, created just before the rule that uses it (as nft does)."""
        b = self.batch
        set_id = b.new_id()
        attrs = _str(1, b.table) + _str(2, "__set%d")
        attrs += _u32(3, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT) + _u32(4, key_type)
        attrs += _u32(5, key_len) + _u32(10, set_id) + _nest(9, _u32(1, len(keys)))
        attrs += _attr(13, udata)
        b.add(NFT_MSG_NEWSET, NLM_F_REQUEST | NLM_F_CREATE, attrs)
        b.elements("__set%d", set_id, [_nest(1, _data(1, k)) for k in keys])
        return _Set("__set%d", set_id, "anon", key_len, 0)

    @staticmethod
    def _op(tokens: list[str], i: int) -> tuple[bool, int]:
        """(negated, index of the value) for an optional ``!=``."""
        if i < len(tokens) and tokens[i] == "!=":
            return True, i + 1
        return False, i

    @staticmethod
    def _braced(tokens: list[str], i: int) -> tuple[list[str], int]:
        """The comma-separated items of ``{ a, b . c }`` starting at tokens[i] == "{"."""
        if i >= len(tokens) or tokens[i] != "{":
            raise Unencodable("expected {")
        j = i + 1
        while j < len(tokens) and tokens[j] != "}":
            j += 1
        if j == len(tokens):
            raise Unencodable("{ not closed")
        items = " ".join(tokens[i + 1 : j]).replace(" ,", ",").split(",")
        return [x.strip() for x in items if x.strip()], j + 1

    def _nfproto_dep(self, r: _Rule, version: int) -> None:
        if r.nfproto is None:
            r.exprs.append(
                _meta_load(META_NFPROTO) + _cmp(CMP_EQ, b"\x02" if version == 4 else b"\x0a")
            )
            r.nfproto = version

    def _l4proto_dep(self, r: _Rule, proto: int) -> None:
        if not r.l4proto:
            r.exprs.append(_meta_load(META_L4PROTO) + _cmp(CMP_EQ, bytes((proto,))))
            r.l4proto = True

    # -- statements ------------------------------------------------------------------------

    def _statement(self, t: list[str], i: int, r: _Rule) -> int:
        """Encodes the statement at ``t[i]``; returns the index after it. Caches the result
        for rule(): by the state before and the statement's tokens, the expressions it added
        and the state after; ``sizes`` remembers how many tokens the last statement that began
        with the same three had (a guess: a cached entry matches only the very tokens a
        statement was encoded from, whatever follows them)."""
        state = (r.nfproto, r.l4proto, r.last_eq)
        word = t[i]
        handler = _HANDLERS.get(word)
        if handler is None:
            raise Unencodable(f"statement not handled: {' '.join(t[i : i + 4])!r}")
        before = r.last_eq
        first, next_id = len(r.exprs), self.batch.next_id
        j = handler(self, t, i, r)
        if (
            r.last_eq is before
            and before is not None
            and word not in ("ip", "ip6", "th", "icmp", "icmpv6")
        ):
            r.last_eq = None  # something else came between two payload compares
        if word not in _NOT_CACHED and self.batch.next_id == next_id:  # (no anonymous set)
            self.sizes[tuple(t[i : i + 3])] = j - i
            exprs = b"".join(r.exprs[first:])
            self.statements[(state, *t[i:j])] = (exprs, (r.nfproto, r.l4proto, r.last_eq))
        return j

    def _meta(self, t: list[str], i: int, r: _Rule) -> int:
        key = t[i + 1] if i + 1 < len(t) else ""
        if key == "nfproto":
            neg, j = self._op(t, i + 2)
            value = _NFPROTO.get(t[j]) if j < len(t) else None
            if value is None:
                raise Unencodable(f"meta nfproto value not handled: {t[j : j + 1]}")
            r.exprs.append(_meta_load(META_NFPROTO) + _cmp(CMP_NEQ if neg else CMP_EQ, value))
            if not neg and r.nfproto is None:
                r.nfproto = 4 if t[j] == "ipv4" else 6
            return j + 1
        if key == "l4proto":
            if t[i + 2 : i + 4] == [".", "th"] and i + 4 < len(t):
                field = t[i + 4]
                if field not in PORT_OFFSETS:
                    raise Unencodable(f"th field not handled: {field!r}")
                items, j = self._braced(t, i + 5)
                keys = []
                for item in items:
                    parts = item.split(" . ")
                    if len(parts) != 2:
                        raise Unencodable(f"element not handled: {item!r}")
                    keys.append(
                        bytes((_proto(parts[0]), 0, 0, 0))
                        + _int(parts[1], 65535).to_bytes(2, "big")
                        + b"\0\0"
                    )
                s = self._anon(*_anon_proto_port(field), keys)
                r.anon = True
                r.exprs.append(
                    _meta_load(META_L4PROTO)
                    + _payload(BASE_TRANSPORT, PORT_OFFSETS[field], 2, 9)
                    + _lookup(s.name, s.set_id)
                )
                return j
            neg, j = self._op(t, i + 2)
            if j >= len(t):
                raise Unencodable("meta l4proto without a value")
            proto = _proto(t[j])
            r.exprs.append(
                _meta_load(META_L4PROTO) + _cmp(CMP_NEQ if neg else CMP_EQ, bytes((proto,)))
            )
            r.l4proto = r.l4proto or not neg
            return j + 1
        if key == "mark":
            rest = t[i + 2 : i + 7]
            if rest[:4] == ["set", "meta", "mark", "|"] and len(rest) == 5:
                v = _int(rest[4], 0xFFFFFFFF)
                mask, xor = ~v & 0xFFFFFFFF, v
            elif rest[:4] == ["set", "meta", "mark", "&"] and len(rest) == 5:
                mask, xor = _int(rest[4], 0xFFFFFFFF), 0
            elif rest[:1] == ["&"] and len(rest) >= 4 and rest[2] in ("==", "!="):
                m = _int(rest[1], 0xFFFFFFFF)
                v = _int(rest[3], 0xFFFFFFFF)
                r.exprs.append(
                    _meta_load(META_MARK)
                    + _bitwise(_mark(m), bytes(4), True)
                    + _cmp(CMP_EQ if rest[2] == "==" else CMP_NEQ, _mark(v))
                )
                return i + 6
            else:
                raise Unencodable(f"meta mark statement not handled: {' '.join(t[i : i + 7])!r}")
            r.exprs.append(
                _meta_load(META_MARK)
                + _bitwise(_mark(mask), _mark(xor), True)
                + _expr("meta", _u32(2, META_MARK), _u32(3, 1))
            )
            return i + 7
        raise Unencodable(f"meta key not handled: {key!r}")

    def _ip(self, t: list[str], i: int, r: _Rule) -> int:
        kw = t[i]
        field = t[i + 1] if i + 1 < len(t) else ""
        where = ADDR_FIELDS.get((kw, field))
        if where is None:
            raise Unencodable(f"{kw} field not handled: {field!r}")
        version = 4 if kw == "ip" else 6
        offset, length = where
        self._nfproto_dep(r, version)
        load = _payload(BASE_NETWORK, offset, length)
        nxt = t[i + 2] if i + 2 < len(t) else ""
        if nxt == ".":
            # addr . meta l4proto . th PORT [!=] @set (a named-port set)
            if t[i + 3 : i + 6] != ["meta", "l4proto", "."] or i + 7 >= len(t) or t[i + 6] != "th":
                raise Unencodable(f"concatenation not handled: {' '.join(t[i : i + 9])!r}")
            port = t[i + 7]
            if port not in PORT_OFFSETS:
                raise Unencodable(f"th field not handled: {port!r}")
            neg, j = self._op(t, i + 8)
            s = self._set(t[j] if j < len(t) else "", "np")
            if s.version != version:
                raise Unencodable(f"set {s.name} of another family")
            reg2, reg3 = (9, 10) if version == 4 else (2, 13)
            r.exprs.append(
                load
                + _meta_load(META_L4PROTO, reg2)
                + _expr(
                    "byteorder", _u32(1, reg2), _u32(2, reg2), _u32(3, 1), _u32(4, 1), _u32(5, 2)
                )
                + _payload(BASE_TRANSPORT, PORT_OFFSETS[port], 2, reg3)
                + _lookup(s.name, s.set_id, neg)
            )
            return j + 1
        if nxt == "vmap":
            s = self._set(t[i + 3] if i + 3 < len(t) else "", "map")
            r.exprs.append(load + _lookup(s.name, s.set_id, verdict=True))
            return i + 4
        neg, j = self._op(t, i + 2)
        value = t[j] if j < len(t) else ""
        if value.startswith("@"):
            s = self._set(value, "ipv4_addr" if version == 4 else "ipv6_addr")
            r.exprs.append(load + _lookup(s.name, s.set_id, neg))
            return j + 1
        lo, _, plen = _net(version, value)
        op = CMP_NEQ if neg else CMP_EQ
        raw = lo.to_bytes(length, "big")
        if plen == 0:
            raise Unencodable(f"match on a /0 prefix: {value!r}")
        if plen % 8 == 0:
            # nft loads only the prefix's bytes
            r.exprs.append(_payload(BASE_NETWORK, offset, plen // 8) + _cmp(op, raw[: plen // 8]))
            if not neg:
                r.eq_payload(BASE_NETWORK, offset, plen // 8)
        else:
            mask = ((1 << (8 * length)) - (1 << (8 * length - plen))).to_bytes(length, "big")
            r.exprs.append(load + _bitwise(mask, bytes(length), False) + _cmp(op, raw))
        return j + 1

    def _th(self, t: list[str], i: int, r: _Rule) -> int:
        field = t[i + 1] if i + 1 < len(t) else ""
        if field not in PORT_OFFSETS:
            raise Unencodable(f"th field not handled: {field!r}")
        offset = PORT_OFFSETS[field]
        load = _payload(BASE_TRANSPORT, offset, 2)
        neg, j = self._op(t, i + 2)
        value = t[j] if j < len(t) else ""
        if value.startswith("@"):
            s = self._set(value, "inet_service")
            r.exprs.append(load + _lookup(s.name, s.set_id, neg))
            return j + 1
        lo, hi = _port_range(value)
        a, b = lo.to_bytes(2, "big"), hi.to_bytes(2, "big")
        if lo == hi:
            r.exprs.append(load + _cmp(CMP_NEQ if neg else CMP_EQ, a))
            if not neg:
                r.eq_payload(BASE_TRANSPORT, offset, 2)
        elif neg:
            r.exprs.append(
                load + _expr("range", _u32(1, 1), _u32(2, CMP_NEQ), _data(3, a), _data(4, b))
            )
        else:
            r.exprs.append(load + _cmp(CMP_GTE, a) + _cmp(CMP_LTE, b))
        return j + 1

    def _icmp(self, t: list[str], i: int, r: _Rule) -> int:
        kw = t[i]
        proto = 1 if kw == "icmp" else 58
        self._l4proto_dep(r, proto)
        field = t[i + 1] if i + 1 < len(t) else ""
        if (
            field == "type"
            and t[i + 2 : i + 6] == [".", kw, "code", "!="]
            or (field == "type" and t[i + 2 : i + 5] == [".", kw, "code"])
        ):
            neg, j = self._op(t, i + 5)
            items, j = self._braced(t, j)
            keys = []
            for item in items:
                parts = item.split(" . ")
                if len(parts) != 2:
                    raise Unencodable(f"element not handled: {item!r}")
                keys.append(bytes((_int(parts[0], 255), 0, 0, 0, _int(parts[1], 255), 0, 0, 0)))
            ktype, udata = (
                (0x3A0, _ICMP_TYPE_CODE_UDATA) if proto == 1 else (0x761, _ICMPV6_TYPE_CODE_UDATA)
            )
            s = self._anon(ktype, 8, udata, keys)
            r.anon = True
            r.exprs.append(
                _payload(BASE_TRANSPORT, 0, 1)
                + _payload(BASE_TRANSPORT, 1, 1, 9)
                + _lookup(s.name, s.set_id, neg)
            )
            return j
        if field not in ("type", "code"):
            raise Unencodable(f"{kw} field not handled: {field!r}")
        offset = 0 if field == "type" else 1
        neg, j = self._op(t, i + 2)
        value = t[j] if j < len(t) else ""
        if value == "{":
            if neg or kw != "icmpv6" or field != "type":
                raise Unencodable("anonymous set of ICMP values not handled")
            items, j = self._braced(t, j)
            s = self._anon(*ANON_ICMPV6_TYPE, [bytes((_int(x, 255),)) for x in items])
            r.anon = True
            r.exprs.append(_payload(BASE_TRANSPORT, 0, 1) + _lookup(s.name, s.set_id))
            return j
        v = _int(value, 255)
        if (
            field == "type"
            and not neg
            and t[j + 1 : j + 3] == [kw, "code"]
            and j + 3 < len(t)
            and t[j + 3] != "!="
        ):
            # nft merges "type N code M" into one two-byte compare
            code = _int(t[j + 3], 255)
            r.exprs.append(_payload(BASE_TRANSPORT, 0, 2) + _cmp(CMP_EQ, bytes((v, code))))
            r.eq_payload(BASE_TRANSPORT, 0, 2)
            return j + 4
        r.exprs.append(
            _payload(BASE_TRANSPORT, offset, 1) + _cmp(CMP_NEQ if neg else CMP_EQ, bytes((v,)))
        )
        if not neg:
            r.eq_payload(BASE_TRANSPORT, offset, 1)
        return j + 1

    def _ct(self, t: list[str], i: int, r: _Rule) -> int:
        if t[i + 1 : i + 2] != ["state"] or i + 2 >= len(t) or t[i + 2] == "!=":
            raise Unencodable(f"ct statement not handled: {' '.join(t[i : i + 4])!r}")
        bits = 0
        for name in t[i + 2].split(","):
            if name not in CT_STATES:
                raise Unencodable(f"ct state not handled: {name!r}")
            bits |= CT_STATES[name]
        r.exprs.append(
            _expr("ct", _u32(2, 0), _u32(1, 1))
            + _bitwise(_mark(bits), bytes(4), False)
            + _cmp(CMP_NEQ, bytes(4))
        )
        return i + 3

    def _ifname(self, t: list[str], i: int, r: _Rule) -> int:
        key = META_IIFNAME if t[i] == "iifname" else META_OIFNAME
        nxt = t[i + 1] if i + 1 < len(t) else ""
        if nxt == "vmap":
            s = self._set(t[i + 2] if i + 2 < len(t) else "", "map")
            r.exprs.append(_meta_load(key) + _lookup(s.name, s.set_id, verdict=True))
            return i + 3
        neg, j = self._op(t, i + 1)
        s = self._set(t[j] if j < len(t) else "", "ifname")
        r.exprs.append(_meta_load(key) + _lookup(s.name, s.set_id, neg))
        return j + 1

    def _fib(self, t: list[str], i: int, r: _Rule) -> int:
        if t[i : i + 5] != ["fib", "daddr", "type", "!=", "local"]:
            raise Unencodable(f"fib statement not handled: {' '.join(t[i : i + 5])!r}")
        r.exprs.append(
            _expr("fib", _u32(3, 2), _u32(2, 3), _u32(1, 1)) + _cmp(CMP_NEQ, _U32.pack(2))
        )
        return i + 5

    def _limit(self, t: list[str], i: int, r: _Rule) -> int:
        m = re.fullmatch(r"(\d+)/(\w+)", t[i + 2]) if i + 2 < len(t) else None
        if t[i + 1 : i + 2] != ["rate"] or m is None or m[2] not in LIMIT_UNITS:
            raise Unencodable(f"limit not handled: {' '.join(t[i : i + 7])!r}")
        if t[i + 3 : i + 4] != ["burst"] or t[i + 5 : i + 6] != ["packets"]:
            raise Unencodable(f"limit not handled: {' '.join(t[i : i + 7])!r}")
        rate = _int(m[1], 0xFFFFFFFF)
        burst = _int(t[i + 4], 0xFFFFFFFF)
        r.exprs.append(
            _expr(
                "limit",
                _attr(1, struct.pack(">Q", rate)),
                _attr(2, struct.pack(">Q", LIMIT_UNITS[m[2]])),
                _u32(3, burst),
                _u32(4, 0),
                _u32(5, 0),
            )
        )
        return i + 6

    def _log(self, t: list[str], i: int, r: _Rule) -> int:
        if t[i + 1 : i + 2] != ["prefix"] or t[i + 3 : i + 4] != ["level"] or i + 4 >= len(t):
            raise Unencodable(f"log not handled: {' '.join(t[i : i + 5])!r}")
        level = LOG_LEVELS.get(t[i + 4])
        if level is None:
            raise Unencodable(f"log level not handled: {t[i + 4]!r}")
        r.exprs.append(_expr("log", _str(2, _quoted(t[i + 2])), _u32(5, level)))
        return i + 5

    def _notrack(self, t: list[str], i: int, r: _Rule) -> int:
        r.exprs.append(_expr("notrack"))
        return i + 1

    def _reject(self, t: list[str], i: int, r: _Rule) -> int:
        if t[i + 1 : i + 4] == ["with", "tcp", "reset"]:
            self._l4proto_dep(r, 6)
            r.exprs.append(_expr("reject", _u32(1, 1), _attr(2, b"\0")))
            return i + 4
        if r.nfproto is None:  # inet: icmpx port-unreachable
            r.exprs.append(_expr("reject", _u32(1, 2), _attr(2, b"\x01")))
        else:  # the family is known: icmp (code 3) or icmpv6 (code 4) port-unreachable
            code = b"\x03" if r.nfproto == 4 else b"\x04"
            r.exprs.append(_expr("reject", _u32(1, 0), _attr(2, code)))
        return i + 1

    def _verdict(self, t: list[str], i: int, r: _Rule) -> int:
        word = t[i]
        if word in ("jump", "goto"):
            if i + 1 >= len(t):
                raise Unencodable(f"{word} without a chain")
            code = VERDICT_JUMP if word == "jump" else VERDICT_GOTO
            r.exprs.append(_verdict(code, _name(t[i + 1])))
            return i + 2
        r.exprs.append(_verdict(_VERDICTS[word]))
        return i + 1


_ICMP_TYPE_CODE_UDATA = bytes.fromhex(
    "000400000000033400040d000000012c0014000407000000010c0004040000000104010000000114"
    "000407000000010c000404000000010402000000"
)
_ICMPV6_TYPE_CODE_UDATA = bytes.fromhex(
    "000400000000033400040d000000012c0014000407000000010c00040e0000000104010000000114"
    "000407000000010c00040e000000010402000000"
)

_HANDLERS = {
    "meta": _Rules._meta,
    "ip": _Rules._ip,
    "ip6": _Rules._ip,
    "th": _Rules._th,
    "icmp": _Rules._icmp,
    "icmpv6": _Rules._icmp,
    "ct": _Rules._ct,
    "iifname": _Rules._ifname,
    "oifname": _Rules._ifname,
    "fib": _Rules._fib,
    "limit": _Rules._limit,
    "log": _Rules._log,
    "notrack": _Rules._notrack,
    "reject": _Rules._reject,
    "accept": _Rules._verdict,
    "drop": _Rules._verdict,
    "return": _Rules._verdict,
    "jump": _Rules._verdict,
    "goto": _Rules._verdict,
}


# -- the whole script ------------------------------------------------------------------------------


def encode(script: str) -> bytes:
    """The netlink batch of a Tortie nftables script (see the module docstring); raises
    :class:`Unencodable` for a script with a statement or form this module does not reproduce."""
    # Encoding makes some 10^5 tuples and lists (parsed elements, cache keys), none of them in a
    # reference cycle: the cycle collector, run every 700 of them, would only cost time (~15 %).
    with paused_gc():
        return _encode(script)


def _encode(script: str) -> bytes:
    b = _Batch()
    lines = script.split("\n")
    i, n = 0, len(lines)
    done = False
    while i < n:
        line = lines[i]
        i += 1
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if done:
            raise Unencodable(f"statement after the table: {s[:80]!r}")
        words = s.split()
        if len(words) == 4 and words[:2] == ["table", "inet"] and words[3] == "{":
            if _name(words[2]) != b.table:
                raise Unencodable("the table is not created and deleted first")
            try:
                end = lines.index("}", i)
            except ValueError:
                raise Unencodable("table not closed") from None
            b.table_body(lines, i, end)
            i = end + 1
            done = True
        else:
            b.table_cmd(s)
    if not done:
        raise Unencodable("no table body")
    return b.assemble()


# -- the batch file -------------------------------------------------------------------------------

MAGIC = b"tortie-nft-batch 1\n"


def header(script: str, batch: bytes) -> bytes:
    """The first two lines of ``nftables.batch``: the magic line, then one JSON line (the SHA-256
    of the script the batch encodes, the byte order it was encoded for, its size)."""
    meta = {
        "script_sha256": hashlib.sha256(script.encode()).hexdigest(),
        "byteorder": sys.byteorder,
        "bytes": len(batch),
    }
    return MAGIC + json.dumps(meta, sort_keys=True).encode() + b"\n"


def with_header(script: str, batch: bytes) -> bytes:
    return header(script, batch) + batch
