"""The one place that runs ``clang`` to build BPF objects.

Every call is an argv list (never a shell), with a timeout and captured output. A failure raises
:class:`ClangError` with the argv, the exit status and stderr (the compiler's diagnostics).

Objects must be byte-identical for identical input wherever they are built, so the build runs
with relative paths from a working directory and ``-fdebug-compilation-dir=.``: no absolute path
of the temporary build directory ends up in the DWARF or BTF line info.

>>> bpf_argv("src/p.bpf.c", "obj/p.bpf.o", ["src/include"], system_includes=[])[:6]
['clang', '-O2', '-g', '-target', 'bpf', '-c']
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.tools._exec import ToolError
from compiler.tools._exec import run as run_tool

DEFAULT_TIMEOUT = 1800.0  # a 10,000-rule policy takes minutes on a busy 2-core machine
CLANG = "clang"


class ClangError(ToolError):
    """``clang`` failed (non-zero exit, timeout or missing binary)."""


@dataclass(frozen=True)
class ClangResult:
    argv: tuple[str, ...]
    stderr: str  # warnings


def available() -> bool:
    return shutil.which(CLANG) is not None


@functools.cache
def version() -> str:
    """First line of ``clang --version`` (part of the build's identity), or "" if missing."""
    try:
        out = subprocess.run([CLANG, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""


@functools.cache
def system_include_dirs() -> tuple[str, ...]:
    """Where ``<asm/types.h>`` lives: Debian keeps it in the multiarch directory, which clang
    does not search for ``-target bpf``. Kernel UAPI headers come from linux-libc-dev and
    ``<bpf/bpf_helpers.h>`` from libbpf-dev; no kernel headers are needed."""
    hits = sorted(glob.glob("/usr/include/*-linux-gnu*/asm/types.h"))
    return tuple(os.path.dirname(os.path.dirname(h)) for h in hits[:1])


def bpf_argv(
    src: str,
    out: str,
    include_dirs: Sequence[str],
    *,
    system_includes: Sequence[str] | None = None,
    defines: Sequence[str] = (),
) -> list[str]:
    sys_inc = system_include_dirs() if system_includes is None else system_includes
    argv = [CLANG, "-O2", "-g", "-target", "bpf", "-c", src, "-o", out]
    argv += ["-fdebug-compilation-dir=.", "-Wall", "-Wno-unused-label", "-Wno-unused-function"]
    # Generated policy code is long runs of compare-and-goto on the same few packet fields;
    # LLVM's jump threading then spends most of the build duplicating blocks (measured: 2x the
    # time of everything else for 1,000 rules) for no gain in size. Turn its duplication off.
    argv += ["-mllvm", "-jump-threading-threshold=0"]
    # GVN's memory-dependence analysis (load elimination across the many rule tests) was ~30%
    # of a 1,000-rule object's clang CPU (3.99 -> 2.77 s, median of 3) for the same instruction
    # count (23,893 -> 23,880): the loads it would remove are gone after EarlyCSE already.
    argv += ["-mllvm", "-enable-gvn-memdep=false"]
    # Line info without columns: BTF line info stays (verifier logs name the C line), one more
    # ~5% of clang CPU saved.
    argv += ["-gno-column-info"]
    argv += [f"-I{d}" for d in include_dirs]
    argv += [f"-idirafter{d}" for d in sys_inc]
    argv += [f"-D{d}" for d in defines]
    return argv


def compile_bpf(
    src: str,
    out: str,
    include_dirs: Sequence[str],
    *,
    cwd: str,
    defines: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> ClangResult:
    """``clang -O2 -g -target bpf -c SRC -o OUT`` run in ``cwd`` (paths relative to it)."""
    argv = bpf_argv(src, out, include_dirs, defines=defines)
    proc = run_tool(argv, ClangError, cwd=cwd, timeout=timeout)
    return ClangResult(tuple(argv), proc.stderr)
