"""Flows and verdicts: the evaluator's input and output (plain data)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.diagnostics import NO_SPAN, Span
from compiler.ir.nodes import IPAddr


@dataclass(frozen=True, slots=True)
class Flow:
    """The first packet of a flow."""

    src_ip: IPAddr
    dst_ip: IPAddr
    protocol: int  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, ...)
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @staticmethod
    def make(src: str, dst: str, protocol: int, dst_port: int | None = None, **kw: int) -> Flow:
        return Flow(  # type: ignore[arg-type]
            ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, dst_port=dst_port, **kw
        )

    @property
    def family(self) -> int:
        return self.src_ip.version


@dataclass(frozen=True, slots=True)
class Step:
    """What decided one direction (or one non-terminal event such as a Log rule).

    ``reason`` is one of: ``rule`` (a policy rule), ``profile-rule``, ``end-of-tier``,
    ``no-profile`` (no profile allowed / no profiles), ``failsafe``, ``not-calico-endpoint``
    (that side is not a Calico endpoint, so nothing to enforce), ``endpoint-to-host``
    (defaultEndpointToHostAction), ``host-to-local-workload`` (never policed, as in Felix),
    ``no-policy`` (a hook with default allow, e.g. HEP forward).
    """

    reason: str
    action: str  # "allow" | "deny" | "pass" | "log"
    endpoint: str | None = None
    hook: str = "normal"
    tier: str | None = None
    policy: str | None = None  # policy id or profile name
    rule_index: int | None = None  # 0-based
    span: Span = NO_SPAN


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    direction: str  # "egress" (of the source) | "ingress" (of the destination)
    allowed: bool
    decided_by: Step
    events: tuple[Step, ...] = ()  # every step taken, in order, Log and Pass included


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    egress: DirectionVerdict
    ingress: DirectionVerdict
