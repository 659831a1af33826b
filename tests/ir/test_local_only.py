"""A one-node compile with ``local_only`` (what ``tortie compile --node`` does) builds only what
the node's endpoints use, and must render exactly the artifacts of the whole-program compile:
same sets (deduplication still sees every set), same chains, same bytes, for every target."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.pipeline import compile_program
from compiler.targets import get_target
from tests.property.strategies import resource_sets

TARGETS = ("nftables", "iptables", "ebpf")


def _render(res: m.ResourceSet, node: str, local_only: bool) -> dict[str, dict[str, bytes]]:
    sink = DiagnosticSink()
    program = compile_program(res, node, sink, local_only=local_only)
    out = {}
    for name in TARGETS:
        target = get_target(name)
        target.check(program, DiagnosticSink())
        out[name] = dict(target.render(program).files)
    return out


def _nodes(res: m.ResourceSet) -> list[str]:
    return sorted({e.node for e in res.endpoints} | {n.name for n in res.nodes})


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(resource_sets())
def test_local_only_renders_the_same_artifacts(res: m.ResourceSet) -> None:
    for node in _nodes(res)[:2]:
        assert _render(res, node, True) == _render(res, node, False), node


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resource_sets())
def test_local_only_keeps_only_local_endpoints_and_their_policies(res: m.ResourceSet) -> None:
    node = "node1"
    full = compile_program(res, node, DiagnosticSink())
    local = compile_program(res, node, DiagnosticSink(), local_only=True)
    assert all(e.node == node for e in local.endpoints)
    assert [e for e in full.endpoints if e.node == node] == list(local.endpoints)
    used = {
        pid for e in local.endpoints for _, plan in e.plans for tp in plan for pid in tp.policies
    }
    assert set(local.policies) == used
    for pid in local.policies:
        assert local.policies[pid] == full.policies[pid]
    names = {name for e in local.endpoints for name in e.profiles}
    assert set(local.profiles) == names & set(full.profiles)
    assert local.selectables == full.selectables
    for sid, s in local.sets.items():
        assert full.sets[sid] == s
