"""The eBPF target: C programs for TC (clsact) on the host-side interfaces, plus map data.

Program and map design
----------------------
* One **object per distinct policy list**: for every local endpoint and direction, the
  endpoint's tiers, policies and profiles are lowered (:mod:`.lower`) into macro calls and
  rendered (:mod:`.render`) into C. Objects are content-addressed by the hash of their C and
  headers, so endpoints with the same policy share one object and clang runs once per distinct
  object, in parallel (:mod:`.build`).
* Attachment, as Calico does it: tc **ingress** of the ``cali*`` veth sees packets *from* the
  pod (its egress policy), tc **egress** sees packets *to* it (its ingress policy). Pod -> pod on
  one node therefore runs egress(src) then ingress(dst).
* Each object has an entry program ``tortie_main`` (parse, fragments, conntrack) and policy
  chunks ``tortie_c0..N`` reached through its own ``tortie_jump`` prog_array. Rules are code;
  set members are data: IP and named-port sets live in two LPM tries shared by all objects
  (key ``{prefixlen, set id (64 bits, stable hash of the set's id), port, proto, addr}``, see
  :mod:`.layout`), so changing members never rebuilds an object. The programs reach the tries
  through two arrays of maps (``tortie_setbank_v4|v6``, one trie per bank, the bank from the
  dispatcher, else 0), so a runtime can switch all sets at once with the programs.
* The entry program's work (parse, fragments, conntrack: ``tortie_prepare``) depends only on
  the kind of program (hook, workload or host endpoint), yet was most of a small object's clang
  time. It is compiled once per kind (``e-<hash>``, ``bpf_templates/entry_tc.bpf.c.j2``) and
  linked into each object as the global function ``tortie_prepare_linked`` (``bpftool gen
  object``, :mod:`.build`); ``src/p-*.bpf.c`` built without ``-DTORTIE_LINKED_ENTRY`` is the
  same program with it inlined (the fallback when bpftool is missing).
* One **dispatcher** object ``d-<hash>`` (``bpf_templates/dispatch_tc.bpf.c.j2``), the same
  for every artifact of a Tortie version: a runtime attaches its two programs to every policed
  interface once, and they tail-call the entry program of the object the bank in force names
  for the interface (``layout.DISPATCH_MAPS``), so one map write switches every interface to a
  new ruleset at once (``runtime/ebpf.py``). The reference loader (:mod:`.load`) attaches the
  entry programs directly instead.
* ``maps.json`` (:mod:`.data`) holds the set members, endpoint -> object by interface name (the
  loader resolves ifindexes), the node config (``tortie_config``) and the Log-rule ids.

Conntrack decision
------------------
An own LRU hash (``tortie_ct``), not the kernel's conntrack through ``bpf_skb_ct_lookup`` (the
kfuncs exist on this kernel's BTF). At tc ingress the packet has not reached netfilter yet, so
the kernel has no entry for a flow's first packets; conntrack only tracks in a netns where some
netfilter hook asks for it, which would tie the BPF dataplane to netfilter state; and the
verdict would depend on the namespace BPF_PROG_TEST_RUN runs in. The own table keys an approval
by (ifindex, hook, tuple); replies match the reversed tuple on the other hook of the same
interface only, a TCP SYN (without ACK) always re-runs policy, and denied SYNs drop the old
entry. See ``bpf_templates/include/tortie_ct.h``.

Host endpoints
--------------
A host endpoint gets two objects too, attached at tc ingress (its ingress policy) and tc egress
(its egress policy) of its interface, or of every interface but ``lo`` and the workloads' for
``interfaceName: "*"`` (or ``""``; :func:`.load.attachments`). The program first asks whether
the packet is host traffic (destination, resp. source, in this node's IPs): host traffic runs
failsafe ports, untracked, pre-DNAT (ingress) and normal tiers, then profiles, in the
evaluator's order; forwarded traffic runs the applyOnForward tiers and is otherwise allowed.
Forwarded traffic entering through a HEP with a named interface first meets that HEP's inbound
failsafe ports, doNotTrack and preDNAT ingress tiers, as in ``compiler/ir/evaluate.py``
(``*`` and ``""`` HEPs: host traffic only).
Untracked (doNotTrack) policy is evaluated like the rest, on a flow's first packet (replies
pass through conntrack), not on every packet as Calico's raw table does.

Limits and choices (also in ``check``)
--------------------------------------
* Deny is ``TC_ACT_SHOT``; FelixConfiguration ``Reject`` is rendered as a drop (warning W831).
* Log rules count packets and bytes per rule in ``tortie_log`` and flag the packet; no text log.
* ``defaultEndpointToHostAction``: Drop drops pod -> own-node-IP traffic after the pod's egress
  policy; Accept and Return allow it. Return with a ``*`` host endpoint (whose ingress policy
  would then decide) is not supported: error E832.
* Host -> local workload traffic is never policed (as Felix, and the evaluator).
* Two host endpoints that both cover every interface of a node: error E830.
* Rules per endpoint and direction: a chunk holds ``LIMITS["chunk_budget"]`` cost units (about
  that many BPF instructions; ~330 rules with a CIDR, a set and a port each), and a flow can pass
  through at most 32 chunks (the kernel's tail-call limit is 33: the dispatcher's call of the
  entry program takes one, the entry program's call of chunk 0 another, then 31 more):
  ~10,000 such rules (error E834 beyond). The per-program ceiling is the 16-bit BPF jump offset
  (~32k instructions, ~1,300 such rules in one function, measured), not the verifier's 1M
  processed instructions; clang time (~8 ms per rule) is why chunks are kept at ~1/4 of that.
* ICMP errors (v4 3/11/12, v6 1-4) quoting a packet of an approved flow are admitted as
  RELATED; other ICMP errors meet policy like any packet.
* Parsing: IPv4 options are skipped; IPv6 extension chains longer than 8 headers are dropped;
  truncated headers are dropped; later fragments follow their first fragment (in order only).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from compiler.artifact import Artifact
from compiler.diagnostics import NO_SPAN, DiagnosticSink
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.ebpf import build, data, layout, lower, render


def tc_hook(ep: ir.Endpoint, direction: str) -> str:
    """Where ``ep``'s ``direction`` policy runs: a workload's host-side veth sees the pod's
    egress at tc ingress; a host interface sees the host's ingress at tc ingress."""
    if ep.is_host:
        return "tc_ingress" if direction == ir.INGRESS else "tc_egress"
    return "tc_ingress" if direction == ir.EGRESS else "tc_egress"


_HOOK_NUMBER = {"tc_ingress": layout.HOOK_TC_INGRESS, "tc_egress": layout.HOOK_TC_EGRESS}


class EbpfTarget:
    NAME: ClassVar[str] = "ebpf"
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset(
        {
            "workload-endpoints",
            "host-endpoints",
            "failsafe-ports",
            "apply-on-forward",
            "tiers",
            "pass",
            "log",
            "profiles",
            "selector-sets",
            "named-ports",
            "icmp",
            "ipv6",
            "conntrack",
            "set-members-as-data",
            "endpoint-to-host-action",
        }
    )
    LIMITS: ClassVar[Mapping[str, int]] = MappingProxyType(
        {
            # Measured on 6.18 (tests/kernel/test_ebpf_scale.py): see the module docstring.
            "chunk_budget": 8000,
            "max_chunks": 32,
            "rules_per_direction": 10000,  # typical rules (CIDR + set + port); E834 is exact
        }
    )

    def __init__(self, *, chunk_budget: int | None = None) -> None:
        """``chunk_budget`` overrides ``LIMITS["chunk_budget"]`` (tests use tiny chunks to
        exercise the tail-call chain)."""
        self.chunk_budget = chunk_budget or self.LIMITS["chunk_budget"]

    # -- check ----------------------------------------------------------------------------------

    def check(self, program: ir.Program, sink: DiagnosticSink) -> None:
        felix = program.felix
        if not layout.little_endian_host():
            sink.error("E833", "the eBPF target builds little-endian objects only", NO_SPAN)
        if felix.deny_action == "Reject":
            sink.warning(
                "W831",
                "eBPF target: Reject is rendered as a drop (no ICMP/RST reply is sent)",
                felix.span,
            )
        locals_ = local_endpoints(program)
        catch_all = [ep for ep in locals_ if ep.is_host and ep.interface in ("*", "")]
        for ep in catch_all[1:]:
            sink.error(
                "E830",
                f"eBPF target: host endpoints {catch_all[0].id!r} and {ep.id!r} both cover every "
                "interface of the node; only one can be attached",
                ep.origin,
            )
        if felix.default_endpoint_to_host_action == "Return" and any(
            ep.is_host and ep.interface == "*" for ep in locals_
        ):
            sink.error(
                "E832",
                "eBPF target: defaultEndpointToHostAction Return with a '*' host endpoint "
                "is not supported",
                felix.span,
            )
        for ep in locals_:
            for direction in ir.DIRECTIONS:
                low = lower.lower(program, ep, direction, self.chunk_budget)
                if len(low.chunks) > self.LIMITS["max_chunks"]:
                    sink.error(
                        "E834",
                        f"eBPF target: the {direction} policy of {ep.id!r} ({low.rules} rules) "
                        f"needs {len(low.chunks)} chunks; at most {self.LIMITS['max_chunks']} "
                        "fit in the tail-call chain",
                        ep.origin,
                    )

    # -- render ---------------------------------------------------------------------------------

    def render(self, program: ir.Program) -> Artifact:
        headers = render.headers()
        sources: dict[str, str] = {}
        entries: dict[str, tuple[str, str]] = {}  # policy object -> its entry program (name, C)
        objects: dict[str, dict[str, object]] = {}
        endpoints: list[dict[str, object]] = []
        used_sets: set[str] = set()
        net_sets: dict[str, tuple[int, tuple[ir.IPNet, ...]]] = {}
        logs: list[lower.LogRule] = []
        rules_total = 0
        for ep in local_endpoints(program):
            entry: dict[str, object] = {"id": ep.id, "kind": ep.kind, "interface": ep.interface}
            for direction in ir.DIRECTIONS:
                low = lower.lower(program, ep, direction, self.chunk_budget)
                if len(low.chunks) > self.LIMITS["max_chunks"]:
                    raise ValueError(f"{ep.id}: {direction} policy needs {len(low.chunks)} chunks")
                hook = tc_hook(ep, direction)
                prog = _source(ep, direction, low)
                src = render.render_program(prog)
                entry_src = render.render_entry(
                    prog.summary.split(",")[0], prog.hook, prog.check_e2h, prog.host_to_workload
                )
                name = render.object_name(src, headers, linked=entry_src)
                sources[name] = src
                entries[name] = (render.object_name(entry_src, headers, prefix="e-"), entry_src)
                objects[name] = {"hook": hook, "rules": low.rules, "chunks": len(low.chunks)}
                entry[hook] = f"{name}.bpf.o"
                used_sets |= low.set_ids
                net_sets.update(low.net_sets)
                logs.extend(low.log_rules)
                rules_total += low.rules
            endpoints.append(entry)
        sets = data.set_data(program, used_sets) + data.host_sets(lower.host_ips(program))
        sets += [
            data.SetData(sid, fam, False, members=nets)
            for sid, (fam, nets) in sorted(net_sets.items())
        ]
        _check_ids(sets, logs)
        dispatch_src = render.render_dispatch()
        # Named after what it includes only: a change to the policy headers keeps the
        # dispatcher (a runtime re-attaches it only when its own code changes).
        dispatch_headers = {n: headers[n] for n in render.DISPATCH_INCLUDES}
        dispatch = render.object_name(dispatch_src, dispatch_headers, prefix="d-")
        sources[dispatch] = dispatch_src
        built = build.build_all(sources, headers, entries=entries)
        files: dict[str, bytes] = {
            "maps.json": data.maps_json(
                felix=program.felix,
                sets=sets,
                endpoints=endpoints,
                objects=objects,
                log_rules=logs,
                dispatch=f"{dispatch}.bpf.o",
            )
        }
        for name, hdr in headers.items():
            files[f"src/include/{name}"] = hdr
        for name, src in [*sources.items(), *entries.values()]:
            files[f"src/{name}.bpf.c"] = src.encode()
        for name, obj in built.items():
            files[f"obj/{name}.bpf.o"] = obj
        return Artifact(
            target=self.NAME,
            node=program.node or "",
            files=dict(sorted(files.items())),
            summary={
                "endpoints": len(endpoints),
                "objects": len(objects),  # policy objects (the dispatcher aside)
                "rules": rules_total,
                "sets": len(sets),
                "set_members": sum(len(s.members) + len(s.port_members) for s in sets),
            },
        )


def _source(ep: ir.Endpoint, direction: str, low: lower.Lowered) -> render.ProgramSource:
    hook = tc_hook(ep, direction)
    kind = "host endpoint" if ep.is_host else "workload"
    workload = not ep.is_host
    return render.ProgramSource(
        summary=f"{kind} {direction} ({hook}), {low.rules} rules, {len(low.chunks)} chunks",
        description=low.description,
        hook=_HOOK_NUMBER[hook],
        check_e2h=int(workload and direction == ir.EGRESS),
        host_to_workload=int(workload and direction == ir.INGRESS),
        chunks=low.chunks,
    )


def _check_ids(sets: list[data.SetData], logs: list[lower.LogRule]) -> None:
    """64-bit ids are hashes: refuse to emit a program where two different ids collide."""
    seen: dict[int, str] = {}
    for text, value in [(s.id, s.id64) for s in sets] + [
        (f"{r.owner}:{r.direction}:{r.rule_index}", r.id64) for r in logs
    ]:
        if seen.setdefault(value, text) != text:
            raise ValueError(f"64-bit id collision between {seen[value]!r} and {text!r}")
