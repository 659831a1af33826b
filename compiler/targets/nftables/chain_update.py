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

from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.targets.nftables.chains import Chain
from compiler.targets.nftables.endpoints import workload_chain, workload_comment
from compiler.targets.nftables.incremental import (
    element_commands,
    same_but_endpoints,
    same_set_declarations,
)
from compiler.targets.nftables.names import ident, is_ifname, nft_string, sanitize
from compiler.targets.nftables.script import FAMILY, RENDERED, TABLE, RenderInfo, ScriptRenderer
from compiler.targets.nftables.table_state import (
    TableState,
    carry,
    give_state,
    prepare,
    rule_lines,
    take_state,
)

__all__ = ["ChainUpdate", "carry", "chain_update", "prepare"]


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
    # declaration (block without elements) of every existing set the script refers to
    declarations: dict[str, str] = field(default_factory=dict)
    empty: tuple[str, ...] = ()  # existing sets added to that held no element at all
    rules: dict[str, int] = field(default_factory=dict)  # of each created or flushed chain
    # the elements of each created set and each set whose elements change, afterwards
    elements: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # of ``element_sets``: the dispatch maps and wl-ifaces (keyed by interface name) -> "map"
    # or "set"
    dispatch: dict[str, str] = field(default_factory=dict)


def _chain_names(ep: ir.Endpoint) -> list[str]:
    return [ident(f"wl-{d}/", ep.interface) for d in ir.DIRECTIONS]


def chain_update(old: ir.Program, new: ir.Program) -> ChainUpdate | None:
    """The transaction from ``old``'s table to ``new``'s when only local workloads (and set
    members) changed, or None (render ``new`` in full). On success ``new`` can be the ``old`` of
    the next chain update and has a :data:`.script.RENDERED` entry (sets, for set updates)."""
    st = take_state(old)
    if st is None:
        return None
    if not (same_but_endpoints(old, new) and same_set_declarations(old, new)):
        return None
    workloads = st.local_workloads(new)
    if workloads is None:
        return None  # host endpoints changed: render in full
    if not workloads or not st.workloads:
        return None
    if any(not is_ifname(e.interface) for e in workloads.values()):
        return None
    gone = [e for eid, e in st.workloads.items() if workloads.get(eid) is not e]
    came = [e for eid, e in workloads.items() if st.workloads.get(eid) is not e]
    by_iface = {e.interface: e for e in gone}
    for e in came:
        before = by_iface.get(e.interface)
        if before is not None and any(
            workload_comment(before, d) != workload_comment(e, d) for d in ir.DIRECTIONS
        ):
            return None  # a delta cannot change a chain's comment
    if len({e.interface for e in workloads.values()}) != len(workloads):
        return None  # E816, reported by check()
    change = _Change(st, old, new, workloads)
    if not change.rechain(gone, came):
        return None
    return change.update()


@dataclass
class _Change:
    """One chain update in the making (the state is changed in place: it moves to ``new``)."""

    st: TableState
    old: ir.Program
    new: ir.Program
    workloads: dict[str, ir.Endpoint]
    old_chains: dict[str, Chain] = field(default_factory=dict)  # of the workloads that changed
    new_chains: list[str] = field(default_factory=list)  # made by this update
    flushed: list[str] = field(default_factory=list)  # existing chains with new rules
    dropped: dict[str, Chain] = field(default_factory=dict)  # chains that go
    new_sets: list[str] = field(default_factory=list)  # selector and constant sets
    dead_sets: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # element commands
    adds: list[str] = field(default_factory=list)
    touched: dict[str, tuple[str, ...]] = field(default_factory=dict)  # set -> its elements
    dispatch: dict[str, str] = field(default_factory=dict)  # map or wl-ifaces -> its kind
    empty: list[str] = field(default_factory=list)

    def rechain(self, gone: list[ir.Endpoint], came: list[ir.Endpoint]) -> bool:
        """The workloads' chains: the old ones dropped, the new ones built (with the policy and
        sequence chains and constant sets they need), references counted, what nothing refers
        to deleted. False when a reference is not one the state accounts for."""
        st, b = self.st, self.st.b
        b.program = self.new
        old_refs = []
        for e in gone:
            for name in _chain_names(e):
                self.old_chains[name] = b.chains.pop(name)
                old_refs.append(st.refs.pop(name))
        b.log = []
        try:
            for e in sorted(came, key=lambda e: e.interface):
                for d in ir.DIRECTIONS:
                    workload_chain(b, e, d)
            created = b.log
        finally:
            b.log = None
        before: dict[str, bool] = {}  # name -> referenced before (at its first change)
        st.take(created, before)
        self.dropped = st.release(old_refs, before)
        self.dropped.update((n, c) for n, c in self.old_chains.items() if n not in b.chains)
        sets = [x for x in before if x not in b.chains and x not in self.dropped]
        if any(x not in st.set_ids and x not in b.consts.sets for x in sets):
            return False
        self.new_sets = sorted(x for x in sets if not before[x] and x in st.count)
        self.dead_sets = sorted(x for x in sets if before[x] and x not in st.count)
        self.new_chains = [n for n in created if n not in self.old_chains]
        self.flushed = sorted(
            n
            for n in created
            if n in self.old_chains and self.old_chains[n].lines != b.chains[n].lines
        )
        return True

    def members(self) -> None:
        """Element commands for the selector sets declared before and after."""
        st, old, new = self.st, self.old, self.new
        dead = set(self.dead_sets)
        for name, have in list(st.declared.items()):
            sid = st.set_ids[name]
            if name in dead or new.sets[sid] is old.sets[sid]:
                continue
            want = st.elements(new, name)
            if want == have:
                continue
            keep, had = set(want), set(have)
            self.deletes += element_commands("delete", name, [x for x in have if x not in keep])
            added = [x for x in want if x not in had]
            self.adds += element_commands("add", name, added)
            if added and name in st.bare:
                st.bare.discard(name)
                self.empty.append(name)
            st.declared[name] = want
            self.touched[name] = want

    def interfaces(self) -> None:
        """Element commands for the dispatch maps and wl-ifaces: workloads that came or went."""
        before = {e.interface for e in self.st.workloads.values()}
        after = sorted({e.interface for e in self.workloads.values()})
        out = sorted(before - set(after))
        into = sorted(set(after) - before)
        if not (out or into):
            return
        for d in ir.DIRECTIONS:
            name = f"wl-{d}"

            def items(ifaces: list[str], d: str = d) -> list[str]:
                return [f"{nft_string(i)} : jump {ident(f'wl-{d}/', i)}" for i in ifaces]

            self.deletes += element_commands("delete", name, items(out))
            self.adds += element_commands("add", name, items(into))
            self.touched[name] = tuple(items(after))
            self.dispatch[name] = "map"
        self.deletes += element_commands("delete", "wl-ifaces", [nft_string(i) for i in out])
        self.adds += element_commands("add", "wl-ifaces", [nft_string(i) for i in into])
        self.touched["wl-ifaces"] = tuple(nft_string(i) for i in after)
        self.dispatch["wl-ifaces"] = "set"

    def block(self) -> list[str]:
        """The table block: new sets (declared in the state), new chains, flushed chains' rules."""
        st, new = self.st, self.new
        out: list[str] = []
        for name in self.new_sets:
            if name in st.set_ids:
                have = st.declared[name] = st.elements(new, name)
                self.touched[name] = have
                if not have:
                    st.bare.add(name)
                out += st.set_block(new, name, have)
            else:
                self.touched[name] = st.b.consts.sets[name].elements
                out += st.set_block(new, name, ())
        for name in self.dead_sets:
            st.bare.discard(name)
            st.declared.pop(name, None)
        chains = st.b.chains
        for name in sorted(self.new_chains):
            out += ScriptRenderer.chain_lines(chains[name])
        for name in self.flushed:
            out += [f"\tchain {name} {{", *(f"\t\t{r}" for r in rule_lines(chains[name])), "\t}"]
        return out

    def declarations(self) -> dict[str, str]:
        """What the batch encoder must know of the existing sets and maps the script names."""
        st = self.st
        used: set[str] = {*self.touched, *self.dead_sets} - set(self.new_sets)
        for name in [*self.new_chains, *self.flushed]:
            used |= st.refs[name] - set(self.new_sets)
        out: dict[str, str] = {}
        for name in sorted(used):
            if name in st.b.chains:
                continue
            if name == "wl-ifaces":
                comment = nft_string(sanitize("local workload interfaces"))
                lines = ["\tset wl-ifaces {", "\t\ttype ifname", f"\t\tcomment {comment}", "\t}"]
            elif name in self.dispatch:
                lines = [f"\tmap {name} {{", "\t\ttype ifname : verdict", "\t}"]
            else:
                lines = st.set_block(self.new, name, None)
            out[name] = "\n".join(lines) + "\n"
        return out

    def update(self) -> ChainUpdate:
        st, new = self.st, self.new
        self.members()
        self.interfaces()
        block = self.block()
        gone_chains = sorted(self.dropped)
        out = [
            "# Tortie chain update: the chains, sets and elements a local workload change needs.",
            *(f"flush chain {FAMILY} {TABLE} {n}" for n in [*self.flushed, *gone_chains]),
            *self.deletes,
        ]
        if block:
            out += [f"table {FAMILY} {TABLE} {{", *block, "}"]
        out += self.adds
        out += [f"delete chain {FAMILY} {TABLE} {n}" for n in gone_chains]
        out += [f"delete set {FAMILY} {TABLE} {n}" for n in self.dead_sets]
        # The new program's set list (for set-only updates from it); the state moves to it.
        fresh = [n for n in self.new_sets if n in st.declared]
        st.order = [n for n in st.order if n in st.declared] + fresh
        RENDERED[new] = RenderInfo(
            None,
            tuple((st.set_ids[n], n, new.sets[st.set_ids[n]], st.declared[n]) for n in st.order),
        )
        st.workloads = self.workloads
        give_state(new, st)
        existing = sorted(n for n in self.touched if n not in set(self.new_sets))
        chains = st.b.chains
        return ChainUpdate(
            "\n".join(out) + "\n" if len(out) > 1 else "",
            tuple(sorted(self.new_chains)),
            tuple(self.flushed),
            tuple(gone_chains),
            tuple(self.new_sets),
            tuple(self.dead_sets),
            tuple(existing),
            self.declarations(),
            tuple(self.empty),
            {n: len(rule_lines(chains[n])) for n in [*self.new_chains, *self.flushed]},
            dict(self.touched),
            dict(self.dispatch),
        )
