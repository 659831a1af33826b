"""Endpoint churn under MEMBERSHIP_STABLE_PASSES changes set elements only, never rules."""

from __future__ import annotations

import dataclasses

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import model as m
from compiler.ir.passes import DEFAULT_PASSES, MEMBERSHIP_STABLE_PASSES
from compiler.pipeline import compile_program
from compiler.targets.iptables import render_set_update as ipt_update
from compiler.targets.nftables import render_set_update as nft_update
from tests.ir.test_evaluate_model import resources

ALLOW_FROM_WEB = m.Policy(
    kind="NetworkPolicy",
    name="db",
    namespace="a",
    selector='app == "db"',
    ingress=(m.Rule("Allow", source=m.EntityRule(selector='app == "web"')),),
)


def _relabel_web_away(res: m.ResourceSet) -> m.ResourceSet:
    """The only `app == "web"` pod of namespace a is relabelled, so its set becomes empty."""
    eps = tuple(
        dataclasses.replace(e, labels=tuple((k, "gone" if k == "app" else v) for k, v in e.labels))
        if e.name == "web"
        else e
        for e in res.endpoints
    )
    return dataclasses.replace(res, endpoints=eps)


def _programs(passes):  # noqa: ANN001, ANN202
    before = resources(ALLOW_FROM_WEB)
    after = _relabel_web_away(before)
    compile_ = lambda r: compile_program(r, "node1", DiagnosticSink(), passes=passes)  # noqa: E731
    return compile_(before), compile_(after)


def test_stable_pipeline_keeps_label_churn_a_set_update() -> None:
    old, new = _programs(MEMBERSHIP_STABLE_PASSES)
    nft = nft_update(old, new)
    assert nft, "a set-element script is expected, not a full reload"
    assert "delete element" in nft
    assert ipt_update(old, new) is not None


def test_default_pipeline_may_rewrite_rules_on_churn() -> None:
    # The full pipeline folds the rule whose only source set became empty: rules change, so
    # no set-only update exists. This is why the agent uses the stable pipeline.
    old, new = _programs(DEFAULT_PASSES)
    assert nft_update(old, new) is None
