"""Send real probes through a Cluster (tests/support/netns/) and report which ones arrived.

Usage::

    results = send_probes(cluster, [
        Probe("a", "10.65.0.2", "TCP", 80),
        Probe("a", "fd00:65::2", "UDP", 53, src_port=5353),
        Probe("ext", "10.65.0.2", "ICMP", None),
    ])
    assert results[Probe("a", "10.65.0.2", "TCP", 80)]

Semantics: **every probe gets a listener.** ``send_probes`` opens a TCP/UDP listener on the destination
port in the namespace that owns ``dst_ip`` before it sends anything, so "closed port" never happens
and ``False`` always means "the network (a firewall) did not deliver it". A probe arrived when:

- TCP (and SCTP): the handshake completed and the destination's listener ``accept()``-ed a connection
  whose peer is the probe's client socket. So both directions must pass: a firewall that drops the
  SYN-ACK or the final ACK also makes the probe fail.
- UDP: the listener received the probe's datagram (a per-batch token in the payload) from the
  client's source address and port (for a probe with ``src_port``: that port and an address of the
  source netns). One direction only.
- ICMP / ICMPv6: the source got the echo reply (matched by id, sequence and replying address). Both
  directions; the destination kernel answers.

A firewall ``reject`` ends a TCP probe early (False); drops are only known when ``timeout`` expires.
The call returns as soon as every probe is decided, so a batch where everything arrives takes a few
milliseconds. Client TCP sockets and accepted ones are closed with SO_LINGER 0 (an RST, no TIME_WAIT),
so the same (src, src_port) can be probed again at once. Conntrack entries made by earlier batches do
survive in the node, though: use a fresh Cluster when a test depends on there being none.

Limits: at most 65535 ICMP probes per (source netns, family) and 4096 TCP probes per listener
(``net.core.somaxconn``) in one call.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import resource
import secrets
import selectors
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tests.support.netns import Cluster, IPAddress, in_netns

ProtocolName = Literal["TCP", "UDP", "ICMP", "ICMPv6", "SCTP"]
PROTOCOLS: frozenset[str] = frozenset({"TCP", "UDP", "ICMP", "ICMPv6", "SCTP"})

_STREAM_PROTO = {"TCP": socket.IPPROTO_TCP, "SCTP": socket.IPPROTO_SCTP}
_LINGER_RST = struct.pack("ii", 1, 0)
_RCVBUF = 4 << 20
# Root may exceed net.core.rmem_max (212992 by default): every datagram and echo reply of a batch
# can queue before wait() reads any, since sends run the whole receive path synchronously.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_ICMP_ECHO_REQUEST = {4: 8, 6: 128}
_ICMP_ECHO_REPLY = {4: 0, 6: 129}


class ProtocolUnavailable(RuntimeError):
    """The kernel lacks a protocol a probe needs (SCTP on our CI kernels): skip the test."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One packet exchange to try. ``src`` is a pod id, node name or external host name."""

    src: str
    dst_ip: str
    protocol: ProtocolName
    dst_port: int | None = None
    src_port: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; use one of {sorted(PROTOCOLS)}")
        addr = ipaddress.ip_address(self.dst_ip)  # raises ValueError on junk
        if self.protocol == "ICMP" and addr.version != 4:
            raise ValueError(f"ICMP probe to IPv6 address {self.dst_ip}: use ICMPv6")
        if self.protocol == "ICMPv6" and addr.version != 6:
            raise ValueError(f"ICMPv6 probe to IPv4 address {self.dst_ip}: use ICMP")
        if self.protocol in ("ICMP", "ICMPv6"):
            if self.dst_port is not None or self.src_port is not None:
                raise ValueError(f"{self.protocol} probes take no ports: {self}")
        elif self.dst_port is None or not 0 < self.dst_port < 65536:
            raise ValueError(f"{self.protocol} probe needs a dst_port in 1..65535: {self}")
        if self.src_port is not None and not 0 < self.src_port < 65536:
            raise ValueError(f"src_port out of range: {self}")

    @property
    def address(self) -> IPAddress:
        return ipaddress.ip_address(self.dst_ip)


def sctp_available() -> bool:
    """Whether this kernel can create SCTP sockets (the CI kernels cannot: no sctp module)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


@dataclass(slots=True)
class _Sent:
    probe: Probe
    src_ns: str
    dst_ns: str
    family: int  # 4 or 6
    arrived: bool = False
    failed: bool = False  # definitively not arrived (TCP got a reset or an ICMP error)
    src_ips: frozenset[IPAddress] = frozenset()  # addresses of the source netns
    src_addr: tuple[IPAddress, int] | None = None  # the client's source, as the listener sees it

    @property
    def decided(self) -> bool:
        return self.arrived or self.failed


def _af(version: int) -> socket.AddressFamily:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _sockaddr(sa: tuple[object, ...]) -> tuple[IPAddress, int]:
    host = str(sa[0]).split("%", 1)[0]
    return ipaddress.ip_address(host), int(sa[1])  # type: ignore[call-overload]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _grow_rcvbuf(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)


def _ensure_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


@dataclass
class _Batch:
    """One send_probes call: all sockets it opened, and the matching tables."""

    cluster: Cluster
    token: bytes = field(default_factory=lambda: secrets.token_hex(6).encode())
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    sockets: list[socket.socket] = field(default_factory=list)
    # stream: (proto, src ip, src port, dst ip, dst port) -> probe
    streams: dict[tuple[str, IPAddress, int, IPAddress, int], _Sent] = field(default_factory=dict)
    # UDP: index in the payload -> probe
    datagrams: dict[int, _Sent] = field(default_factory=dict)
    # ICMP: (src ns, family) -> (echo id, {seq: probe})
    echoes: dict[tuple[str, int], tuple[int, dict[int, _Sent]]] = field(default_factory=dict)
    raw: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    # UDP sockets bound to a fixed port: (netns, family, port) -> socket. Listeners, and also the
    # senders of probes with that src_port (see _send_udp).
    udp_ports: dict[tuple[str, int, int], socket.socket] = field(default_factory=dict)

    def close(self) -> None:
        self.sel.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                if sock.type == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            sock.close()
        self.sockets.clear()

    def _socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        try:
            sock = socket.socket(_af(family), kind, proto)
        except OSError as e:
            if e.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
                raise ProtocolUnavailable(f"cannot open a {kind!r}/{proto} socket: {e}") from e
            raise
        self.sockets.append(sock)
        sock.setblocking(False)
        if family == 6 and kind != socket.SOCK_RAW:  # raw sockets reject IPV6_V6ONLY
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return sock

    # -- listeners ------------------------------------------------------------------------------

    def open_listeners(self, sent: list[_Sent]) -> None:
        """One listener per (dst netns, protocol, family, port), bound to the wildcard address."""
        wanted: dict[str, set[tuple[str, int, int]]] = defaultdict(set)
        for s in sent:
            if s.probe.dst_port is not None:
                wanted[s.dst_ns].add((s.probe.protocol, s.family, s.probe.dst_port))
        for ns, keys in sorted(wanted.items()):
            with in_netns(ns):
                for protocol, family, port in sorted(keys):
                    self._listen(ns, protocol, family, port)

    def _listen(self, ns: str, protocol: str, family: int, port: int) -> None:
        wildcard = "0.0.0.0" if family == 4 else "::"
        if protocol == "UDP":
            self._udp_port(ns, family, port)
            return
        else:
            sock = self._socket(family, socket.SOCK_STREAM, _STREAM_PROTO[protocol])
            # SO_REUSEPORT too: a probe *from* this netns may bind the same port as its source.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((wildcard, port))
        except OSError as e:
            raise RuntimeError(f"cannot listen on {protocol} port {port} in {ns}: {e}") from e
        sock.listen(4096)  # capped by net.core.somaxconn (4096 in a new netns)
        self.sel.register(sock, selectors.EVENT_READ, ("stream-listener", protocol))

    def _udp_port(self, ns: str, family: int, port: int) -> socket.socket:
        """The one UDP socket on (netns, family, port), bound to the wildcard address; call it
        from inside ``ns``. It receives (listener) and sends (probes with that src_port)."""
        key = (ns, family, port)
        sock = self.udp_ports.get(key)
        if sock is None:
            sock = self._socket(family, socket.SOCK_DGRAM)
            _grow_rcvbuf(sock)
            try:
                sock.bind(("0.0.0.0" if family == 4 else "::", port))
            except OSError as e:
                raise RuntimeError(f"cannot bind UDP port {port} in {ns}: {e}") from e
            self.sel.register(sock, selectors.EVENT_READ, ("udp-listener", None))
            self.udp_ports[key] = sock
        return sock

    # -- sending --------------------------------------------------------------------------------

    def fire(self, sent: list[_Sent]) -> None:
        by_src: dict[str, list[_Sent]] = defaultdict(list)
        for s in sent:
            by_src[s.src_ns].append(s)
        for ns, group in sorted(by_src.items()):
            with in_netns(ns):
                for s in group:
                    protocol = s.probe.protocol
                    if protocol == "UDP":
                        self._send_udp(s, len(self.datagrams))
                    elif protocol in _STREAM_PROTO:
                        self._connect(s)
                    else:
                        self._ping(s)

    def _bind_source(self, sock: socket.socket, s: _Sent) -> None:
        if s.probe.src_port is None:
            return
        # Several probes may share a source port (to different destinations), and a listener of
        # this batch may sit on it too: allowed when every socket involved sets both options.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0" if s.family == 4 else "::", s.probe.src_port))

    def _connect(self, s: _Sent) -> None:
        sock = self._socket(s.family, socket.SOCK_STREAM, _STREAM_PROTO[s.probe.protocol])
        self._bind_source(sock, s)
        err = sock.connect_ex((s.probe.dst_ip, s.probe.dst_port))
        if err not in (0, errno.EINPROGRESS):
            s.failed = True  # e.g. ENETUNREACH: no route in the source netns
            return
        s.src_addr = _sockaddr(sock.getsockname())  # chosen by connect(), before the SYN leaves
        key = (s.probe.protocol, *s.src_addr, s.probe.address, int(s.probe.dst_port or 0))
        self.streams[key] = s
        self.sel.register(sock, selectors.EVENT_WRITE, ("stream-client", s))

    def _send_udp(self, s: _Sent, index: int) -> None:
        """A probe without src_port gets its own connected socket (an ephemeral port, its exact
        source known). One with src_port is sent from the shared unconnected socket on that port:
        a connected socket there would steal datagrams meant for this netns's listener on the same
        port (it matches more specifically), e.g. when a and b probe each other from port 53."""
        payload = b"tortie-probe %s %d" % (self.token, index)
        try:
            if s.probe.src_port is None:
                sock = self._socket(s.family, socket.SOCK_DGRAM)
                sock.connect((s.probe.dst_ip, s.probe.dst_port))
                s.src_addr = _sockaddr(sock.getsockname())
                sock.send(payload)
            else:
                sock = self._udp_port(s.src_ns, s.family, s.probe.src_port)
                sock.sendto(payload, (s.probe.dst_ip, s.probe.dst_port))
            self.datagrams[index] = s
        except OSError:
            s.failed = True

    def _ping(self, s: _Sent) -> None:
        """Echo request from a raw socket shared by the (src netns, family): one id, a seq each."""
        key = (s.src_ns, s.family)
        if key not in self.echoes:
            proto = socket.IPPROTO_ICMP if s.family == 4 else socket.IPPROTO_ICMPV6
            raw = self._socket(s.family, socket.SOCK_RAW, proto)
            _grow_rcvbuf(raw)
            self.raw[key] = raw
            self.echoes[key] = (secrets.randbelow(0xFFFF) + 1, {})
            self.sel.register(raw, selectors.EVENT_READ, ("icmp", key))
        ident, by_seq = self.echoes[key]
        seq = len(by_seq)  # send_probes keeps this below 65536
        by_seq[seq] = s
        payload = b"tortie-probe " + self.token
        kind = _ICMP_ECHO_REQUEST[s.family]
        checksum = 0  # for ICMPv6 the kernel computes it (RFC 3542); for ICMP it is ours
        if s.family == 4:
            checksum = _checksum(struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload)
        packet = struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload
        try:
            self.raw[key].sendto(packet, (s.probe.dst_ip, 0))
        except OSError:
            s.failed = True

    # -- receiving ------------------------------------------------------------------------------

    def wait(self, sent: list[_Sent], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        undecided = sum(not s.decided for s in sent)
        while undecided:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in self.sel.select(remaining):
                kind, data = key.data
                if kind == "stream-listener":
                    self._accept(key.fileobj, data)  # type: ignore[arg-type]
                elif kind == "stream-client":
                    self._connected(key.fileobj, data)  # type: ignore[arg-type]
                elif kind == "udp-listener":
                    self._recv_udp(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._recv_icmp(key.fileobj, data)  # type: ignore[arg-type]
            undecided = sum(not s.decided for s in sent)

    def _accept(self, listener: socket.socket, protocol: str) -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.sockets.append(conn)
            key = (protocol, *_sockaddr(peer), *_sockaddr(conn.getsockname()))
            s = self.streams.get(key)  # type: ignore[arg-type]
            if s is not None:
                s.arrived = True

    def _connected(self, sock: socket.socket, s: _Sent) -> None:
        self.sel.unregister(sock)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0 and not s.arrived:
            s.failed = (
                True  # a reset (reject) or an ICMP error; only the accept() counts as arrived
            )

    def _recv_udp(self, sock: socket.socket) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            parts = data.split(b" ")
            if len(parts) != 3 or parts[0] != b"tortie-probe" or parts[1] != self.token:
                continue
            s = self.datagrams.get(int(parts[2]))
            if s is None:
                continue
            ip, port = _sockaddr(peer)
            if s.src_addr is not None:
                s.arrived = s.arrived or s.src_addr == (ip, port)
            else:
                s.arrived = s.arrived or (port == s.probe.src_port and ip in s.src_ips)

    def _recv_icmp(self, sock: socket.socket, key: tuple[str, int]) -> None:
        ident, by_seq = self.echoes[key]
        family = key[1]
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            if family == 4:  # IPv4 raw sockets see the IP header, IPv6 ones do not
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 8:
                continue
            kind, _code, _sum, got_id, seq = struct.unpack("!BBHHH", data[:8])
            if kind != _ICMP_ECHO_REPLY[family] or got_id != ident:
                continue
            s = by_seq.get(seq)
            if s is not None and s.probe.address == _sockaddr(peer)[0]:
                s.arrived = True


def _check_stream_tuples(sent: list[_Sent]) -> None:
    """Refuse TCP/SCTP probes that are the same connection seen from both ends.

    ``a:8080 -> b:8080`` and ``b:8080 -> a:8080`` share one 4-tuple: both SYNs meet as a
    simultaneous open (or one connect fails), and neither can be told apart from the other.
    """
    seen: dict[tuple[object, ...], Probe] = {}
    for s in sent:
        p = s.probe
        if p.protocol not in _STREAM_PROTO or p.src_port is None:
            continue
        seen[(p.protocol, s.family, s.src_ns, p.src_port, s.dst_ns, p.dst_port)] = p
    for (proto, family, src, sport, dst, dport), p in seen.items():
        other = seen.get((proto, family, dst, dport, src, sport))
        if other is not None and other is not p:
            raise ValueError(f"{p} and {other} are one {proto} connection: change a port")


def send_probes(
    cluster: Cluster, probes: Iterable[Probe], timeout: float = 0.5
) -> dict[Probe, bool]:
    """Send every probe at once and report, per probe, whether it arrived (see the module doc).

    All listeners are opened first, then all probes fire, then one wait of at most ``timeout``
    seconds (it ends early once every probe is decided). Duplicate probes are sent once.
    Raises KeyError for an unknown ``src`` or a ``dst_ip`` no namespace of the cluster owns, and
    ProtocolUnavailable when the kernel lacks a protocol (SCTP).
    """
    unique = list(dict.fromkeys(probes))
    sent: list[_Sent] = []
    icmp_count: dict[tuple[str, int], int] = defaultdict(int)
    for probe in unique:
        src = cluster.get(probe.src)
        dst = cluster.owner(probe.dst_ip)
        family = probe.address.version
        if not any(a.version == family for a in src.addresses):
            raise ValueError(f"{probe}: source {src.key!r} has no IPv{family} address")
        sent.append(_Sent(probe, src.name, dst.name, family, src_ips=frozenset(src.addresses)))
        if probe.protocol in ("ICMP", "ICMPv6"):
            icmp_count[(src.name, family)] += 1
    if any(n > 0xFFFF for n in icmp_count.values()):
        raise ValueError("more than 65535 ICMP probes from one namespace in one batch")
    _check_stream_tuples(sent)

    _ensure_fd_limit(3 * len(sent) + 256)
    batch = _Batch(cluster)
    try:
        batch.open_listeners(sent)
        batch.fire(sent)
        batch.wait(sent, timeout)
        return {s.probe: s.arrived for s in sent}
    finally:
        batch.close()


__all__ = ["PROTOCOLS", "Probe", "ProtocolUnavailable", "send_probes", "sctp_available"]
