"""Gathers converted resources, detects duplicates, and makes the final :class:`ResourceSet`.

Readers hand each object to the :class:`Collector` as soon as it is valid. Cross-resource checks
(a policy's tier must exist; pods whose Namespace is missing) run in :meth:`Collector.finish`,
after every document was read, because YAML order must not matter. The built-in tiers and the
``projectcalico-default-allow`` profile always exist. Everything is sorted by id at the end, so
shuffled input gives an identical result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from compiler.diagnostics import NO_SPAN, DiagnosticSink, Span
from compiler.frontend.model import (
    BGPConfiguration,
    BGPPeer,
    Endpoint,
    FelixConfig,
    IPPool,
    Namespace,
    NetworkSet,
    Node,
    Policy,
    Profile,
    ResourceSet,
    Rule,
    Tier,
)

__all__ = ["DEFAULT_ALLOW", "Collector"]

DEFAULT_ALLOW = "projectcalico-default-allow"
_BUILTIN_TIERS = (
    Tier("kube-admin", 1000.0, "Pass"),
    Tier("default", 1_000_000.0, "Deny"),
    Tier("kube-baseline", 10_000_000.0, "Pass"),
)


@dataclass
class Collector:
    sink: DiagnosticSink
    policies: list[Policy] = field(default_factory=list)
    tiers: dict[str, Tier] = field(default_factory=dict)
    tier_refs: list[tuple[str, Span]] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    network_sets: list[NetworkSet] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    pods: list[Endpoint] = field(default_factory=list)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    # FelixConfiguration name -> (fields that were set, span); merged in finish().
    felix: dict[str, tuple[dict[str, object], Span]] = field(default_factory=dict)
    k8s_nodes: dict[str, Node] = field(default_factory=dict)
    calico_nodes: dict[str, Node] = field(default_factory=dict)
    ip_pools: list[IPPool] = field(default_factory=list)
    bgp_configurations: list[BGPConfiguration] = field(default_factory=list)
    bgp_peers: list[BGPPeer] = field(default_factory=list)
    kind_counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    _seen: dict[tuple[str, str | None, str], tuple[str, Span]] = field(default_factory=dict)
    # Error count when the current document started: a document with errors is not kept.
    doc_start: int = 0

    @property
    def clean(self) -> bool:
        """No error since the current document started."""
        return self.sink.error_count == self.doc_start

    # -- registration --------------------------------------------------------------------------
    def claim(
        self,
        family: str,
        namespace: str | None,
        name: str,
        span: Span,
        what: str,
        *,
        force: bool = False,
    ) -> bool:
        """Record ``family/namespace/name`` and say whether to keep the object.

        False when the name is taken (E024, naming the first definition) or when the current
        document had errors (unless ``force``): nothing half-validated reaches the IR. A
        resource with errors still takes its name, so a duplicate of it is reported too.
        ``family`` groups kinds that share a name space: a Calico Profile ``kns.x`` collides with
        the one that Namespace ``x`` generates.
        """
        if not name:
            return False
        key = (family, namespace, name)
        if key in self._seen:
            first_what, first = self._seen[key]
            full = f"{namespace}/{name}" if namespace else name
            self.sink.error(
                "E024",
                f"duplicate {what} {full!r}",
                span,
                f"{first_what} {full!r} is first defined at {first}",
            )
            return False
        self._seen[key] = (what, span)
        return force or self.clean

    def add_policy(self, policy: Policy, span: Span, *, force: bool = False) -> None:
        if self.claim(policy.kind, policy.namespace, policy.name, span, policy.kind, force=force):
            self.policies.append(policy)

    def add_tier(self, tier: Tier, span: Span) -> None:
        if self.claim("Tier", None, tier.name, span, "Tier"):
            self.tiers[tier.name] = tier

    def add_profile(self, profile: Profile, span: Span, what: str) -> None:
        if self.claim("Profile", None, profile.name, span, what):
            self.profiles[profile.name] = profile

    def add_endpoint(self, ep: Endpoint, span: Span) -> None:
        if self.claim(ep.kind, ep.namespace, ep.name, span, ep.kind):
            self.endpoints.append(ep)

    # -- the end -------------------------------------------------------------------------------
    def _check_tiers(self) -> None:
        for name, span in self.tier_refs:
            if name not in self.tiers:
                defined = ", ".join(sorted(self.tiers))
                self.sink.error(
                    "E064",
                    f"tier {name!r} is not defined (defined tiers: {defined})",
                    span,
                    "add a projectcalico.org/v3 Tier resource with this name",
                )
        self.policies = [p for p in self.policies if p.tier in self.tiers]

    def _merge_pods(self) -> list[Endpoint]:
        """Pods become endpoints unless a WorkloadEndpoint already describes the same pod."""
        weps = {e.id: e for e in self.endpoints if not e.is_host}
        out = []
        for pod in self.pods:
            if pod.id in weps:
                self.sink.warning(
                    "W007",
                    f"pod {pod.id} is also described by WorkloadEndpoint {weps[pod.id].name!r}; using the WorkloadEndpoint",
                    pod.span,
                )
                continue
            out.append(pod)
        return out

    def _warn_missing_profiles(self, endpoints: list[Endpoint]) -> None:
        """Calico skips a profile that an endpoint lists but that does not exist. For ``kns.``
        profiles that means a missing Namespace (W004): its pods lose their pcns. labels and the
        namespace's default allow, which changes verdicts. Missing ``ksa.`` profiles are common
        (ServiceAccounts are rarely exported) and only drop pcsa. labels: no warning."""
        warned: set[str] = set()
        for ep in endpoints:
            for name in ep.profiles:
                if name in self.profiles or name in warned or name.startswith("ksa."):
                    continue
                warned.add(name)
                if name.startswith("kns."):
                    ns = name[len("kns.") :]
                    self.sink.warning(
                        "W004",
                        f"namespace {ns!r} has no Namespace object in the input: its endpoints ({ep.id} and any "
                        f"others) reference the missing profile {name}, so they get no pcns. labels and no default allow",
                        ep.span,
                        "Calico skips a profile that does not exist; add the Namespace (kubectl get namespaces -o yaml)",
                    )
                else:
                    self.sink.warning(
                        "W009",
                        f"{ep.kind} {ep.id} lists profile {name!r}, which is not defined: Calico skips it",
                        ep.span,
                    )

    def _nodes(self) -> list[Node]:
        """One Node per name: a Calico Node's BGP settings win over a Kubernetes Node's
        annotations; the Kubernetes labels are kept (Calico copies them onto its Node)."""
        out = []
        for name in sorted(set(self.k8s_nodes) | set(self.calico_nodes)):
            k8s, cal = self.k8s_nodes.get(name), self.calico_nodes.get(name)
            if k8s is None or cal is None:
                out.append(k8s or cal)  # type: ignore[arg-type]
                continue
            out.append(
                replace(
                    cal,
                    ipv4=cal.ipv4 or k8s.ipv4,
                    ipv6=cal.ipv6 or k8s.ipv6,
                    asn=cal.asn if cal.asn is not None else k8s.asn,
                    route_reflector_cluster_id=cal.route_reflector_cluster_id
                    or k8s.route_reflector_cluster_id,
                    labels=k8s.labels or cal.labels,
                    vxlan_tunnel_address=cal.vxlan_tunnel_address or k8s.vxlan_tunnel_address,
                )
            )
        return out

    def _felix(self) -> tuple[FelixConfig, tuple[tuple[str, FelixConfig], ...]]:
        base, span = self.felix.get("default", ({}, NO_SPAN))
        default = (
            replace(FelixConfig(), **base, span=span) if base or span != NO_SPAN else FelixConfig()
        )
        per_node = []
        for name, (values, nspan) in sorted(self.felix.items()):
            if name.startswith("node."):
                per_node.append(
                    (name[len("node.") :], replace(FelixConfig(), **(base | values), span=nspan))
                )
        return default, tuple(per_node)

    def finish(self) -> ResourceSet:
        for tier in _BUILTIN_TIERS:
            self.tiers.setdefault(tier.name, tier)
        allow = (Rule("Allow"),)
        self.profiles.setdefault(DEFAULT_ALLOW, Profile(DEFAULT_ALLOW, (), allow, allow))
        self._check_tiers()
        endpoints = self.endpoints + self._merge_pods()
        self._warn_missing_profiles(endpoints)
        felix, felix_nodes = self._felix()
        return ResourceSet(
            policies=tuple(sorted(self.policies, key=lambda p: (p.id, p.kind))),
            tiers=tuple(sorted(self.tiers.values(), key=lambda t: t.name)),
            profiles=tuple(sorted(self.profiles.values(), key=lambda p: p.name)),
            network_sets=tuple(
                sorted(self.network_sets, key=lambda s: (s.namespace is not None, s.id))
            ),
            endpoints=tuple(sorted(endpoints, key=lambda e: (e.kind, e.id, e.name))),
            namespaces=tuple(sorted(self.namespaces.values(), key=lambda n: n.name)),
            felix=felix,
            felix_per_node=felix_nodes,
            nodes=tuple(self._nodes()),
            ip_pools=tuple(sorted(self.ip_pools, key=lambda p: p.name)),
            bgp_configurations=tuple(sorted(self.bgp_configurations, key=lambda b: b.name)),
            bgp_peers=tuple(sorted(self.bgp_peers, key=lambda b: b.name)),
            kind_counts=tuple(sorted(self.kind_counts.items())),
            skipped=tuple(sorted(self.skipped.items())),
        )
