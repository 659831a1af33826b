"""Loading an eBPF artifact: generations of pinned programs and maps, switched per attachment
with ``tc filter replace``.

Layout below the bpffs root (``--bpffs``, mounted by ``runtime/bpffs.py`` when needed)::

    shared/tortie_ct, tortie_frags, tortie_log     one per node, kept across applies: approved
                                                   flows and Log counters survive a new ruleset
    g-<artifact>-<n>/maps/tortie_sets_v4|v6, tortie_config
    g-<artifact>-<n>/objs/p-<hash>/tortie_main ...  every object of the artifact, loaded through
                                                   the verifier against this generation's maps

A **full** apply loads a new generation next to the one in use (nothing attached yet, so a
failure or a kill changes nothing a packet sees), then replaces each endpoint's filter with
``tc filter replace`` (atomic per interface and direction: a packet meets the old program with
the old sets or the new program with the new sets), detaches interfaces no longer in the
artifact, and leaves the previous generation pinned: rollback re-attaches it, and the next full
apply unpins generations nothing is attached to. A **set-only** apply (only ``sets`` of
``maps.json`` changed, every object identical) adds the new members to the generation in use,
then deletes the old ones: per element atomic, with a moment where a set holds both.

Read-back units: ``tc IF ingress|egress`` -> ``<generation>/<object>`` (the program attached, by
id), and per generation in use its sets and config. Counts: attachments, programs, sets,
elements.

(``compiler.targets.ebpf.load`` is the target's reference loader for tests; the map contents
and layouts come from it and from ``layout``, the attach and generation logic is here.)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from compiler.targets.ebpf import layout, load
from compiler.targets.ebpf.load import set_from_json
from compiler.tools import bpftool, tc
from runtime.bpffs import ensure_bpffs, is_bpffs
from runtime.plan import Env, KernelState, LoadedArtifact, Plan, Step, unified_diff
from runtime.state import Record

__all__ = ["EbpfDataplane"]

logger = logging.getLogger(__name__)

MAPS_JSON = "maps.json"
MAIN = "tortie_main"
PER_GENERATION = (layout.SETS_V4.name, layout.SETS_V6.name, layout.CONFIG_MAP.name)
_DIRECTION = {"tc_ingress": "ingress", "tc_egress": "egress"}


def attachments(doc: Mapping[str, Any], interfaces: Sequence[str]) -> dict[str, str]:
    """``tc IF DIRECTION`` -> object name, from ``maps.json`` and the node's interfaces: a host
    endpoint with interfaceName ``*`` (or ``""``) covers every interface but ``lo``, the
    workloads' and the named host endpoints' (the target's reference loader decides which)."""
    return {
        f"tc {dev} {_DIRECTION[hook]}": obj.removesuffix(".bpf.o")
        for dev, hook, obj in load.attachments(doc, interfaces)
        if obj
    }


def set_entries(doc: Mapping[str, Any]) -> dict[int, dict[bytes, bytes]]:
    out: dict[int, dict[bytes, bytes]] = {4: {}, 6: {}}
    for s in doc["sets"]:
        out[int(s["family"])].update(set_from_json(s).entries())
    return out


def _without_sets(doc: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in doc.items() if k != "sets"}, sort_keys=True)


def _hex(words: Sequence[str]) -> bytes:
    return bytes(int(w, 16) for w in words)


class EbpfDataplane:
    TARGET: ClassVar[str] = "ebpf"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.root = env.bpffs
        self._artifact: LoadedArtifact | None = None

    # -- reading ------------------------------------------------------------------------------

    def _generations(self) -> list[Path]:
        if not self.root.is_dir() or not is_bpffs(self.root):
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith("g-"))

    def _mains(self) -> dict[int, str]:
        out = {}
        for gen in self._generations():
            for obj in sorted((gen / "objs").glob("p-*")):
                try:
                    out[int(bpftool.prog_show(str(obj / MAIN))["id"])] = f"{gen.name}/{obj.name}"
                except bpftool.BpftoolError:
                    continue  # a half-loaded generation of a killed apply
        return out

    def _dump(self, path: Path) -> list[str]:
        return sorted(
            _hex(e["key"]).hex() + "=" + _hex(e["value"]).hex() for e in bpftool.map_dump(str(path))
        )

    def read(self) -> KernelState:
        mains = self._mains()
        units: dict[str, str | None] = {}
        for dev in tc.clsact_devices(netns=self.env.netns):
            for direction in ("ingress", "egress"):
                for f in tc.bpf_filters(dev, direction, netns=self.env.netns):
                    if f["name"] == MAIN:
                        units[f"tc {dev} {direction}"] = mains.get(
                            f["prog_id"], f"foreign program id {f['prog_id']} tag {f['tag']}"
                        )
        gens = sorted({v.split("/")[0] for v in units.values() if v and v.startswith("g-")})
        entries = 0
        set_ids: set[str] = set()
        for gen in gens:
            maps = self.root / gen / "maps"
            for name in PER_GENERATION:
                dump = self._dump(maps / name)
                units[f"bpf {gen} {name}"] = "\n".join(dump) + "\n"
                if name != layout.CONFIG_MAP.name:
                    entries += len(dump)
                    set_ids.update(d[8:24] for d in dump)  # prefixlen, then the 64-bit set id
        counts = {
            "attachments": sum(1 for u in units if u.startswith("tc ")),
            "programs": len({v for u, v in units.items() if u.startswith("tc ")}),
            "sets": len(set_ids),
            "elements": entries,
        }
        raw = {"generations": " ".join(g.name for g in self._generations())}
        return KernelState(units, counts, raw)

    # -- planning -----------------------------------------------------------------------------

    def plan(
        self,
        current: KernelState,
        artifact: LoadedArtifact,
        record: Record | None,
        previous: Mapping[str, bytes],
        set_update: str | None = None,
    ) -> Plan:
        self._artifact = artifact
        doc = json.loads(artifact.text(MAPS_JSON))
        in_sync = record is not None and not current.differs(record.kernel)
        if in_sync and record is not None and record.artifact == artifact.hash:
            return Plan(self.TARGET, artifact.hash, "none", "already applied", (), current)
        old_doc = json.loads(previous[MAPS_JSON]) if in_sync and MAPS_JSON in previous else None
        diff = unified_diff(
            json.dumps(old_doc, indent=1, sort_keys=True) + "\n" if old_doc else "",
            json.dumps(doc, indent=1, sort_keys=True) + "\n",
            f"applied/{MAPS_JSON}",
            f"new/{MAPS_JSON}",
        )
        gens = sorted(
            {v.split("/")[0] for u, v in current.units.items() if u.startswith("tc ") and v}
        )
        same_objects = old_doc is not None and all(
            previous.get(n) == artifact.files[n] for n in artifact.files if n.startswith("obj/")
        )
        if (
            old_doc is not None
            and same_objects
            and len(gens) == 1
            and _without_sets(old_doc) == _without_sets(doc)
        ):
            step = self._set_step(gens[0], set_entries(old_doc), set_entries(doc))
            if step is None:
                return Plan(
                    self.TARGET, artifact.hash, "none", "same programs and sets", (), current, diff
                )
            return Plan(
                self.TARGET,
                artifact.hash,
                "sets",
                "only set members changed",
                (step,),
                current,
                diff,
            )
        gen = f"g-{artifact.hash[:12]}-{time.time_ns() // 1_000_000:x}"
        wanted = attachments(doc, tc.devices(netns=self.env.netns))
        steps = []
        stale = [g.name for g in self._generations() if g.name not in gens]
        if stale:
            steps.append(
                Step("bpf-gc", f"unpin {len(stale)} unused generation(s)", args=tuple(stale))
            )
        steps.append(
            Step(
                "bpf-load", f"load {len(doc['objects'])} objects into generation {gen}", args=(gen,)
            )
        )
        for unit, obj in sorted(wanted.items()):
            _, dev, direction = unit.split()
            steps.append(
                Step(
                    "tc-attach",
                    f"attach {obj} to {dev} {direction}",
                    args=(dev, direction, gen, obj),
                )
            )
        for unit in sorted(u for u in current.units if u.startswith("tc ") and u not in wanted):
            _, dev, direction = unit.split()
            steps.append(Step("tc-detach", f"detach {dev} {direction}", args=(dev, direction)))
        if record is None:
            why = "no trusted record of the kernel state"
        elif not in_sync:
            why = f"the kernel drifted from the last apply ({', '.join(current.differs(record.kernel)[:5])})"
        else:
            why = "the programs changed"
        desired = json.dumps({u: f"{gen}/{o}" for u, o in wanted.items()}, sort_keys=True)
        return Plan(self.TARGET, artifact.hash, "full", why, tuple(steps), current, diff, desired)

    def _set_step(
        self,
        gen: str,
        old: Mapping[int, Mapping[bytes, bytes]],
        new: Mapping[int, Mapping[bytes, bytes]],
    ) -> Step | None:
        change: dict[str, Any] = {"gen": gen, "add": {}, "delete": {}}
        n = 0
        for fam in (4, 6):
            add = sorted((k.hex(), v.hex()) for k, v in new[fam].items() if old[fam].get(k) != v)
            delete = sorted(k.hex() for k in old[fam] if k not in new[fam])
            change["add"][str(fam)], change["delete"][str(fam)] = add, delete
            n += len(add) + len(delete)
        if n == 0:
            return None
        return Step(
            "bpf-sets",
            f"update {n} set entries in generation {gen} (add, then delete)",
            json.dumps(change),
        )

    def check(self, plan: Plan) -> None:
        """Nothing to validate without loading: only the verifier can say (a dry run reports
        the plan)."""

    # -- applying -----------------------------------------------------------------------------

    def _shared_maps(self) -> dict[str, str]:
        (self.root / "shared").mkdir(exist_ok=True)
        out = {}
        for m in layout.SHARED_MAPS:
            if m.name in PER_GENERATION:
                continue
            path = self.root / "shared" / m.name
            if not path.exists():
                bpftool.map_create(
                    str(path), m.type, m.key_size, m.value_size, m.max_entries, m.name, m.flags
                )
            out[m.name] = str(path)
        return out

    def _load(self, gen: str) -> None:
        assert self._artifact is not None
        ensure_bpffs(self.root)
        maps = self._shared_maps()
        gdir = self.root / gen
        (gdir / "maps").mkdir(parents=True)
        (gdir / "objs").mkdir()
        for m in layout.SHARED_MAPS:
            if m.name in PER_GENERATION:
                path = str(gdir / "maps" / m.name)
                bpftool.map_create(
                    path, m.type, m.key_size, m.value_size, m.max_entries, m.name, m.flags
                )
                maps[m.name] = path
        doc = json.loads(self._artifact.text(MAPS_JSON))
        with tempfile.TemporaryDirectory(prefix="bpf-", dir=self.env.state.work_dir()) as tmp:
            for name in sorted(doc["objects"]):
                obj = Path(tmp) / f"{name}.bpf.o"
                obj.write_bytes(self._artifact.files[f"obj/{name}.bpf.o"])
                bpftool.prog_loadall(str(obj), str(gdir / "objs" / name), maps)
        bpftool.map_update_batch(
            maps[layout.CONFIG_MAP.name], [(bytes(4), bytes.fromhex(doc["config"]["value"]))]
        )
        entries = set_entries(doc)
        bpftool.map_update_batch(maps[layout.SETS_V4.name], sorted(entries[4].items()))
        bpftool.map_update_batch(maps[layout.SETS_V6.name], sorted(entries[6].items()))

    def _attach(self, dev: str, direction: str, pinned: str) -> None:
        tc.ensure_clsact(dev, netns=self.env.netns)
        tc.attach(dev, direction, pinned, netns=self.env.netns)

    def run(self, step: Step) -> None:
        if step.kind == "bpf-gc":
            for gen in step.args:
                shutil.rmtree(self.root / gen, ignore_errors=True)
        elif step.kind == "bpf-load":
            self._load(step.args[0])
        elif step.kind == "tc-attach":
            dev, direction, gen, obj = step.args
            self._attach(dev, direction, str(self.root / gen / "objs" / obj / MAIN))
        elif step.kind == "tc-detach":
            tc.detach(step.args[0], step.args[1], netns=self.env.netns)
        elif step.kind == "bpf-sets":
            self._sets(json.loads(step.payload), reverse=False)
        else:
            raise ValueError(f"unknown step {step.kind!r}")

    def _sets(self, change: Mapping[str, Any], reverse: bool) -> None:
        maps = self.root / change["gen"] / "maps"
        for fam, name in ((4, layout.SETS_V4.name), (6, layout.SETS_V6.name)):
            add = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in change["add"][str(fam)]]
            delete = [bytes.fromhex(k) for k in change["delete"][str(fam)]]
            if reverse:  # undo: remove what was added (old values cannot differ for a key here)
                bpftool.map_delete_batch(str(maps / name), [k for k, _ in add])
                continue
            bpftool.map_update_batch(str(maps / name), add)
            bpftool.map_delete_batch(str(maps / name), delete)

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        if plan.mode != "full":
            return []
        want = json.loads(plan.desired)
        return [
            f"{u}: {after.units.get(u)!r} instead of {v}"
            for u, v in sorted(want.items())
            if after.units.get(u) != v
        ]

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        old = plan.current.units
        for step in reversed(attempted):
            if step.kind in ("tc-attach", "tc-detach"):
                dev, direction = step.args[0], step.args[1]
                before = old.get(f"tc {dev} {direction}")
                pinned = self._pinned(before) if before else None
                if pinned is not None and pinned.exists():
                    self._attach(dev, direction, str(pinned))
                elif before is None:
                    try:
                        tc.detach(dev, direction, netns=self.env.netns)
                    except tc.TcError as e:
                        logger.debug("nothing to detach on %s %s: %s", dev, direction, e)
            elif step.kind == "bpf-sets":
                change = json.loads(step.payload)
                self._sets(change, reverse=True)
                old_entries = {
                    fam: [(bytes.fromhex(k), b"") for k in change["delete"][str(fam)]]
                    for fam in (4, 6)
                }
                self._restore_deleted(change["gen"], old_entries)
            elif step.kind == "bpf-load":
                shutil.rmtree(self.root / step.args[0], ignore_errors=True)

    def _pinned(self, unit_value: str) -> Path:
        """``<generation>/<object>`` (a unit's value) -> its pinned entry program."""
        gen, _, obj = unit_value.partition("/")
        return self.root / gen / "objs" / obj / MAIN

    def _restore_deleted(self, gen: str, entries: Mapping[int, list[tuple[bytes, bytes]]]) -> None:
        value = layout.SET_VALUE.pack(flags=1)  # every set member has this value
        maps = self.root / gen / "maps"
        bpftool.map_update_batch(
            str(maps / layout.SETS_V4.name), [(k, value) for k, _ in entries[4]]
        )
        bpftool.map_update_batch(
            str(maps / layout.SETS_V6.name), [(k, value) for k, _ in entries[6]]
        )

    def remove(self) -> None:
        for unit in self.read().units:
            if unit.startswith("tc "):
                _, dev, direction = unit.split()
                tc.detach(dev, direction, netns=self.env.netns)
        for gen in self._generations():
            shutil.rmtree(gen, ignore_errors=True)
        shutil.rmtree(self.root / "shared", ignore_errors=True)
