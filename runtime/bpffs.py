"""Where eBPF objects are pinned: a bpffs, mounted by the runtime when there is none.

``ensure_bpffs(root)``: nothing to do when ``root`` is on a bpffs; a plain directory below a
bpffs is created; ``/sys/fs/bpf/<x>`` on a node where ``/sys/fs/bpf`` is not mounted mounts the
standard bpffs there first (what systemd does at boot); anything else gets a bpffs instance of
its own mounted on ``root`` (tests use a temporary directory, never ``/sys/fs/bpf``).

Mounting and detecting use ``mount(2)``/``statfs(2)`` directly (ctypes): no subprocess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

__all__ = ["BPF_FS_MAGIC", "ensure_bpffs", "is_bpffs", "unmount"]

logger = logging.getLogger(__name__)

BPF_FS_MAGIC = 0xCAFE4A11
SYS_FS_BPF = Path("/sys/fs/bpf")
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def is_bpffs(path: Path) -> bool:
    """Whether ``path`` lies on a bpf filesystem (``statfs(2)`` f_type)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is the first (long) field
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF == BPF_FS_MAGIC


def _mount(path: Path) -> None:
    if _libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t bpf bpf {path}: {os.strerror(err)}")
    logger.info("mounted a bpffs on %s", path)


def ensure_bpffs(root: Path) -> None:
    if root.is_dir() and is_bpffs(root):
        return
    if root.parent.is_dir() and is_bpffs(root.parent):
        root.mkdir(exist_ok=True)
        return
    if root.parent == SYS_FS_BPF:
        _mount(SYS_FS_BPF)
        root.mkdir(exist_ok=True)
        return
    root.mkdir(parents=True, exist_ok=True)
    _mount(root)


def unmount(path: Path) -> None:
    """Lazily unmount a bpffs (drops every pin below it). For tests and ``remove``."""
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path}: {os.strerror(err)}")
