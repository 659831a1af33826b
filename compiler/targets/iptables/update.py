"""Set-only updates: "set contents are data, rules are code" (DESIGN.md).

When two programs render to the same iptables files (no rule, chain, interface or set name
changed: endpoints came and went, labels changed), the runtime can skip ``iptables-restore`` and
refill only the sets whose members changed. Each changed set is refilled atomically (temporary
set, ``swap``, ``destroy``), so a rule never sees a half-updated set. Only the sets whose
members changed are touched (the "incremental" part); every other set, and every rule, stays.
"""

from __future__ import annotations

import weakref

from compiler import __version__
from compiler.ir.nodes import Program
from compiler.targets.iptables.names import file_comment
from compiler.targets.iptables.render import RenderError, render_program
from compiler.targets.iptables.sets import by_name, render_refill

# Program -> its rendering, while the program is alive. The agent calls this with the program
# it last applied (the ``new`` of its previous call) and the new one: the old rendering is
# reused instead of rendered a second time. Programs are immutable and hash by identity.
_RENDERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _render(program: Program):  # noqa: ANN202 - the renderer's result type
    hit = _RENDERED.get(program)
    if hit is None:
        hit = _RENDERED[program] = render_program(program)
    return hit


def render_set_update(old: Program, new: Program) -> str | None:
    """An ``ipset restore`` script turning ``old``'s set contents into ``new``'s, or ``None``
    when the iptables files differ (apply the full artifact then). ``""``: nothing changed."""
    try:
        before, after = _render(old), _render(new)
    except (RenderError, ValueError):
        return None
    if before.rules is not after.rules and before.rules != after.rules:
        return None
    old_sets, new_sets = by_name(before.sets), by_name(after.sets)
    if old_sets.keys() != new_sets.keys():
        return None  # cannot happen with equal rules; be safe anyway
    changed = []
    for name, decl in new_sets.items():
        prev = old_sets[name]
        if prev.type != decl.type or prev.family != decl.family:
            return None
        if prev.members != decl.members:
            changed.append(decl)
    if not changed:
        return ""
    header = [
        file_comment(f"Tortie {__version__}: set-only update for node {new.node}."),
        "# Requires the sets of the previous artifact; each changed set is refilled atomically.",
    ]
    return render_refill(changed, new.felix.max_ipset_size, header)
