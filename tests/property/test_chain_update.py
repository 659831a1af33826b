"""Chain updates are exact: after any sequence of edits to a YAML tree, the transaction
:func:`compiler.targets.nftables.chain_update.chain_update` gives (when it gives one), applied to
the previous program's script, leaves exactly the table a full render of the new program
declares: the same chains with the same rules, the same sets with the same elements.

The edits are those of ``test_incremental.py`` (label changes of local and remote pods, pods
added and removed, policy and namespace edits, ...); the incremental compiler derives each
program from the previous one, sharing objects, as in the agent; as in the agent too, a
set-only change moves the chain-update state along (``carry``) instead. The transaction is
applied by a small interpreter of its grammar (below); the kernel tests (``tests/kernel/test_agent_chains.py``)
load real ones."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.incremental.driver import IncrementalCompiler
from compiler.targets.nftables import render_set_update
from compiler.targets.nftables.chain_update import carry, chain_update
from compiler.targets.nftables.script import keeping_renderers, render_program
from runtime.nftables_delta import parse
from tests.property.test_incremental import EDITS, NODE, Tree, check

Blocks = dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]


def blocks_of(text: str) -> Blocks:
    parsed = parse(text)
    assert parsed is not None
    return {
        n: (b.kind, b.head, tuple(sorted(b.body)) if b.kind != "chain" else b.body)
        for n, b in parsed.blocks.items()
    }


def apply_delta(old: str, delta: str) -> Blocks:
    """The table of script ``old`` after the transaction ``delta``; asserts that each command
    is valid where it stands (elements added are new, deleted ones exist, a chain is empty when
    deleted, a block adds to an existing chain only rules)."""
    parsed = parse(old)
    assert parsed is not None
    table = {n: [b.kind, b.head, list(b.body)] for n, b in parsed.blocks.items()}
    lines = delta.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        if m := re.fullmatch(r"flush chain inet tortie (\S+)", line):
            table[m[1]][2] = []
        elif m := re.fullmatch(r"(add|delete) element inet tortie (\S+) \{ (.*) \}", line):
            items = [x.strip() for x in m[3].split(", ")]
            body = table[m[2]][2]
            if m[1] == "add":
                assert not set(items) & set(body), line
                body += items
            else:
                assert set(items) <= set(body), line
                table[m[2]][2] = [x for x in body if x not in set(items)]
        elif m := re.fullmatch(r"delete (chain|set|map) inet tortie (\S+)", line):
            assert m[2] in table and not (m[1] == "chain" and table[m[2]][2]), line
            del table[m[2]]
        elif line == "table inet tortie {":
            j = lines.index("}", i)
            sub = parse("table inet tortie {\n" + "\n".join(lines[i:j]) + "\n}\n")
            assert sub is not None
            for n, b in sub.blocks.items():
                if n in table:
                    assert b.kind == "chain" and not b.head, n
                    table[n][2] += list(b.body)
                else:
                    table[n] = [b.kind, b.head, list(b.body)]
            i = j + 1
        else:
            raise AssertionError(f"not in the delta grammar: {line!r}")
    return {
        n: (k, h, tuple(sorted(b)) if k != "chain" else tuple(b)) for n, (k, h, b) in table.items()
    }


TAKEN: list[int] = []


@settings(max_examples=25, deadline=None)
@given(st.lists(EDITS, min_size=1, max_size=8), st.integers(1, 3))
def test_chain_update_equals_full_render(edits: list[tuple], seed: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="tortie-chains-"))
    try:
        tree = Tree(root, seed)
        inc = IncrementalCompiler(str(root), NODE)
        paths: list[str] = []
        prev = check(inc, root, paths)
        with keeping_renderers():
            before = render_program(prev).script
        for edit in edits:
            tree.apply(edit)
            new = check(inc, root, paths)
            # As the agent: a set-only update when there is one (the chain-update state moves
            # along), else a chain update.
            if render_set_update(prev, new) is not None and carry(prev, new):
                update = None
            else:
                update = chain_update(prev, new)
            with keeping_renderers():  # (the next update starts from it if none did)
                after = render_program(new).script
            if update is not None:
                TAKEN.append(1)
                assert apply_delta(before, update.script) == blocks_of(after)
            prev, before = new, after
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_chain_updates_were_made() -> None:
    """The property above saw chain updates (else it proved nothing)."""
    if not TAKEN:
        test_chain_update_equals_full_render()
    assert TAKEN
