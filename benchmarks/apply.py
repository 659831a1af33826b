"""Apply times of rendered artifacts in a private network namespace.

    with private_netns() as ns:
        nft_times(ns, Path("art/nftables"), {"label change": Path("updates/x.nftables")})

Every command runs as ``ip netns exec tortie-bench-XXXX …`` in a namespace created here and
deleted afterwards (also on failure); the root namespace is never touched. Times are wall
times of the whole command, including ``ip netns exec`` itself; ``exec_overhead`` measures
that part (``ip netns exec NS true``) so it can be subtracted when reading the numbers.
"""

from __future__ import annotations

import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from compiler.targets.iptables.render import IPSET_FILE, RULES_FILE
from compiler.tools import iptables as iptables_tool
from runtime import nftables_netlink

PREFIX = "tortie-bench-"
TIMEOUT = 600.0


@contextmanager
def private_netns() -> Iterator[str]:
    """A fresh, empty network namespace ``tortie-bench-<random>``; deleted on exit."""
    name = PREFIX + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def timed(ns: str, argv: list[str], stdin: str | None = None) -> float:
    """Wall seconds of ``argv`` run in ``ns``; raises with stderr on failure."""
    return timed_cpu(ns, argv, stdin)[0]


def timed_cpu(ns: str, argv: list[str], stdin: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the command and its children) of ``argv``
    run in ``ns``. CPU time is what to compare on a busy machine; raises on failure."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[:300]}"
        )
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return elapsed, cpu


def exec_overhead(ns: str, runs: int = 5) -> float:
    return min(timed(ns, ["true"]) for _ in range(runs))


def nft_times(ns: str, artifact: Path, updates: Mapping[str, Path]) -> dict[str, object]:
    """Full load into an empty namespace, a re-load over it (the table is replaced in one
    transaction), then each set-only update, applied on top of a fresh full load. The full
    loads also record the CPU time of ``nft`` (``…, CPU``): wall times on a shared machine
    mostly measure the other jobs."""
    script = str(artifact / "nftables.nft")
    out: dict[str, object] = {"exec_overhead": exec_overhead(ns)}
    for label in ("full (empty kernel)", "full (replace)"):
        wall, cpu = timed_cpu(ns, ["nft", "-f", script])
        out[label] = wall
        out[f"{label}, CPU"] = cpu
    # The same transaction as one precompiled netlink batch (compile --nft-batch; encoded here
    # if the artifact has none), sent by a fresh Python process as tortie apply would.
    out.update(batch_times(ns, artifact))
    for name, path in updates.items():
        timed(ns, ["nft", "-f", script])
        wall, cpu = timed_cpu(ns, ["nft", "-f", str(path)])
        out[f"update: {name}"] = wall
        out[f"update: {name}, CPU"] = cpu
        # What the runtime does for a set-only update: one netlink batch from this process
        # (runtime/nftables_netlink.py), no nft and its cache of every interval set.
        timed(ns, ["nft", "-f", script])
        c0, t0 = time.process_time(), time.perf_counter()
        nftables_netlink.apply(path.read_text(), netns=ns)
        out[f"update: {name} (netlink batch)"] = time.perf_counter() - t0
        out[f"update: {name} (netlink batch), CPU"] = time.process_time() - c0
    timed(ns, ["nft", "delete", "table", "inet", "tortie"])
    return out


def batch_times(ns: str, artifact: Path) -> dict[str, float]:
    """Wall and CPU of ``python -m benchmarks.send_batch`` into an empty table and replacing
    it (the process's start included), and the CPU time of encoding the batch."""
    from compiler.targets.nftables import batch

    out: dict[str, float] = {}
    script = (artifact / "nftables.nft").read_text()
    c0 = time.process_time()
    data = batch.with_header(script, batch.encode(script))
    out["batch encode (compile --nft-batch), CPU"] = time.process_time() - c0
    with tempfile.TemporaryDirectory(prefix="tortie-bench-batch-") as tmp:
        d = Path(tmp)
        (d / "nftables.nft").write_text(script)
        (d / "nftables.batch").write_bytes(data)
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "tortie"],
            capture_output=True,
            check=False,
        )
        argv = [sys.executable, "-m", "benchmarks.send_batch", str(d)]
        for label in ("full via netlink batch (empty kernel)", "full via netlink batch (replace)"):
            wall, cpu = timed_cpu(ns, argv)
            out[label] = wall
            out[f"{label}, CPU"] = cpu
    return out


def iptables_times(
    ns: str, artifact: Path, updates: Mapping[str, Path], backend: str = "nft"
) -> dict[str, object]:
    """``ipset restore``, then ``iptables-restore --noflush`` and ``ip6tables-restore`` (the
    runtime's order); then each ipset-only update over a fresh full load."""
    out: dict[str, object] = {"exec_overhead": exec_overhead(ns), "backend": backend}

    def full() -> dict[str, float]:
        t = {"ipset restore": timed(ns, ["ipset", "restore", "-f", str(artifact / IPSET_FILE)])}
        for family in (4, 6):
            argv = [iptables_tool.binary(family, backend, "restore"), "--noflush"]
            text = (artifact / RULES_FILE[family]).read_text()
            t[f"ip{'6' if family == 6 else ''}tables-restore"] = timed(ns, argv, text)
        return t

    first = full()
    out.update({f"{k} (empty kernel)": v for k, v in first.items()})
    out["full (empty kernel)"] = sum(first.values())
    again = full()
    out["full (replace)"] = sum(again.values())
    for name, path in updates.items():
        full()
        out[f"update: {name}"] = timed(ns, ["ipset", "restore", "-f", str(path)])
    return out
