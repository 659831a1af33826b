"""An apply that does not change a flow's verdict never drops it.

Pod a keeps four TCP connections to pod b busy with echo round trips and streams UDP datagrams
to b, while the node's ruleset is replaced 100 times, alternating two artifacts that both allow
those flows (they differ in an unrelated policy for pod c). Losses counted: TCP errors, TCP
retransmissions (``tcpi_total_retrans``: a dropped segment is retransmitted) and UDP datagrams
that never arrived. All must be zero.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.apply import apply_artifact, load_dir
from tests.support.demo_cluster import FLOW_TCP, FLOW_UDP, POD_IPS, cluster_yaml, compile_dir
from tests.support.netns import in_netns
from tests.support.runtime_world import bpffs_cleanup, world

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

APPLIES = 100
CONNECTIONS = 4
TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)
WITNESS = """
table ip witness {
    chain early { type filter hook forward priority -200; policy accept; udp dport 6000 counter; }
    chain late { type filter hook forward priority 200; policy accept; udp dport 6000 counter; }
    chain pre { type filter hook prerouting priority -400; policy accept; udp dport 6000 counter; }
}
"""
_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass
class Traffic:
    stop: threading.Event = field(default_factory=threading.Event)
    round_trips: int = 0
    tcp_errors: list[str] = field(default_factory=list)
    udp_sent: int = 0
    udp_seen: set[int] = field(default_factory=set)
    threads: list[threading.Thread] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spawn(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)


def _echo(conn: socket.socket, tr: Traffic) -> None:
    with contextlib.suppress(OSError):
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)


def _serve(listener: socket.socket, tr: Traffic) -> None:
    for _ in range(CONNECTIONS):
        conn, _ = listener.accept()
        tr.sockets.append(conn)
        tr.spawn(_echo, conn, tr)


def _client(sock: socket.socket, tr: Traffic) -> None:
    seq = 0
    try:
        while not tr.stop.is_set():
            msg = struct.pack("!Q", seq) * 8
            sock.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = sock.recv(len(msg) - len(got))
                if not chunk:
                    raise ConnectionError("connection closed")
                got += chunk
            if got != msg:
                raise ValueError(f"echo mismatch at {seq}")
            seq += 1
            with tr.lock:
                tr.round_trips += 1
            time.sleep(0.001)  # leave the GIL to the applies and the UDP receiver
    except (OSError, ValueError) as e:
        tr.tcp_errors.append(f"{type(e).__name__}: {e}")


def _udp_send(sock: socket.socket, tr: Traffic) -> None:
    seq = 0
    while not tr.stop.is_set():
        try:
            sock.send(struct.pack("!Q", seq))
        except OSError as e:
            tr.tcp_errors.append(f"udp send: {e}")
            return
        seq += 1
        tr.udp_sent = seq
        time.sleep(0.0005)


def _udp_recv(sock: socket.socket, tr: Traffic) -> None:
    sock.settimeout(0.2)
    while True:
        try:
            data = sock.recv(64)
        except TimeoutError:
            if tr.stop.is_set():
                return
            continue
        except OSError:
            return
        tr.udp_seen.add(struct.unpack("!Q", data[:8])[0])


def _retrans(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0]


@pytest.mark.parametrize("target", ["nftables", "iptables", "ebpf"])
def test_100_applies_drop_no_packet(tmp_path: Path, target: str) -> None:
    hep = target != "ebpf"  # the eBPF target programs workloads only
    a_dir = compile_dir(cluster_yaml(7000, host_endpoint=hep), tmp_path / "A", target)
    b_dir = compile_dir(cluster_yaml(7001, host_endpoint=hep), tmp_path / "B", target)
    arts = [load_dir(a_dir, "n1"), load_dir(b_dir, "n1")]
    with world(tmp_path) as w, bpffs_cleanup(w):
        apply_artifact(arts[0], w.env)
        w.node.run(["nft", "-f", "-"], input=WITNESS)
        pod_a, pod_b = w.cluster.get("a").name, w.cluster.get("b").name
        tr = Traffic()
        with in_netns(pod_b):
            listener = socket.create_server(("0.0.0.0", FLOW_TCP))
            udp_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_in.setsockopt(socket.SOL_SOCKET, _RCVBUFFORCE, 8 << 20)
            udp_in.bind(("0.0.0.0", FLOW_UDP))
        tr.sockets += [listener, udp_in]
        tr.spawn(_serve, listener, tr)
        tr.spawn(_udp_recv, udp_in, tr)
        clients = []
        with in_netns(pod_a):
            for _ in range(CONNECTIONS):
                clients.append(socket.create_connection((POD_IPS["b"], FLOW_TCP), timeout=5))
            udp_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_out.connect((POD_IPS["b"], FLOW_UDP))
        tr.sockets += [*clients, udp_out]
        try:
            for c in clients:
                tr.spawn(_client, c, tr)
            tr.spawn(_udp_send, udp_out, tr)
            time.sleep(0.3)
            t0 = time.monotonic()
            modes = set()
            for i in range(APPLIES):
                outcome = apply_artifact(arts[(i + 1) % 2], w.env)
                assert outcome.applied
                modes.add(outcome.plan.mode)
            seconds = time.monotonic() - t0
            time.sleep(0.3)
        finally:
            tr.stop.set()
            time.sleep(0.3)
            retrans = sum(_retrans(c) for c in clients)
            for s in tr.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            for t in tr.threads:
                t.join(timeout=5)
        lost_udp = tr.udp_sent - len(tr.udp_seen)
        missing = sorted(set(range(tr.udp_sent)) - tr.udp_seen)[:20]
        snmp = w.cluster.get("b").run(["cat", "/proc/net/snmp"]).stdout
        witness = w.node.run(["nft", "list", "table", "ip", "witness"]).stdout
        udp = [line for line in snmp.splitlines() if line.startswith("Udp:")]
        print(
            f"\n{target}: {APPLIES} applies ({modes}) in {seconds:.1f}s: {tr.round_trips} TCP round trips on "
            f"{CONNECTIONS} connections, {retrans} retransmissions, {len(tr.tcp_errors)} TCP errors; "
            f"UDP {tr.udp_sent} sent, {lost_udp} lost {missing}\n{udp}\n{witness}"
        )
        assert tr.tcp_errors == []
        assert retrans == 0
        assert lost_udp == 0
        assert tr.round_trips > 1000 and tr.udp_sent > 1000
