"""Support for the eBPF target's tests: hand-made programs, hypothesis strategies, loading an
artifact into a private bpffs, BPF_PROG_TEST_RUN verdicts, and a Cluster topology that attaches
the programs to the pods' ``cali*`` veths.

(Kept in a ``test_ebpf_*`` module so it lives with the tests that use it, like the nftables and
iptables support modules; its own tests at the bottom need no kernel.)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypothesis import strategies as st

from compiler.artifact import Artifact, write_artifact
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.targets.ebpf import EbpfTarget, layout, load, packets
from compiler.tools import bpftool, clang
from tests.support.topology import Topology

TC_ACT_OK, TC_ACT_SHOT = 0, 2


def bpf_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "eBPF kernel tests need root (bpffs mount, BPF_PROG_LOAD)"
    if not clang.available():
        return "clang is not installed"
    if not bpftool.available():
        return "bpftool is not installed"
    return None


requires_clang = pytest.mark.skipif(not clang.available(), reason="clang is not installed")
requires_bpf = pytest.mark.skipif(bpf_skip_reason() is not None, reason=bpf_skip_reason() or "")

# -- hand-made programs ------------------------------------------------------------------------

NODE = "n1"
A_V4, A_V6 = ipaddress.ip_address("10.65.0.1"), ipaddress.ip_address("fd00:65::1")
HOST_V4, HOST_V6 = ipaddress.ip_address("192.168.1.1"), ipaddress.ip_address("fd00:ff::1")
N = ipaddress.ip_network


def workload(
    eid: str,
    iface: str,
    ips: Sequence[str],
    plans: Mapping[str, tuple[ir.TierPlan, ...]],
    profiles: tuple[str, ...] = (),
    node: str = NODE,
) -> ir.Endpoint:
    ns, name = eid.split("/")
    return ir.Endpoint(
        id=eid,
        kind="WorkloadEndpoint",
        name=name,
        namespace=ns,
        node=node,
        interface=iface,
        ips=tuple(ipaddress.ip_address(i) for i in ips),
        labels=(("app", name),),
        profiles=profiles,
        plans=tuple(sorted(((ir.NORMAL, d), t) for d, t in plans.items())),
    )


def policy(pid: str, tier: str, ingress=(), egress=()) -> ir.Policy:  # type: ignore[no-untyped-def]
    return ir.Policy(
        id=pid,
        name=pid.rsplit("/", 1)[-1],
        namespace=None,
        kind="GlobalNetworkPolicy",
        tier=tier,
        order=None,
        selector="all()",
        types=(ir.INGRESS, ir.EGRESS),
        ingress=tuple(ingress),
        egress=tuple(egress),
    )


def rule(action: str, index: int = 0, **match: object) -> ir.Rule:
    return ir.Rule(action, ir.Match(**match), index)  # type: ignore[arg-type]


SETS = (
    ir.AddrSet("s:b:4", "app == 'b'", family=4, members=frozenset({N("10.65.0.2/32"), N("10.66.0.0/16")})),
    ir.AddrSet("s:b:6", "app == 'b'", family=6, members=frozenset({N("fd00:65::2/128")})),
    ir.AddrSet("s:c:4", "app == 'c'", family=4, members=frozenset({N("10.65.0.3/32")})),
    ir.AddrSet("s:c:6", "app == 'c'", family=6, members=frozenset({N("fd00:66::/32")})),
    ir.AddrSet(
        "n:http:4", "all()", port_name="http", port_protocol=6, family=4,
        port_members=frozenset({(N("10.65.0.2/32"), 6, 8080), (N("10.65.0.1/32"), 6, 80)}),
    ),
    ir.AddrSet(
        "n:http:6", "all()", port_name="http", port_protocol=6, family=6,
        port_members=frozenset({(N("fd00:65::2/128"), 6, 8080), (N("fd00:65::1/128"), 6, 80)}),
    ),
)  # fmt: skip


def one_endpoint_program(
    tiers: Sequence[tuple[str, str, Sequence[ir.Policy]]],
    profiles: Sequence[ir.Profile] = (),
    e2h: str = "Drop",
    sets: Sequence[ir.AddrSet] = SETS,
    extra_endpoints: Sequence[ir.Endpoint] = (),
) -> ir.Program:
    """Endpoint ``ns/a`` on node n1 with ``tiers`` = [(name, default action, policies)] applied
    in both directions, then ``profiles``."""
    plans = {
        d: tuple(
            ir.TierPlan(name, default, tuple(p.id for p in pols))
            for name, default, pols in tiers
            if any(p.rules(d) is not None for p in pols)
        )
        for d in ir.DIRECTIONS
    }
    a = workload(
        "ns/a", "caliaaaaaaaaaaa", [str(A_V4), str(A_V6)], plans, tuple(p.name for p in profiles)
    )
    return ir.make_program(
        node=NODE,
        tiers=tuple(ir.Tier(n, float(i), d) for i, (n, d, _) in enumerate(tiers)),
        policies=tuple(p for _, _, pols in tiers for p in pols),
        profiles=tuple(profiles),
        sets=tuple(sets),
        endpoints=(a, *extra_endpoints),
        selectables=(),
        felix=FelixConfig(default_endpoint_to_host_action=e2h),
        host_ips={NODE: (HOST_V4, HOST_V6)},
    )


# -- hypothesis strategies ---------------------------------------------------------------------

NETS = {
    4: [
        N("10.65.0.0/24"),
        N("10.66.0.0/16"),
        N("0.0.0.0/0"),
        N("10.65.0.2/32"),
        N("192.168.0.0/16"),
    ],
    6: [N("fd00:65::/64"), N("::/0"), N("fd00:66::/32"), N("2001:db8::/32"), N("fd00:65::2/128")],
}
MANY_NETS = {
    4: [N(f"172.16.{i}.0/24") for i in range(10)] + [N("10.65.0.2/32")],
    6: [N(f"2001:db8:{i}::/48") for i in range(10)] + [N("fd00:65::2/128")],
}
PEERS = {
    4: ["10.65.0.2", "10.65.0.2", "10.65.0.3", "10.66.1.5", "192.168.1.1", "8.8.8.8", "172.16.3.9"],
    6: ["fd00:65::2", "fd00:65::2", "fd00:66::5", "2001:db8::1", "fd00:ff::1", "2001:db8:3::9"],
}
PORT_RANGES = [(80, 80), (443, 443), (1000, 2000), (53, 53), (8080, 8080), (0, 65535)]
DST_PORTS = [80, 443, 999, 1000, 1500, 2000, 2001, 53, 8080, 9999]
SRC_PORTS = [1000, 1500, 2000, 2001, 40000]
ICMP = {4: 1, 6: 58}
ICMP_TYPES = {4: [8, 0, 3, 11], 6: [128, 129, 1, 3]}


def _rarely(strategy: st.SearchStrategy, default: object) -> st.SearchStrategy:
    """``default`` three times out of four: most rules constrain little, so flows match them."""
    return st.sampled_from([0, 0, 0, 1]).flatmap(lambda k: strategy if k else st.just(default))


@st.composite
def sides(draw: st.DrawFn, family: int, with_ports: bool, named: bool) -> ir.Side:
    sets = [f"s:b:{family}", f"s:c:{family}"]
    nets = draw(
        _rarely(
            st.one_of(
                st.lists(st.sampled_from(NETS[family]), max_size=2).map(tuple),
                st.just(tuple(MANY_NETS[family])),
            ),
            None,
        )
    )
    not_nets = draw(
        _rarely(st.lists(st.sampled_from(NETS[family][:2] + NETS[family][3:]), max_size=1), [])
    )
    ports = not_ports = None
    if with_ports:
        ranges = st.lists(st.sampled_from(PORT_RANGES), min_size=1, max_size=2).map(tuple)
        named_sets = (f"n:http:{family}",) if named and draw(st.booleans()) else ()
        if draw(st.booleans()):
            ports = ir.PortMatch(
                draw(ranges) if not named_sets or draw(st.booleans()) else (), named_sets
            )
        if draw(st.integers(0, 3)) == 0:
            not_ports = ir.PortMatch(draw(ranges))
    return ir.Side(
        nets=nets,
        not_nets=tuple(not_nets),
        sets=tuple(draw(_rarely(st.lists(st.sampled_from(sets), max_size=1), []))),
        not_sets=tuple(draw(_rarely(st.lists(st.sampled_from(sets), max_size=1), []))),
        ports=ports,
        not_ports=not_ports,
    )


@st.composite
def rules(draw: st.DrawFn, index: int) -> ir.Rule:
    family = draw(st.sampled_from([4, 6]))
    proto = draw(st.sampled_from([None, None, 6, 6, 17, 132, ICMP[family]]))
    with_ports = proto in (6, 17, 132)
    match: dict[str, object] = {"ip_version": family, "protocol": proto}
    if proto is None and draw(st.integers(0, 3)) == 0:
        match["not_protocol"] = draw(st.sampled_from([6, 17]))
    if proto == ICMP[family] and draw(st.booleans()):
        match["icmp_type"] = draw(st.sampled_from(ICMP_TYPES[family]))
        match["icmp_code"] = draw(st.sampled_from([None, 0, 1]))
    if proto == ICMP[family] and draw(st.integers(0, 3)) == 0:
        match["not_icmp_type"] = draw(st.sampled_from(ICMP_TYPES[family]))
    match["src"] = draw(sides(family, with_ports, False))
    match["dst"] = draw(sides(family, with_ports, proto == 6))
    action = draw(st.sampled_from([ir.ALLOW, ir.ALLOW, ir.DENY, ir.PASS, ir.LOG]))
    return ir.Rule(action, ir.Match(**match), index)  # type: ignore[arg-type]


@st.composite
def rule_lists(draw: st.DrawFn, max_size: int = 6) -> tuple[ir.Rule, ...]:
    n = draw(st.integers(0, max_size))
    return tuple(draw(rules(i)) for i in range(n))


@st.composite
def profile_rules(draw: st.DrawFn) -> tuple[ir.Rule, ...]:
    """A few random rules, often closed by an allow-all of one family (as kns.* profiles are)."""
    out = draw(rule_lists(3))
    if draw(st.booleans()):
        out += (ir.Rule(ir.ALLOW, ir.Match(ip_version=draw(st.sampled_from([4, 6]))), len(out)),)
    return out


@st.composite
def programs(draw: st.DrawFn) -> ir.Program:
    tiers = []
    for t in range(draw(st.sampled_from([0, 1, 2, 2, 3]))):
        pols = [
            policy(f"gnp/t{t}p{i}", f"t{t}", draw(rule_lists()), draw(rule_lists()))
            for i in range(draw(st.integers(1, 2)))
        ]
        tiers.append((f"t{t}", draw(st.sampled_from([ir.DENY, ir.PASS])), pols))
    profiles = [
        ir.Profile(f"prof{i}", draw(profile_rules()), draw(profile_rules()))
        for i in range(draw(st.sampled_from([0, 1, 1, 2])))
    ]
    return one_endpoint_program(
        tiers, profiles, e2h=draw(st.sampled_from(["Drop", "Accept", "Return"]))
    )


@st.composite
def flows(draw: st.DrawFn, direction: str) -> Flow:
    family = draw(st.sampled_from([4, 6]))
    me = A_V4 if family == 4 else A_V6
    peer = ipaddress.ip_address(draw(st.sampled_from(PEERS[family])))
    src, dst = (peer, me) if direction == ir.INGRESS else (me, peer)
    proto = draw(st.sampled_from([6, 6, 17, 132, ICMP[family], 47]))
    if proto in (6, 17, 132):
        return Flow(
            src, dst, proto, src_port=draw(st.sampled_from(SRC_PORTS)),
            dst_port=draw(st.sampled_from(DST_PORTS)),
        )  # fmt: skip
    if proto == ICMP[family]:
        return Flow(
            src, dst, proto, icmp_type=draw(st.sampled_from(ICMP_TYPES[family])),
            icmp_code=draw(st.sampled_from([0, 1])),
        )  # fmt: skip
    return Flow(src, dst, proto)


HEP_ID = "node1-all"


@st.composite
def host_programs(draw: st.DrawFn) -> ir.Program:
    """A ``*`` host endpoint with this node's IPs and random untracked, pre-DNAT, normal and
    forward tiers, profiles and failsafe ports (the workload ns/a keeps no policy)."""
    policies: list[ir.Policy] = []
    tiers: list[ir.Tier] = []
    plans: dict[tuple[str, str], tuple[ir.TierPlan, ...]] = {}
    n = 0
    for hook in (ir.UNTRACKED, ir.PRE_DNAT, ir.NORMAL, ir.FORWARD):
        for direction in ir.DIRECTIONS:
            if hook == ir.PRE_DNAT and direction == ir.EGRESS:
                continue
            plan = []
            for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
                name = f"t{n}"
                n += 1
                pol = policy(f"gnp/{name}", name, draw(rule_lists()), draw(rule_lists()))
                policies.append(pol)
                tiers.append(ir.Tier(name, float(n), draw(st.sampled_from([ir.DENY, ir.PASS]))))
                plan.append(ir.TierPlan(name, tiers[-1].default_action, (pol.id,)))
            if plan:
                plans[(hook, direction)] = tuple(plan)
    profiles = [
        ir.Profile(f"hprof{i}", draw(profile_rules()), draw(profile_rules()))
        for i in range(draw(st.sampled_from([0, 1, 1, 2])))
    ]
    hep = ir.Endpoint(
        id=HEP_ID, kind="HostEndpoint", name=HEP_ID, namespace=None, node=NODE, interface="*",
        ips=(HOST_V4, HOST_V6), labels=(), profiles=tuple(p.name for p in profiles),
        plans=tuple(sorted(plans.items())),
    )  # fmt: skip
    base = one_endpoint_program([], [], e2h="Drop")
    failsafe_in = draw(st.sampled_from([FelixConfig().failsafe_inbound, ()]))
    return ir.replace_program(
        base,
        tiers=tuple(tiers),
        policies=tuple(policies),
        profiles=tuple(profiles),
        endpoints=(*base.endpoints, hep),
        felix=FelixConfig(failsafe_inbound=failsafe_in),
    )


@st.composite
def host_flows(draw: st.DrawFn, direction: str) -> Flow:
    """Traffic to (ingress) or from (egress) this node's own IPs."""
    flow = draw(flows(direction))
    me = HOST_V4 if flow.family == 4 else HOST_V6
    if direction == ir.INGRESS:
        return dataclasses.replace(flow, dst_ip=me)
    return dataclasses.replace(flow, src_ip=me)


def expected(program: ir.Program, flow: Flow, direction: str) -> bool:
    """What the program of ``ns/a`` for ``direction`` must decide for ``flow``: the endpoint's
    verdict, and for its egress to this node's own IPs also defaultEndpointToHostAction."""
    v = evaluate(program, flow)
    if direction == ir.INGRESS:
        return v.ingress.allowed
    to_host = flow.dst_ip in program.host_ips.get(NODE, ())
    return v.egress.allowed and (v.ingress.allowed if to_host else True)


# -- loading -----------------------------------------------------------------------------------


@contextmanager
def loaded(artifact: Artifact) -> Iterator[load.Loaded]:
    """Write ``artifact``, mount a private bpffs, load everything; clean all up afterwards."""
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="tortie-ebpf-art-"))
        stack.callback(shutil.rmtree, tmp, True)
        write_artifact(artifact, tmp / "art")
        root = stack.enter_context(load.private_bpffs())
        yield load.load_artifact(tmp / "art", root)


def hook_of(kind: str, direction: str) -> str:
    """A workload's ingress runs at tc egress of its veth; a host endpoint's at tc ingress."""
    if kind == "HostEndpoint":
        return "tc_ingress" if direction == ir.INGRESS else "tc_egress"
    return "tc_egress" if direction == ir.INGRESS else "tc_ingress"


def ct_flush(ld: load.Loaded) -> None:
    """Forget every approved flow (so the next packet meets policy, not an earlier verdict)."""
    path = ld.maps[layout.CT.name]
    for entry in bpftool.map_dump(path):
        key = bytes(int(b, 16) for b in entry["key"])
        bpftool.run(["map", "delete", "pinned", path, "key", *[f"0x{b:02x}" for b in key]])


def run_packet(ld: load.Loaded, endpoint: str, direction: str, frame: bytes) -> bool:
    """BPF_PROG_TEST_RUN of ``endpoint``'s program for ``direction``: True = TC_ACT_OK."""
    ep = ld.endpoint(endpoint)
    prog = ld.entry(ep[hook_of(str(ep["kind"]), direction)])
    rc = bpftool.prog_run(prog, frame)
    assert rc in (TC_ACT_OK, TC_ACT_SHOT), f"unexpected return value {rc}"
    return rc == TC_ACT_OK


def run_flow(
    ld: load.Loaded,
    endpoint: str,
    direction: str,
    flow: Flow,
    shape: packets.Shape | None = None,
) -> bool:
    return run_packet(ld, endpoint, direction, packets.frame(flow, shape or packets.Shape()))


# -- real traffic: a Cluster whose nodes load the eBPF artifact ---------------------------------


class EbpfTopology(Topology):
    """The nftables tests' topology, loading eBPF artifacts instead: per node, a private bpffs,
    the node's artifact loaded into it, and every local workload's programs attached at tc
    ingress/egress of its ``cali*`` veth inside the node netns."""

    stack: ExitStack | None = None
    loaded: dict[str, load.Loaded] | None = None

    def load(self, scripts: Mapping[str, str] | None = None) -> None:  # noqa: ARG002
        self.stack = ExitStack()
        self.loaded = {}
        target = EbpfTarget()
        for name, program in sorted(self.programs.items()):
            ld = self.stack.enter_context(loaded(target.render(program)))
            self.loaded[name] = ld
            node = self.nodes[name]
            links = json.loads(node.run(["ip", "-j", "link", "show"]).stdout)
            for ifname, hook, obj in load.attachments(ld.doc, [x["ifname"] for x in links]):
                for argv in load.attach_argv(ifname, hook, ld.entry(obj)):
                    node.run(argv)

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
            self.stack = None

    def flush(self) -> None:
        for ld in (self.loaded or {}).values():
            ct_flush(ld)


# -- tests of the support code (no kernel) ------------------------------------------------------


def test_expected_uses_endpoint_to_host() -> None:
    prog = one_endpoint_program(
        [], [ir.Profile("p", (), (rule(ir.ALLOW, ip_version=4),))], e2h="Drop"
    )
    assert expected(prog, Flow(A_V4, ipaddress.ip_address("10.9.9.9"), 17, 1, 2), ir.EGRESS)
    assert not expected(prog, Flow(A_V4, HOST_V4, 17, 1, 2), ir.EGRESS)
