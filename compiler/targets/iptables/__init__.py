"""The iptables target: iptables-restore input for both families plus an ipset restore script.

Modules, by concern:

* :mod:`.names` — 28/31-character names with stable hashes, quoting of user text;
* :mod:`.marks` — the mark bits and why each exists;
* :mod:`.model` — conditions, rules, chains, tables (printed as iptables-save prints them);
* :mod:`.lower` — one IR match -> rules: multiport splits, one CIDR per rule, match blocks;
* :mod:`.sets` — ipset types, members, the atomic refill script;
* :mod:`.chains` — policy and profile chains, the tier/profile part of endpoint chains;
* :mod:`.endpoints` — per-endpoint chains (workloads, host endpoints per hook), failsafes;
* :mod:`.dispatch` — the interface prefix tree;
* :mod:`.tables` — top-level chains per table and the hooks into built-in chains;
* :mod:`.render` — the files; :mod:`.update` — set-only updates; :mod:`.apply` — loading
  (idempotent hooks, stale chains and sets) through ``compiler.tools``;
* :mod:`.generations` — the runtime's layout: two generations of the artifact's chains and
  sets and one ``ipset swap`` between them, so a killed apply leaves one complete ruleset.

Where the evaluator (the oracle) and Calico differ, the rules follow the evaluator; the
differences are warnings of :meth:`IptablesTarget.check` and notes in the module docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from compiler.artifact import Artifact
from compiler.diagnostics import DiagnosticSink
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.common import policy_log_prefix, profile_log_prefix
from compiler.targets.iptables.chains import LIMIT_MAX_PER_SECOND, log_limit
from compiler.targets.iptables.lower import MULTIPORT_MAX, Context, LoweringError, lower_rule
from compiler.targets.iptables.marks import MARK_BITS_NEEDED, Marks
from compiler.targets.iptables.names import CHAIN_MAX, LOG_PREFIX_MAX, SET_MAX, is_ifname, sanitize
from compiler.targets.iptables.render import (
    IPSET_FILE,
    RULES_FILE,
    Rendered,
    RenderError,
    render_program,
)
from compiler.targets.iptables.sets import decl_of
from compiler.targets.iptables.update import render_set_update

__all__ = ["IptablesTarget", "RenderError", "Rendered", "render_program", "render_set_update"]


class IptablesTarget:
    NAME: ClassVar[str] = "iptables"
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset(
        {
            "workload-endpoints",
            "host-endpoints",
            "tiers",
            "pass",
            "log",
            "profiles",
            "selector-sets",
            "named-ports",
            "icmp",
            "ipv6",
            "conntrack",
            "reject",
            "untracked",
            "pre-dnat",
            "apply-on-forward",
            "failsafe-ports",
            "endpoint-to-host-action",
            "set-members-as-data",
            "atomic-set-refill",
        }
    )
    LIMITS: ClassVar[Mapping[str, int]] = MappingProxyType(
        {
            "chain_name": CHAIN_MAX,
            "ipset_name": SET_MAX,
            "multiport": MULTIPORT_MAX,
            "mark_bits": MARK_BITS_NEEDED,
            "log_prefix_bytes": LOG_PREFIX_MAX,
            "comment_bytes": 255,
            "ifname_bytes": 15,
        }
    )
    FILES: ClassVar[tuple[str, ...]] = (RULES_FILE[4], RULES_FILE[6], IPSET_FILE)

    def check(self, program: ir.Program, sink: DiagnosticSink) -> None:
        felix = program.felix
        marks = Marks.from_mask(felix.mark_mask)
        if marks is None:
            sink.error(
                "E820",
                f"iptables target: iptablesMarkMask {felix.mark_mask:#x} has fewer than "
                f"{MARK_BITS_NEEDED} bits; Tortie needs accept, pass, two scratch, "
                "from-workload and untracked bits",
                felix.span,
            )
            return
        if felix.log_rate_limit and not log_limit(felix.log_rate_limit, felix.log_rate_limit_burst):
            sink.warning(
                "W823",
                f"iptables target: logActionRateLimit {felix.log_rate_limit!r} is not "
                f"N/second|minute|hour|day of at most {LIMIT_MAX_PER_SECOND}/second; Log rules "
                "are not rate limited",
                felix.span,
            )
        for ep in local_endpoints(program):
            self._check_endpoint(ep, sink)
        self._check_rules(program, marks, sink)
        for s in program.sets.values():
            try:
                size = len(decl_of(s).members)
            except ValueError as e:
                sink.error("E822", f"iptables target: set {s.id}: {e}", s.origin)
                continue
            if size > felix.max_ipset_size:
                sink.error(
                    "E827",
                    f"iptables target: set {s.id} has {size} members, more than maxIpsetSize "
                    f"{felix.max_ipset_size}",
                    s.origin,
                )

    @staticmethod
    def _check_endpoint(ep: ir.Endpoint, sink: DiagnosticSink) -> None:
        if not ep.is_host:
            if not is_ifname(ep.interface):
                sink.error(
                    "E821",
                    f"iptables target: interface name {ep.interface!r} of {ep.id} is not a "
                    "Linux interface name iptables can match (1-15 of [A-Za-z0-9_.-])",
                    ep.origin,
                )
            return
        if any(ep.plan(d, ir.FORWARD) for d in ir.DIRECTIONS) and not is_ifname(ep.interface):
            sink.warning(
                "W824",
                f"iptables target: host endpoint {ep.id} has applyOnForward policy but no "
                f"single interface ({ep.interface!r}); forwarded traffic is not policed for it",
                ep.origin,
            )
        if not ep.ips and ep.interface != "*":
            sink.warning(
                "W825",
                f"iptables target: host endpoint {ep.id} has no expectedIPs; host traffic is "
                "matched to host endpoints by address, so none reaches its policy",
                ep.origin,
            )

    @staticmethod
    def _check_rules(program: ir.Program, marks: Marks, sink: DiagnosticSink) -> None:
        names = {sid: sid for sid in program.sets}
        owners: list[tuple[str, str, tuple[ir.Rule, ...], ir.Policy | None]] = []
        for pid, p in program.policies.items():
            for d in ir.DIRECTIONS:
                owners.append((pid, d, p.rules(d), p))
        for name, prof in program.profiles.items():
            for d in ir.DIRECTIONS:
                owners.append((name, d, prof.rules(d), None))
        prefix_warned: set[str] = set()
        for owner, d, rules, policy in owners:
            for rule in rules:
                ctx = Context(rule.match.ip_version or 4, names, marks)
                try:
                    lower_rule(rule.match, ctx, ("-j", "DROP"))
                except LoweringError as e:
                    sink.error(
                        "E822", f"iptables target: {owner} {d} rule {rule.index}: {e}", rule.origin
                    )
                if rule.action == ir.LOG and owner not in prefix_warned:
                    if policy is not None:
                        text = policy_log_prefix(program.felix.log_prefix, policy)
                    else:
                        text = profile_log_prefix(program.felix.log_prefix, owner)
                    if len(sanitize(text, 1000)) > LOG_PREFIX_MAX - 2:
                        prefix_warned.add(owner)
                        sink.warning(
                            "W826",
                            f"iptables target: the log prefix of {owner} is cut to "
                            f"{LOG_PREFIX_MAX} characters (xt_LOG's limit)",
                            rule.origin,
                        )

    def render(self, program: ir.Program) -> Artifact:
        rendered = render_program(program)
        return Artifact(
            target=self.NAME,
            node=program.node or "",
            files=rendered.files,
            summary=dict(rendered.summary),
        )
