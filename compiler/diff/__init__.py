"""``tortie diff``: what a policy change does to connectivity (and to the artifacts).

:func:`semantic_diff` compares two resource sets **exactly**: every flow (source, destination,
protocol, ports or ICMP type/code) whose verdict differs between them is found, with the rule
that decides it before and after. Nothing is sampled; the flow space is cut into classes inside
which neither tree can tell flows apart, and the reference evaluator decides each class:

* ``subjects.py``   — who is compared: endpoints present in both trees, node addresses, and
  external address classes (cut at every CIDR either tree mentions, ``addresses.py``);
* ``services.py``   — protocols, ports and ICMP cut at every boundary the rules mention;
* ``views.py``      — which tiers, policies and profiles run for an address, per direction;
* ``rules.py``      — what each rule sees of either end of a flow; caches shared by all groups;
* ``tables.py``     — per group of owners with the same views, the verdicts over the group's
  own classes, evaluated with the reference evaluator on a small equivalent program
  (``mini.py``), block by block (``blocks.py``), only where a change can show (``align.py``);
* ``semantic.py``   — changed cells crossed with the other direction: verdict changes as rows
  over classes (with ``decision.py`` naming what decided each);
* ``forward.py``    — flows forwarded through a host endpoint (``applyOnForward``) whose verdict
  changed there only: the ordinary verdict allows in both trees, the forward hook changed;
* ``report.py``     — rows grouped for people (namespace pair, endpoint group, port ranges);
* ``staged.py``     — ``--staged``: the head tree is the base with staged policies enforced;
* ``revs.py``       — reading a tree from a git revision;
* ``artifacts.py``  — structural diff of rendered artifacts (chains, rules, sets, elements);
* ``render.py``     — text, JSON and Markdown output.

Endpoints present in only one tree are reported as added / removed, not as verdict changes.

Cost, 1,000 pods x 1,000 policies (``python3 -m benchmarks.gen --policies 1000 --endpoints 1000
--nodes 10``: both families, 10 nodes, 5 network sets of 500 CIDRs), CPU seconds of
:func:`semantic_diff` on a shared 2-core VM (loading both trees' YAML adds ~1.5 s):

* nothing changed: 1.4 s (build, resolve and classify both trees; no group is dirty);
* one Kubernetes NetworkPolicy's port changed (shadowed by broader GNPs: no flow changes):
  1.9 s;
* a namespace's label changed (every namespace-selector set changes members; 223 of 261
  ingress groups dirty): 9.5 s, 74 groups;
* a new GlobalNetworkPolicy in the first tier denying TCP 5432 to every pod: 11.7 s, 510 groups
  (183,018 pod pairs);
* a default-deny (ingress and egress) for a 22-pod namespace: 10.4 s; for the largest,
  341-pod, namespace: 12.4 s, 132 groups.

Every evaluation is the reference evaluator's (about 1,000-2,500 per family in those runs).

Forwarded flows (``forward.py``) cost nothing in those runs (no host endpoint has forward
tiers). With one ``*`` host endpoint per node added (default-allow profile), CPU seconds of the
whole diff: nothing changed 1.3 s; a new applyOnForward GlobalNetworkPolicy denying TCP 5432 in
both forward directions on all 10 endpoints 74-88 s (4-6 s without the forwarded section;
11,606 forwarded rows, 5,129 groups); one endpoint's label no longer selected by it 18.4 s
(3.6-4.6 s without; 1,180 rows, 529 groups). Most of it is the ordinary verdicts of every pair
under a changed forward cell, which the ordinary diff had no reason to compute. (Measured
before the HEP-independent work was shared across host endpoints, which made the forwarded
section ~1.8x faster on the trees measured then; not re-measured on this tree.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from compiler.diff.report import ChangeGroup, ForwardGroup, forward_groups, group_rows
from compiler.diff.semantic import FamilyDiff, diff_family
from compiler.diff.subjects import EndpointChange, endpoint_changes
from compiler.frontend.model import ResourceSet
from compiler.ir import nodes as ir
from compiler.ir.build import build
from compiler.ir.passes import resolve_sets

__all__ = ["SemanticDiff", "prepare", "semantic_diff"]


def prepare(resources: ResourceSet) -> ir.Program:
    """The program the diff evaluates: the whole cluster, sets resolved. The other passes keep
    the evaluator's verdicts (tests/property) and are not needed to compare them."""
    return resolve_sets.run(build(resources, None), None)


@dataclass
class SemanticDiff:
    groups: list[ChangeGroup]
    endpoints: list[EndpointChange]
    families: list[FamilyDiff]
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    forward: list[ForwardGroup] = field(default_factory=list)  # forwarded flows (forward.py)

    @property
    def changed(self) -> bool:
        """Whether anything changed semantically: a verdict (of a flow, or of a flow forwarded
        through a host endpoint), or an endpoint added or removed."""
        return (
            bool(self.groups)
            or bool(self.forward)
            or any(c.change != "addresses" for c in self.endpoints)
        )


def semantic_diff(base: ResourceSet, head: ResourceSet) -> SemanticDiff:
    start = time.perf_counter()
    programs = (prepare(base), prepare(head))
    families = [diff_family(programs, family) for family in (4, 6)]
    stats: dict[str, int] = {}
    for fd in families:
        for k, v in fd.stats.items():
            stats[f"ipv{fd.family}_{k}"] = v
    return SemanticDiff(
        group_rows(families),
        endpoint_changes(programs),
        families,
        time.perf_counter() - start,
        stats,
        forward_groups(families),
    )
