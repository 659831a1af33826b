"""The iptables artifacts in a real kernel, with both backends (iptables-legacy, iptables-nft):
``--test`` accepts them, they load and read back as written, re-applying is idempotent,
foreign rules survive, stale chains and sets go, a failed load changes nothing, set-only updates
apply in place, and real traffic is decided exactly as the evaluator decides it.

Everything happens inside network namespaces of the netns harness; the root namespace's rules
are never read or written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import re
import time
from collections.abc import Iterator

import pytest

from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.targets.iptables import render_program, render_set_update
from compiler.targets.iptables.apply import apply, parse_save
from compiler.targets.iptables.render import IPSET_FILE, RULES_FILE
from compiler.tools import ipset as ipset_tool
from compiler.tools import iptables as iptables_tool
from tests.support.compare import run_and_compare
from tests.support.iptables import backend_params, normalize_rule, own_rules
from tests.support.netns import Cluster
from tests.support.topology import IptTopology
from tests.support.traffic import send_probes
from tests.targets.test_iptables_programs import (
    PROGRAMS,
    compile_yaml,
    hosts_program,
    many_pods_program,
    workloads_program,
)
from tests.targets.test_iptables_render import CASES

pytestmark = pytest.mark.kernel

FOREIGN = """*filter
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP
-A INPUT -j KUBE-FIREWALL
-A FORWARD -s 198.18.99.0/24 -j DROP
COMMIT
*raw
-A PREROUTING -s 198.18.98.0/24 -j DROP
COMMIT
"""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


def _restore_input_rules(text: str) -> dict[str, dict[str, list[str]]]:
    """The artifact's rules as iptables-save prints them back (hooks as ``-A BUILTIN …``)."""
    out: dict[str, dict[str, list[str]]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            out[table] = {}
        elif line.startswith(":"):
            out[table].setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            out[table].setdefault(line.split()[1], []).append(line)
        elif line.startswith("-I "):
            words = line.split()
            out[table].setdefault(words[1], []).append(" ".join(["-A", words[1], *words[3:]]))
    return out


def _rule_count(saved: str) -> int:
    return sum(1 for line in saved.splitlines() if line.startswith("-A "))


# -- syntax and loading -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", sorted(CASES))
def test_restore_test_accepts_artifacts(cluster: Cluster, backend: str, name: str) -> None:
    """``iptables-restore --test`` accepts both families' files (the sets they name must exist,
    so the ipset file is loaded first, in a throwaway netns)."""
    files = render_program(CASES[name]()).files
    node = cluster.add_node("n1")
    ipset_tool.restore(files[IPSET_FILE].decode(), netns=node.name)
    for family in (4, 6):
        iptables_tool.restore(
            files[RULES_FILE[family]].decode(),
            family=family,
            backend=backend,
            test=True,
            netns=node.name,
        )
    # --test committed nothing.
    saved = iptables_tool.save(family=4, backend=backend, netns=node.name)
    assert "tt-" not in saved


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_loads_and_reads_back_as_written(cluster: Cluster, backend: str, name: str) -> None:
    files = render_program(PROGRAMS[name]()).files
    node = cluster.add_node("n1")
    apply(files, backend=backend, netns=node.name)
    for family in (4, 6):
        want = _restore_input_rules(files[RULES_FILE[family]].decode())
        got = own_rules(iptables_tool.save(family=family, backend=backend, netns=node.name))
        for table, chains in want.items():
            for chain, rules in chains.items():
                assert [normalize_rule(r) for r in got.get(table, {}).get(chain, [])] == [
                    normalize_rule(r) for r in rules
                ], f"{backend} v{family} {table} {chain}"
    sets = {n for n in ipset_tool.list_names(netns=node.name)}
    decls = render_program(PROGRAMS[name]()).sets
    assert sets == {d.name for d in decls}
    for decl in decls:
        assert len(ipset_tool.members(decl.name, netns=node.name)) == len(decl.members)


@pytest.mark.parametrize("backend", backend_params())
def test_apply_three_times_is_idempotent(cluster: Cluster, backend: str) -> None:
    files = render_program(workloads_program()).files
    node = cluster.add_node("n1")
    iptables_tool.restore(FOREIGN, family=4, backend=backend, netns=node.name)
    saves = []
    for _ in range(3):
        apply(files, backend=backend, netns=node.name)
        saves.append(own_rules(iptables_tool.save(family=4, backend=backend, netns=node.name)))
    assert saves[0] == saves[1] == saves[2]
    saved = iptables_tool.save(family=4, backend=backend, netns=node.name)
    assert saved.count("tortie:hook") == 6
    text = files[RULES_FILE[4]].decode()
    ours = sum(1 for line in text.splitlines() if line.startswith(("-A ", "-I ")))
    assert _rule_count(saved) == ours + 4  # plus the foreign rules, untouched
    tables = parse_save(saved)
    assert tables["filter"].rules[0].endswith("-j tt-INPUT")  # insert mode: first
    assert "-A FORWARD -s 198.18.99.0/24 -j DROP" in saved
    assert "-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP" in saved


@pytest.mark.parametrize("backend", backend_params())
def test_hooks_heal_duplicates_and_stay_first(cluster: Cluster, backend: str) -> None:
    files = render_program(workloads_program()).files
    node = cluster.add_node("n1")
    text = files[RULES_FILE[4]].decode()
    ipset_tool.restore(files[IPSET_FILE].decode(), netns=node.name)
    for _ in range(2):  # a naive double restore duplicates the hooks ...
        iptables_tool.restore(text, family=4, backend=backend, netns=node.name)
    assert iptables_tool.save(family=4, backend=backend, netns=node.name).count("tortie:hook") == 12
    # ... something else inserts itself above ours ...
    iptables_tool.restore(
        "*filter\n-I FORWARD 1 -s 198.18.97.0/24 -j DROP\nCOMMIT\n",
        family=4,
        backend=backend,
        netns=node.name,
    )
    apply(files, backend=backend, netns=node.name)  # ... and apply repairs both
    saved = iptables_tool.save(family=4, backend=backend, netns=node.name)
    assert saved.count("tortie:hook") == 6
    forward = [r for r in parse_save(saved)["filter"].rules if r.startswith("-A FORWARD")]
    assert forward[0].endswith("-j tt-FORWARD") and "198.18.97.0/24" in forward[1]


@pytest.mark.parametrize("backend", backend_params())
def test_append_mode_hooks_go_last(cluster: Cluster, backend: str) -> None:
    files = render_program(workloads_program(chain_insert_mode="append")).files
    node = cluster.add_node("n1")
    iptables_tool.restore(FOREIGN, family=4, backend=backend, netns=node.name)
    for _ in range(2):
        apply(files, backend=backend, netns=node.name)
    saved = iptables_tool.save(family=4, backend=backend, netns=node.name)
    inputs = [r for r in parse_save(saved)["filter"].rules if r.startswith("-A INPUT")]
    assert inputs == [
        "-A INPUT -j KUBE-FIREWALL",
        '-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT',
    ]


@pytest.mark.parametrize("backend", backend_params())
def test_stale_chains_and_sets_go(cluster: Cluster, backend: str) -> None:
    node = cluster.add_node("n1")
    first, second = render_program(workloads_program()), render_program(hosts_program())
    apply(first.files, backend=backend, netns=node.name)
    left = apply(second.files, backend=backend, netns=node.name)
    assert left == []
    for family in (4, 6):
        got = own_rules(iptables_tool.save(family=family, backend=backend, netns=node.name))
        want = _restore_input_rules(second.rules[family])
        for table in got:
            assert set(got[table]) <= set(want[table]), f"stale chains in {table}"
    assert set(ipset_tool.list_names(netns=node.name)) == {d.name for d in second.sets}


@pytest.mark.parametrize("backend", backend_params())
def test_failed_load_keeps_previous_rules(cluster: Cluster, backend: str) -> None:
    node = cluster.add_node("n1")
    good = render_program(workloads_program()).files
    apply(good, backend=backend, netns=node.name)
    before = iptables_tool.save(family=4, backend=backend, netns=node.name)
    broken = dict(good)
    text = good[RULES_FILE[4]].decode()
    broken[RULES_FILE[4]] = text.replace(
        "-j tt-from-wl-dispatch", "-j tt-no-such-chain", 1
    ).encode()
    with pytest.raises(iptables_tool.IptablesError) as err:
        apply(broken, backend=backend, netns=node.name)
    assert err.value.argv and err.value.stderr
    after = iptables_tool.save(family=4, backend=backend, netns=node.name)
    assert own_rules(after) == own_rules(before)


@pytest.mark.parametrize("backend", backend_params())
def test_set_only_update_applies_in_place(cluster: Cluster, backend: str) -> None:
    """Dropping shop/web from the db policy's source set is a set-only change: the update
    refills that one set atomically, and traffic follows at once."""
    old = workloads_program()
    src = next(
        s for s in old.sets.values() if s.family == 4 and 'app in {"api", "web"}' in s.selector
    )
    web = ipaddress.ip_network("10.65.0.1/32")
    assert web in (src.members or ())
    new = ir.replace_program(
        old, sets={**old.sets, src.id: dataclasses.replace(src, members=src.members - {web})}
    )
    update = render_set_update(old, new)
    assert update and "swap" in update and "create" in update
    assert render_set_update(old, old) == ""

    topo = IptTopology.make(cluster, {"node1": old}, backend)
    topo.load()
    probe = topo.probe("shop/web", "10.65.0.2", "TCP", 5432)
    assert send_probes(cluster, [probe])[probe] is True
    ipset_tool.restore(update, netns=topo.nodes["node1"].name)
    probe2 = topo.probe("shop/web", "10.65.0.2", "TCP", 5432)
    assert send_probes(cluster, [probe2], timeout=0.5)[probe2] is False
    assert evaluate(new, topo.flow(probe2)).allowed is False
    from compiler.targets.iptables.names import set_name

    name = set_name(src.id, 4)
    assert ipset_tool.members(name, netns=topo.nodes["node1"].name) == ["10.65.0.3"]
    assert not [
        n for n in ipset_tool.list_names(netns=topo.nodes["node1"].name) if n.startswith("tt4t")
    ]


# -- real traffic --------------------------------------------------------------------------------


WORKLOAD_PORTS = (22, 80, 5432, 7005, 7105, 7400, 8080, 8081, 9005, 9999)
OUTSIDE = ("203.0.113.10", "203.0.113.5", "10.99.1.1", "192.0.2.10", "2001:db8::5")


@pytest.mark.parametrize("backend", backend_params())
def test_workloads_traffic_matches_evaluator(cluster: Cluster, backend: str) -> None:
    prog = workloads_program()
    topo = IptTopology.make(cluster, {"node1": prog}, backend, externals=OUTSIDE)
    topo.load()
    probes = topo.pod_probes(WORKLOAD_PORTS, OUTSIDE)
    for ext in OUTSIDE:
        key = topo.externals[ext]
        for pod in ("10.65.0.1", "10.65.0.2", "fd00:65::2"):
            if ipaddress.ip_address(pod).version == ipaddress.ip_address(ext).version:
                probes += [topo.probe(key, pod, "TCP", p) for p in (22, 5432, 8080)]
                probes.append(topo.probe(key, pod, "ICMP", None))
    errors = run_and_compare(topo, probes)
    assert not errors, "\n".join(errors)
    verdicts = {evaluate(prog, topo.flow(p)).allowed for p in probes}
    assert verdicts == {True, False}


@pytest.mark.parametrize("backend", backend_params())
def test_reject_ends_tcp_probes_early(cluster: Cluster, backend: str) -> None:
    prog = workloads_program(deny_action="Reject")
    topo = IptTopology.make(cluster, {"node1": prog}, backend)
    topo.load()
    probes = topo.pod_probes((22, 5432))
    denied = [p for p in probes if p.protocol == "TCP" and not evaluate(prog, topo.flow(p)).allowed]
    assert denied
    t0 = time.monotonic()
    results = send_probes(cluster, denied, timeout=5.0)
    assert time.monotonic() - t0 < 2.0  # rejected, not left to time out
    assert not any(results.values())
    errors = run_and_compare(topo, probes, timeout=1.0)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("backend", backend_params())
def test_host_endpoints_traffic_matches_evaluator(cluster: Cluster, backend: str) -> None:
    """``*`` HEP (10.65.9.1) with normal, untracked (UDP 5000/5001) and preDNAT policy; eth0
    HEP (192.168.100.1) with the default-allow profile; failsafes; pod -> host with
    defaultEndpointToHostAction Return; host -> pod; outside -> host and pods; REJECT."""
    prog = hosts_program()
    topo = IptTopology.make(
        cluster,
        {"node1": prog},
        backend,
        externals=["203.0.113.9", "198.51.100.20"],
        uplinks=[("eth0", "198.18.50.1", "fd00:ff50::1", "198.18.50.2", "fd00:ff50::2")],
    )
    topo.load()
    sources = [
        "shop/web",
        "ops/probe",
        "ext-eth0",
        topo.externals["203.0.113.9"],
        topo.externals["198.51.100.20"],
        "node1",
    ]
    dests = [
        "10.65.9.1",
        "fd00:65:9::1",
        "192.168.100.1",
        "fd00:100::1",
        "10.65.1.1",
        "10.65.0.1",
        "fd00:65::1",
    ]
    probes = []
    for src, dst in itertools.product(sources, dests):
        version = ipaddress.ip_address(dst).version
        if not any(a.version == version for a in topo.cluster.get(src).addresses):
            continue
        if topo.cluster.owner(dst) is topo.cluster.get(src):
            continue
        probes.append(topo.probe(src, dst, "ICMP", None))
        for port in (22, 68, 80, 6443, 8080, 30080):
            probes.append(topo.probe(src, dst, "TCP", port))
        for port in (53, 68, 5000, 5001, 5353):
            probes.append(topo.probe(src, dst, "UDP", port))
    errors = run_and_compare(topo, probes, timeout=1.0)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("backend", backend_params())
def test_apply_on_forward_egress(cluster: Cluster, backend: str) -> None:
    """Pod -> outside through the eth0 HEP: its applyOnForward egress policy allows TCP only.
    The evaluator consults forward hooks when told the HEP (``via``)."""
    prog = hosts_program()
    topo = IptTopology.make(
        cluster,
        {"node1": prog},
        backend,
        uplinks=[("eth0", "198.18.50.1", "fd00:ff50::1", "198.18.50.2", "fd00:ff50::2")],
    )
    topo.load()
    probes = [topo.probe("shop/web", "198.18.50.2", proto, 80) for proto in ("TCP", "UDP")]
    probes += [topo.probe("shop/web", "198.18.50.2", "ICMP", None)]
    results = send_probes(topo.cluster, probes, timeout=1.0)
    want = {p: evaluate(prog, topo.flow(p), via="node1-eth0").allowed for p in probes}
    assert results == want
    assert [want[p] for p in probes] == [True, False, False]


@pytest.mark.parametrize("backend", backend_params())
def test_log_rules_log_and_continue(cluster: Cluster, backend: str) -> None:
    """A Log rule is not terminal: the packet goes on (here to a deny), and the LOG rule
    counted it."""
    prog = workloads_program()
    topo = IptTopology.make(cluster, {"node1": prog}, backend)
    topo.load()
    probe = topo.probe("ops/probe", "10.65.0.1", "TCP", 22)
    assert (
        send_probes(cluster, [probe], timeout=0.5)[probe]
        is evaluate(prog, topo.flow(probe)).allowed
        is False
    )
    out = iptables_tool.save(
        family=4, backend=backend, table="filter", counters=True, netns=topo.nodes["node1"].name
    )
    logs = [line for line in out.splitlines() if "-j LOG" in line and "--dport 22" in line]
    assert logs and all(re.match(r"\[[1-9]\d*:\d+\]", line) for line in logs), logs


@pytest.mark.parametrize("backend", backend_params())
def test_many_workloads_through_the_dispatch_tree(cluster: Cluster, backend: str) -> None:
    prog = many_pods_program(40)
    topo = IptTopology.make(cluster, {"node1": prog}, backend)
    topo.load()
    pods = sorted(e for e in topo.pods)
    probes = []
    for i, a in enumerate(pods):
        b = pods[(i * 7 + 3) % len(pods)]
        dst = str(next(ip for e in prog.endpoints if e.id == b for ip in e.ips))
        probes += [topo.probe(a, dst, "TCP", 80), topo.probe(a, dst, "TCP", 81)]
    errors = run_and_compare(topo, probes)
    assert not errors, "\n".join(errors)
    assert [evaluate(prog, topo.flow(p)).allowed for p in probes[:2]] == [True, False]


# -- the demo example --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", backend_params())
def test_demo_example_traffic_matches_evaluator(cluster: Cluster, backend: str) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "demo"
    text = "\n---\n".join(p.read_text() for p in sorted(root.rglob("*.yaml")))
    programs = {n: compile_yaml(text, n, "demo.yaml") for n in ("node1", "node2")}
    prog = programs["node1"]
    pods = sorted({e.node for e in prog.endpoints if not e.is_host})
    programs = {n: programs[n] for n in pods if n in programs}
    outside = ["203.0.113.10", "10.65.1.200"]
    topo = IptTopology.make(cluster, programs, backend, externals=outside)
    topo.load()
    local = [e for e in topo.program.endpoints if not e.is_host and e.id in topo.pods]
    ports: set[int] = {80, 443, 5432}
    for e in local:
        ports.update(p.port for p in e.ports)
    probes = []
    for a, b in itertools.permutations(local, 2):
        for addr in b.ips:
            if addr.version in {x.version for x in a.ips}:
                probes.append(topo.probe(a.id, str(addr), "ICMP", None))
                probes += [topo.probe(a.id, str(addr), "TCP", p) for p in sorted(ports)]
    for ext in outside:
        for b in local:
            probes += [
                topo.probe(topo.externals[ext], str(ip), "TCP", p)
                for ip in b.ips
                if ip.version == 4
                for p in sorted(ports)
            ]
    errors = run_and_compare(topo, probes)
    assert not errors, "\n".join(errors)
