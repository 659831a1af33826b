"""The immutable IR every target renders from and the reference evaluator reads.

Shape (all frozen dataclasses holding tuples / frozensets; passes return new objects):

* :class:`AddrSet` — a set of addresses a rule matches by membership: the IPs selected by a
  (rewritten, canonical) selector, or — for named ports — the ``(ip, protocol, port)`` triples of
  the selected endpoints that declare the port name. ``members`` is ``None`` until the
  ``resolve_sets`` pass fills it; the evaluator then uses the members, before that it evaluates
  the selector itself.
* :class:`Match` — protocol, ICMP, IP version and one :class:`Side` per direction (nets,
  sets and ports, each with its negated form). All criteria are ANDed; values in one list ORed.
* :class:`Rule`, :class:`Policy`, :class:`Tier`, :class:`Profile`.
* :class:`Endpoint` — a workload or host endpoint with its effective labels and, per hook and
  direction, the ordered :class:`TierPlan` list that applies to it (staged policies excluded).
* :class:`Program` — the whole thing, plus the selectable inventory (endpoints and network sets)
  that selector sets are resolved against.

Directions are from the endpoint's point of view: ``ingress`` = traffic to it, ``egress`` = from it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from compiler.diagnostics import NO_SPAN, Span
from compiler.frontend.model import FelixConfig, NamedPort

_T = TypeVar("_T")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

INGRESS = "ingress"
EGRESS = "egress"
DIRECTIONS = (INGRESS, EGRESS)

# Actions (lower case in the IR).
ALLOW = "allow"
DENY = "deny"
PASS = "pass"
LOG = "log"


@dataclass(frozen=True, slots=True)
class AddrSet:
    """A named set of addresses (selector set) or of (ip, proto, port) (named-port set).

    ``id`` is stable: the selector's unique id ``s:…`` for selector sets, and
    ``MakeUniqueID("n", selId + "," + proto + "," + name)`` for named-port sets (proto is the
    protocol name, or ``""`` for "any protocol"). After the family split, ``family`` is 4 or 6 and
    the id gets a ``:4`` / ``:6`` suffix; before it is ``None`` (both families).
    """

    id: str
    selector: str  # canonical positive selector the set is built from
    port_name: str | None = None  # named-port sets only
    port_protocol: int | None = None  # named-port sets: the rule's protocol, None = any
    family: int | None = None
    members: frozenset[IPNet] | None = None  # selector sets, once resolved
    port_members: frozenset[tuple[IPNet, int, int]] | None = None  # named-port sets, resolved
    origin: Span = NO_SPAN

    @property
    def is_named_port(self) -> bool:
        return self.port_name is not None

    @property
    def resolved(self) -> bool:
        return (self.port_members if self.is_named_port else self.members) is not None


@dataclass(frozen=True, slots=True)
class PortMatch:
    """Ports ORed together: numeric inclusive ranges, or membership of the packet's
    (ip, proto, port) on that side in a named-port set."""

    ranges: tuple[tuple[int, int], ...] = ()
    named_sets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Side:
    """Criteria on one side (source or destination) of a packet.

    * ``nets``: ``None`` = no constraint; otherwise the IP must be in at least one (an empty
      tuple therefore matches nothing — a nets field emptied by the family filter).
    * ``not_nets``: the IP must be in none.
    * ``sets``: the IP must be a member of **every** listed selector set (normally 0 or 1).
    * ``not_sets``: the IP must be a member of none.
    * ``ports``: ``None`` = any port; otherwise the port must match the PortMatch.
    * ``not_ports``: the port must match none of it.
    """

    nets: tuple[IPNet, ...] | None = None
    not_nets: tuple[IPNet, ...] = ()
    sets: tuple[str, ...] = ()
    not_sets: tuple[str, ...] = ()
    ports: PortMatch | None = None
    not_ports: PortMatch | None = None

    @property
    def is_any(self) -> bool:
        return self == Side()


@dataclass(frozen=True, slots=True)
class Match:
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    src: Side = Side()
    dst: Side = Side()


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. ``index`` is its 0-based position in the source policy's list for that
    direction (kept through passes so traces and comments name the rule the user wrote)."""

    action: str  # ALLOW | DENY | PASS | LOG
    match: Match
    index: int
    origin: Span = NO_SPAN
    http_ignored: bool = False  # an http match was present and is not enforced at L3/L4


@dataclass(frozen=True, slots=True)
class Policy:
    id: str  # "<kindShort>/<ns>/<name>" or "<kindShort>/<name>"
    name: str
    namespace: str | None
    kind: str
    tier: str
    order: float | None
    selector: str  # rewritten, canonical: which endpoints it applies to
    types: tuple[str, ...]  # subset of (INGRESS, EGRESS)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    staged: bool = False
    staged_action: str = "Set"
    origin: Span = NO_SPAN

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress

    @property
    def kind_short(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def qualified_name(self) -> str:
        """``namespace/name``, or just the name of a cluster-scoped policy."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    order: float | None
    default_action: str  # DENY | PASS
    origin: Span = NO_SPAN


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    origin: Span = NO_SPAN

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True, slots=True)
class TierPlan:
    """A tier that takes part for one endpoint/hook/direction, with its applicable policies in
    evaluation order. Staged policies are never listed (they never change a verdict), so a tier
    whose applicable policies are all staged does not appear at all — which is the same as the
    "passes" rule of SEMANTICS.md §Evaluation order step 5/7."""

    tier: str
    default_action: str  # DENY | PASS
    policies: tuple[str, ...]


# Hooks of an endpoint. Workloads only use NORMAL. Host endpoints use all of them.
NORMAL = "normal"  # workloads: their policy; HEPs: host traffic (filter INPUT/OUTPUT)
FORWARD = "forward"  # HEPs: applyOnForward policies for forwarded traffic
PRE_DNAT = "pre_dnat"  # HEPs: ingress only, no end-of-tier drop
UNTRACKED = "untracked"  # HEPs: doNotTrack policies, no end-of-tier drop
HOOKS = (NORMAL, FORWARD, PRE_DNAT, UNTRACKED)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str  # "ns/pod" or a global name
    kind: str  # "WorkloadEndpoint" | "HostEndpoint"
    name: str
    namespace: str | None
    node: str
    interface: str
    ips: tuple[IPAddr, ...]
    labels: tuple[tuple[str, str], ...]  # effective labels, sorted
    profiles: tuple[str, ...]
    ports: tuple[NamedPort, ...] = ()
    # (hook, direction) -> tiers that take part, in order. Missing key = no tier takes part.
    plans: tuple[tuple[tuple[str, str], tuple[TierPlan, ...]], ...] = ()
    origin: Span = NO_SPAN

    @property
    def is_host(self) -> bool:
        return self.kind == "HostEndpoint"

    def plan(self, direction: str, hook: str = NORMAL) -> tuple[TierPlan, ...]:
        for key, tiers in self.plans:
            if key == (hook, direction):
                return tiers
        return ()


@dataclass(frozen=True, slots=True)
class Selectable:
    """Something a rule selector can select: an endpoint or a (global) network set.
    ``nets`` are the addresses it contributes to a set (endpoint IPs as /32 or /128)."""

    id: str
    kind: str  # "WorkloadEndpoint" | "HostEndpoint" | "NetworkSet" | "GlobalNetworkSet"
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IPNet, ...]
    ports: tuple[NamedPort, ...] = ()


@dataclass(frozen=True, eq=False)
class Program:
    """The whole compiled program. ``node`` is the node compiled for (None = whole cluster).

    Lookups are read-only mappings built once in :func:`make_program`.
    """

    node: str | None
    tiers: Mapping[str, Tier]
    policies: Mapping[str, Policy]
    profiles: Mapping[str, Profile]
    sets: Mapping[str, AddrSet]
    endpoints: tuple[Endpoint, ...]
    selectables: tuple[Selectable, ...]
    felix: FelixConfig = field(default_factory=FelixConfig)
    host_ips: Mapping[str, tuple[IPAddr, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # node name -> the node's own IPs (for workload -> host traffic)
    dropped_rules: tuple[tuple[str, int, str], ...] = ()  # (policy id, rule index, direction)


def _sorted_mapping(items: Mapping | tuple, key: str) -> Mapping:
    pairs = items.items() if isinstance(items, Mapping) else ((getattr(x, key), x) for x in items)
    return MappingProxyType(dict(sorted(pairs)))


#: Program field -> what puts a value of it in the Program's deterministic order (the other
#: fields are kept as given).
_ORDER: dict[str, Callable[[Any], Any]] = {
    "tiers": lambda v: _sorted_mapping(v, "name"),
    "policies": lambda v: _sorted_mapping(v, "id"),
    "profiles": lambda v: _sorted_mapping(v, "name"),
    "sets": lambda v: _sorted_mapping(v, "id"),
    "endpoints": lambda v: tuple(sorted(v, key=lambda e: e.id)),
    "selectables": lambda v: tuple(sorted(v, key=lambda s: (s.kind, s.id))),
    "host_ips": lambda v: MappingProxyType(dict(sorted(v.items()))),
    "dropped_rules": lambda v: tuple(sorted(v)),
}
_PROGRAM_FIELDS = tuple(f.name for f in dataclasses.fields(Program))


def make_program(
    *,
    node: str | None,
    tiers: Mapping[str, Tier] | tuple[Tier, ...],
    policies: Mapping[str, Policy] | tuple[Policy, ...],
    profiles: Mapping[str, Profile] | tuple[Profile, ...],
    sets: Mapping[str, AddrSet] | tuple[AddrSet, ...],
    endpoints: tuple[Endpoint, ...],
    selectables: tuple[Selectable, ...],
    felix: FelixConfig,
    host_ips: Mapping[str, tuple[IPAddr, ...]],
    dropped_rules: tuple[tuple[str, int, str], ...] = (),
) -> Program:
    """Build a Program with every mapping sorted by key, so iteration order is deterministic."""
    given = {
        "node": node,
        "tiers": tiers,
        "policies": policies,
        "profiles": profiles,
        "sets": sets,
        "endpoints": endpoints,
        "selectables": selectables,
        "felix": felix,
        "host_ips": host_ips,
        "dropped_rules": dropped_rules,
    }
    return Program(**{k: _ORDER[k](v) if k in _ORDER else v for k, v in given.items()})


def replace_program(prog: Program, **changes: object) -> Program:
    """``dataclasses.replace`` that keeps the sorted-mapping invariant.

    Only the changed fields are put in order: the others are in order already (and are shared,
    being read-only), so a pass that changes the rules does not sort ten thousand selectables
    again."""
    fields = {name: getattr(prog, name) for name in _PROGRAM_FIELDS}
    for name, value in changes.items():
        if name not in fields:
            raise TypeError(f"Program has no field {name!r}")
        fields[name] = _ORDER[name](value) if name in _ORDER else value
    return Program(**fields)  # type: ignore[arg-type]


def replacer(cls: type[_T]) -> Callable[..., _T]:
    """A ``dataclasses.replace`` for one class of node, about twice as fast: the builder and the
    passes copy thousands of policies and sets with one or two fields changed, and the generic
    function looks every field up again on each call. All fields are ``__init__`` parameters,
    in declaration order, so the copy is made positionally.

    >>> with_order = replacer(Tier)
    >>> with_order(Tier("t", 1.0, DENY), order=2.0) == Tier("t", 2.0, DENY)
    True
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert all(f.init for f in fields), cls
    names = tuple(f.name for f in fields)
    position = {name: i for i, name in enumerate(names)}
    values_of = operator.attrgetter(*names)

    def replace(obj: _T, **changes: Any) -> _T:
        values = list(values_of(obj))
        for name, value in changes.items():
            at = position.get(name)
            if at is None:
                raise TypeError(f"{cls.__name__} has no field {name!r}")
            values[at] = value
        return cls(*values)

    replace.__name__ = replace.__qualname__ = f"replace_{cls.__name__}"
    return replace
