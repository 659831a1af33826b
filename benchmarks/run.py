"""Scale benchmark: one table of compile times, memory, incremental updates, apply times and
per-packet cost. A script, not a test.

    python -m benchmarks.run                      # 100, 1,000, 10,000 policies x 10,000 endpoints
    python -m benchmarks.run --quick              # small sizes, a minute or two
    python -m benchmarks.run --policies 1000 --skip-packets --json out.json

What it does, per size (data from ``benchmarks/gen.py``, generated once into ``--workdir``):

1. ``benchmarks/stages.py`` in a fresh process: parse, build, each pass, each target's render
   (a failing target is shown with its error), then the incremental cases; CPU time, wall time
   and peak RSS per stage;
2. ``tortie compile`` for one node through the CLI, in a subprocess (wall time, max RSS);
3. (root) apply times of the artifacts and set updates in a private ``tortie-bench-*`` netns;

and once, per ``--rules`` count (``gen.py --shape rules``): per-packet cost through nftables and
iptables (real packets across a node netns) and eBPF (BPF_PROG_TEST_RUN). Everything that needs
root, a tool or the kernel is skipped with the reason shown in the table.

Times: CPU seconds of the compiling process first (stable on a busy machine), wall seconds in
parentheses. eBPF rendering runs clang in subprocesses: its CPU column counts them too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import gen
from .report import machine, markdown

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("nftables", "iptables", "ebpf")


def _data(workdir: Path, policies: int, endpoints: int, nodes: int, seed: int) -> Path:
    out = workdir / "data" / f"p{policies}-e{endpoints}-n{nodes}-s{seed}"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        gen.write(out, gen.generate(policies, endpoints, nodes, seed))
        (out / ".done").write_text("")
    return out


def _rules_data(workdir: Path, rules: int) -> Path:
    out = workdir / "data" / f"rules-{rules}"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        gen.write(out, gen.generate_rules(rules))
        (out / ".done").write_text("")
    return out


def _stages(data: Path, node: str, out: Path, targets: str, incremental: bool) -> dict[str, Any]:
    """Run benchmarks/stages.py in a fresh interpreter; its JSON (also when it failed)."""
    out.mkdir(parents=True, exist_ok=True)
    res = out / "stages.json"
    argv = [sys.executable, "-m", "benchmarks.stages", "--dir", str(data), "--node", node]
    argv += ["--targets", targets, "--artifacts", str(out / "artifacts"), "--out", str(res)]
    argv += [] if incremental else ["--no-incremental"]
    shutil.rmtree(out / "artifacts", ignore_errors=True)
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=6 * 3600)
    result = json.loads(res.read_text()) if res.exists() else {"stages": {}}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        result["worker_error"] = tail[-1][:300]
        for name in targets.split(","):  # make the table say why a target has no numbers
            result["stages"].setdefault(f"render {name}", {"error": result["worker_error"]})
    return result


def _cli_compile(data: Path, node: str, out: Path) -> dict[str, Any]:
    """``tortie compile --target nftables`` for one node: wall time, CPU (user + system) and max
    RSS of the process."""
    argv = [sys.executable, "-m", "compiler.cli", "compile"]  # what the tortie executable runs
    argv += ["-f", str(data), "--node", node, "--target", "nftables", "-o", str(out / "cli")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    res: dict[str, Any] = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime}
    res["maxrss_mb"] = usage.ru_maxrss / 1024
    if proc.returncode != 0:
        res["error"] = (err.strip().splitlines() or ["?"])[-1][:200]
    return res


def _apply(result: dict[str, Any]) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "needs root (network namespaces)"}
    from .apply import iptables_times, nft_times, private_netns

    out: dict[str, Any] = {}
    arts = result.get("artifacts", {})
    for target, fn in (("nftables", nft_times), ("iptables", iptables_times)):
        if target not in arts:
            out[target] = {"skipped": "no artifact"}
            continue
        updates = {
            case: Path(info["targets"][target]["path"])
            for case, info in result.get("incremental", {}).items()
            if info.get("targets", {}).get(target, {}).get("path")
        }
        try:
            with private_netns() as ns:
                out[target] = fn(ns, Path(arts[target]["path"]), updates)
        except Exception as e:  # shown in the table
            out[target] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def _packets(workdir: Path, rules_counts: list[int], targets: str) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "needs root (network namespaces, bpffs)"}
    from . import packets

    out: dict[str, Any] = {}
    try:
        out["no ruleset"] = packets.real_packets(None)
    except Exception as e:
        out["no ruleset"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    for n in rules_counts:
        data = _rules_data(workdir, n)
        res = _stages(data, gen.RULES_NODE, workdir / f"rules-{n}", targets, incremental=False)
        arts = res.get("artifacts", {})
        row: dict[str, Any] = {}
        for target in targets.split(","):
            if target not in arts:
                err = res["stages"].get(f"render {target}", {}).get("error", "not rendered")
                row[target] = {"error": err}
                continue
            path = Path(arts[target]["path"])
            try:
                if target == "nftables":
                    row[target] = packets.real_packets(packets.nft_loader(path))
                elif target == "iptables":
                    row[target] = packets.real_packets(packets.iptables_loader(path))
                else:
                    row[target] = packets.ebpf_prog_run(path)
            except Exception as e:  # shown in the table
                row[target] = {"error": f"{type(e).__name__}: {e}"[:300]}
        out[f"{n} rules"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="100,1000,10000", help="comma-separated sizes")
    ap.add_argument("--endpoints", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--node", default="node-001", help="the node to compile for")
    ap.add_argument("--rules", default="10,10000", help="rules per endpoint, per-packet table")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--quick", action="store_true", help="10 and 100 policies, 1,000 endpoints")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tortie-bench"))
    ap.add_argument("--skip-apply", action="store_true")
    ap.add_argument("--skip-packets", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--json", type=Path, help="also write every number as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.policies, args.endpoints, args.nodes, args.rules = "10,100", 1000, 10, "10,1000"
    sizes = [int(x) for x in args.policies.split(",") if x]
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["python3 -m benchmarks.run", *sys.argv[1:]]),
        "endpoints": args.endpoints,
        "nodes": args.nodes,
        "node": args.node,
        "sizes": {},
    }
    for p in sizes:
        print(f"[{p} policies] generating / compiling ...", file=sys.stderr, flush=True)
        data = _data(args.workdir, p, args.endpoints, args.nodes, args.seed)
        out = args.workdir / f"run-p{p}"
        out.mkdir(parents=True, exist_ok=True)
        res = _stages(data, args.node, out, args.targets, incremental=True)
        res["input_bytes"] = sum(f.stat().st_size for f in data.glob("*.yaml"))
        if not args.skip_cli:
            res["cli"] = _cli_compile(data, args.node, out)
        if not args.skip_apply:
            res["apply"] = _apply(res)
        report["sizes"][str(p)] = res
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    if not args.skip_packets:
        print("[per-packet] ...", file=sys.stderr, flush=True)
        counts = [int(x) for x in args.rules.split(",") if x]
        report["packets"] = _packets(args.workdir, counts, args.targets)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    print(markdown(report))


if __name__ == "__main__":
    main()
