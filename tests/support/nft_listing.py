"""Three views of one nf_tables table in a netns, for differential tests that load the same
table two ways (``nft -f`` and a raw netlink batch) and compare what the kernel holds.

* :func:`listing` — ``nft list table``: what an operator sees (types, flags, elements, rules,
  comments), as nft decodes it.
* :func:`bytecode` — ``nft --debug=netlink list table``: every set's elements as raw key/data
  words and every rule's expressions as the kernel holds them (``[ meta load nfproto => reg 1 ]``)
  with its handle, position and userdata (the comment bytes).
* :func:`raw_dump` — every table, chain, set, object, flowtable, rule and set element as the
  kernel's own netlink dump returns them, each attribute in hex. This covers what the two
  listings above leave out or decode away: set flags, key/data types and lengths, the
  concatenation field description, the set backend policy, userdata bytes of sets, chains and
  the table, chain flags and hook details.

Normalisation (the only one; everything else is compared byte for byte): the elements of one
set are **sorted**. A set's content is a set; the order a dump returns it in is not part of the
state: a hash set (``wl-ifaces``, the verdict maps, anonymous sets) walks buckets of a
rhashtable whose hash seed is random per set, so two namespaces holding the same elements list
them in different orders (seen with two ``nft -f`` of the same script). An rbtree/pipapo set
dumps in key order anyway, so sorting hides nothing there.
"""

from __future__ import annotations

import os
import re
import socket
import struct

from compiler.tools import nft
from runtime.nftables_netlink import NetlinkError, next_seq, open_socket

NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NFPROTO_INET = 1

# NFT_MSG_GET* (linux/netfilter/nf_tables.h) and the attribute that names the object.
GET = {
    "table": (1, 1),  # NFT_MSG_GETTABLE, NFTA_TABLE_NAME
    "chain": (4, 3),  # NFT_MSG_GETCHAIN, NFTA_CHAIN_NAME
    "rule": (7, 2),  # NFT_MSG_GETRULE, NFTA_RULE_CHAIN
    "set": (10, 2),  # NFT_MSG_GETSET, NFTA_SET_NAME
    "obj": (19, 2),  # NFT_MSG_GETOBJ, NFTA_OBJ_NAME
    "flowtable": (23, 2),  # NFT_MSG_GETFLOWTABLE, NFTA_FLOWTABLE_NAME
}
NFT_MSG_GETSETELEM = 13
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_TABLE_NAME_FILTER = 1  # NFTA_{CHAIN,RULE,SET,OBJ,FLOWTABLE}_TABLE is attribute 1 in all


def listing(netns: str, table: str = "tortie") -> str:
    """``nft list table inet TABLE`` text."""
    return nft.list_table("inet", table, netns=netns)


_ELEMENT = re.compile(r"\telement ")


def bytecode(netns: str, table: str = "tortie") -> str:
    """``nft --debug=netlink list table inet TABLE``, each set's element lines sorted (see the
    module docstring for why that is the only normalisation)."""
    out = nft.run(["--debug=netlink", "list", "table", "inet", table], netns=netns).stdout
    lines = out.splitlines()
    result: list[str] = []
    i = 0
    while i < len(lines):
        if _ELEMENT.match(lines[i]):
            j = i
            while j < len(lines) and _ELEMENT.match(lines[j]):
                j += 1
            result += sorted(lines[i:j])
            i = j
        else:
            result.append(lines[i])
            i += 1
    return "\n".join(result) + "\n"


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _attrs(buf: bytes, off: int, end: int) -> list[tuple[int, bytes]]:
    """(type, payload) of every attribute in buf[off:end], in order."""
    out = []
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or off + alen > end:
            raise ValueError(f"malformed attribute at {off}")
        out.append((atype & 0x3FFF, buf[off + 4 : off + alen]))
        off += (alen + 3) & ~3
    return out


def _dump(sock: socket.socket, msg_type: int, payload: bytes) -> list[bytes]:
    """The attribute bytes (after nfgenmsg) of every message a dump request returns."""
    seq = next_seq()
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0) + payload
    kind = (NFNL_SUBSYS_NFTABLES << 8) | msg_type
    sock.sendto(
        struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body,
        (0, 0),
    )
    out: list[bytes] = []
    while True:
        buf = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(buf):
            length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", buf, off)
            if length < 16:
                raise ValueError("malformed netlink message")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, off + 16)
                    if code != 0:
                        raise NetlinkError(f"dump {msg_type}: {os.strerror(-code)}")
                    return out
                out.append(buf[off + 20 : off + length])
            off += (length + 3) & ~3


def _name(attrs: list[tuple[int, bytes]], kind: int) -> str:
    for t, v in attrs:
        if t == kind:
            return v.rstrip(b"\0").decode("utf-8", "backslashreplace")
    return "?"


def raw_dump(netns: str, table: str = "tortie") -> str:
    """Every object of ``inet TABLE`` as the kernel dumps it, one line per object, each
    attribute ``type=hex`` in the kernel's order; a set's elements (one line each) sorted."""
    lines: list[str] = []
    tfilter = _attr(NFTA_TABLE_NAME_FILTER, table.encode() + b"\0")
    with open_socket(netns, timeout=30.0) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        set_names: list[str] = []
        for what, (msg_type, name_attr) in GET.items():
            # GETTABLE dumps every inet table (no filter attribute): keep ours.
            for msg in _dump(sock, msg_type, b"" if what == "table" else tfilter):
                attrs = _attrs(msg, 0, len(msg))
                if what == "table" and _name(attrs, 1) != table:
                    continue
                name = _name(attrs, name_attr)
                if what == "set":
                    set_names.append(name)
                text = " ".join(f"{t}={v.hex()}" for t, v in attrs)
                lines.append(f"{what} {name}: {text}")
        for name in set_names:
            payload = tfilter + _attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
            elems: list[str] = []
            for msg in _dump(sock, NFT_MSG_GETSETELEM, payload):
                for t, v in _attrs(msg, 0, len(msg)):
                    if t == NFTA_SET_ELEM_LIST_ELEMENTS:
                        elems += [e.hex() for _, e in _attrs(v, 0, len(v))]
            lines += [f"element {name}: {e}" for e in sorted(elems)]
    return "\n".join(lines) + "\n"


def views(netns: str, table: str = "tortie") -> dict[str, str]:
    """All three views, by name."""
    return {
        "list": listing(netns, table),
        "debug=netlink": bytecode(netns, table),
        "raw dump": raw_dump(netns, table),
    }
