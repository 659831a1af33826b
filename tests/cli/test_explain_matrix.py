"""``tortie explain``, ``tortie matrix`` and ``tortie ir`` on a small cluster written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from compiler.cli import main

CLUSTER = """\
apiVersion: v1
kind: Node
metadata: {name: node1}
status:
  addresses:
  - {address: 10.0.1.1, type: InternalIP}
---
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: red}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  nodeName: node1
  containers: [{name: c, image: x}]
status:
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec:
  nodeName: node1
  containers:
  - name: c
    image: x
    ports: [{containerPort: 5432, name: pg, protocol: TCP}]
status:
  podIP: 10.0.0.2
  podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: b, labels: {app: cli}}
spec:
  nodeName: node1
  containers: [{name: c, image: x}]
status:
  podIP: 10.0.0.3
  podIPs: [{ip: 10.0.0.3}, {ip: "fd00::3"}]
---
apiVersion: v1
kind: Pod
metadata: {name: six, namespace: b, labels: {app: six}}
spec:
  nodeName: node1
  containers: [{name: c, image: x}]
status:
  podIP: "fd00::6"
  podIPs: [{ip: "fd00::6"}]
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: "yes"}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [10.0.1.1]
"""

POLICY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: a}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Log
    source: {selector: app == 'web'}
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [pg, 5432]}
  - action: Deny
    protocol: TCP
    source: {selector: app == 'web', nets: [10.0.0.0/24]}
    destination: {ports: [5432]}
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
"""


@pytest.fixture()
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policy.yaml").write_text(POLICY)
    return ["-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "policy.yaml")]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


# -- explain ------------------------------------------------------------------------------------


def test_explain_allowed_names_policy_rule_and_line(files: list[str]) -> None:
    r = run(
        "explain", *files, "--from", "a/web", "--to", "a/db", "--protocol", "TCP", "--port", "5432"
    )
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "a/web (10.0.0.1) -> a/db (10.0.0.2), TCP port 5432" in out
    assert "verdict: ALLOWED" in out
    assert "numbered from 1" in out
    assert "NetworkPolicy a/db-ingress, rule 1 (Log) at " in out
    assert "policy.yaml:8 logs the packet" in out
    assert "NetworkPolicy a/db-ingress, rule 2 (Allow) at " in out
    assert "policy.yaml:10 allows  <- decides" in out
    assert "profile kns.a, rule 1 (Allow)" in out  # the source's egress: no policy, profile allows


def test_explain_denied_by_end_of_tier(files: list[str]) -> None:
    r = run("explain", *files, "--from", "b/cli", "--to", "a/db", "--port", "5432")
    assert r.exit_code == 0, r.output
    assert "verdict: DENIED by the destination's ingress" in r.stdout
    assert (
        "end of tier default: no rule of its policies (NetworkPolicy a/db-ingress) matched"
        in r.stdout
    )


def test_explain_json_is_stable_data(files: list[str]) -> None:
    r = run("explain", *files, "--from", "a/web", "--to", "a/db", "--port", "5432", "-o", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["allowed"] is True
    assert data["from"] == {"peer": "a/web", "endpoint": "a/web", "ip": "10.0.0.1"}
    assert (data["protocol"], data["port"], data["family"]) == ("TCP", 5432, 4)
    decided = data["ingress"]["decided_by"]
    assert decided["reason"] == "rule"
    assert (decided["policy"], decided["kind"], decided["namespace"], decided["name"]) == (
        "np/a/db-ingress",
        "NetworkPolicy",
        "a",
        "db-ingress",
    )
    assert (decided["rule"], decided["rule_index"], decided["line"]) == (2, 1, 10)
    assert decided["file"].endswith("policy.yaml")
    assert [e["action"] for e in data["ingress"]["events"]] == ["log", "allow"]
    assert data["egress"]["decided_by"]["profile"] == "kns.a"
    assert set(data) == {
        "from", "to", "family", "protocol", "port", "icmp_type", "icmp_code", "via",
        "allowed", "egress", "ingress",
    }  # fmt: skip


def test_explain_icmp_and_ip_literals(files: list[str]) -> None:
    r = run(
        "explain",
        *files,
        "--from",
        "192.0.2.7",
        "--to",
        "a/db",
        "--protocol",
        "ICMP",
        "--icmp-type",
        "8",
    )
    assert r.exit_code == 0, r.output
    assert "ICMP type 8 code 0" in r.stdout
    assert "the source is not a Calico endpoint" in r.stdout
    assert "rule 4 (Allow)" in r.stdout
    r = run(
        "explain",
        *files,
        "--from",
        "192.0.2.7",
        "--to",
        "a/db",
        "--protocol",
        "ICMP",
        "--icmp-type",
        "0",
    )
    assert "verdict: DENIED" in r.stdout


def test_explain_v6_when_the_other_side_forces_it(files: list[str]) -> None:
    r = run("explain", *files, "--from", "b/six", "--to", "a/web", "--port", "80", "-o", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["from"]["ip"], data["to"]["ip"], data["family"]) == ("fd00::6", "fd00::1", 6)
    r = run("explain", *files, "--from", "b/six", "--to", "10.0.0.1", "--port", "80")
    assert r.exit_code == 1
    assert "no address family in common" in r.stderr


def test_explain_host_endpoint_by_name(files: list[str]) -> None:
    r = run("explain", *files, "--from", "a/web", "--to", "node1-eth0", "--port", "22")
    assert r.exit_code == 0, r.output
    assert "node1-eth0 (10.0.1.1)" in r.stdout
    assert "defaultEndpointToHostAction denies" in r.stdout  # a workload to its own node


def test_explain_unknown_peer_is_exit_1(files: list[str]) -> None:
    r = run("explain", *files, "--from", "a/nope", "--to", "a/db", "--port", "80")
    assert r.exit_code == 1
    assert "--from 'a/nope': no such endpoint" in r.stderr
    r = run("explain", *files, "--from", "a/web", "--to", "a/db", "--port", "80", "--via", "nope")
    assert r.exit_code == 1
    assert "no host endpoint" in r.stderr


def test_explain_usage_errors_are_exit_2(files: list[str]) -> None:
    assert run("explain", *files, "--from", "a/web", "--to", "a/db").exit_code == 2  # no --port
    assert (
        run(
            "explain",
            *files,
            "--from",
            "a/web",
            "--to",
            "a/db",
            "--protocol",
            "ICMP",
            "--port",
            "1",
        ).exit_code
        == 2
    )
    assert (
        run(
            "explain", *files, "--from", "a/web", "--to", "a/db", "--protocol", "XTP", "--port", "1"
        ).exit_code
        == 2
    )


def test_input_errors_are_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: NetworkPolicy\napiVersion: projectcalico.org/v3\nmetadata: {name: x}\nspec: {selector: 'a ='}\n"
    )
    for args in (
        ["explain", "--from", "1.1.1.1", "--to", "2.2.2.2", "--port", "80"],
        ["matrix"],
        ["ir"],
    ):
        r = run(args[0], "-f", str(bad), *args[1:])
        assert r.exit_code == 1, (args, r.output)
        assert "error[" in r.stderr


# -- matrix -------------------------------------------------------------------------------------


def test_matrix_text(files: list[str]) -> None:
    r = run("matrix", *files, "--port", "5432")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("reachability TCP/5432 over IPv4: 3 pods")
    assert "left out (no IPv4 address): b/six" in r.stdout
    table = lines[lines.index("-\ta/db\ta/web\tb/cli") :]
    assert table[1:] == ["a/db\tX*\t.\t.", "a/web\t.\t.*\t.", "b/cli\tX\t.\t.*"]


def test_matrix_json_every_ordered_pair(files: list[str]) -> None:
    r = run("matrix", *files, "--port", "80", "--port", "5432", "--protocol", "TCP", "-o", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(data) == 2 * 3 * 3
    assert data[0] == {
        "from": "a/db",
        "to": "a/db",
        "protocol": "TCP",
        "port": 80,
        "allowed": False,
    }
    got = {(d["from"], d["to"], d["port"]): d["allowed"] for d in data}
    assert got[("a/web", "a/db", 5432)] is True
    assert got[("b/cli", "a/db", 5432)] is False
    assert got[("b/cli", "a/web", 80)] is True


def test_matrix_namespace_family_and_icmp(files: list[str]) -> None:
    r = run(
        "matrix", *files, "--namespace", "b", "--family", "6", "--protocol", "ICMP", "-o", "json"
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {(d["from"], d["to"]) for d in data} == {
        ("b/cli", "b/cli"), ("b/cli", "b/six"), ("b/six", "b/cli"), ("b/six", "b/six"),
    }  # fmt: skip
    assert {d["protocol"] for d in data} == {"ICMPv6"} and {d["port"] for d in data} == {None}


def test_matrix_unknown_namespace_and_a_port_nothing_uses_are_errors(files: list[str]) -> None:
    r = run("matrix", *files, "--namespace", "nope")
    assert r.exit_code == 1 and "nope" in r.stderr
    r = run("matrix", *files, "--protocol", "ICMP", "--port", "80")
    assert r.exit_code == 2 and "--port" in r.stderr
    r = run("matrix", *files, "--protocol", "ICMP", "--protocol", "TCP", "--port", "80")
    assert r.exit_code == 0, r.output


# -- ir -----------------------------------------------------------------------------------------


def test_ir_reports_and_drops_shadowed_rule(files: list[str]) -> None:
    r = run("ir", *files)
    assert r.exit_code == 0, r.output
    out = r.stdout
    policy = out[out.index("  np/a/db-ingress") : out.index("profiles:")]
    assert "#2 allow v4" in policy and "#3 " not in policy
    assert "dropped rules:\n  np/a/db-ingress ingress #3" in out
    assert "warnings: 1" in out
    assert "warning[W101]: ingress rule 3 of NetworkPolicy a/db-ingress can never match" in out
    assert "shadowing rule 2 is at " in out and "policy.yaml:10:" in out


def test_ir_dump_after(files: list[str]) -> None:
    r = run("ir", *files, "--dump-after", "all")
    assert r.exit_code == 0, r.output
    heads = [line for line in r.stdout.splitlines() if line.startswith("=== after ")]
    assert heads == [
        "=== after build ===",
        "=== after resolve_sets ===",
        "=== after split_families ===",
        "=== after aggregate_cidrs ===",
        "=== after dedupe_sets ===",
        "=== after fold_empty ===",
        "=== after shadowed_rules ===",
    ]
    r = run("ir", *files, "--dump-after", "build")
    assert "(unresolved)" in r.stdout
    assert run("ir", *files, "--dump-after", "nope").exit_code == 2
