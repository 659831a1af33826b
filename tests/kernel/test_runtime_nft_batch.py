"""``tortie apply`` of an nftables artifact that carries ``nftables.batch`` (compile --nft-batch).

The full replacement goes out as the compiled netlink batch instead of ``nft -f``; the kernel
must end up exactly as with the script (listing and traffic), a batch the kernel refuses must
leave the old table in force, and a batch that does not encode the artifact's script is not
used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.artifact import Artifact, write_artifact
from compiler.targets.nftables import BATCH, with_batch
from compiler.targets.nftables import batch as nb
from compiler.tools import nft
from tests.support.demo_cluster import (
    FLOW_TCP,
    NODE_V4,
    POD_IPS,
    cluster_yaml,
    compile_yaml,
)
from tests.support.runtime_world import World, world
from tests.support.traffic import Probe, send_probes

pytestmark = pytest.mark.kernel


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    with world(tmp_path) as made:
        yield made


def _artifact(seed: int | None = None) -> Artifact:
    _, artifact = compile_yaml(cluster_yaml() if seed is None else cluster_yaml(seed), "nftables")
    assert artifact is not None
    with_b, why = with_batch(artifact)
    assert why is None, why
    return with_b


def _table(w: World) -> str:
    return nft.run(["list", "table", "inet", "tortie"], netns=w.node.name).stdout


def test_apply_sends_the_batch_and_the_kernel_holds_the_script(w: World, tmp_path: Path) -> None:
    art = write_artifact(_artifact(), tmp_path / "a")
    res = w.cli("apply", str(art), "--node", "n1", "-vv")
    assert res.returncode == 0, res.stderr
    assert "one netlink batch" in res.stderr
    via_batch = _table(w)
    # The same artifact without the batch, loaded by nft -f into the same namespace.
    nft.run(["delete", "table", "inet", "tortie"], netns=w.node.name)
    script = (art / "nftables.nft").read_bytes()
    plain = write_artifact(Artifact("nftables", "n1", {"nftables.nft": script}), tmp_path / "p")
    res = w.cli("apply", str(plain), "--node", "n1", "-vv")
    assert res.returncode == 0, res.stderr
    assert "one netlink batch" not in res.stderr
    assert _table(w) == via_batch
    # And the batch-loaded table polices traffic: reload it and probe.
    nft.run(["delete", "table", "inet", "tortie"], netns=w.node.name)
    assert w.cli("apply", str(art), "--node", "n1").returncode == 0
    got = send_probes(
        w.cluster,
        [Probe("a", POD_IPS["b"], "TCP", FLOW_TCP), Probe("ext", NODE_V4, "TCP", 80)],
        timeout=1.0,
    )
    assert list(got.values()) == [True, False]
    assert w.cli("status").returncode == 0


def _drifted(w: World, tmp_path: Path) -> str:
    """A table applied, then a chain added by hand (drift, so the next apply must replace the
    whole table); the table with handles."""
    good = write_artifact(_artifact(), tmp_path / "good")
    assert w.cli("apply", str(good), "--node", "n1").returncode == 0
    nft.run(["add", "chain", "inet", "tortie", "by-hand"], netns=w.node.name)
    return nft.run(["-a", "list", "table", "inet", "tortie"], netns=w.node.name).stdout


def _with_broken_batch(script: str, batch_script: str, out: Path) -> Path:
    """An artifact of ``script`` whose batch encodes ``batch_script`` (the header still names
    ``script``, so the runtime uses it)."""
    files = {
        "nftables.nft": script.encode(),
        BATCH: nb.with_header(script, nb.encode(batch_script)),
    }
    return write_artifact(Artifact("nftables", "n1", files), out)


def test_a_refused_batch_falls_back_to_nft(w: World, tmp_path: Path) -> None:
    """The kernel refuses the batch (it jumps to a chain that does not exist): nothing is
    committed, the runtime loads the script with nft -f, and the apply succeeds."""
    _drifted(w, tmp_path)
    _, changed = compile_yaml(cluster_yaml(7001), "nftables")
    assert changed is not None
    script = changed.files["nftables.nft"].decode()
    broken = script.replace("jump wl-ingress/", "jump no-such-chain-", 1)
    art = _with_broken_batch(script, broken, tmp_path / "bad-batch")
    res = w.cli("apply", str(art), "--node", "n1", "-vv")
    assert res.returncode == 0, res.stderr
    assert "one netlink batch" in res.stderr
    # which message the kernel refused: here the map element that jumps to the missing chain
    assert "refused, nothing committed: set elements wl-ingress" in res.stderr
    assert "loading nftables.nft with nft -f instead" in res.stderr
    assert "7001" in _table(w) and "by-hand" not in _table(w)


def test_a_refused_batch_and_script_keep_the_old_table(w: World, tmp_path: Path) -> None:
    handles = _drifted(w, tmp_path)
    _, changed = compile_yaml(cluster_yaml(7001), "nftables")
    assert changed is not None
    broken = (
        changed.files["nftables.nft"].decode().replace("jump wl-ingress/", "jump no-such-chain-", 1)
    )
    art = _with_broken_batch(broken, broken, tmp_path / "bad")
    res = w.cli("apply", str(art), "--node", "n1", "-vv")
    assert res.returncode == 1, res.stdout
    assert "refused, nothing committed" in res.stderr  # the batch ...
    assert "no-such-chain" in res.stderr  # ... and nft's own message for the script
    assert "previous state is in force" in res.stderr
    assert nft.run(["-a", "list", "table", "inet", "tortie"], netns=w.node.name).stdout == handles


def test_a_batch_of_another_script_is_not_used(w: World, tmp_path: Path) -> None:
    art = _artifact()
    other = _artifact(7001)
    files = {**art.files, BATCH: other.files[BATCH]}
    d = write_artifact(Artifact("nftables", "n1", files), tmp_path / "x")
    res = w.cli("apply", str(d), "--node", "n1", "-vv")
    assert res.returncode == 0, res.stderr
    assert "one netlink batch" not in res.stderr
    assert "7001" not in _table(w)
