"""The one place that runs ``tc`` (iproute2's traffic control tool): clsact qdiscs and BPF
filters.

Every call is an argv list (never a shell), with a timeout and captured output. A failure raises
:class:`TcError` with the argv, exit status and stderr. ``netns`` runs the command inside a named
network namespace (``ip netns exec NAME tc ...``); attachments are per network namespace.

>>> attach_argv("cali1", "ingress", "/sys/fs/bpf/tortie/g-1/objs/p-1/tortie_main")[:6]
['tc', 'filter', 'replace', 'dev', 'cali1', 'ingress']
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from typing import Any

from compiler.tools._exec import ToolError, in_netns
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 30.0
TC = "tc"
PREF = "1"
HANDLE = "1"


class TcError(ToolError):
    """``tc`` failed (non-zero exit, timeout or missing binary)."""


def available() -> bool:
    return shutil.which(TC) is not None


def run(
    args: Sequence[str],
    *,
    netns: str | None = None,
    json_out: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """``tc [-j] ARGS``; parsed JSON with ``json_out``, else stdout."""
    argv = in_netns([TC, *(["-j"] if json_out else []), *args], netns)
    proc = run_tool(argv, TcError, timeout=timeout)
    if json_out:
        return json.loads(proc.stdout) if proc.stdout.strip() else []
    return proc.stdout


def attach_argv(dev: str, direction: str, pinned_prog: str) -> list[str]:
    """Replace the BPF filter at (pref 1, handle 1) of ``dev``'s clsact ``direction``."""
    return [
        TC, "filter", "replace", "dev", dev, direction, "pref", PREF, "handle", HANDLE,
        "bpf", "direct-action", "object-pinned", pinned_prog,
    ]  # fmt: skip


def ensure_clsact(dev: str, *, netns: str | None = None) -> None:
    """Add a clsact qdisc to ``dev`` unless it has one (an existing one keeps its filters)."""
    qdiscs = run(["qdisc", "show", "dev", dev], netns=netns, json_out=True)
    if not any(q.get("kind") == "clsact" for q in qdiscs):
        run(["qdisc", "add", "dev", dev, "clsact"], netns=netns)


def devices(*, netns: str | None = None) -> list[str]:
    """Names of every network device (each has a root qdisc, ``noqueue`` at least)."""
    qdiscs = run(["qdisc", "show"], netns=netns, json_out=True)
    return sorted({q["dev"] for q in qdiscs if "dev" in q})


def ifindexes(*, netns: str | None = None) -> dict[str, int]:
    """Interface name -> ifindex (``ip -j link show``): BPF maps key interfaces by index."""
    argv = in_netns(["ip", "-j", "link", "show"], netns)
    proc = run_tool(argv, TcError, timeout=DEFAULT_TIMEOUT)
    return {str(link["ifname"]): int(link["ifindex"]) for link in json.loads(proc.stdout or "[]")}


def clsact_devices(*, netns: str | None = None) -> list[str]:
    """Names of the devices that have a clsact qdisc."""
    qdiscs = run(["qdisc", "show"], netns=netns, json_out=True)
    return sorted({q["dev"] for q in qdiscs if q.get("kind") == "clsact" and "dev" in q})


def attach(dev: str, direction: str, pinned_prog: str, *, netns: str | None = None) -> None:
    """Atomically replace (or add) the filter: packets see the old program or the new one."""
    run(attach_argv(dev, direction, pinned_prog)[1:], netns=netns)


def detach(dev: str, direction: str, *, netns: str | None = None) -> None:
    run(
        ["filter", "del", "dev", dev, direction, "pref", PREF, "handle", HANDLE, "bpf"], netns=netns
    )


def bpf_filters(dev: str, direction: str, *, netns: str | None = None) -> list[dict[str, Any]]:
    """The BPF filters of ``dev``'s clsact ``direction`` (``[]`` without a clsact qdisc):
    ``{"pref", "handle", "name", "prog_id", "tag"}``."""
    try:
        raw = run(["filter", "show", "dev", dev, direction], netns=netns, json_out=True)
    except TcError as e:
        if "Cannot find device" in e.stderr or "Invalid handle" in e.stderr or "parent" in e.stderr:
            return []
        raise
    out = []
    for f in raw:
        opts = f.get("options")
        if f.get("kind") != "bpf" or not opts:
            continue
        prog = opts.get("prog", {})
        out.append(
            {
                "pref": f.get("pref"),
                "handle": opts.get("handle"),
                "name": prog.get("name", ""),
                "prog_id": prog.get("id"),
                "tag": prog.get("tag", ""),
            }
        )
    return out
