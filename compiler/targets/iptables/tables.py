"""The top-level chains of each table, the dispatch chains, and the hooks into built-in chains.

=========== ================== =========================================================
table       top-level chain    what (hooked from the built-in chain of the same name)
=========== ================== =========================================================
raw         tt-PREROUTING      doNotTrack ingress of host endpoints (by destination)
raw         tt-OUTPUT          doNotTrack egress of host endpoints (by source)
mangle      tt-PREROUTING      preDNAT ingress of host endpoints (new flows)
filter      tt-INPUT           workload -> host (egress, then defaultEndpointToHostAction),
                               else host endpoint ingress (by destination)
filter      tt-FORWARD         applyOnForward in, workload egress, workload ingress,
                               applyOnForward out
filter      tt-OUTPUT          node address -> local workload: accepted (never policed);
                               else host endpoint egress (by source), then workload ingress
=========== ================== =========================================================

Each filter top-level chain resets Tortie's mark bits, lets every side that applies either drop
the packet or return with the accept bit set, and ends with ``-m mark --mark A/A -j ACCEPT``:
both ends of a flow are checked before anything is accepted, and traffic no Calico endpoint
takes part in returns to the built-in chain untouched (the rest of the host's firewall decides).
Raw and mangle never ``ACCEPT``: their verdicts are ``DROP``, ``NOTRACK`` and mark bits.

Every top-level chain is emitted even when it is empty, with its hook: a re-apply flushes it
(``:chain - [0:0]``), so a policy removed from the input can never stay in force through a
chain the new files do not mention.
"""

from __future__ import annotations

from compiler.ir import nodes as ir
from compiler.targets.iptables.chains import FILTER, MANGLE, RAW, ChainBuilder
from compiler.targets.iptables.dispatch import build_tree
from compiler.targets.iptables.endpoints import EndpointRenderer
from compiler.targets.iptables.marks import Marks
from compiler.targets.iptables.model import (
    RANK_CT,
    RANK_DST,
    RANK_IN,
    RANK_LIMIT,
    RANK_MARK,
    RANK_OUT,
    RANK_PORTS,
    RANK_PROTO,
    RANK_SET,
    RANK_SRC,
    Chain,
    Cond,
    Hook,
    Rule,
    Table,
)
from compiler.targets.iptables.names import host_set_name

TOP = {
    RAW: ("tt-PREROUTING", "tt-OUTPUT"),
    MANGLE: ("tt-PREROUTING",),
    FILTER: ("tt-INPUT", "tt-FORWARD", "tt-OUTPUT"),
}
NDP_CHAIN = "tt-ndp"
# ICMPv6 the host needs whatever policy says: neighbour discovery (133-137, always hop limit 255,
# so never forwarded or spoofed from off-link) and MLD (130-132, 143, to multicast addresses).
_ND_TYPES = (133, 134, 135, 136, 137)
# Not addressed to this host (forwarded): forwarded traffic's doNotTrack / preDNAT dispatch.
_NOT_LOCAL = Cond(RANK_CT, ("-m", "addrtype", "!", "--dst-type", "LOCAL"))
_MLD_TYPES = (130, 131, 132, 143)


class FamilyRenderer:
    """Everything of one IP family: endpoint, policy and profile chains plus the top level."""

    def __init__(
        self, program: ir.Program, family: int, marks: Marks, set_names: dict[str, str]
    ) -> None:
        self.program = program
        self.family = family
        self.m = marks
        self.b = ChainBuilder(program, family, marks, set_names)
        self.eps = EndpointRenderer(self.b)
        self.eps.render()
        self.host_set = host_set_name(family)
        self.top: dict[str, list[Chain]] = {RAW: [], MANGLE: [], FILTER: []}
        self.has_wl = bool(self.eps.workloads)
        self._raw()
        self._mangle()
        self._filter()
        for table in sorted(self.eps.failsafe_tables):
            for chain in self.eps.failsafe_chains(table):
                self.b.add(table, chain)

    # -- pieces ---------------------------------------------------------------------------------

    def _set_match(self, where: str, negate: bool = False) -> Cond:
        neg = ("!",) if negate else ()
        return Cond(RANK_SET, ("-m", "set", *neg, "--match-set", self.host_set, where))

    def _host_dispatch(self, table: str, name: str, flag: str, kind: str) -> str | None:
        """A chain sending host traffic to the HEP chain of ``kind`` by address (``flag`` is
        ``-d`` for ingress, ``-s`` for egress); the ``*`` HEP gets the node's other addresses."""
        rank = RANK_DST if flag == "-d" else RANK_SRC
        star = self.eps.star()
        star_chain = self.eps.hep_chains.get((star.id, kind)) if star is not None else None
        rules = []
        for ip, chain in self.eps.by_address(kind):
            cond = (Cond(rank, (flag, f"{ip}/{ip.max_prefixlen}")),)
            if chain is not None:
                rules.append(Rule(cond, ("-g", chain), "host endpoint address"))
            elif star_chain is not None:
                rules.append(
                    Rule(cond, ("-j", "RETURN"), "owned by a host endpoint without this hook")
                )
        if star_chain is not None:
            where = "dst" if flag == "-d" else "src"
            rules.append(
                Rule(
                    (self._set_match(where),),
                    ("-g", star_chain),
                    "other node address: * host endpoint",
                )
            )
        if not rules:
            return None
        return self.b.add(table, Chain(name, tuple(rules), f"host endpoints by address ({kind})"))

    def _fwd_dispatch(
        self, table: str, name: str, targets: dict[str, str], what: str
    ) -> str | None:
        """Forwarded traffic entering through a named HEP's interface -> its ``table`` chain."""
        if not targets:
            return None
        rules = tuple(
            Rule((Cond(RANK_IN, ("-i", i)),), ("-g", c)) for i, c in sorted(targets.items())
        )
        return self.b.add(table, Chain(name, rules, f"{what} host endpoints by interface"))

    def _star_for_workloads(self, kind: str) -> str | None:
        """With defaultEndpointToHostAction Return, workload -> host traffic meets the ``*`` HEP."""
        if self.program.felix.default_endpoint_to_host_action != "Return" or not self.has_wl:
            return None
        star = self.eps.star()
        return self.eps.hep_chains.get((star.id, kind)) if star is not None else None

    def _classifier(self, table: str) -> None:
        """raw/mangle copy of the workload-interface tree that only sets the from-workload bit."""
        targets = {
            iface: self.m.set(self.m.from_wl, self.m.from_wl) for iface in self.eps.wl_egress
        }
        for chain in build_tree(
            "tt-wl-classify", "tt-wl-cls-", "-i", targets, "local workload interfaces"
        ):
            self.b.add(table, chain)

    def _from_wl_guard(self) -> tuple[Cond, ...]:
        return (Cond(RANK_MARK, self.m.clear_match(self.m.from_wl)),) if self.has_wl else ()

    # -- raw ------------------------------------------------------------------------------------

    def _raw(self) -> None:
        m = self.m
        host_in = self._host_dispatch(RAW, "tt-host-in", "-d", f"{RAW}-{ir.INGRESS}")
        host_out = self._host_dispatch(RAW, "tt-host-out", "-s", f"{RAW}-{ir.EGRESS}")
        star_wl = self._star_for_workloads(f"{RAW}-{ir.INGRESS}")
        untracked = any(h.plan(d, ir.UNTRACKED) for h in self.eps.heps for d in ir.DIRECTIONS)
        clear = Rule((), m.set(0, m.all), "clear Tortie mark bits")
        notrack = Rule(
            (Cond(RANK_MARK, m.match(m.untracked)),), ("-j", "CT", "--notrack"), "allowed untracked"
        )
        fwd_in = self._fwd_dispatch(RAW, "tt-fwd-in", self.eps.fwd_raw_in, "doNotTrack")
        pre: list[Rule] = [clear] if untracked else []
        if host_in or star_wl or fwd_in:
            if self.has_wl:
                self._classifier(RAW)
                pre.append(Rule((), ("-j", "tt-wl-classify"), "from a local workload?"))
            if star_wl:
                conds = (Cond(RANK_MARK, m.match(m.from_wl)), self._set_match("dst"))
                pre.append(Rule(conds, ("-j", star_wl), "workload -> host: * host endpoint"))
            if host_in:
                pre.append(Rule(self._from_wl_guard(), ("-j", host_in), "host endpoint ingress"))
            if fwd_in:
                pre.append(Rule((_NOT_LOCAL,), ("-j", fwd_in), "forwarded, in through a HEP"))
            pre.append(notrack)
        out: list[Rule] = [clear] if untracked else []
        if host_out:
            guard: tuple[Cond, ...] = ()
            if self.has_wl:
                # Host -> local workload is never policed (the evaluator, as Felix): no untracked
                # host egress policy for it either. Every address host_out dispatches is a node
                # address, so "going out through a workload interface" is the whole test.
                targets = {i: m.set(m.from_wl, m.from_wl) for i in self.eps.wl_ingress}
                for chain in build_tree(
                    "tt-wl-classify-o", "tt-wl-clso-", "-o", targets, "to a local workload"
                ):
                    self.b.add(RAW, chain)
                out.append(Rule((), ("-j", "tt-wl-classify-o"), "to a local workload?"))
                guard = self._from_wl_guard()
            out += [Rule(guard, ("-j", host_out), "host endpoint egress"), notrack]
        self.top[RAW] = [
            Chain("tt-PREROUTING", tuple(pre), "raw PREROUTING: doNotTrack ingress"),
            Chain("tt-OUTPUT", tuple(out), "raw OUTPUT: doNotTrack egress"),
        ]

    # -- mangle ---------------------------------------------------------------------------------

    def _mangle(self) -> None:
        m = self.m
        host_in = self._host_dispatch(MANGLE, "tt-host-in", "-d", f"{MANGLE}-{ir.INGRESS}")
        star_wl = self._star_for_workloads(f"{MANGLE}-{ir.INGRESS}")
        fwd_in = self._fwd_dispatch(MANGLE, "tt-fwd-in", self.eps.fwd_mangle_in, "preDNAT")
        rules: list[Rule] = []
        if host_in or star_wl or fwd_in:
            rules += [
                Rule(
                    (Cond(RANK_CT, ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")),),
                    ("-j", "RETURN"),
                    "conntrack: established flow",
                ),
                Rule(
                    (Cond(RANK_MARK, m.match(m.untracked)),), ("-j", "RETURN"), "allowed untracked"
                ),
                Rule((), m.set(0, m.per_table), "clear Tortie mark bits"),
            ]
            if self.has_wl:
                self._classifier(MANGLE)
                rules.append(Rule((), ("-j", "tt-wl-classify"), "from a local workload?"))
            if star_wl:
                conds = (Cond(RANK_MARK, m.match(m.from_wl)), self._set_match("dst"))
                rules.append(Rule(conds, ("-j", star_wl), "workload -> host: * host endpoint"))
            if host_in:
                rules.append(
                    Rule(self._from_wl_guard(), ("-j", host_in), "host endpoint preDNAT ingress")
                )
            if fwd_in:
                rules.append(Rule((_NOT_LOCAL,), ("-j", fwd_in), "forwarded, in through a HEP"))
        self.top[MANGLE] = [
            Chain("tt-PREROUTING", tuple(rules), "mangle PREROUTING: preDNAT ingress")
        ]

    # -- filter ---------------------------------------------------------------------------------

    def _ndp(self) -> list[Rule]:
        if self.family != 6:
            return []
        if NDP_CHAIN not in self.b.tables[FILTER]:
            icmp6 = Cond(RANK_PROTO, ("-p", "ipv6-icmp"))
            rules = [
                Rule(
                    (
                        icmp6,
                        Cond(RANK_PORTS, ("-m", "icmp6", "--icmpv6-type", str(t))),
                        Cond(RANK_LIMIT, ("-m", "hl", "--hl-eq", "255")),
                    ),
                    ("-j", "ACCEPT"),
                    "neighbour discovery",
                )
                for t in _ND_TYPES
            ]
            rules += [
                Rule(
                    (
                        icmp6,
                        Cond(RANK_DST, ("-d", "ff00::/8")),
                        Cond(RANK_PORTS, ("-m", "icmp6", "--icmpv6-type", str(t))),
                    ),
                    ("-j", "ACCEPT"),
                    "multicast listener discovery",
                )
                for t in _MLD_TYPES
            ]
            self.b.add(
                FILTER, Chain(NDP_CHAIN, tuple(rules), "ICMPv6 the host needs whatever policy says")
            )
        return [
            Rule(
                (Cond(RANK_PROTO, ("-p", "ipv6-icmp")),),
                ("-j", NDP_CHAIN),
                "IPv6 neighbour discovery / MLD",
            )
        ]

    def _wl_to_host(self) -> str:
        felix = self.program.felix
        action = felix.default_endpoint_to_host_action
        rules = [
            Rule(
                (self._set_match("dst", negate=True),),
                ("-j", "ACCEPT"),
                "workload -> an address that is not this node's: its egress was all",
            )
        ]
        if action == "Accept":
            rules.append(Rule((), ("-j", "ACCEPT"), "defaultEndpointToHostAction Accept"))
        elif action == "Return":
            star = self._star_for_workloads(f"{FILTER}-{ir.INGRESS}")
            if star is not None:
                rules.append(
                    Rule((), ("-j", star), "defaultEndpointToHostAction Return: * host endpoint")
                )
            rules.append(Rule((), ("-j", "ACCEPT"), "defaultEndpointToHostAction Return"))
        else:
            rules.append(Rule((), self.b.deny(FILTER), "defaultEndpointToHostAction Drop"))
        return self.b.add(
            FILTER, Chain("tt-wl-to-host", tuple(rules), "workload -> host, after its egress")
        )

    def _flat_dispatch(self, name: str, flag: str, targets: dict[str, str]) -> str | None:
        if not targets:
            return None
        rank = RANK_IN if flag == "-i" else RANK_OUT
        rules = tuple(Rule((Cond(rank, (flag, i)),), ("-g", c)) for i, c in sorted(targets.items()))
        return self.b.add(FILTER, Chain(name, rules, "applyOnForward host endpoints by interface"))

    def _filter(self) -> None:
        m = self.m
        clear = Rule((), m.set(0, m.per_table), "clear Tortie mark bits")
        accept = Rule((Cond(RANK_MARK, m.match(m.accept)),), ("-j", "ACCEPT"), "allowed by policy")
        if self.has_wl:
            egress = {i: ("-g", c) for i, c in self.eps.wl_egress.items()}
            ingress = {i: ("-g", c) for i, c in self.eps.wl_ingress.items()}
            for chain in build_tree(
                "tt-from-wl-dispatch", "tt-from-wl-d-", "-i", egress, "workload egress"
            ):
                self.b.add(FILTER, chain)
            for chain in build_tree(
                "tt-to-wl-dispatch", "tt-to-wl-d-", "-o", ingress, "workload ingress"
            ):
                self.b.add(FILTER, chain)
        host_in = self._host_dispatch(FILTER, "tt-host-in", "-d", f"{FILTER}-{ir.INGRESS}")
        host_out = self._host_dispatch(FILTER, "tt-host-out", "-s", f"{FILTER}-{ir.EGRESS}")
        fwd_in = self._flat_dispatch("tt-from-hep-fwd", "-i", self.eps.fwd_in)
        fwd_out = self._flat_dispatch("tt-to-hep-fwd", "-o", self.eps.fwd_out)

        inp: list[Rule] = []
        if self.has_wl or host_in:
            inp += self._ndp()
            inp.append(clear)
        if self.has_wl:
            inp.append(Rule((), ("-j", "tt-from-wl-dispatch"), "egress of a local workload"))
            inp.append(
                Rule(
                    (Cond(RANK_MARK, m.match(m.from_wl)),),
                    ("-g", self._wl_to_host()),
                    "workload -> host",
                )
            )
        if host_in:
            inp.append(Rule((), ("-j", host_in), "host endpoint ingress"))
        if inp:
            inp.append(accept)

        fwd: list[Rule] = []
        if fwd_in:
            fwd.append(Rule((), ("-j", fwd_in), "applyOnForward: in through a host endpoint"))
        if self.has_wl:
            fwd.append(Rule((), ("-j", "tt-from-wl-dispatch"), "egress of the source workload"))
            fwd.append(Rule((), ("-j", "tt-to-wl-dispatch"), "ingress of the destination workload"))
        if fwd_out:
            fwd.append(Rule((), ("-j", fwd_out), "applyOnForward: out through a host endpoint"))
        if fwd:
            fwd = [clear, *fwd, accept]

        out: list[Rule] = []
        if self.has_wl:
            # Felix does not police host -> local workload traffic (felix/rules/static.go,
            # filterOutputChain): from one of this node's addresses to a workload interface,
            # neither the host endpoint's egress nor the workload's ingress applies.
            leaves = {i: ("-j", "ACCEPT") for i in self.eps.wl_ingress}
            for chain in build_tree(
                "tt-host-to-wl", "tt-h2wl-", "-o", leaves, "host -> local workload"
            ):
                self.b.add(FILTER, chain)
            out.append(
                Rule(
                    (self._set_match("src"),),
                    ("-j", "tt-host-to-wl"),
                    "host -> local workload: not policed",
                )
            )
        if self.has_wl or host_out:
            out += self._ndp()
            out.append(clear)
        if host_out:
            out.append(Rule((), ("-j", host_out), "host endpoint egress"))
        if self.has_wl:
            out.append(
                Rule((), ("-j", "tt-to-wl-dispatch"), "other local source -> workload: its ingress")
            )
        if out:
            out.append(accept)
        self.top[FILTER] = [
            Chain("tt-INPUT", tuple(inp), "filter INPUT: traffic to this host"),
            Chain("tt-FORWARD", tuple(fwd), "filter FORWARD: traffic through this host"),
            Chain("tt-OUTPUT", tuple(out), "filter OUTPUT: traffic from this host"),
        ]

    # -- result ---------------------------------------------------------------------------------

    def tables(self) -> list[Table]:
        insert = self.program.felix.chain_insert_mode.lower() != "append"
        out = []
        for table in (RAW, MANGLE, FILTER):
            top = self.top[table]
            rest = [self.b.tables[table][k] for k in sorted(self.b.tables[table])]
            hooks = tuple(Hook(c.name.removeprefix("tt-"), c.name, insert) for c in top)
            out.append(Table(table, tuple(top + rest), hooks))
        return out
