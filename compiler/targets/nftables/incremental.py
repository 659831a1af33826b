"""Set-only updates: "set contents are data, rules are code" (DESIGN.md).

When two programs render to the same script except for set elements (endpoints came and went,
labels changed, but no rule, chain, endpoint interface or set declaration did), the runtime can
apply the difference as element additions and deletions instead of replacing the table. The
update is one ``nft -f`` transaction too; deletions come first, so an interval that the new
element list merged differently never overlaps an old one.

The runtime calls :func:`render_set_update` with the program it last applied and the new one;
``None`` means "not set-only: load the full script".

Fast path: the agent builds the new program by replacing only the IR objects that changed and
reusing the others. When ``old`` was rendered before (what the update needs of it is kept in
:data:`.script.RENDERED`: its skeleton's SHA-256 and its sets' elements) and everything the
script's skeleton is made of — node, FelixConfig, host addresses, every policy, profile and
endpoint object, and every set's declaration — is the same in ``new``, the skeletons are equal
without rendering them, and only the sets whose ``AddrSet`` object changed are diffed. Any other
change takes the full comparison: render what was not rendered yet (usually only ``new``) and
compare the skeletons' hashes. Either way the output is the same as rendering both programs and
comparing their texts.
"""

from __future__ import annotations

from collections.abc import Mapping

from compiler.ir.nodes import AddrSet, Program
from compiler.targets.nftables.script import (
    FAMILY,
    RENDERED,
    TABLE,
    RenderError,
    RenderInfo,
    render_program,
)
from compiler.targets.nftables.sets import elements_of, set_family

CHUNK = 512  # elements per command: keeps lines and netlink messages reasonable


def element_commands(verb: str, set_name: str, elements: list[str]) -> list[str]:
    """``add``/``delete element`` commands for one set of Tortie's table, CHUNK at a time."""
    out = []
    for i in range(0, len(elements), CHUNK):
        chunk = ", ".join(elements[i : i + CHUNK])
        out.append(f"{verb} element {FAMILY} {TABLE} {set_name} {{ {chunk} }}")
    return out


def _same_objects(old: Mapping[str, object], new: Mapping[str, object]) -> bool:
    if old is new:
        return True
    if len(old) != len(new):
        return False
    get = new.get
    return all(get(k) is v for k, v in old.items())


def _same_declaration(a: AddrSet, b: AddrSet) -> bool:
    """Everything of a set the skeleton shows (its name, type, comment), i.e. all but members."""
    return (
        a.id == b.id
        and a.selector == b.selector
        and a.port_name == b.port_name
        and a.port_protocol == b.port_protocol
        and set_family(a) == set_family(b)
    )


def same_but_endpoints(old: Program, new: Program) -> bool:
    """The node, FelixConfiguration, host addresses and every policy and profile object are
    the same in both programs (the sets are compared by the callers)."""
    if old.node != new.node or not (old.felix is new.felix or old.felix == new.felix):
        return False
    if old.host_ips != new.host_ips:
        return False
    return _same_objects(old.policies, new.policies) and _same_objects(old.profiles, new.profiles)


def same_set_declarations(old: Program, new: Program) -> bool:
    """Every set of ``old`` is in ``new`` and declared the same (members may differ)."""
    if old.sets is new.sets:
        return True
    if old.sets.keys() != new.sets.keys():
        return False
    for sid, a in old.sets.items():
        b = new.sets[sid]
        if a is not b and not _same_declaration(a, b):
            return False
    return True


def _same_skeleton(old: Program, new: Program) -> bool:
    """True only when the two scripts' skeletons are certainly equal (see the module doc)."""
    if not same_but_endpoints(old, new):
        return False
    # Only this node's endpoints are rendered (targets.base.local_endpoints); another node's
    # endpoint shows only through set members, which are diffed below.
    node = old.node
    if len(old.endpoints) == len(new.endpoints):
        for a, b in zip(old.endpoints, new.endpoints, strict=True):
            if a is not b and (a.node == node or b.node == node):
                return False
    else:  # endpoints of other nodes came or went
        mine = [e for e in old.endpoints if e.node == node]
        theirs = [e for e in new.endpoints if e.node == node]
        if len(mine) != len(theirs) or any(a is not b for a, b in zip(mine, theirs, strict=True)):
            return False
    return same_set_declarations(old, new)


def _script(deletes: list[str], adds: list[str]) -> str:
    if not deletes and not adds:
        return ""
    header = [
        "# Tortie set update: set elements only, one transaction.",
        f"# Requires table {FAMILY} {TABLE} as rendered for the previous program.",
    ]
    return "\n".join([*header, *deletes, *adds]) + "\n"


def _diff(old_sets: tuple, new_sets: tuple) -> str:
    deletes: list[str] = []
    adds: list[str] = []
    for (_, name, a, before), (_, _, b, after) in zip(old_sets, new_sets, strict=True):
        if a is b or before == after:
            continue
        old_elems, new_elems = set(before), set(after)
        deletes += element_commands("delete", name, [e for e in before if e not in new_elems])
        adds += element_commands("add", name, [e for e in after if e not in old_elems])
    return _script(deletes, adds)


def _fast(old: Program, new: Program, info: RenderInfo) -> str:
    now = []
    for sid, name, known, before in info.sets:
        b = new.sets[sid]
        now.append((sid, name, known, before) if b is known else (sid, name, b, elements_of(b)))
    RENDERED[new] = RenderInfo(info.skeleton_sha256, tuple(now))
    return _diff(info.sets, RENDERED[new].sets)


def _info(program: Program) -> RenderInfo:
    info = RENDERED.get(program)
    if info is None or info.skeleton_sha256 is None:
        render_program(program)  # records it
        info = RENDERED[program]
    return info


def render_set_update(old: Program, new: Program) -> str | None:
    """An ``nft -f`` script that turns ``old``'s set contents into ``new``'s, or None when the
    programs differ in anything but set elements. An empty string means nothing changed."""
    known = RENDERED.get(old)
    if known is not None and _same_skeleton(old, new):
        return _fast(old, new, known)
    try:
        before, after = _info(old), _info(new)
    except RenderError:
        return None
    if before.skeleton_sha256 != after.skeleton_sha256:
        return None
    return _diff(before.sets, after.sets)
