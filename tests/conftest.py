"""Shared pytest setup: markers that skip tests whose environment is missing."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Make `tests.support...` importable however pytest is started (`pytest`, `python3 -m pytest`).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Support modules assert too (topology loading, conformance checks): give them pytest's messages.
pytest.register_assert_rewrite("tests.support")


@functools.cache
def kernel_skip_reason() -> str | None:
    """Why `kernel` tests cannot run here, or None: they need root and working `ip netns`."""
    if os.geteuid() != 0:
        return "kernel tests need root (network namespaces, veths, raw sockets)"
    if shutil.which("ip") is None:
        return "kernel tests need iproute2's `ip`, which is not installed"
    try:
        result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns list` failed: {e}"
    if result.returncode != 0:
        return f"`ip netns list` failed: {result.stderr.strip()}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kernel_items = [item for item in items if item.get_closest_marker("kernel")]
    reason = kernel_skip_reason() if kernel_items else None
    if reason is not None:
        for item in kernel_items:
            item.add_marker(pytest.mark.skip(reason=reason))
