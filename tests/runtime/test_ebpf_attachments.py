"""Which interfaces the eBPF runtime attaches to, from maps.json and the node's devices."""

from __future__ import annotations

from runtime.ebpf import attachments

DOC = {
    "endpoints": [
        {"interface": "cali1234567890a", "tc_ingress": "p-a.bpf.o", "tc_egress": "p-b.bpf.o"},
        {"interface": "eth1", "tc_ingress": "p-c.bpf.o", "tc_egress": "p-d.bpf.o"},
        {"interface": "*", "tc_ingress": "p-e.bpf.o", "tc_egress": "p-f.bpf.o"},
    ]
}


def test_star_host_endpoint_covers_every_other_interface_but_lo() -> None:
    got = attachments(DOC, ["lo", "eth0", "eth1", "cali1234567890a", "eth2"])
    assert got == {
        "tc cali1234567890a ingress": "p-a",
        "tc cali1234567890a egress": "p-b",
        "tc eth1 ingress": "p-c",
        "tc eth1 egress": "p-d",
        "tc eth0 ingress": "p-e",
        "tc eth0 egress": "p-f",
        "tc eth2 ingress": "p-e",
        "tc eth2 egress": "p-f",
    }


def test_missing_interfaces_are_not_attached() -> None:
    got = attachments(DOC, ["lo"])
    assert got == {}
