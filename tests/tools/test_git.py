"""``compiler/tools/git.py`` against a real repository, and the docstring examples of every
tool wrapper."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
from pathlib import Path

import pytest

import compiler.tools
from compiler.tools.git import GitError, git


@pytest.mark.parametrize(
    "name", sorted(m.name for m in pkgutil.iter_modules(compiler.tools.__path__))
)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(f"compiler.tools.{name}"))
    assert result.failed == 0


def test_git_reads_a_revision_and_reports_a_bad_one(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.yaml").write_text("kind: x\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-qm", "one"], check=True)
    assert git(["show", "HEAD:a.yaml"], str(tmp_path)) == b"kind: x\n"
    with pytest.raises(GitError) as info:
        git(["show", "no-such-rev:a.yaml"], str(tmp_path))
    assert info.value.returncode not in (0, None)
    assert "no-such-rev" in str(info.value)
