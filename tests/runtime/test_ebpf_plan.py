"""The order of an eBPF apply's steps: everything is loaded and wired into the bank not in force
before the one map write that switches every interface (``bpf-flip``); interfaces are attached
before it and detached after it. No kernel: the plan is computed from a kernel snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.ebpf import EbpfDataplane
from runtime.plan import ArtifactRefused, Env, KernelState, LoadedArtifact
from runtime.state import Record, StateDir

DOC = {
    "dispatch": "d-1.bpf.o",
    "config": {"value": "00"},
    "objects": {"p-a": {}, "p-b": {}},
    "endpoints": [
        {"id": "ns/x", "interface": "calix", "tc_ingress": "p-a.bpf.o", "tc_egress": "p-b.bpf.o"},
        {"id": "ns/y", "interface": "caliy", "tc_ingress": "p-a.bpf.o", "tc_egress": "p-b.bpf.o"},
    ],
    "sets": [{"id": "s:1:4", "family": 4, "kind": "selector", "members": ["10.0.0.1/32"]}],
}
FILES = {"obj/d-1.bpf.o": b"d", "obj/p-a.bpf.o": b"a", "obj/p-b.bpf.o": b"b"}


def _artifact(doc: dict, name: str = "x") -> LoadedArtifact:  # type: ignore[type-arg]
    files = {**FILES, "maps.json": json.dumps(doc).encode()}
    manifest = {"target": "ebpf", "node": "n1", "name": name}
    return LoadedArtifact(name, manifest, json.dumps(manifest).encode(), files)


def _dp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EbpfDataplane:
    monkeypatch.setattr("compiler.tools.tc.devices", lambda netns=None: ["calix", "caliy", "lo"])
    return EbpfDataplane(Env(StateDir(tmp_path / "s"), bpffs=tmp_path / "b"))


def _record(units: dict[str, str | None], art: LoadedArtifact) -> Record:
    return Record("ebpf", "n1", art.hash, "x", "", 0.0, "full", {}, units, {})


def test_full_apply_flips_once_after_loading_wiring_and_attaching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # calix is policed by bank 0 now, calio has the dispatcher and leaves, caliy is new.
    current = KernelState(
        {"tc calix ingress": "g-old/p-a", "tc calio ingress": "g-old/p-a"},
        {},
        {"active": "0", "attached": "calix ingress d-1\ncalio ingress d-1", "sets": "s-old"},
    )
    plan = _dp(tmp_path, monkeypatch).plan(current, _artifact(DOC), None, {})
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["bpf-gc", "bpf-load", "bpf-sets", "bpf-wire"] + ["tc-attach"] * 3 + [
        "bpf-flip",
        "tc-detach",
    ]
    flip = plan.steps[kinds.index("bpf-flip")]
    assert flip.args == ("1", "0")  # into bank 1, from bank 0
    attached = {s.args[:2] for s in plan.steps if s.kind == "tc-attach"}
    assert attached == {("calix", "egress"), ("caliy", "ingress"), ("caliy", "egress")}
    assert plan.steps[-1].args == ("calio", "ingress")
    wire = plan.steps[kinds.index("bpf-wire")]
    assert wire.args[2] == "1" and json.loads(wire.payload)["tc caliy egress"] == "p-b"
    desired = json.loads(plan.desired)
    assert desired["sets"] == wire.args[1] and len(desired["units"]) == 4


def test_set_only_apply_wires_a_new_set_version_with_the_programs_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _artifact(DOC, "old")
    doc = {**DOC, "sets": [{**DOC["sets"][0], "members": ["10.0.0.2/32"]}]}  # type: ignore[dict-item]
    units: dict[str, str | None] = {
        "tc calix ingress": "g-1/p-a",
        "tc calix egress": "g-1/p-b",
        "bpf s-1 tortie_sets_v4": "x",
    }
    current = KernelState(units, {}, {"active": "1", "attached": "", "sets": "s-1"})
    plan = _dp(tmp_path, monkeypatch).plan(current, _artifact(doc), _record(units, old), old.files)
    assert plan.mode == "sets"
    assert [s.kind for s in plan.steps] == ["bpf-gc", "bpf-sets", "bpf-wire", "bpf-flip"]
    wire = plan.steps[2]
    assert wire.args[0] == "g-1" and wire.args[2] == "0"  # the generation in force, bank 0
    assert json.loads(wire.payload) == {"tc calix ingress": "p-a", "tc calix egress": "p-b"}


def test_an_artifact_without_dispatcher_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {k: v for k, v in DOC.items() if k != "dispatch"}
    with pytest.raises(ArtifactRefused, match="no dispatcher"):
        _dp(tmp_path, monkeypatch).plan(KernelState({}, {}, {}), _artifact(doc), None, {})
