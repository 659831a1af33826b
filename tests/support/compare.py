"""Kernel results against the evaluator: which probes the kernel got wrong, and why the
evaluator decided as it did (every step, with the policy, rule and source line)."""

from __future__ import annotations

from collections.abc import Mapping

from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Verdict
from tests.support.topology import Topology
from tests.support.traffic import Probe, send_probes


def describe_verdict(verdict: Verdict) -> str:
    """Both directions of ``verdict``, one indented line per evaluation step."""
    lines = []
    for dv in (verdict.egress, verdict.ingress):
        lines.append(f"    {dv.direction}: {'allow' if dv.allowed else 'deny'}")
        for step in dv.events:
            where = f" {step.span}" if step.span.line else ""
            rule = f" rule {step.rule_index}" if step.rule_index is not None else ""
            tier = f" tier {step.tier}" if step.tier else ""
            lines.append(
                f"      {step.reason}: {step.action} endpoint={step.endpoint} hook={step.hook}"
                f"{tier} {step.policy or ''}{rule}{where}"
            )
    return "\n".join(lines)


def mismatch_report(
    topo: Topology,
    results: Mapping[Probe, bool],
    expected: Mapping[Probe, bool] | None = None,
    label: str = "",
) -> list[str]:
    """One explanation per probe where the kernel disagrees with the evaluator (or with
    ``expected``, e.g. a conformance case's table)."""
    out = []
    for probe, arrived in results.items():
        flow = topo.flow(probe)
        verdict = evaluate(topo.program, flow, via=topo.via(probe))
        want = verdict.allowed if expected is None else expected[probe]
        if arrived == want and (expected is None or verdict.allowed == want):
            continue
        policies = sorted(
            {s.policy for dv in (verdict.egress, verdict.ingress) for s in dv.events if s.policy}
        )
        out.append(
            f"{label}{probe.src} -> {probe.dst_ip} {probe.protocol} {probe.dst_port or ''}"
            f" (flow {flow.src_ip}:{flow.src_port} -> {flow.dst_ip}:{flow.dst_port}):"
            f" kernel {'delivered' if arrived else 'did not deliver'},"
            f" evaluator {'allow' if verdict.allowed else 'deny'}"
            + (f", expected {'allow' if want else 'deny'}" if expected is not None else "")
            + f"; policies {policies}\n{describe_verdict(verdict)}"
        )
    return out


def run_and_compare(
    topo: Topology,
    probes: list[Probe],
    expected: Mapping[Probe, bool] | None = None,
    timeout: float = 0.5,
) -> list[str]:
    """Send ``probes`` through the cluster and report every disagreement (see
    :func:`mismatch_report`); an empty list means the kernel agreed on every probe."""
    results = send_probes(topo.cluster, probes, timeout=timeout)
    return mismatch_report(topo, results, expected)
