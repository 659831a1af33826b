"""Reading policy YAML as it is at a git revision (``tortie diff --base-rev/--head-rev``).

Paths are relative to the repository root (the one containing the current directory), as in a
pull request. The files are listed with ``git ls-tree`` (a path missing at that revision is
simply empty there — a directory added by the change is normal) and read with one
``git archive`` into memory; nothing is written to disk. Directories are filtered as ``-f``
does (``.yaml``, ``.yml``, ``.json``, hidden entries skipped, sorted on path components), and
files are named by their repository path, so spans read ``policies/a.yaml:12`` in both trees
and rendered artifacts (whose comments carry spans) differ only where the YAML did.

git runs through ``compiler/tools/git.py`` (argv lists, timeouts); its failures become
:class:`RevError`.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from collections.abc import Sequence

from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend.model import ResourceSet
from compiler.frontend.schema import read_documents
from compiler.frontend.sources import EXTENSIONS, Source, decode
from compiler.frontend.yaml_loader import Node, load_documents
from compiler.tools.git import GitError, git

__all__ = ["RevError", "load_rev", "read_rev", "read_worktree", "repo_root"]


class RevError(RuntimeError):
    """git failed: a bad revision, not a repository, git missing."""


def _git(args: Sequence[str], cwd: str) -> bytes:
    try:
        return git(args, cwd)
    except GitError as e:
        raise RevError(str(e)) from None


def repo_root(cwd: str | None = None) -> str:
    return _git(["rev-parse", "--show-toplevel"], cwd or os.getcwd()).decode().strip()


def _normal(path: str) -> str:
    p = posixpath.normpath(path.replace(os.sep, "/")).lstrip("/")
    return "" if p == "." else p


def _selected(names: list[str], paths: Sequence[str]) -> list[str]:
    """The files ``-f`` would read: an explicit file always, a directory's YAML/JSON files
    (hidden entries skipped), each once, in the order -f gives them."""
    out: list[str] = []
    seen: set[str] = set()
    for path in map(_normal, paths):
        if path in names:
            chosen = [path]
        else:
            prefix = path + "/" if path else ""
            chosen = sorted(
                (
                    n
                    for n in names
                    if n.startswith(prefix)
                    and n.lower().endswith(EXTENSIONS)
                    and not any(part.startswith(".") for part in n[len(prefix) :].split("/"))
                ),
                key=lambda n: n.split("/"),
            )
        for n in chosen:
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out


def check_rev(rev: str) -> None:
    """A revision git will read as a revision, never as an option or two arguments."""
    if not rev or rev.startswith("-") or any(c in rev for c in "\0\n\r"):
        raise RevError(f"{rev!r} is not a revision name (it must not be empty or start with '-')")


def repo_path(path: str, root: str) -> str:
    """``path`` as a path inside the repository at ``root``: relative paths are taken from the
    repository root (as in a pull request), absolute ones must lie inside it. A path outside the
    repository is an error, not an empty tree."""
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, path))
    if full != real_root and not full.startswith(real_root.rstrip(os.sep) + os.sep):
        raise RevError(f"{path}: outside the git repository {root}; give paths inside it")
    return _normal(os.path.relpath(full, real_root))


def read_rev(rev: str, paths: Sequence[str], root: str, sink: DiagnosticSink) -> list[Source]:
    """The sources ``paths`` name at ``rev`` (each path may be a file or a directory)."""
    if not paths:
        paths = ["."]
    specs = [_normal(p) or "." for p in paths]
    listed = _git(["ls-tree", "-r", "-z", "--name-only", rev, "--", *specs], root)
    names = sorted(n for n in listed.decode("utf-8", "surrogateescape").split("\0") if n)
    chosen = _selected(names, paths)
    if not chosen:
        return []
    tar = _git(["archive", "--format=tar", rev, "--", *chosen], root)
    texts: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive.getmembers():
            if member.isfile():
                f = archive.extractfile(member)
                if f is not None:
                    texts[member.name] = f.read()
    out = []
    for name in chosen:
        text = decode(texts.get(name, b""), name, sink)
        if text is not None:
            out.append(Source(name, text))
    return out


def read_worktree(paths: Sequence[str], root: str, sink: DiagnosticSink) -> list[Source]:
    """The same selection from the working tree (``--base-rev`` without ``--head-rev``)."""
    names: list[str] = []
    for path in map(_normal, paths or ["."]):
        full = os.path.join(root, path)
        if os.path.isfile(full):
            names.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = _normal(os.path.relpath(dirpath, root))
            names.extend(posixpath.join(rel, f) if rel else f for f in filenames)
    out = []
    for name in _selected(sorted(set(names)), paths or ["."]):
        try:
            with open(os.path.join(root, name), "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise RevError(f"cannot read {name}: {e.strerror or e}") from e
        text = decode(data, name, sink)
        if text is not None:
            out.append(Source(name, text))
    return out


def load_rev(
    rev: str | None, paths: Sequence[str], root: str, sink: DiagnosticSink, sources: SourceRegistry
) -> ResourceSet:
    """Like ``frontend.load`` for the files at a revision (None: the working tree)."""
    if rev is not None:
        check_rev(rev)
    paths = [repo_path(p, root) for p in paths]
    docs: list[Node] = []
    found = (
        read_rev(rev, paths, root, sink) if rev is not None else read_worktree(paths, root, sink)
    )
    for src in found:
        text = src.text.removeprefix("\ufeff")
        sources.add(src.name, text)
        docs.extend(load_documents(text, src.name, sink))
    return read_documents(docs, sink)
