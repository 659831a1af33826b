"""Tests of the runtime tests' demo cluster (no kernel needed)."""

from __future__ import annotations

from tests.support.demo_cluster import cluster_yaml, compile_yaml


def test_fixture_compiles_for_every_target_shape() -> None:
    program, artifact = compile_yaml(cluster_yaml())
    assert {e.id for e in program.endpoints} >= {"demo/a", "demo/b", "demo/c"}
    assert "nftables.nft" in artifact.files  # type: ignore[attr-defined]
    _, other = compile_yaml(cluster_yaml(unrelated_port=7001))
    assert other.files != artifact.files  # type: ignore[attr-defined]


def test_runtime_table_name_matches_the_target() -> None:
    from compiler.targets.nftables import script
    from runtime import nftables

    assert (nftables.FAMILY, nftables.TABLE) == (script.FAMILY, script.TABLE)
