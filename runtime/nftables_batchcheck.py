"""What a batch (full or delta) leaves in the kernel, and the comparison with a dump of it.

:func:`expected_chains` / :func:`expected_sets` replay a batch: what it leaves in the chains
it creates or flushes and in the sets it creates. :func:`compare` / :func:`compare_sets` say,
in words, where a dump (:mod:`runtime.nftables_readback`) differs, both sides in that module's
canonical form (its docstring lists each normalisation and why).

A ``NEWCHAIN`` names a new chain unless the batch already created, flushed or added rules to
it; then it is an update the kernel applies to an existing chain (rules and comment stay, seen
with ``nft add chain`` of an existing chain), and the chain's header is not checked.
:func:`expected_sets` knows the elements of sets the batch creates; a ``DELSETELEM`` in the same
batch removes only elements sent byte for byte the same. What cannot be checked: rules a batch
adds to a chain it neither creates nor flushes (the chain's earlier rules are not in the batch;
such a chain is reported, not guessed), and rules positioned by handle (``insert``/``replace``/
``add ... position``), likewise reported.

The agent's chain fast path checks less after its own batches (``runtime/nftables_chains.py``);
the kernel tests hold batches and dumps to this full comparison.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from runtime.nftables_netlink import NFNL_SUBSYS_NFTABLES
from runtime.nftables_readback import (
    NFT_MSG_DELCHAIN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELSET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE,
    NFT_MSG_DESTROYCHAIN,
    NFT_MSG_DESTROYRULE,
    NFT_MSG_DESTROYSET,
    NFT_MSG_DESTROYTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFTA_CHAIN_ID,
    NFTA_CHAIN_NAME,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LOOKUP_SET_ID,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE,
    NFTA_RULE_ID,
    NFTA_RULE_POSITION,
    NFTA_RULE_POSITION_ID,
    NFTA_RULE_TABLE,
    NFTA_RULE_USERDATA,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_SET_ID,
    NFTA_SET_ID,
    NFTA_SET_NAME,
    NLM_F_APPEND,
    NLM_F_REPLACE,
    ChainDump,
    Rule,
    SetDecl,
    _attrs,
    _chain_attrs,
    _first,
    _text,
    _u32,
    canonical_rule,
    canonical_set,
)

__all__ = ["ExpectedChain", "compare", "compare_sets", "expected_chains", "expected_sets"]


@dataclass(frozen=True, slots=True)
class ExpectedChain:
    """What a batch leaves in one chain. ``exists``: the chain is there after the batch;
    ``attrs``: its NEWCHAIN attributes if the batch creates it; ``complete``: ``rules`` are all
    of its rules (it was created or flushed, and no rule was placed by handle); ``notes``: why
    not."""

    name: str
    exists: bool
    attrs: tuple[tuple[int, bytes], ...] | None
    rules: tuple[Rule, ...]
    created: bool = False
    flushed: bool = False
    complete: bool = True
    notes: tuple[str, ...] = ()
    # NFTA_CHAIN_ID -> name, for jumps the batch sends by chain id (the dump names the chain)
    chain_ids: tuple[tuple[int, str], ...] = ()


# -- what a batch leaves -------------------------------------------------------------------------


def _messages(batch: bytes) -> Iterable[tuple[int, int, list[tuple[int, bytes]]]]:
    """(nf_tables message type, flags, attributes) of every nf_tables message of a batch."""
    off = 0
    while off + 16 <= len(batch):
        length, kind, flags = struct.unpack_from("=IHH", batch, off)
        if length < 16 or off + length > len(batch):
            raise ValueError("malformed batch")
        if kind >> 8 == NFNL_SUBSYS_NFTABLES:
            yield kind & 0xFF, flags, _attrs(batch, off + 20, off + length)
        off += (length + 3) & ~3


@dataclass
class _State:
    exists: bool = True
    attrs: tuple[tuple[int, bytes], ...] | None = None
    rules: list[tuple[int | None, Rule]] = field(default_factory=list)  # (NFTA_RULE_ID, rule)
    created: bool = False
    flushed: bool = False
    complete: bool = False
    notes: list[str] = field(default_factory=list)


def _walk(batch: bytes, table: str) -> tuple[dict[str, _State], dict[str, SetDecl], dict[int, str]]:
    """Replays the batch's effect on the table's chains and sets."""
    chains: dict[str, _State] = {}
    sets: dict[str, SetDecl] = {}  # by name, or "id:N" for an anonymous set
    set_ids: dict[int, str] = {}
    chain_ids: dict[int, str] = {}
    elems: dict[str, list[bytes]] = {}

    def chain(name: str) -> _State:
        st = chains.get(name)
        if st is None:
            st = chains[name] = _State(notes=["the batch neither creates nor flushes it"])
        return st

    for kind, flags, a in _messages(batch):
        tname = _text(_first(a, 1))  # NFTA_*_TABLE (NFTA_TABLE_NAME for tables) is type 1
        if tname != table:
            continue
        if kind in (NFT_MSG_DELTABLE, NFT_MSG_DESTROYTABLE):
            for st in chains.values():
                st.exists, st.attrs, st.rules, st.complete = False, None, [], True
            sets.clear()
            elems.clear()
        elif kind == NFT_MSG_NEWCHAIN:
            name = _text(_first(a, NFTA_CHAIN_NAME))
            st = chain(name)
            if not (st.exists and (st.created or st.flushed or st.rules)):
                st.exists, st.attrs, st.created, st.rules = True, tuple(a), True, []
                st.flushed, st.complete, st.notes = False, True, []
            # else: a chain the batch already created, flushed or added rules to, named again
            # (nft sends NEWCHAIN {table, name} for every chain of a ``table { ... }`` block,
            # also for one that only gets rules): the kernel keeps its rules and its header.
            cid = _first(a, NFTA_CHAIN_ID)
            if cid is not None:
                chain_ids[_u32(cid)] = name
        elif kind in (NFT_MSG_DELCHAIN, NFT_MSG_DESTROYCHAIN):
            st = chain(_text(_first(a, NFTA_CHAIN_NAME)))
            st.exists, st.attrs, st.rules, st.complete = False, None, [], True
            st.notes = []
        elif kind == NFT_MSG_NEWRULE:
            st = chain(_text(_first(a, NFTA_RULE_CHAIN)))
            exprs = _first(a, NFTA_RULE_EXPRESSIONS) or b""
            anon = []
            for _, elem in _attrs(exprs):
                e = _attrs(elem)
                if _text(_first(e, NFTA_EXPR_NAME)) == "lookup":
                    la = _attrs(_first(e, NFTA_EXPR_DATA) or b"")
                    sid = _first(la, NFTA_LOOKUP_SET_ID)
                    if sid is not None and f"id:{_u32(sid)}" in sets:
                        key = f"id:{_u32(sid)}"
                        anon.append((key, sets[key]))
            skip = {NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA}
            skip |= {NFTA_RULE_ID}
            other = tuple((t, v) for t, v in a if t not in skip)
            rule = Rule(exprs, _first(a, NFTA_RULE_USERDATA), (), tuple(anon))
            rid = _first(a, NFTA_RULE_ID)
            if any(t in (NFTA_RULE_POSITION, NFTA_RULE_POSITION_ID, 3) for t, _ in other):
                st.complete = False
                st.notes.append("a rule placed by handle or position")
            if flags & NLM_F_REPLACE:
                st.complete = False
                st.notes.append("a rule replaced")
            item = (_u32(rid) if rid is not None else None, rule)
            if flags & NLM_F_APPEND:
                st.rules.append(item)
            else:
                st.rules.insert(0, item)
        elif kind in (NFT_MSG_DELRULE, NFT_MSG_DESTROYRULE):
            name = _first(a, NFTA_RULE_CHAIN)
            if name is None:
                continue  # flush of the whole table: not what the batches send
            st = chain(_text(name))
            handle, rid = _first(a, NFTA_RULE_HANDLE), _first(a, NFTA_RULE_ID)
            if handle is None and rid is None:  # flush chain
                st.rules, st.flushed = [], True
                if st.exists:
                    st.complete = True
                    st.notes = [n for n in st.notes if "neither" not in n]
            elif rid is not None and handle is None:
                st.rules = [(i, r) for i, r in st.rules if i != _u32(rid)]
            else:
                st.complete = False
                st.notes.append("a rule deleted by handle")
        elif kind == NFT_MSG_NEWSET:
            name = _text(_first(a, NFTA_SET_NAME))
            sid = _first(a, NFTA_SET_ID)
            key = f"id:{_u32(sid)}" if "%" in name and sid is not None else name
            sets[key] = SetDecl(name, tuple(a), ())
            elems[key] = []
            if sid is not None:
                set_ids[_u32(sid)] = key
        elif kind in (NFT_MSG_DELSET, NFT_MSG_DESTROYSET):
            name = _text(_first(a, NFTA_SET_NAME))
            sets.pop(name, None)
            elems.pop(name, None)
        elif kind in (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM):
            name = _text(_first(a, NFTA_SET_ELEM_LIST_SET))
            sid = _first(a, NFTA_SET_ELEM_LIST_SET_ID)
            key = set_ids.get(_u32(sid), name) if sid is not None else name
            if key not in elems:
                continue  # a set the batch did not create: its elements are not known here
            items = [v for t, v in _attrs(_first(a, NFTA_SET_ELEM_LIST_ELEMENTS) or b"")]
            if kind == NFT_MSG_NEWSETELEM:
                elems[key] += items
            else:
                gone = set(items)
                elems[key] = [e for e in elems[key] if e not in gone]
            sets[key] = SetDecl(sets[key].name, sets[key].attrs, tuple(elems[key]))
    # Rules that look up an anonymous set see its final elements.
    for st in chains.values():
        st.rules = [
            (
                i,
                Rule(
                    r.expressions,
                    r.userdata,
                    r.other,
                    tuple((k, sets.get(k, d)) for k, d in r.anon),
                ),
            )
            for i, r in st.rules
        ]
    return chains, sets, chain_ids


def expected_chains(batch: bytes, table: str = "tortie") -> dict[str, ExpectedChain]:
    """name -> what the chain holds after ``batch`` (full or delta), for every chain the batch
    creates, flushes, deletes or adds rules to. A chain with ``complete`` False (rules added to
    a chain the batch neither creates nor flushes, or placed by handle) cannot be checked:
    :func:`compare` reports it."""
    chains, _, chain_ids = _walk(batch, table)
    ids = tuple(sorted(chain_ids.items()))
    return {
        name: ExpectedChain(
            name,
            st.exists,
            st.attrs,
            tuple(r for _, r in st.rules),
            st.created,
            st.flushed,
            st.complete,
            tuple(st.notes),
            ids,
        )
        for name, st in chains.items()
    }


def expected_sets(batch: bytes, table: str = "tortie") -> dict[str, SetDecl]:
    """name -> the named sets ``batch`` creates (declaration and the elements it adds)."""
    _, sets, _ = _walk(batch, table)
    return {k: v for k, v in sets.items() if not k.startswith("id:")}


# -- comparing -----------------------------------------------------------------------------------


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def compare(expected: Mapping[str, ExpectedChain], dumped: Mapping[str, ChainDump]) -> list[str]:
    """Differences between what the batch left in each expected chain and the kernel's dump of
    it, in words (empty when they agree in canonical form)."""
    problems = []
    for name in sorted(expected):
        want = expected[name]
        have = dumped.get(name)
        if not want.exists:
            if have is not None:
                problems.append(f"chain {name}: should not exist, but the kernel has it")
            continue
        if have is None:
            problems.append(f"chain {name}: missing from the kernel")
            continue
        if not want.complete:
            notes = "; ".join(want.notes)
            problems.append(f"chain {name}: cannot be checked ({notes})")
            continue
        if want.attrs is not None:
            a, b = _chain_attrs(want.attrs, True), _chain_attrs(have.attrs, False)
            if a != b:
                problems.append(f"chain {name}: header differs: sent {a!r}, kernel {b!r}")
        ids = dict(want.chain_ids)
        sent = [canonical_rule(r, ids) for r in want.rules]
        got = [canonical_rule(r) for r in have.rules]
        if sent == got:
            continue
        if len(sent) != len(got):
            problems.append(f"chain {name}: {len(sent)} rules sent, {len(got)} in the kernel")
        for i, (x, y) in enumerate(zip(sent, got, strict=False)):
            if x != y:
                problems.append(
                    f"chain {name}: rule {i} differs:\n  sent   {_short(x)}\n  kernel {_short(y)}"
                )
                break
        else:
            extra = got[len(sent) :] or sent[len(got) :]
            side = "kernel has" if len(got) > len(sent) else "kernel lacks"
            problems.append(f"chain {name}: {side} rule {_short(extra[0])}")
    return problems


def compare_sets(
    expected: Mapping[str, SetDecl], dumped: Mapping[str, SetDecl], elements: bool = False
) -> list[str]:
    """Differences between the sets a batch created and the kernel's declarations (with
    ``elements``, their elements too: the dump must have been made with elements)."""
    problems = []
    for name in sorted(expected):
        have = dumped.get(name)
        if have is None:
            problems.append(f"set {name}: missing from the kernel")
            continue
        a = canonical_set(expected[name], elements)
        b = canonical_set(have, elements)
        if a != b:
            problems.append(f"set {name}: differs:\n  sent   {_short(a)}\n  kernel {_short(b)}")
    return problems
