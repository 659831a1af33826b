"""``kill -9`` at random points of an eBPF apply leaves one complete ruleset on every interface
together: the old artifact's or the new one's, never a mix.

Variant ``programs`` (full applies): two artifacts that differ in programs (pod c admits port 7000, resp. 7001), in set members
(pod c joins the ``role: client`` set) and in the interfaces they police (pod d and its policy
exist only in B: its interface gets the dispatcher before the flip going A -> B and loses it
after the flip going B -> A). Variant ``sets`` (set-only applies): A and S differ only in set
members (pod c joins the clients), so the programs stay and a new set version is switched in
with the bank. Each iteration applies the old one (a known start), starts
``tortie apply NEW`` as a process group, kills the group with SIGKILL after a random delay,
then checks

* the read-back, normalised (generation names differ between loads of one artifact), is exactly
  the old artifact's or the new one's, every interface and every map together;
* real packets between the pods are decided as the reference evaluator decides them for that
  artifact's program.

Half of the delays are drawn over the whole life of the CLI (most land in Python's start-up),
half after the apply's journal appears, over the time the kernel phase takes, so the window
between loading and the flip is hit often. ``TORTIE_KILL_ITERATIONS`` sets the number of
iterations (default 36).
"""

from __future__ import annotations

import collections
import ipaddress
import os
import random
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from compiler.ir.evaluate import evaluate
from compiler.ir.flow import Flow
from compiler.tools import bpftool, clang, tc
from runtime.apply import apply_artifact, load_dir
from runtime.ebpf import EbpfDataplane
from runtime.plan import KernelState
from runtime.status import read_status
from tests.support.demo_cluster import POD_IPS, cluster_yaml, compile_dir, compile_yaml
from tests.support.runtime_world import (
    CLI,
    ROOT,
    World,
    bpffs_cleanup,
    cli_env,
    killed_apply,
    world,
)
from tests.support.topology import next_src_port
from tests.support.traffic import Probe, send_probes

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.clang]

ITERATIONS = int(os.environ.get("TORTIE_KILL_ITERATIONS", "36"))
D_IP = "10.65.0.4"
POD_D = f"""\
---
apiVersion: v1
kind: Pod
metadata: {{name: d, namespace: demo, labels: {{app: d}}}}
spec: {{nodeName: n1}}
status: {{podIP: {D_IP}, podIPs: [{{ip: {D_IP}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: d-from-clients, namespace: demo}}
spec:
  podSelector: {{matchLabels: {{app: d}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
    ports: [{{protocol: TCP, port: 5000}}]
"""
YAML = {
    "A": cluster_yaml(7000, clients=("a",), host_endpoint=False),
    "B": cluster_yaml(7001, clients=("a", "c"), host_endpoint=False) + POD_D,
    "S": cluster_yaml(7000, clients=("a", "c"), host_endpoint=False),  # A's sets changed
}
VARIANTS = {"programs": ("A", "B"), "sets": ("A", "S")}
IPS = {**POD_IPS, "d": D_IP}
# (source pod, destination pod, TCP port): chosen so that A and B disagree on most of them.
PAIRS = [
    ("c", "b", 5000),  # sets: c is a client only in B
    ("a", "c", 7000),  # programs: c admits 7000 in A ...
    ("a", "c", 7001),  # ... and 7001 in B
    ("b", "d", 5000),  # interfaces: d is policed only in B (b is no client)
    ("a", "d", 5000),  # allowed by both
    ("a", "b", 5000),  # allowed by both
]
_GEN = re.compile(r"[gs]-[0-9a-f]+-[0-9a-f]+/?")


def _normalised(state: KernelState) -> dict[str, str | None]:
    """Units without generation names: what is loaded, not when."""
    return {_GEN.sub("", u): _GEN.sub("", v) if v else v for u, v in state.units.items()}


def _probes() -> list[Probe]:
    return [Probe(s, IPS[d], "TCP", port, next_src_port()) for s, d, port in PAIRS]


def _expected(program, probes: list[Probe]) -> dict[Probe, bool]:  # type: ignore[no-untyped-def]
    out = {}
    for p in probes:
        flow = Flow(
            ipaddress.ip_address(IPS[p.src]),
            ipaddress.ip_address(p.dst_ip),
            6,
            src_port=p.src_port,
            dst_port=p.dst_port,
        )
        out[p] = evaluate(program, flow).allowed
    return out


def _timed_apply(w: World, artifact_dir: Path, journal: Path) -> tuple[float, float]:
    """(seconds the CLI apply ran, seconds its journal existed), polling every 0.5 ms."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*CLI, "apply", str(artifact_dir), "--node", "n1"],
        cwd=ROOT,
        env=cli_env(w),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = last = None
    while proc.poll() is None:
        if journal.exists():
            last = time.monotonic()
            first = first or last
        time.sleep(0.0005)
    assert proc.returncode == 0
    assert first is not None and last is not None, "the apply never wrote its journal"
    return time.monotonic() - t0, last - first + 0.01


def _check_packets(w: World, programs: Mapping[str, object], state: str, label: str) -> None:
    probes = _probes()
    want = _expected(programs[state], probes)
    got = send_probes(w.cluster, probes, timeout=0.5)
    wrong = [f"{p.src}->{p.dst_ip}:{p.dst_port} got {got[p]}" for p in probes if got[p] != want[p]]
    assert not wrong, f"{label}: live artifact {state}, packets disagree: {wrong}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kill_9_during_ebpf_apply_leaves_old_or_new_everywhere(
    tmp_path: Path, variant: str
) -> None:
    """``programs``: full applies (new programs, sets and interfaces); ``sets``: set-only
    applies (the same programs, a new set version switched in with the bank)."""
    if not (clang.available() and bpftool.available() and tc.available()):
        pytest.skip("needs clang, bpftool and tc")
    first, second = VARIANTS[variant]
    mode = "full" if variant == "programs" else "sets"
    programs = {k: compile_yaml(YAML[k], "ebpf")[0] for k in YAML}
    dirs = {k: compile_dir(YAML[k], tmp_path / k, "ebpf") for k in (first, second)}
    arts = {k: load_dir(d, "n1") for k, d in dirs.items()}
    with world(tmp_path, programs["B"]) as w, bpffs_cleanup(w):
        dp = EbpfDataplane(w.env)
        states = {}
        for k in (first, second, first, second):  # twice: a second load must read the same
            out = apply_artifact(arts[k], w.env)
            now = _normalised(dp.read())
            assert states.setdefault(k, now) == now
            _check_packets(w, programs, k, f"clean apply of {k}")
        assert out.plan.mode == mode
        assert states[first] != states[second]
        d_units = {u for u in states[second] if " cali" in u} - set(states[first])
        assert len(d_units) == (2 if variant == "programs" else 0), d_units  # d: B only
        d_ifs = {u.split()[1] for u in d_units}
        # The evaluator really tells the two apart on these packets.
        assert _expected(programs[first], _probes()) != _expected(programs[second], _probes())

        journal = w.state_dir / "journal.json"
        timings = [_timed_apply(w, dirs[k], journal) for k in (first, second, first, second)]
        assert w.env.state.read_record().mode == mode  # type: ignore[union-attr]
        whole = max(t for t, _ in timings)  # the CLI's life
        phase = max(p for _, p in timings)  # journal present: the kernel is being changed
        rng = random.Random(20261126)
        seen: collections.Counter[str] = collections.Counter()
        for i in range(ITERATIONS):
            old, new = (first, second) if i % 2 == 0 else (second, first)
            apply_artifact(arts[old], w.env)  # known start; also clears an earlier kill's journal
            assert _normalised(dp.read()) == states[old]
            after_journal = i % 4 >= 2
            delay = rng.uniform(0, phase) if after_journal else rng.uniform(0, whole)
            cmd = [*CLI, "apply", str(dirs[new]), "--node", "n1"]
            killed_apply(cmd, cli_env(w), journal, delay, after_journal, journal_timeout=20.0)
            read = dp.read()
            now = _normalised(read)
            assert now in (states[old], states[new]), (
                f"iteration {i} ({old} -> {new}, delay {delay:.3f}s): a mixed state: "
                f"{sorted(set(now.items()) ^ set(states[old].items()))[:6]}"
            )
            state = new if now == states[new] else old
            _check_packets(w, programs, state, f"iteration {i} ({old} -> {new})")
            tags = ["new" if state == new else "old"]
            d_dispatcher = sum(
                1 for line in read.raw["attached"].splitlines() if line.split()[0] in d_ifs
            )
            if d_dispatcher and state == first:  # between attach and flip, or flip and detach
                tags.append("d-dispatcher-without-slot")
            if journal.exists():
                tags.append("journal")
                assert not read_status(w.env).in_sync
            generations = read.raw["generations"].split()
            tags.append(f"{len(generations)}dirs")
            seen["+".join(tags)] += 1
        print(
            f"\nebpf kill -9 loop ({variant}): {ITERATIONS} iterations, whole CLI apply {whole * 1000:.0f} ms "
            f"(journal present {phase * 1000:.0f} ms): "
            f"{dict(sorted(seen.items()))}"
        )
        assert sum(n for k, n in seen.items() if k.startswith("old")) > 0
        assert sum(n for k, n in seen.items() if k.startswith("new")) > 0
        # Kills in the kernel phase itself: after the journal, before the record.
        assert sum(n for k, n in seen.items() if "journal" in k) > 0
        # After all that, one more apply leaves the node in sync with at most two generations.
        apply_artifact(arts[first], w.env)
        st = read_status(w.env)
        assert st.in_sync
        assert _normalised(dp.read()) == states[first]
        _check_packets(w, programs, first, "final apply")
        pinned = dp.read().raw["generations"].split()
        assert sum(g.startswith("g-") for g in pinned) <= 2, pinned  # in force, previous bank
        assert sum(g.startswith("s-") for g in pinned) <= 2, pinned
