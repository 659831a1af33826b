"""Unit tests of the passes on hand-built IR, plus every pass module's doctests.

The property suite (``tests/property/test_pass_semantics.py``) proves the passes keep semantics
on random clusters; these tests pin down what each pass is *for*: that it does fire where it
should, and that it stays away from the cases that look alike but are not.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import ipaddress
import pkgutil

import pytest

import compiler.ir.passes as passes_pkg
from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.model import FelixConfig
from compiler.ir.nodes import (
    AddrSet,
    Match,
    Policy,
    PortMatch,
    Profile,
    Program,
    Rule,
    Side,
    make_program,
)
from compiler.ir.passes import (
    DEFAULT_PASSES,
    aggregate_cidrs,
    dedupe_sets,
    fold_empty,
    shadowed_rules,
)
from compiler.pipeline import PassContext

TCP, UDP, ICMP = 6, 17, 1


def net(*texts: str) -> tuple:
    return tuple(ipaddress.ip_network(t) for t in texts)


def ip_set(sid: str, *members: str, family: int | None = 4) -> AddrSet:
    return AddrSet(sid, f'id == "{sid}"', family=family, members=frozenset(net(*members)))


def port_set(sid: str, *triples: tuple[str, int, int], family: int | None = 4) -> AddrSet:
    members = frozenset((ipaddress.ip_network(a), p, n) for a, p, n in triples)
    return AddrSet(
        sid, "all()", port_name="http", port_protocol=TCP, family=family, port_members=members
    )


def rule(action: str, index: int, line: int | None = None, **match: object) -> Rule:
    match.setdefault("ip_version", 4)
    return Rule(action, Match(**match), index, Span("p.yaml", line or 10 + index, 5))  # type: ignore[arg-type]


def program(
    *ingress: Rule, sets: tuple[AddrSet, ...] = (), profiles: tuple[Profile, ...] = ()
) -> Program:
    pol = Policy(
        "np/a/p", "p", "a", "NetworkPolicy", "default", None, "all()", ("ingress",), ingress=ingress,
        origin=Span("p.yaml", 1, 1),
    )  # fmt: skip
    return make_program(
        node=None, tiers=(), policies=(pol,), profiles=profiles, sets=sets, endpoints=(),
        selectables=(), felix=FelixConfig(), host_ips={},
    )  # fmt: skip


def kept(prog: Program) -> list[tuple[int, int | None]]:
    return [(r.index, r.match.ip_version) for r in prog.policies["np/a/p"].ingress]


def run(p, prog: Program) -> tuple[Program, DiagnosticSink]:  # noqa: ANN001
    sink = DiagnosticSink()
    return p(prog, PassContext(sink)), sink


# -- doctests and the pipeline ------------------------------------------------------------------


def _pass_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(passes_pkg.__path__))


@pytest.mark.parametrize("name", _pass_modules())
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"compiler.ir.passes.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if not name.startswith("_"):
        assert result.attempted > 0, f"pass {name} has no doctest"


@pytest.mark.parametrize(
    "module", ["compiler.ir.dump", "compiler.ir.explain", "compiler.ir.matrix"]
)
def test_other_doctests(module: str) -> None:
    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_pipeline_order() -> None:
    names = [p.__module__.rsplit(".", 1)[-1] for p in DEFAULT_PASSES]
    assert names == [
        "resolve_sets",
        "split_families",
        "aggregate_cidrs",
        "dedupe_sets",
        "fold_empty",
        "shadowed_rules",
    ]


# -- aggregate_cidrs ----------------------------------------------------------------------------


def test_aggregate_sets_and_inline_nets() -> None:
    s = ip_set("s:a", "10.0.0.0/25", "10.0.0.128/25", "10.0.0.7/32", "10.1.0.0/16")
    r = rule(
        "allow", 0,
        src=Side(nets=net("10.0.0.0/24", "10.0.1.0/24", "10.0.0.5/32"), not_nets=net("10.2.0.0/17", "10.2.128.0/17")),
        dst=Side(nets=()),
    )  # fmt: skip
    out, _ = run(aggregate_cidrs.run, program(r, sets=(s,)))
    assert sorted(map(str, out.sets["s:a"].members)) == ["10.0.0.0/24", "10.1.0.0/16"]
    m = out.policies["np/a/p"].ingress[0].match
    assert m.src.nets == net("10.0.0.0/23")
    assert m.src.not_nets == net("10.2.0.0/16")
    assert m.dst.nets == ()  # "matches nothing" stays that way
    assert out.policies["np/a/p"].ingress[0].match.dst.ports is None


def test_aggregate_keeps_families_apart() -> None:
    assert aggregate_cidrs.collapse(net("::/1", "0.0.0.0/1", "128.0.0.0/1", "8000::/1")) == net(
        "0.0.0.0/0", "::/0"
    )


# -- dedupe_sets --------------------------------------------------------------------------------


def test_dedupe_smallest_id_wins_everywhere() -> None:
    sets = (
        ip_set("s:b", "10.0.0.1/32"),
        ip_set("s:a", "10.0.0.1/32"),
        ip_set("s:z", "10.0.0.2/32"),
        port_set("n:y", ("10.0.0.1/32", TCP, 80)),
        port_set("n:x", ("10.0.0.1/32", TCP, 80)),
    )
    r = rule(
        "allow", 0,
        src=Side(sets=("s:b",), not_sets=("s:z",)),
        dst=Side(sets=("s:a", "s:b"), ports=PortMatch((), ("n:y",)), not_ports=PortMatch((), ("n:x", "n:y"))),
    )  # fmt: skip
    out, _ = run(dedupe_sets.run, program(r, sets=sets))
    assert sorted(out.sets) == ["n:x", "s:a", "s:z"]
    m = out.policies["np/a/p"].ingress[0].match
    assert m.src.sets == ("s:a",) and m.src.not_sets == ("s:z",)
    assert m.dst.sets == ("s:a",)
    assert m.dst.ports == PortMatch((), ("n:x",)) and m.dst.not_ports == PortMatch((), ("n:x",))


def test_dedupe_never_merges_across_family_kind_or_unresolved() -> None:
    sets = (
        ip_set("s:4", family=4),
        ip_set("s:6", family=6),
        port_set("n:4", family=4),
        AddrSet("s:u1", "a == 'b'"),
        AddrSet("s:u2", "a == 'b'"),
    )
    r = rule(
        "allow", 0, src=Side(sets=("s:4", "s:6", "s:u1", "s:u2"), ports=PortMatch((), ("n:4",)))
    )
    out, _ = run(dedupe_sets.run, program(r, sets=sets))
    assert sorted(out.sets) == ["n:4", "s:4", "s:6", "s:u1", "s:u2"]


# -- fold_empty ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "match",
    [
        {"src": Side(sets=("s:empty",))},
        {"dst": Side(ports=PortMatch((), ("n:empty",)))},
        {"dst": Side(nets=())},
        {"src": Side(nets=net("10.0.0.0/24"), not_nets=net("10.0.0.0/16"))},
        {"src": Side(sets=("s:full",), not_nets=net("10.0.0.0/8"))},
        {"protocol": TCP, "not_protocol": TCP},
        {"protocol": TCP, "icmp_type": 8},
        {"protocol": ICMP, "icmp_type": 8, "not_icmp_type": 8},
        {
            "protocol": TCP,
            "dst": Side(ports=PortMatch(((80, 80),)), not_ports=PortMatch(((1, 100),))),
        },
        {"protocol": UDP, "dst": Side(ports=PortMatch((), ("n:tcp80",)))},
    ],
)
def test_fold_drops_rules_that_never_match(match: dict) -> None:
    sets = (
        ip_set("s:empty"),
        ip_set("s:full", "10.1.0.0/16"),
        port_set("n:empty"),
        port_set("n:tcp80", ("10.0.0.1/32", TCP, 80)),
    )
    prog = program(rule("log", 0, **match), rule("allow", 1), sets=sets)
    out, sink = run(fold_empty.run, prog)
    assert kept(out) == [(1, 4)]
    assert out.dropped_rules == (("np/a/p", 0, "ingress"),)
    assert not sink.diagnostics


@pytest.mark.parametrize(
    "match",
    [
        {"src": Side(sets=("s:full",))},
        {"dst": Side(ports=PortMatch(((80, 80),), ("n:empty",)))},
        {"src": Side(nets=net("10.0.0.0/16"), not_nets=net("10.0.0.0/24"))},
        {"src": Side(sets=("s:unresolved",))},
        {"protocol": ICMP, "icmp_type": 8, "icmp_code": 0, "not_icmp_type": 8, "not_icmp_code": 1},
        {"protocol": TCP, "dst": Side(ports=PortMatch((), ("n:tcp80",)))},
    ],
)
def test_fold_keeps_rules_that_can_match(match: dict) -> None:
    sets = (
        ip_set("s:full", "10.1.0.0/16"),
        port_set("n:empty"),
        port_set("n:tcp80", ("10.0.0.1/32", TCP, 80)),
        AddrSet("s:unresolved", "a == 'b'"),
    )
    out, _ = run(fold_empty.run, program(rule("allow", 0, **match), sets=sets))
    assert kept(out) == [(0, 4)]
    assert out.dropped_rules == ()


def test_fold_records_a_rule_only_when_every_copy_is_gone() -> None:
    v4 = rule("allow", 0, src=Side(sets=("s:e4",)))
    v6 = rule("allow", 0, ip_version=6, src=Side(sets=("s:f6",)))
    sets = (ip_set("s:e4"), ip_set("s:f6", "fd00::/64", family=6))
    out, _ = run(fold_empty.run, program(v4, v6, sets=sets))
    assert kept(out) == [(0, 6)]
    assert out.dropped_rules == ()
    assert sorted(out.sets) == ["s:f6"]  # the set only the dropped copy used is gone


# -- shadowed_rules -----------------------------------------------------------------------------


def _shadow(*rules: Rule, sets: tuple[AddrSet, ...] = ()) -> tuple[list, DiagnosticSink, Program]:
    out, sink = run(shadowed_rules.run, program(*rules, sets=sets))
    return kept(out), sink, out


SETS = (
    ip_set("s:wide", "10.0.0.0/24"),
    ip_set("s:narrow", "10.0.0.1/32", "10.0.0.2/32"),
    ip_set("s:other", "10.9.0.1/32"),
    port_set("n:web", ("10.0.0.1/32", TCP, 80), ("10.0.0.2/32", TCP, 8080)),
)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({}, {"protocol": TCP}),
        ({"protocol": TCP}, {"protocol": TCP, "dst": Side(ports=PortMatch(((80, 80),)))}),
        (
            {"dst": Side(ports=PortMatch(((1, 1000),)))},
            {"dst": Side(ports=PortMatch(((80, 90), (443, 443))))},
        ),
        ({"src": Side(sets=("s:wide",))}, {"src": Side(sets=("s:narrow",))}),
        ({"src": Side(nets=net("10.0.0.0/16"))}, {"src": Side(sets=("s:narrow",))}),
        ({"src": Side(sets=("s:wide",))}, {"src": Side(nets=net("10.0.0.0/25", "10.0.0.128/25"))}),
        ({"src": Side(not_sets=("s:other",))}, {"src": Side(sets=("s:narrow",))}),
        ({"src": Side(not_nets=net("10.9.0.0/16"))}, {"src": Side(nets=net("10.0.0.0/16"))}),
        (
            {"src": Side(not_sets=("s:other",))},
            {"src": Side(not_sets=("s:other",), nets=net("10.0.0.0/8"))},
        ),
        ({"not_protocol": UDP}, {"protocol": TCP}),
        ({"protocol": ICMP, "icmp_type": 8}, {"protocol": ICMP, "icmp_type": 8, "icmp_code": 0}),
        ({"not_icmp_type": 8}, {"protocol": TCP}),
        ({"not_icmp_type": 8}, {"protocol": ICMP, "icmp_type": 0}),
        (
            {"dst": Side(ports=PortMatch(((80, 80), (8080, 8080))))},
            {"protocol": TCP, "dst": Side(ports=PortMatch((), ("n:web",)))},
        ),
        (
            {"dst": Side(ports=PortMatch((), ("n:web",)))},
            {"dst": Side(ports=PortMatch((), ("n:web",)))},
        ),
        (
            {"dst": Side(not_ports=PortMatch(((22, 22),)))},
            {"dst": Side(ports=PortMatch(((80, 80),)))},
        ),
        ({"ip_version": 4}, {"src": Side(nets=net("10.0.0.0/8"))}),
    ],
)
def test_shadowed(earlier: dict, later: dict) -> None:
    result, sink, out = _shadow(rule("deny", 0, **earlier), rule("allow", 1, **later), sets=SETS)
    assert result == [(0, 4)]
    assert out.dropped_rules == (("np/a/p", 1, "ingress"),)
    [diag] = sink.diagnostics
    assert diag.code == "W101" and diag.span == Span("p.yaml", 11, 5)
    assert "p.yaml:10:5" in "\n".join(diag.notes) and "p.yaml:11:5" in "\n".join(diag.notes)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"protocol": TCP}, {}),
        ({"dst": Side(ports=PortMatch(((80, 80),)))}, {"dst": Side(ports=PortMatch(((80, 81),)))}),
        ({"dst": Side(ports=PortMatch(((80, 80),)))}, {}),  # ICMP has no port
        ({"src": Side(sets=("s:narrow",))}, {"src": Side(sets=("s:wide",))}),
        ({"src": Side(nets=net("10.0.0.0/25"))}, {"src": Side(nets=net("10.0.0.0/24"))}),
        ({"src": Side(not_nets=net("10.0.0.0/30"))}, {"src": Side(sets=("s:narrow",))}),
        ({"src": Side(sets=("s:unresolved",))}, {"src": Side(sets=("s:narrow",))}),
        ({"protocol": ICMP, "icmp_type": 8, "icmp_code": 0}, {"protocol": ICMP, "icmp_type": 8}),
        ({"not_icmp_type": 8, "not_icmp_code": 0}, {"protocol": ICMP, "icmp_type": 8}),
        (
            {"dst": Side(ports=PortMatch(((80, 80),)))},
            {"protocol": TCP, "dst": Side(ports=PortMatch((), ("n:web",)))},
        ),
        (
            {"dst": Side(not_ports=PortMatch((), ("n:web",)))},
            {"protocol": TCP, "dst": Side(nets=net("10.0.0.1/32"), ports=PortMatch(((80, 80),)))},
        ),
        ({"ip_version": 6}, {}),
    ],
)
def test_not_shadowed(earlier: dict, later: dict) -> None:
    sets = SETS + (AddrSet("s:unresolved", "a == 'b'"),)
    result, sink, _ = _shadow(rule("deny", 0, **earlier), rule("allow", 1, **later), sets=sets)
    assert [i for i, _ in result] == [0, 1]
    assert not sink.diagnostics


def test_log_never_shadows_but_can_be_shadowed() -> None:
    result, _, _ = _shadow(rule("log", 0), rule("deny", 1))
    assert result == [(0, 4), (1, 4)]
    result, _, _ = _shadow(rule("pass", 0), rule("log", 1), rule("allow", 2))
    assert result == [(0, 4)]


def test_one_warning_for_both_family_copies_and_a_scope_when_only_one_is_shadowed() -> None:
    both = [
        rule("allow", 0),
        rule("allow", 0, ip_version=6),
        rule("deny", 1),
        rule("deny", 1, ip_version=6),
    ]
    _, sink, out = _shadow(*both)
    assert len(sink.diagnostics) == 1 and "for IPv" not in sink.diagnostics[0].message
    assert out.dropped_rules == (("np/a/p", 1, "ingress"),)

    only4 = [
        rule("allow", 0, protocol=TCP),
        rule("deny", 1, protocol=TCP),
        rule("deny", 1, ip_version=6, protocol=TCP),
    ]
    result, sink, out = _shadow(*only4)
    assert result == [(0, 4), (1, 6)]
    assert "can never match for IPv4" in sink.diagnostics[0].message
    assert out.dropped_rules == ()


def test_profiles_are_checked_too() -> None:
    prof = Profile("kns.a", ingress=(rule("allow", 0), rule("deny", 1)))
    out, sink = run(shadowed_rules.run, program(profiles=(prof,)))
    assert [r.index for r in out.profiles["kns.a"].ingress] == [0]
    assert out.dropped_rules == (("kns.a", 1, "ingress"),)
    assert "profile kns.a" in sink.diagnostics[0].message


def test_passes_return_new_programs_and_leave_input_alone() -> None:
    prog = program(
        rule("allow", 0),
        rule("deny", 1),
        sets=(ip_set("s:b", "10.0.0.1/32"), ip_set("s:a", "10.0.0.1/32")),
    )
    before = dataclasses.astuple(prog.policies["np/a/p"])
    for p in DEFAULT_PASSES:
        p(prog, PassContext(DiagnosticSink()))
    assert dataclasses.astuple(prog.policies["np/a/p"]) == before
    assert sorted(prog.sets) == ["s:a", "s:b"]
