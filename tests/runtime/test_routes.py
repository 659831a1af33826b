"""Workload and block routes under protocol 81, reconciled with pyroute2 in a network namespace."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from compiler.frontend.model import Endpoint
from runtime.ipam_state import Block
from runtime.routes import (
    ROUTE_PROTOCOL,
    DesiredRoute,
    block_routes,
    reconcile,
    workload_routes,
)
from tests.support.netns import Cluster, Node

ip = ipaddress.ip_address
net = ipaddress.ip_network


def wep(name: str, node: str, iface: str, *ips: str) -> Endpoint:
    return Endpoint(
        "WorkloadEndpoint", name, "ns", node, iface, tuple(ip(x) for x in ips), pod=name
    )


ENDPOINTS = [
    wep("a", "n1", "cali0a", "10.65.0.1", "fd00:65::1"),
    wep("b", "n1", "cali0b", "10.65.0.2"),
    wep("elsewhere", "n2", "cali0c", "10.65.0.70"),
    Endpoint("HostEndpoint", "h", None, "n1", "eth0", (ip("192.168.0.1"),)),
]
BLOCKS = [
    Block(net("10.65.0.0/26"), "p4", "n1"),
    Block(net("fd00:65::/122"), "p6", "n1"),
    Block(net("10.65.0.64/26"), "p4", "n2"),
    Block(net("10.65.1.0/26"), "p4", "n1", "pendingDeletion"),
    Block(net("10.65.2.1/32"), "tiny", "n1"),
]


def desired() -> list[DesiredRoute]:
    return workload_routes(ENDPOINTS, "n1") + block_routes(BLOCKS, "n1")


def test_desired_routes() -> None:
    got = [(str(r.dst), r.kind, r.dev) for r in desired()]
    assert got == [
        ("10.65.0.1/32", "unicast", "cali0a"),
        ("10.65.0.2/32", "unicast", "cali0b"),
        ("fd00:65::1/128", "unicast", "cali0a"),
        ("10.65.0.0/26", "blackhole", None),
        ("fd00:65::/122", "blackhole", None),
    ]


def test_protocols_that_cannot_mark_ownership_are_refused() -> None:
    for bad in (0, 2, 3, 256):
        with pytest.raises(ValueError):
            reconcile(None, [], protocol=bad)


# -- in a network namespace ---------------------------------------------------------------------------


@pytest.fixture
def node() -> Iterator[Node]:
    with Cluster() as cluster:
        n = cluster.add_node("n1")
        for iface in ("cali0a", "cali0b"):
            # Plain veths: the harness's add_pod would install its own routes for the pod.
            n.ip_batch(
                [
                    f"link add {iface} type veth peer name p{iface}",
                    f"link set {iface} up",
                    f"link set p{iface} up",
                ]
            )
        yield n


def routes(n: Node, family: int = 4, proto: str | None = None) -> str:
    argv = ["ip", f"-{family}", "route", "show", "table", "main"]
    if proto is not None:
        argv += ["proto", proto]
    return n.run(argv).stdout


@pytest.mark.kernel
def test_routes_appear_and_second_reconcile_changes_nothing(node: Node) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=node.name) as ipr:
        first = reconcile(ipr, desired())
        assert len(first.added) == 5 and not first.removed and not first.skipped
        v4 = routes(node, 4, str(ROUTE_PROTOCOL))
        assert "blackhole 10.65.0.0/26 metric 1024" in v4
        assert "10.65.0.1 dev cali0a scope link metric 1024" in v4
        assert "10.65.0.2 dev cali0b scope link metric 1024" in v4
        assert "10.65.1.0" not in v4 and "10.65.2.1" not in v4 and "10.65.0.64" not in v4
        v6 = routes(node, 6, str(ROUTE_PROTOCOL))
        assert "fd00:65::1 dev cali0a metric 1024" in v6
        assert "blackhole fd00:65::/122" in v6
        before = (routes(node, 4), routes(node, 6))

        second = reconcile(ipr, desired())
        assert not second.changed
        assert len(second.unchanged) == 5
        assert (routes(node, 4), routes(node, 6)) == before


@pytest.mark.kernel
def test_foreign_routes_survive_and_stale_tortie_routes_go(node: Node) -> None:
    from pyroute2 import IPRoute

    node.ip_batch(
        [
            "route add 10.99.0.0/24 dev lo proto static metric 1024",  # foreign, unrelated
            "route add blackhole 10.65.0.0/26 proto boot metric 7",  # foreign, same prefix
            "route add 10.98.0.0/24 dev lo proto 81 metric 1024",  # stale, ours
            "route add blackhole 10.97.0.0/24 proto 81 metric 1024",  # stale, ours
            "route add fd00:98::/64 dev lo proto 81 metric 1024",  # stale, ours
            "route add fd00:99::/64 dev lo proto kernel metric 1024",  # foreign
        ]
    )
    with IPRoute(netns=node.name) as ipr:
        result = reconcile(ipr, desired())
    assert sorted(str(r.dst) for r in result.removed) == [
        "10.97.0.0/24",
        "10.98.0.0/24",
        "fd00:98::/64",
    ]
    v4, v6 = routes(node, 4), routes(node, 6)
    assert "10.99.0.0/24 dev lo proto static" in v4
    assert "blackhole 10.65.0.0/26 metric 7" in v4  # proto boot is not printed
    assert "blackhole 10.65.0.0/26 proto 81 metric 1024" in v4
    assert "10.98.0.0" not in v4 and "10.97.0.0" not in v4
    assert "fd00:99::/64 dev lo proto kernel" in v6 and "fd00:98::" not in v6


@pytest.mark.kernel
def test_foreign_route_with_the_same_key_is_left_alone(node: Node) -> None:
    from pyroute2 import IPRoute

    node.ip_batch(["route add 10.65.0.2/32 dev cali0a proto boot metric 1024"])
    with IPRoute(netns=node.name) as ipr:
        result = reconcile(ipr, desired())
        again = reconcile(ipr, desired())
    assert [(str(d.dst), "protocol 3" in why) for d, why in result.skipped] == [
        ("10.65.0.2/32", True)
    ]
    assert not again.changed
    # `ip route` does not print "proto boot" (its default).
    assert "10.65.0.2 dev cali0a scope link metric 1024" in routes(node)
    assert "10.65.0.2" not in routes(node, 4, "81")


@pytest.mark.kernel
def test_changed_target_is_replaced_and_missing_interface_skipped(node: Node) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=node.name) as ipr:
        reconcile(ipr, desired())
        moved = [
            DesiredRoute(net("10.65.0.1/32"), dev="cali0b"),
            DesiredRoute(net("10.65.0.3/32"), dev="cali-missing"),
        ]
        result = reconcile(ipr, moved, families=(4,))
    assert [str(r.dst) for r in result.replaced] == ["10.65.0.1/32"]
    assert [why for _, why in result.skipped] == ["interface cali-missing does not exist"]
    assert sorted(str(r.dst) for r in result.removed) == ["10.65.0.0/26", "10.65.0.2/32"]
    v4 = routes(node, 4, "81")
    assert v4.strip() == "10.65.0.1 dev cali0b scope link metric 1024"
    assert "fd00:65::1" in routes(node, 6, "81")  # families=(4,): IPv6 left as it was


@pytest.mark.kernel
def test_custom_protocol_number(node: Node) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=node.name) as ipr:
        reconcile(ipr, block_routes(BLOCKS, "n1"), protocol=200)
        reconcile(ipr, [], protocol=ROUTE_PROTOCOL)  # owns nothing of protocol 200
    assert "blackhole 10.65.0.0/26 proto 200 metric 1024" in routes(node)
