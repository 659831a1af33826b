"""Every pass keeps semantics: the reference evaluator gives the same verdict, trace included.

For a random small cluster and a batch of random flows, ``evaluate`` is run on the IR straight from
``build`` and then on the program after

* each step of ``DEFAULT_PASSES`` in order (the pipeline as compiled),
* each pass applied *alone* to the built program (a pass must not rely on a predecessor for
  correctness, only for effectiveness),
* each pass after ``resolve_sets`` alone (resolved but not split: sets that span both families).

The comparison is of the whole :class:`~compiler.ir.flow.Verdict`: allowed, the deciding step
(reason, policy, rule index, span) and every Log/Pass event. Dropping a shadowed or unmatchable
rule leaves all of that unchanged by definition, since such a rule never matched. A failure names
the first stage that disagrees.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.ir.build import build
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.ir.nodes import Program
from compiler.ir.passes import BY_NAME, DEFAULT_PASSES, resolve_sets
from compiler.pipeline import PassContext
from tests.property.contract import check_contract
from tests.property.strategies import flows, resource_sets


def _stages(res: m.ResourceSet) -> list[tuple[str, Program]]:
    base = build(res)
    stages = [("build", base)]
    prog = base
    for p in DEFAULT_PASSES:
        prog = p(prog, PassContext(DiagnosticSink()))
        stages.append((f"pipeline:{p.__module__.rsplit('.', 1)[-1]}", prog))
    check_contract(prog)
    for name, p in BY_NAME.items():
        stages.append((f"alone:{name}", p(base, PassContext(DiagnosticSink()))))
    resolved = resolve_sets.run(base, PassContext())
    for name, p in BY_NAME.items():
        if name not in ("resolve_sets", "split_families"):
            stages.append((f"resolved+{name}", p(resolved, PassContext(DiagnosticSink()))))
    return stages


def _via(res: m.ResourceSet, data: st.DataObject) -> str | None:
    heps = [e.id for e in res.endpoints if e.is_host]
    if heps and data.draw(st.integers(0, 4)) == 0:
        return heps[0]
    return None


@given(st.data())
def test_every_pass_keeps_every_verdict(data: st.DataObject) -> None:
    res = data.draw(resource_sets(), label="resources")
    stages = _stages(res)
    batch: list[Flow] = data.draw(st.lists(flows(res), min_size=8, max_size=16), label="flows")
    via = _via(res, data)
    for flow in batch:
        want = evaluate(stages[0][1], flow, via)
        for name, prog in stages[1:]:
            got = evaluate(prog, flow, via)
            assert got == want, (
                f"stage {name} changed the verdict of {flow} (via {via}):\n"
                f"  before: {want}\n  after:  {got}"
            )


@given(resource_sets())
def test_pipeline_is_deterministic_and_idempotent(res: m.ResourceSet) -> None:
    from compiler.ir.dump import dump

    first = build(res)
    sink1, sink2 = DiagnosticSink(), DiagnosticSink()
    a = first
    for p in DEFAULT_PASSES:
        a = p(a, PassContext(sink1))
    b = build(res)
    for p in DEFAULT_PASSES:
        b = p(b, PassContext(sink2))
    assert dump(a) == dump(b)
    assert sink1.diagnostics == sink2.diagnostics
    again = a
    for p in DEFAULT_PASSES:
        again = p(again, PassContext(DiagnosticSink()))
    assert dump(again) == dump(a)
