"""A simulated Kubernetes node built from network namespaces, for kernel-backed tests.

Usage::

    with Cluster() as cluster:
        node = cluster.add_node("n1")
        ext = node.add_uplink("eth0", "192.168.100.1", "fd00:100::1", "192.168.100.2", "fd00:100::2")
        a = node.add_pod("a", "cali0000000000a", "10.65.0.1", "fd00:65::1")
        b = node.add_pod("b", "cali0000000000b", "10.65.0.2", "fd00:65::2")
        node.run(["nft", "-f", "-"], input=RULESET)
        results = send_probes(cluster, [Probe("a", "10.65.0.2", "TCP", 80)])  # tests/support/traffic.py

Topology, the way Calico wires a node (routed, no bridge):

- A pod is a netns whose ``eth0`` is the peer of a host-side veth ``cali...`` in the node netns. The pod
  has ``ipv4/32`` and ``ipv6/128``, a default route via ``169.254.1.1`` (IPv4) and ``fe80::1`` (IPv6)
  on eth0. The host veth has Calico's MAC ``ee:ee:ee:ee:ee:ee``, ``proxy_arp=1`` and ``fe80::1``.
  The node has one ``/32`` and one ``/128`` route per pod to the host veth, and forwards, so
  pod-to-pod traffic goes through the node's forward hook.
- An uplink is a veth from the node to an "external host" netns whose default route points at the
  node, so outside traffic to pods is forwarded by the node and traffic to node IPs hits its input hook.
- ``Cluster.connect`` joins two nodes by a veth and routes each side's pods, node IPs and external
  hosts through it.

Every neighbour entry is installed ``nud permanent`` on both sides of every veth. Calico itself lets the
node ARP for pods; we don't, for two reasons: a burst of hundreds of first packets to an unresolved
neighbour overflows its ``unres_qlen_bytes`` queue (dropped SYNs are retransmitted only after 1 s, a
flake), and a firewall under test that drops ARP or NDP would otherwise fail probes for reasons the test
isn't about. IPv6 DAD is off and every address is added ``nodad``, so addresses are usable at once.

Modules, by concern: :mod:`.command` runs commands and the current thread in a netns
(``in_netns``); :mod:`.namespaces` holds the node, pod and external-host objects and their
wiring; :mod:`.cluster` creates, connects, finds and deletes them.

Safety: every netns is named ``tortie-t<random>-...``; all ``ip`` commands run with ``-n <our netns>``;
sysctls are written from a thread that ``in_netns`` has switched (and verified) into our netns. The
root namespace is never changed. ``Cluster.close`` (also ``__exit__`` and an ``atexit`` hook) deletes
every netns the cluster created, which also destroys the veths in them.
"""

from tests.support.netns.cluster import NAME_PREFIX, Cluster
from tests.support.netns.command import (
    CLONE_NEWNET,
    COMMAND_TIMEOUT,
    NETNS_RUN_DIR,
    CommandError,
    in_netns,
    run_command,
)
from tests.support.netns.namespaces import (
    HOST_VETH_MAC,
    IFNAMSIZ,
    POD_GATEWAY_V4,
    POD_GATEWAY_V6,
    External,
    IPAddress,
    Netns,
    Node,
    Pod,
)

__all__ = [
    "CLONE_NEWNET",
    "COMMAND_TIMEOUT",
    "HOST_VETH_MAC",
    "IFNAMSIZ",
    "NAME_PREFIX",
    "NETNS_RUN_DIR",
    "POD_GATEWAY_V4",
    "POD_GATEWAY_V6",
    "Cluster",
    "CommandError",
    "External",
    "IPAddress",
    "Netns",
    "Node",
    "Pod",
    "in_netns",
    "run_command",
]
