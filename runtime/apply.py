"""``tortie apply``: put an artifact into the kernel so that the new state is fully in force or
the old one still is.

Order of an apply (all under the state dir's lock, ``runtime/lock.py``):

1. :func:`load_dir` reads ``manifest.json`` and every file it lists into memory, refuses an
   artifact compiled for another node and any file whose SHA-256 differs from the manifest
   (``compiler.artifact.verify_files``), and from then on only the verified bytes are used.
2. The dataplane reads the kernel (``current``) and plans against the last record. The record
   is trusted only when the kernel still matches it and no earlier apply was cut short (a
   ``journal.json`` left behind); otherwise the plan is a full replacement. Same artifact and no
   drift: nothing to do (idempotent, the kernel is not touched at all).
3. ``journal.json`` is written, the steps run (each one atomic in the kernel), the kernel is
   read back and checked. Any failure rolls back to ``current`` and raises :class:`ApplyFailed`
   saying why and whether the old state is back.
4. The record (with the read-back, for drift detection) and a copy of the files are written,
   then the journal is removed. A kill between the kernel commit and the record leaves the
   journal: the next apply replaces everything again, ``status`` reports the interruption.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.artifact import MANIFEST, sha256, verify_files
from runtime.lock import apply_lock
from runtime.plan import (
    ApplyFailed,
    ArtifactRefused,
    CheckFailed,
    Dataplane,
    Env,
    KernelState,
    LoadedArtifact,
    Plan,
    Step,
)
from runtime.stamp import read_stamped, unchanged_since
from runtime.state import Record

__all__ = ["DATAPLANES", "Outcome", "apply_artifact", "dataplane_for", "load_dir"]

logger = logging.getLogger(__name__)

DATAPLANES: dict[str, str] = {
    "nftables": "runtime.nftables:NftablesDataplane",
    "iptables": "runtime.iptables:IptablesDataplane",
    "ebpf": "runtime.ebpf:EbpfDataplane",
}


def dataplane_for(target: str, env: Env) -> Dataplane:
    try:
        module, cls = DATAPLANES[target].split(":")
    except KeyError:
        raise ArtifactRefused(f"unknown target {target!r}") from None
    return getattr(importlib.import_module(module), cls)(env)  # type: ignore[no-any-return]


def load_dir(path: str | Path, node: str) -> LoadedArtifact:
    """Read and verify the artifact in ``path`` for ``node`` (raises ArtifactRefused)."""
    root = Path(path)
    where = str(root)
    if not (root / MANIFEST).is_file():
        raise ArtifactRefused(f"{where}: no {MANIFEST}: not an artifact directory")
    try:
        manifest_bytes = (root / MANIFEST).read_bytes()
    except OSError as e:
        raise ArtifactRefused(f"{where}: cannot read {MANIFEST}: {e.strerror or e}") from None
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise ArtifactRefused(f"{where}: {MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise ArtifactRefused(f"{where}: {MANIFEST} is not a format-1 Tortie manifest")
    if manifest.get("node") != node:
        raise ArtifactRefused(
            f"{where} was compiled for node {manifest.get('node')!r}, but this is node "
            f"{node!r} (from --node or the hostname); refusing to apply it"
        )
    target = manifest.get("target")
    if not isinstance(target, str) or target not in DATAPLANES:
        raise ArtifactRefused(f"{where}: unknown target {target!r}")
    _check_listing(where, manifest)
    try:
        bad = verify_files(root)
    except OSError as e:
        raise ArtifactRefused(f"{where}: cannot read the artifact: {e}") from None
    if bad:
        raise ArtifactRefused(
            f"{where}: {len(bad)} file(s) do not match {MANIFEST} (tampered or incomplete): "
            + ", ".join(sorted(bad))
        )
    files: dict[str, bytes] = {}
    for name, digest in sorted(manifest.get("files", {}).items()):
        try:
            data = (root / name).read_bytes()
        except OSError as e:
            raise ArtifactRefused(f"{where}: cannot read {name}: {e.strerror or e}") from None
        if sha256(data) != digest:  # changed between verify_files and now
            raise ArtifactRefused(f"{where}: {name} changed while it was being read")
        files[name] = data
    return LoadedArtifact(where, manifest, manifest_bytes, files)


def _check_listing(where: str, manifest: dict[str, object]) -> None:
    """``files`` must map plain relative names to SHA-256 digests, ``summary`` names to
    counts: a hand-made manifest must not make the runtime read outside the directory."""
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise ArtifactRefused(f"{where}: {MANIFEST}: files must be an object name -> sha256")
    for name, digest in files.items():
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or any(not c.isprintable() for c in name)
            or name == MANIFEST
        ):
            raise ArtifactRefused(f"{where}: {MANIFEST} lists a bad file name {name!r}")
        if not isinstance(digest, str):
            raise ArtifactRefused(f"{where}: {MANIFEST}: the digest of {name!r} is not a string")
    summary = manifest.get("summary", {})
    if not isinstance(summary, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in summary.values()
    ):
        raise ArtifactRefused(f"{where}: {MANIFEST}: summary must map names to counts")


@dataclass(frozen=True, slots=True)
class Outcome:
    plan: Plan
    applied: bool  # False for dry runs and "nothing to do"
    after: KernelState | None
    seconds: float
    interrupted: bool = False  # an earlier apply had been killed (its journal was found)


def apply_artifact(
    artifact: LoadedArtifact,
    env: Env,
    *,
    dry_run: bool = False,
    set_update: str | None = None,
    set_update_base: str | None = None,
    set_update_overlay: str = "",
    in_force: Mapping[str, bytes] | None = None,
) -> Outcome:
    """Apply (or with ``dry_run`` only plan and check) ``artifact``.

    ``set_update`` is a set-elements-only script computed by the caller (the agent) against
    the artifact whose hash is ``set_update_base`` with the agent's set overlay named
    ``set_update_overlay`` on top (``runtime/nftables_fast.py``; "" for none); it is used only
    if that is what the record says is loaded and the kernel still matches the record. An
    empty ``set_update`` says ``artifact`` is the rendering of what is in force: the kernel is
    checked against the record and the record (with the artifact's files) replaced.
    ``in_force``: the files of an artifact rendering exactly that state (base + overlay), so a
    change that is not set-only can still be planned as a delta instead of a full replacement.
    """
    start = time.monotonic()
    with apply_lock(env.state.root, env.lock_timeout):
        dp = dataplane_for(artifact.target, env)
        record = env.state.read_record()
        journal = env.state.read_journal()
        trusted = record
        if journal is not None:
            logger.warning(
                "an earlier apply (pid %s, artifact %s) did not finish: replacing everything",
                journal.pid,
                journal.artifact[:12],
            )
            trusted = None
        elif record is not None and record.target != artifact.target:
            trusted = None
        known = (
            trusted is not None
            and trusted.artifact == set_update_base
            and trusted.overlay == set_update_overlay
        )
        if not known:
            set_update = None
        # Nothing committed to the kernel since the trusted record was read back (its stamp is
        # the kernel's now): the record says what the kernel holds, no need to read it again
        # (seconds at 10,000 policies).
        recorded = unchanged_since(dp, trusted) if trusted is not None else None
        if recorded is not None and trusted is not None:
            if trusted.artifact == artifact.hash:
                why = "already applied (kernel unchanged since: same nf_tables generation)"
                plan = Plan(artifact.target, artifact.hash, "none", why, (), recorded)
                logger.info("artifact %s: %s; nothing to do", artifact.hash[:12], why)
                return Outcome(plan, False, recorded, time.monotonic() - start, False)
            current, current_stamp = recorded, trusted.stamp
        else:
            current, current_stamp = read_stamped(dp, dp.read)
        previous: Mapping[str, bytes] = {}
        if record is not None and not record.overlay:
            previous = env.state.applied_files()
        if trusted is not None and trusted.overlay:
            # Set-only updates are in force on top of the recorded artifact: applied/ is not
            # what the kernel holds (a delta only from ``in_force``), and the same artifact is
            # not "applied".
            if known and in_force is not None:
                previous = in_force
            trusted = dataclasses.replace(
                trusted, artifact=f"{trusted.artifact}+sets:{trusted.overlay}"
            )
        plan = dp.plan(current, artifact, trusted, previous, set_update)
        interrupted = journal is not None
        if dry_run:
            if plan.changes:
                try:
                    dp.check(plan)
                except Exception as e:  # noqa: BLE001 - any refusal is the answer
                    raise CheckFailed(f"the kernel would refuse this artifact: {e}") from e
            return Outcome(plan, False, None, time.monotonic() - start, interrupted)
        if not plan.changes:
            if record is not None and (record.artifact != artifact.hash or record.overlay):
                # Same kernel state from a different artifact (e.g. only input hashes changed):
                # remember the new artifact so the next apply of it is a no-op too.
                record_now = _record(artifact, plan, current, current_stamp)
                env.state.write_record(record_now, artifact.all_files())
            elif record is not None and current_stamp and record.stamp != current_stamp:
                # In sync (else there would be changes): remember the stamp it was seen at.
                env.state.write_record(dataclasses.replace(record, stamp=current_stamp))
            if journal is not None:
                env.state.end()
            logger.info("artifact %s: %s; nothing to do", artifact.hash[:12], plan.reason)
            return Outcome(plan, False, current, time.monotonic() - start, interrupted)
        env.state.begin(artifact.target, artifact.hash, record.artifact if record else None)
        try:
            after, stamp = _execute(dp, plan)
        except ApplyFailed as e:
            if e.restored:  # the kernel is as before: the old record is right again
                env.state.end()
            raise
        if record is not None and record.target != artifact.target:
            _remove_old(record.target, env)
        new_record = _record(artifact, plan, after, stamp)
        env.state.write_record(new_record, artifact.all_files())
        env.state.end()
        seconds = time.monotonic() - start
        logger.info(
            "applied %s artifact %s (%s: %s) in %.0f ms: %s",
            artifact.target,
            artifact.hash[:12],
            plan.mode,
            plan.reason,
            seconds * 1000,
            _counts_text(after.counts),
        )
        return Outcome(plan, True, after, seconds, interrupted)


def _record(artifact: LoadedArtifact, plan: Plan, after: KernelState, stamp: str) -> Record:
    return Record(
        target=artifact.target,
        node=artifact.node,
        artifact=artifact.hash,
        source=artifact.source,
        compiler=str(artifact.manifest.get("compiler", "")),
        applied_at=time.time(),
        mode=plan.mode,
        counts=dict(after.counts),
        kernel=dict(after.recordable if after.recordable is not None else after.units),
        summary=artifact.summary,
        stamp=stamp,
    )


def _execute(dp: Dataplane, plan: Plan) -> tuple[KernelState, str]:
    """Run the plan's steps and read the kernel back (with its stamp); roll back on failure."""
    attempted: list[Step] = []
    try:
        for step in plan.steps:
            attempted.append(step)
            t0 = time.monotonic()
            try:
                dp.run(step)
            except Exception as e:
                raise _StepFailed(f"{step.what} failed: {e}") from e
            logger.debug("%s: %s (%.0f ms)", step.kind, step.what, (time.monotonic() - t0) * 1000)
        after, stamp = read_stamped(dp, dp.read)
        problems = dp.verify(plan, after)
        if problems:
            raise _StepFailed("read-back after the apply is wrong: " + "; ".join(problems[:10]))
        return after, stamp
    except Exception as e:
        reason = str(e)
        logger.error("apply of %s failed: %s; rolling back", plan.artifact[:12], reason)
        restored = _rollback(dp, plan, attempted)
        raise ApplyFailed(reason, restored) from e


class _StepFailed(RuntimeError):
    pass


def _rollback(dp: Dataplane, plan: Plan, attempted: list[Step]) -> bool:
    try:
        if not dp.read().differs(plan.current.units):
            # The failed step was atomic and nothing before it committed (an nft transaction
            # the kernel refused): the old state never left, so leave it untouched.
            logger.info("nothing had changed in the kernel; no rollback needed")
            return True
        dp.rollback(plan, attempted)
        now = dp.read()
    except Exception as e:  # noqa: BLE001 - report, keep the journal for the next apply
        logger.error("rollback failed: %s", e)
        return False
    differs = now.differs(plan.current.units)
    if differs:
        logger.error("after rollback the kernel still differs in: %s", ", ".join(differs))
        return False
    logger.info("rolled back: the kernel holds the state from before the apply")
    return True


def _remove_old(target: str, env: Env) -> None:
    try:
        dataplane_for(target, env).remove()
        logger.info("removed the objects of the previous target %s", target)
    except Exception as e:  # noqa: BLE001 - the new state is in force; leftovers are reported
        logger.warning("could not remove the objects of the previous target %s: %s", target, e)


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != "tables") or "empty"
