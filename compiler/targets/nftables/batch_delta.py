"""A delta transaction as the nf_tables netlink batch ``nft -f delta`` sends, without ``nft``.

``runtime/nftables_delta.py`` turns two full scripts into a *delta*: flushes of changed and
vanishing chains, element deletions, a ``table inet tortie { ... }`` block (new sets, maps and
chains whole, the new rules of changed chains), element additions, then deletions of chains,
sets and maps. ``nft -f`` costs ~0.33 s for such a delta at 10,000 policies, nearly all of it
fetching its cache of the whole table (every interval set's elements included). The kernel needs
none of that: :func:`encode_delta` writes the batch itself, from the delta and what the caller
knows of the sets that already exist (``base``), and the runtime sends it with
``runtime.nftables_netlink.send_batch`` (~ms). One ``sendmsg``, one transaction: all or nothing.

What nft 1.0.6 sends (seen with ``strace -e write=all``; ``tests/kernel/test_nftables_batch_delta.py``
compares the kernel's state after both ways):

* ``flush chain inet T C``: ``DELRULE`` {table, chain}.
* ``delete element inet T S { ... }``: ``DELSETELEM`` {table, set, elements} (no set id), the
  elements in the order written: an interval set's range as its start element and its end
  element (``hi + 1``, flagged ``INTERVAL_END``); a named-port (concatenated, pipapo) element as
  ``KEY`` alone, or ``KEY`` and ``KEY_END`` for every element of the command if any of them is a
  prefix; a map's element as its key alone.
* ``table inet T { ... }``: ``NEWTABLE`` {table, flags 0}, then ``NEWCHAIN`` for every chain of
  the block (an existing chain that only gets rules too: {table, name}), the new sets and their
  elements, then the rules: exactly what ``batch.py`` encodes for a full script's table block.
* ``add element inet T S { ... }``: ``NEWSETELEM`` {table, set, set id, elements}; an interval
  set's ranges sorted, and an end element at 0 first only if the set holds no element at all
  (``empty``) and no range starts at 0.
* ``delete chain``: ``DELCHAIN`` {table, name}; ``delete set``/``delete map``: ``DELSET``
  {table, name}.

Set ids (``NFTA_SET_ELEM_LIST_SET_ID``, ``NFTA_LOOKUP_SET_ID``): nft numbers sets in the order it
allocates them: first the sets declared in the delta's table block, then every set of its cache,
in the kernel's order (anonymous sets too), then the anonymous sets of the delta's rules. This
module numbers existing sets by their position in ``base`` (so ids equal nft's when ``base``
lists the kernel's sets in the kernel's order, an anonymous one as ``None``). The kernel
resolves an existing set by its name first, so the ids of existing sets do not change what it
does; only an anonymous set needs its id, and that one is consistent within the batch.

Known differences from nft's bytes, by design: sequence numbers; the acknowledgement asked on the
last message (``send_batch`` waits for it); the ``NFTA_LIST_ELEM`` attribute type of the
elements of sets created in the table block (``batch.py`` writes 1 for each; nft numbers them
1, 2, 3, ...; the kernel does not read it; the element commands here number them like nft).

Anything else — another statement, a reference to a set not in ``base``, a range that reaches
the top of its type in an element command — raises :class:`batch.Unencodable`: use ``nft -f``.

>>> delta = "flush chain inet tortie c\\ndelete set inet tortie old\\n"
>>> data = encode_delta(delta, {"old": "set old {\\n\\ttype ifname\\n}"})
>>> len(data)  # BATCH_BEGIN, DELRULE, DELSET, BATCH_END
120
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache

from compiler.perf import paused_gc
from compiler.targets.nftables import batch as nb
from compiler.targets.nftables.batch import (
    _ELEMS_MAX,
    _HDR,
    IFNAME,
    NFT_MSG_NEWSETELEM,
    NLA_F_NESTED,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    TYPES,
    Unencodable,
    _address_ranges,
    _attr,
    _Batch,
    _chunks,
    _data,
    _ifname,
    _interval_elements,
    _name,
    _nest,
    _port_range_elements,
    _Set,
    _split_elements,
    _split_ranges,
    _str,
)
from compiler.targets.nftables.names import NFT_STRING

__all__ = ["Unencodable", "declarations", "encode_delta"]

NFT_MSG_DELCHAIN = 5
NFT_MSG_DELRULE = 8
NFT_MSG_DELSET = 11
NFT_MSG_DELSETELEM = 14
_NP_TYPES = {
    "ipv4_addr . inet_proto . inet_service": 4,
    "ipv6_addr . inet_proto . inet_service": 6,
}


# -- what the caller knows of existing sets -------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def _declaration(name: str, text: str) -> tuple[str, str, int, int]:
    """(kind for ``_Set``, key type text, key length, family) of an existing set's declaration:
    ``set NAME {`` / ``map NAME {`` (optional), ``type ...``, ``flags ...``, ``comment ...``,
    ``}`` (optional); no elements."""
    typ = flags = None
    is_map = None
    for raw in text.split("\n"):
        s = raw.strip()
        if not s or s[0] == "#" or s == "}" or s.startswith("comment "):
            continue
        words = s.split()
        if len(words) == 3 and words[0] in ("set", "map") and words[2] == "{":
            if words[1] != name:
                raise Unencodable(f"declaration of {words[1]!r} given for {name!r}")
            is_map = words[0] == "map"
            continue
        if s.startswith("type ") and typ is None:
            typ = s[5:]
        elif s.startswith("flags ") and flags is None:
            flags = s[6:]
        else:
            raise Unencodable(f"declaration line not handled for {name}: {s[:60]!r}")
    if typ is None:
        raise Unencodable(f"declaration of {name} without a type")
    interval = flags == "interval"
    if flags is not None and not interval:
        raise Unencodable(f"set flags not handled: {flags!r}")
    key, sep, data = typ.partition(" : ")
    if sep or is_map:
        if not sep or data != "verdict" or interval or (key != "ifname" and key not in TYPES):
            raise Unencodable(f"map type not handled: {typ!r}")
        # (the family tells an ipv6_addr key from an ifname key: both are 16 bytes)
        version = 4 if key == "ipv4_addr" else 6 if key == "ipv6_addr" else 0
        return "map", key, 16 if key == "ifname" else TYPES[key][1], version
    if typ in TYPES and interval:
        version = 4 if typ == "ipv4_addr" else 6 if typ == "ipv6_addr" else 0
        return typ, typ, TYPES[typ][1], version
    if typ == "ifname" and not interval:
        return "ifname", typ, IFNAME[1], 0
    if typ in _NP_TYPES and interval:
        version = _NP_TYPES[typ]
        return "np", typ, (4 if version == 4 else 16) + 8, version
    raise Unencodable(f"set type not handled: {typ!r} (flags {flags!r})")


def declarations(script: str) -> dict[str, str]:
    """name -> declaration (the block's lines but its elements) of every set and map of a full
    script, in the script's order (the kernel's, after that script was loaded; anonymous sets,
    which follow them there, are not included)."""
    out: dict[str, str] = {}
    lines = script.split("\n")
    i, n = 0, len(lines)
    while i < n:
        words = lines[i].split()
        if (
            len(words) == 3
            and words[0] in ("set", "map")
            and words[2] == "{"
            and lines[i][:1] == "\t"
        ):
            head = [lines[i].strip()]
            j = i + 1
            while j < n and lines[j] != "\t}":
                s = lines[j].strip()
                if s.startswith("elements = "):
                    while j < n and not lines[j].rstrip().endswith("}"):
                        j += 1
                elif s:
                    head.append(s)
                j += 1
            out[words[1]] = "\n".join([*head, "}"])
            i = j + 1
            continue
        i += 1
    return out


# -- the encoder ----------------------------------------------------------------------------------


class _DeltaBatch(_Batch):
    def __init__(self, base: Mapping[str, str | None], empty: Collection[str]) -> None:
        super().__init__()
        self.base = base
        self.empty = empty
        self.position = {name: k for k, name in enumerate(base, 1)}
        self.declared = 0  # sets declared in the table block (nft allocates them first)
        self.block_done = False

    def existing(self, name: str) -> _Set:
        """The ``_Set`` of an existing set, numbered as nft's cache would (see the module)."""
        s = self.sets.get(name)
        if s is not None:
            return s
        text = self.base.get(name)
        if text is None:
            raise Unencodable(f"set {name!r} neither in base nor declared in the delta")
        kind, _, klen, version = _declaration(name, text)
        s = self.sets[name] = _Set(name, self.declared + self.position[name], kind, klen, version)
        return s

    # the table block ----------------------------------------------------------------------------

    def block(self, lines: list[str], i: int, end: int) -> None:
        if self.block_done:
            raise Unencodable("a second table block")
        self.block_done = True
        for name in _block_sets(lines[i:end]):
            if name in self.base:
                raise Unencodable(f"set {name} declared in the delta already exists")
        self.table_body(lines, i, end)

    def rules(self, chains: list[tuple[str, list[str]]]) -> None:
        # The block's own sets were numbered 1..declared; the cache's sets follow them; anonymous
        # sets of the rules come after the cache.
        self.next_id = self.declared + len(self.base) + 1
        # Rules may look up existing sets: put them where _Rules finds them.
        for chain_lines in chains:
            for text in chain_lines[1]:
                # (not inside a quoted string: a comment may hold any "@word")
                for tok in NFT_STRING.sub('""', text).split() if '"' in text else text.split():
                    if tok.startswith("@") and tok[1:] not in self.sets:
                        name = tok[1:]
                        if name not in self.base:
                            raise Unencodable(f"unknown set, not in base: {tok!r}")
                        self.existing(name)
        super().rules(chains)

    # commands ---------------------------------------------------------------------------------

    def command(self, line: str) -> None:
        words = line.split()
        if len(words) < 4 or words[2] != "inet":
            raise Unencodable(f"statement not handled: {line[:80]!r}")
        verb, what, table = words[0], words[1], _name(words[3])
        if table != self.table:
            raise Unencodable(f"another table: {table!r}")
        t = self.table_attr
        if what == "element" and verb in ("add", "delete") and len(words) >= 6:
            name = _name(words[4])
            rest = line.split(None, 5)[5]
            self.element_command(verb, name, _split_elements(rest))
        elif len(words) != 5:
            raise Unencodable(f"statement not handled: {line[:80]!r}")
        elif verb == "flush" and what == "chain":
            self.add(NFT_MSG_DELRULE, NLM_F_REQUEST, t + _str(2, _name(words[4])))
        elif verb == "delete" and what == "chain":
            self.add(NFT_MSG_DELCHAIN, NLM_F_REQUEST, t + _str(3, _name(words[4])))
        elif verb == "delete" and what in ("set", "map"):
            name = _name(words[4])
            if name not in self.base:
                raise Unencodable(f"delete of a set not in base: {name!r}")
            kind = _declaration(name, self.base[name] or "")[0]
            if (kind == "map") != (what == "map"):
                raise Unencodable(f"delete {what} of a {'map' if kind == 'map' else 'set'}")
            self.add(NFT_MSG_DELSET, NLM_F_REQUEST, t + _str(2, name))
        else:
            raise Unencodable(f"statement not handled: {line[:80]!r}")

    def element_command(self, verb: str, name: str, items: list[str]) -> None:
        if not items:
            raise Unencodable(f"{verb} element without elements")
        s = self.existing(name)
        add = verb == "add"
        if s.kind == "map":
            key_type = {4: "ipv4_addr", 6: "ipv6_addr"}.get(s.version, "ifname")
            if add:
                elems = [self._map_element(key_type, s.key_len, item) for item in items]
            else:
                elems = [_nest(1, _data(1, _map_key(key_type, item))) for item in items]
        elif s.kind == "ifname":
            elems = [_nest(1, _data(1, _ifname(item))) for item in items]
        elif s.kind == "np":
            if add:
                elems = self._concat_elements(s.version, items)
            else:
                elems = self._concat_deletes(s.version, items)
        else:
            width = s.key_len
            if s.version:
                ranges = _address_ranges(s.version, items)
            else:
                ranges = [_port_range_elements(item) for item in items]
            top = (1 << (8 * width)) - 1
            if any(r[1] == top for r in ranges):
                raise Unencodable(f"a range reaching the top of {name}'s keys")
            if add:
                elems = _interval_elements(ranges, width)
                if name not in self.empty and len(elems) > len(ranges):
                    elems = elems[1:]  # nft adds the end element at 0 to an empty set only
            else:
                elems = [r[2] for r in ranges]
            elems = _split_ranges(elems, width)
        if add:
            head = self.table_attr + _str(2, name) + nb._u32(4, s.set_id)
            kind, flags = NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE
        else:
            head = self.table_attr + _str(2, name)
            kind, flags = NFT_MSG_DELSETELEM, NLM_F_REQUEST
        for chunk in [elems] if sum(map(len, elems)) <= _ELEMS_MAX else _chunks(elems):
            self.add(kind, flags, head, _attr(3 | NLA_F_NESTED, _numbered(chunk)))

    def _concat_deletes(self, version: int, items: list[str]) -> list[bytes]:
        """nft deletes a named-port element by its KEY alone, unless an element of the same
        command is a prefix: then every element by KEY and KEY_END (as it adds them)."""
        full = self._concat_elements(version, items)
        width = 4 if version == 4 else 16
        bounds = self.bounds[version]
        if any(
            lo != hi for lo, hi in map(bounds.__getitem__, (i.partition(" . ")[0] for i in items))
        ):
            return full
        out = []
        for e in full:
            # head: elem nest (4) + KEY nest (4) + DATA_VALUE (4) + value (width + 8)
            value = e[12 : 12 + width + 8]
            out.append(_nest(1, _nest(1, _attr(1, value))))
        return out


def _map_key(key_type: str, item: str) -> bytes:
    key, sep, _ = item.partition(" : ")
    if not sep:
        raise Unencodable(f"map element not handled: {item!r}")
    if key_type == "ifname":
        return _ifname(key)
    return nb._addr(4 if key_type == "ipv4_addr" else 6, key)


def _numbered(elems: list[bytes]) -> bytes:
    """The elements as nft numbers them: the k-th NFTA_LIST_ELEM nest has type k."""
    return b"".join(
        _HDR.pack(_HDR.unpack_from(e)[0], k | NLA_F_NESTED) + e[4:] for k, e in enumerate(elems, 1)
    )


def encode_delta(script: str, base: Mapping[str, str | None], empty: Collection[str] = ()) -> bytes:
    """The netlink batch of a delta transaction (``runtime.nftables_delta.delta``'s text).

    ``base``: every set and map that exists in the kernel and that the delta's element commands,
    rules or deletions name, as name -> its declaration (:func:`declarations` of the script in
    force gives them all); its order gives nft's set ids (see the module); ``None`` stands for
    a set the delta cannot name (an anonymous set), for the numbering only. ``empty``: names
    of interval sets in ``base`` that hold no element at all in the kernel (created without
    elements and never added to; a set whose elements were all deleted still holds nft's end
    element at 0): nft adds that element first when elements are added to such a set.

    Raises :class:`Unencodable` for anything not reproduced exactly (see the module)."""
    with paused_gc():
        return _encode_delta(script, base, empty)


def _encode_delta(script: str, base: Mapping[str, str | None], empty: Collection[str]) -> bytes:
    b = _DeltaBatch(base, empty)
    lines = script.split("\n")
    # nft numbers the block's sets while parsing, before it fetches its cache.
    b.declared = len(_block_sets(lines))
    i, n = 0, len(lines)
    while i < n:
        s = lines[i].strip()
        i += 1
        if not s or s.startswith("#"):
            continue
        words = s.split()
        if not b.table:
            at = 1 if words[0] == "table" else 2
            if len(words) < at + 2 or words[at] != "inet":
                raise Unencodable(f"statement not handled: {s[:80]!r}")
            b.table = _name(words[at + 1])
            b.table_attr = _str(1, b.table)
        if len(words) == 4 and words[:2] == ["table", "inet"] and words[3] == "{":
            if _name(words[2]) != b.table:
                raise Unencodable("another table")
            try:
                end = lines.index("}", i)
            except ValueError:
                raise Unencodable("table not closed") from None
            b.block(lines, i, end)
            i = end + 1
        else:
            b.command(s)
    return b.assemble()


def _block_sets(lines: list[str]) -> list[str]:
    """The names of the sets and maps a table block's lines declare (``\tset NAME {``)."""
    out = []
    for line in lines:
        if line.startswith(("\tset ", "\tmap ")) and line.endswith(" {"):
            w = line.split()
            if len(w) == 3:
                out.append(w[1])
    return out
