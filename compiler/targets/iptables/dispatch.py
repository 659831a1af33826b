"""Interface dispatch: a shallow prefix tree of interface names, walked with ``goto``.

A linear list of ``-i caliXXXX -g tt-fw-caliXXXX`` rules costs one rule per local workload for
every packet. As in Felix (``felix/rules/dispatch.go``), names are grouped by their common prefix:
the root chain has one ``-i <prefix>+ -g <sub-chain>`` rule per group (``+`` is iptables' "starts
with" wildcard) and leaf rules for names alone in their group; each sub-chain does the same for
its group, one character deeper. With at most :data:`FANOUT` rules per chain, a packet
traverses O(FANOUT · depth) rules instead of O(endpoints).

``goto`` matters: a sub-chain that matches nothing falls off its end and returns to the chain
that *jumped* into the tree (the top-level chain), and an endpoint chain reached by ``-g``
returns there too. So "not a local workload interface" simply means "the tree returned".

>>> tree = build_tree("tt-x", "tt-x-", "-i", {f"cali{i:02d}": ("-g", f"ep{i}") for i in range(20)})
>>> [r.text(c.name) for c in tree for r in c.rules][:3]
['-A tt-x-cali0 -i cali00 -g ep0', '-A tt-x-cali0 -i cali01 -g ep1', '-A tt-x-cali0 -i cali02 -g ep2']
>>> [r.text("tt-x") for r in tree[-1].rules]
['-A tt-x -i cali0+ -g tt-x-cali0', '-A tt-x -i cali1+ -g tt-x-cali1']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from itertools import groupby

from compiler.targets.iptables.model import RANK_IN, RANK_OUT, Chain, Cond, Rule
from compiler.targets.iptables.names import limited

FANOUT = 16


def build_tree(
    root: str,
    sub_prefix: str,
    flag: str,
    targets: Mapping[str, tuple[str, ...]],
    comment: str = "",
) -> list[Chain]:
    """Chains (sub-chains first, the ``root`` chain last) dispatching ``flag`` (``-i``/``-o``)
    interface names to their targets. An empty mapping gives an empty root chain."""
    rank = RANK_IN if flag == "-i" else RANK_OUT
    out: list[Chain] = []

    def leaf(name: str) -> Rule:
        return Rule((Cond(rank, (flag, name)),), targets[name])

    def build(chain: str, names: list[str]) -> None:
        if len(names) <= FANOUT:
            out.append(Chain(chain, tuple(leaf(n) for n in names), comment))
            return
        common = os.path.commonprefix(names)
        rules = []
        for key, group in groupby(names, key=lambda n: n[: len(common) + 1]):
            members = list(group)
            if len(members) == 1:
                rules.append(leaf(members[0]))
                continue
            sub = limited(sub_prefix, key)
            rules.append(Rule((Cond(rank, (flag, key + "+")),), ("-g", sub)))
            build(sub, members)
        out.append(Chain(chain, tuple(rules), comment))

    build(root, sorted(targets))
    return out
