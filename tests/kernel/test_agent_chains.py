"""The agent's chain-update fast path (runtime/nftables_chains.py) in a node netns: a local
pod's new labels select another policy; only its chains (and what they need) go to the kernel
as one netlink batch, packets then go as the evaluator says for a full compile of the tree,
``status`` sees no drift (stand-ins compared by netlink digest), a change someone makes to a
chain the update made is found, and the idle tick's full record agrees with the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compiler.tools import nft
from runtime.agent import Agent, AgentConfig
from runtime.status import read_status
from tests.kernel.test_agent_incremental import _expected, _kernel, _local_pod, _remote_pod
from tests.support.demo_cluster import NODE, POD_IPS, cluster_yaml
from tests.support.runtime_world import World, world

pytestmark = pytest.mark.kernel

LOCKED = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "locked-egress", "namespace": "demo"},
    "spec": {"podSelector": {"matchLabels": {"lock": "yes"}}, "policyTypes": ["Egress"]},
}


def _write(watch: Path, locked: bool, extra: bool = False, remote: bool = False) -> None:
    """The demo cluster (a is a client of b) plus a policy denying all egress of pods
    labelled ``lock: yes``; a carries that label or ``lock: no`` (the same number of lines).
    ``extra``: one more local pod, d (last in the list: no other pod's lines move);
    ``remote``: a client pod on another node (a set-only change)."""
    docs = [d for d in yaml.safe_load_all(cluster_yaml(clients=("a",))) if d]
    pods = [d for d in docs if d["kind"] == "Pod"]
    if extra:
        pods.append(_local_pod("d", "10.65.0.44"))
    for pod in pods:
        name = pod["metadata"]["name"]
        pod["metadata"]["labels"]["lock"] = "yes" if locked and name == "a" else "no"
    if remote:
        pods.append(_remote_pod("r1", "10.65.9.9"))
    rest = [d for d in docs if d["kind"] != "Pod"] + [LOCKED]
    (watch / "base.yaml").write_text(yaml.safe_dump_all(rest, sort_keys=True))
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}, sort_keys=True)
    (watch / "pods.yaml").write_text(text)


def _agree(w: World, watch: Path) -> bool:
    got = _kernel(w, "a")
    assert got == _expected(watch, POD_IPS["a"], POD_IPS["b"])
    return got


def _agent(w: World, watch: Path, delay: float = 3600) -> Agent:
    return Agent(AgentConfig(NODE, watch, w.env, "nftables", 0.1, record_delay=delay))


def test_local_policy_change_is_a_chain_update(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, False)
    with world(tmp_path) as w:
        agent = _agent(w, watch)
        first = agent.tick()
        assert first is not None and first.mode == "full"
        assert _agree(w, watch)  # a -> b allowed
        record0 = w.env.state.read_record(overlay=False)

        for locked, allowed in ((True, False), (False, True), (True, False)):
            _write(watch, locked)
            res = agent.tick()
            assert res is not None and (res.result, res.mode) == ("applied", "chains"), res
            assert "render" not in res.timings
            assert _agree(w, watch) is allowed
            st = read_status(w.env)
            assert st.in_sync, st.diff
            assert st.record is not None and st.record.overlay
            # Only sets.json was written: the stored record is untouched.
            assert w.env.state.read_record(overlay=False) == record0
            overlay = w.env.state.read_overlay()
            assert overlay is not None and overlay.masked
            assert st.current is not None and st.record.counts == st.current.counts

        # A set-only change on top (a client pod on another node): the set path keeps the
        # chain updates' stand-ins; then a chain update again.
        _write(watch, True, remote=True)
        res = agent.tick()
        assert res is not None and res.mode == "sets", res
        assert read_status(w.env).in_sync
        assert w.env.state.read_overlay().masked == overlay.masked  # type: ignore[union-attr]
        _write(watch, False, remote=True)
        res = agent.tick()
        assert res is not None and res.mode == "chains", res
        assert _agree(w, watch)
        assert read_status(w.env).in_sync
        overlay = w.env.state.read_overlay()
        assert overlay is not None

        # Someone changes a chain the update made (a's egress chain): status sees it, the
        # agent's generation check finds it and re-applies in full.
        chain = next(n for n in overlay.masked if n.startswith("wl-egress/"))
        nft.run(["add", "rule", "inet", "tortie", chain, "accept"], netns=w.node.name)
        st = read_status(w.env)
        assert not st.in_sync
        res = agent.tick()
        assert res is not None and (res.result, res.mode) == ("applied", "full"), res
        assert _agree(w, watch)  # a unlocked: allowed, as the evaluator says
        assert read_status(w.env).in_sync
        assert w.env.state.read_overlay() is None

        # Chain updates again, then the idle tick writes the full record: the kernel, listed
        # by nft, is what the stand-ins said.
        agent = _agent(w, watch, delay=0)
        agent.tick()
        _write(watch, True, remote=True)
        res = agent.tick()
        assert res is not None and res.mode == "chains", res
        assert w.env.state.read_overlay() is not None
        assert agent.tick() is None
        assert w.env.state.read_overlay() is None
        st = read_status(w.env)
        assert st.in_sync and st.record is not None and not st.record.overlay
        assert st.current is not None and st.record.counts == st.current.counts
        assert not _agree(w, watch)  # a locked


def test_local_pod_added_and_removed_is_a_chain_update(tmp_path: Path) -> None:
    """A pod scheduled on (and gone from) this node: its chains, the dispatch maps and
    wl-ifaces change in one chain update; status stays in sync; the record written later
    lists the kernel as nft sees it."""
    watch = tmp_path / "watch"
    watch.mkdir()
    _write(watch, False)
    with world(tmp_path) as w:
        agent = _agent(w, watch)
        assert agent.tick().mode == "full"  # type: ignore[union-attr]
        for extra in (True, False, True):
            _write(watch, True, extra)
            res = agent.tick()
            assert res is not None and (res.result, res.mode) == ("applied", "chains"), res
            assert "render" not in res.timings
            assert not _agree(w, watch)  # a is locked in every step
            st = read_status(w.env)
            assert st.in_sync, st.diff
            assert st.current is not None and st.record is not None
            assert st.record.counts == st.current.counts
            overlay = w.env.state.read_overlay()
            assert overlay is not None
            assert {"wl-ingress", "wl-egress", "wl-ifaces"} <= set(overlay.masked)
            listing = nft.list_table("inet", "tortie", netns=w.node.name)
            assert ('"cali' in listing) and (listing.count("chain wl-ingress/") == 3 + extra)
        # Someone deletes a dispatch map element: found by digest.
        iface = next(n.split("/", 1)[1] for n in overlay.masked if n.startswith("wl-ingress/"))
        nft.run(
            ["delete", "element", "inet", "tortie", "wl-ingress", f'{{ "{iface}" }}'],
            netns=w.node.name,
        )
        assert not read_status(w.env).in_sync
        res = agent.tick()
        assert res is not None and res.mode == "full", res
        assert read_status(w.env).in_sync
