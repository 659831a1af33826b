"""The artifact directory: the one format the runtime reads.

An artifact is a set of files (relative path -> bytes) plus ``manifest.json`` recording what was
compiled: the inputs' hashes, the node, the target, the compiler version and every file's
SHA-256. Writing is all-or-nothing: files go to a temporary directory beside the destination,
which is then renamed into place, so a failed compile never leaves a partial directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from compiler import __version__

MANIFEST = "manifest.json"
#: The index of a multi-node output directory (``tortie compile --all-nodes``).
INDEX = "nodes.json"
_DIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    target: str
    node: str
    files: Mapping[str, bytes]
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> sha256
    summary: Mapping[str, int] = field(default_factory=dict)  # counts for people and `status`

    def manifest(self) -> dict[str, object]:
        return {
            "format": 1,
            "compiler": f"tortie {__version__}",
            "target": self.target,
            "node": self.node,
            "inputs": dict(sorted(self.inputs.items())),
            "files": {name: sha256(data) for name, data in sorted(self.files.items())},
            "summary": dict(sorted(self.summary.items())),
        }

    def manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n").encode()


def write_artifact(artifact: Artifact, out_dir: str | os.PathLike[str]) -> Path:
    """Write atomically: build in a sibling temp dir, then swap it into place."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_files(artifact, tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_artifact_tree(
    target: str, artifacts: Iterable[Artifact], out_dir: str | os.PathLike[str]
) -> list[str]:
    """Several nodes' artifacts under one directory, ``<node>/`` each, plus :data:`INDEX`;
    atomic as a whole. ``artifacts`` may be a generator (one node's artifact in memory at a
    time): if it raises, nothing is written and the exception goes on. Returns the nodes."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    nodes: list[str] = []
    try:
        for artifact in artifacts:
            if not is_safe_dir_name(artifact.node) or artifact.node in nodes:
                raise ValueError(f"node name cannot be a directory name: {artifact.node!r}")
            sub = tmp / artifact.node
            sub.mkdir()
            _write_files(artifact, sub)
            nodes.append(artifact.node)
        index = {
            "format": 1,
            "compiler": f"tortie {__version__}",
            "target": target,
            "nodes": sorted(nodes),
        }
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(nodes)


def is_safe_dir_name(name: str) -> bool:
    """A node name that is one plain path component (DNS-1123-like: no ``/``, no leading dot)."""
    return bool(_DIR_NAME.fullmatch(name))


def _write_files(artifact: Artifact, into: Path) -> None:
    for name, data in sorted(artifact.files.items()):
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"artifact file name escapes the directory: {name!r}")
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (into / MANIFEST).write_bytes(artifact.manifest_bytes())
    os.chmod(into, 0o755)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, object]:
    return json.loads((Path(path) / MANIFEST).read_text())


def verify_files(path: str | os.PathLike[str]) -> list[str]:
    """Names of files whose content no longer matches the manifest (tampering), or missing."""
    root = Path(path)
    manifest = read_manifest(root)
    bad = []
    for name, digest in manifest.get("files", {}).items():  # type: ignore[union-attr]
        f = root / name
        if not f.is_file() or sha256(f.read_bytes()) != digest:
            bad.append(name)
    return bad
