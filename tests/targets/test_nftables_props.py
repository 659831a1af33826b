"""Property tests of the nftables renderer on random clusters (no packets: see
``tests/kernel/test_nftables_differential.py`` for those).

For every random cluster of the property suite, compiled for a node: the script renders, is
deterministic, parses and validates with ``nft -c`` (when root), names every chain it jumps to,
and a set update from the program to itself is empty.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.pipeline import compile_program
from compiler.targets.nftables import NftablesTarget, render_program, render_set_update
from compiler.tools import nft
from tests.property.contract import check_contract
from tests.property.strategies import resource_sets

CAN_CHECK = nft.available() and os.geteuid() == 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(resource_sets())
def test_random_programs_render(res: m.ResourceSet) -> None:
    sink = DiagnosticSink()
    program = compile_program(res, "node1", sink)
    check_contract(program)
    target = NftablesTarget()
    target.check(program, sink)
    assert not sink.has_errors, sink.errors
    first = render_program(program)
    assert render_program(program) == first
    script = first.script
    defined = set(re.findall(r"^\tchain (\S+) \{", script, re.M))
    jumped = set(re.findall(r"\bjump ([^\s,}]+)", script))
    assert jumped <= defined, jumped - defined
    assert render_set_update(program, program) == ""
    if CAN_CHECK:
        nft.check(script, isolated=True)


@pytest.mark.skipif(not CAN_CHECK, reason="nft -c needs nft and root")
def test_check_runs_in_isolation() -> None:
    """The isolated check sees an empty ruleset: a script that only deletes our table fails."""
    with pytest.raises(nft.NftError):
        nft.check("delete table inet tortie\n", isolated=True)
