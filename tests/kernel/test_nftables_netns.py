"""The nftables script in a real kernel: load, read back, reload, survive others' tables, fail
atomically, apply set-only updates, and decide real traffic exactly as the evaluator does."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import re
from collections.abc import Iterator

import pytest

from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.targets.nftables import render_program, render_set_update
from compiler.tools import nft
from runtime.nftables import json_counts, listing_counts
from tests.support.compare import run_and_compare
from tests.support.netns import Cluster
from tests.support.topology import NftTopology
from tests.support.traffic import send_probes
from tests.targets.test_nftables_programs import host_program, workloads_program

pytestmark = pytest.mark.kernel

OTHER_TABLES = """
table ip kube-proxy {
    chain kube-services { type nat hook prerouting priority dstnat; policy accept; }
    chain kube-filter {
        type filter hook forward priority -110; policy accept;
        ip daddr 10.96.0.1 tcp dport 443 counter accept
    }
}
table inet filter {
    chain input { type filter hook input priority 0; policy accept; }
}
"""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


def _objects(netns: str, kind: str) -> dict[str, dict]:
    out = {}
    for item in nft.list_ruleset_json(netns=netns):
        if kind in item and item[kind].get("table") == "tortie":
            out[item[kind]["name"]] = item[kind]
    return out


def test_load_readback_and_other_tables_survive(cluster: Cluster) -> None:
    node = cluster.add_node("n1")
    nft.load(OTHER_TABLES, netns=node.name)
    before = nft.list_table("ip", "kube-proxy", netns=node.name)
    rendered = render_program(workloads_program())
    nft.load(rendered.script, netns=node.name)
    nft.load(rendered.script, netns=node.name)

    tables = {
        (t["table"]["family"], t["table"]["name"])
        for t in nft.list_ruleset_json(netns=node.name)
        if "table" in t
    }
    assert tables == {("ip", "kube-proxy"), ("inet", "filter"), ("inet", "tortie")}
    assert nft.list_table("ip", "kube-proxy", netns=node.name) == before

    chains = _objects(node.name, "chain")
    script_chains = {
        line.split()[1] for line in rendered.script.splitlines() if line.startswith("\tchain ")
    }
    assert set(chains) == script_chains
    assert chains["forward"]["hook"] == "forward" and chains["forward"]["prio"] == 0
    sets = _objects(node.name, "set")
    for decl in rendered.sets:
        elems = sets[decl.name].get("elem", [])
        assert len(elems) == len(decl.elements), decl.name
    rules = [x for x in nft.list_table_json("inet", "tortie", netns=node.name) if "rule" in x]
    assert len(rules) == rendered.summary["rules"]


def test_listing_counts_match_nft_json(cluster: Cluster) -> None:
    """The runtime counts objects from the text listing (runtime/nftables.py: the JSON listing
    costs seconds at scale): the same numbers as nft's JSON, with maps, set elements, intervals
    and named-port sets in the table."""
    node = cluster.add_node("n1")
    for program in (workloads_program(), host_program()):
        nft.load(render_program(program).script, netns=node.name)
        listing = nft.list_table("inet", "tortie", netns=node.name)
        objects = nft.list_table_json("inet", "tortie", netns=node.name)
        counts = listing_counts(listing)
        assert counts == json_counts(objects)
        assert counts is not None and counts["elements"] > 0 and counts["maps"] > 0


def test_reload_is_idempotent(cluster: Cluster) -> None:
    node = cluster.add_node("n1")
    script = render_program(host_program()).script
    listings = []
    for _ in range(3):
        nft.load(script, netns=node.name)
        listings.append(nft.list_table("inet", "tortie", netns=node.name))
    assert listings[0] == listings[1] == listings[2]


def test_failed_load_keeps_previous_table(cluster: Cluster) -> None:
    node = cluster.add_node("n1")
    good = render_program(workloads_program()).script
    nft.load(good, netns=node.name)
    before = nft.list_table("inet", "tortie", netns=node.name)
    broken = render_program(host_program()).script.replace(
        "ct state invalid drop", "ct state invalid frobnicate", 1
    )
    broken = broken.replace("chain forward {", "chain forward {\n\t\tjump no-such-chain", 1)
    with pytest.raises(nft.NftError) as err:
        nft.load(broken, netns=node.name)
    assert "nft" in err.value.argv and err.value.stderr
    assert nft.list_table("inet", "tortie", netns=node.name) == before


def test_set_update_applies_in_place(cluster: Cluster) -> None:
    node = cluster.add_node("n1")
    old = workloads_program()
    nft.load(render_program(old).script, netns=node.name)
    web = old.sets["s:web:4"]
    new_members = frozenset(
        {ipaddress.ip_network("10.65.0.0/30"), ipaddress.ip_network("10.9.9.9/32")}
    )
    new = ir.replace_program(
        old, sets={**old.sets, web.id: dataclasses.replace(web, members=new_members)}
    )
    update = render_set_update(old, new)
    assert update
    nft.load(update, netns=node.name)
    # The table now lists exactly what a full load of the new program lists.
    after_update = nft.list_table("inet", "tortie", netns=node.name)
    nft.load(render_program(new).script, netns=node.name)
    assert nft.list_table("inet", "tortie", netns=node.name) == after_update


# -- real traffic ----------------------------------------------------------------------------


def _ips(topo: NftTopology, key: str) -> list:
    return topo.cluster.get(key).addresses


def test_workloads_traffic_matches_evaluator(cluster: Cluster) -> None:
    prog = workloads_program()
    topo = NftTopology.build(cluster, {"n1": prog})
    topo.load()
    probes = topo.pod_probes((22, 80, 443, 8080, 8150, 9000))
    errors = run_and_compare(topo, probes)
    assert not errors, "\n".join(errors)
    # The program really discriminates: some probes are denied, some allowed.
    verdicts = {evaluate(prog, topo.flow(p)).allowed for p in probes}
    assert verdicts == {True, False}


def test_reject_ends_tcp_probes_early(cluster: Cluster) -> None:
    from compiler.frontend.model import FelixConfig

    prog = workloads_program(FelixConfig(deny_action="Reject"))
    topo = NftTopology.build(cluster, {"n1": prog})
    topo.load()
    probes = topo.pod_probes((22, 80))
    errors = run_and_compare(topo, probes, timeout=3.0)
    assert not errors, "\n".join(errors)


def test_host_endpoints_traffic_matches_evaluator(cluster: Cluster) -> None:
    """``*`` HEP (10.65.9.1) with normal, untracked and preDNAT policy; eth0 HEP
    (192.168.100.1, fd00:100::1) with the default-allow profile; failsafes; pod -> host with
    defaultEndpointToHostAction Return; host -> pod; external -> host and pods."""
    prog = host_program()
    topo = NftTopology.build(
        cluster,
        {"n1": prog},
        externals=["203.0.113.9", "10.1.2.3"],
        uplinks=[("eth0", "198.18.50.1", "fd00:ff50::1", "198.18.50.2", "fd00:ff50::2")],
    )
    topo.load()
    pod = "ns1/a"
    sources = [pod, "ext-eth0", topo.externals["203.0.113.9"], topo.externals["10.1.2.3"], "n1"]
    dests = ["10.65.9.1", "192.168.100.1", "fd00:100::1", "10.65.0.1", "fd00:65::1"]
    probes = []
    for src, dst in itertools.product(sources, dests):
        version = ipaddress.ip_address(dst).version
        if not any(a.version == version for a in _ips(topo, src)):
            continue
        if topo.cluster.owner(dst) is topo.cluster.get(src):
            continue
        probes.append(topo.probe(src, dst, "ICMP", None))
        for port in (22, 68, 80, 6443, 8080, 30080):
            probes.append(topo.probe(src, dst, "TCP", port))
        for port in (53, 68, 5353):
            probes.append(topo.probe(src, dst, "UDP", port))
    errors = run_and_compare(topo, probes, timeout=1.0)
    assert not errors, "\n".join(errors)


def test_apply_on_forward_egress(cluster: Cluster) -> None:
    """Pod -> outside through the eth0 HEP: its applyOnForward egress policy allows TCP only.
    The evaluator consults forward hooks when told the HEP (``via``)."""
    prog = host_program()
    topo = NftTopology.build(
        cluster,
        {"n1": prog},
        uplinks=[("eth0", "198.18.50.1", "fd00:ff50::1", "198.18.50.2", "fd00:ff50::2")],
    )
    topo.load()
    probes = [topo.probe("ns1/a", "198.18.50.2", proto, 80) for proto in ("TCP", "UDP")] + [
        topo.probe("ns1/a", "198.18.50.2", "ICMP", None)
    ]
    results = send_probes(topo.cluster, probes, timeout=1.0)
    want = {p: evaluate(prog, topo.flow(p), via="n1-eth0").allowed for p in probes}
    assert results == want
    assert [want[p] for p in probes] == [True, False, False]


def test_log_rules_log_and_continue(cluster: Cluster) -> None:
    """A Log rule is not terminal: the packet goes on, and the kernel counted a log."""
    prog = workloads_program()
    topo = NftTopology.build(cluster, {"n1": prog})
    script = render_program(prog).script.replace(
        'log prefix "calico-packet: "', 'counter log prefix "calico-packet: "'
    )
    topo.load({"n1": script})
    probe = topo.probe("ns1/c", "10.65.0.1", "TCP", 22)
    results = send_probes(topo.cluster, [probe], timeout=1.0)
    assert results[probe] is evaluate(prog, topo.flow(probe)).allowed is False
    chain = json.dumps(nft.list_table_json("inet", "tortie", netns=topo.nodes["n1"].name))
    assert re.search(r'"packets": [1-9]', chain), chain


def test_set_update_changes_traffic(cluster: Cluster) -> None:
    """A set-only update (no table reload) changes verdicts exactly as the new program says."""
    old = workloads_program()
    topo = NftTopology.build(cluster, {"n1": old})
    topo.load()
    web = old.sets["s:web:4"]
    grown = web.members | {ipaddress.ip_network("10.65.0.3/32")}
    new = ir.replace_program(
        old, sets={**old.sets, web.id: dataclasses.replace(web, members=grown)}
    )
    probes = [topo.probe("ns1/c", dst, "TCP", 80) for dst in ("10.65.0.1", "10.65.0.2")]
    before = send_probes(topo.cluster, probes, timeout=0.5)
    assert before == {p: False for p in probes}
    update = render_set_update(old, new)
    assert update and "add element" in update and "chain" not in update
    nft.load(update, netns=topo.nodes["n1"].name)
    probes = [topo.probe("ns1/c", dst, "TCP", 80) for dst in ("10.65.0.1", "10.65.0.2")]
    after = send_probes(topo.cluster, probes, timeout=0.5)
    assert (
        after
        == {p: evaluate(new, topo.flow(p)).allowed for p in probes}
        == {p: True for p in probes}
    )
