"""``tortie apply`` with the eBPF target: a bpffs mounted on demand (a temporary directory),
generations of pinned programs switched with ``tc filter replace``, set-only updates, drift and
rollback, in a node netns."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.ir import nodes as ir
from compiler.targets.ebpf import EbpfTarget, layout, lower
from compiler.tools import bpftool, clang, tc
from runtime.apply import apply_artifact, load_dir
from runtime.bpffs import is_bpffs
from runtime.ebpf import EbpfDataplane
from runtime.plan import ApplyFailed, LoadedArtifact
from runtime.status import read_status
from tests.support.demo_cluster import FLOW_TCP, POD_IPS, cluster_yaml, compile_dir, compile_yaml
from tests.support.runtime_world import World, bpffs_cleanup, world
from tests.support.traffic import Probe, send_probes

pytestmark = [pytest.mark.kernel, pytest.mark.clang]


def _yaml(port: int = 7000, clients: tuple[str, ...] = ("a",)) -> str:
    return cluster_yaml(port, clients=clients, host_endpoint=False)


@pytest.fixture
def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (clang.available() and bpftool.available() and tc.available()):
        pytest.skip("needs clang, bpftool and tc")
    program, _ = compile_yaml(_yaml(), "ebpf")
    with world(tmp_path, program) as made, bpffs_cleanup(made):
        yield made


def _attached(w: World) -> dict[str, int]:
    out = {}
    for dev in tc.clsact_devices(netns=w.node.name):
        for direction in ("ingress", "egress"):
            for f in tc.bpf_filters(dev, direction, netns=w.node.name):
                out[f"{dev} {direction}"] = f["prog_id"]
    return out


def _b_from(w: World) -> list[bool]:
    probes = [Probe(src, POD_IPS["b"], "TCP", FLOW_TCP) for src in ("a", "c")]
    got = send_probes(w.cluster, probes, timeout=0.5)
    return [got[p] for p in probes]


def test_apply_mounts_bpffs_attaches_and_is_idempotent(w: World, tmp_path: Path) -> None:
    art = compile_dir(_yaml(), tmp_path / "a", "ebpf")
    assert not w.env.bpffs.exists()
    res = w.cli("apply", str(art), "--node", "n1", "-v")
    assert res.returncode == 0, res.stderr
    assert "mounted a bpffs" in res.stderr and is_bpffs(w.env.bpffs)
    attached = _attached(w)
    assert len(attached) == 6  # three pods, two directions
    assert _b_from(w) == [True, False]
    again = w.cli("apply", str(art), "--node", "n1")
    assert again.stdout.startswith("no change"), again.stdout
    assert _attached(w) == attached  # same programs: nothing was reloaded
    st = w.cli("status")
    assert st.returncode == 0 and "6 attachments" in st.stdout, st.stdout


def test_set_only_change_keeps_programs_and_drift_is_repaired(w: World, tmp_path: Path) -> None:
    a = load_dir(compile_dir(_yaml(), tmp_path / "a", "ebpf"), "n1")
    b = load_dir(compile_dir(_yaml(clients=("a", "c")), tmp_path / "b", "ebpf"), "n1")
    apply_artifact(a, w.env)
    attached = _attached(w)
    out = apply_artifact(b, w.env)
    assert out.plan.mode == "sets"
    assert _attached(w) == attached
    assert _b_from(w) == [True, True]
    dev = next(iter(attached)).split()[0]
    tc.detach(dev, "egress", netns=w.node.name)
    st = read_status(w.env)
    assert not st.in_sync and st.drift == (f"tc {dev} egress",)
    out = apply_artifact(b, w.env)
    assert out.plan.mode == "full" and "drifted" in out.plan.reason
    assert read_status(w.env).in_sync and _b_from(w) == [True, True]


def test_failed_apply_reattaches_the_old_generation(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = load_dir(compile_dir(_yaml(7000), tmp_path / "a", "ebpf"), "n1")
    c = load_dir(compile_dir(_yaml(7001, clients=("a", "c")), tmp_path / "c", "ebpf"), "n1")
    apply_artifact(a, w.env)
    before = EbpfDataplane(w.env).read()
    attached = _attached(w)
    monkeypatch.setattr(EbpfDataplane, "verify", lambda self, plan, after: ["injected"])
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(c, w.env)
    assert info.value.restored
    assert _attached(w) == attached
    assert EbpfDataplane(w.env).read().units == before.units
    assert _b_from(w) == [True, False]
    gens = [p.name for p in w.env.bpffs.iterdir() if p.name.startswith("g-")]
    assert len(gens) == 1  # the failed generation was unpinned


def _many_rules_yaml(n: int) -> str:
    """Pod b admits TCP 9000 + i from the clients, one rule per port (``n`` rules)."""
    rules = "".join(
        f"  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]\n"
        f"    ports: [{{protocol: TCP, port: {9000 + i}}}]\n"
        for i in range(n)
    )
    return _yaml() + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: b-many, namespace: demo}\n"
        "spec:\n  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n"
        f"  ingress:\n{rules}"
    )


def test_32_chunks_fit_the_tail_call_chain_behind_the_dispatcher(w: World) -> None:
    """The longest chain the target allows (E834): dispatcher -> tortie_main -> 32 chunks is 33
    tail calls, the kernel's limit. A flow decided in the last chunk still gets its verdict."""
    n, budget = 62, 44  # two rules per chunk at this budget (plus the profile's chunk)
    program, _ = compile_yaml(_many_rules_yaml(n), "ebpf")
    b = next(e for e in program.endpoints if e.id.endswith("/b"))
    chunks = len(lower.lower(program, b, ir.INGRESS, budget).chunks)
    assert chunks == EbpfTarget.LIMITS["max_chunks"] == 32
    art = EbpfTarget(chunk_budget=budget).render(program)
    apply_artifact(LoadedArtifact.from_artifact(art, "many"), w.env)
    last, missing = 9000 + n - 1, 9000 + n
    probes = [Probe("a", POD_IPS["b"], "TCP", port) for port in (9000, last, missing)]
    probes.append(Probe("c", POD_IPS["b"], "TCP", last))
    got = send_probes(w.cluster, probes, timeout=0.5)
    assert [got[p] for p in probes] == [True, True, False, False]


def test_remove_detaches_and_unpins_everything(w: World, tmp_path: Path) -> None:
    a = load_dir(compile_dir(_yaml(), tmp_path / "a", "ebpf"), "n1")
    apply_artifact(a, w.env)
    dp = EbpfDataplane(w.env)
    assert len(_attached(w)) == 6 and dp.read().raw["sets"]
    dp.remove()
    assert _attached(w) == {}
    assert dp.read().empty
    ours = [p.name for p in w.env.bpffs.iterdir() if p.name.startswith(("g-", "s-", "shared"))]
    assert ours == []  # (a bpffs root also holds the kernel's maps.debug and progs.debug)
    assert _b_from(w) == [True, True]  # nothing polices b any more


def test_failed_set_only_apply_flips_back_to_the_old_sets(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = load_dir(compile_dir(_yaml(), tmp_path / "a", "ebpf"), "n1")
    b = load_dir(compile_dir(_yaml(clients=("a", "c")), tmp_path / "b", "ebpf"), "n1")
    apply_artifact(a, w.env)
    before = EbpfDataplane(w.env).read()
    monkeypatch.setattr(EbpfDataplane, "verify", lambda self, plan, after: ["injected"])
    with pytest.raises(ApplyFailed) as info:
        apply_artifact(b, w.env)
    assert info.value.restored
    after = EbpfDataplane(w.env).read()
    assert after.units == before.units and after.raw["active"] == before.raw["active"]
    assert _b_from(w) == [True, False]  # c is not a client again
    monkeypatch.undo()
    out = apply_artifact(b, w.env)
    assert out.plan.mode == "sets" and _b_from(w) == [True, True]


def test_drift_through_the_indirection_is_seen_and_repaired(w: World, tmp_path: Path) -> None:
    """What is live is the bank in force: flipping it or dropping a slot behind the runtime's
    back is drift, and the next apply repairs it."""
    a = load_dir(compile_dir(_yaml(7000), tmp_path / "a", "ebpf"), "n1")
    c = load_dir(compile_dir(_yaml(7001, clients=("a", "c")), tmp_path / "c", "ebpf"), "n1")
    apply_artifact(a, w.env)
    apply_artifact(c, w.env)  # both banks loaded now: c in force, a in the other
    dp = EbpfDataplane(w.env)
    active = int(dp.read().raw["active"])
    assert _b_from(w) == [True, True]
    dp._flip(1 - active)  # someone switches back to a's bank
    st = read_status(w.env)
    assert not st.in_sync and any(u.startswith("tc ") for u in st.drift), st.drift
    assert _b_from(w) == [True, False]  # a's programs and sets are what runs
    out = apply_artifact(c, w.env)
    assert out.plan.mode == "full" and "drifted" in out.plan.reason
    assert read_status(w.env).in_sync and _b_from(w) == [True, True]
    # A slot deleted from the bank in force: that interface is un-policed, and that is drift.
    st_key = next(u for u in dp.read().units if u.endswith(" egress"))
    bank = int(dp.read().raw["active"])
    index = tc.ifindexes(netns=w.node.name)
    key = layout.slot_key(index[st_key.split()[1]], layout.HOOK_TC_EGRESS, bank)
    bpftool.map_delete_batch(str(w.env.bpffs / "shared" / layout.SLOTS.name), [key])
    assert read_status(w.env).drift == (st_key,)
    apply_artifact(c, w.env)
    assert read_status(w.env).in_sync
