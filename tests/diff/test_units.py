"""The diff's building blocks alone: pieces, address sweep, artifact parsers, staged promotion,
and every docstring example of ``compiler.diff``."""

from __future__ import annotations

import doctest
import importlib
import ipaddress
import pkgutil

import pytest

import compiler.diff
from compiler.diff import addresses, semantic_diff
from compiler.diff.artifacts import diff_artifacts, parse_ipset, parse_iptables, parse_nft
from compiler.diff.services import Locator, Mentions, Piece, refine
from compiler.diff.staged import promote
from compiler.frontend.model import Policy, ResourceSet
from tests.diff.cluster import CLUSTER, load
from tests.diff.test_cases import API


@pytest.mark.parametrize(
    "name", sorted(m.name for m in pkgutil.iter_modules(compiler.diff.__path__))
)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"compiler.diff.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0


def test_pieces_cut_at_every_boundary() -> None:
    m = Mentions()
    m.protocols |= {6, 1}
    m.dst_bounds[6] = {80, 81, 8000, 8101}
    m.icmp[1] = {8: {0}}
    texts = [p.text() for p in m.pieces()]
    assert texts == [
        "ICMP type 8 code 0",
        "ICMP type 8 codes 1-255",
        "ICMP types 0-7, 9-255",
        "TCP 1-79",
        "TCP 80",
        "TCP 81-7999",
        "TCP 8000-8100",
        "TCP 8101-65535",
        "any protocol except ICMP, TCP",
    ]
    # A partition covers every protocol exactly once.
    assert sum(len(p.protocols) for p in m.pieces() if p.single is None) + 2 == 255


def test_refine_and_locate_agree() -> None:
    a, b = Mentions(), Mentions()
    a.protocols.add(6)
    a.dst_bounds[6] = {80, 81}
    b.protocols |= {6, 17}
    b.dst_bounds[6] = {1000, 2001}
    both = refine(a.pieces(), b.pieces())
    loc_a, loc_b = Locator(a), Locator(b)
    for piece, (i, j) in both:
        assert loc_a.locate(piece) == i and loc_b.locate(piece) == j
    assert sorted(p.text() for p, _ in both if p.single == 6) == [
        "TCP 1-79",
        "TCP 1000-2000",
        "TCP 2001-65535",
        "TCP 80",
        "TCP 81-999",
    ]
    assert Piece(frozenset({6}), (80, 80), (1, 65535)).probe() == (6, 1, 80, None, None)


def test_sweep_cuts_points_and_nested_prefixes() -> None:
    net = ipaddress.ip_network
    regions = addresses.sweep(
        {
            net("10.0.0.0/8"): frozenset({"a"}),
            net("10.1.0.0/16"): frozenset({"b"}),
            net("192.168.0.0/16"): frozenset({"c"}),
        },
        [int(ipaddress.ip_address("10.1.0.1"))],
        4,
    )
    spans = [
        (
            str(ipaddress.ip_address(r.lo)),
            str(ipaddress.ip_address(r.hi)),
            "".join(sorted(r.tags)),
            r.point,
        )
        for r in regions
    ]
    assert spans == [
        ("0.0.0.0", "9.255.255.255", "", False),
        ("10.0.0.0", "10.0.255.255", "a", False),
        ("10.1.0.0", "10.1.0.0", "ab", False),
        ("10.1.0.1", "10.1.0.1", "ab", True),
        ("10.1.0.2", "10.1.255.255", "ab", False),
        ("10.2.0.0", "10.255.255.255", "a", False),
        ("11.0.0.0", "192.167.255.255", "", False),
        ("192.168.0.0", "192.168.255.255", "c", False),
        ("192.169.0.0", "255.255.255.255", "", False),
    ]


def test_external_classes_follow_both_trees() -> None:
    """A CIDR only the head mentions still cuts the external addresses of both trees."""
    block = API.replace(
        "{namespaceSelector: {matchLabels: {team: web}}}", "{ipBlock: {cidr: 192.168.0.0/16}}"
    )
    d = semantic_diff(load(API), load(block))
    (g,) = [g for g in d.groups if g.sources.kind == "external"]
    assert g.sources.names == ("192.168.0.0/16",)
    assert g.now_allowed and g.services.text() == "IPv4: TCP 8080"


NODES = """\
apiVersion: v1
kind: Node
metadata: {name: node1}
status: {addresses: [{type: InternalIP, address: 10.9.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
status: {addresses: [{type: InternalIP, address: 10.9.0.2}]}
"""

FELIX = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {defaultEndpointToHostAction: %s}
"""


def test_workload_to_its_own_node() -> None:
    """defaultEndpointToHostAction decides pod -> own node; other nodes keep their verdict."""
    d = semantic_diff(load(NODES, FELIX % "Drop"), load(NODES, FELIX % "Accept"))
    got = sorted((g.sources.names, g.destinations.names, g.services.text()) for g in d.groups)
    assert got == [
        (("backend/api-0",), ("node1",), "IPv4: any protocol"),
        (("backend/api-1", "backend/db-0"), ("node2",), "IPv4: any protocol"),
        (("frontend/web-0", "frontend/web-1"), ("node1",), "IPv4: any protocol"),
        (("other/tool-0",), ("node2",), "IPv4: any protocol"),
    ]
    for g in d.groups:
        assert (
            g.before.short()
            == "denied: workload to its own node: defaultEndpointToHostAction (Deny)"
        )
        assert g.after.short().endswith(
            "ingress workload to its own node: defaultEndpointToHostAction (Allow)"
        )


def test_nft_parser_multiline_elements_and_chains() -> None:
    text = """\
table inet t {}
delete table inet t
table inet t {
\tmap m {
\t\ttype ifname : verdict
\t\telements = { "a" : jump c1,
\t\t             "b" : jump c2 }
\t}
\tchain c1 {
\t\t# a comment
\t\tip saddr @s accept comment "x { y"
\t\ttcp dport { 80, 443 } drop
\t}
}
"""
    objs = parse_nft(text)
    assert objs["map m"].elements == frozenset({'"a" : jump c1', '"b" : jump c2'})
    assert objs["chain c1"].body == (
        'ip saddr @s accept comment "x { y"',
        "tcp dport { 80, 443 } drop",
    )


def test_iptables_and_ipset_parsers() -> None:
    rules = parse_iptables(
        "*filter\n:tt-a - [0:0]\n-A tt-a -j ACCEPT\n-I INPUT 1 -j tt-a\nCOMMIT\n"
    )
    assert rules["filter:tt-a"].body == ("-A tt-a -j ACCEPT",)
    assert rules["filter:INPUT"].body == ("-I INPUT 1 -j tt-a",)
    sets = parse_ipset(
        "create s hash:net family inet -exist\ncreate t hash:net family inet -exist\nflush t\n"
        "add t 10.0.0.1/32\nswap t s\ndestroy t\n"
    )
    assert list(sets) == ["s"] and sets["s"].elements == frozenset({"10.0.0.1/32"})


def test_artifact_diff_kinds() -> None:
    a = {"x.rules": b"*filter\n:tt-a - [0:0]\n-A tt-a -j ACCEPT\nCOMMIT\n", "blob.o": b"1"}
    b = {
        "x.rules": b"*filter\n:tt-a - [0:0]\n:tt-b - [0:0]\n-A tt-a -j DROP\nCOMMIT\n",
        "blob.o": b"2",
    }
    d = diff_artifacts("iptables", "n", a, b)
    got = {(o.name, o.change, o.body_added, o.body_removed) for o in d.objects if o.kind == "chain"}
    assert got == {
        ("x.rules: filter:tt-a", "changed", ("-A tt-a -j DROP",), ("-A tt-a -j ACCEPT",)),
        ("x.rules: filter:tt-b", "added", (), ()),
    }
    assert [o.change for o in d.objects if o.kind == "file"] == ["changed"]
    assert not d.only_elements


def test_staged_promotion() -> None:
    rs = ResourceSet(
        policies=(
            Policy("NetworkPolicy", "keep", "ns", order=1.0),
            Policy("NetworkPolicy", "repl", "ns", order=1.0),
            Policy("StagedNetworkPolicy", "repl", "ns", order=2.0, staged=True),
            Policy("StagedNetworkPolicy", "gone", "ns", staged=True, staged_action="Delete"),
            Policy("StagedNetworkPolicy", "learn", "ns", staged=True, staged_action="Learn"),
            Policy("StagedKubernetesNetworkPolicy", "k", "ns", staged=True),
        )
    )
    head, notes = promote(rs)
    assert [(p.id, p.order, p.staged) for p in head.policies] == [
        ("knp/ns/k", None, False),
        ("np/ns/keep", 1.0, False),
        ("np/ns/repl", 2.0, False),
    ]
    assert [n.text() for n in notes] == [
        "sknp/ns/k (Set): creates knp/ns/k",
        "snp/ns/gone (Delete): nothing to delete np/ns/gone",
        "snp/ns/learn (Learn): not enforced",
        "snp/ns/repl (Set): replaces np/ns/repl",
    ]


def test_the_test_cluster_loads() -> None:
    assert len(load().endpoints) == 6 and CLUSTER.count("kind: Pod") == 6
