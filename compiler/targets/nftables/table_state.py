"""What a chain update (:mod:`.chain_update`) knows of the table in force.

A :class:`TableState` is made from the renderer of a full render (kept inside
:func:`.script.keeping_renderers`: its :class:`~.chains.ChainBuilder` holds every chain and the
caches that build policy and sequence chains) and then moves from program to program: a chain
update takes it from the old program to the new one, a set-only update carries it along
(:func:`carry`). Besides the builder it keeps, per non-base chain, what the chain refers to
(``jump``/``goto`` targets, ``@set`` lookups) and, per name, how many chains refer to it: what
nothing refers to is not in the table (the full render declares exactly what its rules use).
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.targets.nftables.chains import Chain, ChainBuilder
from compiler.targets.nftables.names import NFT_STRING
from compiler.targets.nftables.script import (
    RENDERED,
    RENDERERS,
    RenderInfo,
    ScriptRenderer,
    const_lines,
)
from compiler.targets.nftables.sets import declare, elements_of, render_decl

__all__ = ["TableState", "carry", "prepare", "refs", "rule_lines", "take_state"]

_REF = re.compile(r"(?:\bjump |\bgoto |@)([^\s,{}]+)")


def refs(chain: Chain) -> frozenset[str]:
    """The chains a chain jumps to and the sets and maps it looks up, by name (quoted strings,
    i.e. comments and log prefixes, left out)."""
    out: set[str] = set()
    for line in chain.lines:
        if line.startswith("#"):
            continue
        out.update(_REF.findall(NFT_STRING.sub('""', line) if '"' in line else line))
    return frozenset(out)


def rule_lines(chain: Chain) -> list[str]:
    """The chain's rules (its lines but the ``#`` ones)."""
    return [line for line in chain.lines if not line.startswith("#")]


@dataclass
class TableState:
    """The table in force for a program, as a chain update needs it."""

    b: ChainBuilder
    refs: dict[str, frozenset[str]]  # non-base chain -> what it refers to
    count: dict[str, int]  # name -> how many chains refer to it (absent: none)
    set_ids: dict[str, str]  # IR set nft name -> set id
    declared: dict[str, tuple[str, ...]]  # IR set nft name -> its elements in the table
    order: list[str]  # declared IR sets in the order RenderInfo lists them
    workloads: dict[str, ir.Endpoint]  # local workloads by id
    heps: tuple[ir.Endpoint, ...]
    # IR set nft name -> (the AddrSet, its elements), for every set whose elements were
    # computed: a set declared again later, still the same object, is not computed again
    known: dict[str, tuple[ir.AddrSet, tuple[str, ...]]] = field(default_factory=dict)
    # IR sets that hold no element at all in the kernel (created without any, never added to:
    # nft's first ``add element`` to such an interval set also adds an end element at 0)
    bare: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, r: ScriptRenderer, info: RenderInfo) -> TableState | None:
        b = r.b
        chain_refs = {name: refs(chain) for name, chain in b.chains.items()}
        count: dict[str, int] = {}
        for rs in chain_refs.values():
            for x in rs:
                count[x] = count.get(x, 0) + 1
        set_ids = {name: sid for sid, name in b.set_names.items()}
        declared = {name: elements for _, name, _, elements in info.sets}
        # The table declares exactly what its rules refer to (chains.ChainBuilder._rule_lines):
        # check it, since the counts decide what to declare and delete.
        referenced_sets = {x for x in count if x in set_ids}
        if referenced_sets != declared.keys() or not count.keys() <= (
            b.chains.keys() | set_ids.keys() | b.consts.sets.keys()
        ):
            return None
        if set(b.consts.sets) != {x for x in count if x in b.consts.sets}:
            return None
        return cls(
            b,
            chain_refs,
            count,
            set_ids,
            declared,
            [name for _, name, _, _ in info.sets],
            {e.id: e for e in r.eps.workloads},
            tuple(r.eps.heps),
            {name: (s, elements) for _, name, s, elements in info.sets},
            {name for _, name, _, elements in info.sets if not elements},
        )

    # -- reference counts ---------------------------------------------------------------------

    def take(self, names: Iterable[str], before: dict[str, bool]) -> None:
        """Count the references of the (new) chains ``names``; ``before`` records, for each
        name whose count changes first here, whether anything referred to it before."""
        count = self.count
        for name in names:
            rs = self.refs[name] = refs(self.b.chains[name])
            for x in rs:
                n = count.get(x, 0)
                before.setdefault(x, n > 0)
                count[x] = n + 1

    def release(self, rs: Iterable[frozenset[str]], before: dict[str, bool]) -> dict[str, Chain]:
        """Drop these references (of chains that went); delete, recursively, the chains nothing
        refers to any more (forgotten by the builder's caches too) and return them."""
        count, b = self.count, self.b
        garbage: list[str] = []

        def drop(x: str) -> None:
            before.setdefault(x, True)
            n = count[x] - 1
            if n:
                count[x] = n
            else:
                del count[x]
                garbage.append(x)

        for r in rs:
            for x in r:
                drop(x)
        dropped: dict[str, Chain] = {}
        while garbage:
            x = garbage.pop()
            chain = b.chains.pop(x, None)
            if chain is None:
                continue  # a set or map
            dropped[x] = chain
            key = b.owners.pop(x, None)
            if key is not None:
                b._infos.pop(key, None)
                if key[0] == "policy":
                    b._by_policy.get((key[2], key[3]), {}).pop(key[1], None)
            for y in self.refs.pop(x):
                drop(y)
        return dropped

    # -- sets -----------------------------------------------------------------------------

    def elements(self, program: ir.Program, name: str) -> tuple[str, ...]:
        """The elements of IR set ``name`` in ``program``: computed once per set object."""
        s = program.sets[self.set_ids[name]]
        known = self.known.get(name)
        if known is not None and known[0] is s:
            return known[1]
        elements = elements_of(s)
        self.known[name] = (s, elements)
        return elements

    def set_block(
        self, program: ir.Program, name: str, elements: tuple[str, ...] | None
    ) -> list[str]:
        """The block of an IR or constant set of the table (IR sets: with ``elements``; None:
        the declaration alone)."""
        sid = self.set_ids.get(name)
        if sid is not None:
            decl = declare(program.sets[sid], name, with_elements=False)
            decl = dataclasses.replace(decl, elements=elements or ())
            return render_decl(decl, "\t", elements is not None)[len(decl.header) :]
        return const_lines(self.b.consts.sets[name], elements is not None)

    def local_workloads(self, program: ir.Program) -> dict[str, ir.Endpoint] | None:
        """``program``'s local workloads by id, or None when its local host endpoints are not
        the state's (the same objects)."""
        node = program.node
        now = [e for e in program.endpoints if e.node == node]
        heps = [e for e in now if e.is_host]
        if len(heps) != len(self.heps) or any(
            a is not b for a, b in zip(heps, self.heps, strict=True)
        ):
            return None
        return {e.id: e for e in now if not e.is_host}


_STATES: weakref.WeakKeyDictionary[ir.Program, TableState] = weakref.WeakKeyDictionary()


def prepare(program: ir.Program) -> bool:
    """Make the state of a program rendered inside :func:`.script.keeping_renderers` now
    (~0.3 s at 10,000 policies) rather than at its first chain update; False when there is
    none to make."""
    r = RENDERERS.pop(program, None)
    if program in _STATES:
        return True
    info = RENDERED.get(program)
    if r is None or info is None:
        return False
    st = TableState.of(r, info)
    if st is None:
        return False
    _STATES[program] = st
    return True


def take_state(program: ir.Program) -> TableState | None:
    """The state of ``program``'s table, taken away from it (it moves to the next program)."""
    return _STATES.pop(program) if prepare(program) else None


def give_state(program: ir.Program, st: TableState) -> None:
    _STATES[program] = st


def carry(old: ir.Program, new: ir.Program) -> bool:
    """Move the state of ``old`` to ``new`` after a set-only update between them
    (:func:`.incremental.render_set_update` gave a script, so ``new`` has the same chains and
    set declarations; its sets' elements are in :data:`.script.RENDERED`). False when there
    was no state or the update was not set-only after all."""
    st = _STATES.pop(old, None)
    info = RENDERED.get(new)
    if st is None or info is None:
        return False
    if [name for _, name, _, _ in info.sets] != st.order:
        return False  # not the same declared sets: the next chain update renders in full
    workloads = st.local_workloads(new)
    if workloads is None or workloads.keys() != st.workloads.keys():
        return False
    st.declared = {name: elements for _, name, _, elements in info.sets}
    st.known.update((name, (s, elements)) for _, name, s, elements in info.sets)
    st.bare -= {name for name, elements in st.declared.items() if elements}
    st.workloads = workloads
    st.b.program = new
    _STATES[new] = st
    return True
