"""Kernel-test support for the iptables target: both backends, a Topology that loads iptables
artifacts, and helpers to read what the kernel holds.

The cluster layout (nodes, pods, external hosts, which source address a node uses) is the one
the nftables kernel tests use (``tests/kernel/test_nftables_support.py``), so both targets are
checked against the evaluator on the same topology; only loading differs. (Kept in a
``test_iptables_*`` module so it lives with the tests that use it; its own tests are at the
bottom.)
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from compiler.ir.nodes import Program
from compiler.targets.iptables import render_program
from compiler.targets.iptables.apply import apply, parse_save
from compiler.tools import ipset as ipset_tool
from compiler.tools import iptables as iptables_tool
from tests.kernel.test_nftables_support import Topology
from tests.support.netns import Cluster

BACKENDS = ("legacy", "nft")


def backend_skip_reason(backend: str) -> str | None:
    if not iptables_tool.available(backend):
        return f"iptables {backend} tools (iptables-{backend}-restore/-save) are not installed"
    if not ipset_tool.available():
        return "ipset is not installed"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None


def backend_params() -> list:
    """``@pytest.mark.parametrize("backend", backend_params())``: each backend, skipped with a
    reason when its tools are missing."""
    out = []
    for b in BACKENDS:
        reason = backend_skip_reason(b)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(b, marks=marks, id=b))
    return out


@dataclass
class IptTopology(Topology):
    """A :class:`Topology` whose nodes load iptables artifacts with ``backend``."""

    backend: str = "legacy"

    @classmethod
    def make(
        cls, cluster: Cluster, programs: Mapping[str, Program], backend: str, **kw: object
    ) -> IptTopology:
        topo = cls.build(cluster, programs, **kw)  # type: ignore[arg-type]
        assert isinstance(topo, IptTopology)
        topo.backend = backend
        return topo

    def load(self, files: Mapping[str, Mapping[str, bytes]] | None = None) -> None:  # type: ignore[override]
        """Apply every node's artifact (rendered from its program unless given)."""
        for name, program in sorted(self.programs.items()):
            node_files = (files or {}).get(name) or render_program(program).files
            left = apply(node_files, backend=self.backend, netns=self.nodes[name].name)
            assert not left, f"stale sets left on {name}: {left}"

    def save(self, node: str, family: int = 4) -> str:
        return iptables_tool.save(family=family, backend=self.backend, netns=self.nodes[node].name)


def own_rules(saved: str) -> dict[str, dict[str, list[str]]]:
    """table -> Tortie chain (and built-in chains' hook rules) -> rule lines, from save output."""
    out: dict[str, dict[str, list[str]]] = {}
    for table, t in parse_save(saved).items():
        chains: dict[str, list[str]] = {c: [] for c in t.chains if c.startswith("tt-")}
        for line in t.rules:
            chain = line.split()[1]
            if chain in chains or "tortie:hook" in line:
                chains.setdefault(chain, []).append(line)
        if chains:
            out[table] = chains
    return out


_PROTO_NUMBER = {"gre": "47", "esp": "50", "ah": "51"}


def normalize(line: str) -> str:
    """Rule text as both backends' iptables-save print it back: ``-p`` numbers may come back as
    /etc/protocols names; the limit module drops the default burst and says ``sec``."""
    line = re.sub(r"-p (\w+)", lambda m: "-p " + _PROTO_NUMBER.get(m[1], m[1]), line)
    return line


# -- tests of the support code itself (no kernel needed) -------------------------------------


def test_own_rules_picks_tortie_chains_and_hooks() -> None:
    saved = """# Generated
*filter
:INPUT ACCEPT [0:0]
:tt-INPUT - [0:0]
:other - [0:0]
-A INPUT -j other
-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT
-A tt-INPUT -j ACCEPT
-A other -j DROP
COMMIT
"""
    assert own_rules(saved) == {
        "filter": {
            "tt-INPUT": ["-A tt-INPUT -j ACCEPT"],
            "INPUT": ['-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT'],
        }
    }
    assert normalize("-A x -p gre -j RETURN") == "-A x -p 47 -j RETURN"
    assert len(backend_params()) == 2
