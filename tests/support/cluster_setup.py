"""Multi-node kernel-test setup: node namespaces on one L2 segment, workloads, Tortie's routes,
BIRD and the VXLAN overlay, the way ``runtime/`` would set up a real node.

Usage::

    with Cluster() as cluster:
        switch, nodes = l2_segment(cluster, {"n1": "192.168.77.1", "n2": "192.168.77.2"})
        add_workloads(nodes, rs.endpoints)           # a pod netns per workload endpoint
        for name, node in nodes.items():
            reconcile_routes(node, name, rs.endpoints, state.sorted_blocks())
        daemons = Daemons()
        try:
            for name, node in nodes.items():
                daemons.start_bird(rs, name, node, state.sorted_blocks(), tmp / name)
            wait_for("routes", lambda: ...)
        finally:
            daemons.stop_all()

The segment is a Linux bridge ``br0`` in a "switch" netns; each node's ``eth0`` is a veth
plugged into it (address ``A.B.C.D/24``), so nodes reach each other as on one rack, with ARP.
Workload routes and IPAM block blackholes come from ``runtime.routes`` (protocol 81); the
harness's own pod routes are deleted so that only Tortie's are in place. BIRD runs through
``runtime.bgp.reload.apply_config`` in the node's netns, with its config, control socket and
PID file in a directory of the test; every daemon is stopped by PID (also the one a failed
start left behind: its PID file is read at stop time).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import Endpoint, ResourceSet
from compiler.tools import bird
from runtime.bgp.build import BuildOptions
from runtime.bgp.reload import BirdPaths, Outcome, apply_config
from runtime.bgp.render import render_node
from runtime.ipam_state import Block, IPAMState
from runtime.routes import DesiredRoute, block_routes, reconcile, workload_routes
from tests.support.netns import Cluster, Node

__all__ = [
    "CONVERGE",
    "Daemons",
    "add_workloads",
    "l2_segment",
    "plug",
    "reconcile_routes",
    "reconcile_vxlan",
    "wait_for",
    "workload_key",
]

CONVERGE = 40.0  # seconds for BGP sessions to come up and routes to land


def wait_for(what: str, check: Callable[[], bool], timeout: float = CONVERGE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def plug(switch: Node, node: Node, name: str, cidr: str) -> None:
    """``eth0`` of ``node`` (address ``cidr``) into the switch's bridge."""
    node.ip_batch(
        [
            f"link add eth0 type veth peer name {name} netns {switch.name}",
            f"addr add {cidr} dev eth0",
            "link set eth0 up",
        ]
    )
    switch.ip_batch([f"link set {name} master br0", f"link set {name} up"])


def l2_segment(
    cluster: Cluster,
    node_ips: Mapping[str, str],
    prefixlen: int = 24,
    *,
    static_neighbours: bool = False,
) -> tuple[Node, dict[str, Node]]:
    """A "switch" netns with bridge ``br0`` and one node netns per entry of ``node_ips``
    (name -> eth0 address), plugged in as ``p-<name>``. Returns (switch, nodes).

    ``static_neighbours``: every node gets a permanent neighbour entry for every other node's
    eth0, so that a burst of first packets (a probe batch, VXLAN-encapsulated or routed) never
    waits in, or overflows, the queue of an unresolved neighbour (see tests/support/netns.py).
    """
    switch = cluster.add_node("switch")
    switch.ip_batch(["link add br0 type bridge", "link set br0 up"])
    nodes = {name: cluster.add_node(name) for name in node_ips}
    for name, addr in node_ips.items():
        plug(switch, nodes[name], f"p-{name}", f"{addr}/{prefixlen}")
    if static_neighbours:
        macs = {name: _mac(node, "eth0") for name, node in nodes.items()}
        for name, node in nodes.items():
            node.ip_batch(
                f"neigh replace {node_ips[other]} lladdr {macs[other]} dev eth0 nud permanent"
                for other in nodes
                if other != name
            )
    return switch, nodes


def _mac(node: Node, iface: str) -> str:
    out = node.run(["ip", "-j", "link", "show", "dev", iface]).stdout
    return str(json.loads(out)[0]["address"])


def workload_key(ep: Endpoint) -> str:
    """The Cluster key of a workload endpoint's pod netns: ``<namespace>/<pod>``."""
    return f"{ep.namespace}/{ep.pod or ep.name}"


def add_workloads(nodes: Mapping[str, Node], endpoints: Iterable[Endpoint]) -> dict[str, str]:
    """A pod netns for every IPv4 workload endpoint, on its node, behind the interface the
    compiler named; the harness's /32 route is deleted (``reconcile_routes`` puts Tortie's in
    its place). Returns pod key (:func:`workload_key`) -> IPv4 address."""
    out: dict[str, str] = {}
    for ep in sorted(endpoints, key=lambda e: e.id):
        if ep.is_host:
            continue
        v4 = next((str(ip) for ip in ep.ips if ip.version == 4), None)
        if v4 is None:
            continue
        node = nodes[ep.node]
        key = workload_key(ep)
        node.add_pod(key, ep.interface, v4, None)
        node.ip_batch([f"route del {v4}/32 dev {ep.interface}"])
        out[key] = v4
    return out


def reconcile_routes(
    node: Node,
    name: str,
    endpoints: Iterable[Endpoint],
    blocks: Iterable[Block],
    extra: Iterable[DesiredRoute] = (),
) -> None:
    """Tortie's routes on ``node`` (named ``name``): workload /32s, block blackholes and
    ``extra`` (e.g. VXLAN routes), reconciled as protocol 81."""
    from pyroute2 import IPRoute

    wanted = workload_routes(endpoints, name) + block_routes(blocks, name) + list(extra)
    with IPRoute(netns=node.name) as ipr:
        result = reconcile(ipr, wanted, families=(4,))
    assert not result.skipped, result.skipped


def reconcile_vxlan(
    node: Node, name: str, rs: ResourceSet, state: IPAMState, endpoints: Iterable[Endpoint]
) -> None:
    """``vxlan.calico`` with static neighbours and FDB for the other nodes, and all of
    Tortie's routes including the ones to the other nodes' blocks through the tunnel."""
    from pyroute2 import IPRoute

    from runtime.vxlan import reconcile_device, vteps, vxlan_routes

    all_vteps = vteps(rs.nodes, rs.ip_pools, state)
    local = next(v for v in all_vteps if v.node == name)
    with IPRoute(netns=node.name) as ipr:
        reconcile_device(ipr, local, all_vteps)
    reconcile_routes(
        node, name, endpoints, state.sorted_blocks(), extra=vxlan_routes(name, all_vteps)
    )


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


@dataclass
class Daemons:
    """BIRDs started by a test, stopped by PID in :meth:`stop_all` (call it in ``finally``)."""

    pidfiles: dict[str, str] = field(default_factory=dict)  # node -> BIRD PID file
    pids: dict[str, int] = field(default_factory=dict)  # node -> BIRD PID

    def start_bird(
        self, rs: ResourceSet, name: str, node: Node, blocks: Iterable[Block], directory: Path
    ) -> int:
        """Render node ``name``'s BIRD configuration from ``rs`` and its blocks and start BIRD
        in ``node``'s netns, with its files in ``directory``."""
        os.makedirs(directory, exist_ok=True)
        paths = BirdPaths.in_dir(str(directory))
        sink = DiagnosticSink()
        text = render_node(
            rs,
            name,
            list(blocks),
            sink,
            options=BuildOptions(log_file=str(directory / "bird.log")),
        )
        assert text is not None and not sink.diagnostics, [d.message for d in sink.diagnostics]
        self.pidfiles[name] = paths.pidfile  # before the start: a half-started BIRD is stopped too
        assert apply_config(text, paths, netns=node.name) is Outcome.STARTED
        pid = bird.read_pid(paths.pidfile)
        assert pid is not None
        self.pids[name] = pid
        return pid

    def stop_bird(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        pidfile = self.pidfiles.pop(name, None)
        if pid is None and pidfile is not None:
            pid = bird.read_pid(pidfile)
            if pid is not None and _comm(pid) != "bird":
                pid = None  # a stale file: never signal a process that is not our BIRD
        if pid is not None:
            bird.stop(pid)

    def stop_all(self) -> None:
        errors = []
        for name in sorted(set(self.pids) | set(self.pidfiles)):
            try:
                self.stop_bird(name)
            except Exception as e:  # noqa: BLE001 - stop the others, then report
                errors.append(f"{name}: {e}")
        if errors:
            raise RuntimeError("could not stop BIRD: " + "; ".join(errors))
