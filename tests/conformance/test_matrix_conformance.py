"""The conformance corpus through the frontend, the pass pipeline, the evaluator and the matrix.

For every case of ``tests/conformance/loader.py``: load the YAML, compile it (whole cluster, all
passes), and compare every expected ``(src, dst) -> allowed`` with

* the reference evaluator on the optimised program, for every pair, and
* ``compiler.ir.matrix.compute`` (equivalence classes) for the pod-to-pod pairs.

A failure lists every disagreeing pair with the evaluator's trace in words. Cases whose
expectation contradicts SEMANTICS.md after careful reading are marked xfail in ``XFAIL`` with the
reason (the fixture itself is never edited here).
"""

from __future__ import annotations

import ipaddress

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.explain import Peer, explain_text
from compiler.ir.matrix import Probe, compute
from compiler.pipeline import compile_program
from tests.conformance.loader import Case, Check, load_cases

CASES = load_cases()

#: case name -> why its expectation is believed wrong (see the module docstring).
XFAIL: dict[str, str] = {}

_PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _probe(check: Check) -> Probe:
    if check.protocol == "ICMP":
        return Probe(1, None, 8, 0) if check.family == 4 else Probe(58, None, 128, 0)
    return Probe(_PROTOCOLS[check.protocol], check.port)


def _address(case: Case, program: ir.Program, name: str, family: int) -> ir.IPAddr:
    if name.startswith("host:"):
        hep = next(e for e in program.endpoints if e.is_host and e.id == name[5:])
        return next(ip for ip in hep.ips if ip.version == family)
    if "/" in name:
        return ipaddress.ip_address(case.pods[name][family])
    return ipaddress.ip_address(name)


def _peer(program: ir.Program, name: str, ip: ir.IPAddr) -> Peer:
    ep = next((e for e in program.endpoints if e.id == name.removeprefix("host:")), None)
    return Peer(name, ep, (ip,))


def _compile(case: Case) -> ir.Program:
    sink, sources = DiagnosticSink(), SourceRegistry()
    resources = load_text(case.documents_yaml_text, f"{case.name}.yaml", sink, sources)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    program = compile_program(resources, None, sink)
    assert not sink.has_errors, render_all(sink.sorted(), sources)
    return program


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=XFAIL[c.name], strict=True)])
        if c.name in XFAIL
        else pytest.param(c, id=c.name)
        for c in CASES
    ],
)
def test_case(case: Case) -> None:
    program = _compile(case)
    failures: list[str] = []
    for check in case.checks:
        probe = _probe(check)
        matrix = compute(program, probe, check.family).pairs()
        for (src, dst), want in sorted(check.expected.items()):
            sip = _address(case, program, src, check.family)
            dip = _address(case, program, dst, check.family)
            flow = probe.flow(sip, dip)
            verdict = evaluate(program, flow)
            where = f"{check.protocol}/{check.port} IPv{check.family} {src} -> {dst}"
            if verdict.allowed != want:
                trace = explain_text(
                    program, flow, verdict, _peer(program, src, sip), _peer(program, dst, dip)
                )
                failures.append(
                    f"{where}: expected {'allow' if want else 'deny'}, evaluator says "
                    f"{'allow' if verdict.allowed else 'deny'}\n" + _indent(trace)
                )
            if (src, dst) in matrix and matrix[(src, dst)] != verdict.allowed:
                failures.append(
                    f"{where}: matrix says {matrix[(src, dst)]}, evaluator {verdict.allowed}"
                )
    assert not failures, f"{case.name}: {len(failures)} disagreement(s)\n" + "\n".join(
        failures[:10]
    )


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())
