"""One compile, stage by stage, measured (run by ``benchmarks/run.py`` in a fresh process).

    python -m benchmarks.stages --dir /tmp/c --node node-001 --out /tmp/res.json --artifacts /tmp/a

Per stage: CPU time, wall time and the peak resident set size *during* the stage (the kernel's
high-water mark, reset before each stage through ``/proc/self/clear_refs``), so the largest
value of the table is the peak of the whole compile. The GC settings are the CLI's
(``compiler.perf.batch_mode`` once the inputs are loaded, and each pass under
``perf.paused_gc`` as ``compiler.pipeline.run_passes`` runs it), so times are what
``tortie compile`` sees. A target that fails is recorded with its error and the others go on.

Then the incremental cases, from the compiled program: a label change on a remote pod, a label
change on a local pod and a pod added on a remote node. Each is an edit of the loaded resources
followed by ``build`` + passes (timed) and the targets' ``render_set_update(old, new)`` (timed,
with the size of what it emits). Artifacts and update scripts are written below ``--artifacts``
for the apply measurements.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import resource
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler import perf
from compiler.artifact import write_artifact
from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load
from compiler.frontend.model import Endpoint, ResourceSet
from compiler.frontend.schema.k8s_core import interface_name, wep_name
from compiler.ir.build import build
from compiler.ir.nodes import Program
from compiler.ir.passes import DEFAULT_PASSES
from compiler.pipeline import PassContext, run_passes
from compiler.targets import get_target

TARGETS = ("nftables", "iptables", "ebpf")
UPDATE_MODULES = {
    "nftables": "compiler.targets.nftables.incremental",
    "iptables": "compiler.targets.iptables.update",
}


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        m = re.search(r"VmHWM:\s+(\d+)", f.read())
    return int(m.group(1)) if m else 0


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then every stage reports the peak so far


class Recorder:
    """Runs stages and keeps ``{name: {cpu, wall, child_cpu, peak_mb, error?}}``."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        _reset_hwm()
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0, w0 = time.process_time(), time.perf_counter()
        rec: dict[str, Any] = {}
        result = None
        try:
            result = fn()
        except Exception as e:  # recorded in the table, the run goes on
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            rec["traceback"] = traceback.format_exc()[-2000:]
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rec.update(
            cpu=time.process_time() - c0,
            wall=time.perf_counter() - w0,
            child_cpu=(child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime),
            peak_mb=_hwm_kib() / 1024,
        )
        self.stages[name] = rec
        return result


def passes(program: Program, rec: Recorder, prefix: str = "pass ") -> Program:
    ctx = PassContext(DiagnosticSink())
    for p in DEFAULT_PASSES:
        name = p.__module__.rsplit(".", 1)[-1]
        out = rec.run(prefix + name, lambda p=p, prog=program: _one_pass(p, prog, ctx))
        if out is None:
            raise RuntimeError(f"pass {name} failed: {rec.stages[prefix + name].get('error')}")
        program = out
    return program


def _one_pass(p: Callable[[Program, PassContext], Program], program: Program, ctx: PassContext):  # noqa: ANN202
    with perf.paused_gc():  # as compiler.pipeline.run_passes runs each pass
        return p(program, ctx)


def _quiet_passes(program: Program) -> Program:
    return run_passes(program, PassContext(DiagnosticSink()))


# -- incremental edits ---------------------------------------------------------------------------


def _with_endpoints(rs: ResourceSet, endpoints: list[Endpoint]) -> ResourceSet:
    ordered = tuple(sorted(endpoints, key=lambda e: (e.kind, e.id, e.name)))
    return dataclasses.replace(rs, endpoints=ordered)


def _relabel(ep: Endpoint, values: list[str]) -> Endpoint:
    """The pod with another ``app`` value (one that other pods have), so that selector sets
    change: the change a rollout of a new app label makes."""
    labels = dict(ep.labels)
    labels["app"] = next((v for v in values if v != labels.get("app")), "relabelled")
    return dataclasses.replace(ep, labels=tuple(sorted(labels.items())))


def label_change(rs: ResourceSet, node: str, local: bool) -> tuple[ResourceSet, str]:
    eps = list(rs.endpoints)
    i = next(i for i, e in enumerate(eps) if not e.is_host and (e.node == node) == local and e.pod)
    values = sorted({v for e in eps for k, v in e.labels if k == "app"})
    eps[i] = _relabel(eps[i], values)
    return _with_endpoints(rs, eps), eps[i].id


def pod_added(rs: ResourceSet, node: str) -> tuple[ResourceSet, str]:
    """A copy of a remote pod under a new name and unused addresses, on the same remote node."""
    base = next(e for e in rs.endpoints if not e.is_host and e.node != node and e.pod)
    used = {ip for e in rs.endpoints for ip in e.ips}
    v4 = next(ipaddress.ip_address(f"10.127.255.{i}") for i in range(1, 255))
    v6 = next(ipaddress.ip_address(f"fd00:64::ffff:{i:x}") for i in range(1, 255))
    assert v4 not in used and v6 not in used
    pod = f"{base.pod}-new"
    ep = dataclasses.replace(
        base,
        name=wep_name(base.node, pod),
        pod=pod,
        interface=interface_name(base.namespace or "", pod),
        ips=(v4, v6),
    )
    return _with_endpoints(rs, [*rs.endpoints, ep]), ep.id


def incremental(
    rec: Recorder,
    rs: ResourceSet,
    old: Program,
    node: str,
    targets: tuple[str, ...],
    out: Path,
) -> dict[str, Any]:
    import importlib

    cases = {
        "label change (remote pod)": lambda: label_change(rs, node, local=False),
        "label change (local pod)": lambda: label_change(rs, node, local=True),
        "pod added (remote node)": lambda: pod_added(rs, node),
    }
    report: dict[str, Any] = {}
    for case, edit in cases.items():
        try:
            new_rs, what = edit()
        except StopIteration:
            report[case] = {"error": "no such endpoint in this input"}
            continue
        new = rec.run(f"{case}: build + passes", lambda r=new_rs: _quiet_passes(build(r, node)))
        entry: dict[str, Any] = {"endpoint": what, "targets": {}}
        for t in targets:
            if t not in UPDATE_MODULES:
                entry["targets"][t] = {"error": "no render_set_update in this target"}
                continue
            mod = importlib.import_module(UPDATE_MODULES[t])
            upd = rec.run(
                f"{case}: set update {t}", lambda m=mod, n=new: m.render_set_update(old, n)
            )
            err = rec.stages[f"{case}: set update {t}"].get("error")
            info: dict[str, Any] = {"error": err} if err else {}
            if upd is None and not err:
                info["full"] = True  # not set-only: the runtime applies the full artifact
            elif upd is not None:
                info.update(bytes=len(upd.encode()), lines=upd.count("\n"))
                slug = re.sub(r"[^a-z]+", "-", case).strip("-")
                path = out / "updates" / f"{slug}.{t}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(upd)
                info["path"] = str(path)
            entry["targets"][t] = info
        report[case] = entry
    return report


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-incremental", action="store_true")
    args = ap.parse_args()
    targets = tuple(t for t in args.targets.split(",") if t)
    rec = Recorder()
    result: dict[str, Any] = {"node": args.node, "stages": rec.stages, "artifacts": {}}

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True, default=str))

    sink, sources = DiagnosticSink(), SourceRegistry()
    with perf.paused_gc():  # as compiler/cli/common.py does
        rs = rec.run("parse (load)", lambda: load([args.dir], sink, sources))
    result["errors"] = [str(d) for d in sink.errors][:5]
    if rs is None or sink.has_errors:
        save()
        raise SystemExit(1)
    result["inputs"] = {
        "policies": len(rs.policies),
        "endpoints": len(rs.endpoints),
        "local_endpoints": sum(1 for e in rs.endpoints if e.node == args.node),
    }
    perf.batch_mode()  # what compiler/cli/common.py does once the inputs are loaded
    program = rec.run("build", lambda: build(rs, args.node, local_only=True))
    save()
    program = passes(program, rec)
    save()
    for t in targets:
        target = get_target(t)
        art = rec.run(f"render {t}", lambda target=target: target.render(program))
        if art is not None:
            path = write_artifact(art, str(args.artifacts / t))
            result["artifacts"][t] = {
                "path": str(path),
                "files": len(art.files),
                "bytes": sum(len(b) for b in art.files.values()),
            }
        save()
    if not args.no_incremental:
        result["incremental"] = incremental(rec, rs, program, args.node, targets, args.artifacts)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    save()
    os._exit(0)  # skip tearing down millions of objects


if __name__ == "__main__":
    main()
