"""Endpoint chains: one per local endpoint, hook and direction, and how packets reach them.

Workloads (dispatched by interface name through verdict maps):

* ``wl-egress/<iface>`` — traffic *from* the pod (``iifname``), in forward and input;
* ``wl-ingress/<iface>`` — traffic *to* the pod (``oifname``), in forward (host -> pod is not policed).

Host endpoints are dispatched by **address**, the way the evaluator identifies them: a HEP owns
its ``expectedIPs``; the node's other known addresses (``Program.host_ips``) belong to the
node's ``interfaceName: "*"`` HEP, if there is one. Per HEP (only the chains it needs):

* ``hep-untracked-ingress|egress/<name>`` — raw prerouting/output: failsafes, doNotTrack tiers;
* ``hep-prednat/<name>`` — mangle prerouting: failsafes, preDNAT tiers (ingress only);
* ``hep-ingress|egress/<name>`` — filter input/output: failsafes, "already allowed untracked",
  normal tiers, profiles, "no profile matched" deny;
* ``hep-forward-ingress|egress/<name>`` — forward, by the HEP's interface name: applyOnForward
  tiers with end-of-tier deny and allow by default (ingress: "already allowed untracked" first).

A HEP with a literal interface name also gets its ``hep-untracked-ingress`` and ``hep-prednat``
chains in the ``hep-forward-untracked-ingress`` / ``hep-forward-prednat`` maps (by ``iifname``,
for packets not addressed to this host): forwarded traffic entering through it meets its
doNotTrack and preDNAT ingress policy, as in ``compiler/ir/evaluate.py``.

Failsafe ports come first in every HEP chain (the evaluator checks them before any HEP policy);
they ``return``, meaning "allowed for this endpoint and hook", like a policy allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from compiler.frontend.model import FailsafePort
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.common import span_text
from compiler.targets.nftables.chains import (
    NORMAL,
    PREDNAT,
    UNTRACKED,
    Chain,
    ChainBuilder,
    with_comment,
)
from compiler.targets.nftables.names import ident, is_ifname
from compiler.targets.nftables.rules import net_text, proto


@dataclass
class Dispatch:
    """Verdict-map contents: key text -> chain name, per map name."""

    maps: dict[str, dict[str, str]]

    def add(self, map_name: str, key: str, chain: str) -> None:
        self.maps.setdefault(map_name, {})[key] = chain


def _describe(ep: ir.Endpoint) -> str:
    where = span_text(ep.origin)
    kind = "host endpoint" if ep.is_host else "workload"
    return f"{kind} {ep.id}" + (f" {where}" if where else "")


def failsafe_lines(
    ports: Iterable[FailsafePort], peer: str, port_field: str, label: str
) -> list[str]:
    """``return`` for failsafe (protocol, port[, net]) entries; ``peer`` is ``s`` or ``d`` (the
    remote side that ``net`` restricts), ``port_field`` ``dport`` or ``sport``."""
    plain = sorted({(fp.protocol, fp.port) for fp in ports if fp.net is None})
    lines = []
    if plain:
        items = [f"{proto(p)} . {n}" for p, n in plain]
        # A concatenation always needs a set, even for one element.
        lines.append(
            with_comment(f"meta l4proto . th {port_field} {{ {', '.join(items)} }} return", label)
        )
    with_net = sorted(
        (fp for fp in ports if fp.net is not None),
        key=lambda fp: (fp.net.version, fp.net, fp.protocol, fp.port),  # type: ignore[union-attr]
    )
    for fp in with_net:
        net = fp.net
        assert net is not None
        fam = "ip" if net.version == 4 else "ip6"
        lines.append(
            with_comment(
                f"meta nfproto ipv{net.version} {fam} {peer}addr {net_text(net)} "
                f"meta l4proto {proto(fp.protocol)} th {port_field} {fp.port} return",
                label,
            )
        )
    return lines


def hep_by_address(program: ir.Program, heps: list[ir.Endpoint]) -> dict[ir.IPAddr, ir.Endpoint]:
    """Which local HEP an address belongs to: expectedIPs first (HEPs by id), then the node's
    remaining addresses to its ``*`` HEP — the order the evaluator looks them up in."""
    out: dict[ir.IPAddr, ir.Endpoint] = {}
    for hep in heps:
        for ip in hep.ips:
            out.setdefault(ip, hep)
    star = next((h for h in heps if h.interface == "*"), None)
    if star is not None and program.node is not None:
        for ip in program.host_ips.get(program.node, ()):
            out.setdefault(ip, star)
    return out


def star_hep(heps: list[ir.Endpoint]) -> ir.Endpoint | None:
    return next((h for h in heps if h.interface == "*"), None)


def workload_chain(b: ChainBuilder, ep: ir.Endpoint, direction: str) -> str:
    """Adds the chain of a workload's ``direction`` (``wl-ingress|egress/<iface>``) to ``b``
    (and the policy, profile and sequence chains it needs that ``b`` does not have yet)."""
    m = b.marks
    name = ident(f"wl-{direction}/", ep.interface)
    lines = [with_comment(m.clear(m.accept | m.pass_), "clear accept and pass")]
    tiers, final = b.tier_lines(ep.plan(direction), direction, NORMAL, True)
    lines += tiers
    if not final:
        lines += b.profile_lines(ep, direction)
    return b.add(Chain(name, workload_comment(ep, direction), tuple(lines)))


def workload_comment(ep: ir.Endpoint, direction: str) -> str:
    """The comment of a workload's chain (a delta cannot change it: see :mod:`.chain_update`)."""
    to_from = "to" if direction == ir.INGRESS else "from"
    return f"{direction} ({to_from}) {_describe(ep)}"


class EndpointRenderer:
    """Builds every endpoint chain of the node and the dispatch map contents."""

    def __init__(self, builder: ChainBuilder) -> None:
        self.b = builder
        self.program = builder.program
        self.m = builder.marks
        self.dispatch = Dispatch({})
        local = local_endpoints(self.program)
        self.workloads = [e for e in local if not e.is_host and is_ifname(e.interface)]
        self.heps = [e for e in local if e.is_host]
        self.hep_chains: dict[tuple[str, str], str] = {}  # (hep id, kind) -> chain name

    # -- workloads ------------------------------------------------------------------------------

    def workloads_(self) -> None:
        for ep in sorted(self.workloads, key=lambda e: e.interface):
            key = ep.interface
            self.dispatch.add("wl-ingress", key, workload_chain(self.b, ep, ir.INGRESS))
            self.dispatch.add("wl-egress", key, workload_chain(self.b, ep, ir.EGRESS))

    # -- host endpoints -------------------------------------------------------------------------

    def _failsafes(self, direction: str, raw: bool) -> list[str]:
        felix = self.program.felix
        if direction == ir.INGRESS:
            lines = failsafe_lines(felix.failsafe_inbound, "s", "dport", "failsafe inbound")
            if raw:
                lines += failsafe_lines(
                    felix.failsafe_outbound, "s", "sport", "failsafe outbound (return traffic)"
                )
        else:
            lines = failsafe_lines(felix.failsafe_outbound, "d", "dport", "failsafe outbound")
            if raw:
                lines += failsafe_lines(
                    felix.failsafe_inbound, "d", "sport", "failsafe inbound (return traffic)"
                )
        return lines

    def _untracked_done(self, hep: ir.Endpoint, direction: str) -> list[str]:
        if not hep.plan(direction, ir.UNTRACKED):
            return []
        return [
            with_comment(f"{self.m.is_set(self.m.untracked)} return", "allowed by untracked policy")
        ]

    def _clear(self) -> str:
        return with_comment(self.m.clear(self.m.accept | self.m.pass_), "clear accept and pass")

    def _hep_normal(self, hep: ir.Endpoint, direction: str) -> str:
        name = ident(f"hep-{direction}/", hep.name)
        lines = self._failsafes(direction, raw=False)
        lines += self._untracked_done(hep, direction)
        lines.append(self._clear())
        tiers, final = self.b.tier_lines(hep.plan(direction), direction, NORMAL, True)
        lines += tiers
        if not final:
            lines += self.b.profile_lines(hep, direction)
        return self.b.add(Chain(name, f"{direction} {_describe(hep)}", tuple(lines)))

    def _hep_untracked(self, hep: ir.Endpoint, direction: str) -> str | None:
        plans = hep.plan(direction, ir.UNTRACKED)
        if not plans:
            return None
        name = ident(f"hep-untracked-{direction}/", hep.name)
        lines = self._failsafes(direction, raw=True)
        lines.append(self._clear())
        lines += self.b.tier_lines(plans, direction, UNTRACKED, False)[0]
        comment = f"untracked {direction} {_describe(hep)}"
        return self.b.add(Chain(name, comment, tuple(lines)))

    def _hep_prednat(self, hep: ir.Endpoint) -> str | None:
        plans = hep.plan(ir.INGRESS, ir.PRE_DNAT)
        if not plans:
            return None
        name = ident("hep-prednat/", hep.name)
        lines = self._failsafes(ir.INGRESS, raw=False)
        lines += self._untracked_done(hep, ir.INGRESS)
        lines.append(self._clear())
        lines += self.b.tier_lines(plans, ir.INGRESS, PREDNAT, False)[0]
        return self.b.add(Chain(name, f"preDNAT ingress {_describe(hep)}", tuple(lines)))

    def _hep_forward(self, hep: ir.Endpoint, direction: str) -> str | None:
        plans = hep.plan(direction, ir.FORWARD)
        if not plans or not is_ifname(hep.interface):
            return None
        name = ident(f"hep-forward-{direction}/", hep.name)
        lines = self._untracked_done(hep, direction) if direction == ir.INGRESS else []
        lines.append(self._clear())
        lines += self.b.tier_lines(plans, direction, NORMAL, True)[0]
        comment = f"forwarded {direction} (applyOnForward) {_describe(hep)}"
        return self.b.add(Chain(name, comment, tuple(lines)))

    def heps_(self) -> None:
        for hep in self.heps:
            for direction in ir.DIRECTIONS:
                self.hep_chains[(hep.id, direction)] = self._hep_normal(hep, direction)
                raw = self._hep_untracked(hep, direction)
                if raw is not None:
                    self.hep_chains[(hep.id, f"untracked-{direction}")] = raw
                fwd = self._hep_forward(hep, direction)
                if fwd is not None:
                    self.dispatch.add(f"hep-forward-{direction}", hep.interface, fwd)
            prednat = self._hep_prednat(hep)
            if prednat is not None:
                self.hep_chains[(hep.id, "prednat")] = prednat
            if is_ifname(hep.interface):
                # Forwarded traffic entering through a named HEP's interface meets its
                # doNotTrack and preDNAT ingress chains too (see compiler/ir/evaluate.py).
                for kind in (f"untracked-{ir.INGRESS}", "prednat"):
                    chain = self.hep_chains.get((hep.id, kind))
                    if chain is not None:
                        self.dispatch.add(f"hep-forward-{kind}", hep.interface, chain)
        for ip, hep in sorted(hep_by_address(self.program, self.heps).items(), key=_addr_key):
            for kind in (
                ir.INGRESS,
                ir.EGRESS,
                "prednat",
                f"untracked-{ir.INGRESS}",
                f"untracked-{ir.EGRESS}",
            ):
                chain = self.hep_chains.get((hep.id, kind))
                if chain is not None:
                    self.dispatch.add(f"hep-{kind}{ip.version}", str(ip), chain)

    def render(self) -> None:
        self.workloads_()
        self.heps_()


def _addr_key(item: tuple[ir.IPAddr, ir.Endpoint]) -> tuple[int, int]:
    return (item[0].version, int(item[0]))
