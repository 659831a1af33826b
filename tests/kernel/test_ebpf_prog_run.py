"""The eBPF programs under BPF_PROG_TEST_RUN: crafted packets, verdicts compared with the
evaluator (hand-made cases and hypothesis-generated policies), parser robustness (truncation,
IPv6 extension headers, fragments, non-IP) and Log counters. Everything is loaded through the
verifier into a private bpffs that is unmounted afterwards."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.targets.ebpf import EbpfTarget, layout, packets
from compiler.tools import bpftool
from tests.kernel.test_ebpf_support import (
    A_V4,
    A_V6,
    HEP_ID,
    HOST_V4,
    HOST_V6,
    N,
    ct_flush,
    expected,
    flows,
    host_flows,
    host_programs,
    loaded,
    one_endpoint_program,
    policy,
    programs,
    requires_bpf,
    rule,
    run_flow,
    run_packet,
)

pytestmark = [pytest.mark.kernel, pytest.mark.clang, requires_bpf]

B4, B6 = ipaddress.ip_address("10.65.0.2"), ipaddress.ip_address("fd00:65::2")
C4 = ipaddress.ip_address("10.65.0.3")


def _handmade() -> ir.Program:
    """Tier t0 (Deny): log UDP; pass ICMP; allow TCP 80 from set b; deny from 10.65.0.3.
    Tier t1 (Pass): deny UDP 53. Profile: allow IPv4 and IPv6 named port http (ingress)."""
    t0 = policy(
        "gnp/t0p0",
        "t0",
        ingress=[
            rule(ir.LOG, 0, ip_version=4, protocol=17),
            rule(ir.PASS, 1, ip_version=4, protocol=1),
            rule(ir.ALLOW, 2, ip_version=4, protocol=6, src=ir.Side(sets=("s:b:4",)),
                 dst=ir.Side(ports=ir.PortMatch(((80, 80),)))),
            rule(ir.DENY, 3, ip_version=4, src=ir.Side(nets=(N("10.65.0.3/32"),))),
            rule(ir.PASS, 4, ip_version=4, protocol=17),
            rule(ir.PASS, 5, ip_version=6),
        ],
        egress=[rule(ir.ALLOW, 0, ip_version=4, dst=ir.Side(not_nets=(N("8.8.8.0/24"),)))],
    )  # fmt: skip
    t1 = policy("gnp/t1p0", "t1", ingress=[rule(ir.DENY, 0, ip_version=4, protocol=17,
                dst=ir.Side(ports=ir.PortMatch(((53, 53),))))])  # fmt: skip
    prof = ir.Profile(
        "prof",
        ingress=(
            rule(ir.ALLOW, 0, ip_version=4, protocol=1, icmp_type=8),
            rule(ir.ALLOW, 1, ip_version=4, protocol=17),
            rule(ir.ALLOW, 2, ip_version=6, protocol=6,
                 dst=ir.Side(ports=ir.PortMatch((), ("n:http:6",)))),
        ),
        egress=(rule(ir.ALLOW, 0, ip_version=4),),
    )  # fmt: skip
    return one_endpoint_program([("t0", ir.DENY, [t0]), ("t1", ir.PASS, [t1])], [prof])


HANDMADE_FLOWS = [
    (ir.INGRESS, Flow(B4, A_V4, 6, 1234, 80)),  # allow (rule 2)
    (ir.INGRESS, Flow(B4, A_V4, 6, 1234, 81)),  # end of tier t0
    (ir.INGRESS, Flow(C4, A_V4, 6, 1234, 80)),  # deny (rule 3)
    (ir.INGRESS, Flow(B4, A_V4, 17, 1234, 53)),  # log, pass, t1 deny
    (ir.INGRESS, Flow(B4, A_V4, 17, 1234, 54)),  # log, pass, profile allow
    (ir.INGRESS, Flow(B4, A_V4, 1, icmp_type=8, icmp_code=0)),  # pass, profile allow
    (ir.INGRESS, Flow(B4, A_V4, 1, icmp_type=0, icmp_code=0)),  # pass, no profile
    (ir.INGRESS, Flow(B6, A_V6, 6, 1234, 80)),  # pass, named port http of A: allow
    (ir.INGRESS, Flow(B6, A_V6, 6, 1234, 8080)),  # pass, named port of B, not A: deny
    (ir.EGRESS, Flow(A_V4, B4, 6, 1234, 80)),  # allow
    (ir.EGRESS, Flow(A_V4, ipaddress.ip_address("8.8.8.8"), 17, 1234, 53)),  # end of tier
    (ir.EGRESS, Flow(A_V4, HOST_V4, 6, 1234, 22)),  # allowed, then endpoint-to-host Drop
    (ir.EGRESS, Flow(A_V6, B6, 6, 1234, 80)),  # end of tier (no v6 rule)
]


def test_handmade_program_matches_evaluator() -> None:
    prog = _handmade()
    with loaded(EbpfTarget().render(prog)) as ld:
        got = {}
        for direction, flow in HANDMADE_FLOWS:
            got[(direction, flow)] = run_flow(ld, "ns/a", direction, flow)
            ct_flush(ld)
        want = {(d, f): expected(prog, f, d) for d, f in HANDMADE_FLOWS}
        assert got == want
        # The hand-written expectations, in order, so the evaluator is checked too.
        assert [want[(d, f)] for d, f in HANDMADE_FLOWS] == [
            True, False, False, False, True, True, False, True, False, True, False, False, False,
        ]  # fmt: skip


def test_log_rule_counts_and_continues() -> None:
    prog = _handmade()
    with loaded(EbpfTarget().render(prog)) as ld:
        assert run_flow(ld, "ns/a", ir.INGRESS, Flow(B4, A_V4, 17, 1234, 54))
        assert not run_flow(ld, "ns/a", ir.INGRESS, Flow(B4, A_V4, 17, 1234, 53))
        (log_rule,) = ld.doc["log_rules"]
        assert (log_rule["owner"], log_rule["direction"], log_rule["rule"]) == (
            "gnp/t0p0",
            "ingress",
            0,
        )
        (entry,) = bpftool.map_dump(ld.maps[layout.LOG.name])
        key = int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
        assert f"0x{key:016x}" == log_rule["id64"]
        value = layout.LOG_VALUE.unpack(bytes(int(b, 16) for b in entry["value"]))
        assert value["packets"] == 2


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    prog=programs(),
    ingress=st.lists(flows(ir.INGRESS), min_size=1, max_size=25),
    egress=st.lists(flows(ir.EGRESS), min_size=1, max_size=25),
)
def test_random_policies_match_evaluator(
    prog: ir.Program, ingress: list[Flow], egress: list[Flow]
) -> None:
    with loaded(EbpfTarget().render(prog)) as ld:
        errors = []
        for direction, batch in ((ir.INGRESS, ingress), (ir.EGRESS, egress)):
            for flow in batch:
                got = run_flow(ld, "ns/a", direction, flow)
                if got and flow.protocol != 6:
                    ct_flush(ld)  # only allowed non-SYN packets leave conntrack state
                want = expected(prog, flow, direction)
                if got != want:
                    errors.append(f"{direction} {flow}: kernel {got}, evaluator {want}")
        assert not errors, "\n".join(errors)


# -- parsing ------------------------------------------------------------------------------------


def _allow_all() -> ir.Program:
    t = policy("gnp/all", "t0", ingress=[
        rule(ir.ALLOW, 0, ip_version=4, protocol=6, dst=ir.Side(ports=ir.PortMatch(((80, 80),)))),
        rule(ir.ALLOW, 1, ip_version=6, protocol=17, dst=ir.Side(ports=ir.PortMatch(((53, 53),)))),
        rule(ir.ALLOW, 2, ip_version=4, protocol=17, dst=ir.Side(ports=ir.PortMatch(((53, 53),)))),
        rule(ir.ALLOW, 3, ip_version=6, protocol=58),
        rule(ir.ALLOW, 4, ip_version=4, protocol=132),
    ])  # fmt: skip
    return one_endpoint_program([("t0", ir.DENY, [t])])


@pytest.fixture(scope="module")
def allow_all():  # type: ignore[no-untyped-def]
    with loaded(EbpfTarget().render(_allow_all())) as ld:
        yield ld


@pytest.mark.parametrize(
    ("flow", "shape"),
    [
        (Flow(B4, A_V4, 6, 1234, 80), packets.Shape()),
        (Flow(B6, A_V6, 17, 1234, 53), packets.Shape(v6_ext=(0, 60, 43, 51))),
        (Flow(B4, A_V4, 132, 1234, 9), packets.Shape()),
        (Flow(B6, A_V6, 58, icmp_type=128, icmp_code=0), packets.Shape(v6_ext=(60,))),
    ],
    ids=["tcp4", "udp6-ext", "sctp4", "icmp6-ext"],
)
def test_truncated_packets_are_dropped(allow_all, flow: Flow, shape: packets.Shape) -> None:  # type: ignore[no-untyped-def]
    """Every cut inside the extension or transport headers drops; the whole frame passes.
    (BPF_PROG_TEST_RUN itself refuses frames shorter than Ethernet + the fixed IP header, so
    cuts start there.)"""
    full = packets.frame(flow, shape)
    assert run_packet(allow_all, "ns/a", ir.INGRESS, full)
    ct_flush(allow_all)
    header_end = len(full)  # these frames carry no payload: every byte is a header byte
    for cut in range(14 + (20 if flow.family == 4 else 40), header_end):
        assert not run_packet(allow_all, "ns/a", ir.INGRESS, full[:cut]), f"cut at {cut}"


def test_ipv6_extension_headers(allow_all) -> None:  # type: ignore[no-untyped-def]
    flow = Flow(B6, A_V6, 17, 1234, 53)
    for chain in [(), (0,), (60,), (43,), (51,), (0, 43, 60, 51), (0, 60, 60, 60, 60, 60, 60, 60)]:
        assert run_flow(allow_all, "ns/a", ir.INGRESS, flow, packets.Shape(v6_ext=chain)), chain
        ct_flush(allow_all)
    denied = Flow(B6, A_V6, 17, 1234, 54)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, denied, packets.Shape(v6_ext=(0, 60)))
    # More headers than the parser walks: dropped, whatever the policy says.
    too_many = packets.Shape(v6_ext=(60,) * 9)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, flow, too_many)


@pytest.mark.parametrize("family", [4, 6])
def test_fragments_follow_their_first_fragment(allow_all, family: int) -> None:  # type: ignore[no-untyped-def]
    src, dst = (B4, A_V4) if family == 4 else (B6, A_V6)
    allowed, denied = Flow(src, dst, 17, 1234, 53), Flow(src, dst, 17, 1234, 54)
    first, later = (
        packets.Shape(fragment="first", frag_id=7),
        packets.Shape(fragment="later", frag_id=7),
    )
    other_id = packets.Shape(fragment="later", frag_id=8)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, allowed, later)  # before its first
    assert run_flow(allow_all, "ns/a", ir.INGRESS, allowed, first)
    assert run_flow(allow_all, "ns/a", ir.INGRESS, allowed, later)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, allowed, other_id)
    ct_flush(allow_all)
    d_first = packets.Shape(fragment="first", frag_id=9)
    d_later = packets.Shape(fragment="later", frag_id=9)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, denied, d_first)
    assert not run_flow(allow_all, "ns/a", ir.INGRESS, denied, d_later)


def test_non_ip_frames_pass(allow_all) -> None:  # type: ignore[no-untyped-def]
    arp = packets.ETH_DST + packets.ETH_SRC + b"\x08\x06" + bytes(28)
    assert run_packet(allow_all, "ns/a", ir.INGRESS, arp)


def test_port_range_and_protocol_boundaries() -> None:
    t = policy("gnp/ports", "t0", ingress=[
        rule(ir.ALLOW, 0, ip_version=4, protocol=6, dst=ir.Side(ports=ir.PortMatch(((1000, 2000),)))),
        rule(ir.ALLOW, 1, ip_version=4, protocol=17, src=ir.Side(not_ports=ir.PortMatch(((10, 20),)))),
        rule(ir.ALLOW, 2, ip_version=4, not_protocol=6, dst=ir.Side(ports=ir.PortMatch(((7, 7),)))),
    ])  # fmt: skip
    prog = one_endpoint_program([("t0", ir.DENY, [t])])
    cases = [Flow(B4, A_V4, 6, 5, p) for p in (999, 1000, 2000, 2001)]
    cases += [Flow(B4, A_V4, 17, p, 5) for p in (9, 10, 20, 21)]
    cases += [Flow(B4, A_V4, 132, 5, 7), Flow(B4, A_V4, 1, icmp_type=8, icmp_code=0)]
    with loaded(EbpfTarget().render(prog)) as ld:
        got = []
        for flow in cases:
            got.append(run_flow(ld, "ns/a", ir.INGRESS, flow))
            ct_flush(ld)
    want = [expected(prog, f, ir.INGRESS) for f in cases]
    assert got == want == [False, True, True, False, True, False, False, True, True, False]


# -- host endpoints ----------------------------------------------------------------------------


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    prog=host_programs(),
    ingress=st.lists(host_flows(ir.INGRESS), min_size=1, max_size=25),
    egress=st.lists(host_flows(ir.EGRESS), min_size=1, max_size=25),
)
def test_random_host_endpoint_policies_match_evaluator(
    prog: ir.Program, ingress: list[Flow], egress: list[Flow]
) -> None:
    """Host traffic through a ``*`` host endpoint: failsafes, untracked, pre-DNAT, normal tiers
    and profiles, as the evaluator's host verdict runs them."""
    with loaded(EbpfTarget().render(prog)) as ld:
        errors = []
        for direction, batch in ((ir.INGRESS, ingress), (ir.EGRESS, egress)):
            for flow in batch:
                got = run_flow(ld, HEP_ID, direction, flow)
                if got and flow.protocol != 6:
                    ct_flush(ld)
                v = evaluate(prog, flow)
                want = (v.ingress if direction == ir.INGRESS else v.egress).allowed
                if got != want:
                    errors.append(f"{direction} {flow}: kernel {got}, evaluator {want}")
        assert not errors, "\n".join(errors)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(prog=host_programs(), batch=st.lists(flows(ir.INGRESS), min_size=1, max_size=20))
def test_forwarded_traffic_runs_apply_on_forward_tiers(prog: ir.Program, batch: list[Flow]) -> None:
    """Traffic entering through the host endpoint towards a workload: the HEP's forward
    ingress tiers (allow by default), as ``evaluate(..., via=HEP)`` checks that side (the
    workload allows everything here, so the forward tiers decide)."""
    allow_all = ir.Profile(
        "allow-all", (rule(ir.ALLOW, 0, ip_version=4), rule(ir.ALLOW, 1, ip_version=6))
    )
    eps = tuple(
        e if e.is_host else dataclasses.replace(e, profiles=("allow-all",)) for e in prog.endpoints
    )
    prog = ir.replace_program(
        prog, profiles={**prog.profiles, "allow-all": allow_all}, endpoints=eps
    )
    with loaded(EbpfTarget().render(prog)) as ld:
        errors = []
        for flow in batch:
            if flow.src_ip in (HOST_V4, HOST_V6):
                continue  # host traffic, not forwarded
            got = run_flow(ld, HEP_ID, ir.INGRESS, flow)
            if got and flow.protocol != 6:
                ct_flush(ld)
            want = evaluate(prog, flow, via=HEP_ID).ingress.allowed
            if got != want:
                errors.append(f"{flow}: kernel {got}, evaluator {want}")
        assert not errors, "\n".join(errors)
