"""The iptables target without a kernel: goldens, determinism, names and quoting (hostile
input), lowering (multiport splits, match blocks), check() diagnostics, set-only updates and the
applier's planning functions.

Goldens live in ``tests/targets/golden/iptables/<case>/``. On a mismatch the test writes
``<golden>.actual`` next to it and fails with a diff (accepting the change is a ``mv``);
``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens instead.
"""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import importlib
import ipaddress
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler.targets.iptables as iptables_pkg
from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.targets import get_target
from compiler.targets.iptables import IptablesTarget, render_program, render_set_update
from compiler.targets.iptables.apply import plan_ipset, plan_iptables, stale_sets
from compiler.targets.iptables.lower import Context, chunk_ranges, lower_rule
from compiler.targets.iptables.marks import Marks
from compiler.targets.iptables.names import (
    CHAIN_MAX,
    SET_MAX,
    is_own_set,
    limited,
    quoted,
    set_name,
    temp_set_name,
)
from tests.support.golden import assert_golden
from tests.support.hash_seed import cli_compile, python_stdout
from tests.targets.test_iptables_programs import (
    HOSTILE,
    PROGRAMS,
    compile_yaml,
    many_pods_program,
    workloads_program,
)
from tests.targets.test_iptables_sim import _tokens

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "iptables"
MARKS = Marks.from_mask(0xFFFF0000)
assert MARKS is not None


def demo_program(node: str = "node1") -> ir.Program:
    root = ROOT / "examples" / "demo"
    text = "\n---\n".join(p.read_text() for p in sorted(root.rglob("*.yaml")))
    return compile_yaml(text, node, "demo.yaml")


def members_changed() -> ir.Program:
    """The workloads program with one set's members changed (web left the db policy's set)."""
    prog = workloads_program()
    src = next(
        s for s in prog.sets.values() if s.family == 4 and 'app in {"api", "web"}' in s.selector
    )
    web = ipaddress.ip_network("10.65.0.1/32")
    new = dataclasses.replace(src, members=(src.members or frozenset()) - {web})
    return ir.replace_program(prog, sets={**prog.sets, src.id: new})


CASES: dict[str, Callable[[], ir.Program]] = {
    **PROGRAMS,
    "workloads-reject": lambda: workloads_program(deny_action="Reject"),
    "demo": demo_program,
}


# -- goldens and determinism --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_files(name: str) -> None:
    files = render_program(CASES[name]()).files
    for fname, data in sorted(files.items()):
        assert_golden(data.decode(), GOLDEN / f"{name}/{fname}")


def test_golden_set_update() -> None:
    update = render_set_update(workloads_program(), members_changed())
    assert update is not None
    assert_golden(update, GOLDEN / "workloads/ipset.update")


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_twice_identical(name: str) -> None:
    a = IptablesTarget().render(CASES[name]())
    b = IptablesTarget().render(CASES[name]())
    assert a.files == b.files and a.manifest_bytes() == b.manifest_bytes()


_SUBPROCESS = """
import hashlib, sys
from tests.targets.test_iptables_render import CASES
from compiler.targets.iptables import render_program
for name in sorted(CASES):
    for fname, data in sorted(render_program(CASES[name]()).files.items()):
        print(name, fname, hashlib.sha256(data).hexdigest())
"""


def test_deterministic_across_hash_seeds() -> None:
    outs = []
    for seed in ("0", "4242"):
        outs.append(python_stdout(_SUBPROCESS, seed=seed, timeout=300))
    here = "".join(
        f"{name} {fname} {hashlib.sha256(data).hexdigest()}\n"
        for name in sorted(CASES)
        for fname, data in sorted(render_program(CASES[name]()).files.items())
    )
    assert outs[0] == outs[1] == here


def test_cli_compile_writes_the_iptables_artifact(tmp_path: Path) -> None:
    """``tortie compile --target iptables`` goes through the registry to this target, and two
    processes with different hash seeds write byte-identical directories."""
    outputs = []
    args = ["-f", "examples/demo", "--node", "node1", "--target", "iptables"]
    for seed in ("1", "2"):
        outputs.append(cli_compile(args, tmp_path / f"out{seed}", seed=seed))
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {
        "manifest.json",
        "iptables.rules",
        "ip6tables.rules",
        "ipset.restore",
    }
    # The same rules as the in-process render (comments differ: they name the input files).
    strip = re.compile(r' -m comment --comment "[^"]*"|^#.*$', re.M)
    cli = strip.sub("", outputs[0]["iptables.rules"].decode())
    assert cli == strip.sub("", render_program(demo_program()).rules[4])


def test_registry_and_contract() -> None:
    target = get_target("iptables")
    assert isinstance(target, IptablesTarget)
    assert target.NAME == "iptables"
    assert target.LIMITS["chain_name"] == 28 and target.LIMITS["ipset_name"] == 31
    assert target.LIMITS["multiport"] == 15
    assert {"named-ports", "untracked", "pre-dnat", "reject", "log"} <= target.CAPABILITIES


# -- names and quoting --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["tt-pi-", "tt-pro-", "tt-fw-", "tt-thfw-"]))
def test_limited_names_fit_and_are_clean(suffix: str, prefix: str) -> None:
    name = limited(prefix, suffix)
    assert len(name) <= CHAIN_MAX
    assert re.fullmatch(r"[A-Za-z0-9_.:/=-]+", name)
    assert name.startswith(prefix)
    assert limited(prefix, suffix) == name


def test_limited_follows_calico() -> None:
    assert limited("tt-pi-", "np/a/b") == "tt-pi-np/a/b"
    exact = "x" * (CHAIN_MAX - len("tt-pi-"))
    assert limited("tt-pi-", exact) == "tt-pi-" + exact
    # A literal 28-character name with a suffix starting "_" would look hashed: hash it.
    underscore = "_" + "x" * (CHAIN_MAX - len("tt-pi-") - 1)
    assert limited("tt-pi-", underscore) != "tt-pi-" + underscore
    assert limited("tt-pi-", "") == "tt-pi-_"
    assert limited("tt-pi-", "a b") != "tt-pi-a b"
    assert len({limited("tt-pi-", f"policy-{i:040d}") for i in range(500)}) == 500


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_quoted_is_one_token_without_escapes(text: str) -> None:
    q = quoted(text)
    assert q.startswith('"') and q.endswith('"')
    inner = q[1:-1]
    assert '"' not in inner and "\\" not in inner and "'" not in inner
    assert all(32 <= ord(c) < 127 for c in inner)
    assert _tokens(f"-A x -m comment --comment {q} -j RETURN") == [
        "-A",
        "x",
        "-m",
        "comment",
        "--comment",
        inner,
        "-j",
        "RETURN",
    ]


def test_set_names() -> None:
    sid = "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    real4, real6 = set_name(sid + ":4", 4), set_name(sid + ":6", 6)
    assert real4 == "tt4s:5y5I3VdRZfDU01O--xXAPx2yxC" and real6.startswith("tt6s:")
    assert len(real4) <= SET_MAX and len(temp_set_name(real4)) <= SET_MAX
    assert temp_set_name(real4) != real4
    assert is_own_set(real4) and is_own_set(temp_set_name(real4)) and is_own_set("tt4-host")
    assert not is_own_set("KUBE-SVC") and not is_own_set("tt4foo")


def test_hostile_names_stay_inside_their_quotes() -> None:
    """Names with quotes, backslashes, newlines, NULs and shell syntax reach chain names,
    comments, log prefixes and '#' lines; none of them can add a line, end a quoted argument or
    name a chain iptables would refuse."""
    prog = PROGRAMS["hostile"]()
    rendered = render_program(prog)
    for fname, data in rendered.files.items():
        text = data.decode("ascii")  # everything non-ASCII was replaced
        for line in text.splitlines():
            assert line == "" or line.startswith(
                (
                    "#",
                    "*",
                    ":",
                    "-A ",
                    "-I ",
                    "COMMIT",
                    "create ",
                    "flush ",
                    "add ",
                    "swap ",
                    "destroy ",
                )
            ), line
            assert "\x00" not in line
            if line.startswith(("-A ", "-I ")):
                toks = _tokens(line)
                assert toks[1] in ("INPUT", "FORWARD", "OUTPUT", "PREROUTING") or toks[
                    1
                ].startswith("tt-")
                assert len(toks[1]) <= CHAIN_MAX
                for opt in ("--comment", "--log-prefix"):
                    if opt in toks:
                        value = toks[toks.index(opt) + 1]
                        assert value in line and f'"{value}"' in line
                if "--log-prefix" in toks:
                    assert len(toks[toks.index("--log-prefix") + 1]) <= 29
        assert "\n-A INPUT -j DROP" not in text, fname
    assert "reboot" in rendered.rules[4]  # the hostile text is there, harmlessly


# -- lowering -----------------------------------------------------------------------------------


def _lower(
    m: ir.Match, target: tuple[str, ...] = ("-j", "DROP"), names: dict | None = None
) -> list[str]:
    ctx = Context(m.ip_version or 4, names or {}, MARKS)
    return [r.text("c") for r in lower_rule(m, ctx, target)]


def test_multiport_is_split_at_15_ports() -> None:
    ranges = tuple((p, p) for p in range(1000, 1040)) + ((2000, 2010),)
    assert [sum(1 if lo == hi else 2 for lo, hi in c) for c in chunk_ranges(ranges)] == [15, 15, 12]
    lines = _lower(ir.Match(ip_version=4, protocol=6, dst=ir.Side(ports=ir.PortMatch(ranges))))
    assert len(lines) == 3 and all(line.endswith("-j DROP") for line in lines)
    neg = _lower(ir.Match(ip_version=4, protocol=17, dst=ir.Side(not_ports=ir.PortMatch(ranges))))
    assert len(neg) == 1 and neg[0].count("-m multiport ! --dports") == 3


def test_several_cidrs_use_match_blocks() -> None:
    nets = tuple(ipaddress.ip_network(x) for x in ("10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12"))
    m = ir.Match(ip_version=4, protocol=6, src=ir.Side(nets=nets), dst=ir.Side(nets=nets[:2]))
    lines = _lower(m)
    # block 1: clear scratch0, one rule per source net; block 2: clear scratch1, one rule per
    # destination net guarded by scratch0; then the target on scratch1.
    assert lines[0] == "-A c -j MARK --set-xmark 0x0/0x40000"
    assert sum("--set-xmark 0x40000/0x40000" in x for x in lines) == 3
    assert sum("-m mark --mark 0x40000/0x40000" in x and "0x80000/0x80000" in x for x in lines) == 2
    assert lines[-1] == "-A c -p tcp -m mark --mark 0x80000/0x80000 -j DROP"
    # One OR factor and an idempotent target: one rule per alternative, no marks.
    simple = _lower(ir.Match(ip_version=4, src=ir.Side(nets=nets)), ("-j", "ACCEPT"))
    assert simple == [
        f"-A c -s {n} -j ACCEPT" for n in sorted(nets, key=lambda n: int(n.network_address))
    ]
    # The same with LOG: a match block, so a packet is logged once.
    logged = _lower(ir.Match(ip_version=4, src=ir.Side(nets=nets)), ("-j", "LOG"))
    assert logged[-1] == "-A c -m mark --mark 0x40000/0x40000 -j LOG"


def test_not_nets_are_ranges_in_one_rule() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("10.0.2.0/23"))
    lines = _lower(ir.Match(ip_version=4, dst=ir.Side(not_nets=nets)))
    assert lines == [
        "-A c -m iprange ! --dst-range 10.0.0.0-10.0.0.255 -m iprange ! --dst-range 10.0.2.0-10.0.3.255 -j DROP"
    ]


def test_unmatchable_rules_vanish() -> None:
    assert _lower(ir.Match(ip_version=4, src=ir.Side(nets=()))) == []
    assert _lower(ir.Match(ip_version=4, protocol=6, not_protocol=6)) == []
    assert _lower(ir.Match(ip_version=6, protocol=1, icmp_type=8)) == []
    assert (
        _lower(ir.Match(ip_version=4, protocol=1, dst=ir.Side(ports=ir.PortMatch(((80, 80),)))))
        == []
    )
    assert _lower(ir.Match(ip_version=4, protocol=6, not_protocol=17)) == ["-A c -p tcp -j DROP"]


def test_icmp_and_named_ports() -> None:
    assert _lower(ir.Match(ip_version=6, protocol=58, icmp_type=128, icmp_code=0)) == [
        "-A c -p ipv6-icmp -m icmp6 --icmpv6-type 128/0 -j DROP"
    ]
    names = {"n:x:4": "tt4n:x", "s:y:4": "tt4s:y"}
    m = ir.Match(
        ip_version=4,
        src=ir.Side(not_sets=("s:y:4",), ports=ir.PortMatch((), ("n:x:4",))),
        dst=ir.Side(not_ports=ir.PortMatch((), ("n:x:4",))),
    )
    assert _lower(m, names=names) == [
        "-A c -m set ! --match-set tt4n:x dst,dst -m set ! --match-set tt4s:y src "
        "-m set --match-set tt4n:x src,src -j DROP"
    ]


# -- check() ------------------------------------------------------------------------------------


def _codes(prog: ir.Program) -> list[str]:
    sink = DiagnosticSink()
    IptablesTarget().check(prog, sink)
    return sorted(d.code for d in sink.diagnostics)


def test_check_reports_what_iptables_cannot_do() -> None:
    base = workloads_program()
    assert _codes(base) == []
    assert _codes(workloads_program(mark_mask=0x1F)) == ["E820"]
    assert _codes(workloads_program(log_rate_limit="lots")) == ["W823"]
    assert _codes(workloads_program(log_rate_limit="999999/second")) == ["W823"]
    assert _codes(workloads_program(log_prefix="a-very-long-log-prefix-%n-%k")) == ["W826"]
    assert set(_codes(workloads_program(max_ipset_size=1))) == {"E827"}
    bad = dataclasses.replace(base.endpoints[0], interface="cali+x")
    assert "E821" in _codes(ir.replace_program(base, endpoints=(bad, *base.endpoints[1:])))
    hostile = PROGRAMS["hostile"]()
    assert set(_codes(hostile)) == {"W826"}
    port_rule = ir.Rule(
        "allow", ir.Match(ip_version=4, dst=ir.Side(ports=ir.PortMatch(((80, 80),)))), 0
    )
    pol = next(iter(base.policies.values()))
    broken = dataclasses.replace(pol, ingress=(port_rule,))
    assert "E822" in _codes(ir.replace_program(base, policies={**base.policies, pol.id: broken}))
    with pytest.raises(ValueError, match="mark mask"):
        render_program(workloads_program(mark_mask=0x1F))


def test_host_endpoint_warnings() -> None:
    prog = PROGRAMS["hosts"]()
    star = next(e for e in prog.endpoints if e.interface == "*")
    fwd = ((ir.FORWARD, ir.EGRESS), (ir.TierPlan("default", ir.DENY, ("gnp/uplink-forward",)),))
    star2 = dataclasses.replace(star, plans=star.plans + (fwd,), ips=())
    others = tuple(e for e in prog.endpoints if e is not star)
    assert _codes(ir.replace_program(prog, endpoints=(*others, star2))) == ["W824"]
    named = dataclasses.replace(star, interface="eth9", ips=())
    assert _codes(ir.replace_program(prog, endpoints=(*others, named))) == ["W825"]


def test_dispatch_is_a_tree_not_a_scan() -> None:
    """40 workloads: no dispatch chain holds more than FANOUT rules, and every workload's
    chain is reachable from the root."""
    from compiler.targets.iptables.dispatch import FANOUT

    prog = many_pods_program(40)
    rendered = render_program(prog)
    filt = {c.name: c for c in rendered.tables[4][2].chains}
    root = filt["tt-from-wl-dispatch"]
    assert len(root.rules) <= FANOUT
    reach, todo = set(), ["tt-from-wl-dispatch"]
    while todo:
        for r in filt[todo.pop()].rules:
            target = r.jumps_to
            if target and target.startswith("tt-from-wl-d"):
                todo.append(target)
                assert len(filt[target].rules) <= FANOUT
            elif target:
                reach.add(target)
    assert reach == {c for c in filt if c.startswith("tt-fw-")}
    assert len(reach) == 40


def test_conntrack_invalid_check_can_be_disabled() -> None:
    on = render_program(workloads_program()).rules[4]
    off = render_program(workloads_program(disable_conntrack_invalid_check=True)).rules[4]
    assert "--ctstate INVALID -j DROP" in on and "INVALID" not in off
    assert on.count("RELATED,ESTABLISHED") == off.count("RELATED,ESTABLISHED")


# -- set-only updates -------------------------------------------------------------------------


def test_set_update_only_for_set_changes() -> None:
    old = workloads_program()
    assert render_set_update(old, old) == ""
    update = render_set_update(old, members_changed())
    assert update is not None
    assert update.count("swap ") == 1 and "add tt4ts:" in update and "\ncreate tt4s:" not in update
    other = workloads_program(deny_action="Reject")
    assert render_set_update(old, other) is None
    assert render_set_update(old, PROGRAMS["hosts"]()) is None


def test_empty_and_zero_prefix_sets() -> None:
    prog = workloads_program()
    sid, s = next((k, v) for k, v in prog.sets.items() if v.family == 4 and not v.is_named_port)
    everything = dataclasses.replace(s, members=frozenset({ipaddress.ip_network("0.0.0.0/0")}))
    text = render_program(ir.replace_program(prog, sets={**prog.sets, sid: everything})).ipset
    name = set_name(sid, 4)
    assert (
        f"add {temp_set_name(name)} 0.0.0.0/1" in text
        and f"add {temp_set_name(name)} 128.0.0.0/1" in text
    )


# -- the applier's planning (pure) --------------------------------------------------------------

ARTIFACT = """# header
*filter
:tt-INPUT - [0:0]
:tt-x - [0:0]
-A tt-INPUT -j tt-x
-I INPUT 1 -m comment --comment "tortie:hook" -j tt-INPUT
COMMIT
"""


def _saved(*rules: str, chains: tuple[str, ...] = ("tt-INPUT", "tt-x")) -> str:
    decl = "".join(f":{c} - [0:0]\n" for c in chains)
    return "*filter\n:INPUT ACCEPT [0:0]\n" + decl + "".join(r + "\n" for r in rules) + "COMMIT\n"


HOOK = '-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT'


def test_plan_keeps_a_hook_in_place() -> None:
    plan = plan_iptables(ARTIFACT, _saved(HOOK, "-A INPUT -j ACCEPT"))
    assert "-I INPUT" not in plan and "-D " not in plan
    assert plan_iptables(ARTIFACT, "").count("-I INPUT 1") == 1


def test_plan_heals_duplicates_and_moved_hooks() -> None:
    plan = plan_iptables(ARTIFACT, _saved(HOOK, "-A INPUT -j ACCEPT", HOOK))
    assert plan.index("-D INPUT 3") < plan.index("-D INPUT 1") < plan.index("-I INPUT 1")
    plan = plan_iptables(ARTIFACT, _saved("-A INPUT -j ACCEPT", HOOK))
    assert "-D INPUT 2" in plan and "-I INPUT 1" in plan


def test_plan_removes_stale_chains_and_hooks() -> None:
    stale_hook = '-A INPUT -m comment --comment "tortie:hook" -j tt-OLD'
    saved = _saved(
        HOOK,
        stale_hook,
        "-A tt-old-pol -j DROP",
        chains=("tt-INPUT", "tt-x", "tt-old-pol", "tt-OLD"),
    )
    plan = plan_iptables(ARTIFACT, saved).splitlines()
    assert "-D INPUT 2" in plan
    assert plan.index("-F tt-old-pol") < plan.index("-X tt-old-pol") < plan.index("COMMIT")
    assert "-X tt-OLD" in plan and "-X tt-x" not in plan
    other = "*raw\n:PREROUTING ACCEPT [0:0]\n:tt-gone - [0:0]\nCOMMIT\n"
    assert "-X tt-gone" in plan_iptables(ARTIFACT, other)


def test_plan_ipset() -> None:
    text = render_program(workloads_program()).ipset
    swaps = [line.split() for line in text.splitlines() if line.startswith("swap ")]
    temp, real = swaps[0][1], swaps[0][2]
    assert temp == temp_set_name(real)
    plan = plan_ipset(text, {real, temp, "foreign"})
    assert plan.startswith(f"destroy {temp}\n")
    assert f"create {real} " not in plan and f"create {temp} " in plan
    assert stale_sets({"tt4s:old", "foreign", "tt4-host", "tt4ts:old"}, {"tt4-host"}) == [
        "tt4s:old",
        "tt4ts:old",
    ]


def test_felix_defaults_are_what_the_goldens_use() -> None:
    """Guards the goldens: the hand-made programs rely on these defaults."""
    felix = FelixConfig()
    assert felix.mark_mask == 0xFFFF0000 and felix.deny_action == "Drop"
    assert HOSTILE.count("\n") == 1


# -- doctests -----------------------------------------------------------------------------------

_DOCTEST_MODULES = sorted(
    [f"compiler.targets.iptables.{m.name}" for m in pkgutil.iter_modules(iptables_pkg.__path__)]
    + ["compiler.targets.common", "compiler.tools._exec", "compiler.tools.iptables"]
    + ["compiler.tools.ipset"]
)


@pytest.mark.parametrize("name", _DOCTEST_MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
