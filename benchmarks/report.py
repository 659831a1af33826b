"""The machine description and the Markdown tables of ``benchmarks/run.py``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any

PASSES = (
    "resolve_sets",
    "split_families",
    "aggregate_cidrs",
    "dedupe_sets",
    "fold_empty",
    "shadowed_rules",
)
TARGETS = ("nftables", "iptables", "ebpf")


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"MemTotal:\s+(\d+)", f.read())
            mem = f"{int(m.group(1)) // 1024} MiB" if m else "?"
    except OSError:
        mem = "?"
    try:
        yaml_c = subprocess.run(
            ["python3", "-c", "import yaml; print(yaml.__version__, yaml.__with_libyaml__)"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        yaml_c = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyyaml (version, libyaml)": yaml_c,
        "load average at start": load,
    }


def _t(rec: dict[str, Any] | None, child: bool = False) -> str:
    """``cpu (wall) s · peak MB`` of one stage record, or its error."""
    if not rec:
        return "–"
    if rec.get("error"):
        return f"**failed**: {rec['error']}"
    cpu = rec["cpu"] + (rec.get("child_cpu", 0.0) if child else 0.0)
    out = f"{cpu:.2f} ({rec['wall']:.2f}) s"
    if "peak_mb" in rec:
        out += f" · {rec['peak_mb']:.0f} MB"
    return out


def _sum(recs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    recs = [r for r in recs if r]
    if not recs:
        return None
    return {
        "cpu": sum(r["cpu"] + r.get("child_cpu", 0.0) for r in recs),
        "wall": sum(r["wall"] for r in recs),
        "peak_mb": max(r.get("peak_mb", 0.0) for r in recs),
    }


def _s(seconds: object) -> str:
    return f"{seconds * 1000:.0f} ms" if isinstance(seconds, float) else "–"


def _compile_rows(sizes: dict[str, Any], targets: tuple[str, ...]) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(label: str, fn: Any) -> None:
        rows.append([label, *(fn(res) for res in sizes.values())])

    st = lambda res, name: res.get("stages", {}).get(name)  # noqa: E731
    row(
        "input (YAML)",
        lambda r: (
            f"{r.get('input_bytes', 0) / 1e6:.1f} MB, {r.get('inputs', {}).get('local_endpoints', '?')} local endpoints"
        ),
    )
    row("parse (`load`)", lambda r: _t(st(r, "parse (load)")))
    row("resolve / build (`ir.build`)", lambda r: _t(st(r, "build")))
    row("optimise (all passes)", lambda r: _t(_sum([st(r, f"pass {p}") for p in PASSES])))
    for p in PASSES:
        row(f"  · {p}", lambda r, p=p: _t(st(r, f"pass {p}")))
    for t in targets:
        row(f"render {t}", lambda r, t=t: _t(st(r, f"render {t}"), child=True))
    front = ["parse (load)", "build", *(f"pass {p}" for p in PASSES)]
    row(
        "**total** (parse + build + passes + every render)",
        lambda r: _t(_sum([st(r, n) for n in [*front, *(f"render {t}" for t in targets)]])),
    )
    row(
        "compile for one node, nftables (in-process stages)",
        lambda r: _t(_sum([st(r, n) for n in [*front, "render nftables"]])),
    )

    def cli(r: dict[str, Any]) -> str:
        c = r.get("cli")
        if not c:
            return "–"
        if c.get("error"):
            return f"**failed**: {c['error']}"
        return f"{c['cpu']:.2f} ({c['wall']:.2f}) s · {c['maxrss_mb']:.0f} MB"

    row("`tortie compile --target nftables` (CLI process)", cli)
    return rows


def _incremental_rows(sizes: dict[str, Any], targets: tuple[str, ...]) -> list[list[str]]:
    rows: list[list[str]] = []
    cases = sorted({c for r in sizes.values() for c in r.get("incremental", {})})
    for case in cases:
        rows.append(
            [
                f"{case}: build + passes",
                *(_t(r.get("stages", {}).get(f"{case}: build + passes")) for r in sizes.values()),
            ]
        )
        for t in targets:

            def cell(r: dict[str, Any], t: str = t, case: str = case) -> str:
                info = r.get("incremental", {}).get(case, {}).get("targets", {}).get(t)
                rec = r.get("stages", {}).get(f"{case}: set update {t}")
                if info is None:
                    return "–"
                if "bytes" in info:
                    return f"{_t(rec)}; emits {info['bytes']:,} B ({info['lines']:,} lines)"
                if info.get("full"):
                    return f"{_t(rec)}; not set-only: full reload"
                return f"n/a ({info.get('error')})"

            rows.append([f"{case}: `render_set_update` {t}", *(cell(r) for r in sizes.values())])
    return rows


def _apply_rows(sizes: dict[str, Any]) -> list[list[str]]:
    keys: list[tuple[str, str]] = []
    for r in sizes.values():
        for target, info in r.get("apply", {}).items():
            for k in info if isinstance(info, dict) else ():
                if (target, k) not in keys and k not in ("backend",):
                    keys.append((target, k))
    rows = []
    for target, k in keys:

        def cell(r: dict[str, Any], target: str = target, k: str = k) -> str:
            info = r.get("apply", {}).get(target, {})
            if "skipped" in info or "error" in info:
                return info.get("skipped") or f"**failed**: {info['error']}"
            return _s(info.get(k))

        rows.append([f"apply {target}: {k}", *(cell(r) for r in sizes.values())])
    return rows


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _packet_table(packets: dict[str, Any]) -> str:
    if "skipped" in packets:
        return f"Per-packet cost: skipped ({packets['skipped']})."
    counts = [k for k in packets if k.endswith("rules")]
    head = ["target", *counts, f"ratio {counts[-1]} / {counts[0]}" if len(counts) > 1 else ""]
    rows = []
    base = packets.get("no ruleset", {})
    for t in TARGETS:
        cells, values = [], []
        for c in counts:
            v = packets[c].get(t, {})
            if "error" in v:
                cells.append(f"**failed**: {v['error']}")
                values.append(None)
            elif "us_per_packet_median" in v:
                cells.append(
                    f"{v['us_per_packet_median']:.1f} µs/packet (best {v['us_per_packet_best']:.1f})"
                )
                values.append(v["us_per_packet_median"])
            elif "ns_per_run_median" in v:
                cells.append(f"{v['ns_per_run_median']} ns/run (best {v['ns_per_run_best']})")
                values.append(float(v["ns_per_run_median"]))
            else:
                cells.append("–")
                values.append(None)
        ratio = (
            f"{values[-1] / values[0]:.1f}×"
            if len(values) > 1 and values[0] and values[-1] is not None
            else "–"
        )
        rows.append([t, *cells, ratio])
    text = _table(head, rows)
    if "us_per_packet_median" in base:
        text += (
            f"\n\nBaseline, no ruleset loaded: {base['us_per_packet_median']:.1f} µs/packet "
            "(the cost of the sender, veths and routing; subtract it for the rules' share)."
        )
    return text


def markdown(report: dict[str, Any]) -> str:
    sizes = {k: v for k, v in report["sizes"].items()}
    targets = TARGETS
    head = ["", *(f"{int(p):,} policies" for p in sizes)]
    parts = [
        f"Machine: {', '.join(f'{k} {v}' for k, v in report['machine'].items())}",
        f"Command: `{report['command']}`; {report['endpoints']:,} endpoints on "
        f"{report['nodes']} nodes, compiled for {report['node']}.",
        "Cells: CPU s of the compiling process (wall s) · peak RSS during the stage.",
        "",
        "### Compile",
        "",
        _table(head, _compile_rows(sizes, targets)),
        "",
        "### Incremental (edit of the loaded resources, then rebuild and set diff)",
        "",
        _table(head, _incremental_rows(sizes, targets)),
        "",
        "### Apply (private network namespace; includes `ip netns exec`, see exec_overhead)",
        "",
        _table(head, _apply_rows(sizes)),
    ]
    if "packets" in report:
        parts += ["", "### Per-packet cost", "", _packet_table(report["packets"])]
    return "\n".join(parts) + "\n"
