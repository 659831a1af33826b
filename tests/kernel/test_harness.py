"""The netns test harness itself: topology, probe semantics, teardown and speed.

Probe semantics (tests/support/traffic.py): every probe gets a listener on its destination port, so a
probe only fails when the network (a firewall) does not deliver it; there is no "closed port" case.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.netns import Cluster, Node, Pod, in_netns
from tests.support.traffic import Probe, sctp_available, send_probes

pytestmark = pytest.mark.kernel

NODE_V4, NODE_V6 = "192.168.100.1", "fd00:100::1"
EXT_V4, EXT_V6 = "192.168.100.2", "fd00:100::2"

DROP_TCP_81_FORWARD = """
table inet tortie_harness {
    chain forward {
        type filter hook forward priority filter; policy accept;
        tcp dport 81 drop
    }
}
"""


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _build(cluster: Cluster, pods: int = 3) -> tuple[Node, list[Pod]]:
    node = cluster.add_node("n1")
    node.add_uplink("eth0", NODE_V4, NODE_V6, EXT_V4, EXT_V6, name="ext")
    made = [
        node.add_pod(f"pod{i}", f"cali{i:011x}", f"10.65.0.{i}", f"fd00:65::{i}")
        for i in range(1, pods + 1)
    ]
    return node, made


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


def _all_probes(pods: list[Pod], ports: tuple[int, ...] = (80,)) -> list[Probe]:
    """pod<->pod, pod->node, pod->external, external->pod, node->pod; v4 and v6; TCP, UDP, ICMP."""
    pairs: list[tuple[str, str, str]] = []  # (src, dst v4, dst v6)
    for a, b in itertools.product(pods, pods):
        if a is not b:
            pairs.append((a.id, str(b.ipv4), str(b.ipv6)))
    for p in pods:
        pairs += [
            (p.id, NODE_V4, NODE_V6),
            (p.id, EXT_V4, EXT_V6),
            ("ext", str(p.ipv4), str(p.ipv6)),
            ("n1", str(p.ipv4), str(p.ipv6)),
        ]
    probes = []
    for src, v4, v6 in pairs:
        for dst, icmp in ((v4, "ICMP"), (v6, "ICMPv6")):
            probes.append(Probe(src, dst, icmp))  # type: ignore[arg-type]
            for port in ports:
                probes += [Probe(src, dst, "TCP", port), Probe(src, dst, "UDP", port)]
    return probes


def test_everything_arrives_without_firewall(cluster: Cluster) -> None:
    _, pods = _build(cluster)
    probes = _all_probes(pods, ports=(80, 53))
    results = send_probes(cluster, probes)
    assert len(results) == len(probes)
    assert [p for p, ok in results.items() if not ok] == []


def test_source_ports_are_used_and_may_collide_with_listeners(cluster: Cluster) -> None:
    """A probe from port 8080 while the same netns listens on 8080 for another probe."""
    _, (a, b, c) = _build(cluster)
    probes = [
        Probe(a.id, str(b.ipv4), "TCP", 8080, src_port=8080),
        Probe(c.id, str(a.ipv4), "TCP", 8080),
        Probe(a.id, str(b.ipv6), "UDP", 8080, src_port=8080),
        Probe(b.id, str(a.ipv6), "UDP", 8080, src_port=8080),
        # One source port towards two destinations.
        Probe(a.id, str(b.ipv4), "TCP", 9000, src_port=4444),
        Probe(a.id, NODE_V4, "TCP", 9000, src_port=4444),
    ]
    for _ in range(3):  # RST on close leaves no TIME_WAIT: the same tuples work again at once
        assert all(send_probes(cluster, probes).values())


def test_nft_drop_fails_exactly_the_dropped_probes(cluster: Cluster) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    node, pods = _build(cluster)
    node.run(["nft", "-f", "-"], input=DROP_TCP_81_FORWARD)
    probes = _all_probes(pods, ports=(80, 81))

    def forwarded(p: Probe) -> bool:
        # Pod<->pod, pod->external and external->pod cross the node's forward hook; traffic from
        # or to the node's own addresses goes through output / input instead.
        return p.src != "n1" and p.dst_ip not in (NODE_V4, NODE_V6)

    expected = {p: not (p.protocol == "TCP" and p.dst_port == 81 and forwarded(p)) for p in probes}
    # 6 pod->pod + 3 pod->external + 3 external->pod pairs, IPv4 and IPv6.
    assert sum(not ok for ok in expected.values()) == 24
    for _ in range(3):  # and no flakes
        results = send_probes(cluster, probes, timeout=0.3)
        wrong = {p: ok for p, ok in results.items() if ok != expected[p]}
        assert wrong == {}


@pytest.mark.parametrize(
    ("rule", "timeout"),
    [
        ("tcp sport 80 drop", 0.3),  # only the SYN-ACK is dropped: TCP needs both directions
        ("tcp dport 80 reject with tcp reset", 5.0),  # a reset decides at once: no 5 s wait
    ],
)
def test_tcp_fails_on_dropped_replies_and_resets(
    cluster: Cluster, rule: str, timeout: float
) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    node, (a, b) = _build(cluster, pods=2)
    node.run(
        ["nft", "-f", "-"],
        input=f"table inet t {{\n chain forward {{\n"
        f"  type filter hook forward priority filter; policy accept\n  {rule}\n }}\n}}\n",
    )
    probes = [Probe(a.id, str(b.ipv4), "TCP", 80), Probe(b.id, str(a.ipv6), "TCP", 80)]
    probes += [Probe(a.id, str(b.ipv4), "UDP", 80), Probe(a.id, str(b.ipv4), "TCP", 81)]
    start = time.monotonic()
    results = send_probes(cluster, probes, timeout=timeout)
    assert [ok for ok in results.values()] == [False, False, True, True]
    assert time.monotonic() - start < min(timeout + 1.0, 2.0)


def test_sctp(cluster: Cluster) -> None:
    if not sctp_available():
        pytest.skip("this kernel has no SCTP (no sctp module)")
    _, (a, b) = _build(cluster, pods=2)
    probes = [Probe(a.id, str(b.ipv4), "SCTP", 9), Probe(b.id, str(a.ipv6), "SCTP", 9)]
    assert all(send_probes(cluster, probes).values())


def test_teardown_removes_every_namespace() -> None:
    with Cluster() as c:
        _build(c, pods=2)
        names = c.netns_names
        assert len(names) == 4 and set(names) <= _netns_list()
    assert not set(names) & _netns_list()
    c.close()  # idempotent


def test_teardown_after_the_body_raised() -> None:
    with pytest.raises(ZeroDivisionError), Cluster() as c:
        _build(c, pods=1)
        names = c.netns_names
        1 / 0  # noqa: B018
    assert names and not set(names) & _netns_list()


def test_teardown_after_a_failed_build() -> None:
    with pytest.raises(ValueError), Cluster() as c:
        node = c.add_node("n1")
        node.add_pod("a", "cali-a", "10.65.0.1", None)
        node.add_pod("b", "cali-b", "10.65.0.1", None)  # address already used
    assert not {n for n in _netns_list() if n.startswith(c.prefix)}


def test_in_netns_switches_only_this_thread(cluster: Cluster) -> None:
    _, (a, *_rest) = _build(cluster, pods=1)
    before = os.stat("/proc/thread-self/ns/net").st_ino
    seen: list[int] = []
    entered = threading.Event()

    def other_thread() -> None:
        entered.wait(10)
        seen.append(os.stat("/proc/thread-self/ns/net").st_ino)

    other = threading.Thread(target=other_thread)
    other.start()
    with in_netns(a.name):
        # A socket made here lives in the pod: it can bind the pod's address.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((str(a.ipv4), 0))
        assert os.stat("/proc/thread-self/ns/net").st_ino != before
        entered.set()
        other.join()
    assert seen == [before]  # a thread that was already running stayed where it was
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_two_nodes(cluster: Cluster) -> None:
    n1 = cluster.add_node("n1", ipv4="172.16.0.1", ipv6="fd00:16::1")
    n2 = cluster.add_node("n2", ipv4="172.16.0.2", ipv6="fd00:16::2")
    a = n1.add_pod("a", "cali-a", "10.65.1.1", "fd00:65:1::1")
    cluster.connect(n1, n2, ipv4=("172.31.0.1", "172.31.0.2"), ipv6=("fd00:31::1", "fd00:31::2"))
    b = n2.add_pod("b", "cali-b", "10.65.2.1", "fd00:65:2::1")  # added after connect
    probes = []
    for src, dst in ((a, b), (b, a)):
        for ip, icmp in ((dst.ipv4, "ICMP"), (dst.ipv6, "ICMPv6")):
            probes += [Probe(src.id, str(ip), "TCP", 80), Probe(src.id, str(ip), icmp)]  # type: ignore[arg-type]
    probes += [Probe("a", "172.16.0.2", "TCP", 22), Probe("b", "fd00:16::1", "UDP", 53)]
    assert all(send_probes(cluster, probes).values())


def test_unknown_names_and_bad_probes(cluster: Cluster) -> None:
    _, (a, b) = _build(cluster, pods=2)
    with pytest.raises(ValueError, match="one TCP connection"):
        send_probes(
            cluster,
            [
                Probe(a.id, str(b.ipv4), "TCP", 8080, src_port=8080),
                Probe(b.id, str(a.ipv4), "TCP", 8080, src_port=8080),
            ],
        )
    with pytest.raises(KeyError):
        send_probes(cluster, [Probe("nope", "10.65.0.1", "TCP", 80)])
    with pytest.raises(KeyError):
        send_probes(cluster, [Probe("pod1", "10.99.0.1", "TCP", 80)])
    with pytest.raises(ValueError):
        Probe("pod1", "10.65.0.1", "ICMPv6")
    with pytest.raises(ValueError):
        Probe("pod1", "10.65.0.1", "TCP")


def test_timing_200_probes(cluster: Cluster) -> None:
    t0 = time.monotonic()
    _, pods = _build(cluster, pods=5)
    setup = time.monotonic() - t0
    probes = _all_probes(pods)[:200]
    assert len(probes) == 200
    t1 = time.monotonic()
    results = send_probes(cluster, probes)
    elapsed = time.monotonic() - t1
    print(
        f"\nsetup of 1 node + 5 pods + uplink: {setup * 1000:.0f} ms; 200 probes: {elapsed * 1000:.0f} ms"
    )
    assert all(results.values())
    assert elapsed < 3.0
