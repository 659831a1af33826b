"""The data the runtime passes around: environment, kernel snapshots, plans, dataplanes.

The runtime follows one shape for every dataplane (STYLE.md: ``plan(current, desired) -> Plan;
apply; rollback``)::

    current = dataplane.read()                      # KernelState: what the kernel holds now
    plan = dataplane.plan(current, artifact, ...)   # Plan: steps, or "none"
    for step in plan.steps: dataplane.run(step)     # each step is one tool invocation
    dataplane.verify(plan, dataplane.read())        # read back
    # on any failure: dataplane.rollback(plan, attempted) restores plan.current

A :class:`KernelState` is a mapping *unit -> normalised text* (a unit is something the kernel
replaces in one atomic operation: the nft table, one iptables table of one family, the ipsets,
the tc attachments...). Comparing units is how drift is detected and how the kill -9 tests
check that every unit is either the old or the new version.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from compiler.artifact import MANIFEST, Artifact, sha256
from runtime.state import Record, StateDir

__all__ = [
    "DEFAULT_BPFFS",
    "ApplyFailed",
    "ArtifactRefused",
    "CheckFailed",
    "Dataplane",
    "Env",
    "KernelState",
    "LoadedArtifact",
    "Plan",
    "Step",
    "unified_diff",
]

DEFAULT_BPFFS = Path("/sys/fs/bpf/tortie")


class ArtifactRefused(RuntimeError):
    """The artifact must not be applied here (other node, tampered file, unknown target)."""


class CheckFailed(RuntimeError):
    """A dry run found that the kernel would refuse the plan (nothing was changed)."""


class ApplyFailed(RuntimeError):
    """The kernel refused the new state; ``restored`` says whether the old one is back."""

    def __init__(self, reason: str, restored: bool, detail: str = "") -> None:
        self.reason = reason
        self.restored = restored
        self.detail = detail
        tail = (
            "rolled back: the previous state is in force"
            if restored
            else "ROLLBACK INCOMPLETE: the kernel matches neither the old nor the new state"
        )
        super().__init__(f"{reason}; {tail}" + (f"\n{detail}" if detail else ""))


@dataclass(frozen=True, slots=True)
class Env:
    """Where the runtime works. ``netns`` is for tests only: every kernel command then runs
    in that network namespace (``ip netns exec`` / pyroute2 ``netns=``), the process itself
    stays where it is. On a node it is None: the runtime works in its own namespace."""

    state: StateDir = field(default_factory=StateDir)
    netns: str | None = None
    bpffs: Path = DEFAULT_BPFFS
    lock_timeout: float = 30.0
    iptables_backend: str | None = None  # "legacy" | "nft"; None: what `iptables` points at


@dataclass(frozen=True, slots=True)
class KernelState:
    units: Mapping[str, str | None]  # unit -> normalised text, None when absent
    counts: Mapping[str, int]
    raw: Mapping[str, str] = field(default_factory=dict)  # restorable dumps (for rollback)
    # What a record of this state stores, when not ``units``: nftables compares objects an
    # agent's chain update made by netlink digest (stand-ins in ``units``) while that update's
    # overlay is in force, but a record holds nft's listing (runtime/nftables_chains.py).
    recordable: Mapping[str, str | None] | None = None

    @property
    def fingerprint(self) -> str:
        text = json.dumps(dict(sorted(self.units.items())), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def empty(self) -> bool:
        return all(v is None for v in self.units.values())

    def differs(self, recorded: Mapping[str, str | None]) -> list[str]:
        """Units whose text is not what ``recorded`` says (drift)."""
        names = sorted(set(self.units) | set(recorded))
        return [n for n in names if self.units.get(n) != recorded.get(n)]


@dataclass(frozen=True, slots=True)
class Step:
    """One atomic tool invocation. ``kind`` is the dataplane's verb, ``what`` one line for
    logs and ``--dry-run``; ``payload`` is the script fed to the tool (through a file)."""

    kind: str
    what: str
    payload: str = ""
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    target: str
    artifact: str
    mode: str  # "none" | "full" | "update" (only what changed) | "sets" (set elements only)
    reason: str
    steps: tuple[Step, ...]
    current: KernelState
    # For people (--dry-run, -o json): text, or a function making it when it is asked for
    # (nftables at 10,000 policies: ~0.8 s that a plain apply does not need).
    diff: str | Callable[[], str] = ""
    desired: str = ""  # the complete desired configuration, for verify() (dataplane-specific)

    def diff_text(self) -> str:
        return self.diff() if callable(self.diff) else self.diff

    @property
    def changes(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True, slots=True)
class LoadedArtifact:
    """An artifact read into memory and verified: what the runtime applies is exactly these
    bytes, so a file changed after verification cannot slip in."""

    source: str
    manifest: Mapping[str, Any]
    manifest_bytes: bytes
    files: Mapping[str, bytes]

    @property
    def hash(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def target(self) -> str:
        return str(self.manifest.get("target", ""))

    @property
    def node(self) -> str:
        return str(self.manifest.get("node", ""))

    @property
    def summary(self) -> dict[str, int]:
        return dict(self.manifest.get("summary", {}))

    def text(self, name: str) -> str:
        try:
            return self.files[name].decode()
        except KeyError:
            raise ArtifactRefused(f"{self.source}: the artifact has no {name}") from None
        except UnicodeDecodeError as e:
            raise ArtifactRefused(
                f"{self.source}: {name} is not UTF-8 text (byte {e.start})"
            ) from None

    def all_files(self) -> dict[str, bytes]:
        return {**self.files, MANIFEST: self.manifest_bytes}

    @classmethod
    def from_artifact(cls, artifact: Artifact, source: str) -> LoadedArtifact:
        return cls(source, artifact.manifest(), artifact.manifest_bytes(), dict(artifact.files))


class Dataplane(Protocol):
    TARGET: ClassVar[str]

    def read(self) -> KernelState:
        """The kernel's current state of Tortie's own objects (nothing else)."""

    def plan(
        self,
        current: KernelState,
        artifact: LoadedArtifact,
        record: Record | None,
        previous: Mapping[str, bytes],
        set_update: str | None = None,
    ) -> Plan:
        """Steps from ``current`` to ``artifact``. ``record`` is None when it cannot be trusted
        (none, drift, an interrupted apply): then the plan is a full replacement."""

    def check(self, plan: Plan) -> None:
        """Validate the plan against the kernel without changing anything (``--dry-run``)."""

    def run(self, step: Step) -> None: ...

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        """Problems with the read-back after all steps ran (empty: good)."""

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        """Put ``plan.current`` back after ``attempted`` steps (the last may have failed)."""

    def remove(self) -> None:
        """Delete every object of this dataplane (switching to another target)."""


def unified_diff(old: str, new: str, old_name: str, new_name: str, context: int = 2) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        old_name,
        new_name,
        n=context,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
