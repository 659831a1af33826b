"""IPAM: blocks, affinity, borrowing, release, the state file (runtime/ipam.py, ipam_state.py)."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.frontend.model import Endpoint, IPPool
from runtime.ipam import (
    IPAM,
    AddressInUse,
    IPAMConfig,
    IPAMError,
    NoAddressAvailable,
    UnknownAddress,
    eligible_pools,
    import_endpoints,
    usage_report,
)
from runtime.ipam_state import Allocation, IPAMState, StateError, StateFile, write_atomic

ip = ipaddress.ip_address
net = ipaddress.ip_network
NODES = {"a": {"rack": "r1"}, "b": {"rack": "r2"}, "c": {"rack": "r1"}}


def pool(name: str, cidr: str, block: int | None = None, **kw: object) -> IPPool:
    n = net(cidr)
    return IPPool(name, n, block if block is not None else (26 if n.version == 4 else 122), **kw)  # type: ignore[arg-type]


def engine(*pools: IPPool, config: IPAMConfig | None = None) -> IPAM:
    return IPAM(IPAMState(), list(pools), NODES, config)


# -- pools ------------------------------------------------------------------------------------------


def test_default_block_sizes_and_affinity() -> None:
    e = engine(pool("v4", "10.65.0.0/16"), pool("v6", "fd00:65::/112"))
    assert e.allocate("a", "ns/p1") == ip("10.65.0.0")
    assert e.allocate("a", "ns/p1", 6) == ip("fd00:65::")
    assert e.allocate("b", "ns/p2") == ip("10.65.0.64")
    assert [str(b.cidr) for b in e.blocks_of("a")] == ["10.65.0.0/26", "fd00:65::/122"]
    assert [str(b.cidr) for b in e.blocks_of("b")] == ["10.65.0.64/26"]
    assert all(b.state == "confirmed" for b in e.state.blocks.values())


def test_pool_block_size_is_used() -> None:
    e = engine(pool("p", "10.0.0.0/24", 28))
    e.allocate("a", "x")
    assert [str(b.cidr) for b in e.blocks_of("a")] == ["10.0.0.0/28"]


def test_node_selector_and_disabled_and_uses() -> None:
    pools = [
        pool("r1", "10.1.0.0/24", node_selector="rack == 'r1'"),
        pool("r2", "10.2.0.0/24", node_selector="rack == 'r2'"),
        pool("off", "10.3.0.0/24", disabled=True),
        pool("lb", "10.4.0.0/24", allowed_uses=("LoadBalancer",)),
        pool("manual", "10.5.0.0/24", assignment_mode="Manual"),
        pool("tun", "10.6.0.0/24", allowed_uses=("Tunnel",)),
    ]
    assert [p.name for p in eligible_pools(pools, NODES["a"], 4)] == ["r1"]
    assert [p.name for p in eligible_pools(pools, NODES["b"], 4)] == ["r2"]
    assert [p.name for p in eligible_pools(pools, NODES["a"], 4, "Tunnel")] == ["r1", "tun"]
    e = engine(*pools)
    assert e.allocate("a", "x") in net("10.1.0.0/24")
    assert e.allocate("b", "y") in net("10.2.0.0/24")
    with pytest.raises(NoAddressAvailable, match="no enabled IPv6 pool"):
        e.allocate("a", "z", 6)


def test_disabled_pool_allocates_nothing_new_even_in_existing_blocks() -> None:
    p = pool("p", "10.0.0.0/24")
    e = engine(p)
    e.allocate("a", "x")
    e.pools = [IPPool(p.name, p.cidr, p.block_size, disabled=True)]
    with pytest.raises(NoAddressAvailable):
        e.allocate("a", "y")


def test_unknown_node_is_an_error() -> None:
    with pytest.raises(IPAMError, match="unknown node"):
        engine(pool("p", "10.0.0.0/24")).allocate("nope", "x")


# -- blocks fill, claim, borrow ---------------------------------------------------------------------


def test_claims_a_new_block_when_full() -> None:
    e = engine(pool("p", "10.0.0.0/28", 30))
    got = [e.allocate("a", f"h{i}") for i in range(5)]
    assert got == [ip(f"10.0.0.{i}") for i in range(5)]
    assert [str(b.cidr) for b in e.blocks_of("a")] == ["10.0.0.0/30", "10.0.0.4/30"]


def test_max_blocks_per_host_then_borrow() -> None:
    e = engine(pool("p", "10.0.0.0/28", 30), config=IPAMConfig(max_blocks_per_host=1))
    assert e.allocate("b", "b0") == ip("10.0.0.0")  # b owns 10.0.0.0/30
    for i in range(4):
        e.allocate("a", f"a{i}")  # a owns 10.0.0.4/30, now full
    assert [str(b.cidr) for b in e.blocks_of("a")] == ["10.0.0.4/30"]
    borrowed = e.allocate("a", "a4")
    assert borrowed == ip("10.0.0.1")  # the lowest free address of any block: b's
    assert e.state.block_of(borrowed).affinity == "b"  # type: ignore[union-attr]
    assert [(str(x), str(b.cidr)) for x, b in e.borrowed_by("a")] == [("10.0.0.1", "10.0.0.0/30")]
    report = usage_report(e)
    assert report["nodes"]["a"]["borrowed"] == [
        {"address": "10.0.0.1", "block": "10.0.0.0/30", "handle": "a4"}
    ]


def test_strict_affinity_never_borrows() -> None:
    cfg = IPAMConfig(strict_affinity=True, max_blocks_per_host=1)
    e = engine(pool("p", "10.0.0.0/28", 30), config=cfg)
    e.allocate("b", "b0")
    for i in range(4):
        e.allocate("a", f"a{i}")
    with pytest.raises(NoAddressAvailable, match="strictAffinity"):
        e.allocate("a", "a4")


def test_borrow_when_pool_exhausted() -> None:
    e = engine(pool("p", "10.0.0.0/29", 30))
    e.allocate("a", "a0")
    e.allocate("b", "b0")  # both blocks claimed
    for i in range(1, 4):
        e.allocate("a", f"a{i}")
    assert e.allocate("a", "a4") == ip("10.0.0.5")  # borrowed from b's block
    for i in range(5, 7):
        e.allocate("a", f"a{i}")
    with pytest.raises(NoAddressAvailable, match="exhausted"):
        e.allocate("c", "c0")


def test_release_then_reallocate_same_address() -> None:
    e = engine(pool("p", "10.0.0.0/24", 30))
    addrs = [e.allocate("a", f"h{i}") for i in range(4)]
    assert e.release(addrs[2]) == Allocation("h2", "a")
    assert e.allocate("a", "new") == addrs[2]
    with pytest.raises(UnknownAddress):
        e.release(ip("10.0.0.200"))


def test_release_handle_and_affinity() -> None:
    e = engine(pool("p", "10.0.0.0/24", 30))
    e.allocate("a", "x")
    e.allocate("a", "x", 4)
    assert e.release_handle("x") == [ip("10.0.0.0"), ip("10.0.0.1")]
    e.release_affinity("a", net("10.0.0.0/30"))
    assert e.blocks_of("a") == []
    with pytest.raises(IPAMError):
        e.release_affinity("a", net("10.0.0.0/30"))


def test_release_affinity_of_block_in_use_keeps_block_until_empty() -> None:
    e = engine(pool("p", "10.0.0.0/24", 30))
    addr = e.allocate("a", "x")
    e.release_affinity("a", net("10.0.0.0/30"))
    assert e.state.blocks[net("10.0.0.0/30")].affinity is None
    e.release(addr)
    assert net("10.0.0.0/30") not in e.state.blocks


def test_assign_specific_addresses() -> None:
    e = engine(pool("p", "10.0.0.0/24", 28, node_selector="rack == 'r1'"))
    assert e.assign(ip("10.0.0.20"), "ns/p", "a") == ip("10.0.0.20")
    assert e.assign(ip("10.0.0.20"), "ns/p", "a") == ip("10.0.0.20")  # idempotent
    with pytest.raises(AddressInUse):
        e.assign(ip("10.0.0.20"), "ns/q", "a")
    assert e.state.blocks[net("10.0.0.16/28")].affinity == "a"
    e.assign(ip("10.0.0.40"), "ns/r", "b")  # pool does not match b: no affinity
    assert e.state.blocks[net("10.0.0.32/28")].affinity is None
    with pytest.raises(UnknownAddress):
        e.assign(ip("192.0.2.1"), "x", "a")


def test_import_endpoints() -> None:
    e = engine(pool("p", "10.65.0.0/16"))
    eps = [
        Endpoint("WorkloadEndpoint", "w1", "ns", "a", "cali1", (ip("10.65.0.7"),), pod="w1"),
        Endpoint("WorkloadEndpoint", "w2", "ns", "b", "cali2", (ip("10.65.3.1"),), pod="w2"),
        Endpoint("WorkloadEndpoint", "w3", "ns", "b", "cali3", (ip("10.65.0.7"),), pod="w3"),
        Endpoint("HostEndpoint", "h", None, "a", "eth0", (ip("10.65.9.9"),)),
    ]
    problems = import_endpoints(e, eps)
    assert problems == ["ns/w3: 10.65.0.7 is already allocated to 'ns/w1'"]
    assert [str(b.cidr) for b in e.blocks_of("a")] == ["10.65.0.0/26"]
    assert [str(b.cidr) for b in e.blocks_of("b")] == ["10.65.3.0/26"]


def test_blocks_of_overlapping_pools_never_overlap() -> None:
    # Two pools over the same range (a misconfiguration): blocks still never overlap.
    e = engine(
        pool("big", "10.0.0.0/24", 26),
        pool("small", "10.0.0.0/24", 28, node_selector="rack == 'r2'"),
    )
    e.allocate("a", "x")
    e.allocate("b", "y")
    cidrs = sorted(b.cidr for b in e.state.blocks.values())
    assert all(not x.overlaps(y) for i, x in enumerate(cidrs) for y in cidrs[i + 1 :])


# -- state file ---------------------------------------------------------------------------------------


def test_state_file_round_trip_and_determinism(tmp_path: Path) -> None:
    sf = StateFile(str(tmp_path / "ipam.json"))
    with sf.transaction() as state:
        e = IPAM(state, [pool("p", "10.0.0.0/24", 30), pool("p6", "fd00::/120", 126)], NODES)
        e.allocate("b", "x")
        e.allocate("a", "y", 6)
        e.allocate("a", "z")
    text = (tmp_path / "ipam.json").read_text()
    data = json.loads(text)
    assert [b["cidr"] for b in data["blocks"]] == ["10.0.0.0/30", "10.0.0.4/30", "fd00::/126"]
    assert data["blocks"][0]["allocations"] == [[0, "x", "b"]]
    assert sf.read().to_json() == text
    # Same operations on a fresh file: byte-identical.
    sf2 = StateFile(str(tmp_path / "again.json"))
    with sf2.transaction() as state:
        e = IPAM(state, [pool("p", "10.0.0.0/24", 30), pool("p6", "fd00::/120", 126)], NODES)
        e.allocate("b", "x")
        e.allocate("a", "y", 6)
        e.allocate("a", "z")
    assert (tmp_path / "again.json").read_text() == text


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    sf = StateFile(str(tmp_path / "ipam.json"))
    with sf.transaction() as state:
        IPAM(state, [pool("p", "10.0.0.0/30", 30)], NODES).allocate("a", "x")
    before = (tmp_path / "ipam.json").read_text()
    with pytest.raises(NoAddressAvailable), sf.transaction() as state:
        e = IPAM(state, [pool("p", "10.0.0.0/30", 30)], NODES)
        for i in range(10):
            e.allocate("a", f"h{i}")
    assert (tmp_path / "ipam.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_state_files(tmp_path: Path) -> None:
    cases = {
        "notjson": "{",
        "version": '{"version": 9, "blocks": []}',
        "state": '{"version": 1, "blocks": [{"cidr": "10.0.0.0/30", "pool": "p", "state": "odd"}]}',
        "ordinal": '{"version": 1, "blocks": [{"cidr": "10.0.0.0/30", "pool": "p", "allocations": [[4, "x", null]]}]}',
        "overlap": '{"version": 1, "blocks": [{"cidr": "10.0.0.0/30", "pool": "p"}, {"cidr": "10.0.0.0/29", "pool": "p"}]}',
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(StateError):
            StateFile(str(path)).read()


def test_write_atomic_validation_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(str(path), "old\n")

    def refuse(tmp: str) -> None:
        assert Path(tmp).read_text() == "new\n"
        raise ValueError("no")

    with pytest.raises(ValueError):
        write_atomic(str(path), "new\n", validate=refuse)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def _worker(path: str, node: str, count: int) -> None:
    for i in range(count):
        with StateFile(path).transaction() as state:
            IPAM(state, [pool("p", "10.0.0.0/24", 28)], NODES).allocate(node, f"{node}-{i}")


def test_lock_serialises_processes(tmp_path: Path) -> None:
    """Concurrent `tortie ipam allocate` processes never hand out an address twice."""
    path = str(tmp_path / "ipam.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(path, n, 20)) for n in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    state = StateFile(path).read()
    handles = [a.handle for b in state.blocks.values() for a in b.allocations.values()]
    assert len(handles) == 60 == len(set(handles))
    assert os.path.exists(path + ".lock")


# -- properties ---------------------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("alloc"), st.sampled_from(sorted(NODES)), st.sampled_from([4, 6])),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=1000), st.just(0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_op, max_size=80),
    strict=st.booleans(),
    max_blocks=st.integers(min_value=0, max_value=3),
)
def test_property_never_twice_and_invariants(
    ops: list[tuple[str, object, int]], strict: bool, max_blocks: int
) -> None:
    pools = [
        pool("p4", "10.0.0.0/28", 30),
        pool("p6", "fd00::/124", 126),
        pool("r2", "10.9.0.0/30", 31, node_selector="rack == 'r2'"),
    ]
    e = IPAM(IPAMState(), pools, NODES, IPAMConfig(strict, max_blocks))
    held: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    counter = 0
    for kind, arg, family in ops:
        if kind == "alloc":
            node = str(arg)
            own_free_before = any(b.free and b.cidr.version == family for b in e.blocks_of(node))
            try:
                addr = e.allocate(node, f"h{counter}", family)
            except NoAddressAvailable:
                continue
            counter += 1
            assert addr not in held, f"{addr} handed out twice"
            held[addr] = node
            block = e.state.block_of(addr)
            assert block is not None and addr in block.cidr
            p = next(p for p in pools if p.name == block.pool)
            assert block.cidr.subnet_of(p.cidr) and block.cidr.prefixlen == p.block_size  # type: ignore[arg-type]
            if own_free_before:
                assert block.affinity == node, "own free blocks must be used first"
            if strict:
                assert block.affinity == node
            if max_blocks:
                assert len(e.blocks_of(node, family)) <= max_blocks
        elif held:
            addr = sorted(held, key=lambda a: (a.version, a))[int(arg) % len(held)]  # type: ignore[call-overload]
            node = held.pop(addr)
            assert e.release(addr).node == node
            # Released, then the same node asks again: it gets an address (maybe this one) and
            # it is never one somebody holds.
            again = e.allocate(node, f"h{counter}", addr.version)
            counter += 1
            assert again not in held
            held[again] = node
    # The state agrees with the model, and survives a JSON round trip.
    allocated = {b.address(o) for b in e.state.blocks.values() for o in b.allocations}
    assert allocated == set(held)
    assert IPAMState.from_json(e.state.to_json()).to_json() == e.state.to_json()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=12), victim=st.integers(min_value=0, max_value=11))
def test_property_release_then_reallocate_returns_lowest_free(n: int, victim: int) -> None:
    e = engine(pool("p", "10.0.0.0/24", 28))
    addrs = [e.allocate("a", f"h{i}") for i in range(n)]
    gone = addrs[victim % n]
    e.release(gone)
    assert e.allocate("a", "again") == gone


@settings(max_examples=60, deadline=None)
@given(extra=st.integers(min_value=1, max_value=6))
def test_property_borrowing_only_after_own_blocks_are_full(extra: int) -> None:
    cfg = IPAMConfig(max_blocks_per_host=1)
    e = engine(pool("p", "10.0.0.0/27", 29), config=cfg)
    e.allocate("b", "b0")
    own = [e.allocate("a", f"a{i}") for i in range(8)]
    assert all(e.state.block_of(x).affinity == "a" for x in own)  # type: ignore[union-attr]
    more = [e.allocate("a", f"x{i}") for i in range(extra)]
    assert all(e.state.block_of(x).affinity == "b" for x in more)  # type: ignore[union-attr]
    assert len({*own, *more}) == 8 + extra
