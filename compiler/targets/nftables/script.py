"""The whole script: one ``inet`` table, replaced in one ``nft -f`` transaction.

::

    table inet tortie {}          # make sure it exists ...
    delete table inet tortie      # ... so this never fails ...
    table inet tortie { ... }     # ... and this is the complete new table.

All three commands are one transaction: either the new table is in force or the old one still
is. No other table is touched (no ``flush ruleset``), so kube-proxy's tables survive.

Base chains (``policy accept``: only our explicit drops and rejects stop a packet; the verdict
``accept`` is never used to mean "allowed by policy", see :mod:`.marks`):

================== ======================= ================================================
chain              hook / priority         what
================== ======================= ================================================
raw-prerouting     prerouting / raw (-300) doNotTrack ingress of host endpoints
raw-output         output / raw (-300)     doNotTrack egress of host endpoints
mangle-prerouting  prerouting / mangle     preDNAT policy of host endpoints (new flows)
input              input / filter (0)      workload -> host, then host endpoint ingress
forward            forward / filter (0)    workload egress AND ingress, applyOnForward
output             output / filter (0)     host -> local workload accepted, else host endpoint egress
================== ======================= ================================================

Conntrack: the filter and mangle chains accept ``established,related`` first and drop
``invalid`` (unless ``disableConntrackInvalidCheck``), so policy sees only new flows; the raw
chains see every packet, as untracked policy must.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import ipaddress
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from compiler.ir import nodes as ir
from compiler.targets.nftables.chains import Chain, ChainBuilder, sorted_chains, with_comment
from compiler.targets.nftables.consts import ConstSet
from compiler.targets.nftables.endpoints import EndpointRenderer, star_hep
from compiler.targets.nftables.marks import Marks, hexmark
from compiler.targets.nftables.names import nft_string, sanitize, script_comment
from compiler.targets.nftables.rules import net_text
from compiler.targets.nftables.sets import (
    SetDecl,
    collect,
    elements_text,
    name_sets,
    render_decl,
    render_elements,
    set_family,
)

TABLE = "tortie"
FAMILY = "inet"

# What render_set_update needs to know about a program that was rendered, kept while the
# program is alive (see incremental.py): the SHA-256 of its skeleton, and (set id, nft name, the
# AddrSet, its elements) of every IR set its script declares, in script order.
UsedSet = tuple[str, str, ir.AddrSet, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class RenderInfo:
    skeleton_sha256: bytes | None  # None: not known (a chain update made it; render to find out)
    sets: tuple[UsedSet, ...]


RENDERED: weakref.WeakKeyDictionary[ir.Program, RenderInfo] = weakref.WeakKeyDictionary()

# The renderer of each program rendered inside :func:`keeping_renderers` (the agent's renders):
# its chains and caches are what a chain update (:mod:`.chain_update`) starts from.
RENDERERS: weakref.WeakKeyDictionary[ir.Program, ScriptRenderer] = weakref.WeakKeyDictionary()
_KEEP: contextvars.ContextVar[bool] = contextvars.ContextVar("keep_renderers", default=False)


@contextlib.contextmanager
def keeping_renderers() -> Iterator[None]:
    """Renders inside this block keep their renderer in :data:`RENDERERS`."""
    token = _KEEP.set(True)
    try:
        yield
    finally:
        _KEEP.reset(token)


# ICMPv6 a pod needs to reach its host for IPv6 to work at all (MLD 130-132, router solicitation
# 133, neighbour solicitation/advertisement 135/136); Felix accepts them before workload policy.
ND_TYPES = "{ 130, 131, 132, 133, 135, 136 }"


class RenderError(ValueError):
    """The program cannot be rendered (``check()`` reports these as diagnostics first)."""


@dataclass(frozen=True, slots=True)
class ExtraSet:
    """A set of local interfaces or addresses (not an IR set)."""

    name: str
    type: str
    elements: tuple[str, ...]
    comment: str


@dataclass(frozen=True)
class Rendered:
    script: str
    sets: tuple[SetDecl, ...]
    skeleton: str  # the script with every set's elements left out
    summary: Mapping[str, int]


def _hook(hook: str, priority: str) -> str:
    return f"type filter hook {hook} priority {priority}; policy accept;"


def _ct_lines(felix_disable_invalid: bool) -> list[str]:
    lines = [with_comment("ct state established,related accept", "conntrack: established flows")]
    if not felix_disable_invalid:
        lines.append(with_comment("ct state invalid drop", "conntrack: invalid"))
    return lines


class ScriptRenderer:
    def __init__(self, program: ir.Program) -> None:
        marks = Marks.from_mask(program.felix.mark_mask)
        if marks is None:
            raise RenderError(f"mark mask {program.felix.mark_mask:#x} has fewer than 3 bits")
        self.program = program
        self.marks = marks
        names = name_sets(program.sets.values())
        families = {sid: set_family(s) for sid, s in program.sets.items()}
        self.b = ChainBuilder(program, marks, names, families)
        self.eps = EndpointRenderer(self.b)
        self.eps.render()
        self.star = star_hep(self.eps.heps)
        self.maps = self.eps.dispatch.maps
        self.extra_sets: list[ExtraSet] = []
        self.base: list[Chain] = []
        self._base_chains()

    # -- helpers ------------------------------------------------------------------------------

    def _vmap(self, map_name: str, key_expr: str, comment: str) -> list[str]:
        if not self.maps.get(map_name):
            return []
        return [with_comment(f"{key_expr} vmap @{map_name}", comment)]

    def _hep_vmaps(self, kind: str, addr: str, comment: str) -> list[str]:
        return self._vmap(f"hep-{kind}4", f"ip {addr}", comment) + self._vmap(
            f"hep-{kind}6", f"ip6 {addr}", comment
        )

    def _fwd_vmap(self, kind: str, comment: str) -> list[str]:
        """Forwarded traffic (not to this host) entering through a named HEP's interface."""
        name = f"hep-forward-{kind}"
        if not self.maps.get(name):
            return []
        line = f"fib daddr type != local iifname vmap @{name}"
        return [with_comment(line, f"forwarded, in through a host endpoint: {comment}")]

    def _star_jump(self, kind: str, comment: str) -> list[str]:
        """Workload -> host with defaultEndpointToHostAction Return: the node's ``*`` HEP."""
        if self.star is None:
            return []
        chain = self.eps.hep_chains.get((self.star.id, kind))
        if chain is None:
            return []
        return [
            with_comment(f"iifname @wl-ifaces {fam} daddr @host-addrs{v} jump {chain}", comment)
            for v, fam in ((4, "ip"), (6, "ip6"))
        ]

    @property
    def _return_to_star(self) -> bool:
        return (
            self.program.felix.default_endpoint_to_host_action == "Return" and self.star is not None
        )

    # -- base chains --------------------------------------------------------------------------

    def _base_chains(self) -> None:
        felix = self.program.felix
        m = self.marks
        ct = _ct_lines(felix.disable_conntrack_invalid_check)
        has_wl = bool(self.eps.workloads)
        wl_skip = (
            [with_comment("iifname @wl-ifaces return", "workload -> host: see input")]
            if has_wl
            else []
        )

        raw_in = self._hep_vmaps("untracked-ingress", "daddr", "host endpoint doNotTrack ingress")
        raw_in += self._fwd_vmap("untracked-ingress", "doNotTrack ingress")
        if raw_in:
            lines = [with_comment(m.clear(m.untracked), "clear untracked")]
            if self._return_to_star:
                lines += self._star_jump("untracked-ingress", "workload -> host: * host endpoint")
            self.base.append(
                Chain(
                    "raw-prerouting",
                    "doNotTrack ingress",
                    tuple(lines + wl_skip + raw_in),
                    _hook("prerouting", "raw"),
                )
            )
        raw_out = self._hep_vmaps("untracked-egress", "saddr", "host endpoint doNotTrack egress")
        if raw_out:
            lines = [with_comment(m.clear(m.untracked), "clear untracked")]
            if has_wl:
                # As in the filter output chain: host -> local workload is never policed, not
                # even by a host endpoint's doNotTrack egress policy (the evaluator's rule;
                # Felix dispatches untracked egress by the outgoing host interface).
                lines.append(
                    with_comment("oifname @wl-ifaces return", "host -> local workload: not policed")
                )
            self.base.append(
                Chain(
                    "raw-output",
                    "doNotTrack egress",
                    tuple(lines + raw_out),
                    _hook("output", "raw"),
                )
            )
        pre = self._hep_vmaps("prednat", "daddr", "host endpoint preDNAT ingress")
        pre += self._fwd_vmap("prednat", "preDNAT ingress")
        if pre:
            lines = [ct[0]]
            if self._return_to_star:
                lines += self._star_jump("prednat", "workload -> host: * host endpoint")
            self.base.append(
                Chain(
                    "mangle-prerouting",
                    "preDNAT ingress",
                    tuple(lines + wl_skip + pre),
                    _hook("prerouting", "mangle"),
                )
            )

        lines = list(ct)
        if has_wl:
            lines.append(
                with_comment(
                    f"iifname @wl-ifaces meta nfproto ipv6 icmpv6 type {ND_TYPES} accept",
                    "workload -> host: IPv6 neighbour discovery and MLD",
                )
            )
            lines += self._vmap("wl-egress", "iifname", "workload -> host: egress of the workload")
            action = felix.default_endpoint_to_host_action
            if action == "Drop":
                lines.append(
                    with_comment("iifname @wl-ifaces drop", "defaultEndpointToHostAction Drop")
                )
            elif action == "Accept":
                lines.append(
                    with_comment("iifname @wl-ifaces accept", "defaultEndpointToHostAction Accept")
                )
            else:
                lines += self._star_jump(
                    ir.INGRESS, "defaultEndpointToHostAction Return: * host endpoint"
                )
                lines.append(
                    with_comment("iifname @wl-ifaces accept", "defaultEndpointToHostAction Return")
                )
        lines += self._hep_vmaps(ir.INGRESS, "daddr", "host endpoint ingress")
        self.base.append(
            Chain("input", "traffic to the host", tuple(lines), _hook("input", "filter"))
        )

        lines = list(ct)
        lines += self._vmap(
            "hep-forward-ingress", "iifname", "applyOnForward: in through a host endpoint"
        )
        lines += self._vmap("wl-egress", "iifname", "egress of the source workload")
        lines += self._vmap("wl-ingress", "oifname", "ingress of the destination workload")
        lines += self._vmap(
            "hep-forward-egress", "oifname", "applyOnForward: out through a host endpoint"
        )
        self.base.append(
            Chain("forward", "traffic through the host", tuple(lines), _hook("forward", "filter"))
        )

        lines = list(ct)
        if has_wl:
            # Felix never polices host -> local workload traffic (neither the host endpoint's
            # egress nor the workload's ingress): see compiler/ir/evaluate.py.
            lines.append(
                with_comment("oifname @wl-ifaces accept", "host -> local workload: not policed")
            )
        lines += self._hep_vmaps(ir.EGRESS, "saddr", "host endpoint egress")
        self.base.append(
            Chain("output", "traffic from the host", tuple(lines), _hook("output", "filter"))
        )

        if has_wl:
            ifaces = tuple(
                nft_string(e.interface)
                for e in sorted(self.eps.workloads, key=lambda e: e.interface)
            )
            self.extra_sets.append(
                ExtraSet("wl-ifaces", "ifname", ifaces, "local workload interfaces")
            )
        if self._return_to_star:
            addrs = _host_addrs(self.program, self.eps.heps)
            for v in (4, 6):
                elems = tuple(net_text(_host_net(a)) for a in addrs if a.version == v)
                comment = "this node's addresses (workload -> host)"
                self.extra_sets.append(ExtraSet(f"host-addrs{v}", f"ipv{v}_addr", elems, comment))

    # -- text -----------------------------------------------------------------------------------

    def _map_lines(self, name: str, entries: Mapping[str, str]) -> list[str]:
        if name.startswith(("wl-", "hep-forward-")):
            key_type = "ifname"
            keys = {nft_string(k): v for k, v in entries.items()}
        else:
            key_type = "ipv4_addr" if name.endswith("4") else "ipv6_addr"
            keys = dict(entries)
        items = [f"{k} : jump {v}" for k, v in keys.items()]
        out = [f"\tmap {name} {{", f"\t\ttype {key_type} : verdict"]
        for i, item in enumerate(items):
            head = "\t\telements = { " if i == 0 else "\t\t             "
            tail = " }" if i == len(items) - 1 else ","
            out.append(head + item + tail)
        out.append("\t}")
        return out

    @staticmethod
    def chain_lines(chain: Chain) -> list[str]:
        out = [f"\tchain {chain.name} {{"]
        if chain.hook:
            out.append(f"\t\t{chain.hook}")
        out.append(f"\t\tcomment {nft_string(chain.comment)}")
        if chain.lines:
            # The rules as one entry of several lines (joined in C, not line by line).
            out.append("\t\t" + "\n\t\t".join(chain.lines))
        out.append("\t}")
        return out

    def render(self) -> Rendered:
        sets = tuple(
            collect(self.program.sets, self.b.used_sets, self.b.set_names, self.b.set_refs)
        )
        script, skeleton = self._texts(sets)
        chains = [*self.base, *self.b.chains.values()]
        summary = {
            "chains": len(chains),
            "rules": sum(1 for c in chains for x in c.lines if not x.startswith("#")),
            "sets": len(sets),
            "set_elements": sum(len(d.elements) for d in sets),
            "const_sets": len(self.b.consts.sets),
            "endpoints": len(self.eps.workloads) + len(self.eps.heps),
        }
        RENDERED[self.program] = RenderInfo(
            hashlib.sha256(skeleton.encode()).digest(),
            tuple((d.set_id, d.name, self.program.sets[d.set_id], d.elements) for d in sets),
        )
        if _KEEP.get():
            RENDERERS[self.program] = self
        return Rendered(script, sets, skeleton, summary)

    def _texts(self, sets: tuple[SetDecl, ...]) -> tuple[str, str]:
        """The script and its skeleton (the same without the IR sets' elements), from one list
        of lines: the element lines are single entries, left out of the skeleton."""
        p = self.program
        m = self.marks
        out = [
            script_comment(f"Tortie nftables ruleset for node {p.node}. Generated: do not edit."),
            "# One transaction: creates table inet tortie if missing, deletes it, adds it anew.",
            "# Other tables (e.g. kube-proxy's) are never touched.",
            f"# Mark bits: accept {hexmark(m.accept)}, pass {hexmark(m.pass_)}, "
            f"untracked {hexmark(m.untracked)} (see compiler/targets/nftables/marks.py).",
            f"table {FAMILY} {TABLE} {{}}",
            f"delete table {FAMILY} {TABLE}",
            f"table {FAMILY} {TABLE} {{",
            f"\tcomment {nft_string('managed by tortie: do not edit')}",
        ]
        # Constant sets first, then the IR sets, most used first (sets.collect): rules find
        # their sets by name in declaration order.
        consts = self.b.consts.sorted()
        if consts:
            out.append("")
            out.append(
                "\t# Constant sets: rule lists and merged runs of rules (part of the rules; "
                "named by content)"
            )
        for c in consts:
            out.extend(const_lines(c))
        if sets:
            out.append("")
            out.append("\t# Sets (selector and named-port sets), shared by every rule using them")
        elements_at: set[int] = set()  # indexes in ``out`` of the IR sets' element lines
        for decl in sets:
            lines = render_decl(decl, "\t", with_elements=False)
            out.extend(lines[:-1])
            if decl.elements:
                elements_at.add(len(out))
                out.append(elements_text(decl.elements, "\t\t"))
            out.append(lines[-1])
        if self.extra_sets:
            out.append("")
            out.append(
                "\t# Local interfaces and addresses (change with endpoints, not with policy)"
            )
        for extra in self.extra_sets:
            name, typ, elems, comment = extra.name, extra.type, extra.elements, extra.comment
            out.append(f"\tset {name} {{")
            out.append(f"\t\ttype {typ}")
            if typ != "ifname":
                out.append("\t\tflags interval")
            out.append(f"\t\tcomment {nft_string(sanitize(comment))}")
            if elems:
                out.append(f"\t\telements = {{ {', '.join(elems)} }}")
            out.append("\t}")
        if self.maps:
            out.append("")
            out.append("\t# Dispatch: interface or address -> endpoint chain")
        for name in sorted(self.maps):
            if self.maps[name]:
                out.extend(self._map_lines(name, dict(sorted(self.maps[name].items()))))
        out.append("")
        out.append("\t# Base chains")
        for chain in self.base:
            out.extend(self.chain_lines(chain))
        # Policy and profile chains (the rules that look sets up) before the chains that jump
        # to them: the kernel walks the whole transaction for every set a rule binds, so set
        # lookups are cheapest early in the transaction.
        groups = (
            ("Policy chains", ("pol-",)),
            ("Profile chains", ("pro-",)),
            ("Policy sequences (shared by endpoints)", ("seq-", "seq2-")),
            ("Endpoint chains", ("wl-", "hep-")),
        )
        emitted = 0
        chains = sorted_chains(self.b.chains)
        for title, prefixes in groups:
            chosen = [c for c in chains if c.name.startswith(prefixes)]
            if chosen:
                out.append("")
                out.append(f"\t# {title}")
            for chain in chosen:
                out.extend(self.chain_lines(chain))
            emitted += len(chosen)
        if emitted != len(self.b.chains):
            raise AssertionError("a chain belongs to none of the script's groups")
        out.append("}")
        skeleton = [line for i, line in enumerate(out) if i not in elements_at]
        return "\n".join(out) + "\n", "\n".join(skeleton) + "\n"


def const_lines(c: ConstSet, with_elements: bool = True) -> list[str]:
    """The block of a constant set (:mod:`.consts`)."""
    out = [
        f"\tset {c.name} {{",
        f"\t\ttype {c.type}",
        "\t\tflags interval",
        f"\t\tcomment {nft_string(sanitize(c.comment))}",
    ]
    if with_elements:
        out.extend(render_elements(c.elements, "\t\t"))
    out.append("\t}")
    return out


def _host_addrs(program: ir.Program, heps: list[ir.Endpoint]) -> list[ir.IPAddr]:
    """The node's own addresses as the evaluator knows them: host_ips plus local HEP IPs."""
    addrs = set(program.host_ips.get(program.node or "", ()))
    for hep in heps:
        addrs.update(hep.ips)
    return sorted(addrs, key=lambda a: (a.version, int(a)))


def _host_net(addr: ir.IPAddr) -> ir.IPNet:
    return ipaddress.ip_network(addr)


def render_program(program: ir.Program) -> Rendered:
    return ScriptRenderer(program).render()
