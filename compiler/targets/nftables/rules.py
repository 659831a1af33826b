"""Lowering one IR :class:`~compiler.ir.nodes.Match` to nft match expressions.

Every criterion of a Match is ANDed, which nft expresses by writing expressions one after the
other in a rule. Lists that are ORed become one lookup: nets an anonymous interval set
(``ip saddr { 10.0.0.0/8, 192.168.0.0/16 }``), numeric ports an anonymous set of values and
ranges (``th dport { 80, 8000-8080 }``). Negated lists are the same lookup with ``!=``.

The one OR nft cannot write in a single rule is a port list that mixes numeric ports with named
ports, or holds several named ports: each of those is a different lookup (``th dport {…}`` vs
``ip daddr . meta l4proto . th dport @set``). Such a match is split into alternatives that are
made **disjoint**: alternative *k* also requires "none of alternatives 1..k-1", which is a
conjunction of negated lookups and so fits in one rule. Exactly one of the split rules matches a
packet the original matched, so a Log rule still logs once and first-match order is kept.

>>> import ipaddress
>>> from compiler.ir.nodes import Match, PortMatch, Side
>>> m = Match(ip_version=4, protocol=6, dst=Side(
...     nets=(ipaddress.ip_network("10.0.0.0/8"),), ports=PortMatch(((80, 80), (443, 443)))))
>>> lower_match(m, {})
['meta nfproto ipv4 meta l4proto tcp ip daddr 10.0.0.0/8 th dport { 80, 443 }']
>>> m = Match(ip_version=6, dst=Side(ports=PortMatch((), ("n:a:6", "n:b:6"))))
>>> for alt in lower_match(m, {"n:a:6": "np6-a", "n:b:6": "np6-b"}):
...     print(alt)
meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @np6-a
meta nfproto ipv6 ip6 daddr . meta l4proto . th dport != @np6-a ip6 daddr . meta l4proto . th dport @np6-b
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from socket import AF_INET6, inet_ntop

from compiler.ir.nodes import IPNet, Match, PortMatch, Side
from compiler.targets.nftables.consts import ConstSets

# Protocol numbers nft knows by keyword (meta l4proto / inet_proto). Others stay numeric.
PROTO_NAMES: dict[int, str] = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    58: "icmpv6",
    132: "sctp",
    136: "udplite",
}


def proto(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


def _prefixes(lo: int, hi: int, bits: int) -> list[tuple[int, int]]:
    """The minimal prefix cover of the integer interval [lo, hi] as (address, prefixlen)."""
    out = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << bits
        span = hi - lo + 1
        while size > span:
            size >>= 1
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


def _keys(nets: Iterable[IPNet]) -> tuple[dict[int, IPNet], dict[int, IPNet]]:
    """Each network as the integer ``address << 8 | prefixlen`` (v4, v6), deduplicated. Sorted
    keys order by address, then the larger network first.

    Reads ``ipaddress``'s ``_ip``/``_prefixlen``/``_version`` slots: the public properties are
    Python-level calls, and this runs for every member of every set (130,000 at 10,000
    policies)."""
    k4: dict[int, IPNet] = {}
    k6: dict[int, IPNet] = {}
    for n in nets:
        (k4 if n._version == 4 else k6)[(n.network_address._ip << 8) | n._prefixlen] = n
    return k4, k6


def _key_lists(nets: Iterable[IPNet]) -> tuple[list[int], list[int]]:
    """The keys of :func:`_keys` as lists (v4, v6), for callers that need no network objects;
    a network listed twice is listed twice (:func:`_collapse` merges it)."""
    k4: list[int] = []
    k6: list[int] = []
    add4, add6 = k4.append, k6.append
    for n in nets:
        (add4 if n._version == 4 else add6)((n.network_address._ip << 8) | n._prefixlen)
    return k4, k6


def _collapse(keys: list[int], bits: int) -> list[int]:
    """Sorted keys (see :func:`_keys`) collapsed to disjoint prefixes, still sorted: every run
    of overlapping or adjacent networks becomes the minimal prefix cover of its range (the same
    networks again when they were already collapsed). One pass; a run is written out when a
    network starts after its end."""
    out: list[int] = []
    if not keys:
        return out
    run_key = keys[0]
    run_lo = run_key >> 8
    run_end = run_lo + (1 << (bits - (run_key & 255)))  # exclusive
    merged = False  # the run holds more than run_key
    # A last key that starts after every network ends the last run; that key is not written.
    for key in (*keys[1:], (1 << (bits + 1)) << 8):
        lo = key >> 8
        if lo <= run_end:  # overlapping or adjacent: the same run
            merged = True
            end = lo + (1 << (bits - (key & 255)))
            if end > run_end:
                run_end = end
            continue
        if merged:
            out.extend((addr << 8) | plen for addr, plen in _prefixes(run_lo, run_end - 1, bits))
            merged = False
        else:
            out.append(run_key)
        run_key, run_lo, run_end = key, lo, lo + (1 << (bits - (key & 255)))
    return out


def merge_nets(nets: Iterable[IPNet]) -> list[IPNet]:
    """Collapse to disjoint, sorted prefixes (an nft interval set may not hold overlaps).

    The same result as ``ipaddress.collapse_addresses`` per family (v4 first), computed on
    integers: members usually arrive already collapsed (the aggregate_cidrs pass), and then
    every original network object is returned as it is, only sorted."""
    out: list[IPNet] = []
    for (bits, cls), by_key in zip(
        ((32, ipaddress.IPv4Network), (128, ipaddress.IPv6Network)), _keys(nets), strict=True
    ):
        for key in _collapse(sorted(by_key), bits):
            net = by_key.get(key)
            out.append(net if net is not None else cls((key >> 8, key & 255)))
    return out


def addr_text(version: int, value: int) -> str:
    """An address as ``str(ipaddress.ip_address(...))`` writes it (Python 3.11: RFC 5952
    compression, no special form for IPv4-mapped addresses), computed directly."""
    if version == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    if _NTOP_IS_RFC5952 and value >> 32 not in (0, 0xFFFF):
        # The C library's inet_ntop: 5x faster than _v6_text. It writes addresses in ::/96
        # and ::ffff:0:0/96 with a dotted IPv4 tail, which ipaddress does not: those (and
        # nothing else) take the Python path.
        return inet_ntop(AF_INET6, value.to_bytes(16, "big"))
    return _v6_text(value)


def _v6_text(value: int) -> str:
    """An IPv6 address as RFC 5952 text: hextets without leading zeros, the longest run of two
    or more zero hextets (the first of equal runs) as ``::``."""
    digits = f"{value:032x}"
    hextets = [digits[i : i + 4].lstrip("0") or "0" for i in range(0, 32, 4)]
    best_start, best_len, start = -1, 0, -1
    for i, h in enumerate(hextets):
        if h != "0":
            start = -1
            continue
        if start < 0:
            start = i
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    if best_len < 2:
        return ":".join(hextets)
    head = ":".join(hextets[:best_start])
    tail = ":".join(hextets[best_start + best_len :])
    return f"{head}::{tail}"


def _ntop_is_rfc5952() -> bool:
    """Whether this platform's ``inet_ntop`` writes what :func:`_v6_text` writes (glibc's does,
    outside the IPv4-tail prefixes); checked once, on addresses whose compression has a choice
    to make. If not, :func:`_v6_text` is used throughout."""
    samples = (
        0x20010DB8000000000001000000000001,  # two equal runs: the first one
        0x20010DB8000000010000000000000001,  # the longer (second) run
        0x20010DB8000100010001000100010001,  # one zero hextet: not compressed
        0x20010DB8000000000000000000000000,  # trailing run
        0x00000000000000010000000000000001,  # leading run
        0xFD000000000000000000000000000001,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF,
        0x000100000000000000000000FFFF0000,
    )
    try:
        return all(inet_ntop(AF_INET6, v.to_bytes(16, "big")) == _v6_text(v) for v in samples)
    except (OSError, ValueError):
        return False


_NTOP_IS_RFC5952 = _ntop_is_rfc5952()


class _KeyTexts(dict[int, str]):
    """:func:`net_text` of :func:`_keys` keys of one family, computed on first use (the same
    endpoint addresses are members of many sets). Emptied when it reaches CACHE_MAX entries, so
    that a long-running process does not keep every address it ever saw."""

    CACHE_MAX = 1 << 17

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self.host_len = 32 if version == 4 else 128

    def __missing__(self, key: int) -> str:
        if len(self) >= self.CACHE_MAX:
            self.clear()
        plen = key & 255
        text = addr_text(self.version, key >> 8)
        if plen != self.host_len:
            text = f"{text}/{plen}"
        self[key] = text
        return text


_TEXTS = {4: _KeyTexts(4), 6: _KeyTexts(6)}


def merged_family_keys(nets: Iterable[IPNet]) -> tuple[list[int], list[int]]:
    """The :func:`_keys` keys of ``merge_nets(nets)``, per family (v4, v6), sorted."""
    k4, k6 = _key_lists(nets)
    k4.sort()
    k6.sort()
    return _collapse(k4, 32), _collapse(k6, 128)


def key_texts(version: int) -> Mapping[int, str]:
    """:func:`net_text` by :func:`_keys` key, for one family."""
    return _TEXTS[version]


def merged_texts(nets: Iterable[IPNet]) -> list[str]:
    """``[net_text(n) for n in merge_nets(nets)]``, without building network objects."""
    k4, k6 = merged_family_keys(nets)
    texts = _TEXTS[4]
    out = [texts[key] for key in k4]
    if k6:
        texts = _TEXTS[6]
        out.extend([texts[key] for key in k6])
    return out


def merged_keys(nets: Iterable[IPNet]) -> list[tuple[int, int, int]]:
    """(version, address, prefixlen) of ``merge_nets(nets)``, in the same order."""
    k4, k6 = merged_family_keys(nets)
    out = [(4, key >> 8, key & 255) for key in k4]
    out.extend([(6, key >> 8, key & 255) for key in k6])
    return out


def key_text(version: int, address: int, prefixlen: int) -> str:
    """:func:`net_text` of the network (version, address, prefixlen)."""
    return _TEXTS[version][(address << 8) | prefixlen]


def net_text(net: IPNet) -> str:
    """A host prefix prints as a bare address, like nft lists it."""
    return key_text(net.version, int(net.network_address), net.prefixlen)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _range_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def anon_set(items: list[str]) -> str:
    """A single value stays bare, several go into an anonymous set."""
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _listed(items: list[str], typ: str, prefix: str, consts: ConstSets | None, what: str) -> str:
    """A single value stays bare; several go into a named constant set when ``consts`` is
    given (see :mod:`.consts`), else into an anonymous set."""
    if len(items) == 1 or consts is None:
        return anon_set(items)
    return consts.ref(prefix, typ, tuple(items), what)


def _family_kw(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _family_of(m: Match, set_families: Mapping[str, int]) -> int | None:
    if m.ip_version is not None:
        return m.ip_version
    for side in (m.src, m.dst):
        for net in (*(side.nets or ()), *side.not_nets):
            return net.version
        for sid in (*side.sets, *side.not_sets):
            if sid in set_families:
                return set_families[sid]
    return None


class _Lookup:
    """One membership test ``lhs rhs`` that can be negated as ``lhs != rhs``."""

    __slots__ = ("lhs", "rhs")

    def __init__(self, lhs: str, rhs: str) -> None:
        self.lhs, self.rhs = lhs, rhs

    def positive(self) -> str:
        return f"{self.lhs} {self.rhs}"

    def negative(self) -> str:
        return f"{self.lhs} != {self.rhs}"


def _port_lookups(
    pm: PortMatch,
    addr: str | None,
    port: str,
    set_names: Mapping[str, str],
    consts: ConstSets | None = None,
) -> list[_Lookup]:
    out = []
    ranges = merge_ranges(pm.ranges)
    if ranges:
        items = [_range_text(lo, hi) for lo, hi in ranges]
        out.append(_Lookup(port, _listed(items, "inet_service", "cp-", consts, "ports")))
    for sid in pm.named_sets:
        if addr is None:
            raise ValueError(f"named-port set {sid} in a rule without an IP family")
        out.append(_Lookup(f"{addr} . meta l4proto . {port}", "@" + set_names[sid]))
    return out


def _side(
    side: Side,
    direction: str,
    family: int | None,
    set_names: Mapping[str, str],
    consts: ConstSets | None = None,
) -> tuple[list[str], list[_Lookup] | None] | None:
    """(ANDed expressions, port alternatives or None) for one side; None = never matches."""
    addr = f"{_family_kw(family)} {direction}addr" if family is not None else None
    port = f"th {direction}port"
    exprs: list[str] = []
    net_type = f"ipv{family}_addr"
    net_prefix = f"c{family}-"
    if side.nets is not None:
        items = merged_texts(side.nets)
        if not items:
            return None
        exprs.append(f"{addr} {_listed(items, net_type, net_prefix, consts, 'nets')}")
    if side.not_nets:
        items = merged_texts(side.not_nets)
        exprs.append(f"{addr} != {_listed(items, net_type, net_prefix, consts, 'nets')}")
    exprs.extend(f"{addr} @{set_names[sid]}" for sid in side.sets)
    exprs.extend(f"{addr} != @{set_names[sid]}" for sid in side.not_sets)
    if side.not_ports is not None:
        lookups = _port_lookups(side.not_ports, addr, port, set_names, consts)
        exprs.extend(lk.negative() for lk in lookups)
    alternatives = None
    if side.ports is not None:
        alternatives = _port_lookups(side.ports, addr, port, set_names, consts)
        if not alternatives:
            return None
    return exprs, alternatives


def _disjoint(alternatives: list[_Lookup] | None) -> list[list[str]]:
    """Alternative k as "k and not any earlier one" (see the module docstring)."""
    if alternatives is None:
        return [[]]
    return [
        [*(prev.negative() for prev in alternatives[:k]), alt.positive()]
        for k, alt in enumerate(alternatives)
    ]


def _icmp(m: Match, family: int | None) -> list[str]:
    out: list[str] = []
    if m.icmp_type is None and m.not_icmp_type is None:
        return out
    kw = "icmpv6" if m.protocol == 58 or (m.protocol is None and family == 6) else "icmp"
    if m.icmp_type is not None:
        out.append(f"{kw} type {m.icmp_type}")
        if m.icmp_code is not None:
            out.append(f"{kw} code {m.icmp_code}")
    if m.not_icmp_type is not None:
        if m.not_icmp_code is None:
            out.append(f"{kw} type != {m.not_icmp_type}")
        else:
            # NOT (type == t AND code == c); nft cannot negate two matches, but it can negate
            # one lookup of the concatenation.
            out.append(f"{kw} type . {kw} code != {{ {m.not_icmp_type} . {m.not_icmp_code} }}")
    return out


def lower_match(
    m: Match,
    set_names: Mapping[str, str],
    set_families: Mapping[str, int] | None = None,
    consts: ConstSets | None = None,
) -> list[str]:
    """The nft match text of ``m`` as disjoint alternatives (usually one); ``[]`` when the match
    can never be satisfied (e.g. a nets field the family split emptied). With ``consts``, lists
    of several nets or ports are named constant sets instead of anonymous ones."""
    family = _family_of(m, set_families or {})
    src = _side(m.src, "s", family, set_names, consts)
    dst = _side(m.dst, "d", family, set_names, consts)
    if src is None or dst is None:
        return []
    head: list[str] = []
    if family is not None:
        head.append(f"meta nfproto ipv{family}")
    if m.protocol is not None:
        head.append(f"meta l4proto {proto(m.protocol)}")
    if m.not_protocol is not None:
        head.append(f"meta l4proto != {proto(m.not_protocol)}")
    head.extend(_icmp(m, family))
    head.extend(src[0])
    head.extend(dst[0])
    out = []
    for s_alt in _disjoint(src[1]):
        for d_alt in _disjoint(dst[1]):
            out.append(" ".join([*head, *s_alt, *d_alt]))
    return out
