"""Binary layouts of every BPF map the eBPF target uses: the one source of truth.

The C side never declares these structs by hand: ``bpf_templates/tortie_maps.h.j2`` prints
them from :data:`STRUCTS` and the map definitions from :data:`MAPS`, and Python packs keys and
values with the same :class:`Struct` objects (``pack`` / ``unpack``). ``tests/targets/
test_ebpf_layout.py`` checks a compiled object's BTF against these definitions, field by field
(name, offset, size) and map by map (type, key and value size, max_entries, flags).

The IP-set key, as C sees it (``tortie_maps.h``)::

    struct tortie_set_key_v4 {      /* LPM trie: every field is inside the prefix */
        __u32 prefixlen;            /* bits of everything below that must match */
        __be32 set_hi;              /* 64-bit set id, big-endian, split in two so every */
        __be32 set_lo;              /*   field is naturally aligned (no packed struct) */
        __be16 port;                /* named-port sets: the port; 0 for selector sets */
        __u8 proto;                 /* named-port sets: the IP protocol; 0 otherwise */
        __u8 pad;
        __be32 addr;                /* IPv6: __be32 addr[4] */
    };

Set id, then protocol and port, then the address: a selector-set member ``10.0.0.0/8`` is stored
with ``prefixlen = 64 + 32 + 8`` and port = proto = 0; a named-port member ``(10.0.0.1/32, 6, 80)``
with ``prefixlen = 64 + 32 + 32``. Lookups always use the full length, so a selector-set lookup
(port = proto = 0) can never hit a named-port member and the other way round.

Struct fields are in the host's byte order unless their C type starts with ``__be`` (network
order). BPF objects built with ``-target bpf`` take the build host's byte order, so a big-endian
host would need ``bpfeb`` objects; we only build on little-endian machines and say so in ``check``.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass

# C scalar types: size in bytes and struct-module code.
_SCALARS: Mapping[str, tuple[int, str]] = {
    "__u8": (1, "B"),
    "__u16": (2, "H"),
    "__u32": (4, "I"),
    "__u64": (8, "Q"),
    "__be16": (2, "H"),
    "__be32": (4, "I"),
    "__be64": (8, "Q"),
}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    ctype: str
    count: int = 1  # > 1: an array
    doc: str = ""

    @property
    def elem_size(self) -> int:
        return _SCALARS[self.ctype][0]

    @property
    def size(self) -> int:
        return self.elem_size * self.count

    @property
    def big_endian(self) -> bool:
        return self.ctype.startswith("__be")

    @property
    def c_decl(self) -> str:
        suffix = f"[{self.count}]" if self.count > 1 else ""
        return f"{self.ctype} {self.name}{suffix};"


@dataclass(frozen=True, slots=True)
class Struct:
    """A C struct with natural alignment and no implicit padding (checked at import time)."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""

    @property
    def offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for f in self.fields:
            out[f.name] = off
            off += f.size
        return out

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fields)

    def _check(self) -> None:
        align = 1
        for f in self.fields:
            off = self.offsets[f.name]
            if off % f.elem_size:
                raise AssertionError(f"{self.name}.{f.name}: offset {off} not aligned")
            align = max(align, f.elem_size)
        if self.size % align:
            raise AssertionError(f"{self.name}: size {self.size} leaves tail padding")

    def pack(self, **values: int | tuple[int, ...]) -> bytes:
        """Bytes of one instance; missing fields are zero, arrays are given as tuples."""
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise KeyError(f"{self.name} has no field(s) {sorted(unknown)}")
        out = bytearray()
        for f in self.fields:
            order = ">" if f.big_endian else "<"
            code = _SCALARS[f.ctype][1]
            value = values.get(f.name, 0)
            items = value if isinstance(value, tuple) else (value,)
            if len(items) != f.count:
                raise ValueError(f"{self.name}.{f.name} takes {f.count} values")
            out += struct.pack(f"{order}{f.count}{code}", *items)
        return bytes(out)

    def unpack(self, data: bytes) -> dict[str, int | tuple[int, ...]]:
        if len(data) != self.size:
            raise ValueError(f"{self.name}: {len(data)} bytes, expected {self.size}")
        out: dict[str, int | tuple[int, ...]] = {}
        off = 0
        for f in self.fields:
            order = ">" if f.big_endian else "<"
            vals = struct.unpack_from(f"{order}{f.count}{_SCALARS[f.ctype][1]}", data, off)
            out[f.name] = vals if f.count > 1 else vals[0]
            off += f.size
        return out


@dataclass(frozen=True, slots=True)
class MapDef:
    """One BPF map. ``shared`` maps are created once per node and reused by every program
    object (by pinned path); the others belong to one object."""

    name: str
    type: str  # BPF_MAP_TYPE_* without the prefix, lower case as bpftool spells it
    key: Struct | str  # a Struct, or a C scalar type
    value: Struct | str
    max_entries: int
    flags: int = 0
    shared: bool = True
    doc: str = ""
    inner: MapDef | None = None  # map-in-map: the inner maps' definition

    @property
    def c_type(self) -> str:
        return "BPF_MAP_TYPE_" + self.type.upper()

    @property
    def key_size(self) -> int:
        return self.key.size if isinstance(self.key, Struct) else _SCALARS[self.key][0]

    @property
    def value_size(self) -> int:
        return self.value.size if isinstance(self.value, Struct) else _SCALARS[self.value][0]

    @property
    def key_c(self) -> str:
        return f"struct {self.key.name}" if isinstance(self.key, Struct) else self.key

    @property
    def value_c(self) -> str:
        return f"struct {self.value.name}" if isinstance(self.value, Struct) else self.value


BPF_F_NO_PREALLOC = 1

SET_KEY_V4 = Struct(
    "tortie_set_key_v4",
    (
        Field("prefixlen", "__u32", doc="LPM prefix length over the fields below"),
        Field("set_hi", "__be32", doc="set id, high 32 bits"),
        Field("set_lo", "__be32", doc="set id, low 32 bits"),
        Field("port", "__be16", doc="named-port sets only"),
        Field("proto", "__u8", doc="named-port sets only"),
        Field("pad", "__u8"),
        Field("addr", "__be32"),
    ),
    "IPv4 IP-set (LPM trie) key.",
)
SET_KEY_V6 = Struct(
    "tortie_set_key_v6",
    (*SET_KEY_V4.fields[:-1], Field("addr", "__be32", 4)),
    "IPv6 IP-set (LPM trie) key.",
)
SET_VALUE = Struct("tortie_set_value", (Field("flags", "__u32", doc="always 1"),), "IP-set value.")
SET_KEY_FIXED_BITS = 64 + 16 + 8 + 8  # set id, port, proto, pad: always fully in the prefix

CT_KEY = Struct(
    "tortie_ct_key",
    (
        Field("ifindex", "__u32", doc="interface the flow was approved on"),
        Field("hook", "__u8", doc="TORTIE_HOOK_TC_INGRESS (0) / TORTIE_HOOK_TC_EGRESS (1)"),
        Field("family", "__u8"),
        Field("proto", "__u8"),
        Field("pad", "__u8"),
        Field("sport", "__u16", doc="host order; ICMP echo: the id (see tortie_parse.h)"),
        Field("dport", "__u16"),
        Field("src", "__u32", 4, doc="host-order words; IPv4 uses src[0]"),
        Field("dst", "__u32", 4),
    ),
    "Flow key, in the direction of the packet that created it.",
)
CT_VALUE = Struct(
    "tortie_ct_value",
    (
        Field("last_seen", "__u64", doc="bpf_ktime_get_ns() of the last packet"),
        Field("flags", "__u32", doc="TORTIE_CT_F_* bits"),
        Field("pad", "__u32"),
    ),
    "Conntrack entry: present = approved on that hook.",
)
FRAG_KEY = Struct(
    "tortie_frag_key",
    (
        Field("ifindex", "__u32"),
        Field("hook", "__u8"),
        Field("family", "__u8"),
        Field("proto", "__u8"),
        Field("pad", "__u8"),
        Field("id", "__u32", doc="IPv4 identification / IPv6 fragment id"),
        Field("src", "__u32", 4),
        Field("dst", "__u32", 4),
    ),
    "A fragmented datagram whose first fragment was allowed.",
)
FRAG_VALUE = Struct("tortie_frag_value", (Field("last_seen", "__u64"),), "Fragment entry.")
LOG_VALUE = Struct(
    "tortie_log_value",
    (Field("packets", "__u64"), Field("bytes", "__u64")),
    "Counters of one Log rule.",
)
CONFIG = Struct(
    "tortie_config",
    (
        Field("endpoint_to_host", "__u32", doc="TORTIE_E2H_DROP / _ACCEPT / _RETURN"),
        Field("flags", "__u32", doc="TORTIE_CFG_F_* bits"),
        Field("ct_timeout_tcp_s", "__u32"),
        Field("ct_timeout_other_s", "__u32"),
        Field("frag_timeout_s", "__u32"),
        Field("pad", "__u32"),
        Field("host_set_hi", "__u32", doc="set id of this node's own IPs (host order halves)"),
        Field("host_set_lo", "__u32"),
    ),
    "Node-wide configuration, entry 0 of tortie_config (data: no rebuild when it changes).",
)
PKT = Struct(
    "tortie_pkt",
    (
        Field("src", "__u32", 4, doc="host-order words; IPv4 uses src[0]"),
        Field("dst", "__u32", 4),
        Field("sport", "__u16", doc="host order; 0 without ports"),
        Field("dport", "__u16"),
        Field("family", "__u8", doc="4 or 6"),
        Field("proto", "__u8"),
        Field("icmp_type", "__u8"),
        Field("icmp_code", "__u8"),
        Field("has_ports", "__u8", doc="TCP/UDP/UDP-Lite/SCTP header present"),
        Field("has_icmp", "__u8", doc="ICMP/ICMPv6 header present"),
        Field("tcp_flags", "__u8"),
        Field("frag", "__u8", doc="TORTIE_FRAG_NONE / _FIRST / _LATER"),
        Field("frag_id", "__u32"),
        Field("ifindex", "__u32"),
        Field("hook", "__u32"),
        Field("ct_sport", "__u16", doc="ports used for the conntrack key"),
        Field("ct_dport", "__u16"),
        Field("ct_reply_ok", "__u32", doc="a reverse-tuple entry may admit this packet"),
        Field("resume", "__u32", doc="landing pad for the next tail-called chunk"),
        Field("logged", "__u32", doc="a Log rule matched"),
        Field("len", "__u32"),
        Field("rel_src", "__u32", 4, doc="ICMP error: the flow it reports (conntrack view)"),
        Field("rel_dst", "__u32", 4),
        Field("rel_sport", "__u16"),
        Field("rel_dport", "__u16"),
        Field("rel_proto", "__u8"),
        Field("has_rel", "__u8", doc="an ICMP error whose inner header was parsed"),
        Field("rel_pad", "__u16"),
        Field("bank", "__u32", doc="set bank of this packet (from the dispatcher; else 0)"),
    ),
    "Per-packet scratch state shared by the entry program and its tail-called chunks.",
)

BANKS = 2  # see DISPATCH_MAPS: a runtime fills the bank not in force, then switches
SETS_V4 = MapDef(
    "tortie_sets_v4", "lpm_trie", SET_KEY_V4, SET_VALUE, 1_048_576, BPF_F_NO_PREALLOC,
    doc="IPv4 members of every selector and named-port set (an inner map of a set bank; the "
    "shared map of this name is the banks' empty template, never read)",
)  # fmt: skip
SETS_V6 = MapDef(
    "tortie_sets_v6", "lpm_trie", SET_KEY_V6, SET_VALUE, 1_048_576, BPF_F_NO_PREALLOC,
    doc="IPv6 members of every selector and named-port set (an inner map of a set bank; the "
    "shared map of this name is the banks' empty template, never read)",
)  # fmt: skip
SET_BANKS_V4 = MapDef(
    "tortie_setbank_v4", "array_of_maps", "__u32", "__u32", BANKS, inner=SETS_V4,
    doc="bank -> the IPv4 set map of that bank (the packet's bank is in tortie_pkt.bank)",
)  # fmt: skip
SET_BANKS_V6 = MapDef(
    "tortie_setbank_v6", "array_of_maps", "__u32", "__u32", BANKS, inner=SETS_V6,
    doc="bank -> the IPv6 set map of that bank",
)  # fmt: skip
CT = MapDef("tortie_ct", "lru_hash", CT_KEY, CT_VALUE, 262_144, doc="approved flows")
FRAGS = MapDef("tortie_frags", "lru_hash", FRAG_KEY, FRAG_VALUE, 16_384, doc="allowed datagrams")
LOG = MapDef("tortie_log", "hash", "__u64", LOG_VALUE, 65_536, doc="Log-rule counters")
CONFIG_MAP = MapDef("tortie_config", "array", "__u32", CONFIG, 1, doc="node-wide configuration")
STATE = MapDef(
    "tortie_state", "percpu_array", "__u32", PKT, 1, shared=False, doc="per-packet scratch"
)
JUMP_MAP = "tortie_jump"  # per-object prog_array, sized and filled by the template

# The dispatcher (``bpf_templates/dispatch_tc.bpf.c.j2``): the one program attached to every
# interface, once. It reads the bank in force from ``tortie_active[0]``, finds the interface's
# slot for that bank in ``tortie_slots``, tags the packet with the bank (``skb->cb[0]`` =
# CB_BANK_MAGIC | bank; the entry program copies it to ``tortie_pkt.bank``, which picks the set
# maps from ``tortie_setbank_v4|v6``) and tail-calls ``tortie_progs[slot]``, the entry program
# (``tortie_main``) of a policy object. A runtime fills the other bank (programs and sets), then
# switches every interface at once with one write to ``tortie_active``.
SLOT_KEY = Struct(
    "tortie_slot_key",
    (
        Field("ifindex", "__u32", doc="interface the dispatcher runs on"),
        Field("hook", "__u32", doc="TORTIE_HOOK_TC_INGRESS (0) / TORTIE_HOOK_TC_EGRESS (1)"),
        Field("bank", "__u32", doc="0 or 1: which bank this slot belongs to"),
    ),
    "Dispatcher slot key: (interface, hook, bank).",
)
ACTIVE = MapDef(
    "tortie_active", "array", "__u32", "__u32", 1, doc="entry 0: the bank in force (0 or 1)"
)
SLOTS = MapDef(
    "tortie_slots", "hash", SLOT_KEY, "__u32", 65_536, BPF_F_NO_PREALLOC,
    doc="(ifindex, hook, bank) -> index of the entry program in tortie_progs",
)  # fmt: skip
PROGS = MapDef(
    "tortie_progs", "prog_array", "__u32", "__u32", 16_384,
    doc="entry programs (tortie_main) of the generations wired into a bank",
)  # fmt: skip
DISPATCH_STRUCTS: tuple[Struct, ...] = (SLOT_KEY,)
DISPATCH_MAPS: tuple[MapDef, ...] = (ACTIVE, SLOTS, PROGS)
DISPATCH_PROGS = {"tc_ingress": "tortie_disp_in", "tc_egress": "tortie_disp_eg"}

STRUCTS: tuple[Struct, ...] = (
    SET_KEY_V4, SET_KEY_V6, SET_VALUE, CT_KEY, CT_VALUE, FRAG_KEY, FRAG_VALUE, LOG_VALUE, CONFIG,
    PKT,
)  # fmt: skip
# The set tries themselves are declared too (shared, unused by the code): their definitions put
# the key and value structs into every object's BTF, and a runtime creates the banks from them.
MAPS: tuple[MapDef, ...] = (
    SETS_V4, SETS_V6, SET_BANKS_V4, SET_BANKS_V6, CT, FRAGS, LOG, CONFIG_MAP, STATE
)  # fmt: skip
SHARED_MAPS: tuple[MapDef, ...] = tuple(m for m in MAPS if m.shared)

# Constants both sides use (printed as #defines into tortie_maps.h).
HOOK_TC_INGRESS = 0  # packets arriving on the interface (a workload's egress, a HEP's ingress)
HOOK_TC_EGRESS = 1  # packets leaving through it (a workload's ingress, a HEP's egress)
E2H_DROP, E2H_ACCEPT, E2H_RETURN = 0, 1, 2
CFG_F_NONE = 0
CB_BANK_MAGIC = 0x7A5E0000  # skb->cb[0] high half: the dispatcher set the bank (low bit)
CB_BANK_MASK = 0xFFFF0000
CONSTANTS: tuple[tuple[str, int], ...] = (
    ("TORTIE_CB_BANK_MAGIC", CB_BANK_MAGIC),
    ("TORTIE_CB_BANK_MASK", CB_BANK_MASK),
    ("TORTIE_E2H_ACCEPT", E2H_ACCEPT),
    ("TORTIE_E2H_DROP", E2H_DROP),
    ("TORTIE_E2H_RETURN", E2H_RETURN),
    ("TORTIE_HOOK_TC_EGRESS", HOOK_TC_EGRESS),
    ("TORTIE_HOOK_TC_INGRESS", HOOK_TC_INGRESS),
    ("TORTIE_SET_KEY_FIXED_BITS", SET_KEY_FIXED_BITS),
)

for _s in (*STRUCTS, *DISPATCH_STRUCTS):
    _s._check()


def slot_key(ifindex: int, hook: int, bank: int) -> bytes:
    return SLOT_KEY.pack(ifindex=ifindex, hook=hook, bank=bank)


def stable_id64(text: str) -> int:
    """A 64-bit id for a string id (set ids, log-rule ids): the first 8 bytes of its SHA-256.

    Ids are compiled into the programs as constants, so they must not depend on what else is
    in the program; ``render`` checks that no two distinct strings collide.
    """
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_id(value: int) -> tuple[int, int]:
    return value >> 32, value & 0xFFFFFFFF


HOST_SET_ID = "tortie:host-ips"  # one id, in both families' set maps


def set_key(
    family: int, set_id: int, addr: bytes, plen: int, proto: int = 0, port: int = 0
) -> bytes:
    """Key bytes of one IP-set member (``addr`` in network order, ``plen`` its prefix length)."""
    hi, lo = split_id(set_id)
    if family == 4:
        (a,) = struct.unpack(">I", addr)
        return SET_KEY_V4.pack(
            prefixlen=SET_KEY_FIXED_BITS + plen,
            set_hi=hi,
            set_lo=lo,
            port=port,
            proto=proto,
            addr=a,
        )
    words = struct.unpack(">4I", addr)
    return SET_KEY_V6.pack(
        prefixlen=SET_KEY_FIXED_BITS + plen,
        set_hi=hi,
        set_lo=lo,
        port=port,
        proto=proto,
        addr=words,
    )


def little_endian_host() -> bool:
    return sys.byteorder == "little"
