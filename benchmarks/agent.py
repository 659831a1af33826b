"""``tortie agent`` reconcile times, by stage, for single changes at scale.

    python -m benchmarks.agent [--data /tmp/tortie-bench/data] [--policies 1000 10000] [--runs 3]

For each size it copies ``p<N>-e10000-n100-s1`` (``benchmarks/gen.py``: 10,000 pods on 100
nodes, all pods in one ``kind: List`` file) to a scratch directory, starts an
:class:`runtime.agent.Agent` for ``node-001`` on it, lets it do its first (full) reconcile, then
edits the files as a GitOps checkout would (new file contents, renamed into place) and times
the agent's next tick:

* **remote pod label change** — the ``app`` label of a pod on another node;
* **local pod label change** — the ``app`` label of a pod on ``node-001``;
* **pod added** — a new pod (on another node) appended to the pod list;
* **local pod added** — a new pod on ``node-001`` appended (its chains, the dispatch maps);

then ticks with no change (the scan and the drift check: with nftables the nf_tables
generation id, nothing listed unless it changed), the idle tick that writes the full record
after set-only fast updates (``runtime/nftables_fast.py``: render the artifact, read the whole
table back, compare, write applied.json + applied/; measured separately, the agent runs it once
``record_delay`` idle seconds after a burst of changes), and ``tortie status`` with set updates
in force.

Each row is the agent's own stage timings (``ReconcileResult.timings``: load, compile,
render, diff = the target's ``render_set_update`` or chain update, apply = until the kernel
acknowledged the change, verify = the fast paths' netlink read-back and bookkeeping after that,
in force = total minus verify, total; wall seconds), the wall time
of the whole ``tick()`` (scan included), and its CPU time: ``cpu`` this process, ``cpu+nft``
with the ``nft`` child processes it waited for; median of ``--runs`` changes (each run changes
the value again). When
running as root with ``nft`` available, the agent applies into a private ``tortie-bench-*``
network namespace (never the root namespace; deleted afterwards, also on failure); otherwise it
runs with a no-op dataplane and the apply column says so.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from benchmarks.apply import private_netns
from runtime.agent import Agent, AgentConfig, ReconcileResult
from runtime.plan import Env
from runtime.state import StateDir

NODE = "node-001"
STAGES = ("load", "compile", "render", "diff", "apply", "verify", "in force", "total", "tick")
SCENARIOS = ("remote pod label change", "local pod label change", "pod added", "local pod added")
APPS = ("web", "api", "db", "cache", "queue")


def _items(text: str) -> list[tuple[int, int]]:
    """(start, end) character ranges of the top-level ``- `` items of a dumped v1 List."""
    starts = [m.start() for m in re.finditer(r"^- ", text, re.MULTILINE)]
    end = text.find("\nkind: List")
    return list(zip(starts, [*starts[1:], end + 1], strict=True))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _relabel(pods: Path, local: bool, run: int) -> None:
    """Change the ``app`` label of the first pod on (or not on) NODE; same number of lines."""
    text = pods.read_text()
    for start, end in _items(text):
        item = text[start:end]
        on_node = f"    nodeName: {NODE}\n" in item
        if on_node != local:
            continue
        m = re.search(r"^      app: (\S+)$", item, re.MULTILINE)
        if m is None:
            continue
        new = APPS[(APPS.index(m[1]) + 1 + run) % len(APPS)] if m[1] in APPS else APPS[run]
        if new == m[1]:
            new = APPS[(APPS.index(new) + 1) % len(APPS)]
        item = item[: m.start(1)] + new + item[m.end(1) :]
        _write(pods, text[:start] + item + text[end:])
        return
    raise SystemExit(f"no {'local' if local else 'remote'} pod with an app label in {pods}")


def _add_pod(pods: Path, run: int, node: str = "node-002") -> None:
    text = pods.read_text()
    end = text.find("\nkind: List") + 1
    if node == NODE:  # other addresses than the remote pods'
        run += 500
    ip4, ip6 = f"10.250.{run // 200}.{run % 200 + 1}", f"fd00:250::{run + 1:x}"
    item = (
        "- apiVersion: v1\n  kind: Pod\n  metadata:\n    labels:\n      app: web\n"
        f"      team: red\n    name: bench-added-{run}\n    namespace: ns-0000\n"
        f"  spec:\n    nodeName: {node}\n    serviceAccountName: default\n"
        f"  status:\n    podIP: {ip4}\n    podIPs:\n    - ip: {ip4}\n    - ip: {ip6}\n"
    )
    _write(pods, text[:end] + item + text[end:])


class _NoDataplane:
    """Stands in for the kernel when not root: plans nothing, applies nothing."""

    @contextmanager
    def installed(self) -> Iterator[None]:
        import runtime.apply as apply_mod
        from runtime.plan import KernelState, Plan

        class Fake:
            TARGET = "nftables"

            def __init__(self, env: Env) -> None:
                pass

            def read(self) -> KernelState:
                return KernelState({}, {}, {})

            def plan(self, current, artifact, record, previous, set_update=None):  # noqa: ANN001, ANN201
                return Plan("nftables", artifact.hash, "none", "no kernel", (), current)

        old = apply_mod.dataplane_for
        apply_mod.dataplane_for = lambda target, env: Fake(env)  # type: ignore[assignment]
        import runtime.agent as agent_mod

        old_agent = agent_mod.dataplane_for
        agent_mod.dataplane_for = apply_mod.dataplane_for  # type: ignore[assignment]
        try:
            yield
        finally:
            apply_mod.dataplane_for = old
            agent_mod.dataplane_for = old_agent  # type: ignore[assignment]


def _kernel_ok() -> bool:
    return os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _tick(agent: Agent) -> tuple[ReconcileResult, float]:
    c0, k0, w0 = time.process_time(), _children_cpu(), time.monotonic()
    res = agent.tick()
    cpu = time.process_time() - c0
    if res is None:
        raise SystemExit("the agent saw no change")
    if res.result == "error":
        raise SystemExit(f"reconcile failed: {res.error}")
    res.timings["tick"] = time.monotonic() - w0
    # The change is in force when the kernel acknowledged it; the fast paths' read-back and
    # bookkeeping (``verify``) come after.
    res.timings["in force"] = res.timings["total"] - res.timings.get("verify", 0.0)
    res.timings["cpu+nft"] = cpu + _children_cpu() - k0
    return res, cpu


def _measure(fn: object) -> dict[str, float]:
    c0, k0, w0 = time.process_time(), _children_cpu(), time.monotonic()
    fn()  # type: ignore[operator]
    cpu = time.process_time() - c0
    return {
        "tick": time.monotonic() - w0,
        "cpu": cpu,
        "cpu+nft": cpu + _children_cpu() - k0,
    }


def run_size(
    data: Path,
    runs: int,
    kernel: bool,
    profile: Path | None = None,
    scenarios: tuple[str, ...] = SCENARIOS,
    extras: bool = True,
) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="tortie-bench-agent-") as tmp:
        watch = Path(tmp) / "watch"
        shutil.copytree(data, watch)
        pods = watch / "pods.yaml"
        ns_ctx = private_netns() if kernel else nullcontext(None)
        fake = nullcontext() if kernel else _NoDataplane().installed()
        with ns_ctx as ns, fake:
            env = Env(StateDir(Path(tmp) / "state"), netns=ns, lock_timeout=600)
            # The record is written on demand below, not by the ticks being timed.
            agent = Agent(AgentConfig(NODE, watch, env, "nftables", 1.0, record_delay=1e9))
            res, cpu = _tick(agent)
            out["first reconcile (full)"] = _row([(res, cpu)])
            for scenario in scenarios:
                results = []
                for run in range(runs):
                    if scenario == "pod added":
                        _add_pod(pods, run)
                    elif scenario == "local pod added":
                        _add_pod(pods, run, NODE)
                    else:
                        _relabel(pods, scenario.startswith("local"), run)
                    time.sleep(0.01)  # a new mtime even on coarse clocks
                    if profile is not None and scenario == SCENARIOS[0]:
                        import cProfile

                        prof = cProfile.Profile()
                        prof.enable()
                        results.append(_tick(agent))
                        prof.disable()
                        prof.dump_stats(f"{profile}.{data.name}.{run}")
                    else:
                        results.append(_tick(agent))
                out[scenario] = _row(results)
            # Ticks with no change: the scan and the drift check.
            idles = []
            seen: list[object] = []
            for _ in range(runs):
                idles.append(_measure(lambda: seen.append(agent.tick())))
            if any(r is not None for r in seen):
                raise SystemExit(f"an idle tick reconciled: {seen}")
            out[IDLE] = _median_row(idles, "no reconcile")
            if not extras:
                return out
            # The status command with the set updates in force (lists the whole table).
            from runtime.status import read_status

            status: list[object] = []
            out[STATUS] = _median_row([_measure(lambda: status.append(read_status(env)))], "-")
            if kernel and not status[0].in_sync:  # type: ignore[attr-defined]
                raise SystemExit("status reports drift after the fast updates")
            # The deferred full record (what an idle tick does once after a burst of changes).
            pending = agent._pending  # noqa: SLF001 - the benchmark drives it by hand
            out[RECORD] = _median_row(
                [_measure(agent._write_record)],  # noqa: SLF001
                "record written" if pending else "nothing pending",
            )
    return out


IDLE = "idle tick (scan + drift check)"
STATUS = "tortie status (set updates in force)"
RECORD = "deferred record write (idle, after updates)"


def _median_row(rows: list[dict[str, float]], mode: str) -> dict[str, object]:
    out: dict[str, object] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out.update(path=["-"], mode=[mode], why="")
    return out


def compile_only(data: Path, runs: int) -> dict[str, dict[str, object]]:
    """CPU seconds of the agent's load and compile stages alone (IncrementalCompiler), per
    change: what this path costs without the target's render and the kernel."""
    from compiler.incremental.driver import IncrementalCompiler

    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="tortie-bench-agent-") as tmp:
        watch = Path(tmp) / "watch"
        shutil.copytree(data, watch)
        pods = watch / "pods.yaml"
        inc = IncrementalCompiler(str(watch), NODE)
        c0 = time.process_time()
        first = inc.compile()
        inc.commit()
        out["first reconcile (full)"] = {"cpu": time.process_time() - c0, "why": first.reason}
        for scenario in SCENARIOS:
            cpus, loads, compiles, why = [], [], [], ""
            for run in range(runs):
                if scenario == "pod added":
                    _add_pod(pods, 100 + run)
                elif scenario == "local pod added":
                    _add_pod(pods, 100 + run, NODE)
                else:
                    _relabel(pods, scenario.startswith("local"), run)
                c0 = time.process_time()
                got = inc.compile()
                cpus.append(time.process_time() - c0)
                inc.commit()
                loads.append(got.timings["load"])
                compiles.append(got.timings["compile"])
                why = f"{got.path}: {got.reason}"
            out[scenario] = {
                "cpu": statistics.median(cpus),
                "load": statistics.median(loads),
                "compile": statistics.median(compiles),
                "why": why,
            }
    return out


def _row(results: list[tuple[ReconcileResult, float]]) -> dict[str, object]:
    row: dict[str, object] = {}
    for stage in STAGES:
        values = [r.timings[stage] for r, _ in results if stage in r.timings]
        row[stage] = statistics.median(values) if values else None
    row["cpu"] = statistics.median(c for _, c in results)
    row["cpu+nft"] = statistics.median(r.timings["cpu+nft"] for r, _ in results)
    last = results[-1][0]
    row["path"] = sorted({r.path for r, _ in results})
    row["mode"] = sorted({r.mode for r, _ in results})
    row["why"] = last.path_reason
    return row


def _ms(v: object) -> str:
    return "-" if v is None else f"{float(v) * 1000:,.0f} ms"  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/tortie-bench/data"))
    ap.add_argument("--policies", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--compile-only",
        action="store_true",
        help="time only the load and compile stages (no render, no kernel)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        help="cProfile each remote label change tick into PROFILE.<data>.<run> (pstats files;"
        " the profiled ticks run slower)",
    )
    ap.add_argument(
        "--only-remote",
        action="store_true",
        help="time only the first reconcile, the remote label change and what follows it",
    )
    ap.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the status and deferred record rows (each lists the whole table: ~40 s)",
    )
    args = ap.parse_args(argv)
    if args.compile_only:
        return _compile_only_table(args)
    kernel = _kernel_ok()
    results: dict[int, dict[str, dict[str, object]]] = {}
    for n in args.policies:
        data = args.data / f"p{n}-e10000-n100-s1"
        if not data.is_dir():
            print(
                f"missing {data}: python -m benchmarks.gen --policies {n} --endpoints 10000 "
                f"--nodes 100 --seed 1 -o {data}",
                file=sys.stderr,
            )
            return 2
        print(f"# {n} policies: running ...", file=sys.stderr, flush=True)
        results[n] = run_size(
            data,
            args.runs,
            kernel,
            args.profile,
            SCENARIOS[:1] if args.only_remote else SCENARIOS,
            extras=not args.no_extras,
        )
    apply_note = (
        "nft apply into a private network namespace"
        if kernel
        else "no kernel apply (not root or no nft): apply is a no-op plan"
    )
    print(f"agent reconcile, node {NODE}, 10,000 pods on 100 nodes; {apply_note}")
    print(
        f"wall time per stage, median of {args.runs}; tick = wall time of the whole tick; "
        "cpu = CPU time of the tick (cpu+nft: with the nft child processes)\n"
    )
    sizes = list(results)
    print("| change | stage | " + " | ".join(f"{n:,} policies" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for scenario in ("first reconcile (full)", *SCENARIOS, IDLE, STATUS, RECORD):
        if any(scenario not in results[n] for n in sizes):
            continue
        for stage in (*STAGES, "cpu", "cpu+nft"):
            if all(stage not in results[n][scenario] for n in sizes):
                continue
            cells = [_ms(results[n][scenario].get(stage)) for n in sizes]
            print(f"| {scenario} | {stage} | " + " | ".join(cells) + " |")
        paths = [
            f"{'/'.join(results[n][scenario]['path'])}, {'/'.join(results[n][scenario]['mode'])}"
            for n in sizes
        ]
        print(f"| {scenario} | path, apply mode | " + " | ".join(paths) + " |")
    print()
    for n in sizes:
        for scenario in SCENARIOS:
            if scenario in results[n]:
                print(f"- {n:,} policies, {scenario}: {results[n][scenario]['why']}")
    return 0


def _compile_only_table(args: argparse.Namespace) -> int:
    results = {}
    for n in args.policies:
        print(f"# {n} policies: running ...", file=sys.stderr, flush=True)
        results[n] = compile_only(args.data / f"p{n}-e10000-n100-s1", args.runs)
    sizes = list(results)
    print(f"agent load + compile only (IncrementalCompiler), node {NODE}, median of {args.runs}")
    print("| change | " + " | ".join(f"{n:,} policies: CPU (load / compile wall)" for n in sizes))
    print("|---|" + "---|" * len(sizes))
    for scenario in ("first reconcile (full)", *SCENARIOS):
        cells = []
        for n in sizes:
            r = results[n][scenario]
            extra = f" ({_ms(r['load'])} / {_ms(r['compile'])})" if "load" in r else ""
            cells.append(_ms(r["cpu"]) + extra)
        print(f"| {scenario} | " + " | ".join(cells) + " |")
    print()
    for n in sizes:
        for scenario in SCENARIOS:
            print(f"- {n:,} policies, {scenario}: {results[n][scenario]['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
