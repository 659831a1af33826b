"""``tortie apply`` with the iptables target (a new generation beside the live one, then one
``ipset swap``), in a node netns: idempotence, failsafe, drift, rollback of a half-done apply,
and kill -9 at random points leaving the whole node on the old or the new ruleset."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from compiler.artifact import Artifact, write_artifact
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.tools import iptables as iptables_tool
from runtime.apply import apply_artifact, load_dir
from runtime.iptables import IptablesDataplane, detect_backend
from runtime.plan import ApplyFailed
from runtime.status import read_status
from tests.support.demo_cluster import (
    EXT_V4,
    FLOW_TCP,
    NODE_V4,
    POD_IPS,
    cluster_yaml,
    compile_dir,
    compile_yaml,
)
from tests.support.iptables import backend_params
from tests.support.runtime_world import CLI, ROOT, World, cli_env, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel

KILL_ITERATIONS = int(os.environ.get("TORTIE_KILL_ITERATIONS", "40"))


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not iptables_tool.available(detect_backend()):
        pytest.skip("iptables tools missing")
    with world(tmp_path) as made:
        yield made


def _save(w: World) -> str:
    """iptables-save (both families, without the dated header comments) and ipset save."""
    backend = detect_backend()
    out = []
    for family in (4, 6):
        text = iptables_tool.save(family=family, backend=backend, netns=w.node.name)
        out += [x for x in text.splitlines() if not x.startswith("#")]
    ipsets = w.node.run(["ipset", "save"]).stdout
    # A set's hash seed is random per set; a refill swaps it with the temporary set's.
    return "\n".join(out + sorted(re.sub(r" initval 0x[0-9a-f]+", "", ipsets).splitlines()))


def test_apply_twice_changes_nothing_and_failsafe_holds(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a", "iptables")
    res = w.cli("apply", str(art), "--node", "n1")
    assert res.returncode == 0, res.stderr
    before = _save(w)
    again = w.cli("apply", str(art), "--node", "n1")
    assert again.returncode == 0 and again.stdout.startswith("no change"), again.stdout
    assert _save(w) == before
    probes = [
        Probe("ext", NODE_V4, "TCP", 22),
        Probe("ext", NODE_V4, "TCP", 80),
        Probe("a", POD_IPS["b"], "TCP", FLOW_TCP),
        Probe("c", POD_IPS["b"], "TCP", FLOW_TCP),
    ]
    got = send_probes(w.cluster, probes, timeout=1.0)
    assert [got[p] for p in probes] == [True, False, True, False]
    assert w.cli("status").returncode == 0


def test_drift_in_a_chain_or_a_set_is_reported_and_repaired(w: World, tmp_path: Path) -> None:
    art = compile_dir(cluster_yaml(), tmp_path / "a", "iptables")
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    dp = IptablesDataplane(w.env)
    good = dp.read().units
    backend = detect_backend()
    w.node.run([f"iptables-{backend}", "-F", "tt-INPUT"])  # the dispatch chain
    st = w.cli("status")
    assert st.returncode == 1 and "ip4 filter" in st.stdout
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    assert dp.read().units == good and w.cli("status").returncode == 0
    live = _live(w)
    sets = [
        x.split()[1]
        for x in w.node.run(["ipset", "save"]).stdout.splitlines()
        if x.startswith(f"create t{live}4s")
    ]
    w.node.run(["ipset", "flush", sets[0]])
    st = w.cli("status")
    assert st.returncode == 1 and f"ipset tg4s{sets[0][4:]}" in st.stdout
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    assert w.cli("status").returncode == 0
    # Flushing a set of the *inactive* generation is no drift: nothing reaches it.
    idle = "b" if _live(w) == "a" else "a"
    idle_sets = [
        x.split()[1]
        for x in w.node.run(["ipset", "save"]).stdout.splitlines()
        if x.startswith(f"create t{idle}4s")
    ]
    if idle_sets:
        w.node.run(["ipset", "flush", idle_sets[0]])
        assert w.cli("status").returncode == 0


def _live(w: World) -> str:
    """The generation the switch sets make live, read straight from ``ipset list``."""
    a = w.node.run(["ipset", "list", "tt-on-a"]).stdout.split("Members:")[1].split()
    b = w.node.run(["ipset", "list", "tt-on-b"]).stdout.split("Members:")[1].split()
    assert sorted([a, b]) == [[], ["tt4-all", "tt6-all"]], (a, b)
    return "a" if a else "b"


def test_failure_in_a_later_table_rolls_back_the_earlier_ones(w: World, tmp_path: Path) -> None:
    old = load_dir(compile_dir(cluster_yaml(7000), tmp_path / "a", "iptables"), "n1")
    new_dir = compile_dir(cluster_yaml(7001, clients=("a", "c")), tmp_path / "b", "iptables")
    apply_artifact(old, w.env)
    before = IptablesDataplane(w.env).read().units
    files = {
        n: (new_dir / n).read_bytes()
        for n in ("ipset.restore", "iptables.rules", "ip6tables.rules")
    }
    broken6 = (
        files["ip6tables.rules"]
        .decode()
        .replace("COMMIT", "-A tt-INPUT -m nosuchmatch -j ACCEPT\nCOMMIT", 1)
    )
    files["ip6tables.rules"] = broken6.encode()
    bad = load_dir(write_artifact(Artifact("iptables", "n1", files), tmp_path / "bad"), "n1")
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(bad, w.env)
    assert info.value.restored, str(info.value)
    assert "IPv6" in str(info.value)
    assert IptablesDataplane(w.env).read().units == before  # sets and IPv4 tables are back
    assert read_status(w.env).in_sync
    got = send_probes(w.cluster, [Probe("c", POD_IPS["b"], "TCP", FLOW_TCP)], timeout=0.5)
    assert list(got.values()) == [False]  # the new artifact would have allowed c


_TRUSTED = """\
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth1, labels: {role: uplink}}
spec: {node: n1, interfaceName: eth1, expectedIPs: ["2001:db8:ffff::1"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: trusted, labels: {trust: gold}}
spec: {nets: [%(nets)s]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: uplink-trusted}
spec:
  selector: role == 'uplink'
  order: 10
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: trust == 'gold'}
    destination: {ports: [%(port)d]}
"""

# Two artifacts that differ in rules and in set members, in both families ("rules"), and two
# that differ in set members only, in both families ("sets": the set-only update path).
_VARIANTS = {
    "rules": {
        "A": (7000, ("a",), "192.168.100.2/32, 2001:db8:a::/48", 8080),
        "B": (7001, ("a", "c"), "10.99.0.0/16, 2001:db8:b::/48", 8081),
    },
    "sets": {
        "A": (7000, ("a",), "192.168.100.2/32, 2001:db8:a::/48", 8080),
        "B": (7000, ("a", "c"), "10.99.0.0/16, 2001:db8:b::/48", 8080),
    },
}


def _variant_yaml(kind: str, k: str) -> str:
    port, clients, nets, trusted_port = _VARIANTS[kind][k]
    return cluster_yaml(port, clients=clients) + _TRUSTED % {"nets": nets, "port": trusted_port}


def _kill_params() -> list:  # type: ignore[type-arg]
    by_backend = {p.id: p for p in backend_params()}
    return [
        pytest.param(b, kind, marks=by_backend[b].marks, id=f"{b}-{kind}")
        for b, kind in (("nft", "rules"), ("legacy", "rules"), ("nft", "sets"), ("legacy", "sets"))
    ]


def _live_view(w: World, backend: str) -> dict[str, object]:
    """What the hooks reach, read straight from the kernel (independent of runtime/iptables.py):
    the switch sets say which generation is live; from every hook, through the dispatch chain,
    every chain the live generation's top-level chain reaches by ``-j``/``-g``, with its rules,
    and every set those rules name, with its members. Generation letters are replaced by ``G``,
    so one artifact reads the same in either generation."""
    gen = _live(w)
    ipsets: dict[str, list[str]] = {}
    for line in w.node.run(["ipset", "save"]).stdout.splitlines():
        words = line.split()
        if words[0] == "create":
            ipsets[words[1]] = [words[2]]
        elif words[0] == "add":
            ipsets[words[1]].append(" ".join(words[2:]))
    view: dict[str, object] = {}
    used: set[str] = set()
    for family in (4, 6):
        text = iptables_tool.save(family=family, backend=backend, netns=w.node.name)
        table = ""
        rules: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A "):
                rules[(table, line.split()[1])].append(line)
        for (table, chain), lines in sorted(rules.items()):
            if chain.startswith("t"):
                continue
            for hook in (x for x in lines if "tortie:hook" in x):
                static = hook.split("-j ")[1].strip()
                dispatch = rules[(table, static)]
                assert [x.split(static, 1)[1] for x in dispatch] == [
                    f" -m set --match-set tt-on-a src -g ta{static[2:]}",
                    f" -m set --match-set tt-on-b src -g tb{static[2:]}",
                    f" -g ta{static[2:]}",
                ], dispatch
                todo, seen = [f"t{gen}{static[2:]}"], set()
                while todo:
                    c = todo.pop()
                    if c in seen:
                        continue
                    seen.add(c)
                    body = rules[(table, c)]
                    view[f"ip{family} {table} {c.replace(f't{gen}-', 'tG-')}"] = [
                        re.sub(rf"\bt{gen}([-46])", r"tG\1", x) for x in body
                    ]
                    for x in body:
                        todo += re.findall(r" -[jg] (t[ab]-\S+)", x)
                        used.update(re.findall(r"--match-set (\S+)", x))
                view[f"ip{family} {table} hook {chain}"] = [hook, static]
    for name in sorted(used):
        assert name in ipsets, f"a live rule names set {name}, which does not exist"
        view[f"set {re.sub(rf'^t{gen}', 'tG', name)}"] = sorted(ipsets[name])
    return view


def _expected(program, probes: list[Probe]) -> list[bool]:  # type: ignore[no-untyped-def]
    proto = {"TCP": 6, "UDP": 17}
    out = []
    for p in probes:
        src = {"ext": EXT_V4, **POD_IPS}[p.src]
        out.append(
            evaluate(program, Flow.make(src, p.dst_ip, proto[p.protocol], p.dst_port)).allowed
        )
    return out


def test_rollback_after_the_switch_is_a_swap_back(w: World, tmp_path: Path) -> None:
    """A failure after the switch (e.g. a read-back problem) puts the old generation back live
    with one swap: the old generation was never touched."""
    old = load_dir(compile_dir(cluster_yaml(7000), tmp_path / "a", "iptables"), "n1")
    new_dir = compile_dir(cluster_yaml(7001, clients=("a", "c")), tmp_path / "b", "iptables")
    new = load_dir(new_dir, "n1")
    apply_artifact(old, w.env)
    dp = IptablesDataplane(w.env)
    before = dp.read()
    gen = _live(w)
    plan = dp.plan(before, new, w.env.state.read_record(), w.env.state.applied_files())
    assert plan.steps[-1].kind == "switch"
    for step in plan.steps:
        dp.run(step)
    assert _live(w) != gen and not dp.verify(plan, dp.read())
    got = send_probes(w.cluster, [Probe("c", POD_IPS["b"], "TCP", FLOW_TCP)], timeout=0.5)
    assert list(got.values()) == [True]  # the new generation is live
    dp.rollback(plan, plan.steps)
    assert _live(w) == gen and dp.read().units == before.units
    got = send_probes(w.cluster, [Probe("c", POD_IPS["b"], "TCP", FLOW_TCP)], timeout=0.5)
    assert list(got.values()) == [False]  # c is a client only in the new artifact


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "kind"), _kill_params())
def test_kill_9_leaves_the_old_or_the_new_ruleset_whole(
    w: World, tmp_path: Path, backend: str, kind: str
) -> None:
    """After a ``kill -9`` at a random point of an apply, every table of both families and every
    set the live rules use are, together, exactly the old artifact's or the new one's (read
    straight from the kernel, and as the runtime's units), and real packets get the evaluator's
    verdict for that artifact. ``sets``: the two artifacts differ in set members only, so every
    killed apply is a set-only update."""
    dirs, programs = {}, {}
    for k in ("A", "B"):
        programs[k], artifact = compile_yaml(_variant_yaml(kind, k), "iptables")
        dirs[k] = write_artifact(artifact, tmp_path / k)  # type: ignore[arg-type]
    arts = {k: load_dir(d, "n1") for k, d in dirs.items()}
    for name in ("iptables.rules", "ip6tables.rules", "ipset.restore"):
        same = arts["A"].files[name] == arts["B"].files[name]
        assert same == (kind == "sets" and name != "ipset.restore"), name
    probes = [
        Probe("ext", NODE_V4, "TCP", 22),
        Probe("ext", NODE_V4, "TCP", 80),
        Probe("ext", NODE_V4, "TCP", 8080),
        Probe("a", POD_IPS["b"], "TCP", FLOW_TCP),
        Probe("c", POD_IPS["b"], "TCP", FLOW_TCP),
        Probe("a", POD_IPS["c"], "TCP", 7000),
        Probe("a", POD_IPS["c"], "TCP", 7001),
    ]
    expected = {k: _expected(programs[k], probes) for k in ("A", "B")}
    assert expected["A"] != expected["B"]
    env = dataclasses.replace(w.env, iptables_backend=backend)
    dp = IptablesDataplane(env)
    units, views = {}, {}
    for k in ("A", "B", "A", "B"):  # each artifact in each generation
        mode = apply_artifact(arts[k], env).plan.mode
        assert mode == ("full" if kind == "rules" or not units else "sets"), (k, mode)
        now, view = dp.read().units, _live_view(w, backend)
        assert units.setdefault(k, now) == now and views.setdefault(k, view) == view
    assert views["A"] != views["B"]
    ip6 = any(k.startswith("ip6") and views["A"][k] != views["B"][k] for k in views["A"])
    assert ip6 == (kind == "rules")
    assert any(k.startswith("set tG6") and views["A"][k] != views["B"].get(k) for k in views["A"])
    rng = random.Random(99)
    seen: collections.Counter[str] = collections.Counter()
    journal = w.state_dir / "journal.json"

    def start(new: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*CLI, "apply", str(dirs[new]), "--node", "n1"],
            cwd=ROOT,
            env={**cli_env(w), "TORTIE_IPTABLES_BACKEND": backend},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        return proc

    # How long the kernel is being changed (journal written -> process gone): the delays.
    apply_artifact(arts["A"], env)
    proc = start("B")
    t0 = time.monotonic()
    assert proc.wait(timeout=60) == 0
    span = time.monotonic() - t0
    for i in range(KILL_ITERATIONS):
        old, new = ("A", "B") if i % 2 == 0 else ("B", "A")
        apply_artifact(arts[old], env)
        assert _live_view(w, backend) == views[old]
        proc = start(new)
        time.sleep(rng.uniform(0, span if i % 4 < 2 else span / 8))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        view = _live_view(w, backend)
        assert view in (views[old], views[new]), f"iteration {i}: the live ruleset is a mix"
        state = old if view == views[old] else new
        assert dp.read().units == units[state], f"iteration {i}: units disagree with the kernel"
        got = send_probes(w.cluster, probes, timeout=0.5)
        assert [got[p] for p in probes] == expected[state], f"iteration {i}: {state} is live"
        seen[f"{'old' if state == old else 'new'}{'+journal' if journal.exists() else ''}"] += 1
    print(f"\niptables kill -9 loop ({backend}, {kind}, {span * 1000:.0f} ms): {dict(seen)}")
    assert seen["old"] + seen["old+journal"] > 0 and seen["new"] + seen["new+journal"] > 0
    apply_artifact(arts["A"], env)
    assert dp.read().units == units["A"] and read_status(env).in_sync


def test_switching_target_removes_the_previous_targets_objects(w: World, tmp_path: Path) -> None:
    nft_dir = compile_dir(cluster_yaml(), tmp_path / "nft", "nftables")
    ipt_dir = compile_dir(cluster_yaml(), tmp_path / "ipt", "iptables")
    assert w.cli("apply", str(nft_dir), "--node", "n1").returncode == 0
    assert w.nft_table() is not None
    res = w.cli("apply", str(ipt_dir), "--node", "n1")
    assert res.returncode == 0, res.stderr
    assert w.nft_table() is None  # Tortie's nft table is gone; its iptables chains are in
    assert "tt-INPUT" in _save(w)
    got = send_probes(
        w.cluster, [Probe("ext", NODE_V4, "TCP", 22), Probe("ext", NODE_V4, "TCP", 80)], timeout=1.0
    )
    assert list(got.values()) == [True, False]
    assert w.cli("status").returncode == 0


def test_switching_away_removes_both_generations_and_the_switch_sets(
    w: World, tmp_path: Path
) -> None:
    ipt_a = compile_dir(cluster_yaml(7000), tmp_path / "a", "iptables")
    ipt_b = compile_dir(cluster_yaml(7001, clients=("a", "c")), tmp_path / "b", "iptables")
    nft_dir = compile_dir(cluster_yaml(), tmp_path / "nft", "nftables")
    for art in (ipt_a, ipt_b):  # both generations hold chains and sets now
        assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    assert {"ta-INPUT", "tb-INPUT", "tt-INPUT"} <= set(_save(w).replace(":", " ").split())
    res = w.cli("apply", str(nft_dir), "--node", "n1")
    assert res.returncode == 0, res.stderr
    assert not re.search(r"\bt[tab]-", _save(w))
    assert w.node.run(["ipset", "list", "-n"]).stdout.strip() == ""
    assert w.cli("status").returncode == 0
