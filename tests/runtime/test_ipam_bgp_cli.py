"""``tortie ipam show|allocate|release`` and ``tortie bgp render`` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from compiler.tools import bird

CLUSTER = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-a, labels: {rack: r1}}
spec:
  bgp: {ipv4Address: 192.168.0.1/24}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-b, labels: {rack: r2}}
spec:
  bgp: {ipv4Address: 192.168.0.2/24}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: small}
spec: {cidr: 10.65.0.0/28, blockSize: 30}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:65::/120"}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {podIP: 10.65.0.5, podIPs: [{ip: 10.65.0.5}]}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_show_from_endpoints(cluster: Path) -> None:
    code, out, err = run("ipam", "show", "-f", str(cluster))
    assert code == 0, err
    assert "node node-a" in out and "block 10.65.0.4/30" in out and "used 1/4" in out
    assert "small" in out and "blocks 1/4" in out
    code, out, _ = run("ipam", "show", "-f", str(cluster), "-o", "json")
    data = json.loads(out)
    assert data["nodes"]["node-a"]["blocks"][0]["cidr"] == "10.65.0.4/30"


def test_allocate_release_cycle(cluster: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "ipam.json")
    code, out, err = run(
        "ipam",
        "allocate",
        "-f",
        str(cluster),
        "--state",
        state,
        "--node",
        "node-b",
        "--handle",
        "default/x",
        "--ipv6",
        "1",
    )
    assert code == 0, err
    assert out.split() == ["10.65.0.0", "fd00:65::"]
    code, out, _ = run(
        "ipam",
        "allocate",
        "-f",
        str(cluster),
        "--state",
        state,
        "--node",
        "node-a",
        "--handle",
        "default/y",
    )
    assert out.split() == ["10.65.0.4"]
    code, out, _ = run("ipam", "show", "-f", str(cluster), "--state", state, "--node", "node-b")
    assert "node node-b" in out and "node node-a" not in out
    code, out, _ = run("ipam", "release", "--state", state, "--handle", "default/x")
    assert code == 0 and out.splitlines() == ["10.65.0.0 default/x", "fd00:65:: default/x"]
    code, _, err = run("ipam", "release", "--state", state, "10.65.0.0")
    assert code == 1 and "not allocated" in err
    # Releasing a handle twice (a CNI DEL retried) is not an error, but it is not silent either.
    code, out, err = run("ipam", "release", "--state", state, "--handle", "default/x")
    assert code == 0 and out == "" and "'default/x' holds no addresses" in err


def test_allocate_is_all_or_nothing(cluster: Path, tmp_path: Path) -> None:
    state = tmp_path / "ipam.json"
    code, _, err = run(
        "ipam",
        "allocate",
        "-f",
        str(cluster),
        "--state",
        str(state),
        "--node",
        "node-a",
        "--handle",
        "h",
        "--ipv4",
        "40",
        "--strict-affinity",
    )
    assert code == 1 and ("exhausted" in err or "strictAffinity" in err), err
    assert not state.exists()
    code, _, err = run(
        "ipam",
        "allocate",
        "-f",
        str(cluster),
        "--state",
        str(state),
        "--node",
        "nope",
        "--handle",
        "h",
    )
    assert code == 1 and "unknown node" in err


def test_release_needs_something(tmp_path: Path) -> None:
    code, _, err = run("ipam", "release", "--state", str(tmp_path / "s.json"))
    assert code == 2 and "give addresses" in err


def test_bgp_render(cluster: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(
        "bgp", "render", "-f", str(cluster), "--node", "node-a", "-o", str(out_dir)
    )
    assert code == 0, err
    text = (out_dir / "bird.cfg").read_text()
    assert out.strip() == str(out_dir / "bird.cfg")
    assert "protocol bgp Mesh_192_168_0_2" in text and "route 10.65.0.4/30 blackhole;" in text
    code, _, err = run("bgp", "render", "-f", str(cluster), "--node", "ghost", "-o", str(out_dir))
    assert code == 1 and "B004" in err


def test_bgp_render_secrets(tmp_path: Path) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text(
        CLUSTER
        + """
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 192.168.0.254
  asNumber: 65000
  password: {secretKeyRef: {name: s, key: tor}}
"""
    )
    code, _, err = run(
        "bgp", "render", "-f", str(yaml), "--node", "node-a", "-o", str(tmp_path / "o")
    )
    assert code == 1 and "B002" in err
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"s/tor": 'bad"quote'}))
    code, _, err = run(
        "bgp",
        "render",
        "-f",
        str(yaml),
        "--node",
        "node-a",
        "-o",
        str(tmp_path / "o"),
        "--secrets",
        str(secrets),
    )
    assert code == 1 and "B001" in err
    secrets.write_text(json.dumps({"s/tor": "fine"}))
    code, _, err = run(
        "bgp",
        "render",
        "-f",
        str(yaml),
        "--node",
        "node-a",
        "-o",
        str(tmp_path / "o"),
        "--secrets",
        str(secrets),
        "--router-id",
        "hash",
    )
    assert code == 0, err
    text = (tmp_path / "o" / "bird.cfg").read_text()
    assert 'password "fine";' in text and "router id 192.168.0.1;" not in text
    if bird.available():
        bird.check_config(str(tmp_path / "o" / "bird.cfg"))
