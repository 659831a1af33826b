"""Loading an nftables artifact: every change is one ``nft -f`` transaction.

Three kinds of plan, each a single transaction (the kernel runs the old table or the new one,
never a mix and never nothing; a killed ``nft`` commits nothing, the batch goes out in one
``sendmsg``):

* **full** — the artifact's ``nftables.nft`` as is: create ``table inet tortie`` if missing,
  delete it, add it anew. Used when the kernel state is not known to match the last apply
  (first apply, drift, an interrupted apply) or the change needs it. When the artifact has
  ``nftables.batch`` (``tortie compile --nft-batch``) encoding exactly this script for this
  machine's byte order, that batch is sent instead (``nftables_netlink.send_batch``): the same
  transaction without nft's userspace (~0.7 s instead of ~2 s at 10,000 policies). If the
  kernel refuses the batch (nothing committed), the script goes to ``nft -f`` after all.
* **update** — when the kernel holds exactly the last applied script: only the chains, sets and
  elements that differ (``runtime/nftables_delta.py``, which explains why: a set re-created in a
  transaction can answer "no match" for a moment, unchanged sets never do).
* **sets** — the agent's set-only script (``compiler.targets.nftables.render_set_update``):
  ``delete element`` / ``add element`` only. Sent as one nf_tables netlink batch by
  ``runtime/nftables_netlink.py`` (same commands, same all-or-nothing transaction), because
  ``nft -f`` first dumps the elements of every interval set of the table (~240 ms CPU at 10,000
  policies for a one-line update, ~3 ms this way); ``nft -f`` when the script has a shape that
  module does not encode.

Conntrack entries are not part of the table, so established flows carry on through the new
table's ``ct state established,related accept``. No other table is ever touched.

Scripts go to ``nft -f FILE`` from the state dir's ``work/``, never through a pipe: a killed
apply cannot hand ``nft`` a truncated script that happens to parse (a prefix of a list of
``add element`` lines would).

Read-back: ``nft list table inet tortie`` (counter values masked, objects sorted) is the drift
fingerprint, and the counts are taken from the same text (``nft -j list table`` only for a
listing of another shape: at 10,000 policies the JSON listing costs ~3 s CPU, more than the text
one). Rollback loads the listing taken before the apply; the text ``nft list table`` prints is
valid ``nft -f`` input.

The plan's diff is for people (``--dry-run``, ``-o json``): above DIFF_WHOLE bytes it is taken
chain by chain and set by set (:func:`plan_diff`), as difflib over a whole 10 MB table against a
listing in nft's own layout took ~20-30 s CPU.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from compiler.tools import nft
from runtime import nftables_netlink
from runtime.nftables_delta import Block, Parsed, delta, sort_blocks
from runtime.nftables_delta import parse as parse_table
from runtime.plan import Env, KernelState, LoadedArtifact, Plan, Step, unified_diff
from runtime.state import Record

__all__ = ["SCRIPT", "UNIT", "NftablesDataplane", "normalise"]

logger = logging.getLogger(__name__)

SCRIPT = "nftables.nft"
BATCH = "nftables.batch"  # the script as one netlink batch (compile --nft-batch), optional
BATCH_STEP = "nft-batch"  # Step.kind of a full replacement sent as that batch
# The table the nftables target renders (compiler/targets/nftables/script.py; a test checks they
# agree). Not imported: that would pull the whole compiler into every apply and status.
FAMILY = "inet"
TABLE = "tortie"
UNIT = f"nft {FAMILY} {TABLE}"
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_START = re.compile(r"^\t(set|map|chain) (\S+) \{$")
_CHAIN_HEADER = ("type ", "comment ", "policy ", "devices ", "flags ")  # not rules
_DECL = re.compile(r"^\s*(chain|set|map)\s+(\S+)\s*\{", re.MULTILINE)
_ABSENT = ("No such file or directory", "does not exist")
SETS_WHAT = f"update set elements of {FAMILY} {TABLE}"
DIFF_WHOLE = 1 << 20  # bytes (both sides): larger texts are diffed block by block


def normalise(listing: str) -> str:
    """``nft list table`` text with what the kernel changes by itself (counters) masked and
    its objects sorted (the kernel lists them in creation order, which depends on history)."""
    return sort_blocks(_COUNTER.sub("counter", listing))


def declared(text: str) -> set[tuple[str, str]]:
    """(kind, name) of every chain, set and map declared in a script or listing."""
    return {(m.group(1), m.group(2).strip('"')) for m in _DECL.finditer(text)}


def json_counts(objects: Sequence[Mapping[str, object]]) -> dict[str, int]:
    out = {"tables": 0, "chains": 0, "rules": 0, "sets": 0, "maps": 0, "elements": 0}
    for obj in objects:
        kind = next(iter(obj))
        if kind in ("table", "chain", "rule", "set", "map"):
            out[kind + "s"] += 1
        if kind in ("set", "map"):
            body = obj[kind]
            assert isinstance(body, Mapping)
            out["elements"] += len(body.get("elem", ()))
    return out


def listing_counts(listing: str) -> dict[str, int] | None:
    """The counts of :func:`json_counts` from the text listing (the same numbers as ``nft -j
    list table``, which costs more than the text listing itself: ~3 s CPU at 10,000 policies),
    or None when the listing is not the shape of Tortie's table (one line per rule, blocks one
    level deep: what :mod:`runtime.nftables_delta` parses)."""
    lines = listing.splitlines()
    try:
        start = lines.index(f"table {FAMILY} {TABLE} {{")
    except ValueError:
        return None
    out = {"tables": 1, "chains": 0, "rules": 0, "sets": 0, "maps": 0, "elements": 0}
    kind = ""  # of the block the line is in
    in_elements = False
    for line in lines[start + 1 :]:
        if line == "}":
            return out if not kind else None
        if not kind:
            m = _START.match(line)
            if m:
                kind = m[1]
                out[kind + "s"] += 1
            elif line.startswith("\t\t"):
                return None
            continue
        if line == "\t}":
            kind, in_elements = "", False
            continue
        text = line.strip()
        if kind == "chain":
            if text and not text.startswith(("#", *_CHAIN_HEADER)):
                out["rules"] += 1
        elif in_elements or text.startswith("elements = {"):
            items = text.removeprefix("elements = {").removesuffix("}")
            out["elements"] += sum(1 for item in items.split(",") if item.strip())
            in_elements = not text.endswith("}")
    return None


def plan_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """``unified_diff`` of two scripts or listings; above DIFF_WHOLE bytes, one diff per
    changed chain, set or map (matched by name). difflib over the whole text is quadratic in
    practice: ~20-30 s CPU for a 10 MB table against a listing in nft's layout."""
    if len(old) + len(new) <= DIFF_WHOLE:
        return unified_diff(old, new, old_name, new_name)
    a, b = parse_table(old) if old else Parsed(()), parse_table(new)
    if a is None or b is None:
        return (
            f"--- {old_name}\n+++ {new_name}\n"
            f"# not diffed: {len(old)} and {len(new)} bytes, not the shape of a Tortie table\n"
        )
    out = [unified_diff(_table_lines(a), _table_lines(b), old_name, new_name)]
    blocks = {**a.blocks, **b.blocks}
    for name in sorted(blocks, key=lambda n: (blocks[n].kind, n)):
        before, after = a.blocks.get(name), b.blocks.get(name)
        if before is not None and after is not None and before.text == after.text:
            continue
        what = f"{blocks[name].kind} {name}"
        out.append(
            unified_diff(
                _block_text(before), _block_text(after), f"{old_name} {what}", f"{new_name} {what}"
            )
        )
    return "".join(out)


def _table_lines(parsed: Parsed) -> str:
    return "".join(f"{line}\n" for line in parsed.table)


def _block_text(block: Block | None) -> str:
    return "" if block is None else "\n".join(block.text) + "\n"


class NftablesDataplane:
    TARGET: ClassVar[str] = "nftables"

    def __init__(self, env: Env) -> None:
        self.env = env
        # The artifact's batch for a full replacement, by the script it encodes (see plan()).
        self._batches: dict[str, bytes] = {}

    # -- reading ------------------------------------------------------------------------------

    def _list(self, json_out: bool) -> str | None:
        args = ["-j"] if json_out else []
        try:
            return nft.run([*args, "list", "table", FAMILY, TABLE], netns=self.env.netns).stdout
        except nft.NftError as e:
            if any(s in e.stderr for s in _ABSENT):
                return None
            raise

    def recorded(self, record: Record) -> KernelState | None:
        """What :meth:`read` returned when ``record`` was taken, for a kernel whose stamp proves
        it unchanged since (runtime/stamp.py), or None. A rollback reloads the recorded
        listing: counters masked and blocks sorted, it is still valid ``nft -f`` input."""
        if set(record.kernel) != {UNIT}:
            return None
        text = record.kernel[UNIT]
        if text is None:
            return KernelState({UNIT: None}, json_counts(()), {})
        return KernelState({UNIT: text}, dict(record.counts), {UNIT: text})

    def read(self) -> KernelState:
        listing = self._list(json_out=False)
        if listing is None:
            return KernelState({UNIT: None}, json_counts(()), {})
        counts = listing_counts(listing)
        if counts is None:  # not the shape Tortie writes: let nft count (JSON listing)
            doc = self._list(json_out=True)
            counts = json_counts(json.loads(doc)["nftables"] if doc else [])
        text = normalise(listing)
        overlay = self.env.state.masked_overlay()
        if overlay is None:
            return KernelState({UNIT: text}, counts, {UNIT: listing})
        # Chain updates of the agent are in force: their objects are compared by netlink
        # digest, as the overlay records them (runtime/nftables_chains.py); a record stores
        # the listing.
        from runtime.nftables_fast import mask

        masked = mask(text, overlay.masked, self.env.netns)
        return KernelState({UNIT: masked}, counts, {UNIT: listing}, {UNIT: text})

    # -- planning -----------------------------------------------------------------------------

    def plan(
        self,
        current: KernelState,
        artifact: LoadedArtifact,
        record: Record | None,
        previous: Mapping[str, bytes],
        set_update: str | None = None,
    ) -> Plan:
        script = artifact.text(SCRIPT)
        in_sync = record is not None and not current.differs(record.kernel)
        same = record is not None and record.artifact == artifact.hash
        if in_sync and same:
            return Plan(self.TARGET, artifact.hash, "none", "already applied", (), current)
        old_script = previous.get(SCRIPT, b"").decode() if record is not None else ""
        if in_sync and set_update is not None:
            if not set_update:
                why = "only set elements changed, and none differ"
                return Plan(self.TARGET, artifact.hash, "none", why, (), current)
            step = Step("nft", SETS_WHAT, set_update)
            why = "only set elements changed"
            return Plan(
                self.TARGET, artifact.hash, "sets", why, (step,), current, set_update, script
            )
        kernel_now = current.units.get(UNIT) or ""
        if record is None:
            why = "no trusted record of the kernel state" + (
                "" if current.empty else f" ({UNIT} exists)"
            )
            diff = _lazy(kernel_now, script, "kernel", f"new/{SCRIPT}", strip=(False, True))
        elif not in_sync:
            why = f"the kernel drifted from the last apply ({', '.join(current.differs(record.kernel))})"
            # What the apply puts back, in listing form, then what the new artifact changes.
            diff = _lazy(
                kernel_now, record.kernel.get(UNIT) or "", "kernel", "applied", strip=(False, False)
            )
            if not same:
                diff = _lazy(old_script, script, f"applied/{SCRIPT}", f"new/{SCRIPT}", diff)
        else:
            diff = _lazy(old_script, script, f"applied/{SCRIPT}", f"new/{SCRIPT}")
            update = delta(old_script, script) if old_script else None
            if update == "":
                why = "same ruleset (only the artifact's metadata changed)"
                return Plan(self.TARGET, artifact.hash, "none", why, (), current, diff, script)
            if update is not None:
                what = f"update only what changed in {FAMILY} {TABLE} (one transaction)"
                step = Step("nft", what, update)
                why = "the ruleset changed"
                return Plan(
                    self.TARGET, artifact.hash, "update", why, (step,), current, diff, script
                )
            why = "the ruleset changed in a way only a full replacement can express"
        step = Step("nft", f"replace table {FAMILY} {TABLE} (one transaction)", script)
        data = artifact.files.get(BATCH)
        if data is not None:
            batch = nftables_netlink.read_batch(data, script)
            if batch is not None:
                self._batches[script] = batch
                what = f"replace table {FAMILY} {TABLE} (one netlink batch)"
                step = Step(BATCH_STEP, what, script)
            else:
                logger.info("%s does not encode this %s for this machine: nft -f", BATCH, SCRIPT)
        return Plan(self.TARGET, artifact.hash, "full", why, (step,), current, diff, script)

    def check(self, plan: Plan) -> None:
        # --dry-run only: `nft -c` also for set updates (the kernel's own answer, cache and all).
        for step in plan.steps:
            self._nft_file(step.payload, check=True)

    # -- applying -----------------------------------------------------------------------------

    def _nft_file(self, script: str, check: bool = False) -> None:
        work = self.env.state.work_dir()
        fd, path = tempfile.mkstemp(prefix="nft-", suffix=".nft", dir=work)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(script)
            nft.run(["-c", "-f", path] if check else ["-f", path], netns=self.env.netns)
        finally:
            os.unlink(path)

    def run(self, step: Step) -> None:
        if step.what == SETS_WHAT and _encodable(step.payload):
            logger.debug("netlink batch: %s (%d bytes)", step.what, len(step.payload))
            try:
                nftables_netlink.apply(step.payload, netns=self.env.netns)
            except OSError as e:  # NetlinkError (refused: nothing committed) or no socket
                raise nft.NftError(["netlink", "nf_tables batch"], 1, str(e)) from e
            return
        batch = self._batches.get(step.payload) if step.kind == BATCH_STEP else None
        if batch is not None:
            # The same transaction as `nft -f` of the script (compiler/targets/nftables/batch.py)
            logger.debug("netlink batch: %s (%d bytes)", step.what, len(batch))
            try:
                nftables_netlink.send_batch(batch, netns=self.env.netns)
                return
            except nftables_netlink.NetlinkError as e:
                # Refused, nothing committed. The script is the artifact's truth: let nft load
                # it (if the kernel refuses that too, nft's message says why, with the line).
                logger.warning("%s; loading %s with nft -f instead", e, SCRIPT)
            except (OSError, ValueError) as e:  # no socket, a malformed batch, no answer
                raise nft.NftError(["netlink", "nf_tables batch"], 1, str(e)) from e
        logger.debug("nft -f: %s (%d bytes)", step.what, len(step.payload))
        self._nft_file(step.payload)

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        text = after.units.get(UNIT)
        if text is None:
            return [f"{UNIT} is missing after the apply"]
        if plan.mode not in ("full", "update"):
            return []
        want = declared(plan.desired)
        have = declared(text)
        problems = [f"{kind} {name} is missing" for kind, name in sorted(want - have)]
        problems += [f"unexpected {kind} {name}" for kind, name in sorted(have - want)]
        return problems

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        raw = plan.current.raw.get(UNIT)
        header = f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"
        self._nft_file(header + (raw or ""))

    def remove(self) -> None:
        self._nft_file(f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")


def _lazy(
    old: str,
    new: str,
    old_name: str,
    new_name: str,
    before: Callable[[], str] | None = None,
    strip: tuple[bool, bool] = (True, True),
) -> Callable[[], str]:
    """:func:`plan_diff` of ``old`` and ``new`` (scripts :func:`_strip`-ed where ``strip``
    says so) when it is asked for, after ``before``'s text if given."""

    def text() -> str:
        head = before() if before is not None else ""
        a = _strip(old) if strip[0] else old
        b = _strip(new) if strip[1] else new
        return head + plan_diff(a, b, old_name, new_name)

    return text


def _encodable(script: str) -> bool:
    try:
        nftables_netlink.parse(script)
    except nftables_netlink.Unsupported as e:
        logger.debug("set update through nft -f: %s", e)
        return False
    return True


def _strip(text: str) -> str:
    """Drop ``#`` comment lines and the create-then-delete preamble: they say nothing about
    the ruleset."""
    preamble = (f"table {FAMILY} {TABLE} {{}}", f"delete table {FAMILY} {TABLE}")
    return "".join(
        line
        for line in text.splitlines(keepends=True)
        if not line.lstrip().startswith("#") and line.strip() not in preamble
    )
