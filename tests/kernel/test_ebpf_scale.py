"""Scale of the eBPF programs: a 2,000-rule policy per direction goes through the verifier in
tail-called chunks and decides like the evaluator at both ends of the chain; tiny chunks (many
tail calls, Pass across chunk boundaries) keep the semantics.

Measured on kernel 6.18 / clang 14 (see the report in compiler/targets/ebpf/__init__.py):
a chunk of ``chunk_budget`` = 8,000 cost units is ~6,500-7,500 BPF instructions; one function of
~25,000 instructions (about 1,000 rules with a set lookup, a CIDR and a port each) still
verifies, but at ~1,300 such rules clang emits a jump beyond the 16-bit BPF branch offset
("jump out of range"), which is the per-program limit, well before the verifier's 1M processed
instructions. With 32 chunks the chain holds ~10,000 such rules per endpoint and direction.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import nodes as ir
from compiler.ir.flow import Flow
from compiler.targets.ebpf import EbpfTarget
from compiler.tools import bpftool
from tests.kernel.test_ebpf_support import (
    A_V4,
    N,
    ct_flush,
    expected,
    flows,
    loaded,
    one_endpoint_program,
    policy,
    programs,
    requires_bpf,
    run_flow,
)

pytestmark = [pytest.mark.kernel, pytest.mark.clang, requires_bpf]

RULES = 2000
BPF_MAX_JUMP = 32767  # 16-bit signed branch offset


def _big_program(n: int) -> ir.Program:
    """``n`` rules per direction, each: TCP, a /24 and set b on the source, one port."""
    rules = []
    for i in range(n):
        m = ir.Match(
            ip_version=4,
            protocol=6,
            src=ir.Side(nets=(N(f"10.{i // 256}.{i % 256}.0/24"),), sets=("s:b:4",)),
            dst=ir.Side(ports=ir.PortMatch(((1000 + i, 1000 + i),))),
        )
        rules.append(ir.Rule(ir.DENY if i % 2 else ir.ALLOW, m, i))
    t = policy("gnp/big", "t0", ingress=rules, egress=rules)
    return one_endpoint_program([("t0", ir.DENY, [t])])


@pytest.mark.slow
def test_2000_rules_per_direction_verify_load_and_decide() -> None:
    prog = _big_program(RULES)
    art = EbpfTarget().render(prog)
    with loaded(art) as ld:
        for name, meta in ld.doc["objects"].items():
            assert meta["rules"] == RULES and meta["chunks"] > 1
            for pin in sorted(ld.objects[name].iterdir()):
                if pin.is_file():
                    insns = bpftool.prog_show(str(pin))["bytes_xlated"] // 8
                    assert insns < BPF_MAX_JUMP, (pin.name, insns)
        # B (10.65.0.2) is in set b; the rule for port 1000+i needs source 10.x.y.0/24 too,
        # so use sources inside the /24 of the first and the last rules (set b has 10.66/16).
        first = Flow(ipaddress.ip_address("10.0.0.9"), A_V4, 6, 5, 1000)
        last_i = RULES - 2  # an allow rule (even index) in the last chunk
        src_last = ipaddress.ip_address(f"10.{last_i // 256}.{last_i % 256}.9")
        last = Flow(src_last, A_V4, 6, 5, 1000 + last_i)
        denied = Flow(src_last, A_V4, 6, 5, 1000 + last_i + 1)
        sets_b = prog.sets["s:b:4"].members or frozenset()
        for flow in (first, last, denied):
            want = expected(prog, flow, ir.INGRESS)
            assert run_flow(ld, "ns/a", ir.INGRESS, flow) == want, flow
        assert not any(first.src_ip in n for n in sets_b)  # so both are denied by the end of tier


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(prog=programs(), batch=st.lists(flows(ir.INGRESS), min_size=5, max_size=25))
def test_tiny_chunks_keep_semantics(prog: ir.Program, batch: list[Flow]) -> None:
    """A budget of ~2 rules per chunk: every Pass and every tier end crosses tail calls."""
    with loaded(EbpfTarget(chunk_budget=30).render(prog)) as ld:
        errors = []
        for flow in batch:
            got = run_flow(ld, "ns/a", ir.INGRESS, flow)
            if got and flow.protocol != 6:
                ct_flush(ld)
            if got != expected(prog, flow, ir.INGRESS):
                errors.append(f"{flow}: kernel {got}")
        assert not errors, "\n".join(errors)
