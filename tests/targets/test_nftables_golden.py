"""Golden scripts, determinism and ``nft -c`` syntax checks for the nftables target.

Goldens live in ``tests/targets/golden/nftables/``. On a mismatch the test writes
``<golden>.actual`` next to it and fails with a diff (accepting the change is a ``mv``);
``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.targets.nftables import NftablesTarget, render_program, render_set_update
from compiler.tools import nft
from tests.support.golden import assert_golden
from tests.support.hash_seed import cli_compile, python_stdout
from tests.targets.test_nftables_programs import PROGRAMS, workloads_program

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "nftables"


def _reject_program() -> ir.Program:
    return workloads_program(FelixConfig(deny_action="Reject", log_prefix="%t/%k/%n"))


def _members_changed() -> ir.Program:
    """workloads_program with set members changed (a pod came, one went, a port moved)."""
    prog = workloads_program()
    sets = dict(prog.sets)
    web4 = sets["s:web:4"]
    sets["s:web:4"] = dataclasses.replace(
        web4,
        members=frozenset(
            {ipaddress.ip_network("10.65.0.1/32"), ipaddress.ip_network("10.65.0.128/25")}
        ),
    )
    http4 = sets["n:http:4"]
    sets["n:http:4"] = dataclasses.replace(
        http4, port_members=frozenset({(ipaddress.ip_network("10.65.0.2/32"), 6, 8081)})
    )
    return ir.replace_program(prog, sets=sets)


CASES: dict[str, Callable[[], ir.Program]] = {
    **PROGRAMS,
    "workloads-reject": _reject_program,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_script(name: str) -> None:
    assert_golden(render_program(CASES[name]()).script, GOLDEN / f"{name}.nft")


def test_golden_set_update() -> None:
    update = render_set_update(workloads_program(), _members_changed())
    assert update is not None
    assert_golden(update, GOLDEN / "workloads.set-update.nft")


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_twice_identical(name: str) -> None:
    a = NftablesTarget().render(CASES[name]())
    b = NftablesTarget().render(CASES[name]())
    assert a.files == b.files
    assert a.manifest_bytes() == b.manifest_bytes()


_SUBPROCESS = """
import sys
from tests.targets.test_nftables_programs import PROGRAMS
from compiler.targets.nftables import render_program
sys.stdout.write(render_program(PROGRAMS[sys.argv[1]]()).script)
"""


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_deterministic_across_hash_seeds(seed: str) -> None:
    for name, make in sorted(PROGRAMS.items()):
        out = python_stdout(_SUBPROCESS, name, seed=seed)
        assert out == render_program(make()).script, name


def test_cli_compile_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    """The whole pipeline (YAML -> IR -> passes -> nftables) in two processes with different
    hash seeds gives byte-identical artifact directories."""
    case = ROOT / "tests" / "conformance" / "base" / "cluster.yaml"
    outputs = []
    args = ["-f", str(case.relative_to(ROOT)), "--node", "node1", "--target", "nftables"]
    for seed in ("1", "2"):
        outputs.append(cli_compile(args, tmp_path / f"out{seed}", seed=seed))
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"manifest.json", "nftables.nft"}


def _can_check() -> str | None:
    if not nft.available():
        return "nft is not installed"
    if os.geteuid() != 0:
        return "nft -c needs CAP_NET_ADMIN (run as root)"
    return None


@pytest.mark.skipif(_can_check() is not None, reason=str(_can_check()))
@pytest.mark.parametrize(
    "golden", sorted(p.name for p in GOLDEN.glob("*.nft")) or ["(no goldens yet)"]
)
def test_golden_passes_nft_check(golden: str) -> None:
    """Every golden is accepted by ``nft -c`` in a fresh, empty network namespace (a set
    update needs its table, so it is checked after the script it updates)."""
    text = (GOLDEN / golden).read_text()
    if golden.endswith(".set-update.nft"):
        base = (GOLDEN / golden.replace(".set-update", "")).read_text()
        text = base + text
    nft.check(text, isolated=True)
