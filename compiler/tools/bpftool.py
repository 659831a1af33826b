"""The one place that runs ``bpftool``.

Every call is an argv list (never a shell), with a timeout and captured output; ``-j`` output is
parsed. A failure raises :class:`BpftoolError` with the argv, the exit status and stderr (for a
load, the verifier log).

Objects are only ever pinned below a bpffs mount the caller owns (tests mount a private one in
a temporary directory); nothing here touches ``/sys/fs/bpf``.

>>> prog_loadall_argv("x.o", "/tmp/b/p", {"tortie_ct": "/tmp/b/m/tortie_ct"})
['bpftool', 'prog', 'loadall', 'x.o', '/tmp/b/p', 'type', 'tc', 'map', 'name', 'tortie_ct', 'pinned', '/tmp/b/m/tortie_ct', 'pinmaps', '/tmp/b/p/maps']
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from compiler.tools._exec import ToolError, exit_status
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 120.0
BPFTOOL = "bpftool"


class BpftoolError(ToolError):
    """``bpftool`` failed (non-zero exit, timeout or missing binary)."""

    def summary(self) -> str:
        # A loadall argv names every map and a verifier log runs to megabytes: keep the ends.
        status = exit_status(self.returncode)
        return f"{' '.join(self.argv)[:300]!r} {status}: {self.stderr.strip()[-4000:]}"


def available() -> bool:
    return shutil.which(BPFTOOL) is not None


def run(args: Sequence[str], *, json_out: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run ``bpftool ARGS``; return parsed JSON (``json_out``) or stdout."""
    argv = [BPFTOOL, *(["-j"] if json_out else []), *args]
    proc = run_tool(argv, BpftoolError, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BpftoolError(argv, proc.returncode, proc.stderr or proc.stdout)
    if json_out:
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.stdout


def btf_dump(obj: str) -> list[dict[str, Any]]:
    """The object's BTF types (``bpftool -j btf dump file OBJ``)."""
    out = run(["btf", "dump", "file", obj], json_out=True)
    return list(out["types"])


def prog_loadall_argv(
    obj: str, pin_dir: str, reuse_maps: Mapping[str, str], prog_type: str = "tc"
) -> list[str]:
    argv = [BPFTOOL, "prog", "loadall", obj, pin_dir, "type", prog_type]
    for name, path in sorted(reuse_maps.items()):
        argv += ["map", "name", name, "pinned", path]
    return [*argv, "pinmaps", os.path.join(pin_dir, "maps")]


def prog_loadall(
    obj: str, pin_dir: str, reuse_maps: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Load every program of ``obj`` through the verifier and pin them in ``pin_dir`` (its own
    maps in ``pin_dir/maps``), reusing the already pinned ``reuse_maps`` (name -> path)."""
    argv = prog_loadall_argv(obj, pin_dir, reuse_maps)
    run(argv[1:], timeout=timeout)


def map_create(
    path: str,
    map_type: str,
    key_size: int,
    value_size: int,
    entries: int,
    name: str,
    flags: int,
    *,
    inner_map: str | None = None,
) -> None:
    """Create and pin a map; a map-in-map takes the pinned ``inner_map`` as its template."""
    run(
        [
            "map", "create", path, "type", map_type, "key", str(key_size),
            "value", str(value_size), "entries", str(entries), "name", name,
            "flags", str(flags),
            *(["inner_map", "pinned", inner_map] if inner_map else []),
        ]
    )  # fmt: skip


def map_show(path: str) -> dict[str, Any]:
    return dict(run(["map", "show", "pinned", path], json_out=True))


def map_of_maps_update(path: str, index: int, inner: str) -> None:
    """``outer[index] = inner`` (a pinned map) in an array of maps: one atomic update."""
    key = _hex_words(index.to_bytes(4, "little"))
    run(["map", "update", "pinned", path, "key", *key, "value", "pinned", inner])


def _hex_words(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def _run_batch(lines: list[str]) -> None:
    """Run bpftool commands (one per line) in one process: ``bpftool batch file``."""
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        name = f.name
    try:
        run(["batch", "file", name], timeout=DEFAULT_TIMEOUT + len(lines) / 100)
    finally:
        os.unlink(name)


def map_update_batch(path: str, entries: Sequence[tuple[bytes, bytes]]) -> None:
    """Write many entries with one bpftool process (``bpftool batch file``)."""
    update = ["map", "update", "pinned", path]
    lines = [
        " ".join([*update, "key", *_hex_words(k), "value", *_hex_words(v)]) for k, v in entries
    ]
    if lines:
        _run_batch(lines)


def prog_array_update_batch(path: str, entries: Sequence[tuple[int, str]]) -> None:
    """Put pinned programs into a prog_array: ``(index, pinned program path)`` pairs, one
    bpftool process."""
    lines = [
        " ".join(["map", "update", "pinned", path, "key", *_hex_words(i.to_bytes(4, "little"))])
        + " value pinned "
        + prog
        for i, prog in entries
    ]
    if lines:
        _run_batch(lines)


def map_delete_batch(path: str, keys: Sequence[bytes]) -> None:
    """Delete many entries with one bpftool process (``bpftool batch file``)."""
    lines = [" ".join(["map", "delete", "pinned", path, "key", *_hex_words(k)]) for k in keys]
    if lines:
        _run_batch(lines)


def map_dump(path: str) -> list[dict[str, Any]]:
    out = run(["map", "dump", "pinned", path], json_out=True)
    return list(out or [])


_RETVAL = re.compile(r"Return value:\s*(\d+)")


def prog_run(pinned: str, data: bytes, *, repeat: int = 1) -> int:
    """BPF_PROG_TEST_RUN on one packet (Ethernet frame); returns the program's return value."""
    with tempfile.NamedTemporaryFile("wb", suffix=".pkt", delete=False) as f:
        f.write(data)
        name = f.name
    try:
        out = run(["prog", "run", "pinned", pinned, "data_in", name, "repeat", str(repeat)])
    finally:
        os.unlink(name)
    m = _RETVAL.search(out)
    if m is None:
        raise BpftoolError(["prog", "run", pinned], 0, f"no return value in: {out}")
    return int(m.group(1))


def prog_show(pinned: str) -> dict[str, Any]:
    return dict(run(["prog", "show", "pinned", pinned], json_out=True))
