"""Per-packet policy cost at a given number of rules per endpoint (``gen.py --shape rules``).

nftables and iptables: real packets. A node namespace with a ``client`` and a ``server`` pod
(tests/support/netns.py, the interfaces and addresses the compiled rules name) loads the
artifact; the client sends a burst of UDP datagrams to the server, each from a new source port,
so every datagram is the first packet of a new flow and walks the server's whole ingress policy
(all rules but the last miss, the last allows). The cost per packet is the burst's wall time
divided by its length; the same burst with no ruleset loaded is the baseline.

eBPF: ``BPF_PROG_TEST_RUN`` of the server's ingress program (tc egress of its veth) on a TCP SYN
from the client, ``repeat`` times; the kernel reports the average run time. A SYN always meets
policy (the program's conntrack never short-cuts a SYN), so each run walks every rule.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from compiler.frontend.schema.k8s_core import interface_name

from .gen import RULES_CLIENT, RULES_NAMESPACE, RULES_SERVER

PORT = 9999
_SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by the socket module
BURST = 2000
REPS = 5


def _udp(src_port: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", src_port, PORT, 8 + len(payload), 0) + payload  # no checksum (v4)


def _burst(sender: socket.socket, receiver: socket.socket, dst: str, first_port: int) -> float:
    """Seconds to send BURST datagrams from new source ports and receive them all."""
    payload = b"tortie-bench"
    received = 0
    t0 = time.perf_counter()
    for i in range(BURST):
        sender.sendto(_udp(first_port + i, payload), (dst, 0))
        if i % 128 == 127:
            received += _drain(receiver)
    deadline = time.perf_counter() + 10
    while received < BURST and time.perf_counter() < deadline:
        received += _drain(receiver)
    elapsed = time.perf_counter() - t0
    if received < BURST:
        raise RuntimeError(f"only {received} of {BURST} datagrams arrived: is the flow allowed?")
    return elapsed


def _drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return n
        n += 1


def real_packets(load: Callable[[object], None] | None) -> dict[str, float]:
    """Per-packet microseconds (median and best of REPS bursts) through a node whose ruleset is
    put in place by ``load(node)`` (None: no ruleset)."""
    from tests.support.netns import Cluster, in_netns

    client_if = interface_name(RULES_NAMESPACE, RULES_CLIENT[0])
    server_if = interface_name(RULES_NAMESPACE, RULES_SERVER[0])
    with Cluster() as cluster:
        node = cluster.add_node("node")
        client = node.add_pod("client", client_if, RULES_CLIENT[1], RULES_CLIENT[2])
        server = node.add_pod("server", server_if, RULES_SERVER[1], RULES_SERVER[2])
        if load is not None:
            load(node)
        with in_netns(server.name):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
            receiver.bind((RULES_SERVER[1], PORT))
            receiver.setblocking(False)
        with in_netns(client.name):
            sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            times = [
                _burst(sender, receiver, RULES_SERVER[1], 1024 + rep * BURST)
                for rep in range(REPS + 1)
            ][1:]  # the first burst warms caches and neighbour entries
        finally:
            sender.close()
            receiver.close()
    per = [t / BURST * 1e6 for t in times]
    return {"us_per_packet_median": statistics.median(per), "us_per_packet_best": min(per)}


def nft_loader(artifact: Path) -> Callable[[object], None]:
    script = (artifact / "nftables.nft").read_text()

    def load(node: object) -> None:
        node.run(["nft", "-f", "-"], input=script)  # type: ignore[attr-defined]

    return load


def iptables_loader(artifact: Path, backend: str = "nft") -> Callable[[object], None]:
    from compiler.targets.iptables.render import IPSET_FILE, RULES_FILE
    from compiler.tools import iptables as iptables_tool

    def load(node: object) -> None:
        run = node.run  # type: ignore[attr-defined]
        run(["ipset", "restore"], input=(artifact / IPSET_FILE).read_text())
        for family in (4, 6):
            argv = [iptables_tool.binary(family, backend, "restore"), "--noflush"]
            run(argv, input=(artifact / RULES_FILE[family]).read_text())

    return load


_DURATION = re.compile(r"duration \(average\):\s*(\d+)\s*ns", re.I)


def ebpf_prog_run(artifact: Path, repeat: int = 100_000) -> dict[str, float]:
    """Average ns per run of the server's ingress program on a client SYN (BPF_PROG_TEST_RUN)."""
    from compiler.ir.flow import Flow
    from compiler.targets.ebpf import load, packets
    from compiler.tools import bpftool

    doc = json.loads((artifact / "maps.json").read_text())
    server = next(e for e in doc["endpoints"] if e["id"] == f"{RULES_NAMESPACE}/{RULES_SERVER[0]}")
    flow = Flow(
        ipaddress.ip_address(RULES_CLIENT[1]), ipaddress.ip_address(RULES_SERVER[1]), 6, 40000, PORT
    )
    frame = packets.frame(flow, packets.Shape())
    with load.private_bpffs() as root:
        ld = load.load_artifact(artifact, root)
        prog = ld.entry(server["tc_egress"])
        with tempfile.NamedTemporaryFile("wb", suffix=".pkt") as f:
            f.write(frame)
            f.flush()
            runs = []
            for _ in range(REPS):
                out = bpftool.run(
                    ["prog", "run", "pinned", prog, "data_in", f.name, "repeat", str(repeat)]
                )
                m = _DURATION.search(out)
                if m is None:
                    raise RuntimeError(f"no duration in bpftool output: {out.strip()[:200]}")
                if "Return value: 0" not in out and "return value: 0" not in out.lower():
                    raise RuntimeError(f"the probe was not allowed: {out.strip()[:200]}")
                runs.append(int(m.group(1)))
    return {"ns_per_run_median": statistics.median(runs), "ns_per_run_best": min(runs)}
