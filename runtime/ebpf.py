"""Loading an eBPF artifact: generations of pinned programs, versions of set maps, and one
dispatcher per interface; every interface switches to a new ruleset with one map write.

Layout below the bpffs root (``--bpffs``, mounted by ``runtime/bpffs.py`` when needed)::

    shared/tortie_ct, tortie_frags, tortie_log     one per node, kept across applies: approved
                                                   flows and Log counters survive a new ruleset
    shared/tortie_active, tortie_slots, tortie_progs   the dispatcher's maps (layout.DISPATCH_MAPS)
    shared/tortie_setbank_v4|v6                    bank -> set map (arrays of maps; shared/
                                                   tortie_sets_v4|v6 is their empty template)
    shared/dispatch/d-<hash>/tortie_disp_in|eg     the dispatcher programs, attached once
    g-<artifact>-<n>/maps/tortie_config
    g-<artifact>-<n>/objs/p-<hash>/tortie_main ...  every object of the artifact, loaded through
                                                   the verifier against these maps
    s-<artifact>-<n>/tortie_sets_v4|v6              a set version: every member of maps.json

There are two **banks**, 0 and 1; ``tortie_active[0]`` says which one is in force. A bank is
the interfaces' slots (``tortie_slots``: (ifindex, hook, bank) -> index in ``tortie_progs``,
which holds entry programs) and one set version (``tortie_setbank_v4|v6[bank]``). The
dispatcher on each interface reads the bank in force, tags the packet with it (the entry
program looks sets up in that bank's set maps) and tail-calls the interface's entry program.
An interface without a slot in the bank in force has no policy (as without a filter).

A **full** apply, in this order (a ``kill -9`` anywhere leaves one complete ruleset in force):

1. ``bpf-gc``: empty the other bank and unpin the generations and set versions the bank in
   force does not use. Nothing a packet sees changes.
2. ``bpf-load``: load the new generation (and the dispatcher, once); ``bpf-sets``: a new set
   version with every member.
3. ``bpf-wire``: the new set version, the new entry programs (in free ``tortie_progs`` slots)
   and every wanted attachment's slot into the other bank. Still nothing live changes.
4. ``tc-attach``: attach the dispatcher to interfaces that lack it (new ones): the bank in force
   has no slot for them, so they keep behaving as un-policed interfaces.
5. ``bpf-flip``: write the other bank's number into ``tortie_active``: one map update, every
   interface now runs the new programs with the new sets. This is the commit point.
6. ``tc-detach``: remove the dispatcher from interfaces that left the artifact (already without
   policy since the flip).

A **set-only** apply (only ``sets`` of ``maps.json`` changed, every object identical) is the
same without steps 2a, 4 and 6: a new set version, wired into the other bank with the programs
in force, then the flip. It writes every member (not only the changed ones): the price of
switching sets atomically with the rest.

Rollback flips back to the old bank (and unwires and unpins what the apply loaded). The old
bank stays loaded until the next apply's ``bpf-gc``, so at most two generations and two set
versions are pinned between applies.

Read-back units: ``tc IF ingress|egress`` -> ``<generation>/<object>``: what the dispatcher on
that interface runs now (the bank in force's slot, resolved to the pinned program by id); an
interface whose dispatcher has no slot in the bank in force has no unit (it is un-policed).
``bpf <generation> tortie_config`` per generation in force and ``bpf <set version>
tortie_sets_v4|v6`` for the bank in force. Counts: attachments, programs, sets, elements.

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
from runtime.plan import (
    ArtifactRefused,
    Env,
    KernelState,
    LoadedArtifact,
    Plan,
    Step,
    unified_diff,
)
from runtime.state import Record

__all__ = ["EbpfDataplane"]

logger = logging.getLogger(__name__)

MAPS_JSON = "maps.json"
MAIN = "tortie_main"
PER_GENERATION = (layout.CONFIG_MAP.name,)
SET_MAPS = {4: layout.SETS_V4, 6: layout.SETS_V6}  # inner maps, one pair per set version
SET_BANKS = {4: layout.SET_BANKS_V4, 6: layout.SET_BANKS_V6}
_DIRECTION = {"tc_ingress": "ingress", "tc_egress": "egress"}
_HOOK = {"ingress": layout.HOOK_TC_INGRESS, "egress": layout.HOOK_TC_EGRESS}
_DISPATCH_PROG = {d: layout.DISPATCH_PROGS[h] for h, d in _DIRECTION.items()}
DISPATCH_DIR = "dispatch"


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

    @property
    def _shared(self) -> Path:
        return self.root / "shared"

    def _on_bpffs(self) -> bool:
        return self.root.is_dir() and is_bpffs(self.root)

    def _generations(self) -> list[Path]:
        """Program generations (``g-…``) and set versions (``s-…``)."""
        if not self._on_bpffs():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(("g-", "s-")))

    def _set_versions(self) -> dict[int, str]:
        """Map id -> set version (``s-…``) of every pinned set map."""
        out = {}
        for sdir in self._generations():
            if not sdir.name.startswith("s-"):
                continue
            for m in SET_MAPS.values():
                try:
                    out[int(bpftool.map_show(str(sdir / m.name))["id"])] = sdir.name
                except bpftool.BpftoolError:
                    continue  # a half-made set version of a killed apply
        return out

    def _mains(self) -> dict[int, str]:
        out = {}
        for gen in self._generations():
            for obj in sorted((gen / "objs").glob("p-*")) if gen.name.startswith("g-") else ():
                try:
                    out[int(bpftool.prog_show(str(obj / MAIN))["id"])] = f"{gen.name}/{obj.name}"
                except bpftool.BpftoolError:
                    continue  # a half-loaded generation of a killed apply
        return out

    def _dispatchers(self) -> dict[int, str]:
        """Program id -> dispatcher object name (``d-…``) of every pinned dispatcher."""
        out = {}
        if not self._on_bpffs() or not (self._shared / DISPATCH_DIR).is_dir():
            return out
        for d in sorted((self._shared / DISPATCH_DIR).glob("d-*")):
            for prog in _DISPATCH_PROG.values():
                try:
                    out[int(bpftool.prog_show(str(d / prog))["id"])] = d.name
                except bpftool.BpftoolError:
                    continue  # a half-loaded dispatcher of a killed apply
        return out

    def _banks(
        self,
    ) -> tuple[int, dict[tuple[int, int, int], int], dict[int, int], dict[int, dict[int, int]]]:
        """(bank in force, {(ifindex, hook, bank): slot}, {slot: program id},
        {family: {bank: set map id}})."""
        path = self._shared / layout.ACTIVE.name
        if not self._on_bpffs() or not path.exists():
            return 0, {}, {}, {4: {}, 6: {}}
        dump = bpftool.map_dump(str(path))
        active = int.from_bytes(_hex(dump[0]["value"]), "little") if dump else 0
        slots = {}
        for e in bpftool.map_dump(str(self._shared / layout.SLOTS.name)):
            k = layout.SLOT_KEY.unpack(_hex(e["key"]))
            key = (int(k["ifindex"]), int(k["hook"]), int(k["bank"]))  # type: ignore[arg-type]
            slots[key] = int.from_bytes(_hex(e["value"]), "little")
        progs = _u32_dump(self._shared / layout.PROGS.name)
        sets = {
            fam: _u32_dump(self._shared / m.name) if (self._shared / m.name).exists() else {}
            for fam, m in SET_BANKS.items()
        }
        return active, slots, progs, sets

    def _dump(self, path: Path) -> list[str]:
        return sorted(
            _hex(e["key"]).hex() + "=" + _hex(e["value"]).hex() for e in bpftool.map_dump(str(path))
        )

    def read(self) -> KernelState:
        mains = self._mains()
        dispatchers = self._dispatchers()
        active, slots, progs, banks = self._banks()
        units: dict[str, str | None] = {}
        attached: list[str] = []
        devices = tc.clsact_devices(netns=self.env.netns)
        index = tc.ifindexes(netns=self.env.netns) if devices else {}
        for dev in devices:
            for direction in ("ingress", "egress"):
                for f in tc.bpf_filters(dev, direction, netns=self.env.netns):
                    if f["name"] not in (MAIN, *_DISPATCH_PROG.values()):
                        continue
                    unit = f"tc {dev} {direction}"
                    disp = dispatchers.get(f["prog_id"])
                    if disp is None or f["name"] != _DISPATCH_PROG[direction]:
                        units[unit] = f"foreign program id {f['prog_id']} tag {f['tag']}"
                        continue
                    attached.append(f"{dev} {direction} {disp}")
                    slot = slots.get((index.get(dev, 0), _HOOK[direction], active))
                    if slot is None:
                        continue  # no policy for it in the bank in force: un-policed
                    prog = progs.get(slot)
                    units[unit] = mains.get(prog, f"slot {slot}: program {prog} unknown")
        gens = sorted({v.split("/")[0] for v in units.values() if v and v.startswith("g-")})
        for gen in gens:
            for name in PER_GENERATION:
                dump = self._dump(self.root / gen / "maps" / name)
                units[f"bpf {gen} {name}"] = "\n".join(dump) + "\n"
        entries = 0
        set_ids: set[str] = set()
        versions = self._set_versions() if any(banks.values()) else {}
        live_sets = ""
        for fam, m in SET_MAPS.items():
            map_id = banks[fam].get(active)
            if map_id is None:
                continue
            sdir = versions.get(map_id)
            if sdir is None:
                units[f"bpf bank{active} {m.name}"] = f"foreign map id {map_id}"
                continue
            live_sets = sdir
            dump = self._dump(self.root / sdir / m.name)
            units[f"bpf {sdir} {m.name}"] = "\n".join(dump) + "\n"
            entries += len(dump)
            set_ids.update(d[8:24] for d in dump)  # prefixlen, then the 64-bit set id
        counts = {
            "attachments": sum(1 for u in units if u.startswith("tc ")),
            "programs": len({v for u, v in units.items() if u.startswith("tc ")}),
            "sets": len(set_ids),
            "elements": entries,
        }
        raw = {
            "generations": " ".join(g.name for g in self._generations()),
            "active": str(active),
            "attached": "\n".join(sorted(attached)),
            "sets": live_sets,
        }
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
        live = {u: v for u, v in current.units.items() if u.startswith("tc ") and v and "/" in v}
        gens = sorted({v.split("/")[0] for v in live.values()})
        same_objects = old_doc is not None and all(
            previous.get(n) == artifact.files[n] for n in artifact.files if n.startswith("obj/")
        )
        active = int(current.raw.get("active", "0"))
        bank = 1 - active
        stamp = f"{artifact.hash[:12]}-{time.time_ns() // 1_000_000:x}"
        sets = f"s-{stamp}"
        gc = Step(
            "bpf-gc",
            f"empty bank {bank}; unpin what bank {active} does not use",
            args=(str(bank),),
        )
        load_sets = Step(
            "bpf-sets",
            f"load {len(doc['sets'])} sets into set version {sets}",
            args=(sets,),
        )
        flip = Step(
            "bpf-flip",
            f"switch every interface from bank {active} to bank {bank} (one map write)",
            args=(str(bank), str(active)),
        )
        if (
            old_doc is not None
            and same_objects
            and len(gens) == 1
            and _without_sets(old_doc) == _without_sets(doc)
            and current.raw.get("sets")
        ):
            changed = _changed_entries(set_entries(old_doc), set_entries(doc))
            if changed == 0:
                return Plan(
                    self.TARGET, artifact.hash, "none", "same programs and sets", (), current, diff
                )
            wanted = {u: v.split("/")[1] for u, v in live.items()}
            wire = Step(
                "bpf-wire",
                f"wire {len(wanted)} attachments of {gens[0]} and {sets} into bank {bank}",
                json.dumps(wanted, sort_keys=True),
                args=(gens[0], sets, str(bank)),
            )
            desired = json.dumps({"units": live, "sets": sets}, sort_keys=True)
            return Plan(
                self.TARGET,
                artifact.hash,
                "sets",
                f"only set members changed ({changed} entries)",
                (gc, load_sets, wire, flip),
                current,
                diff,
                desired,
            )
        if "dispatch" not in doc or f"obj/{doc['dispatch']}" not in artifact.files:
            raise ArtifactRefused(
                f"{artifact.source}: the eBPF artifact has no dispatcher object; recompile it "
                "with this version of Tortie"
            )
        dispatch = str(doc["dispatch"]).removesuffix(".bpf.o")
        gen = f"g-{stamp}"
        wanted = attachments(doc, tc.devices(netns=self.env.netns))
        attached = _attached(current)
        steps = [
            gc,
            Step(
                "bpf-load",
                f"load {len(doc['objects'])} objects into generation {gen}",
                args=(gen, dispatch),
            ),
            load_sets,
            Step(
                "bpf-wire",
                f"wire {len(wanted)} attachments of {gen} and {sets} into bank {bank}",
                json.dumps(wanted, sort_keys=True),
                args=(gen, sets, str(bank)),
            ),
        ]
        for unit in sorted(wanted):
            _, dev, direction = unit.split()
            if attached.get(f"{dev} {direction}") != dispatch:
                steps.append(
                    Step(
                        "tc-attach",
                        f"attach the dispatcher {dispatch} to {dev} {direction}",
                        args=(dev, direction, dispatch),
                    )
                )
        steps.append(flip)
        leaving = {u.split(" ", 1)[1] for u in current.units if u.startswith("tc ")} | set(attached)
        for key in sorted(leaving - {u.split(" ", 1)[1] for u in wanted}):
            dev, direction = key.split()
            steps.append(Step("tc-detach", f"detach {dev} {direction}", args=(dev, direction)))
        if record is None:
            why = "no trusted record of the kernel state"
        elif not in_sync:
            why = f"the kernel drifted from the last apply ({', '.join(current.differs(record.kernel)[:5])})"
        else:
            why = "the programs changed"
        desired = json.dumps(
            {"units": {u: f"{gen}/{o}" for u, o in wanted.items()}, "sets": sets}, sort_keys=True
        )
        return Plan(self.TARGET, artifact.hash, "full", why, tuple(steps), current, diff, desired)

    def check(self, plan: Plan) -> None:
        """Nothing to validate without loading: only the verifier can say (a dry run reports
        the plan)."""

    # -- applying -----------------------------------------------------------------------------

    def _create_maps(self, defs: Sequence[layout.MapDef]) -> dict[str, str]:
        """The node-wide maps ``defs`` in ``shared/`` (created once, then reused). A set bank
        (map-in-map) takes the (empty, never read) shared set trie before it as its template."""
        self._shared.mkdir(exist_ok=True)
        out = {}
        for m in defs:
            path = self._shared / m.name
            if not path.exists():
                template = out[m.inner.name] if m.inner is not None else None
                load.create_map(str(path), m, template)
            out[m.name] = str(path)
        return out

    def _shared_maps(self) -> dict[str, str]:
        return self._create_maps([m for m in layout.SHARED_MAPS if m.name not in PER_GENERATION])

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
                load.create_map(path, m)
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

    def _load_sets(self, sets: str) -> None:
        """A new set version: both families' set maps, filled with every member."""
        assert self._artifact is not None
        ensure_bpffs(self.root)
        sdir = self.root / sets
        sdir.mkdir()
        entries = set_entries(json.loads(self._artifact.text(MAPS_JSON)))
        for fam, m in SET_MAPS.items():
            load.create_map(str(sdir / m.name), m)
            bpftool.map_update_batch(str(sdir / m.name), sorted(entries[fam].items()))

    def _load_dispatch(self, name: str) -> None:
        """Load and pin the dispatcher ``name`` unless it is pinned already (a half-pinned one
        left by a killed apply is loaded again)."""
        assert self._artifact is not None
        maps = self._create_maps(layout.DISPATCH_MAPS)
        pin = self._shared / DISPATCH_DIR / name
        if all((pin / p).exists() for p in _DISPATCH_PROG.values()):
            return
        shutil.rmtree(pin, ignore_errors=True)
        pin.parent.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bpf-", dir=self.env.state.work_dir()) as tmp:
            obj = Path(tmp) / f"{name}.bpf.o"
            obj.write_bytes(self._artifact.files[f"obj/{name}.bpf.o"])
            bpftool.prog_loadall(str(obj), str(pin), maps)

    def _clear_bank(self, bank: int) -> None:
        """Empty ``bank``: its slots, its set maps, and every program slot the other bank does
        not use."""
        _, slots, progs, banks = self._banks()
        keep = {slot for (_, _, b), slot in slots.items() if b != bank}
        bpftool.map_delete_batch(
            str(self._shared / layout.SLOTS.name),
            [layout.slot_key(i, h, b) for (i, h, b) in sorted(slots) if b == bank],
        )
        bpftool.map_delete_batch(
            str(self._shared / layout.PROGS.name),
            [s.to_bytes(4, "little") for s in sorted(progs) if s not in keep],
        )
        for fam, m in SET_BANKS.items():
            if bank in banks[fam]:
                bpftool.map_delete_batch(str(self._shared / m.name), [bank.to_bytes(4, "little")])

    def _gc(self, bank: int) -> None:
        if not (self._shared / layout.ACTIVE.name).exists():
            return
        self._clear_bank(bank)
        mains = self._mains()
        _, slots, progs, banks = self._banks()
        keep = {mains.get(progs.get(s, -1), "").split("/")[0] for s in slots.values()}
        versions = self._set_versions()
        keep |= {versions.get(i, "") for fam in banks.values() for i in fam.values()}
        for gen in self._generations():
            if gen.name not in keep:
                shutil.rmtree(gen, ignore_errors=True)

    def _wire(self, gen: str, sets: str, bank: int, wanted: Mapping[str, str]) -> None:
        """Into ``bank`` (not in force): the set maps of ``sets``, the entry programs of
        ``gen`` in free ``tortie_progs`` slots, then the interfaces' slots."""
        for fam, m in SET_BANKS.items():
            bpftool.map_of_maps_update(
                str(self._shared / m.name), bank, str(self.root / sets / SET_MAPS[fam].name)
            )
        _, slots, _, _ = self._banks()
        used = {slot for (_, _, b), slot in slots.items() if b != bank}
        free = (i for i in range(layout.PROGS.max_entries) if i not in used)
        objects = sorted(set(wanted.values()))
        if len(objects) > layout.PROGS.max_entries - len(used):
            raise RuntimeError(f"{len(objects)} programs do not fit in {layout.PROGS.name}")
        slot_of = {obj: next(free) for obj in objects}
        bpftool.prog_array_update_batch(
            str(self._shared / layout.PROGS.name),
            [(slot_of[o], str(self.root / gen / "objs" / o / MAIN)) for o in objects],
        )
        index = tc.ifindexes(netns=self.env.netns)
        entries = []
        for unit, obj in sorted(wanted.items()):
            _, dev, direction = unit.split()
            if dev not in index:
                raise RuntimeError(f"interface {dev} disappeared during the apply")
            key = layout.slot_key(index[dev], _HOOK[direction], bank)
            entries.append((key, slot_of[obj].to_bytes(4, "little")))
        bpftool.map_update_batch(str(self._shared / layout.SLOTS.name), entries)

    def _flip(self, bank: int) -> None:
        bpftool.map_update_batch(
            str(self._shared / layout.ACTIVE.name), [(bytes(4), bank.to_bytes(4, "little"))]
        )

    def _dispatcher(self, name: str, direction: str) -> Path:
        return self._shared / DISPATCH_DIR / name / _DISPATCH_PROG[direction]

    def _attach(self, dev: str, direction: str, pinned: str) -> None:
        tc.ensure_clsact(dev, netns=self.env.netns)
        tc.attach(dev, direction, pinned, netns=self.env.netns)

    def run(self, step: Step) -> None:
        if step.kind == "bpf-gc":
            self._gc(int(step.args[0]))
        elif step.kind == "bpf-load":
            self._load(step.args[0])
            self._load_dispatch(step.args[1])
        elif step.kind == "bpf-sets":
            self._load_sets(step.args[0])
        elif step.kind == "bpf-wire":
            gen, sets, bank = step.args
            self._wire(gen, sets, int(bank), json.loads(step.payload))
        elif step.kind == "tc-attach":
            dev, direction, name = step.args
            self._attach(dev, direction, str(self._dispatcher(name, direction)))
        elif step.kind == "bpf-flip":
            self._flip(int(step.args[0]))
        elif step.kind == "tc-detach":
            tc.detach(step.args[0], step.args[1], netns=self.env.netns)
        else:
            raise ValueError(f"unknown step {step.kind!r}")

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        if plan.mode not in ("full", "sets"):
            return []
        want = json.loads(plan.desired)
        problems = [
            f"{u}: {after.units.get(u)!r} instead of {v}"
            for u, v in sorted(want["units"].items())
            if after.units.get(u) != v
        ]
        if after.raw.get("sets") != want["sets"]:
            problems.append(f"sets in force: {after.raw.get('sets')!r} instead of {want['sets']}")
        return problems

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        before = _attached(plan.current)
        for step in reversed(attempted):
            if step.kind == "bpf-flip":
                self._flip(int(step.args[1]))
            elif step.kind in ("tc-attach", "tc-detach"):
                dev, direction = step.args[0], step.args[1]
                old = before.get(f"{dev} {direction}")
                pinned = self._dispatcher(old, direction) if old else None
                if pinned is not None and pinned.exists():
                    self._attach(dev, direction, str(pinned))
                elif old is None and f"tc {dev} {direction}" not in plan.current.units:
                    try:
                        tc.detach(dev, direction, netns=self.env.netns)
                    except tc.TcError as e:
                        logger.debug("nothing to detach on %s %s: %s", dev, direction, e)
            elif step.kind == "bpf-wire":
                self._clear_bank(int(step.args[2]))
            elif step.kind in ("bpf-load", "bpf-sets"):
                shutil.rmtree(self.root / step.args[0], ignore_errors=True)

    def remove(self) -> None:
        current = self.read()
        keys = {u.split(" ", 1)[1] for u in current.units if u.startswith("tc ")}
        for key in sorted(keys | set(_attached(current))):
            dev, direction = key.split()
            tc.detach(dev, direction, netns=self.env.netns)
        for gen in self._generations():
            shutil.rmtree(gen, ignore_errors=True)
        shutil.rmtree(self.root / "shared", ignore_errors=True)


def _attached(state: KernelState) -> dict[str, str]:
    """``"dev direction"`` -> dispatcher name, for every interface our dispatcher is on."""
    out = {}
    for line in state.raw.get("attached", "").splitlines():
        dev, direction, name = line.split()
        out[f"{dev} {direction}"] = name
    return out


def _u32_dump(path: Path) -> dict[int, int]:
    """A map with 4-byte keys and values (array, prog array, array of maps) as numbers."""
    return {
        int.from_bytes(_hex(e["key"]), "little"): int.from_bytes(_hex(e["value"]), "little")
        for e in bpftool.map_dump(str(path))
    }


def _changed_entries(
    old: Mapping[int, Mapping[bytes, bytes]], new: Mapping[int, Mapping[bytes, bytes]]
) -> int:
    return sum(
        sum(1 for k, v in new[f].items() if old[f].get(k) != v)
        + sum(1 for k in old[f] if k not in new[f])
        for f in (4, 6)
    )
