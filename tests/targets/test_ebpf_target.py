"""The eBPF target without a kernel: lowering, rendering, content addressing, determinism,
data/code separation, escaping of YAML strings, and check() diagnostics."""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile

import pytest

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.targets import get_target
from compiler.targets.ebpf import EbpfTarget, build, lower, render
from compiler.tools import clang
from tests.kernel.test_ebpf_support import (
    MANY_NETS,
    SETS,
    N,
    one_endpoint_program,
    policy,
    rule,
    workload,
)

needs_clang = pytest.mark.skipif(not clang.available(), reason="clang is not installed")


def _prog(**kw: object) -> ir.Program:
    t = policy("gnp/p", "t0", ingress=[
        rule(ir.ALLOW, 0, ip_version=4, protocol=6, src=ir.Side(sets=("s:b:4",)),
             dst=ir.Side(ports=ir.PortMatch(((80, 80), (1000, 2000)), ("n:http:4",)))),
        rule(ir.PASS, 1, ip_version=6, src=ir.Side(nets=(N("fd00::/8"),))),
        rule(ir.LOG, 2, ip_version=4, protocol=1, icmp_type=8, icmp_code=0),
    ])  # fmt: skip
    return one_endpoint_program(
        [("t0", ir.DENY, [t])], [ir.Profile("kns.x", (rule(ir.ALLOW, 0, ip_version=4),))], **kw
    )  # type: ignore[arg-type]


def _c_of(program: ir.Program, direction: str = ir.INGRESS, budget: int = 8000) -> str:
    ep = program.endpoints[0]
    low = lower.lower(program, ep, direction, budget)
    return render.render_program(render.ProgramSource("t", low.description, 1, 0, 0, low.chunks))


def test_registry_finds_the_target() -> None:
    t = get_target("ebpf")
    assert isinstance(t, EbpfTarget) and t.NAME == "ebpf"
    assert "set-members-as-data" in t.CAPABILITIES and t.LIMITS["max_chunks"] == 32


def test_generated_code_is_only_macros_with_numbers_and_labels() -> None:
    body = _c_of(_prog()).split("int tortie_c0(struct __sk_buff *skb)\n{", 1)[1]
    for line in body.strip().splitlines():
        line = line.strip()
        if line.startswith("/*") or line in ("}", "T_PROLOGUE();", "T_EXITS();"):
            continue
        if re.fullmatch(r"#line [0-9]+", line):  # render.anchor_lines
            continue
        assert re.fullmatch(r"T_[A-Z0-9_]+\(([A-Za-z0-9_]+(, )?)*\);", line), line


def test_yaml_strings_only_reach_comments_sanitised() -> None:
    evil = "gnp/x*/ int evil; /*\n#include <x>"
    t = policy(evil, "t*/0", ingress=[rule(ir.ALLOW, 0, ip_version=4)])
    prog = one_endpoint_program([("t*/0", ir.DENY, [t])])
    c = _c_of(prog)
    assert "evil;" not in c.replace("evil_", "") and "#include <x>" not in c
    assert c.count("*/") == c.count("/*")  # no comment closed early
    assert "gnp/x_/ int evil_ /___include _x_" in c


def test_pass_crossing_chunks_uses_landing_pads() -> None:
    rules = [rule(ir.LOG, i, ip_version=4, protocol=17) for i in range(6)]
    rules.append(rule(ir.PASS, 6, ip_version=4))
    t0 = policy("gnp/a", "t0", ingress=[rule(ir.PASS, 0, ip_version=4), *rules])
    t1 = policy("gnp/b", "t1", ingress=[rule(ir.ALLOW, 0, ip_version=4)])
    prog = one_endpoint_program([("t0", ir.DENY, [t0]), ("t1", ir.DENY, [t1])])
    low = lower.lower(prog, prog.endpoints[0], ir.INGRESS, 20)
    assert len(low.chunks) > 2
    ops = [(c.index, op.macro, op.args) for c in low.chunks for op in c.ops]
    jumps = [(i, a) for i, m, a in ops if m == "T_JUMP" and a[0] != "0"]
    assert jumps and all(i < int(a[1]) for i, a in jumps)  # always forward
    pads = {(i, a[0]) for i, m, a in ops if m == "T_RESUME"}
    assert {(int(a[1]), a[0]) for _, a in jumps} <= pads


def test_long_cidr_lists_become_a_synthetic_set() -> None:
    t = policy(
        "gnp/n",
        "t0",
        ingress=[rule(ir.ALLOW, 0, ip_version=4, src=ir.Side(nets=tuple(MANY_NETS[4])))],
    )
    prog = one_endpoint_program([("t0", ir.DENY, [t])])
    low = lower.lower(prog, prog.endpoints[0], ir.INGRESS, 8000)
    (sid,) = low.net_sets
    assert sid.startswith("tortie:nets:") and low.net_sets[sid] == (
        4,
        tuple(sorted(MANY_NETS[4], key=lambda n: (int(n.network_address), n.prefixlen))),
    )
    assert not any(op.macro == "T_NET4_IN" for c in low.chunks for op in c.ops)


def test_check_reports_what_the_target_cannot_do() -> None:
    def hep(name: str, iface: str) -> ir.Endpoint:
        ep = workload(f"x/{name}", iface, ["192.168.1.1"], {})
        return dataclasses.replace(ep, id=name, kind="HostEndpoint", namespace=None)

    prog = _prog(extra_endpoints=[hep("h1", "*"), hep("h2", ""), hep("h3", "eth0")])
    prog = ir.replace_program(
        prog, felix=FelixConfig(deny_action="Reject", default_endpoint_to_host_action="Return")
    )
    sink = DiagnosticSink()
    EbpfTarget().check(prog, sink)
    assert sorted(d.code for d in sink.diagnostics) == ["E830", "E832", "W831"]


def test_check_limits_the_tail_call_chain() -> None:
    rules = [
        rule(ir.ALLOW, i, ip_version=4, protocol=6, dst=ir.Side(ports=ir.PortMatch(((i, i),))))
        for i in range(400)
    ]
    prog = one_endpoint_program([("t0", ir.DENY, [policy("gnp/big", "t0", ingress=rules)])])
    sink = DiagnosticSink()
    EbpfTarget(chunk_budget=50).check(prog, sink)
    assert [d.code for d in sink.diagnostics] == ["E834"]
    sink = DiagnosticSink()
    EbpfTarget().check(prog, sink)
    assert not sink.diagnostics


@needs_clang
def test_render_is_deterministic_content_addressed_and_members_are_data() -> None:
    base = _prog()
    a = base.endpoints[0]
    twin = dataclasses.replace(a, id="ns/b", name="b", interface="calibbbbbbbbbbb")
    prog = ir.replace_program(base, endpoints=(*base.endpoints, twin))
    first = EbpfTarget().render(prog)
    again = EbpfTarget().render(prog)
    assert first.files == again.files
    doc = json.loads(first.files["maps.json"])
    assert len(doc["objects"]) == 2  # two endpoints x two directions, one object per direction
    assert {e["tc_egress"] for e in doc["endpoints"]} == {next(iter(doc["endpoints"]))["tc_egress"]}
    assert first.summary["objects"] == 2 and first.summary["endpoints"] == 2
    # New set members: only maps.json changes.
    sets = dict(prog.sets)
    sets["s:b:4"] = dataclasses.replace(sets["s:b:4"], members=frozenset({N("10.99.0.0/16")}))
    changed = EbpfTarget().render(ir.replace_program(prog, sets=sets))
    diff = sorted(k for k in first.files if first.files[k] != changed.files.get(k))
    assert diff == ["maps.json"]
    members = {s["id"]: s["members"] for s in json.loads(changed.files["maps.json"])["sets"]}
    assert members["s:b:4"] == ["10.99.0.0/16"]
    assert not any(
        ("/tmp" in v.decode("latin-1")) for k, v in first.files.items() if k.endswith(".o")
    )


@needs_clang
def test_build_errors_carry_clang_stderr() -> None:
    with pytest.raises(build.BuildError) as e:
        build.build_all({"p-bad": "int x = ;\n"}, render.headers())
    assert "error" in e.value.stderr and e.value.name == "p-bad"


def test_sets_unused_by_local_code_are_not_emitted() -> None:
    assert {s.id for s in SETS} >= {"s:b:4", "n:http:4"}
    low = lower.lower(_prog(), _prog().endpoints[0], ir.INGRESS, 8000)
    assert low.set_ids == {"s:b:4", "n:http:4"}


_RENDER_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.targets.test_ebpf_target import _prog
from compiler.targets.ebpf import EbpfTarget
art = EbpfTarget().render(_prog())
for name, data in sorted(art.files.items()):
    print(name, hashlib.sha256(data).hexdigest())
"""


@needs_clang
def test_render_is_byte_identical_across_processes_and_hash_seeds() -> None:
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    here = "".join(
        f"{name} {hashlib.sha256(data).hexdigest()}\n"
        for name, data in sorted(EbpfTarget().render(_prog()).files.items())
    )
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _RENDER_SCRIPT.format(root=root)],
            env=env, capture_output=True, text=True, check=True, cwd="/",
        )  # fmt: skip
        assert out.stdout == here


def test_anchor_lines_give_ops_their_rule_line_and_keep_every_other_line() -> None:
    """After render.anchor_lines, the preprocessor's line numbers (what clang puts in BTF line
    info) are the file's own for every line but the ops of a rule, which get the line of the
    comment above them: a verifier log names a line of the source file, and its text."""
    text = _c_of(_prog(), budget=40)  # several chunks
    lines = text.split("\n")
    presumed, moved = 1, 0
    for physical, line in enumerate(lines, start=1):
        if line.startswith("#line "):
            presumed = int(line.split()[1])
            continue
        if presumed != physical:
            moved += 1
            assert line.startswith("\tT_"), line
            assert lines[presumed - 1].startswith("\t/* "), (physical, presumed)
            assert presumed < physical
        presumed += 1
    assert moved > 10


@needs_clang
@pytest.mark.skipif(not build.can_link(), reason="bpftool is not installed")
def test_linked_entry_builds_the_same_programs_as_the_whole_source() -> None:
    """With bpftool, an object is its policy part (-DTORTIE_LINKED_ENTRY) linked with the entry
    object of its kind, which is compiled once for all objects of that kind; without, the whole
    source. Both hold the same programs; the linked one calls tortie_prepare_linked."""
    from compiler.tools import bpftool

    art = EbpfTarget().render(_prog())
    objs = {k: v for k, v in art.files.items() if k.startswith("obj/p-")}
    entries = {k for k in art.files if k.startswith("src/e-")}
    assert objs and entries  # the entry sources are in the artifact too
    name = next(iter(objs))[len("obj/") : -len(".bpf.o")]
    src = art.files[f"src/{name}.bpf.c"].decode()
    whole = build.build_all({"p-whole": src}, render.headers())["p-whole"]
    kinds = {}
    for data, label in ((objs[f"obj/{name}.bpf.o"], "linked"), (whole, "whole")):
        with tempfile.NamedTemporaryFile(suffix=".o") as f:
            f.write(data)
            f.flush()
            funcs = {t["name"] for t in bpftool.btf_dump(f.name) if t.get("kind") == "FUNC"}
        kinds[label] = funcs
    assert {"tortie_main", "tortie_c0"} <= kinds["whole"]
    assert kinds["linked"] == kinds["whole"] | {"tortie_prepare_linked"}
