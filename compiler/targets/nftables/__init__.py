"""The nftables target: one ``inet`` table in one atomic ``nft -f`` script.

Modules, by concern:

* :mod:`.names` — quoting (:func:`~.names.nft_string`), identifiers, stable hashes;
* :mod:`.marks` — the accept / pass / untracked mark bits and why they exist;
* :mod:`.rules` — one IR match -> nft match expressions;
* :mod:`.sets` — named sets (selector and named-port), valid interval element lists;
* :mod:`.consts` — named constant sets for rule lists (no anonymous sets: they are slow to load);
* :mod:`.runs` — runs of consecutive simple same-action rules as one concatenated-set lookup;
* :mod:`.chains` — policy, profile and the tier/profile logic of endpoint chains (long tiers
  through shared "sequence" chains);
* :mod:`.endpoints` — per-endpoint chains and dispatch (workloads by interface, HEPs by address);
* :mod:`.script` — base chains, the table and the text;
* :mod:`.incremental` — set-only updates for the runtime.

Design in three lines: base chains (``policy accept``) dispatch through verdict maps to one
chain per endpoint, hook and direction; those jump to one shared chain per policy (and profile)
and direction, which reports Allow/Pass back through mark bits and ``return`` (:mod:`.marks`);
only deny is terminal, so a pod-to-pod packet meets the source's egress *and* the destination's
ingress in the same forward-hook traversal.

Where the evaluator (the oracle) and Calico differ, the script follows the evaluator:

* host endpoints are found by **address** (expectedIPs; the node's other known addresses go to
  its ``*`` HEP), not by interface, so a HEP with no expectedIPs polices nothing (W813);
  applyOnForward policy is applied in the forward hook by the HEP's interface name (W812 when
  the HEP has none);
* host -> local workload traffic runs the workload's ingress policy (Felix never polices it);
* ``Pass`` in a profile moves on to the next profile.

Also, as Felix does: ICMPv6 neighbour discovery/MLD from workloads to their host is always
accepted; the raw-table failsafes also accept *source* ports for untracked return traffic.
Diagnostics: E810 (mark mask too small), E811 (bad workload interface name), E816 (two local
workloads on one interface), W812-W815.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from compiler.artifact import Artifact
from compiler.diagnostics import DiagnosticSink
from compiler.ir import nodes as ir
from compiler.targets.base import local_endpoints
from compiler.targets.common import parse_rate, policy_log_prefix
from compiler.targets.nftables.chains import log_prefix
from compiler.targets.nftables.incremental import render_set_update
from compiler.targets.nftables.marks import MARK_BITS_NEEDED, Marks
from compiler.targets.nftables.names import LOG_PREFIX_MAX, is_ifname
from compiler.targets.nftables.script import Rendered, render_program

__all__ = ["NftablesTarget", "Rendered", "render_program", "render_set_update", "with_batch"]

SCRIPT = "nftables.nft"
BATCH = "nftables.batch"


class NftablesTarget:
    NAME: ClassVar[str] = "nftables"
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
            "atomic-replace",
        }
    )
    LIMITS: ClassVar[Mapping[str, int]] = MappingProxyType(
        {
            "mark_bits": MARK_BITS_NEEDED,  # bits needed from nftablesMarkMask
            "comment_bytes": 127,
            "log_prefix_bytes": LOG_PREFIX_MAX,
            "ifname_bytes": 15,
        }
    )

    def check(self, program: ir.Program, sink: DiagnosticSink) -> None:
        felix = program.felix
        if Marks.from_mask(felix.mark_mask) is None:
            sink.error(
                "E810",
                f"nftables target: nftablesMarkMask {felix.mark_mask:#x} has fewer than "
                f"{MARK_BITS_NEEDED} bits; Tortie needs accept, pass and untracked bits",
                felix.span,
            )
        if felix.log_rate_limit and parse_rate(felix.log_rate_limit) is None:
            sink.warning(
                "W815",
                f"nftables target: logActionRateLimit {felix.log_rate_limit!r} is not "
                "N/second|minute|hour|day; Log rules are not rate limited",
                felix.span,
            )
        self.check_endpoints(program, sink)
        for policy in program.policies.values():
            if any(r.action == ir.LOG for d in ir.DIRECTIONS for r in policy.rules(d)):
                prefix = log_prefix(policy_log_prefix(felix.log_prefix, policy))
                if prefix.endswith('..."'):
                    sink.warning(
                        "W814",
                        f"nftables target: the log prefix of {policy.id} is cut to "
                        f"{LOG_PREFIX_MAX} bytes",
                        policy.origin,
                    )

    def check_endpoints(self, program: ir.Program, sink: DiagnosticSink) -> None:
        """The part of :meth:`check` about this node's endpoints (all the agent checks again
        when only endpoints changed: the rest reads objects it already checked)."""
        seen: dict[str, str] = {}
        for ep in local_endpoints(program):
            self._check_endpoint(program, ep, sink)
            if ep.is_host:
                continue
            if ep.interface in seen:
                sink.error(
                    "E816",
                    f"nftables target: {ep.id} and {seen[ep.interface]} both use interface "
                    f"{ep.interface!r} on node {program.node}",
                    ep.origin,
                )
            seen.setdefault(ep.interface, ep.id)

    @staticmethod
    def _check_endpoint(program: ir.Program, ep: ir.Endpoint, sink: DiagnosticSink) -> None:
        if not ep.is_host:
            if not is_ifname(ep.interface):
                sink.error(
                    "E811",
                    f"nftables target: interface name {ep.interface!r} of {ep.id} is not a "
                    "Linux interface name (1-15 of [A-Za-z0-9_.-])",
                    ep.origin,
                )
            return
        if any(ep.plan(d, ir.FORWARD) for d in ir.DIRECTIONS) and not is_ifname(ep.interface):
            sink.warning(
                "W812",
                f"nftables target: host endpoint {ep.id} has applyOnForward policy but no "
                f"single interface ({ep.interface!r}); forwarded traffic is not policed for it",
                ep.origin,
            )
        if not ep.ips and ep.interface != "*":
            sink.warning(
                "W813",
                f"nftables target: host endpoint {ep.id} has no expectedIPs; host traffic is "
                "matched to host endpoints by address, so none reaches its policy",
                ep.origin,
            )

    def render(self, program: ir.Program) -> Artifact:
        rendered = render_program(program)
        return Artifact(
            target=self.NAME,
            node=program.node or "",
            files={SCRIPT: rendered.script.encode()},
            summary=dict(rendered.summary),
        )


def with_batch(artifact: Artifact) -> tuple[Artifact, str | None]:
    """The artifact plus ``nftables.batch`` (:mod:`.batch`: the script as one netlink batch the
    runtime loads without ``nft``), or the artifact unchanged and why the script could not be
    encoded (then the runtime loads the script with ``nft -f``, as without a batch)."""
    from compiler.targets.nftables import batch

    script = artifact.files[SCRIPT].decode()
    try:
        data = batch.encode(script)
    except batch.Unencodable as e:
        return artifact, str(e)
    files = {**artifact.files, BATCH: batch.with_header(script, data)}
    return dataclasses.replace(artifact, files=files), None
