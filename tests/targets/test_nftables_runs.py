"""Run merging (compiler/targets/nftables/runs.py) without a kernel.

* Property: for random rule lists (mixed actions, Pass, Log, negations, selector sets, named
  ports, both families, overlapping CIDRs, ports with and without protocol) and random packets,
  the first matching item of ``split_runs`` — a run matching by membership in its boxes — has
  the same action as the first matching original rule, and every run's boxes are pairwise
  disjoint (the kernel's concatenated interval sets reject partial overlaps).
* Rendering: a run is one ``@set`` lookup, with the elements the boxes describe; runs break on
  the rules that cannot join them.
"""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir.nodes import ALLOW, DENY, LOG, PASS, Match, PortMatch, Rule, Side
from compiler.targets.nftables.consts import ConstSets
from compiler.targets.nftables.runs import Run, rule_boxes, run_match, split_runs

NETS4 = ("10.0.0.0/16", "10.0.0.0/24", "10.0.0.4/30", "10.0.0.5/32", "10.0.1.0/24", "10.0.0.6/32")
NETS6 = ("fd00::/64", "fd00::4/126", "fd00::5/128", "fd01::/32")
ADDRS4 = ("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.1.9", "10.0.3.1", "192.168.0.1")
ADDRS6 = ("fd00::5", "fd00::6", "fd01::1", "fd02::1")
PORTS = ((80, 80), (53, 53), (8000, 8100), (0, 79), (443, 443))


def n(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@st.composite
def sides(draw: st.DrawFn, family: int, protocol: int | None, dst: bool, plain: bool) -> Side:
    pool = NETS4 if family == 4 else NETS6
    nets = None
    if draw(st.booleans()):
        nets = tuple(n(x) for x in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3)))
    not_nets: tuple = ()
    if not plain and draw(st.integers(0, 6)) == 0:
        not_nets = (n(draw(st.sampled_from(pool))),)
    sets: tuple[str, ...] = ()
    if not plain and draw(st.integers(0, 8)) == 0:
        sets = (f"s:x:{family}",)
    ports = None
    if dst and draw(st.integers(0, 2)) > 0 and (protocol is not None or draw(st.booleans())):
        ranges = tuple(draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3)))
        named = (f"n:p:{family}",) if not plain and draw(st.integers(0, 8)) == 0 else ()
        ports = PortMatch(ranges, named)
    not_ports = None
    if not plain and dst and protocol is not None and draw(st.integers(0, 8)) == 0:
        not_ports = PortMatch((draw(st.sampled_from(PORTS)),))
    return Side(nets=nets, not_nets=not_nets, sets=sets, ports=ports, not_ports=not_ports)


@st.composite
def rules(draw: st.DrawFn, index: int, mostly_plain: bool = False) -> Rule:
    """A random rule; with ``mostly_plain``, usually one that can join a run."""
    plain = mostly_plain and draw(st.integers(0, 5)) > 0
    actions = (ALLOW, ALLOW, DENY, PASS) if plain else (ALLOW, ALLOW, DENY, DENY, PASS, LOG)
    action = draw(st.sampled_from(actions))
    family = draw(st.sampled_from((4, 4, 6)))
    protocol = draw(st.sampled_from((None, 6, 17, 6)))
    src = draw(sides(family, protocol, False, plain))
    dst = draw(sides(family, protocol, True, plain))
    version = family if draw(st.booleans()) or (src.nets is None and dst.nets is None) else None
    if version is None and src.nets is None and dst.nets is None:
        version = family
    not_protocol = None
    if not plain and protocol is None and draw(st.integers(0, 8)) == 0:
        not_protocol = 17
    m = Match(ip_version=version, protocol=protocol, not_protocol=not_protocol, src=src, dst=dst)
    return Rule(action, m, index)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(1, 14))
    plain = draw(st.booleans())
    out: list[Rule] = []
    for i in range(count):
        if out and draw(st.integers(0, 2)) == 0:
            # Same shape as an earlier rule with other values: the usual "list of similar rules".
            base = draw(st.sampled_from(out))
            action = draw(st.sampled_from((base.action, base.action, ALLOW, DENY, PASS)))
            match = draw(rules(i, plain)).match if draw(st.booleans()) else base.match
            out.append(Rule(action, match, i))
        else:
            out.append(draw(rules(i, plain)))
    return out


def _in(nets, addr) -> bool:
    return any(addr in x for x in nets if x.version == addr.version)


def matches(rule: Rule, pkt: tuple, members: dict) -> bool:
    """The evaluator's reading of one IR match, for the fields these tests generate."""
    family, src, dst, proto, dport = pkt
    m = rule.match
    version = m.ip_version
    if version is None:
        for side in (m.src, m.dst):
            for x in (*(side.nets or ()), *side.not_nets):
                version = x.version
    if version is not None and version != family:
        return False
    if m.protocol is not None and m.protocol != proto:
        return False
    if m.not_protocol is not None and m.not_protocol == proto:
        return False
    for side, addr, port in ((m.src, src, None), (m.dst, dst, dport)):
        if side.nets is not None and not _in(side.nets, addr):
            return False
        if _in(side.not_nets, addr):
            return False
        if any(addr not in members[sid] for sid in side.sets):
            return False
        if side.ports is not None:
            if port is None:
                return False
            hit = any(lo <= port <= hi for lo, hi in side.ports.ranges)
            hit = hit or any((addr, proto, port) in members[sid] for sid in side.ports.named_sets)
            if not hit:
                return False
        not_ports = side.not_ports
        if not_ports is not None and (
            port is None or any(lo <= port <= hi for lo, hi in not_ports.ranges)
        ):
            return False
    return True


def run_matches(run: Run, pkt: tuple, boxes: dict) -> bool:
    family, src, dst, proto, dport = pkt
    if run.family is not None and run.family != family:
        return False
    if run.has_port and dport is None:
        return False
    point = (int(src), int(dst), proto, dport if dport is not None else 0)
    if run.family is None:
        point = (0, 0, proto, point[3])
    if id(run) not in boxes:
        boxes[id(run)] = run.boxes()
    return any(
        all(lo <= v <= hi for v, (lo, hi) in zip(point, box, strict=True)) for box in boxes[id(run)]
    )


def first_action(items, pkt, members, boxes) -> str | None:
    for item in items:
        if isinstance(item, Run):
            if run_matches(item, pkt, boxes):
                return item.action
        elif item.action != LOG and matches(item, pkt, members):
            return item.action
    return None


def first_terminal(rules, pkt, members) -> str | None:
    for r in rules:
        if r.action != LOG and matches(r, pkt, members):
            return r.action
    return None


def packets() -> list[tuple]:
    out = []
    for family, addrs in ((4, ADDRS4), (6, ADDRS6)):
        ips = [ipaddress.ip_address(a) for a in addrs]
        for src, dst in itertools.product(ips, ips[:3]):
            for proto, dport in ((6, 80), (6, 53), (17, 53), (17, 8050), (6, 79), (1, None)):
                out.append((family, src, dst, proto, dport))
    return out


PACKETS = packets()
MEMBERS = {
    "s:x:4": {ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("10.0.3.1")},
    "s:x:6": {ipaddress.ip_address("fd00::6")},
    "n:p:4": {(ipaddress.ip_address("10.0.0.6"), 6, 53)},
    "n:p:6": set(),
}


def _disjoint(a, b) -> bool:
    return any(x[1] < y[0] or y[1] < x[0] for x, y in zip(a, b, strict=True))


@settings(max_examples=300, deadline=None)
@given(rules=rule_lists())
def test_runs_keep_first_match_and_are_disjoint(rules: list[Rule]) -> None:
    items = split_runs(rules, {"s:x:4": 4, "s:x:6": 6, "n:p:4": 4, "n:p:6": 6})
    flat = [r for item in items for r in (item.rules if isinstance(item, Run) else [item])]
    assert flat == rules  # order kept, nothing lost
    for item in items:
        if isinstance(item, Run):
            assert len(item.rules) >= 2
            assert all(r.action == item.action and r.action != LOG for r in item.rules)
            boxes = item.boxes()
            for a, b in itertools.combinations(boxes, 2):
                assert _disjoint(a, b), (a, b)
    cache: dict = {}
    for pkt in PACKETS:
        assert first_action(items, pkt, MEMBERS, cache) == first_terminal(rules, pkt, MEMBERS), pkt


def _rule(action: str, *, src: str | None = None, proto: int | None = None, ports=None) -> Rule:
    side = Side(nets=(n(src),)) if src else Side()
    dst = Side(ports=PortMatch(tuple(ports))) if ports else Side()
    return Rule(action, Match(ip_version=4, protocol=proto, src=side, dst=dst), 0)


def test_run_renders_one_lookup() -> None:
    rules = [_rule(ALLOW, src=f"10.1.0.{i}/32", proto=6, ports=[(80, 80)]) for i in range(1, 5)]
    rules.append(_rule(ALLOW, src="10.2.0.0/16", proto=17, ports=[(53, 53), (5353, 5353)]))
    (run,) = split_runs(rules, {})
    assert isinstance(run, Run)
    consts = ConstSets()
    text = run_match(run, consts)
    (decl,) = consts.sorted()
    assert text == f"meta nfproto ipv4 ip saddr . meta l4proto . th dport @{decl.name}"
    assert decl.type == "ipv4_addr . inet_proto . inet_service"
    assert decl.elements == (
        "10.1.0.1-10.1.0.4 . tcp . 80",
        "10.2.0.0/16 . udp . 53",
        "10.2.0.0/16 . udp . 5353",
    )


def test_runs_break_on_other_actions_log_and_negations() -> None:
    a = [_rule(ALLOW, src=f"10.1.0.{i}/32") for i in range(3)]
    d = [_rule(DENY, src=f"10.1.1.{i}/32") for i in range(2)]
    log = _rule(LOG, src="10.1.2.0/24")
    neg = Rule(ALLOW, Match(ip_version=4, src=Side(not_nets=(n("10.9.0.0/16"),))), 0)
    items = split_runs([*a, *d, log, a[0], neg, *a], {})
    kinds = [type(i).__name__ if isinstance(i, Run) else i.action for i in items]
    assert kinds == ["Run", "Run", LOG, ALLOW, ALLOW, "Run"]
    assert [i.action for i in items if isinstance(i, Run)] == [ALLOW, DENY, ALLOW]


def test_partial_overlap_in_two_dimensions_splits_the_run() -> None:
    # Boxes that overlap without one dimension being equal cannot share a pipapo set.
    r1 = _rule(ALLOW, src="10.0.0.0/24", proto=6, ports=[(80, 90)])
    r2 = _rule(ALLOW, src="10.0.0.0/25", proto=6, ports=[(85, 100)])
    items = split_runs([r1, r2], {})
    assert items == [r1, r2]


def test_rule_without_protocol_but_ports_stays_plain() -> None:
    r = Rule(ALLOW, Match(ip_version=4, dst=Side(ports=PortMatch(((80, 80),)))), 0)
    assert rule_boxes(r, {}) is None


def test_policy_chunks_are_content_defined() -> None:
    """Two endpoints whose policy lists share a tail get the same chunks for it, whatever comes
    before; every chunk but the last ends at a boundary policy (or at CHUNK_MAX)."""
    from compiler.targets.nftables.chains import CHUNK_MAX, chunks

    tail = [f"gnp/p{i:03d}" for i in range(200)]
    a = chunks(["np/ns1/x", "np/ns1/y", *tail])
    b = chunks(["np/ns2/z", *tail])
    assert [p for c in a for p in c] == ["np/ns1/x", "np/ns1/y", *tail]
    assert a[1:] == b[1:] or a[2:] == b[2:]
    assert all(len(c) <= CHUNK_MAX for c in a)
    assert chunks(tail) == chunks(list(tail))  # deterministic


def _many_policies_program(tmp_path, count: int = 150):  # type: ignore[no-untyped-def]
    """The demo cluster plus ``count`` GlobalNetworkPolicies selecting every pod: one tier
    long enough for level-2 sequence chains."""
    import shutil
    from pathlib import Path

    from compiler.diagnostics import DiagnosticSink, SourceRegistry
    from compiler.frontend import load
    from compiler.pipeline import compile_program

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "examples" / "demo", tmp_path / "demo")
    docs = []
    for i in range(count):
        action = ("Allow", "Deny", "Pass")[i % 3] if i % 7 else "Log"
        docs.append(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
            f"metadata: {{name: many-{i:03d}}}\n"
            f"spec:\n  order: {1000 + i}\n  selector: all()\n  types: [Ingress]\n"
            f"  ingress:\n  - action: {action}\n    source: {{nets: [10.{i % 200}.0.0/16]}}\n"
        )
    (tmp_path / "demo" / "many.yaml").write_text("---\n".join(docs))
    sink = DiagnosticSink()
    res = load([str(tmp_path / "demo")], sink, SourceRegistry())
    return compile_program(res, "node1", sink)


def test_long_tiers_nest_sequences_with_one_rule_per_jump(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """150 policies in one tier: endpoint -> seq2 -> seq -> policy chains; the sequence
    chains hold one guarded jump per target and no ``return`` rules; every jump target is
    declared; rendering twice gives the same bytes."""
    import re

    from compiler.targets.nftables import render_program

    program = _many_policies_program(tmp_path)
    script = render_program(program).script
    assert script == render_program(program).script
    declared = set(re.findall(r"^\tchain (\S+) \{", script, re.MULTILINE))
    jumped = set(re.findall(r"jump ([^\s,}]+)", script))
    assert jumped <= declared, sorted(jumped - declared)[:5]
    chains = dict(re.findall(r"\n\tchain (\S+) \{\n(.*?)\n\t\}", script, re.S))
    seq2 = [n for n in chains if n.startswith("seq2-ingress-normal/")]
    seq1 = [n for n in chains if n.startswith("seq-ingress-normal/")]
    assert seq2 and seq1
    for name in seq1 + seq2:
        rules = [ln.strip() for ln in chains[name].split("\n")[1:] if ln.strip()]
        assert all(" jump " in f" {r}" for r in rules), (name, rules)
        assert not rules[0].startswith("meta mark")  # nothing set before the first jump
    # later jumps are skipped once an earlier target set the allow or pass bit
    guards = {"meta mark & 0x00010000 == 0x00000000", "meta mark & 0x00030000 == 0x00000000"}
    assert all(any(g in chains[n] for g in guards) for n in seq2)
    assert any(f"jump {s} " in chains[n] for n in chains if n.startswith("wl-") for s in seq2)
