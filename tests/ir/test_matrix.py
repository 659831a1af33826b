"""The matrix through equivalence classes equals one evaluation per pair."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.ir.build import build
from compiler.ir.matrix import Probe, compute, compute_naive, iter_json, render_text
from compiler.pipeline import compile_program
from tests.property.strategies import NAMESPACES, resource_sets

PROBES = (
    Probe(6, 80),
    Probe(6, 8080),
    Probe(17, 53),
    Probe(132, 80),
    Probe(1, None, 8, 0),
    Probe(58, None, 128, 0),
)


@given(
    resource_sets(),
    st.sampled_from(PROBES),
    st.sampled_from((4, 6)),
    st.sampled_from(((), (NAMESPACES[0],))),
    st.booleans(),
)
def test_classes_equal_naive(res, probe, family, namespaces, optimise) -> None:  # noqa: ANN001
    prog = compile_program(res, None, DiagnosticSink()) if optimise else build(res)
    fast = compute(prog, probe, family, namespaces)
    slow = compute_naive(prog, probe, family, namespaces)
    assert fast.endpoints == slow.endpoints
    assert fast.skipped == slow.skipped
    assert fast.pairs() == slow.pairs()


def _bench_program(tmp_path: Path, pods: int):  # noqa: ANN202
    gen = pytest.importorskip("benchmarks.gen")
    gen.write(tmp_path, gen.generate(pods // 10, pods, 5, 7))
    from compiler.frontend import load

    sink = DiagnosticSink()
    rs = load([str(tmp_path)], sink, SourceRegistry())
    assert not sink.has_errors
    return compile_program(rs, None, sink)


def test_classes_equal_naive_on_generated_cluster(tmp_path: Path) -> None:
    prog = _bench_program(tmp_path, 60)
    for probe in (Probe(6, 80), Probe(6, 8080), Probe(17, 53)):
        fast, slow = compute(prog, probe), compute_naive(prog, probe)
        assert fast.pairs() == slow.pairs()
        assert fast.evaluations < slow.evaluations


@pytest.mark.slow
def test_thousand_pods_in_seconds(tmp_path: Path) -> None:
    prog = _bench_program(tmp_path, 1000)
    t = time.perf_counter()
    m = compute(prog, Probe(6, 80))
    assert len(m.endpoints) == 1000
    assert time.perf_counter() - t < 30  # about 2 s on a laptop; generous for loaded CI


def test_rendering() -> None:
    import ipaddress

    from compiler.ir.matrix import Matrix

    ips = (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2"))
    m = Matrix(
        Probe(6, 80), 4, (("a/x", ips[0]), ("b/y", ips[1])), ((True, False), (True, True)), 3
    )
    text = render_text(m).splitlines()
    assert text[-3:] == ["-\ta/x\tb/y", "a/x\t.*\tX", "b/y\t.\t.*"]
    data = json.loads("".join(iter_json([m])))
    assert data[1] == {"from": "a/x", "to": "b/y", "protocol": "TCP", "port": 80, "allowed": False}
    assert len(data) == 4
    assert json.loads("".join(iter_json([]))) == []
