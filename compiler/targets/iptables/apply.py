"""Loading an iptables artifact: idempotent hooks, no stale chains or sets, sets before rules.

The artifact files are complete and correct on an empty node. On a node that already runs an
earlier artifact, three things need to know what is in the kernel, and this module adapts the
files accordingly (pure functions over ``iptables-save`` / ``ipset list -n`` output, so they are
unit-tested without a kernel):

* **Hooks.** A ``-I INPUT 1 … -j tt-INPUT`` line adds a second jump when the first is still
  there; iptables-restore has no "insert if absent", and a ``-D`` + ``-I`` pair fails when the
  rule is absent. :func:`plan_iptables` drops hook lines whose rule is already in place (first
  in its built-in chain for ``chainInsertMode: insert``), deletes duplicates, and re-inserts a
  hook that something else pushed down. Applying the same artifact any number of times leaves
  exactly one jump per hook.
* **Stale chains.** Chains of an earlier artifact that the new one no longer has (a deleted
  policy, a removed endpoint) are flushed and deleted in the same ``COMMIT`` as the new rules,
  so each table changes in one atomic step.
* **Sets.** :func:`plan_ipset` drops the ``create`` of a set that exists already (``create
  -exist`` refuses a set whose ``maxelem`` changed; the refill's ``swap`` carries the new
  metadata) and destroys temporary sets a failed run left behind. Sets the new rules no longer
  reference are destroyed after the iptables update, when nothing refers to them any more.

Order (:func:`apply`): ipset restore -> iptables-restore --noflush (v4, v6) -> destroy stale sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from compiler.targets.iptables.names import HOOK_COMMENT, is_own_chain, is_own_set, temp_set_name
from compiler.targets.iptables.render import IPSET_FILE, RULES_FILE
from compiler.tools import ipset as ipset_tool
from compiler.tools import iptables as iptables_tool

_HOOK_MARK = f'--comment "{HOOK_COMMENT}"'
_BUILTIN = frozenset({"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"})


@dataclass
class SavedTable:
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # "-A CHAIN …" lines, in order


def parse_save(text: str) -> dict[str, SavedTable]:
    """``iptables-save`` output -> table name -> chains and rules."""
    tables: dict[str, SavedTable] = {}
    cur: SavedTable | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = tables.setdefault(line[1:].strip(), SavedTable())
        elif cur is None or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            cur.chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            cur.rules.append(line)
    return tables


def _split_sections(text: str) -> list[tuple[str, list[str]]]:
    """Restore input -> [(table, lines between ``*table`` and ``COMMIT``)] plus the preamble as
    table ``""``."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if line.startswith("*"):
            out.append((line[1:].strip(), []))
        elif line == "COMMIT":
            continue
        else:
            out[-1][1].append(line)
    return out


def _hook_target(line: str) -> tuple[str, str] | None:
    """(built-in chain, target) of a Tortie hook rule (restore or save form), else None."""
    if _HOOK_MARK not in line:
        return None
    words = line.split()
    if len(words) < 2 or words[0] not in ("-A", "-I") or words[1] not in _BUILTIN:
        return None
    if "-j" not in words:
        return None
    return words[1], words[words.index("-j") + 1]


def _plan_section(
    table: str,
    lines: list[str],
    saved: SavedTable | None,
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """One table's restore input: declarations, hook repairs, rules, stale chains removed.

    Hook repairs delete by rule *number* in the saved chain, highest first, and come before
    any insert, so the numbers are those of the state that was read. Own chains the lines do not
    declare are deleted, except those ``keep`` names (another generation's)."""
    saved = saved or SavedTable()
    declared = [line for line in lines if line.startswith(":")]
    names = {line[1:].split()[0] for line in declared}
    positions: dict[str, list[tuple[int, tuple[str, str] | None]]] = {}
    for line in saved.rules:
        chain = line.split()[1]
        rules = positions.setdefault(chain, [])
        rules.append((len(rules) + 1, _hook_target(line)))
    deletes: list[tuple[str, int]] = []
    body: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        hook = _hook_target(line)
        if hook is None:
            body.append(line)
            continue
        present = [n for n, h in positions.get(hook[0], []) if h == hook]
        last = len(positions.get(hook[0], []))
        in_place = present == [1] if line.startswith("-I ") else present == [last] and last > 0
        if in_place:
            continue  # exactly one, where it belongs: keep it, skip the line
        deletes += [(hook[0], n) for n in present]
        body.append(line)
    for chain, rules in positions.items():
        for n, hook in rules:
            if hook is not None and hook[1] not in names:
                deletes.append((chain, n))  # hook of a top-level chain that no longer exists
    stale = [
        c
        for c in saved.chains
        if is_own_chain(c) and c not in names and not (keep is not None and keep(c))
    ]
    out = declared + [f"-D {c} {n}" for c, n in sorted(set(deletes), key=lambda x: (x[0], -x[1]))]
    out += body + [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
    return [f"*{table}", *out, "COMMIT"]


def plan_iptables(
    rules_text: str, saved_text: str, keep: Callable[[str], bool] | None = None
) -> str:
    """The restore input to send, given the artifact's file and ``iptables-save`` output
    (``keep``: own chains that are not stale although the file does not declare them)."""
    saved = parse_save(saved_text)
    sections = _split_sections(rules_text)
    out = list(sections[0][1])
    seen = set()
    for table, lines in sections[1:]:
        seen.add(table)
        out += _plan_section(table, lines, saved.get(table), keep)
    for table in sorted(saved.keys() - seen):  # tables the new artifact does not touch
        if any(is_own_chain(c) for c in saved[table].chains):
            out += _plan_section(table, [], saved[table], keep)
    return "\n".join(out) + "\n"


_CREATE = re.compile(r"create (\S+) .* -exist$")


def planned_sets(ipset_text: str) -> set[str]:
    """The real (non-temporary) sets an ipset.restore file fills."""
    return {m[1] for line in ipset_text.splitlines() if (m := re.match(r"swap \S+ (\S+)$", line))}


def plan_ipset(ipset_text: str, existing: set[str]) -> str:
    """The ipset script to send, given the artifact's file and the sets that exist."""
    reals = planned_sets(ipset_text)
    temps = {temp_set_name(r) for r in reals}
    out = [f"destroy {t}" for t in sorted(temps & existing)]
    for line in ipset_text.splitlines():
        m = _CREATE.match(line)
        if m and m[1] in reals and m[1] in existing:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def stale_sets(existing: set[str], wanted: set[str]) -> list[str]:
    return sorted(n for n in existing if is_own_set(n) and n not in wanted)


def apply(files: Mapping[str, bytes], *, backend: str, netns: str | None = None) -> list[str]:
    """Load an artifact (ipset, then IPv4 and IPv6 rules), then destroy stale sets.

    Returns the stale sets that could not be destroyed (still referenced by something else,
    e.g. the other backend's rules); raises the tools' errors when a load fails.
    """
    ipset_text = files[IPSET_FILE].decode()
    existing = set(ipset_tool.list_names(netns=netns))
    ipset_tool.restore(plan_ipset(ipset_text, existing), netns=netns)
    for family in (4, 6):
        saved = iptables_tool.save(family=family, backend=backend, netns=netns)
        text = plan_iptables(files[RULES_FILE[family]].decode(), saved)
        iptables_tool.restore(text, family=family, backend=backend, netns=netns)
    left = []
    for name in stale_sets(set(ipset_tool.list_names(netns=netns)), planned_sets(ipset_text)):
        try:
            ipset_tool.destroy([name], netns=netns)
        except ipset_tool.IpsetError:
            left.append(name)
    return left
