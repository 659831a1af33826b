"""Effective labels of an endpoint (SEMANTICS.md §Label inheritance from profiles).

An endpoint's own labels (implicit ones included) overlay its profiles' ``labelsToApply``: the
endpoint's own label wins, and among profiles the first one in the endpoint's list that has the
key wins. A profile that does not exist contributes nothing (as in Calico, which skips it). Used
by ``tortie select`` and by ``ir/build.py``, so both agree on what a selector matches.

>>> from compiler.frontend.model import Endpoint, Profile
>>> ep = Endpoint("WorkloadEndpoint", "w", "ns", "node1", "cali0", labels=(("app", "web"),),
...               profiles=("kns.ns", "ksa.ns.sa", "missing"))
>>> profiles = {"kns.ns": Profile("kns.ns", (("app", "db"), ("pcns.team", "a"))),
...             "ksa.ns.sa": Profile("ksa.ns.sa", (("pcns.team", "b"), ("pcsa.x", "1")))}
>>> sorted(effective_labels(ep, profiles).items())
[('app', 'web'), ('pcns.team', 'a'), ('pcsa.x', '1')]
"""

from __future__ import annotations

from collections.abc import Mapping

from compiler.frontend.model import Endpoint, NetworkSet, Profile

__all__ = ["effective_labels"]


def effective_labels(
    entity: Endpoint | NetworkSet, profiles_by_name: Mapping[str, Profile]
) -> dict[str, str]:
    """Own labels overlaid on inherited ones; works for network sets too (their ``kns.`` parent)."""
    out: dict[str, str] = {}
    for name in reversed(entity.profiles):  # later profiles first, so earlier ones overwrite
        profile = profiles_by_name.get(name)
        if profile is not None:
            out.update(profile.labels_to_apply)
    out.update(entity.labels)
    return out
