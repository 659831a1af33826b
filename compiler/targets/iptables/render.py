"""The artifact files: ``iptables.rules``, ``ip6tables.rules`` and ``ipset.restore``.

Restore input, one section per table (raw, mangle, filter)::

    *filter
    :tt-INPUT - [0:0]          # declaring a user chain with --noflush creates it or flushes it:
    :tt-pi-np/a/db - [0:0]     # every chain Tortie writes is replaced as a whole
    -A tt-INPUT …
    -I INPUT 1 -m comment --comment "tortie:hook" -j tt-INPUT
    COMMIT

Built-in chains are never declared (that would reset their policy) and never flushed. The hook
lines are the only rules Tortie adds outside its own chains; a file applied by hand a second
time adds them again (harmless: Tortie's top-level chains give the same verdict when run twice),
which is why the applier (:mod:`.apply`) leaves out the hooks that are already in place.
Each ``COMMIT`` replaces its table atomically (legacy: one table blob; nft: one transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compiler import __version__
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.iptables.marks import Marks
from compiler.targets.iptables.model import Table
from compiler.targets.iptables.names import file_comment, host_set_name
from compiler.targets.iptables.sets import (
    SetDecl,
    by_name,
    decl_of,
    host_decl,
    render_restore,
    set_names,
)
from compiler.targets.iptables.tables import FamilyRenderer

RULES_FILE = {4: "iptables.rules", 6: "ip6tables.rules"}
IPSET_FILE = "ipset.restore"


class RenderError(ValueError):
    """The program cannot be rendered (``check()`` reports these as diagnostics first)."""


@dataclass(frozen=True)
class Rendered:
    rules: Mapping[int, str]  # family -> restore input
    tables: Mapping[int, tuple[Table, ...]]
    sets: tuple[SetDecl, ...]  # every set a rule references, both families
    ipset: str
    summary: Mapping[str, int]

    @property
    def files(self) -> dict[str, bytes]:
        out = {RULES_FILE[f]: text.encode() for f, text in self.rules.items()}
        out[IPSET_FILE] = self.ipset.encode()
        return out


def table_text(table: Table) -> list[str]:
    lines = [f"*{table.name}"]
    lines += [f":{c.name} - [0:0]" for c in table.chains]
    for chain in table.chains:
        if chain.comment or chain.rules:
            lines.append(file_comment(f"{chain.name}: {chain.comment}"))
        lines += [r.text(chain.name) for r in chain.rules]
    lines += [h.text() for h in table.hooks]
    lines.append("COMMIT")
    return lines


def _header(program: ir.Program, family: int, marks: Marks) -> list[str]:
    return [
        file_comment(
            f"Tortie {__version__}: ip{'6' if family == 6 else ''}tables rules for node {program.node}."
        ),
        "# Generated: do not edit. Apply after ipset.restore with iptables-restore --noflush.",
        "# Only chains named tt-* are written (each one replaced whole), plus one jump per hook.",
        f"# Mark bits: accept {marks.accept:#x}, pass {marks.pass_:#x}, scratch {marks.scratch0:#x} "
        f"{marks.scratch1:#x}, from-workload {marks.from_wl:#x}, untracked {marks.untracked:#x}.",
    ]


def _host_addresses(program: ir.Program) -> list[ir.IPAddr]:
    addrs = set(program.host_ips.get(program.node or "", ()))
    for hep in local_endpoints(program):
        if hep.is_host:
            addrs.update(hep.ips)
    return sorted(addrs, key=lambda a: (a.version, int(a)))


def render_program(program: ir.Program) -> Rendered:
    marks = Marks.from_mask(program.felix.mark_mask)
    if marks is None:
        raise RenderError(f"mark mask {program.felix.mark_mask:#x} has fewer than 6 bits")
    names = set_names(program)
    by_set_name = {name: sid for sid, name in names.items()}
    rules: dict[int, str] = {}
    tables: dict[int, tuple[Table, ...]] = {}
    used: set[str] = set()
    summary = {"chains": 0, "rules": 0}
    for family in (4, 6):
        fr = FamilyRenderer(program, family, marks, names)
        fam_tables = tuple(fr.tables())
        lines = _header(program, family, marks)
        for table in fam_tables:
            lines += table_text(table)
            summary["chains"] += len(table.chains)
            summary["rules"] += sum(len(c.rules) for c in table.chains) + len(table.hooks)
            for chain in table.chains:
                for rule in chain.rules:
                    if rule.conds:
                        used.update(rule.set_names())
        rules[family] = "\n".join(lines) + "\n"
        tables[family] = fam_tables
        if family == 4:
            summary["endpoints"] = len(fr.eps.workloads) + len(fr.eps.heps)
    host = _host_addresses(program)
    decls = {}
    for name in sorted(used):  # only the sets some rule uses: members of the others do not matter
        if name in by_set_name:
            decls[name] = decl_of(program.sets[by_set_name[name]])
        elif name in (host_set_name(4), host_set_name(6)):
            decls[name] = host_decl(host, 4 if name == host_set_name(4) else 6)
        else:
            raise RenderError(f"rules refer to a set that does not exist: {name}")
    sets = tuple(decls[n] for n in sorted(used))
    header = [
        file_comment(
            f"Tortie {__version__}: ipsets for node {program.node}. Generated: do not edit."
        ),
        "# Apply with ipset restore before the iptables files. Each set is refilled atomically:",
        "# create it if missing, fill a temporary set, swap the two, destroy the temporary one.",
    ]
    summary["sets"] = len(sets)
    summary["set_members"] = sum(len(d.members) for d in sets)
    ipset = render_restore(sets, program.felix.max_ipset_size, header)
    return Rendered(rules, tables, sets, ipset, summary)


def sets_by_name(rendered: Rendered) -> Mapping[str, SetDecl]:
    return by_name(rendered.sets)
