"""Tests of the kernel-test support code itself that need no kernel."""

from __future__ import annotations

import ipaddress

import pytest

from tests.support.iptables import backend_params, normalize_rule, own_rules
from tests.support.netns import Cluster
from tests.support.topology import NftTopology, Topology, next_src_port
from tests.support.traffic import Probe


def test_probe_flow_translation() -> None:
    topo = NftTopology(Cluster(), {})
    with pytest.raises(KeyError):
        topo.source_ip("nowhere", ipaddress.ip_address("10.0.0.1"))
    probe = Probe("a", "10.0.0.2", "ICMP")
    assert probe.protocol == "ICMP"
    assert next_src_port() != next_src_port()


def test_a_topology_must_say_how_it_loads() -> None:
    with pytest.raises(NotImplementedError):
        Topology(Cluster(), {}).load()


def test_own_rules_picks_tortie_chains_and_hooks() -> None:
    saved = """# Generated
*filter
:INPUT ACCEPT [0:0]
:tt-INPUT - [0:0]
:other - [0:0]
-A INPUT -j other
-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT
-A tt-INPUT -j ACCEPT
-A other -j DROP
COMMIT
"""
    assert own_rules(saved) == {
        "filter": {
            "tt-INPUT": ["-A tt-INPUT -j ACCEPT"],
            "INPUT": ['-A INPUT -m comment --comment "tortie:hook" -j tt-INPUT'],
        }
    }
    assert normalize_rule("-A x -p gre -j RETURN") == "-A x -p 47 -j RETURN"
    assert len(backend_params()) == 2
