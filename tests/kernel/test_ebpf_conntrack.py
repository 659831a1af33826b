"""Connection tracking of the eBPF programs (own LRU table, see tortie_ct.h), under
BPF_PROG_TEST_RUN: a flow allowed at its first packet stays allowed in both directions, policy
runs only for new flows, a reply entry never admits a new flow the other way, and a TCP SYN
always re-runs policy. Set members are changed as data (a map update, no rebuild) to show that
established flows survive a policy change while new ones meet it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from compiler.ir import nodes as ir
from compiler.ir.flow import Flow
from compiler.targets.ebpf import EbpfTarget, layout, load, packets
from compiler.tools import bpftool
from tests.kernel.test_ebpf_support import (
    A_V4,
    A_V6,
    loaded,
    one_endpoint_program,
    policy,
    requires_bpf,
    rule,
    run_flow,
)

pytestmark = [pytest.mark.kernel, pytest.mark.clang, requires_bpf]

B4, B6 = ipaddress.ip_address("10.65.0.2"), ipaddress.ip_address("fd00:65::2")
SYN, SYNACK, ACK = (
    packets.Shape(tcp_flags=packets.SYN),
    packets.Shape(tcp_flags=packets.SYN | packets.ACK),
    packets.Shape(tcp_flags=packets.ACK),
)


@pytest.fixture
def ld() -> Iterator[load.Loaded]:
    """A accepts TCP 80, UDP 53 and pings from set b (10.65.0.2, fd00:65::2); A's egress
    denies everything. Replies from A therefore pass only through conntrack."""
    t = policy(
        "gnp/p",
        "t0",
        ingress=[
            rule(ir.ALLOW, 0, ip_version=4, protocol=6, src=ir.Side(sets=("s:b:4",)),
                 dst=ir.Side(ports=ir.PortMatch(((80, 80),)))),
            rule(ir.ALLOW, 1, ip_version=4, protocol=17, src=ir.Side(sets=("s:b:4",)),
                 dst=ir.Side(ports=ir.PortMatch(((53, 53),)))),
            rule(ir.ALLOW, 2, ip_version=4, protocol=1, icmp_type=8),
            rule(ir.ALLOW, 3, ip_version=6, protocol=6, src=ir.Side(sets=("s:b:6",))),
        ],
        egress=[],
    )  # fmt: skip
    with loaded(EbpfTarget().render(one_endpoint_program([("t0", ir.DENY, [t])]))) as x:
        yield x


def _reverse(f: Flow) -> Flow:
    return Flow(f.dst_ip, f.src_ip, f.protocol, f.dst_port, f.src_port)


def _remove_from_set(ld: load.Loaded, set_id: str, net: str) -> None:
    """Change set membership as data: delete one member from the LPM trie."""
    n = ipaddress.ip_network(net)
    s = next(x for x in ld.doc["sets"] if x["id"] == set_id)
    key = layout.set_key(n.version, int(s["id64"], 16), n.network_address.packed, n.prefixlen)
    path = ld.maps[layout.SETS_V4.name if n.version == 4 else layout.SETS_V6.name]
    bpftool.run(["map", "delete", "pinned", path, "key", *[f"0x{b:02x}" for b in key]])


def test_tcp_reply_passes_and_reverse_syn_meets_policy(ld: load.Loaded) -> None:
    fwd = Flow(B4, A_V4, 6, 40000, 80)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, SYN)  # policy allows, conntrack approves
    assert run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), SYNACK)  # reply: conntrack
    assert run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), ACK)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, ACK)  # established, same direction
    # A new connection from A to B, even with the exact reversed tuple, starts with a SYN:
    # policy runs (A's egress denies everything) and the reply entry does not help.
    assert not run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), SYN)
    assert not run_flow(ld, "ns/a", ir.EGRESS, Flow(A_V4, B4, 6, 80, 40001), ACK)
    assert not run_flow(ld, "ns/a", ir.EGRESS, Flow(A_V4, B4, 6, 40000, 80), SYN)


def test_reply_entries_are_per_interface_hook(ld: load.Loaded) -> None:
    """A flow approved at the *egress* hook (tc egress: A's ingress) admits replies only at
    the other hook; the same tuple arriving at the same hook again is just the same flow."""
    fwd = Flow(B4, A_V4, 17, 5353, 53)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd)
    assert run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd))
    assert not run_flow(ld, "ns/a", ir.EGRESS, Flow(A_V4, B4, 17, 53, 5354))  # other port
    assert not run_flow(ld, "ns/a", ir.EGRESS, Flow(A_V4, B4, 17, 54, 5353))
    # The reverse tuple arriving at A's *ingress* side is a new flow for A's ingress policy.
    assert not run_flow(ld, "ns/a", ir.INGRESS, _reverse(fwd))


def test_icmp_echo_reply_but_not_a_new_echo_request(ld: load.Loaded) -> None:
    req = Flow(B4, A_V4, 1, icmp_type=8, icmp_code=0)
    assert run_flow(ld, "ns/a", ir.INGRESS, req, packets.Shape(icmp_id=77))
    reply = Flow(A_V4, B4, 1, icmp_type=0, icmp_code=0)
    assert run_flow(ld, "ns/a", ir.EGRESS, reply, packets.Shape(icmp_id=77))
    assert not run_flow(ld, "ns/a", ir.EGRESS, reply, packets.Shape(icmp_id=78))
    # An echo *request* from A with the same id is a new flow: A's egress denies it.
    assert not run_flow(ld, "ns/a", ir.EGRESS, Flow(A_V4, B4, 1, icmp_type=8, icmp_code=0),
                        packets.Shape(icmp_id=77))  # fmt: skip
    # Other ICMP types are never replies.
    unreach = Flow(A_V4, B4, 1, icmp_type=3, icmp_code=1)
    assert not run_flow(ld, "ns/a", ir.EGRESS, unreach)


def test_established_flow_survives_member_removal_new_flows_do_not(ld: load.Loaded) -> None:
    fwd = Flow(B4, A_V4, 6, 40010, 80)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, SYN)
    _remove_from_set(ld, "s:b:4", "10.65.0.2/32")  # B no longer selected: data, no rebuild
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, ACK)  # established: no policy
    assert run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), ACK)
    other = Flow(B4, A_V4, 6, 40011, 80)
    assert not run_flow(ld, "ns/a", ir.INGRESS, other, SYN)  # new flow meets the new policy
    # A SYN always re-runs policy, also on an approved tuple; the denied SYN forgets it.
    assert not run_flow(ld, "ns/a", ir.INGRESS, fwd, SYN)
    assert not run_flow(ld, "ns/a", ir.INGRESS, fwd, ACK)


def test_ipv6_flow_and_reply(ld: load.Loaded) -> None:
    fwd = Flow(B6, A_V6, 6, 40020, 22)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, SYN)
    assert run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), SYNACK)
    assert not run_flow(ld, "ns/a", ir.EGRESS, _reverse(fwd), SYN)


def _quote(flow: Flow) -> bytes:
    """What an ICMP error quotes: the IP header and 8 bytes of the reported packet."""
    ip = packets.frame(flow)[14:]
    return ip[: (20 if flow.family == 4 else 40) + 8]


def test_icmp_errors_about_approved_flows_are_related(ld: load.Loaded) -> None:
    router = ipaddress.ip_address("10.9.9.9")
    fwd = Flow(B4, A_V4, 17, 5353, 53)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd)
    unreachable = Flow(router, A_V4, 1, icmp_type=3, icmp_code=3)
    # Not related to anything: A's ingress policy only allows echo requests.
    assert not run_flow(ld, "ns/a", ir.INGRESS, unreachable)
    # About A's reply (quoted A -> B): arrives towards A, admitted as RELATED.
    about_reply = packets.Shape(payload=_quote(_reverse(fwd)))
    assert run_flow(ld, "ns/a", ir.INGRESS, unreachable, about_reply)
    # About B's request, sent by A towards B: A's egress denies everything but this.
    from_a = Flow(A_V4, B4, 1, icmp_type=3, icmp_code=3)
    assert run_flow(ld, "ns/a", ir.EGRESS, from_a, packets.Shape(payload=_quote(fwd)))
    other = Flow(B4, A_V4, 17, 5354, 53)
    assert not run_flow(ld, "ns/a", ir.EGRESS, from_a, packets.Shape(payload=_quote(other)))
    # Truncated quotes are not related (and the error still parses).
    cut = packets.Shape(payload=_quote(fwd)[:24])
    assert not run_flow(ld, "ns/a", ir.EGRESS, from_a, cut)


def test_icmpv6_packet_too_big_is_related(ld: load.Loaded) -> None:
    fwd = Flow(B6, A_V6, 6, 40030, 22)
    assert run_flow(ld, "ns/a", ir.INGRESS, fwd, SYN)
    ptb = Flow(ipaddress.ip_address("fd00:99::1"), A_V6, 58, icmp_type=2, icmp_code=0)
    assert not run_flow(ld, "ns/a", ir.INGRESS, ptb)
    assert run_flow(ld, "ns/a", ir.INGRESS, ptb, packets.Shape(payload=_quote(_reverse(fwd))))
