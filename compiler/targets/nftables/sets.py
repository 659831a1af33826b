"""Named sets: one per IR :class:`~compiler.ir.nodes.AddrSet`, shared by every rule using it.

* selector sets: ``type ipv4_addr`` (``ipv6_addr``), ``flags interval`` — members may be
  NetworkSet CIDRs as well as endpoint /32s;
* named-port sets: ``type ipv4_addr . inet_proto . inet_service``, also ``flags interval`` so a
  member may be a prefix; rules look them up as ``ip daddr . meta l4proto . th dport @set``.

Elements are made a valid interval set before they are written: prefixes collapsed to disjoint
ones (per protocol/port for named-port sets), then sorted. An empty set is declared with no
``elements`` line, which nft accepts. Set names are short stable hashes of the set id
(``s4-…``/``s6-…``, ``np4-…``/``np6-…``); the full id and the selector are in the set's comment
and in a ``#`` line above it. Nothing element-dependent is in a comment, so a membership change
touches only ``elements`` (see :mod:`.incremental`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compiler.ir.nodes import AddrSet, IPNet
from compiler.targets.nftables.names import nft_string, sanitize, script_comment, short_name
from compiler.targets.nftables.rules import key_texts, merged_family_keys, merged_texts, proto

ELEMENTS_PER_LINE = 4


@dataclass(frozen=True, slots=True)
class SetDecl:
    name: str
    set_id: str
    type: str
    comment: str
    header: tuple[str, ...]  # '#' lines written above the declaration
    elements: tuple[str, ...]


def set_family(s: AddrSet) -> int:
    if s.family is not None:
        return s.family
    if s.is_named_port:
        for net, _, _ in s.port_members or ():
            return net.version
    for net in s.members or ():
        return net.version
    return 4


def set_name(s: AddrSet) -> str:
    kind = "np" if s.is_named_port else "s"
    return short_name(f"{kind}{set_family(s)}-", s.id)


def name_sets(sets: Iterable[AddrSet]) -> dict[str, str]:
    """Set id -> nft set name, checked for (astronomically unlikely) hash collisions."""
    names: dict[str, str] = {}
    seen: dict[str, str] = {}
    for s in sets:
        name = set_name(s)
        if name in seen and seen[name] != s.id:
            raise ValueError(f"set name collision: {seen[name]} and {s.id} -> {name}")
        seen[name] = s.id
        names[s.id] = name
    return names


def addr_elements(members: Iterable[IPNet]) -> tuple[str, ...]:
    return tuple(merged_texts(members))


def port_elements(members: Iterable[tuple[IPNet, int, int]]) -> tuple[str, ...]:
    """``addr . proto . port`` elements: the addresses merged per (protocol, port), sorted by
    family, address, protocol and port."""
    groups: dict[tuple[int, int], list[IPNet]] = defaultdict(list)
    for net, protocol, port in members:
        groups[(protocol, port)].append(net)
    merged = [
        (protocol, port, f" . {proto(protocol)} . {port}", merged_family_keys(nets))
        for (protocol, port), nets in groups.items()
    ]
    out: list[str] = []
    for family, version in enumerate((4, 6)):
        texts = key_texts(version)
        if len(merged) == 1:  # one (protocol, port), the usual case: the keys are in order
            _, _, tail, keys = merged[0]
            out.extend([texts[key] + tail for key in keys[family]])
            continue
        rows = [
            (key, protocol, port, tail)
            for protocol, port, tail, keys in merged
            for key in keys[family]
        ]
        rows.sort()  # (key, protocol, port) is unique: the text is never compared
        out.extend([texts[key] + tail for key, _, _, tail in rows])
    return tuple(out)


def elements_of(s: AddrSet) -> tuple[str, ...]:
    if s.is_named_port:
        return port_elements(s.port_members or ())
    return addr_elements(s.members or ())


def declare(s: AddrSet, name: str, with_elements: bool = True) -> SetDecl:
    family = set_family(s)
    addr = "ipv4_addr" if family == 4 else "ipv6_addr"
    if s.is_named_port:
        typ = f"{addr} . inet_proto . inet_service"
        proto_text = "any protocol" if s.port_protocol is None else proto(s.port_protocol)
        what = f"named port {s.port_name} ({proto_text}) of {s.selector}"
    else:
        typ = addr
        what = s.selector
    header = (script_comment(f"{s.id}: {what}"),)
    return SetDecl(name, s.id, typ, s.id, header, elements_of(s) if with_elements else ())


def collect(
    sets: Mapping[str, AddrSet],
    used: Iterable[str],
    names: Mapping[str, str],
    refs: Mapping[str, int] | None = None,
) -> list[SetDecl]:
    """Declarations for the used sets: the most referenced first (``refs``: set id -> number of
    rules looking it up), then by nft name. The kernel finds the set of each rule it loads by
    walking the table's sets in declaration order, comparing names: at 10,000 policies, with
    ~1,000 sets, declaring the busy ones first saves ~10 % of the load."""
    refs = refs or {}
    decls = [(refs.get(sid, 0), declare(sets[sid], names[sid])) for sid in set(used)]
    decls.sort(key=lambda rd: (-rd[0], rd[1].name))
    return [d for _, d in decls]


def render_elements(elements: tuple[str, ...], indent: str) -> list[str]:
    """``elements = { a, b, … }`` wrapped a few per line."""
    if not elements:
        return []
    rows = [
        ", ".join(elements[i : i + ELEMENTS_PER_LINE])
        for i in range(0, len(elements), ELEMENTS_PER_LINE)
    ]
    lines = [f"{indent}             {row}," for row in rows]
    lines[0] = f"{indent}elements = {{ {rows[0]},"
    lines[-1] = lines[-1][:-1] + " }"
    return lines


def elements_text(elements: tuple[str, ...], indent: str) -> str:
    """The lines of :func:`render_elements` as one text."""
    return "\n".join(render_elements(elements, indent))


def render_decl(d: SetDecl, indent: str = "\t", with_elements: bool = True) -> list[str]:
    inner = indent + "\t"
    lines = [indent + h for h in d.header]
    lines.append(f"{indent}set {d.name} {{")
    lines.append(f"{inner}type {d.type}")
    lines.append(f"{inner}flags interval")
    lines.append(f"{inner}comment {nft_string(sanitize(d.comment))}")
    if with_elements:
        lines.extend(render_elements(d.elements, inner))
    lines.append(f"{indent}}}")
    return lines
