"""The plain data a BIRD configuration is rendered from.

:mod:`runtime.bgp.build` turns resources into a :class:`BirdConfig`; :mod:`runtime.bgp.render`
lays it out with a Jinja2 template and nothing else: the template makes no decisions the data
has not made already. Every field holds either a number, an address rendered by ``ipaddress``
(so it cannot contain anything but digits, hex, dots, colons and a slash), a name checked
against :data:`NAME_RE`, or free text that the template passes through a quoting filter
(``bird_str``: BIRD strings have no escapes, so text with a double quote, a newline or any
control character is refused outright) or a comment filter (``comment``: anything outside a
small allowlist becomes ``_``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "NAME_RE",
    "BirdConfig",
    "BirdFamily",
    "BirdPeer",
    "BlockAggr",
    "CommunityRule",
    "KernelPoolRule",
    "StaticRoute",
]

# BIRD symbol names: a letter or underscore, then letters, digits, underscores (BIRD's
# SYM_MAX_LEN is 64).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class BirdPeer:
    """One ``protocol bgp`` session."""

    name: str  # Mesh_10_0_0_2, Global_..., Node_...; matches NAME_RE
    kind: str  # "mesh" | "global" | "node": for the comment above the protocol
    source: str  # where it came from (BGPPeer name / node name): comment text
    neighbor: str  # peer address
    port: int | None  # peer port, None = 179
    asn: int  # peer AS
    local_asn: int  # our AS on this session
    internal: bool  # iBGP (same AS)
    local_address: str | None = None  # for `local ADDR ...` (bindMode NodeIP)
    local_port: int | None = None  # listenPort when not 179
    source_address: str | None = None
    passive: bool = False
    ttl_security: int | None = None  # None: `ttl security off; multihop;`
    password: str | None = None
    graceful_restart_time: int | None = None
    keepalive_time: int | None = None
    hold_time: int | None = None
    rr_client: bool = False
    rr_cluster_id: str | None = None
    next_hop: str | None = None  # "self" | "keep"
    allow_local_as: int | None = None


@dataclass(frozen=True, slots=True)
class BlockAggr:
    """One of this node's IPAM blocks, for ``tortie_aggr_vN()`` (SEMANTICS.md §IPAM)."""

    cidr: str
    state: str  # confirmed | pending | pendingDeletion
    static: bool = True  # a static blackhole stands for it (not for /32 and /128 blocks)


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """A route of the static protocol: a blackhole (``via`` None) or ``dst via gateway``."""

    dst: str
    via: str | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class KernelPoolRule:
    cidr: str
    accept: bool
    why: str


@dataclass(frozen=True, slots=True)
class CommunityRule:
    """``if net ~ cidr then add ...``: standard (2 parts) and large (3 parts) communities."""

    cidr: str
    standard: tuple[tuple[int, int], ...]
    large: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class BirdFamily:
    """Everything of one address family: filters, static and kernel protocols, sessions."""

    version: int  # 4 | 6
    node_ip: str | None
    normal_priority: int
    blocks: tuple[BlockAggr, ...] = ()
    static_routes: tuple[StaticRoute, ...] = ()
    disabled_export_pools: tuple[str, ...] = ()
    enabled_pools: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()  # advertised, kept out of the kernel
    kernel_pools: tuple[KernelPoolRule, ...] = ()
    runtime_blocks: tuple[str, ...] = ()  # blackholes the runtime programs itself
    communities: tuple[CommunityRule, ...] = ()
    peers: tuple[BirdPeer, ...] = ()

    @property
    def suffix(self) -> str:
        return f"v{self.version}"

    @property
    def channel(self) -> str:
        return f"ipv{self.version}"

    @property
    def max_metric(self) -> int:
        """``2^31 - 1``: the local preference that maps back to metric 0."""
        return 2**31 - 1


@dataclass(frozen=True, slots=True)
class BirdConfig:
    node: str  # comment text
    router_id: str
    asn: int
    is_route_reflector: bool
    log_file: str | None  # None: syslog
    log_classes: str  # "all" or "{ info, warning, ... }"
    debug: str  # "all" | "{ states }"
    direct_exclude: tuple[str, ...]  # interface patterns excluded from `protocol direct`
    strict_bind: bool
    families: tuple[BirdFamily, ...]
