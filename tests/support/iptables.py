"""iptables in kernel tests: which of the two backends can run here, and reading back what the
kernel holds (Tortie's own chains from ``iptables-save``, printed the way both backends agree on).

Loading an artifact into a cluster is :class:`tests.support.topology.IptTopology`.
"""

from __future__ import annotations

import re
import shutil

import pytest

from compiler.targets.iptables.apply import parse_save
from compiler.tools import ipset as ipset_tool
from compiler.tools import iptables as iptables_tool

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


def normalize_rule(line: str) -> str:
    """Rule text as both backends' iptables-save print it back: ``-p`` numbers may come back as
    /etc/protocols names; the limit module drops the default burst and says ``sec``."""
    line = re.sub(r"-p (\w+)", lambda m: "-p " + _PROTO_NUMBER.get(m[1], m[1]), line)
    return line
