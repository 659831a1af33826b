"""Endpoint chains: one per local endpoint, hook and direction, and what reaches them.

Workloads (filter table; dispatched by interface name, :mod:`.dispatch`):

* ``tt-fw-<iface>`` — egress (traffic *from* the pod, ``-i``), in FORWARD and INPUT; it also
  sets the ``from_wl`` bit so INPUT knows to apply ``defaultEndpointToHostAction`` next;
* ``tt-tw-<iface>`` — ingress (traffic *to* the pod, ``-o``), in FORWARD and OUTPUT.

Host endpoints are dispatched by **address**, the way the evaluator identifies them: a HEP owns
its ``expectedIPs``; the node's other known addresses (``Program.host_ips``, the ``tt4-host`` /
``tt6-host`` sets) belong to the node's ``interfaceName: "*"`` HEP, if there is one. Per HEP, only
the chains it needs (the same names in different tables are different chains):

* raw ``tt-fh-<name>`` / ``tt-th-<name>`` — doNotTrack tiers: failsafes first (also for return
  traffic of the other direction's failsafe ports), no end-of-tier deny;
* mangle ``tt-fh-<name>`` — preDNAT tiers (ingress only): failsafes first, no end-of-tier deny,
  an allow only ends preDNAT processing;
* filter ``tt-fh-<name>`` / ``tt-th-<name>`` — conntrack, "allowed untracked", failsafes, normal
  tiers, profiles, "no profile matched" deny;
* filter ``tt-fhfw-<name>`` / ``tt-thfw-<name>`` — forwarded traffic in or out through the HEP's
  interface (by name; ``*`` and ``""`` HEPs have none): applyOnForward tiers with end-of-tier
  deny, allowed by default (ingress: a flow allowed untracked skips them).

A HEP with a literal interface name also runs its raw and mangle ``tt-fh-<name>`` chains for
forwarded traffic entering through that interface (``-i``, destination not local): doNotTrack
and preDNAT ingress policy see forwarded flows too, as in ``compiler/ir/evaluate.py``.

Forwarded traffic: the kernel knows which way a packet crosses the HEP's interface, so (as in
Calico) traffic *entering* through it meets the HEP's applyOnForward *ingress* policy and traffic
*leaving* through it the *egress* policy. The evaluator, told ``via=<hep>``, runs both
directions' forward policy for the flow; the two agree whenever only the crossing direction's
forward policy applies (the kernel tests pick ``via`` that way).
"""

from __future__ import annotations

from collections.abc import Iterable

from compiler.frontend.model import FailsafePort
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.common import span_text
from compiler.targets.iptables.chains import (
    FILTER,
    MANGLE,
    NORMAL,
    PREDNAT,
    RAW,
    UNTRACKED,
    ChainBuilder,
    ct_rules,
)
from compiler.targets.iptables.lower import chunk_ranges, proto_name
from compiler.targets.iptables.model import (
    RANK_DST,
    RANK_MARK,
    RANK_PORTS,
    RANK_PROTO,
    RANK_SRC,
    Chain,
    Cond,
    Rule,
)
from compiler.targets.iptables.names import is_ifname, limited

FAILSAFE_IN = "tt-failsafe-in"
FAILSAFE_OUT = "tt-failsafe-out"


def describe(ep: ir.Endpoint) -> str:
    where = span_text(ep.origin)
    kind = "host endpoint" if ep.is_host else "workload"
    return f"{kind} {ep.id}" + (f" {where}" if where else "")


def failsafe_rules(
    ports: Iterable[FailsafePort],
    family: int,
    peer: str,
    port_dir: str,
    bit_target: tuple[str, ...],
    label: str,
) -> list[Rule]:
    """Rules setting the accept bit for failsafe (protocol, port[, net]) entries of ``family``.

    ``peer`` is ``-s``/``-d``: the remote side a ``net`` restricts; ``port_dir`` ``d``/``s``."""
    groups: dict[tuple[int, str | None], list[tuple[int, int]]] = {}
    for fp in ports:
        if fp.net is not None and fp.net.version != family:
            continue
        groups.setdefault((fp.protocol, str(fp.net) if fp.net else None), []).append(
            (fp.port, fp.port)
        )
    out = []
    for (proto, net), ranges in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        base = [Cond(RANK_PROTO, ("-p", proto_name(proto)))]
        if net is not None:
            base.append(Cond(RANK_SRC if peer == "-s" else RANK_DST, (peer, net)))
        for chunk in chunk_ranges(tuple(ranges)):
            option = "--sports" if port_dir == "s" else "--dports"
            text = ",".join(str(lo) for lo, _ in chunk)
            conds = (*base, Cond(RANK_PORTS, ("-m", "multiport", option, text)))
            out.append(Rule(conds, bit_target, label))
    return out


class EndpointRenderer:
    """Builds every endpoint chain of the node for one family, and records what dispatches to
    them: ``wl_egress``/``wl_ingress`` (iface -> chain), ``hep_chains[(hep id, kind)]``."""

    def __init__(self, builder: ChainBuilder) -> None:
        self.b = builder
        self.program = builder.program
        self.m = builder.marks
        local = local_endpoints(self.program)
        self.workloads = sorted(
            (e for e in local if not e.is_host and is_ifname(e.interface)),
            key=lambda e: e.interface,
        )
        self.heps = [e for e in local if e.is_host]
        self.wl_egress: dict[str, str] = {}
        self.wl_ingress: dict[str, str] = {}
        self.fwd_in: dict[str, str] = {}  # HEP interface -> forward ingress chain
        self.fwd_out: dict[str, str] = {}
        # HEP interface -> doNotTrack (raw) / preDNAT (mangle) ingress chain, for forwarded traffic
        self.fwd_raw_in: dict[str, str] = {}
        self.fwd_mangle_in: dict[str, str] = {}
        self.hep_chains: dict[tuple[str, str], str] = {}  # (hep id, table/direction) -> chain
        self.failsafe_tables: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------

    def _clear(self, extra_set: int = 0) -> Rule:
        m = self.m
        what = "clear accept and pass" + (", mark from-workload" if extra_set else "")
        return Rule((), m.set(extra_set, m.accept | m.pass_ | extra_set), what)

    def _accepted_return(self, why: str) -> Rule:
        return Rule((Cond(RANK_MARK, self.m.match(self.m.accept)),), ("-j", "RETURN"), why)

    def _failsafe_jump(self, table: str, direction: str) -> list[Rule]:
        self.failsafe_tables.add(table)
        chain = FAILSAFE_IN if direction == ir.INGRESS else FAILSAFE_OUT
        return [Rule((), ("-j", chain), "failsafe ports"), self._accepted_return("failsafe port")]

    def failsafe_chains(self, table: str) -> list[Chain]:
        """The failsafe chains of ``table`` (raw ones also let return traffic of the other
        direction's failsafe ports through, which untracked policy would otherwise see)."""
        felix = self.program.felix
        fam = self.b.family
        bit = self.m.set(self.m.accept, self.m.accept)
        ins = failsafe_rules(felix.failsafe_inbound, fam, "-s", "d", bit, "failsafe inbound")
        outs = failsafe_rules(felix.failsafe_outbound, fam, "-d", "d", bit, "failsafe outbound")
        if table == RAW:
            ins += failsafe_rules(
                felix.failsafe_outbound, fam, "-s", "s", bit, "failsafe outbound: return traffic"
            )
            outs += failsafe_rules(
                felix.failsafe_inbound, fam, "-d", "s", bit, "failsafe inbound: return traffic"
            )
        return [
            Chain(FAILSAFE_IN, tuple(ins), "failsafe inbound ports (host endpoints)"),
            Chain(FAILSAFE_OUT, tuple(outs), "failsafe outbound ports (host endpoints)"),
        ]

    # -- workloads ----------------------------------------------------------------------------

    def _workload(self, ep: ir.Endpoint, direction: str) -> str:
        egress = direction == ir.EGRESS
        name = limited("tt-fw-" if egress else "tt-tw-", ep.interface)
        rules = ct_rules(self.program.felix.disable_conntrack_invalid_check)
        rules.append(self._clear(self.m.from_wl if egress else 0))
        tiers, ended = self.b.tier_rules(ep.plan(direction), direction, NORMAL, True)
        rules += tiers if ended else tiers + self.b.profile_rules(ep, direction)
        what = "egress (from)" if egress else "ingress (to)"
        return self.b.add(FILTER, Chain(name, tuple(rules), f"{what} {describe(ep)}"))

    # -- host endpoints -----------------------------------------------------------------------

    def _hep_normal(self, hep: ir.Endpoint, direction: str) -> str:
        ingress = direction == ir.INGRESS
        name = limited("tt-fh-" if ingress else "tt-th-", hep.name)
        m = self.m
        rules = ct_rules(self.program.felix.disable_conntrack_invalid_check)
        rules.append(self._clear())
        if hep.plan(direction, ir.UNTRACKED):
            rules.append(
                Rule(
                    (Cond(RANK_MARK, m.match(m.untracked)),),
                    m.set(m.accept, m.accept),
                    "allowed by untracked policy",
                )
            )
        rules += self._failsafe_jump(FILTER, direction)
        tiers, ended = self.b.tier_rules(hep.plan(direction), direction, NORMAL, True)
        rules += tiers if ended else tiers + self.b.profile_rules(hep, direction)
        return self.b.add(FILTER, Chain(name, tuple(rules), f"{direction} {describe(hep)}"))

    def _hep_untracked(self, hep: ir.Endpoint, direction: str) -> str | None:
        plans = hep.plan(direction, ir.UNTRACKED)
        if not plans:
            return None
        name = limited("tt-fh-" if direction == ir.INGRESS else "tt-th-", hep.name)
        rules = [self._clear(), *self._failsafe_jump(RAW, direction)]
        rules += self.b.tier_rules(plans, direction, UNTRACKED, False)[0]
        return self.b.add(RAW, Chain(name, tuple(rules), f"doNotTrack {direction} {describe(hep)}"))

    def _hep_prednat(self, hep: ir.Endpoint) -> str | None:
        plans = hep.plan(ir.INGRESS, ir.PRE_DNAT)
        if not plans:
            return None
        name = limited("tt-fh-", hep.name)
        rules = [self._clear(), *self._failsafe_jump(MANGLE, ir.INGRESS)]
        rules += self.b.tier_rules(plans, ir.INGRESS, PREDNAT, False)[0]
        return self.b.add(MANGLE, Chain(name, tuple(rules), f"preDNAT ingress {describe(hep)}"))

    def _hep_forward(self, hep: ir.Endpoint, direction: str) -> str | None:
        plans = hep.plan(direction, ir.FORWARD)
        if not plans or not is_ifname(hep.interface):
            return None
        name = limited("tt-fhfw-" if direction == ir.INGRESS else "tt-thfw-", hep.name)
        rules = ct_rules(self.program.felix.disable_conntrack_invalid_check)
        rules.append(self._clear())
        if direction == ir.INGRESS and hep.plan(direction, ir.UNTRACKED):
            rules.append(
                Rule(
                    (Cond(RANK_MARK, self.m.match(self.m.untracked)),),
                    ("-j", "RETURN"),
                    "allowed by untracked policy: no applyOnForward policy",
                )
            )
        tiers, ended = self.b.tier_rules(plans, direction, NORMAL, True)
        rules += tiers
        if not ended:
            rules.append(
                Rule(
                    (),
                    self.m.set(self.m.accept, self.m.accept),
                    "no applyOnForward policy decided: allow",
                )
            )
        what = f"forwarded {direction} (applyOnForward)"
        return self.b.add(FILTER, Chain(name, tuple(rules), f"{what} {describe(hep)}"))

    # -- all ------------------------------------------------------------------------------------

    def render(self) -> None:
        for ep in self.workloads:
            self.wl_egress[ep.interface] = self._workload(ep, ir.EGRESS)
            self.wl_ingress[ep.interface] = self._workload(ep, ir.INGRESS)
        for hep in self.heps:
            for direction in ir.DIRECTIONS:
                self.hep_chains[(hep.id, f"{FILTER}-{direction}")] = self._hep_normal(
                    hep, direction
                )
                raw = self._hep_untracked(hep, direction)
                if raw is not None:
                    self.hep_chains[(hep.id, f"{RAW}-{direction}")] = raw
                fwd = self._hep_forward(hep, direction)
                if fwd is not None:
                    (self.fwd_in if direction == ir.INGRESS else self.fwd_out)[hep.interface] = fwd
            prednat = self._hep_prednat(hep)
            if prednat is not None:
                self.hep_chains[(hep.id, f"{MANGLE}-{ir.INGRESS}")] = prednat
            if is_ifname(hep.interface):
                raw_in = self.hep_chains.get((hep.id, f"{RAW}-{ir.INGRESS}"))
                if raw_in is not None:
                    self.fwd_raw_in[hep.interface] = raw_in
                if prednat is not None:
                    self.fwd_mangle_in[hep.interface] = prednat

    def star(self) -> ir.Endpoint | None:
        return next((h for h in self.heps if h.interface == "*"), None)

    def by_address(self, kind: str) -> list[tuple[ir.IPAddr, str | None]]:
        """(address, chain) for this family's local HEP addresses, for ``kind`` chains
        (``filter-ingress``, ``raw-egress``, …). The first HEP (by id) owns an address, as in
        the evaluator; ``None`` when the owner has no chain of that kind (then the address must
        not fall through to the ``*`` HEP either)."""
        out: dict[ir.IPAddr, str | None] = {}
        for hep in self.heps:
            chain = self.hep_chains.get((hep.id, kind))
            for ip in hep.ips:
                if ip.version == self.b.family and ip not in out:
                    out[ip] = chain
        return sorted(out.items(), key=lambda x: int(x[0]))
