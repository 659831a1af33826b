"""render_set_update's fast path (compiler/targets/nftables/incremental.py).

When the new program shares every policy, profile and endpoint object with the old one and
only set objects changed, the update is computed from the changed sets alone, without rendering
either program. Its output must be byte-for-byte what the full comparison (render both, compare
skeletons, diff elements) gives; these tests compute both and compare, and check that the fast
path really ran (rendering is made to fail).
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import nodes as ir
from compiler.targets.nftables import incremental, render_program, render_set_update
from compiler.targets.nftables.script import RENDERED
from tests.targets.test_nftables_programs import workloads_program

NETS = tuple(
    ipaddress.ip_network(x)
    for x in (
        "10.65.0.1/32",
        "10.65.0.2/32",
        "10.65.0.3/32",
        "10.65.0.128/25",
        "10.65.1.0/24",
        "10.66.0.0/16",
    )
)


def _slow(old: ir.Program, new: ir.Program) -> str | None:
    """The full comparison as it was before any caching: render both programs, compare the
    skeleton texts, diff the element lists."""
    before, after = render_program(old), render_program(new)
    if before.skeleton != after.skeleton:
        return None
    deletes: list[str] = []
    adds: list[str] = []
    for b, a in zip(before.sets, after.sets, strict=True):
        old_elems, new_elems = set(b.elements), set(a.elements)
        deletes += incremental.element_commands(
            "delete", b.name, [e for e in b.elements if e not in new_elems]
        )
        adds += incremental.element_commands(
            "add", a.name, [e for e in a.elements if e not in old_elems]
        )
    if not deletes and not adds:
        return ""
    header = [
        "# Tortie set update: set elements only, one transaction.",
        f"# Requires table {incremental.FAMILY} {incremental.TABLE} as rendered for the "
        "previous program.",
    ]
    return "\n".join([*header, *deletes, *adds]) + "\n"


def _no_render(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(program: ir.Program) -> object:
        raise AssertionError("the fast path rendered a program")

    monkeypatch.setattr(incremental, "render_program", fail)


def _with_sets(prog: ir.Program, changes: dict[str, ir.AddrSet]) -> ir.Program:
    return ir.replace_program(prog, sets={**prog.sets, **changes})


def _changed_members(prog: ir.Program, picks: list[tuple[str, frozenset]]) -> ir.Program:
    changes = {}
    for sid, members in picks:
        s = prog.sets[sid]
        if s.is_named_port:
            ports = frozenset((n, 6, 8080) for n in members)
            changes[sid] = dataclasses.replace(s, port_members=ports)
        else:
            changes[sid] = dataclasses.replace(s, members=members)
    return _with_sets(prog, changes)


def test_fast_path_matches_full_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    old = workloads_program()
    render_program(old)  # as the runtime did when it applied it
    new = _changed_members(
        old, [("s:web:4", frozenset({NETS[0], NETS[3]})), ("n:http:4", frozenset({NETS[1]}))]
    )
    expected = _slow(old, new)
    assert expected  # a real, non-empty set-only update
    _no_render(monkeypatch)
    assert render_set_update(old, new) == expected
    # The new program is remembered: the next update is fast too.
    newer = _changed_members(new, [("s:web:4", frozenset({NETS[2]}))])
    monkeypatch.undo()
    expected = _slow(new, newer)
    _no_render(monkeypatch)
    assert render_set_update(new, newer) == expected


def test_fast_path_nothing_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    old = workloads_program()
    render_program(old)
    same = ir.replace_program(old)  # new mappings, the same objects
    _no_render(monkeypatch)
    assert render_set_update(old, same) == ""


def test_other_changes_take_the_full_comparison() -> None:
    old = workloads_program()
    render_program(old)
    assert old in RENDERED
    # A policy that is equal but not the same object: rendered and compared; still set-only.
    pid = next(iter(old.policies))
    copy = dataclasses.replace(old.policies[pid])
    new = ir.replace_program(old, policies={**old.policies, pid: copy})
    assert render_set_update(old, new) == _slow(old, new) == ""
    # A set whose declaration changed (its selector, shown in the script): not set-only.
    sid = "s:web:4"
    changed = dataclasses.replace(old.sets[sid], selector="app == 'other'")
    assert render_set_update(old, _with_sets(old, {sid: changed})) is None


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from(("s:web:4", "n:http:4", "s:web:6")),
            st.frozensets(st.sampled_from(NETS), max_size=4),
        ),
        max_size=3,
    ),
    replace_policy=st.booleans(),
    rendered=st.booleans(),
)
def test_random_membership_changes(picks: list, replace_policy: bool, rendered: bool) -> None:
    old = workloads_program()
    if rendered:
        render_program(old)
    picks = [(sid, m) for sid, m in picks if sid in old.sets]
    new = _changed_members(old, picks)
    if replace_policy:
        pid = sorted(old.policies)[-1]
        new = ir.replace_program(
            new, policies={**new.policies, pid: dataclasses.replace(old.policies[pid])}
        )
    assert render_set_update(old, new) == _slow(old, new)
