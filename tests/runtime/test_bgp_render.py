"""BIRD 2 configuration from BGP resources (runtime/bgp): goldens, bird -p, semantics, safety.

Goldens live in ``tests/runtime/golden/bgp/<topology>/``: ``input.yaml`` (read through the
frontend), ``ipam.json`` (an IPAM state file), ``secrets.json`` and one ``<node>.bird.cfg`` per
node rendered. On a mismatch the test writes ``<golden>.actual`` next to it and fails with a diff
(accept with ``mv``); ``TORTIE_UPDATE_GOLDENS=1`` rewrites the goldens.
"""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load_text
from compiler.frontend.model import (
    BGPConfiguration,
    BGPPeer,
    Community,
    IPPool,
    Node,
    PrefixAdvertisement,
    ResourceSet,
)
from compiler.tools import bird
from runtime.bgp.build import BuildOptions, build_config
from runtime.bgp.render import render, render_node
from runtime.bgp.text import UnsafeText, bird_string
from runtime.ipam_state import Block, IPAMState
from tests.support.golden import assert_golden
from tests.support.hash_seed import python_stdout

GOLDEN = Path(__file__).resolve().parent / "golden" / "bgp"
CASES = [
    ("mesh", "node-a"),
    ("mesh", "node-c"),
    ("route-reflector", "rr-1"),
    ("route-reflector", "client-1"),
    ("explicit-peers", "node-a"),
    ("explicit-peers", "node-b"),
]
needs_bird = pytest.mark.skipif(not bird.available(), reason="bird/birdc (bird2) not installed")

iface = ipaddress.ip_interface
net = ipaddress.ip_network


def load_case(
    topology: str, text: str | None = None
) -> tuple[ResourceSet, IPAMState, dict[str, str]]:
    d = GOLDEN / topology
    sink, sources = DiagnosticSink(), SourceRegistry()
    rs = load_text(
        text if text is not None else (d / "input.yaml").read_text(), "input.yaml", sink, sources
    )
    assert not sink.diagnostics, sink.diagnostics
    state = IPAMState.from_json((d / "ipam.json").read_text())
    return rs, state, json.loads((d / "secrets.json").read_text())


def render_case(topology: str, node: str, text: str | None = None) -> str:
    rs, state, secrets = load_case(topology, text)
    sink = DiagnosticSink()
    out = render_node(rs, node, state.sorted_blocks(), sink, secrets=secrets)
    assert out is not None and not sink.diagnostics, sink.diagnostics
    return out


@pytest.mark.parametrize(("topology", "node"), CASES, ids=[f"{t}-{n}" for t, n in CASES])
def test_golden(topology: str, node: str) -> None:
    assert_golden(render_case(topology, node), GOLDEN / topology / f"{node}.bird.cfg")


@needs_bird
@pytest.mark.parametrize(("topology", "node"), CASES, ids=[f"{t}-{n}" for t, n in CASES])
def test_bird_accepts(topology: str, node: str, tmp_path: Path) -> None:
    path = tmp_path / "bird.cfg"
    path.write_text(render_case(topology, node))
    bird.check_config(str(path))


def test_deterministic_across_document_order_and_hash_seed() -> None:
    text = (GOLDEN / "mesh" / "input.yaml").read_text()
    docs = text.split("\n---\n")
    random.Random(7).shuffle(docs)
    assert render_case("mesh", "node-a", "\n---\n".join(docs)) == render_case("mesh", "node-a")
    code = (
        "import sys; from tests.runtime.test_bgp_render import render_case; "
        "sys.stdout.write(render_case('route-reflector', 'rr-1'))"
    )
    outs = {python_stdout(code, seed=seed) for seed in ("1", "2")}
    assert outs == {render_case("route-reflector", "rr-1")}


# -- semantics ----------------------------------------------------------------------------------------


def test_mesh_semantics() -> None:
    text = render_case("mesh", "node-a")
    # passive towards greater address strings; the eBGP node keeps its own AS; listenPort.
    assert (
        "protocol bgp Mesh_192_168_10_2 from bgp_template {\n  local as 64512;\n  neighbor 192.168.10.2 port 1790 as 64512;"
        in text
    )
    assert "neighbor 192.168.10.3 as 64600;" in text
    assert text.count("passive on;") == 3  # .2, .3 and fd00:10::2 are all "greater" than us
    assert 'password "m3sh-s3cret";' in text and "graceful restart time 90;" in text
    assert "export filter tortie_export_ebgp_v4;" in text  # towards node-c (AS 64600)
    # blocks: confirmed aggregated, pending gets no decision and no static route.
    assert (
        "if ( net = 10.65.0.0/26 ) then {\n    if ( source = RTS_STATIC ) then accept;\n    reject;"
        in text
    )
    assert "10.65.0.64/26 ) then" not in text and "route 10.65.0.64/26" not in text
    assert "route 10.65.0.0/26 blackhole;" in text and "route fd00:65::/122 blackhole;" in text
    assert "10.65.1.0/26" not in text  # node-b's block
    assert "if ( net ~ 10.80.0.0/16 ) then reject; # disableBGPExport" in text
    assert (
        "bgp_community.add((64512, 100));" in text
        and "bgp_large_community.add((64512, 200, 300));" in text
    )
    assert '-"docker*"' in text
    c = render_case("mesh", "node-c")
    assert "router id 192.168.10.3;" in c and "local as 64600;" in c and "Mesh_fd00" not in c
    assert "passive on" not in c  # node-c has the greatest address


def test_route_reflector_semantics() -> None:
    rr = render_case("route-reflector", "rr-1")
    assert "Mesh_" not in rr  # route reflectors leave the mesh
    for client in ("192_168_20_11", "192_168_20_12"):
        block = rr.split(f"protocol bgp Node_{client} from bgp_template {{")[1].split("\n}")[0]
        assert "rr client;\n  rr cluster id 224.0.0.1;" in block
    other_rr = rr.split("protocol bgp Node_192_168_20_2 from bgp_template {")[1].split("\n}")[0]
    assert "rr client" not in other_rr and "passive on;" in other_rr
    assert "if ( net ~ 203.0.113.0/24 ) then accept; # service addresses" in rr
    client = render_case("route-reflector", "client-1")
    assert "protocol bgp Mesh_192_168_20_12" in client and "Mesh_192_168_20_1 " not in client
    assert "protocol bgp Node_192_168_20_1 from" in client and "rr client" not in client


def test_explicit_peer_semantics() -> None:
    a = render_case("explicit-peers", "node-a")
    assert "Mesh_" not in a
    tor = a.split("protocol bgp Global_192_168_30_254 from bgp_template {")[1].split("\n}")[0]
    for line in (
        "local 192.168.30.1 as 65010;",
        "ttl security on;",
        "multihop 1;",
        'password "t0r password with spaces!";',
        "graceful restart time 300;",
        "keepalive time 10;",
        "hold time 30;",
    ):
        assert line in tor
    rack = a.split("protocol bgp Node_192_168_30_253_port_1179 from bgp_template {")[1].split(
        "\n}"
    )[0]
    assert "neighbor 192.168.30.253 port 1179 as 65001;" in rack and "next hop keep;" in rack
    assert "allow local as 2;" in rack and "source address" not in rack and "passive" not in rack
    v6 = a.split("protocol bgp Node_fd00_30__fe from bgp_template {")[1].split("\n}")[0]
    assert "local fd00:30::1 as 65111;" in v6 and "next hop self;" in v6 and "ipv6 {" in v6
    assert "route fd00:30::fe/128 via fd00:30::ff;" in a
    assert "strict bind on;" in a and "debug all;" in a and "log syslog all;" in a
    assert "if ( net ~ 10.70.0.0/16 ) then reject; # VXLAN pool" in a
    assert "route 198.51.100.0/24 blackhole;" in a
    assert "# Block 10.70.0.0/26 is pendingDeletion: no decision here." in a
    assert "route 10.70.0.0/26 blackhole;" in a  # still affine: keep advertising until deleted
    b = render_case("explicit-peers", "node-b")
    assert "Node_192_168_30_252" in b and "192_168_30_253" not in b and "fd00_30" not in b
    assert "# This node has no IPv6 address: no IPv6 sessions." in b


# -- built from model objects ---------------------------------------------------------------------------


def two_nodes(**peer: object) -> ResourceSet:
    return ResourceSet(
        nodes=(Node("a", iface("10.0.0.1/24")), Node("b", iface("10.0.0.2/24"))),
        ip_pools=(IPPool("p", net("10.65.0.0/16"), 26),),
        bgp_peers=(BGPPeer("x", peer_ip="10.0.0.9", as_number=65000, **peer),) if peer else (),  # type: ignore[arg-type]
    )


def build(
    rs: ResourceSet, node: str = "a", secrets: dict[str, str] | None = None, **opts: object
) -> tuple[str | None, DiagnosticSink]:
    sink = DiagnosticSink()
    cfg = build_config(rs, node, [], sink, secrets=secrets, options=BuildOptions(**opts))  # type: ignore[arg-type]
    return (render(cfg) if cfg else None), sink


def test_single_address_blocks_have_no_static_route() -> None:
    rs = two_nodes()
    sink = DiagnosticSink()
    blocks = [Block(net("10.65.3.7/32"), "p", "a"), Block(net("10.65.0.0/26"), "p", "a", "pending")]
    cfg = build_config(rs, "a", blocks, sink)
    assert cfg is not None and not sink.diagnostics
    text = render(cfg)
    assert "if ( net = 10.65.3.7/32 ) then accept;" in text and "route 10.65.3.7/32" not in text
    assert (
        "route 10.65.0.0/26" not in text
        and "# Block 10.65.0.0/26 is pending: no decision here." in text
    )


def test_unknown_node_and_router_id_choices() -> None:
    text, sink = build(two_nodes(), "nope")
    assert text is None and [d.code for d in sink.diagnostics] == ["B004"]
    assert "router id 10.9.9.9;" in build(two_nodes(), router_id="10.9.9.9")[0]  # type: ignore[operator]
    hashed = build(two_nodes(), router_id="hash")[0]
    assert (
        hashed is not None
        and "router id 10.0.0.1;" not in hashed
        and hashed == build(two_nodes(), router_id="hash")[0]
    )
    v6only = ResourceSet(nodes=(Node("a", None, iface("fd00::1/64")),))
    assert "router id " in build(v6only)[0]  # type: ignore[operator]


def test_missing_secret_drops_the_session() -> None:
    text, sink = build(two_nodes(password="s/k"))
    assert [d.code for d in sink.errors] == ["B002"] and "Global_10_0_0_9" not in text  # type: ignore[operator]
    text, sink = build(two_nodes(password="s/k"), secrets={"s/k": "ok"})
    assert not sink.diagnostics and 'password "ok";' in text  # type: ignore[operator]


def test_unimplemented_peer_features_are_reported() -> None:
    text, sink = build(two_nodes(filters=("f1",)))
    assert [d.code for d in sink.errors] == ["B003"] and "Global_10_0_0_9" not in text  # type: ignore[operator]


def test_mesh_disabled_and_duplicates() -> None:
    rs = ResourceSet(
        nodes=two_nodes().nodes,
        bgp_configurations=(BGPConfiguration("default", node_to_node_mesh=False),),
    )
    assert "Mesh_" not in build(rs)[0]  # type: ignore[operator]
    dup = ResourceSet(
        nodes=two_nodes().nodes,
        bgp_peers=(
            BGPPeer("p1", peer_ip="10.0.0.9", as_number=1),
            BGPPeer("p2", node="a", peer_ip="10.0.0.9", as_number=2),
        ),
    )
    text, sink = build(dup)
    assert "Node_10_0_0_9" in text and "Global_10_0_0_9" not in text  # type: ignore[operator]
    assert [d.code for d in sink.warnings] == ["B005"]
    # An explicit peer to a mesh neighbour replaces the mesh session (no two sessions to one address).
    both = ResourceSet(nodes=two_nodes().nodes, bgp_peers=(BGPPeer("p", peer_selector="all()"),))
    text, sink = build(both)
    assert "Global_10_0_0_2" in text and "Mesh_10_0_0_2" not in text and not sink.diagnostics  # type: ignore[operator]


def test_reverse_peering_auto_and_manual() -> None:
    nodes = (
        Node("a", iface("10.0.0.1/24")),
        Node("b", iface("10.0.0.2/24"), labels=(("tor", "y"),)),
    )
    auto = ResourceSet(
        nodes=nodes,
        bgp_configurations=(BGPConfiguration("default", node_to_node_mesh=False),),
        bgp_peers=(BGPPeer("p", node="a", peer_selector="has(tor)"),),
    )
    assert "Node_10_0_0_1" in build(auto, "b")[0]  # type: ignore[operator]
    manual = ResourceSet(
        nodes=nodes,
        bgp_configurations=auto.bgp_configurations,
        bgp_peers=(BGPPeer("p", node="a", peer_selector="has(tor)", reverse_peering="Manual"),),
    )
    assert "Node_10_0_0_1" not in build(manual, "b")[0]  # type: ignore[operator]


# -- hostile values ---------------------------------------------------------------------------------------

HOSTILE = [
    'x"; }\nprotocol static evil { ipv4; route 0.0.0.0/0 blackhole; }\n#',
    "line\nbreak",
    'quote"only',
    "tab\there",
    "nul\x00byte",
    "esc\x1b[31m",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_bird_string_refuses_what_it_cannot_quote(value: str) -> None:
    with pytest.raises(UnsafeText):
        bird_string(value)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_never_reach_the_config(value: str, tmp_path: Path) -> None:
    """Values the frontend would reject (E026), fed straight to the builder: each is refused
    with a diagnostic, and what is rendered is still a config BIRD accepts with nothing added."""
    rs = ResourceSet(
        nodes=(
            Node(f"a{value}", iface("10.0.0.1/24"), route_reflector_cluster_id=value),
            Node("b", iface("10.0.0.2/24")),
        ),
        ip_pools=(IPPool(f"p{value}", net("10.65.0.0/16"), 26),),
        bgp_configurations=(
            BGPConfiguration(
                "default",
                ignored_interfaces=(value,),
                node_mesh_password="s/mesh",
                communities=(Community(value, "1:2"),),
                prefix_advertisements=(PrefixAdvertisement(net("10.65.0.0/16"), (value,)),),
            ),
        ),
        bgp_peers=(
            BGPPeer(f"peer{value}", peer_ip="10.0.0.9", as_number=65000, password="s/peer"),
        ),
    )
    sink = DiagnosticSink()
    blocks = [Block(net("10.65.0.0/26"), f"p{value}", f"a{value}")]
    cfg = build_config(rs, f"a{value}", blocks, sink, secrets={"s/mesh": value, "s/peer": value})
    assert cfg is not None
    text = render(cfg)
    codes = sorted({d.code for d in sink.errors})
    assert codes == ["B001", "B002"] or codes == ["B001"], sink.diagnostics
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "evil" not in code and "0.0.0.0/0" not in code and value not in text
    assert not any(line.startswith("protocol static evil") for line in text.splitlines())
    assert "password" not in text  # both sessions needed the hostile password: dropped
    assert all(ch == "\n" or ch.isprintable() for ch in text)
    if bird.available():
        path = tmp_path / "bird.cfg"
        path.write_text(text)
        bird.check_config(str(path))
