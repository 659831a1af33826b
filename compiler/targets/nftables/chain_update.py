"""Chain updates: a local workload whose policies changed, as a delta of a few chains.

The set-only update (:mod:`.incremental`) covers changes that only move endpoints in and out of
sets. When a workload *of this node* changes (its new labels select other policies, it came or
went), its two endpoint chains change, and with them which policy, profile and sequence chains,
constant sets and selector sets the table needs. Rendering the whole table again costs ~1 s at
10,000 policies; this module re-renders only the changed workloads' chains with the previous
render's :class:`~.chains.ChainBuilder` (its policy and sequence chains are reused as they are)
and works the rest out by reference counting:

* every non-base chain's references (``jump``/``goto`` targets and ``@name`` lookups) are
  counted; the endpoint chains are the roots (the dispatch maps hold them);
* the changed workloads' old chains are dropped (their references released) and their new
  chains built (new policy/sequence chains and constant sets come with them; references taken);
* what nothing refers to any more is deleted, recursively; what became referenced is declared
  (selector sets with the new program's elements);
* selector sets that stay declared get their element changes; the dispatch maps and
  ``wl-ifaces`` the workloads that came or went.

The result is one transaction in the grammar of ``runtime/nftables_delta.py`` (flush chains,
delete elements, add blocks and rules, add elements, delete chains and sets), and the table it
leaves is the one :func:`.script.render_program` renders for the new program (the kernel tests
compare both listings).

Preconditions (else None: the caller renders the whole program): the previous program was
rendered inside :func:`.script.keeping_renderers` or made by a chain update; only endpoints
changed (same node, FelixConfiguration, host addresses, policy and profile objects, set
declarations); no host endpoint changed; there are local workloads before and after (the base
chains depend on there being any); no endpoint chain's comment changed (a delta cannot change a
chain's comment). The previous program's state moves to the new program: a chain update is made
at most once from a program.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.targets.nftables.chains import Chain, ChainBuilder
from compiler.targets.nftables.endpoints import _describe, workload_chain
from compiler.targets.nftables.incremental import (
    element_commands,
    same_but_endpoints,
    same_set_declarations,
)
from compiler.targets.nftables.names import ident, is_ifname, nft_string, sanitize
from compiler.targets.nftables.script import (
    FAMILY,
    RENDERED,
    RENDERERS,
    TABLE,
    RenderInfo,
    ScriptRenderer,
    const_lines,
)
from compiler.targets.nftables.sets import declare, elements_of, render_decl

__all__ = ["ChainUpdate", "carry", "chain_update", "prepare"]

_STRING = re.compile(r'"[^"]*"')  # nft strings have no escapes: a '"' always ends one
_REF = re.compile(r"(?:\bjump |\bgoto |@)([^\s,{}]+)")


def refs(chain: Chain) -> frozenset[str]:
    """The chains a chain jumps to and the sets and maps it looks up, by name (quoted strings,
    i.e. comments and log prefixes, left out)."""
    out: set[str] = set()
    for line in chain.lines:
        if line.startswith("#"):
            continue
        out.update(_REF.findall(_STRING.sub('""', line) if '"' in line else line))
    return frozenset(out)


def _rules(chain: Chain) -> list[str]:
    return [line for line in chain.lines if not line.startswith("#")]


@dataclass
class _State:
    """What a chain update needs of the table rendered for a program (moves to the next one)."""

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
    def of(cls, r: ScriptRenderer, info: RenderInfo) -> _State | None:
        b = r.b
        chain_refs = {name: refs(chain) for name, chain in b.chains.items()}
        count: dict[str, int] = {}
        for rs in chain_refs.values():
            for x in rs:
                count[x] = count.get(x, 0) + 1
        set_ids = {name: sid for sid, name in b.set_names.items()}
        declared = {name: elements for _, name, _, elements in info.sets}
        # The table declares exactly what its rules refer to (chains.ChainBuilder._rule_lines):
        # check it, since the counts below decide what to declare and delete.
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


_STATES: weakref.WeakKeyDictionary[ir.Program, _State] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ChainUpdate:
    """One transaction (``script``) taking the table of the old program to the new one's."""

    script: str
    created_chains: tuple[str, ...]  # whole blocks in the script
    flushed_chains: tuple[str, ...]  # existing chains whose rules the script replaces
    deleted_chains: tuple[str, ...]
    created_sets: tuple[str, ...]  # selector and constant sets, whole blocks in the script
    deleted_sets: tuple[str, ...]
    element_sets: tuple[str, ...]  # existing sets and maps whose elements change
    counts: dict[str, int]  # change of the table's counts (chains, rules, sets, elements)
    # declaration (block without elements) of every existing set the script refers to
    declarations: dict[str, str] = field(default_factory=dict)
    empty: tuple[str, ...] = ()  # existing sets added to that held no element at all
    rules: dict[str, int] = field(default_factory=dict)  # of each created or flushed chain
    # the elements of each created set and each set whose elements change, afterwards
    elements: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # of ``element_sets``: the dispatch maps and wl-ifaces (keyed by interface name) -> "map"
    # or "set"
    dispatch: dict[str, str] = field(default_factory=dict)

    @property
    def set_only(self) -> bool:
        return not (
            self.created_chains
            or self.flushed_chains
            or self.deleted_chains
            or self.created_sets
            or self.deleted_sets
        )


def prepare(program: ir.Program) -> bool:
    """Make the chain-update state of a program rendered inside
    :func:`.script.keeping_renderers` now (~0.3 s at 10,000 policies) rather than at its first
    chain update; False when there is none to make."""
    r = RENDERERS.pop(program, None)
    if program in _STATES:
        return True
    info = RENDERED.get(program)
    if r is None or info is None:
        return False
    st = _State.of(r, info)
    if st is None:
        return False
    _STATES[program] = st
    return True


def carry(old: ir.Program, new: ir.Program) -> bool:
    """Move the chain-update state of ``old`` to ``new`` after a set-only update between them
    (:func:`.incremental.render_set_update` gave a script, so ``new`` has the same chains and
    set declarations; its sets' elements are in :data:`.script.RENDERED`). False when there
    was no state or the update was not set-only after all."""
    st = _STATES.pop(old, None)
    info = RENDERED.get(new)
    if st is None or info is None:
        return False
    if [name for _, name, _, _ in info.sets] != st.order:
        return False  # not the same declared sets: the next chain update renders in full
    now = _local(new)
    heps = [e for e in now.values() if e.is_host]
    if len(heps) != len(st.heps) or any(a is not b for a, b in zip(heps, st.heps, strict=False)):
        return False
    workloads = {eid: e for eid, e in now.items() if not e.is_host}
    if workloads.keys() != st.workloads.keys():
        return False
    st.declared = {name: elements for _, name, _, elements in info.sets}
    st.known.update((name, (s, elements)) for _, name, s, elements in info.sets)
    st.bare -= {name for name, elements in st.declared.items() if elements}
    st.workloads = workloads
    st.b.program = new
    _STATES[new] = st
    return True


def _local(program: ir.Program) -> dict[str, ir.Endpoint]:
    node = program.node
    return {e.id: e for e in program.endpoints if e.node == node}


def _chain_names(ep: ir.Endpoint) -> list[str]:
    return [ident(f"wl-{d}/", ep.interface) for d in ir.DIRECTIONS]


def _comment(ep: ir.Endpoint, direction: str) -> str:
    to_from = "to" if direction == ir.INGRESS else "from"
    return f"{direction} ({to_from}) {_describe(ep)}"


def chain_update(old: ir.Program, new: ir.Program) -> ChainUpdate | None:
    """The transaction from ``old``'s table to ``new``'s when only local workloads (and set
    members) changed, or None (render ``new`` in full). On success ``new`` can be the ``old`` of
    the next chain update and has a :data:`.script.RENDERED` entry (sets, for set updates)."""
    if not prepare(old):
        return None
    st = _STATES.pop(old)
    if not (same_but_endpoints(old, new) and same_set_declarations(old, new)):
        return None
    now = _local(new)
    heps = [e for e in now.values() if e.is_host]
    if len(heps) != len(st.heps) or any(a is not b for a, b in zip(heps, st.heps, strict=False)):
        return None  # host endpoints: render in full
    workloads = {eid: e for eid, e in now.items() if not e.is_host}
    if not workloads or not st.workloads:
        return None
    if any(not is_ifname(e.interface) for e in workloads.values()):
        return None
    gone = [e for eid, e in st.workloads.items() if workloads.get(eid) is not e]
    came = [e for eid, e in workloads.items() if st.workloads.get(eid) is not e]
    by_iface = {e.interface: e for e in gone}
    for e in came:
        before = by_iface.get(e.interface)
        if before is not None and any(_comment(before, d) != _comment(e, d) for d in ir.DIRECTIONS):
            return None  # a delta cannot change a chain's comment
    if len({e.interface for e in workloads.values()}) != len(workloads):
        return None  # E816, reported by check()
    return _apply(st, old, new, gone, came, workloads)


def _apply(
    st: _State,
    old: ir.Program,
    new: ir.Program,
    gone: list[ir.Endpoint],
    came: list[ir.Endpoint],
    workloads: dict[str, ir.Endpoint],
) -> ChainUpdate | None:
    b = st.b
    b.program = new
    count, chain_refs = st.count, st.refs
    before: dict[str, bool] = {}  # name -> referenced before this update (at its first change)
    garbage: list[str] = []

    def inc(x: str) -> None:
        n = count.get(x, 0)
        before.setdefault(x, n > 0)
        count[x] = n + 1

    def dec(x: str) -> None:
        before.setdefault(x, True)
        n = count[x] - 1
        if n:
            count[x] = n
        else:
            del count[x]
            garbage.append(x)

    # 1. the old chains of the workloads that changed or went
    old_chains: dict[str, Chain] = {}
    old_refs: list[frozenset[str]] = []
    for e in gone:
        for name in _chain_names(e):
            old_chains[name] = b.chains.pop(name)
            old_refs.append(chain_refs.pop(name))
    # 2. their new chains, with the policy/sequence chains and constant sets they need
    b.log = []
    try:
        for e in sorted(came, key=lambda e: e.interface):
            for d in ir.DIRECTIONS:
                workload_chain(b, e, d)
        created = b.log
    finally:
        b.log = None
    for name in created:
        rs = chain_refs[name] = refs(b.chains[name])
        for x in rs:
            inc(x)
    # 3. release the old chains' references; delete what nothing refers to any more
    for rs in old_refs:
        for x in rs:
            dec(x)
    dropped: dict[str, Chain] = {}  # chains nothing refers to any more
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
        for y in chain_refs.pop(x):
            dec(y)
    dropped.update((n, c) for n, c in old_chains.items() if n not in b.chains)

    sets = [x for x in before if x not in b.chains and x not in dropped]
    if any(x not in st.set_ids and x not in b.consts.sets for x in sets):
        return None  # a reference the state does not account for: render in full
    new_sets = sorted(x for x in sets if not before[x] and x in count)
    dead_sets = sorted(x for x in sets if before[x] and x not in count)
    new_chains = [n for n in created if n not in old_chains]
    flushed = sorted(
        n for n in created if n in old_chains and old_chains[n].lines != b.chains[n].lines
    )
    return _script(
        st,
        old,
        new,
        gone,
        came,
        workloads,
        new_chains,
        flushed,
        dropped,
        new_sets,
        dead_sets,
        old_chains,
    )


def _set_block(
    st: _State, program: ir.Program, name: str, elements: tuple[str, ...] | None
) -> list[str]:
    """The block of an IR or constant set of the table (IR sets: with ``elements``)."""
    sid = st.set_ids.get(name)
    if sid is not None:
        decl = declare(program.sets[sid], name, with_elements=False)
        decl = dataclasses.replace(decl, elements=elements or ())
        return render_decl(decl, "\t", elements is not None)[len(decl.header) :]
    return const_lines(st.b.consts.sets[name], elements is not None)


def _elements(st: _State, program: ir.Program, name: str) -> tuple[str, ...]:
    """The elements of IR set ``name`` in ``program``: computed once per set object (a set the
    table declared before keeps its elements in the state while its object is unchanged)."""
    s = program.sets[st.set_ids[name]]
    known = st.known.get(name)
    if known is not None and known[0] is s:
        return known[1]
    elements = elements_of(s)
    st.known[name] = (s, elements)
    return elements


def _script(
    st: _State,
    old: ir.Program,
    new: ir.Program,
    gone: list[ir.Endpoint],
    came: list[ir.Endpoint],
    workloads: dict[str, ir.Endpoint],
    new_chains: list[str],
    flushed: list[str],
    dropped: dict[str, Chain],
    new_sets: list[str],
    dead_sets: list[str],
    old_chains: dict[str, Chain],
) -> ChainUpdate:
    b = st.b
    deletes: list[str] = []
    adds: list[str] = []
    touched: list[str] = []
    empty: list[str] = []  # sets added to that held no element at all
    elements = 0
    # selector sets declared before and after: their members
    dead = set(dead_sets)
    for name, have in list(st.declared.items()):
        if name in dead:
            continue
        sid = st.set_ids[name]
        after = new.sets[sid]
        if after is old.sets[sid]:
            continue
        want = _elements(st, new, name)
        if want == have:
            continue
        keep, had = set(want), set(have)
        gone_elems = [x for x in have if x not in keep]
        new_elems = [x for x in want if x not in had]
        deletes += element_commands("delete", name, gone_elems)
        adds += element_commands("add", name, new_elems)
        if new_elems and name in st.bare:
            st.bare.discard(name)
            empty.append(name)
        elements += len(new_elems) - len(gone_elems)
        st.declared[name] = want
        touched.append(name)
    # dispatch maps and wl-ifaces: the interfaces whose workload came or went
    before_ifaces = {e.interface for e in st.workloads.values()}
    after_ifaces = sorted({e.interface for e in workloads.values()})
    out_ifaces = sorted(before_ifaces - set(after_ifaces))
    in_ifaces = sorted(set(after_ifaces) - before_ifaces)
    dispatch: dict[str, tuple[str, ...]] = {}  # touched map or set -> its elements afterwards
    if out_ifaces or in_ifaces:
        for d in ir.DIRECTIONS:
            m = f"wl-{d}"
            for verb, ifaces, commands in (
                ("delete", out_ifaces, deletes),
                ("add", in_ifaces, adds),
            ):
                items = [f"{nft_string(i)} : jump {ident(f'wl-{d}/', i)}" for i in ifaces]
                commands += element_commands(verb, m, items)
            dispatch[m] = tuple(
                f"{nft_string(i)} : jump {ident(f'wl-{d}/', i)}" for i in after_ifaces
            )
        deletes += element_commands("delete", "wl-ifaces", [nft_string(i) for i in out_ifaces])
        adds += element_commands("add", "wl-ifaces", [nft_string(i) for i in in_ifaces])
        dispatch["wl-ifaces"] = tuple(nft_string(i) for i in after_ifaces)
        elements += 3 * (len(in_ifaces) - len(out_ifaces))
    # new and dead sets
    block: list[str] = []
    for name in new_sets:
        if name in st.set_ids:
            have = st.declared[name] = _elements(st, new, name)
            block += _set_block(st, new, name, have)
            elements += len(have)
            if not have:
                st.bare.add(name)
        else:
            block += _set_block(st, new, name, ())
            elements += len(b.consts.sets[name].elements)
    for name in dead_sets:
        st.bare.discard(name)
        if name in st.set_ids:
            elements -= len(st.declared.pop(name))
        else:
            elements -= len(b.consts.sets[name].elements)
    for name in sorted(new_chains):
        block += ScriptRenderer.chain_lines(b.chains[name])
    for name in flushed:
        block += [f"\tchain {name} {{", *(f"\t\t{r}" for r in _rules(b.chains[name])), "\t}"]
    gone_chains = sorted(dropped)
    out = [
        "# Tortie chain update: the chains, sets and elements a local workload change needs.",
        *(f"flush chain {FAMILY} {TABLE} {n}" for n in [*flushed, *gone_chains]),
        *deletes,
    ]
    if block:
        out += [f"table {FAMILY} {TABLE} {{", *block, "}"]
    out += adds
    out += [f"delete chain {FAMILY} {TABLE} {n}" for n in gone_chains]
    out += [f"delete set {FAMILY} {TABLE} {n}" for n in dead_sets]
    rules = sum(len(_rules(b.chains[n])) for n in new_chains)
    rules += sum(len(_rules(b.chains[n])) - len(_rules(old_chains[n])) for n in flushed)
    rules -= sum(len(_rules(c)) for c in dropped.values())
    counts = {
        "chains": len(new_chains) - len(dropped),
        "rules": rules,
        "sets": len(new_sets) - len(dead_sets),
        "elements": elements,
    }
    # what the encoder must know of existing sets and maps the script refers to
    used: set[str] = {*touched, *dead_sets}
    for name in [*new_chains, *flushed]:
        used |= st.refs[name]
    fresh = set(new_sets)
    declarations: dict[str, str] = {}
    for name in sorted(used - fresh):
        if name in b.chains:
            continue
        lines = _set_block(st, new, name, None)
        declarations[name] = "\n".join(lines) + "\n"
    for name in dispatch:
        if name == "wl-ifaces":
            comment = nft_string(sanitize("local workload interfaces"))
            lines = ["\tset wl-ifaces {", "\t\ttype ifname", f"\t\tcomment {comment}", "\t}"]
        else:
            lines = [f"\tmap {name} {{", "\t\ttype ifname : verdict", "\t}"]
        declarations[name] = "\n".join(lines) + "\n"
    # the new program's set list (for set-only updates from it), and the state moves to it
    order = [n for n in st.order if n in st.declared] + [n for n in new_sets if n in st.declared]
    st.order = order
    RENDERED[new] = RenderInfo(
        None,
        tuple((st.set_ids[n], n, new.sets[st.set_ids[n]], st.declared[n]) for n in order),
    )
    st.workloads = workloads
    _STATES[new] = st
    script = "\n".join(out) + "\n" if len(out) > 1 else ""
    return ChainUpdate(
        script,
        tuple(sorted(new_chains)),
        tuple(flushed),
        tuple(gone_chains),
        tuple(new_sets),
        tuple(dead_sets),
        tuple(sorted({*touched, *dispatch})),
        counts,
        declarations,
        tuple(empty),
        {n: len(_rules(b.chains[n])) for n in [*new_chains, *flushed]},
        {
            **{
                n: st.declared[n] if n in st.set_ids else b.consts.sets[n].elements
                for n in {*new_sets, *touched}
            },
            **dispatch,
        },
        {n: "set" if n == "wl-ifaces" else "map" for n in sorted(dispatch)},
    )
