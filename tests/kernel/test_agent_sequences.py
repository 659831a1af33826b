"""Whatever sequence of changes the agent applies — set-only updates, chain updates, deltas, full
loads after drift — the kernel ends up holding exactly what a fresh full load of the same inputs
gives: after every tick, ``nft list table`` of the agent's node (normalised: counters masked,
blocks sorted) equals that of a second namespace loaded with the full script compiled from the
tree, and ``tortie status`` reports no drift.

The changes (hypothesis picks sequences): a local pod gets or loses a label that selects a
deny-egress policy (a chain update), a local pod becomes or stops being a client of b (a set-only
update), a client pod on another node comes and goes (set-only), a pod is scheduled on or leaves
this node (a chain update with dispatch changes), a policy's port changes (a delta of the
general path), and someone flushes the table (drift: the agent re-applies everything). The pods
live in a file with a hostile name (it is in every endpoint chain's comment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load
from compiler.ir.passes import MEMBERSHIP_STABLE_PASSES
from compiler.pipeline import compile_program
from compiler.targets.nftables import render_program
from compiler.tools import nft
from runtime.agent import Agent, AgentConfig
from runtime.nftables import normalise
from runtime.status import read_status
from tests.kernel.test_agent_chains import LOCKED
from tests.kernel.test_agent_incremental import _local_pod, _remote_pod
from tests.support.demo_cluster import NODE, cluster_yaml
from tests.support.runtime_world import world

pytestmark = pytest.mark.kernel

# The pods' file name reaches every endpoint chain's comment (file:line): quotes, a semicolon,
# a dollar sign and non-ASCII must neither break nor inject into the script or the batch.
PODS = 'pods "x"; flush ruleset; $HOME \u00fc.yaml'

STEPS = st.one_of(
    st.tuples(st.just("lock"), st.sampled_from(["a", "c"])),
    st.tuples(st.just("client"), st.sampled_from(["a", "c"])),
    st.tuples(st.just("remote"), st.none()),
    st.tuples(st.just("extra"), st.none()),
    st.tuples(st.just("port"), st.none()),
    st.tuples(st.just("flush"), st.none()),
)


def _write(watch: Path, s: dict[str, object]) -> None:
    clients = tuple(sorted(s["clients"]))  # type: ignore[arg-type]
    docs = [d for d in yaml.safe_load_all(cluster_yaml(int(s["port"]), clients=clients)) if d]  # type: ignore[call-overload]
    pods = [d for d in docs if d["kind"] == "Pod"]
    for pod in pods:
        labels = pod["metadata"]["labels"]
        labels.setdefault("role", "none")
        labels["lock"] = "yes" if pod["metadata"]["name"] in s["locked"] else "no"  # type: ignore[operator]
    if s["extra"]:
        pods.append(_local_pod("d", "10.65.0.44"))
    if s["remote"]:
        pods.append(_remote_pod("r1", "10.65.9.9"))
    rest = [d for d in docs if d["kind"] != "Pod"] + [LOCKED]
    (watch / "base.yaml").write_text(yaml.safe_dump_all(rest, sort_keys=True))
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}, sort_keys=True)
    (watch / PODS).write_text(text)


def _reference(watch: Path) -> str:
    """The full script of the tree as ``tortie compile`` makes it."""
    sink = DiagnosticSink()
    rs = load([str(watch)], sink, SourceRegistry())
    program = compile_program(rs, NODE, sink, passes=MEMBERSHIP_STABLE_PASSES)
    assert not sink.has_errors
    return render_program(program).script


MODES: list[str] = []  # every tick's apply mode, over all examples


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(STEPS, min_size=3, max_size=8))
def test_any_sequence_leaves_the_kernel_as_a_full_load(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, str | None]]
) -> None:
    tmp = tmp_path_factory.mktemp("seq")
    watch = tmp / "watch"
    watch.mkdir()
    s: dict[str, object] = {
        "clients": {"a"},
        "locked": set(),
        "remote": False,
        "extra": False,
        "port": 7000,
    }
    _write(watch, s)
    with world(tmp) as w:
        ref = w.cluster.add_node("ref").name
        agent = Agent(AgentConfig(NODE, watch, w.env, "nftables", 0.05, record_delay=3600))
        assert agent.tick() is not None
        modes = []
        for op, arg in steps:
            if op == "flush":
                nft.run(["flush", "table", "inet", "tortie"], netns=w.node.name)
            elif op == "port":
                s["port"] = 7001 if s["port"] == 7000 else 7000
            elif op in ("remote", "extra"):
                s[op] = not s[op]
            else:
                group = s["locked" if op == "lock" else "clients"]
                assert isinstance(group, set)
                group.symmetric_difference_update({arg})
            _write(watch, s)
            res = agent.tick()
            assert res is not None and res.result != "error", (op, res)
            modes.append(res.mode)
            nft.load(_reference(watch), netns=ref)
            want = normalise(nft.list_table("inet", "tortie", netns=ref))
            got = normalise(nft.list_table("inet", "tortie", netns=w.node.name))
            assert got == want, (steps, modes)
            st_ = read_status(w.env)
            assert st_.in_sync, (steps, modes, st_.diff)
        MODES.extend(modes)


def test_the_sequences_took_every_path() -> None:
    """The property above went through the chain, set and general paths and a drift repair
    (else it proved less than it says)."""
    if not MODES:
        test_any_sequence_leaves_the_kernel_as_a_full_load()
    assert {"chains", "sets", "full"} <= set(MODES), MODES
    assert {"update"} & set(MODES) or "full" in MODES, MODES
