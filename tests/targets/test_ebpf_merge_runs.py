"""``merge_net_runs`` (eBPF lowering): consecutive same-action rules that differ only in one
side's CIDRs become one rule with the union. First-match verdicts must not change; checked
against the evaluator's own ``rule_matches`` on random rule lists and flows."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import nodes as ir
from compiler.ir.evaluate import rule_matches
from compiler.ir.flow import Flow
from compiler.targets.ebpf.lower import merge_net_runs

N = ipaddress.ip_network
# The rules here name no selector sets, so the program is only there to be passed along.
PROGRAM = ir.Program(
    node="n", tiers=(), policies={}, profiles={}, sets={}, endpoints=(), selectables=()
)
NETS = [N(f"10.0.{i}.0/24") for i in range(4)] + [N("10.0.0.7/32"), N("10.0.0.0/16")]
ADDRS = [ipaddress.ip_address(f"10.0.{i}.7") for i in range(5)] + [
    ipaddress.ip_address("192.0.2.1")
]


@st.composite
def rules(draw: st.DrawFn) -> list[ir.Rule]:
    """Rule lists with many neighbours that differ only in one side's CIDRs (what the merge
    joins), from a few templates, and every other kind of neighbour too."""

    def side() -> ir.Side:
        nets = draw(st.none() | st.lists(st.sampled_from(NETS), max_size=3).map(tuple))
        not_nets = draw(st.lists(st.sampled_from(NETS), max_size=1).map(tuple))
        ports = draw(st.none() | st.just(ir.PortMatch(((80, 80),))))
        return ir.Side(nets=nets, not_nets=not_nets, ports=ports)

    templates = [
        ir.Match(
            ip_version=4, protocol=draw(st.sampled_from([None, 6, 17])), src=side(), dst=side()
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    out = []
    for i in range(draw(st.integers(0, 14))):
        match = draw(st.sampled_from(templates))
        which = draw(st.sampled_from(["src", "dst", "src", "dst", "none"]))
        field = draw(st.sampled_from(["nets", "nets", "not_nets"]))  # not_nets: must not merge
        if which != "none":
            nets = draw(st.lists(st.sampled_from(NETS), max_size=3).map(tuple))
            old = getattr(match, which)
            match = dataclasses.replace(match, **{which: dataclasses.replace(old, **{field: nets})})
        action = draw(st.sampled_from([ir.ALLOW, ir.ALLOW, ir.DENY, ir.PASS, ir.LOG]))
        out.append(ir.Rule(action, match, i))
    return out


def _first(rules: list[ir.Rule], flow: Flow) -> str | None:
    """The action of the first matching rule that ends evaluation (Log goes on)."""
    for r in rules:
        if r.action != ir.LOG and rule_matches(PROGRAM, r.match, flow):
            return r.action
    return None


def _logged(rules: list[ir.Rule], flow: Flow) -> list[int]:
    out = []
    for r in rules:
        if rule_matches(PROGRAM, r.match, flow):
            if r.action != ir.LOG:
                break
            out.append(r.index)
    return out


# Every flow of the small address/protocol/port space, for every rule list.
ALL_FLOWS = [
    Flow(src, dst, proto, 1234, port)
    for src in ADDRS
    for dst in ADDRS
    for proto in (6, 17)
    for port in (80, 81)
]


@settings(max_examples=400, deadline=None)
@given(rs=rules())
def test_merged_rules_give_the_same_first_match(rs: list[ir.Rule]) -> None:
    flows = ALL_FLOWS
    merged = merge_net_runs(rs)
    out = [r for r, _ in merged]
    assert len(out) <= len(rs)
    for flow in flows:
        assert _first(out, flow) == _first(rs, flow), flow
        assert _logged(out, flow) == _logged(rs, flow), flow  # Log rules are never merged
    # Indices: each output rule covers rules index..last, in order, without gaps.
    covered = [i for r, last in merged for i in range(r.index, last + 1)]
    assert covered == [r.index for r in rs]


def test_a_run_of_host_rules_becomes_one_rule() -> None:
    allow = [
        ir.Rule(
            ir.ALLOW,
            ir.Match(ip_version=4, protocol=17, src=ir.Side(nets=(N(f"10.1.0.{i}/32"),))),
            i,
        )
        for i in range(200)
    ]
    deny = ir.Rule(ir.DENY, ir.Match(ip_version=4, src=ir.Side(nets=(N("10.2.0.0/16"),))), 200)
    tail = ir.Rule(
        ir.ALLOW, ir.Match(ip_version=4, protocol=6, src=ir.Side(nets=(N("10.3.0.1/32"),))), 201
    )
    merged = merge_net_runs([*allow, deny, tail])
    assert [(r.index, last) for r, last in merged] == [(0, 199), (200, 200), (201, 201)]
    assert len(merged[0][0].match.src.nets or ()) == 200
    # Different protocol: not merged with the run before it.
    assert merged[2][0] is tail


def test_rules_that_differ_in_more_than_one_sides_cidrs_stay_apart() -> None:
    def allow(i: int, **src: object) -> ir.Rule:
        return ir.Rule(ir.ALLOW, ir.Match(ip_version=4, src=ir.Side(**src)), i)  # type: ignore[arg-type]

    wide = (N("10.0.0.0/16"),)
    cases = [
        [allow(0, nets=wide, not_nets=(N("10.0.1.0/24"),)), allow(1, nets=wide)],  # not_nets
        [allow(0, nets=wide, sets=("s:a:4",)), allow(1, nets=wide)],  # sets
        [allow(0, nets=wide), allow(1)],  # any source: nothing to merge with
    ]
    for rs in cases:
        assert merge_net_runs(rs) == [(rs[0], 0), (rs[1], 1)]
    deny_then_allow = [
        ir.Rule(ir.DENY, ir.Match(ip_version=4, src=ir.Side(nets=wide)), 0),
        allow(1, nets=(N("10.0.1.0/24"),)),
    ]
    assert merge_net_runs(deny_then_allow) == [(deny_then_allow[0], 0), (deny_then_allow[1], 1)]
    flow = Flow(ipaddress.ip_address("10.0.1.7"), ipaddress.ip_address("10.9.0.1"), 6, 1, 80)
    rs = cases[0]
    assert _first(rs, flow) == ir.ALLOW  # rule 1 allows what rule 0 excludes


def test_a_destination_run_keeps_any_source() -> None:
    rs = [
        ir.Rule(ir.ALLOW, ir.Match(ip_version=4, dst=ir.Side(nets=(N(f"10.0.{i}.0/24"),))), i)
        for i in range(3)
    ]
    ((rule, last),) = merge_net_runs(rs)
    assert last == 2 and rule.match.src == ir.Side() and len(rule.match.dst.nets or ()) == 3
