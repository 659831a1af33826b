"""Read chains and sets back over netlink and check them against the batch that made them.

After a small delta batch (flush chain X + its new rules, new chains, new sets, deletions) the
agent wants to know that the kernel holds exactly what it sent for the objects it touched, and
to keep a digest of them so a later check can tell whether anyone changed them. ``nft list``
costs ~0.45 s on a 10 MB table even for one chain (it builds a cache of the whole table); this
module asks the kernel directly, per object, on one socket:

* :func:`dump_chains` — ``NFT_MSG_GETCHAIN`` (a plain GET by table and name) and a
  ``NFT_MSG_GETRULE`` dump filtered by table and chain, per chain; plus ``GETSET``/``GETSETELEM``
  for the anonymous sets the rules look up (their names are the kernel's, ``__set7``; they are
  compared by content);
* :func:`dump_set_decls` — ``NFT_MSG_GETSET`` per named set (and its elements if asked);
* :func:`digest` — a SHA-256 of the canonical form of dumped objects (below);
  :func:`dump_digest` — a cheaper one of the raw dump, for "has anyone changed these since".

What a batch leaves, and the comparison with a dump, are in :mod:`runtime.nftables_batchcheck`.

The canonical form
------------------
Every attribute is compared byte for byte except for these differences between what nft 1.0.6
(and ``compiler.targets.nftables.batch``) sends and what the kernel (6.18) dumps, each one seen
on the kernel tests' inputs (``tests/kernel/test_nftables_readback.py``):

1. **NLA_F_NESTED** — sent nests carry the flag; the kernel dumps nests without it
   (``nla_nest_start_noflag``). Attribute types are compared without the flag bits, and nests
   are recognised by type from a schema (``_NESTS``), not by the flag.
2. **Attribute order inside an expression** — e.g. ``ct`` is sent key, dreg and dumped dreg,
   key; ``lookup`` is sent sreg, set, set id and dumped set, sreg, flags. The kernel parses
   attributes into an array indexed by type, so order carries nothing: attributes are sorted by
   type (a type given twice stays twice and shows as a difference).
3. **lookup: NFTA_LOOKUP_SET_ID** is sent (it names a set of the same transaction) and not
   dumped: it is dropped. **NFTA_LOOKUP_FLAGS** is dumped always (0 when not inverted) and sent
   only for ``!=``: absent means 0 (``nft_lookup_init``).
4. **bitwise: NFTA_BITWISE_OP** is dumped always and sent only by some nft statements: absent
   means ``NFT_BITWISE_BOOL`` (0), as ``nft_bitwise_init`` reads it.
5. **Anonymous sets** — a rule's ``{ ... }`` is a set the batch creates as ``__set%d`` (the
   kernel picks the number) and the rule names by ``NFTA_LOOKUP_SET_ID``; the kernel dumps the
   lookup with the name it chose. Such a lookup is compared by the set's content instead: its
   canonical declaration and its elements, sorted (a hash set dumps in hash order).
6. **Rules: NFTA_RULE_HANDLE / NFTA_RULE_POSITION** are dumped (the kernel assigns handles;
   position is the previous rule's handle) and dropped; ``NFTA_RULE_ID``/``POSITION_ID`` sent
   in a batch are dropped too. The order of rules is compared (it is the rules' order).
7. **Chains: NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE** (references from other rules and maps) and
   NFTA_CHAIN_ID (sent) are dropped. **NFTA_CHAIN_FLAGS** is dumped for a base chain
   (``NFT_CHAIN_BASE``) and not sent: the expected flags are the sent ones (absent = 0) plus
   ``NFT_CHAIN_BASE`` when the chain has a hook. The order of chain attributes is dropped.
8. **Sets: NFTA_SET_HANDLE, NFTA_SET_ID, NFTA_SET_TYPE** (the backend the kernel picked,
   dumped as a kernel address) and **NFTA_SET_COUNT** (the number of elements: the elements are
   compared themselves) are dropped. **NFTA_SET_FLAGS** is not dumped when 0 (absent = 0).
   **NFTA_SET_DESC** is dumped always, empty when the set has no size or concatenation: empty
   means absent. **NFTA_SET_DATA_LEN** of a verdict map is sent as 0 and dumped as 16: the
   kernel sets it to ``sizeof(struct nft_verdict)`` whatever is sent.
9. **Counters** (``counter`` expressions' ``NFTA_COUNTER_BYTES``/``PACKETS``, a chain's
   ``NFTA_CHAIN_COUNTERS``) change with traffic: they are replaced by ``*``. Not seen (Tortie's
   rules have no counters): it keeps a digest stable if someone adds one, while the expression
   itself still shows.
10. **Jumps by NFTA_VERDICT_CHAIN_ID** (a chain of the same batch by its ``NFTA_CHAIN_ID``):
   the kernel dumps the chain's name; the name is taken from the batch's ``NEWCHAIN``. Not seen
   either (nft 1.0.6 and ``batch.py`` jump by name), handled because it costs nothing.

The batch and ``nft -f`` of the same script read back the same (the kernel test checks every
input both ways), so the list above holds for either.

A ``NEWCHAIN`` names a new chain unless the batch already created, flushed or added rules to
it; then it is an update the kernel applies to an existing chain (rules and comment stay, seen
with ``nft add chain`` of an existing chain), and the chain's header is not checked.
:func:`expected_sets` knows the elements of sets the batch creates; a ``DELSETELEM`` in the same
batch removes only elements sent byte for byte the same.

Anything else is compared as bytes. What cannot be checked: rules a batch adds to a chain it
neither creates nor flushes (the chain's earlier rules are not in the batch; such a chain is
reported, not guessed), and rules positioned by handle (``insert``/``replace``/``add ...
position``), likewise reported. Element lists of named sets: ``runtime.nftables_netlink``'s
``dump_sets``/``decode`` are the cheaper check; :func:`dump_set_decls` can fetch them raw.
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runtime.nftables_netlink import (
    open_socket,
    request,
)

__all__ = [
    "ChainDump",
    "Rule",
    "SetDecl",
    "canonical_chain",
    "canonical_expressions",
    "canonical_rule",
    "canonical_set",
    "digest",
    "dump_chains",
    "dump_digest",
    "dump_set_decls",
    "set_dump_digest",
]

# linux/netfilter/nf_tables.h
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_DELCHAIN = 3, 4, 5
NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 6, 7, 8
NFT_MSG_NEWSET, NFT_MSG_GETSET, NFT_MSG_DELSET = 9, 10, 11
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_DESTROYTABLE, NFT_MSG_DESTROYCHAIN, NFT_MSG_DESTROYRULE = 26, 27, 28
NFT_MSG_DESTROYSET, NFT_MSG_DESTROYSETELEM = 29, 30
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_APPEND, NLM_F_REPLACE = 0x1, 0x300, 0x800, 0x100
NLMSG_ERROR, NLMSG_DONE = 0x2, 0x3
NFPROTO_INET = 1
TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 2, 3, 4
NFTA_CHAIN_USE, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_FLAGS, NFTA_CHAIN_ID = 6, 8, 10, 11
NFT_CHAIN_BASE = 1
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_POSITION, NFTA_RULE_USERDATA, NFTA_RULE_ID, NFTA_RULE_POSITION_ID = 6, 7, 9, 10
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_DATA_TYPE = 1, 2, 3, 6
NFTA_SET_DATA_LEN, NFTA_SET_DESC, NFTA_SET_ID, NFTA_SET_HANDLE = 7, 9, 10, 16
NFTA_SET_TYPE, NFTA_SET_COUNT = 19, 20
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET = 1, 2
NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET_ID = 3, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_LOOKUP_SET, NFTA_LOOKUP_SET_ID, NFTA_LOOKUP_FLAGS = 1, 4, 5
NFTA_BITWISE_OP = 6
NFTA_IMMEDIATE_DATA, NFTA_DATA_VERDICT, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CHAIN_ID = 2, 2, 2, 3
NFT_DATA_VERDICT = 0xFFFFFF00
NFT_VERDICT_DATA_LEN = 16  # sizeof(struct nft_verdict) on 64-bit kernels
ANON_PREFIX = "__set"
_ANON_BYTES = ANON_PREFIX.encode()

# Which attributes are nests, by where they are: "data" is struct nft_data (NFTA_DATA_VALUE
# bytes, NFTA_DATA_VERDICT a nest of code and chain). The kernel dumps nests without
# NLA_F_NESTED, so the flag cannot tell.
_DATA = "data"
_NESTS: dict[str, dict[int, object]] = {
    "cmp": {3: _DATA},
    "bitwise": {4: _DATA, 5: _DATA, 7: _DATA},
    "range": {3: _DATA, 4: _DATA},
    "immediate": {2: _DATA},
    "chain": {4: {}, 8: {}},  # NFTA_CHAIN_HOOK, NFTA_CHAIN_COUNTERS
    "set": {9: {2: {1: {}}}},  # NFTA_SET_DESC { SIZE, CONCAT { ELEM { FIELD_LEN } } }
    "elem": {1: _DATA, 2: _DATA, 10: _DATA},  # KEY, DATA, KEY_END
}
_DATA_NESTS = {2: {}}  # NFTA_DATA_VERDICT


# -- attributes ----------------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _attrs(buf: bytes, off: int = 0, end: int | None = None) -> list[tuple[int, bytes]]:
    """(type without flag bits, payload) of every attribute in ``buf[off:end]``, in order."""
    end = len(buf) if end is None else end
    out = []
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or off + alen > end:
            raise ValueError(f"malformed netlink attribute at offset {off}")
        out.append((atype & TYPE_MASK, bytes(buf[off + 4 : off + alen])))
        off += (alen + 3) & ~3
    return out


def _first(attrs: Iterable[tuple[int, bytes]], kind: int) -> bytes | None:
    for t, v in attrs:
        if t == kind:
            return v
    return None


def _text(value: bytes | None) -> str:
    return "" if value is None else value.rstrip(b"\0").decode("utf-8", "backslashreplace")


def _u32(value: bytes | None) -> int:
    return struct.unpack(">I", value[:4])[0] if value is not None and len(value) >= 4 else 0


def _value(v: bytes) -> str:
    """Hex, or ``"text"`` for a NUL-terminated printable string (names, prefixes: readable in
    a problem report; the two forms cannot be confused)."""
    if _PRINTABLE.fullmatch(v):
        return '"' + v[:-1].decode() + '"'
    return v.hex()


_PRINTABLE = re.compile(rb"[\x20\x21\x23-\x7e]+\x00")


def _canon_attrs(attrs: list[tuple[int, bytes]], nests: Mapping[int, object]) -> str:
    """``type=hex`` or ``type(...)`` per attribute, sorted by type (see the module docstring)."""
    parts = []
    for t, v in sorted(attrs, key=lambda a: a[0]):
        sub = nests.get(t)
        if sub is None:
            parts.append(f"{t}={_value(v)}")
        elif sub == _DATA:
            parts.append(f"{t}({_canon_attrs(_attrs(v), _DATA_NESTS)})")
        else:
            assert isinstance(sub, dict)
            parts.append(f"{t}({_canon_attrs(_attrs(v), sub)})")
    return " ".join(parts)


# -- the objects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetDecl:
    """A set as sent (NEWSET + NEWSETELEM) or dumped (GETSET + GETSETELEM): its attributes and,
    if known, its elements (``NFTA_LIST_ELEM`` payloads)."""

    name: str
    attrs: tuple[tuple[int, bytes], ...]
    elements: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``NFTA_RULE_EXPRESSIONS``'s payload, ``NFTA_RULE_USERDATA`` (the comment), its
    other attributes, and the anonymous sets its lookups name (by set name as dumped, or
    ``id:N`` for a set the batch names by ``NFTA_LOOKUP_SET_ID``)."""

    expressions: bytes
    userdata: bytes | None
    other: tuple[tuple[int, bytes], ...] = ()
    anon: tuple[tuple[str, SetDecl], ...] = ()
    handle: int | None = None


@dataclass(frozen=True, slots=True)
class ChainDump:
    name: str
    attrs: tuple[tuple[int, bytes], ...]  # the GETCHAIN answer's attributes
    rules: tuple[Rule, ...]


# -- canonical form ------------------------------------------------------------------------------


def canonical_set(decl: SetDecl, elements: bool = True) -> str:
    """A set's declaration (and elements, sorted) in canonical form; the name is left out
    (anonymous sets are compared by content)."""
    a = {t: v for t, v in decl.attrs}
    drop = {NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_ID, NFTA_SET_HANDLE}
    drop |= {NFTA_SET_TYPE, NFTA_SET_COUNT}
    attrs = [(t, v) for t, v in decl.attrs if t not in drop]
    if NFTA_SET_FLAGS not in a:
        attrs.append((NFTA_SET_FLAGS, bytes(4)))
    if a.get(NFTA_SET_DESC) == b"":
        attrs = [(t, v) for t, v in attrs if t != NFTA_SET_DESC]
    if _u32(a.get(NFTA_SET_DATA_TYPE)) == NFT_DATA_VERDICT:
        attrs = [(t, v) for t, v in attrs if t != NFTA_SET_DATA_LEN]
        attrs.append((NFTA_SET_DATA_LEN, struct.pack(">I", NFT_VERDICT_DATA_LEN)))
    out = "set " + _canon_attrs(attrs, _NESTS["set"])
    if elements and decl.elements is not None:
        elems = sorted(_canon_attrs(_attrs(e), _NESTS["elem"]) for e in decl.elements)
        out += " elements {" + ", ".join(elems) + "}"
    return out


def canonical_expressions(
    payload: bytes, anon: Mapping[str, SetDecl] | None = None, chain_ids: Mapping[int, str] = {}
) -> list[str]:
    """One canonical string per expression of an ``NFTA_RULE_EXPRESSIONS`` payload."""
    out = []
    off, end = 0, len(payload)
    while off + 4 <= end:
        alen = _HDR.unpack_from(payload, off)[0]
        if alen < 4 or off + alen > end:
            raise ValueError(f"malformed netlink attribute at offset {off}")
        elem = payload[off + 4 : off + alen]
        off += (alen + 3) & ~3
        text = _EXPR_CACHE.get(elem)
        if text is None:
            text = _expression(elem, anon or {}, chain_ids)
        out.append(text)
    return out


_HDR = struct.Struct("=HH")
# expression bytes -> canonical text, for expressions whose text depends on nothing else (not
# an anonymous set's lookup, not a jump by chain id): most recur in many rules.
_EXPR_CACHE: dict[bytes, str] = {}
_EXPR_CACHE_MAX = 1 << 16


def _expression(elem: bytes, anon: Mapping[str, SetDecl], chain_ids: Mapping[int, str]) -> str:
    e = _attrs(elem)
    name = _text(_first(e, NFTA_EXPR_NAME))
    data = _first(e, NFTA_EXPR_DATA)
    rest = [(t, v) for t, v in e if t not in (NFTA_EXPR_NAME, NFTA_EXPR_DATA)]
    attrs = _attrs(data) if data is not None else []
    suffix = ""
    cacheable = True
    if name == "lookup":
        attrs, suffix = _lookup(attrs, anon)
        cacheable = not suffix  # an anonymous set's content comes from elsewhere
    elif name == "bitwise" and _first(attrs, NFTA_BITWISE_OP) is None:
        attrs.append((NFTA_BITWISE_OP, bytes(4)))
    elif name == "immediate":
        resolved = _immediate(attrs, chain_ids)
        cacheable = resolved == attrs  # a jump by chain id: the name comes from the batch
        attrs = resolved
    elif name == "counter":
        attrs = [(t, b"*") for t, _ in attrs]
    text = f"{name}[{_canon_attrs(attrs, _NESTS.get(name, {}))}]{suffix}"
    if rest:
        text += " +" + _canon_attrs(rest, {})
    if not cacheable:
        return text
    if len(_EXPR_CACHE) >= _EXPR_CACHE_MAX:
        _EXPR_CACHE.clear()
    _EXPR_CACHE[elem] = text
    return text


def _lookup(
    attrs: list[tuple[int, bytes]], anon: Mapping[str, SetDecl]
) -> tuple[list[tuple[int, bytes]], str]:
    """The lookup's attributes without the set id, with its flags; an anonymous set's name
    replaced by its content (returned as the second item)."""
    name = _text(_first(attrs, NFTA_LOOKUP_SET))
    set_id = _first(attrs, NFTA_LOOKUP_SET_ID)
    out = [(t, v) for t, v in attrs if t != NFTA_LOOKUP_SET_ID]
    if _first(attrs, NFTA_LOOKUP_FLAGS) is None:
        out.append((NFTA_LOOKUP_FLAGS, bytes(4)))
    if name.startswith(ANON_PREFIX):
        key = f"id:{_u32(set_id)}" if set_id is not None and "%" in name else name
        decl = anon.get(key)
        content = canonical_set(decl) if decl is not None else f"unknown anonymous set {key}"
        out = [(t, v) for t, v in out if t != NFTA_LOOKUP_SET]
        return out, f" anonymous {{{content}}}"
    return out, ""


def _immediate(
    attrs: list[tuple[int, bytes]], chain_ids: Mapping[int, str]
) -> list[tuple[int, bytes]]:
    """A jump/goto sent with NFTA_VERDICT_CHAIN_ID (a chain of the same batch) names the
    chain in the dump: put the name in."""
    if not chain_ids:
        return attrs
    out = []
    for t, v in attrs:
        if t == NFTA_IMMEDIATE_DATA:
            data = []
            for dt, dv in _attrs(v):
                if dt == NFTA_DATA_VERDICT:
                    verdict = _attrs(dv)
                    cid = _first(verdict, NFTA_VERDICT_CHAIN_ID)
                    if cid is not None and _u32(cid) in chain_ids:
                        verdict = [(x, y) for x, y in verdict if x != NFTA_VERDICT_CHAIN_ID]
                        name = chain_ids[_u32(cid)].encode() + b"\0"
                        verdict.append((NFTA_VERDICT_CHAIN, name))
                    dv = b"".join(_attr(x, y) for x, y in verdict)
                data.append((dt, dv))
            v = b"".join(_attr(x, y) for x, y in data)
        out.append((t, v))
    return out


def canonical_rule(rule: Rule, chain_ids: Mapping[int, str] = {}) -> str:
    exprs = canonical_expressions(rule.expressions, dict(rule.anon), chain_ids)
    out = "; ".join(exprs)
    if rule.userdata is not None:
        out += f" | userdata={rule.userdata.hex()}"
    if rule.other:
        out += " | " + _canon_attrs(list(rule.other), {})
    return out


_CHAIN_DROP = {NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE}
_CHAIN_DROP |= {NFTA_CHAIN_ID, NFTA_CHAIN_FLAGS}


def _chain_attrs(attrs: Iterable[tuple[int, bytes]], sent: bool) -> str:
    attrs = list(attrs)
    flags = _u32(_first(attrs, NFTA_CHAIN_FLAGS))
    if sent and _first(attrs, NFTA_CHAIN_HOOK) is not None:
        flags |= NFT_CHAIN_BASE
    rest = [(t, v) for t, v in attrs if t not in _CHAIN_DROP]
    rest = [(t, b"*") if t == NFTA_CHAIN_COUNTERS else (t, v) for t, v in rest]
    return f"chain flags={flags} " + _canon_attrs(rest, _NESTS["chain"])


def canonical_chain(chain: ChainDump) -> list[str]:
    """The chain's header line, then one line per rule."""
    return [_chain_attrs(chain.attrs, False)] + [canonical_rule(r) for r in chain.rules]


# -- reading from the kernel ---------------------------------------------------------------------


def _get_set(sock: socket.socket, table: str, name: str, elements: bool) -> SetDecl | None:
    tattr = _attr(NFTA_SET_TABLE, table.encode() + b"\0")
    got = request(
        sock,
        NFT_MSG_GETSET,
        NLM_F_REQUEST,
        tattr + _attr(NFTA_SET_NAME, name.encode() + b"\0"),
        f"set {name}",
    )
    if not got:
        return None
    elems: tuple[bytes, ...] | None = None
    if elements:
        payload = _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
        payload += _attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
        found: list[bytes] = []
        for msg in (
            request(
                sock, NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP, payload, f"elements of {name}"
            )
            or []
        ):
            for t, v in _attrs(msg):
                if t == NFTA_SET_ELEM_LIST_ELEMENTS:
                    found += [e for et, e in _attrs(v) if et == NFTA_LIST_ELEM]
        elems = tuple(found)
    return SetDecl(name, tuple(_attrs(got[0])), elems)


def _anon_names(expressions: bytes) -> list[str]:
    if _ANON_BYTES not in expressions:  # no lookup of an anonymous set (its name would be)
        return []
    names = []
    for _, elem in _attrs(expressions):
        e = _attrs(elem)
        if _text(_first(e, NFTA_EXPR_NAME)) == "lookup":
            name = _text(_first(_attrs(_first(e, NFTA_EXPR_DATA) or b""), NFTA_LOOKUP_SET))
            if name.startswith(ANON_PREFIX):
                names.append(name)
    return names


def dump_chains(
    names: Iterable[str],
    table: str = "tortie",
    netns: str | None = None,
    sock: socket.socket | None = None,
    timeout: float = 10.0,
) -> dict[str, ChainDump]:
    """name -> the chain as the kernel holds it (a missing chain is absent from the result):
    one GETCHAIN and one GETRULE dump per chain, and a GETSET + GETSETELEM per anonymous set
    its rules look up, all on one socket (``sock`` from
    :func:`runtime.nftables_netlink.open_socket`, else a new one)."""
    if sock is None:
        with open_socket(netns, timeout) as own:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            return dump_chains(names, table, netns, own, timeout)
    tattr = _attr(NFTA_CHAIN_TABLE, table.encode() + b"\0")
    anon: dict[str, SetDecl] = {}
    out: dict[str, ChainDump] = {}
    for name in names:
        nattr = name.encode() + b"\0"
        got = request(
            sock, NFT_MSG_GETCHAIN, NLM_F_REQUEST, tattr + _attr(NFTA_CHAIN_NAME, nattr), name
        )
        if not got:
            continue
        msgs = request(
            sock,
            NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            tattr + _attr(NFTA_RULE_CHAIN, nattr),
            f"rules of {name}",
        )
        rules = []
        for msg in msgs or []:
            a = _attrs(msg)
            exprs = _first(a, NFTA_RULE_EXPRESSIONS) or b""
            used = []
            for set_name in _anon_names(exprs):
                if set_name not in anon:
                    decl = _get_set(sock, table, set_name, True)
                    if decl is not None:
                        anon[set_name] = decl
                if set_name in anon:
                    used.append((set_name, anon[set_name]))
            skip = {NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS}
            skip |= {NFTA_RULE_POSITION, NFTA_RULE_USERDATA}
            handle = _first(a, NFTA_RULE_HANDLE)
            rules.append(
                Rule(
                    exprs,
                    _first(a, NFTA_RULE_USERDATA),
                    tuple((t, v) for t, v in a if t not in skip),
                    tuple(used),
                    struct.unpack(">Q", handle)[0] if handle and len(handle) == 8 else None,
                )
            )
        out[name] = ChainDump(name, tuple(_attrs(got[0])), tuple(rules))
    return out


def dump_set_decls(
    names: Iterable[str],
    table: str = "tortie",
    netns: str | None = None,
    sock: socket.socket | None = None,
    elements: bool = False,
    timeout: float = 10.0,
) -> dict[str, SetDecl]:
    """name -> the set's declaration (GETSET; with ``elements``, also a GETSETELEM dump) on
    one socket; a missing set is absent from the result."""
    if sock is None:
        with open_socket(netns, timeout) as own:
            return dump_set_decls(names, table, netns, own, elements, timeout)
    out = {}
    for name in names:
        decl = _get_set(sock, table, name, elements)
        if decl is not None:
            out[name] = decl
    return out


def dump_digest(dumped: Mapping[str, ChainDump]) -> str:
    """SHA-256 of dumped chains as the kernel returned them (rules' expressions and userdata
    as bytes; the chain's header in canonical form, without its handle and use count): equal
    for two dumps of the same chains in one namespace, and ~10x cheaper than :func:`digest`.
    Not comparable across namespaces or with a batch (the kernel's attribute layout and the
    names it gave anonymous sets are in it): for "has anyone changed these since", not for
    "are these what was sent"."""
    h = hashlib.sha256()
    for name in sorted(dumped):
        chain = dumped[name]
        h.update(f"chain {name}\n{_chain_attrs(chain.attrs, False)}\n".encode())
        for r in chain.rules:
            h.update(len(r.expressions).to_bytes(4, "big") + r.expressions)
            data = r.userdata if r.userdata is not None else b""
            h.update((len(data) if r.userdata is not None else -1).to_bytes(4, "big", signed=True))
            h.update(data)
            for t, v in sorted(r.other):
                h.update(t.to_bytes(2, "big") + len(v).to_bytes(4, "big") + v)
            h.update(b"\0")
    return h.hexdigest()


def set_dump_digest(decl: SetDecl) -> str:
    """SHA-256 of a set dumped with its elements, as the kernel returned it (attributes as
    bytes, the elements sorted: a hash set dumps in hash order). Like :func:`dump_digest`: for
    "has anyone changed it since", in one namespace."""
    h = hashlib.sha256(f"set {decl.name}\n".encode())
    for t, v in sorted(decl.attrs):
        h.update(t.to_bytes(2, "big") + len(v).to_bytes(4, "big") + v)
    h.update(b"\0elements\0")
    for e in sorted(decl.elements or ()):
        h.update(len(e).to_bytes(4, "big") + e)
    return h.hexdigest()


def digest(dumped: Mapping[str, ChainDump], sets: Mapping[str, SetDecl] | None = None) -> str:
    """SHA-256 of the canonical form of dumped chains (and sets), by name: the same kernel
    state gives the same digest whatever the handles, counters or set backends."""
    h = hashlib.sha256()
    for name in sorted(dumped):
        h.update(f"chain {name}\n".encode())
        for line in canonical_chain(dumped[name]):
            h.update(line.encode() + b"\n")
    for name in sorted(sets or {}):
        assert sets is not None
        h.update(f"set {name}\n{canonical_set(sets[name])}\n".encode())
    return h.hexdigest()
