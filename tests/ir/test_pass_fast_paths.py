"""The passes' fast paths give what the plain computations give.

The passes share work through ``PassContext.cache`` (family parts from ``resolve_sets``, interval
sets from ``aggregate_cidrs``, side facts between ``fold_empty`` and ``shadowed_rules``). Each is
checked here against the reference computation: ``ipaddress`` itself, or the same pass without a
context (no sharing).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest

from compiler.frontend.model import FelixConfig, NamedPort
from compiler.ir._nets import host_net, make_net, span
from compiler.ir.nodes import (
    AddrSet,
    Match,
    Policy,
    PortMatch,
    Rule,
    Selectable,
    Side,
    make_program,
    replace_program,
    replacer,
)
from compiler.ir.passes import DEFAULT_PASSES, aggregate_cidrs, resolve_sets, split_families
from compiler.ir.passes._space import AddrSpace, minus, normalise
from compiler.pipeline import PassContext


def test_make_net_is_ip_network() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        version = rnd.choice((4, 6))
        bits = 32 if version == 4 else 128
        plen = rnd.choice((0, 1, bits - 1, bits, rnd.randint(0, bits)))
        lo = (rnd.getrandbits(bits) >> (bits - plen) << (bits - plen)) if plen else 0
        ref = (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)((lo, plen))
        got = make_net(version, lo, plen)
        assert type(got) is type(ref) and got == ref and hash(got) == hash(ref)
        assert str(got) == str(ref) and got.netmask == ref.netmask
        assert list(vars(got)) == list(vars(ref))
        assert span(got) == (version, int(ref.network_address), int(ref.broadcast_address))
        if plen >= bits - 1:
            assert list(got.hosts()) == list(ref.hosts())
    for text in ("10.1.2.3", "fd00::7"):
        ip = ipaddress.ip_address(text)
        assert host_net(ip) == ipaddress.ip_network(text)


def _program(sets: list[AddrSet], selectables: tuple[Selectable, ...] = ()) -> object:
    return make_program(
        node=None, tiers=(), policies=(), profiles=(), sets=tuple(sets), endpoints=(),
        selectables=selectables, felix=FelixConfig(), host_ips={},
    )  # fmt: skip


def _collapsed(members: frozenset) -> frozenset:
    out = set()
    for version in (4, 6):
        nets = [n for n in members if n.version == version]
        out.update(ipaddress.collapse_addresses(nets))
    return frozenset(out)


@pytest.mark.parametrize("from_selectables", [False, True])
@pytest.mark.parametrize("overlapping", [False, True])
def test_aggregate_matches_collapse_addresses(overlapping: bool, from_selectables: bool) -> None:
    """``from_selectables``: the members are the selectables' own networks (as after
    ``resolve_sets``, found by id), except one set's equal copy of one (the plain way)."""
    rnd = random.Random(11 + overlapping)
    # Runs of adjacent pod addresses and of /24s, in both families, with gaps.
    universe = [ipaddress.ip_network(f"10.0.{i // 200}.{i % 200}/32") for i in range(400)]
    universe += [ipaddress.ip_network(f"fd00::{i:x}/128") for i in range(0, 300, 1)]
    universe += [ipaddress.ip_network(f"172.{16 + i // 8}.{i % 8}.0/24") for i in range(64)]
    if overlapping:  # a supernet and a duplicate: the general collapse must take over
        universe += [ipaddress.ip_network("172.16.0.0/22"), ipaddress.ip_network("10.0.0.5/32")]
    sets = []
    for k in range(60):
        picked = rnd.sample(universe, rnd.randint(0, 120))
        if k % 7 == 0:  # long contiguous runs
            start = rnd.randint(0, 300)
            picked = universe[start : start + rnd.randint(1, 90)]
        sets.append(AddrSet(f"s:{k:02d}", "all()", members=frozenset(picked)))
    copy = ipaddress.ip_network(str(universe[1]))
    sets.append(AddrSet("s:copy", "all()", members=frozenset([universe[0], copy, universe[2]])))
    sets.append(AddrSet("n:x", "all()", port_name="p", port_members=frozenset()))
    owners = ()
    if from_selectables:
        owners = tuple(
            Selectable(f"ns/p{i}", "WorkloadEndpoint", (), (n,)) for i, n in enumerate(universe)
        )
    ctx = PassContext()
    out = aggregate_cidrs.run(_program(sets, owners), ctx)
    spaces = ctx.cache["addr_spaces"]
    for s in sets[:-1]:
        got = out.sets[s.id].members
        assert got == _collapsed(s.members), s.id
        assert spaces[got] == AddrSpace.of(got)
    assert out.sets["n:x"] is sets[-1]
    assert aggregate_cidrs.run(_program(sets), None).sets == out.sets


def test_minus_of_a_covering_interval() -> None:
    """``minus`` of one interval that covers ``b`` (its fast path) is the set difference."""
    rnd = random.Random(5)
    for _ in range(3000):
        b = normalise((x, x + rnd.randint(0, 3)) for x in rnd.sample(range(40), rnd.randint(1, 8)))
        lo = rnd.randint(0, b[0][0])
        hi = rnd.randint(b[-1][1], 50)
        expected = set(range(lo, hi + 1)) - {x for x0, x1 in b for x in range(x0, x1 + 1)}
        got = minus(((lo, hi),), b)
        assert {x for x0, x1 in got for x in range(x0, x1 + 1)} == expected
        assert got == normalise(got) and all(x0 <= x1 for x0, x1 in got)


def test_replace_program_orders_what_changed_and_shares_the_rest() -> None:
    prog = _rules_program()
    sets = dict(reversed(list(prog.sets.items())))
    new = replace_program(prog, sets=sets)
    assert list(new.sets) == sorted(sets) and new.sets == prog.sets
    assert new.policies is prog.policies and new.selectables is prog.selectables
    with pytest.raises(TypeError):
        replace_program(prog, nodes=())


def test_replacer_is_dataclasses_replace() -> None:
    pol = _rules_program().policies["gnp/p"]
    fast = replacer(Policy)
    assert fast(pol, egress=(), staged=True) == dataclasses.replace(pol, egress=(), staged=True)
    assert fast(pol) == pol
    with pytest.raises(TypeError):
        fast(pol, rules=())


def _selectables() -> tuple[Selectable, ...]:
    out = []
    for i in range(40):
        nets = (ipaddress.ip_network(f"10.0.0.{i}/32"), ipaddress.ip_network(f"fd00::{i:x}/128"))
        if i % 5 == 0:
            nets = nets[:1]
        ports = (NamedPort("http", 6, 80 + i % 3),) if i % 2 else ()
        labels = (("app", f"a{i % 4}"), ("tier", f"t{i % 3}"))
        out.append(Selectable(f"ns/p{i}", "WorkloadEndpoint", labels, nets, ports))
    out.append(
        Selectable(
            "gns/n", "GlobalNetworkSet", (("app", "a1"),),
            (ipaddress.ip_network("192.168.0.0/24"), ipaddress.ip_network("fd01::/64")),
        )
    )  # fmt: skip
    return tuple(out)


def _rules_program() -> object:
    sels = ['app == "a1"', 'tier == "t2"', "all()", 'app in {"a1", "a2"}', 'app == "none"']
    sets = [AddrSet(f"s:{i}", sel) for i, sel in enumerate(sels)]
    sets.append(AddrSet("n:h", "all()", port_name="http", port_protocol=6))
    sides = [Side(sets=(f"s:{i}",)) for i in range(len(sels))]
    rules = []
    for i, side in enumerate(sides * 2):
        other = sides[(i + 1) % len(sides)]
        ports = PortMatch((), ("n:h",)) if i % 3 == 0 else None
        match = Match(protocol=6 if ports else None, src=side, dst=Side(ports=ports))
        rules.append(Rule("allow" if i % 4 else "deny", match, i))
        rules.append(Rule("allow", Match(src=other, dst=side), 100 + i))
    pol = Policy(
        "gnp/p", "p", None, "GlobalNetworkPolicy", "default", None, "all()",
        ("ingress", "egress"), ingress=tuple(rules), egress=tuple(reversed(rules)),
    )  # fmt: skip
    return make_program(
        node=None, tiers=(), policies=(pol,), profiles=(), sets=tuple(sets), endpoints=(),
        selectables=_selectables(), felix=FelixConfig(), host_ips={},
    )  # fmt: skip


def test_shared_context_changes_nothing() -> None:
    """Each pass with the run's context (shared memos) equals the pass alone (none)."""
    ctx = PassContext()
    prog = _rules_program()
    for p in DEFAULT_PASSES:
        alone = p(prog, PassContext())
        shared = p(prog, ctx)
        assert shared.sets == alone.sets, p.__module__
        assert shared.policies == alone.policies, p.__module__
        assert shared.dropped_rules == alone.dropped_rules, p.__module__
        prog = shared
    assert prog.dropped_rules  # the passes did something: the test can fail


def test_split_uses_resolve_parts() -> None:
    ctx = PassContext()
    resolved = resolve_sets.run(_rules_program(), ctx)
    assert ctx.cache["family_parts"]
    split = split_families.run(resolved, ctx)
    assert "family_parts" not in ctx.cache  # taken: freed after its one use
    plain = split_families.run(resolve_sets.run(_rules_program(), None), None)
    assert split.sets == plain.sets
    for s in split.sets.values():
        members = s.port_members if s.is_named_port else s.members
        assert all((m[0] if s.is_named_port else m).version == s.family for m in members or ())
