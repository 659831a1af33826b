"""``tortie compile`` for several nodes at once (``--node`` repeated, ``--all-nodes``): one
artifact directory per node, byte-identical to that node's own compile, written all at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo")


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("target", ["nftables", "iptables"])
def test_all_nodes_equals_one_compile_per_node(tmp_path: Path, target: str) -> None:
    out = tmp_path / "all"
    code, stdout, stderr = _run(
        "compile", "-f", DEMO, "--all-nodes", "--target", target, "-o", str(out)
    )
    assert code == 0, stderr
    assert "2 nodes" in stdout
    index = json.loads((out / "nodes.json").read_text())
    assert index["format"] == 1 and index["target"] == target
    assert index["nodes"] == ["node1", "node2"]
    assert sorted(p.name for p in out.iterdir()) == ["node1", "node2", "nodes.json"]
    for node in index["nodes"]:
        one = tmp_path / f"one-{node}"
        code, _, stderr = _run(
            "compile", "-f", DEMO, "--node", node, "--target", target, "-o", str(one)
        )
        assert code == 0, stderr
        assert _tree(out / node) == _tree(one), node
    # --node given more than once means the tree layout, even for the same node twice.
    some = tmp_path / "some"
    code, _, stderr = _run(
        "compile",
        "-f",
        DEMO,
        "--node",
        "node2",
        "--node",
        "node2",
        "--target",
        target,
        "-o",
        str(some),
    )
    assert code == 0, stderr
    assert json.loads((some / "nodes.json").read_text())["nodes"] == ["node2"]
    assert _tree(some / "node2") == _tree(out / "node2")


def test_rerun_replaces_the_tree(tmp_path: Path) -> None:
    out = tmp_path / "all"
    args = ("compile", "-f", DEMO, "--all-nodes", "--target", "nftables", "-o", str(out))
    assert _run(*args)[0] == 0
    first = _tree(out)
    (out / "node1" / "stale.txt").write_text("x")
    assert _run(*args)[0] == 0
    assert _tree(out) == first  # replaced as a whole; byte-identical (determinism)


def test_usage_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    code, _, stderr = _run("compile", "-f", DEMO, "--target", "nftables", "-o", out)
    assert code == 2 and "--all-nodes" in stderr
    code, _, stderr = _run(
        "compile", "-f", DEMO, "--node", "node1", "--all-nodes", "--target", "nftables", "-o", out
    )
    assert code == 2 and "cannot be combined" in stderr
    assert not Path(out).exists()


def test_unknown_node_among_several_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, stderr = _run(
        "compile",
        "-f",
        DEMO,
        "--node",
        "node1",
        "--node",
        "nope",
        "--target",
        "nftables",
        "-o",
        str(out),
    )
    assert code == 1 and "unknown node 'nope'" in stderr
    assert not out.exists()


def test_not_an_artifact_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = _run(
        "compile", "-f", DEMO, "--all-nodes", "--target", "nftables", "-o", str(out)
    )
    assert code == 2 and "nodes.json" in stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_node_name_that_is_not_a_directory_name(tmp_path: Path) -> None:
    """A pod's nodeName comes from the input: it must never become a path outside -o."""
    cluster = tmp_path / "in"
    shutil.copytree(DEMO, cluster)
    pods = cluster / "cluster" / "pods.yaml"
    pods.write_text(pods.read_text().replace("nodeName: node2", "nodeName: ../escape", 1))
    out = tmp_path / "o"
    code, _, stderr = _run(
        "compile", "-f", str(cluster), "--all-nodes", "--target", "nftables", "-o", str(out)
    )
    assert code == 1 and "'../escape' cannot name a directory" in stderr
    assert not out.exists() and not (tmp_path / "escape").exists()
    # Alone, that node still compiles into the directory the user names.
    one = tmp_path / "one"
    code, _, stderr = _run(
        "compile", "-f", str(cluster), "--node", "../escape", "--target", "nftables", "-o", str(one)
    )
    assert code == 0, stderr
    assert (one / "manifest.json").is_file()


def test_errors_for_one_node_write_nothing_and_keep_the_old_tree(tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["compile", "-f", DEMO, "--all-nodes", "--target", "iptables", "-o", str(out)]
    assert _run(*args)[0] == 0
    before = _tree(out)
    tiny = tmp_path / "felix.yaml"
    tiny.write_text(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n"
        "metadata: {name: default}\nspec: {maxIpsetSize: 1}\n"
    )
    # The demo has its own default FelixConfiguration: replace the file that holds it.
    cluster = tmp_path / "in"
    shutil.copytree(DEMO, cluster)
    shutil.copy(tiny, cluster / "calico" / "felixconfiguration.yaml")
    args[2] = str(cluster)
    code, _, stderr = _run(*args)
    assert code == 1 and "E827" in stderr and "nothing written" in stderr
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]
