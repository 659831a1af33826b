"""``tortie diff --staged``: what enforcing the staged policies would change.

The head tree is the base with every staged policy **promoted** (SEMANTICS.md §Resources:
staged kinds carry ``stagedAction``):

* ``Set`` (the default): the staged policy becomes its enforced kind — StagedNetworkPolicy ->
  NetworkPolicy, StagedGlobalNetworkPolicy -> GlobalNetworkPolicy,
  StagedKubernetesNetworkPolicy -> KubernetesNetworkPolicy — replacing the enforced policy of
  that kind with the same namespace and name, or creating it;
* ``Delete``: the enforced policy of that kind with the same namespace and name is removed (the
  staged one itself is not enforced);
* ``Learn`` and ``Ignore``: nothing is enforced (they ask Calico to learn or to leave the policy
  alone, not to change the enforced set).

Matching is by (kind, namespace, name), i.e. by policy id. Calico embeds the tier in the name of a
tiered policy (``security.allow-dns``), so that also matches the tier; a staged policy whose tier
differs from the enforced one it replaces moves it to the staged tier.

>>> from compiler.frontend.model import Policy, ResourceSet
>>> rs = ResourceSet(policies=(Policy("GlobalNetworkPolicy", "a", None),
...                            Policy("StagedGlobalNetworkPolicy", "a", None, staged=True,
...                                   staged_action="Delete")))
>>> head, notes = promote(rs)
>>> [p.id for p in head.policies], [n.text() for n in notes]
([], ['sgnp/a (Delete): deletes gnp/a'])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from compiler.frontend.model import ResourceSet

__all__ = ["ENFORCED_KIND", "Promotion", "promote"]

ENFORCED_KIND = {
    "StagedNetworkPolicy": "NetworkPolicy",
    "StagedGlobalNetworkPolicy": "GlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy": "KubernetesNetworkPolicy",
}


@dataclass(frozen=True, slots=True)
class Promotion:
    staged: str  # staged policy id
    action: str  # Set | Delete | Learn | Ignore
    enforced: str  # the enforced policy id it acts on
    effect: str  # "creates" | "replaces" | "deletes" | "nothing to delete" | "not enforced"

    def text(self) -> str:
        if self.effect == "not enforced":
            return f"{self.staged} ({self.action}): not enforced"
        return f"{self.staged} ({self.action}): {self.effect} {self.enforced}"

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def promote(resources: ResourceSet) -> tuple[ResourceSet, list[Promotion]]:
    """The resources with the staged policies enforced, and what each staged policy did."""
    policies = {p.id: p for p in resources.policies}
    notes: list[Promotion] = []
    for p in sorted((p for p in resources.policies if p.staged), key=lambda p: p.id):
        del policies[p.id]
        enforced = dataclasses.replace(
            p, kind=ENFORCED_KIND[p.kind], staged=False, staged_action="Set"
        )
        exists = enforced.id in policies
        if p.staged_action == "Set":
            policies[enforced.id] = enforced
            notes.append(Promotion(p.id, "Set", enforced.id, "replaces" if exists else "creates"))
        elif p.staged_action == "Delete":
            policies.pop(enforced.id, None)
            notes.append(
                Promotion(p.id, "Delete", enforced.id, "deletes" if exists else "nothing to delete")
            )
        else:
            notes.append(Promotion(p.id, p.staged_action, enforced.id, "not enforced"))
    head = dataclasses.replace(
        resources, policies=tuple(sorted(policies.values(), key=lambda p: p.id))
    )
    return head, notes
