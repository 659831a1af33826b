"""Differential: the rendered iptables rules (run by the simulator in ``test_iptables_sim``)
give the evaluator's verdict for random clusters and flows (tests/property/strategies.py).

This is the fast, many-example half of the check; ``tests/kernel/test_iptables_netns.py`` runs
the same kind of programs through real iptables (legacy and nft) with real packets.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.pipeline import compile_program
from compiler.targets.iptables import IptablesTarget, render_program
from tests.property.strategies import flows, resource_sets
from tests.targets.test_iptables_sim import SimCluster

SETTINGS = settings(
    max_examples=int(os.environ.get("TORTIE_IPT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)


def compile_nodes(res: m.ResourceSet) -> dict[str, ir.Program]:
    names = sorted({e.node for e in res.endpoints} | {n.name for n in res.nodes})
    return {n: compile_program(res, n, DiagnosticSink()) for n in names}


def known_deviation(programs: dict[str, ir.Program], flow: Flow) -> bool:
    """Flows where the rules knowingly differ from the evaluator (documented in the target):

    * the raw table's failsafe copy lets *return traffic* of failsafe ports (source port = a
      failsafe port) past doNotTrack policy, which the evaluator (first packets only) ignores;
    * ICMP of the other family (protocol 1 over IPv6, 58 over IPv4): no such packets exist, and
      ip6tables has no ``-m icmp`` to read their type, so ICMP type criteria on them are not
      rendered exactly (see ``lower.fold_protocol``).
    """
    if (flow.family, flow.protocol) in ((6, 1), (4, 58)):
        return True
    prog = next(iter(programs.values()))
    if flow.src_port is None:
        return False
    untracked = any(
        e.plan(d, ir.UNTRACKED) for e in prog.endpoints if e.is_host for d in ir.DIRECTIONS
    )
    failsafe = {fp.port for fp in prog.felix.failsafe_inbound + prog.felix.failsafe_outbound}
    return untracked and flow.src_port in failsafe


@SETTINGS
@given(st.data())
def test_rules_agree_with_evaluator(data: st.DataObject) -> None:
    res = data.draw(resource_sets())
    programs = compile_nodes(res)
    sink = DiagnosticSink()
    for prog in programs.values():
        IptablesTarget().check(prog, sink)
    assert not sink.has_errors, sink.errors
    cluster = SimCluster(programs, render_program)
    oracle = programs["node1"]
    for _ in range(25):
        flow = data.draw(flows(res))
        if flow.src_ip == flow.dst_ip or known_deviation(programs, flow):
            continue
        want = evaluate(oracle, flow).allowed
        got = cluster.allowed(flow)
        assert got == want, (
            f"flow {flow}: rules {'allow' if got else 'deny'}, evaluator "
            f"{'allow' if want else 'deny'}; path {cluster.segments(flow.src_ip, flow.dst_ip)}"
        )
