"""Set-only updates: "set contents are data, rules are code" (DESIGN.md).

When two programs render to the same script except for set elements (endpoints came and went,
labels changed, but no rule, chain, endpoint interface or set declaration did), the runtime can
apply the difference as element additions and deletions instead of replacing the table. The
update is one ``nft -f`` transaction too; deletions come first, so an interval that the new
element list merged differently never overlaps an old one.

The runtime calls :func:`render_set_update` with the program it last applied and the new one;
``None`` means "not set-only: load the full script".
"""

from __future__ import annotations

from compiler.ir.nodes import Program
from compiler.targets.nftables.script import FAMILY, TABLE, RenderError, render_program

CHUNK = 512  # elements per command: keeps lines and netlink messages reasonable


def element_commands(verb: str, set_name: str, elements: list[str]) -> list[str]:
    """``add``/``delete element`` commands for one set of Tortie's table, CHUNK at a time."""
    out = []
    for i in range(0, len(elements), CHUNK):
        chunk = ", ".join(elements[i : i + CHUNK])
        out.append(f"{verb} element {FAMILY} {TABLE} {set_name} {{ {chunk} }}")
    return out


def render_set_update(old: Program, new: Program) -> str | None:
    """An ``nft -f`` script that turns ``old``'s set contents into ``new``'s, or None when the
    programs differ in anything but set elements. An empty string means nothing changed."""
    try:
        before, after = render_program(old), render_program(new)
    except RenderError:
        return None
    if before.skeleton != after.skeleton:
        return None
    deletes: list[str] = []
    adds: list[str] = []
    for b, a in zip(before.sets, after.sets, strict=True):
        old_elems, new_elems = set(b.elements), set(a.elements)
        deletes += element_commands("delete", b.name, [e for e in b.elements if e not in new_elems])
        adds += element_commands("add", a.name, [e for e in a.elements if e not in old_elems])
    if not deletes and not adds:
        return ""
    header = [
        "# Tortie set update: set elements only, one transaction.",
        f"# Requires table {FAMILY} {TABLE} as rendered for the previous program.",
    ]
    return "\n".join([*header, *deletes, *adds]) + "\n"
