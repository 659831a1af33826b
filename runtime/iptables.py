"""Loading an iptables artifact: a new rule *generation* built beside the live one, then one
``ipset swap`` that makes it live for every table of both families at once.

The kernel has no operation that replaces all of an iptables node (a table per family, an ipset
per selector) at once, so the runtime keeps two generations, ``a`` and ``b``, of the artifact's
chains and sets under their own names, reached through static dispatch chains that follow two
``list:set`` switch sets (``compiler.targets.iptables.generations`` has the layout and why it is
atomic). An apply:

1. ``ipset restore``: the static sets where missing, then the inactive generation's sets
   (only those whose contents differ; nothing references them yet);
2. ``iptables-restore --noflush`` per table and family: the inactive generation's chains, the
   dispatch chains and the hooks (the live path is unchanged: the new chains are not reached);
3. stale sets of the inactive generation destroyed (no chain references them any more);
4. ``ipset swap tt-on-a tt-on-b``: the new generation is live, in every table and family.

A ``kill -9`` anywhere before step 4 leaves the old ruleset live and whole, anywhere after it the
new one: the node never runs a mix. The previous generation stays in the kernel, unreachable;
the next apply overwrites it, and a rollback after the switch is a swap back.

A set-only update (the agent's, or any apply whose rules files equal the applied ones) is the
same generation switch: the inactive generation's sets are refilled and, where its chains do not
already equal the live ones (the first time after a rule change), its tables are rebuilt too.

The read-back (units for drift and the kill tests) is the *live* generation with its names
normalised (``ta-…`` / ``tb-…`` -> ``tg-…``), plus the static part (hooks with their position,
dispatch chains, the switch and match-everything sets), so the same artifact reads back the same
whichever generation holds it. Scripts for ``ipset`` go through ``ipset -file PATH restore`` (a
file, never a pipe: a truncated ``add`` line could still parse).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import ClassVar

from compiler.targets.iptables.apply import parse_save, plan_iptables
from compiler.targets.iptables.generations import (
    ALL_SET,
    NORMAL,
    STATIC_SETS,
    SWITCH_SET,
    bootstrap_script,
    gen_ipset_plan,
    gen_restore,
    ipset_to_gen,
    is_gen_chain,
    is_gen_set,
    live_generation,
    normalize,
    other,
    rename_chain,
    rename_set,
    switch_members,
    switch_ready,
)
from compiler.targets.iptables.names import HOOK_COMMENT, is_own_chain, is_own_set, temp_set_name
from compiler.targets.iptables.render import IPSET_FILE, RULES_FILE
from compiler.tools import ipset, iptables
from runtime.plan import Env, KernelState, LoadedArtifact, Plan, Step, unified_diff
from runtime.state import Record

__all__ = ["IptablesDataplane", "detect_backend"]

logger = logging.getLogger(__name__)

TABLES = ("raw", "mangle", "filter")
_HOOK = f'--comment "{HOOK_COMMENT}"'
_KEEP_CREATE = ("family", "maxelem", "timeout", "netmask", "size")
_TEMP = re.compile(r"t[tab][46]t([A-Za-z]:\S*|-host|-all)")


def detect_backend() -> str:
    """The backend ``iptables`` points at on this machine (Debian's alternatives)."""
    path = shutil.which("iptables")
    real = os.path.realpath(path) if path else ""
    return "legacy" if "legacy" in os.path.basename(real) else "nft"


def _is_temp(name: str) -> bool:
    return _TEMP.fullmatch(name) is not None or name.startswith("tt-ton-")


def _is_static_chain(name: str) -> bool:
    return is_own_chain(name) and not is_gen_chain(name)


# -- reading -----------------------------------------------------------------------------------


def table_units(family: int, save_text: str, live: str = "a") -> dict[str, str | None]:
    """Per table of one family: the static dispatch chains, the live generation's chains with
    normalised names (rules grouped by chain, chains sorted: creation order does not matter),
    and the hooks with their position. The inactive generation is not part of it."""
    saved = parse_save(save_text)
    out: dict[str, str | None] = {}
    for table in TABLES:
        t = saved.get(table)
        lines: list[str] = []
        if t is not None:
            names: dict[str, str] = {}
            for c in t.chains:
                if _is_static_chain(c):
                    names[c] = c
                elif is_gen_chain(c, live):
                    names[c] = rename_chain(c, live, NORMAL)
            rules: dict[str, list[str]] = {}
            hooks: list[str] = []
            position: dict[str, int] = {}
            for rule in t.rules:
                chain = rule.split()[1]
                position[chain] = position.get(chain, 0) + 1
                if chain in names:
                    text = rule if _is_static_chain(chain) else normalize(rule, live)
                    rules.setdefault(names[chain], []).append(text)
                elif not is_own_chain(chain) and _HOOK in rule:
                    hooks.append(f"[{chain} #{position[chain]}] {rule}")
            order = sorted(names.values())
            lines += [f":{c}" for c in order]
            lines += [r for c in order for r in rules.get(c, [])]
            lines += hooks
        out[f"ip{family} {table}"] = "\n".join(lines) + "\n" if lines else None
    return out


def set_units(save_text: str, live: str = "a") -> dict[str, str | None]:
    """One unit per set of the live generation (normalised name), per static set and per other
    own set: type, family, maxelem and sorted members. The switch sets are one unit, relative
    to the live generation ("live" and "idle" members)."""
    creates: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    unit_of: dict[str, str | None] = {}  # kernel name -> unit name (None: not part of a unit)

    def classify(name: str) -> str | None:
        if not is_own_set(name) or _is_temp(name) or name in SWITCH_SET.values():
            return None
        if is_gen_set(name) and not is_gen_set(name, live):
            return None  # the inactive generation: nothing reaches it
        return rename_set(name, live, NORMAL)

    for line in save_text.splitlines():
        verb, _, rest = line.partition(" ")
        name, _, tail = rest.partition(" ")
        if not tail or verb not in ("create", "add"):
            continue
        if name not in unit_of:
            unit_of[name] = classify(name)
        unit = unit_of[name]
        if unit is None:
            continue
        if verb == "create":
            words = tail.split()
            opts = [
                f"{k} {v}"
                for k, v in zip(words[1::2], words[2::2], strict=False)
                if k in _KEEP_CREATE
            ]
            creates[unit] = " ".join(["create", unit, words[0], *opts])
            members.setdefault(unit, [])
        else:
            members.setdefault(unit, []).append(tail)
    out: dict[str, str | None] = {
        f"ipset {name}": "\n".join([creates.get(name, f"create {name} ?"), *sorted(members[name])])
        + "\n"
        for name in sorted(members)
    }
    switch = switch_members(save_text)
    if switch:
        idle = other(live)
        out["ipset tt-on"] = (
            f"live {SWITCH_SET[live] in switch}: {' '.join(sorted(switch.get(SWITCH_SET[live], [])))}\n"
            f"idle {SWITCH_SET[idle] in switch}: {' '.join(sorted(switch.get(SWITCH_SET[idle], [])))}\n"
        )
    return out


def gen_tables(family: int, save_text: str, gen: str) -> dict[str, str]:
    """Generation ``gen``'s chains and rules per table, normalised (to compare generations)."""
    out = {}
    for table, t in parse_save(save_text).items():
        chains = sorted(rename_chain(c, gen, NORMAL) for c in t.chains if is_gen_chain(c, gen))
        rules: dict[str, list[str]] = {}
        for rule in t.rules:
            chain = rule.split()[1]
            if is_gen_chain(chain, gen):
                rules.setdefault(rename_chain(chain, gen, NORMAL), []).append(normalize(rule, gen))
        out[f"ip{family} {table}"] = "\n".join(
            [*chains, *(r for c in chains for r in rules.get(c, []))]
        )
    return out


def _counts(units: Mapping[str, str | None]) -> dict[str, int]:
    out = {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
    for name, text in units.items():
        if text is None or name == "ipset tt-on":
            continue
        lines = text.splitlines()
        if name.startswith("ipset "):
            out["sets"] += 1
            out["elements"] += len(lines) - 1
        else:
            out["chains"] += sum(1 for x in lines if x.startswith(":"))
            out["rules"] += sum(1 for x in lines if not x.startswith(":"))
    return out


def _sections(text: str) -> list[tuple[str, str]]:
    """Restore input -> [(table, "*table ... COMMIT")], one per table."""
    out: list[tuple[str, str]] = []
    cur: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line == "COMMIT":
                out.append((cur[0][1:].strip(), "\n".join(cur) + "\n"))
                cur = None
    return out


def snapshot_restore(save_text: str) -> str:
    """Restore input that recreates the own chains and hooks of an ``iptables-save`` text."""
    saved = parse_save(save_text)
    out: list[str] = []
    for table in TABLES:
        t = saved.get(table)
        if t is None:
            continue
        own = [c for c in t.chains if is_own_chain(c)]
        hooks: list[str] = []
        first: dict[str, str] = {}
        for rule in t.rules:
            chain = rule.split()[1]
            first.setdefault(chain, rule)
            if not is_own_chain(chain) and _HOOK in rule:
                rest = rule.split(" ", 2)[2]
                hooks.append(f"-I {chain} 1 {rest}" if first[chain] == rule else rule)
        if own or hooks:
            out += [f"*{table}", *(f":{c} - [0:0]" for c in own)]
            out += [r for r in t.rules if is_own_chain(r.split()[1])] + hooks + ["COMMIT"]
    return "\n".join(out) + "\n"


def refill_script(save_text: str, names: Sequence[str]) -> str:
    """An ipset script that puts ``names`` back to their contents in ``save_text``."""
    lines: list[str] = []
    creates = {
        w[1]: w
        for w in (x.split() for x in save_text.splitlines())
        if len(w) > 2 and w[0] == "create"
    }
    for name in names:
        words = creates[name]
        tmp = temp_set_name(name)
        opts = " ".join(
            f"{k} {v}" for k, v in zip(words[3::2], words[4::2], strict=False) if k in _KEEP_CREATE
        )
        lines += [
            f"create {name} {words[2]} {opts} -exist",
            f"create {tmp} {words[2]} {opts} -exist",
            f"flush {tmp}",
        ]
        lines += [
            f"add {tmp} {x.split(' ', 2)[2]}"
            for x in save_text.splitlines()
            if x.startswith(f"add {name} ")
        ]
        lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
    return "\n".join(lines) + "\n"


def _destroy_order(names: Sequence[str]) -> list[str]:
    """Switch sets (``list:set``) before the sets they hold, else sorted."""
    return sorted(names, key=lambda n: (n not in SWITCH_SET.values(), n))


# -- the dataplane -----------------------------------------------------------------------------


class IptablesDataplane:
    TARGET: ClassVar[str] = "iptables"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.backend = env.iptables_backend or detect_backend()

    def _save(self, family: int) -> str:
        return iptables.save(family=family, backend=self.backend, netns=self.env.netns)

    def read(self) -> KernelState:
        raw = {f"ip{f}": self._save(f) for f in (4, 6)}
        raw["ipset"] = ipset.save(netns=self.env.netns)
        live = live_generation(raw["ipset"])
        units: dict[str, str | None] = {}
        for f in (4, 6):
            units.update(table_units(f, raw[f"ip{f}"], live))
        units.update(set_units(raw["ipset"], live))
        return KernelState(units, _counts(units), raw)

    def plan(
        self,
        current: KernelState,
        artifact: LoadedArtifact,
        record: Record | None,
        previous: Mapping[str, bytes],
        set_update: str | None = None,
    ) -> Plan:
        in_sync = record is not None and not current.differs(record.kernel)
        if in_sync and record is not None and record.artifact == artifact.hash:
            return Plan(self.TARGET, artifact.hash, "none", "already applied", (), current)
        names = (IPSET_FILE, RULES_FILE[4], RULES_FILE[6])
        new = {n: artifact.text(n) for n in names}
        if in_sync:
            diff = "".join(
                unified_diff(previous.get(n, b"").decode(), new[n], f"applied/{n}", f"new/{n}")
                for n in names
            )
        else:
            old = "".join(t or "" for _, t in sorted(current.units.items()))
            diff = unified_diff(old, "".join(new[n] for n in names), "kernel", "new")
        if in_sync and set_update == "":
            return Plan(
                self.TARGET, artifact.hash, "none", "no set member changed", (), current, diff
            )
        # Rules as applied and the live generation as recorded: the inactive generation's
        # tables need no rebuild where they already equal the live ones.
        same_rules = in_sync and all(
            previous.get(RULES_FILE[f], b"").decode() == new[RULES_FILE[f]] for f in (4, 6)
        )
        raw_sets = current.raw.get("ipset", "")
        live = live_generation(raw_sets)
        gen = other(live)
        fills, wanted = gen_ipset_plan(ipset_to_gen(new[IPSET_FILE], gen), raw_sets)
        steps = [
            Step(
                "ipset",
                f"generation {gen}: create the switch sets if missing, fill the sets that differ",
                "\n".join([*bootstrap_script(raw_sets), *fills]) + "\n",
            )
        ]
        for family in (4, 6):
            saved = current.raw[f"ip{family}"]
            text = gen_restore(new[RULES_FILE[family]], saved, gen)
            ready = gen_tables(family, saved, gen) if same_rules else {}
            live_tables = gen_tables(family, saved, live) if same_rules else {}
            for table, section in _sections(text):
                unit = f"ip{family} {table}"
                if same_rules and ready.get(unit, "") == live_tables.get(unit, ""):
                    continue  # already holds the live generation's rules
                what = f"iptables-restore --noflush: IPv{family} {table} (generation {gen})"
                steps.append(Step("iptables", what, section, (str(family),)))
        existing = _set_names(raw_sets)
        stale = [
            n
            for n in existing
            if is_own_set(n)
            and n not in STATIC_SETS
            and n not in wanted
            and not is_gen_set(n, live)
            and not _is_temp(n)
        ]
        if stale:
            steps.append(
                Step("ipset-destroy", f"destroy {len(stale)} stale set(s)", "\n".join(stale))
            )
        steps.append(
            Step("switch", f"ipset swap: generation {gen} live in every table and family", gen)
        )
        if record is None:
            why = "no trusted record of the kernel state"
        elif not in_sync:
            why = f"the kernel drifted from the last apply ({', '.join(current.differs(record.kernel))})"
        elif same_rules:
            why = "only set members changed"
        else:
            why = "the rules changed"
        mode = "sets" if same_rules else "full"
        desired = json.dumps({"generation": gen, "files": new}, sort_keys=True)
        return Plan(self.TARGET, artifact.hash, mode, why, tuple(steps), current, diff, desired)

    def check(self, plan: Plan) -> None:
        """Load the whole artifact into a throwaway network namespace (sets, then rules with
        ``--test``); the node's own namespace is not touched."""
        if not plan.desired:
            return
        files = json.loads(plan.desired)["files"]
        name = f"tortie-check-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        try:
            self._ipset_file(files[IPSET_FILE], netns=name)
            for family in (4, 6):
                iptables.restore(
                    files[RULES_FILE[family]],
                    family=family,
                    backend=self.backend,
                    test=True,
                    netns=name,
                )
        finally:
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True, timeout=30
            )

    def _ipset_file(self, script: str, netns: str | None) -> None:
        fd, path = tempfile.mkstemp(
            prefix="ipset-", suffix=".restore", dir=self.env.state.work_dir()
        )
        try:
            with os.fdopen(fd, "w") as f:
                f.write(script)
            ipset.run(["-file", path, "restore"], netns=netns)
        finally:
            os.unlink(path)

    def run(self, step: Step) -> None:
        if step.kind == "ipset":
            self._ipset_file(step.payload, self.env.netns)
        elif step.kind == "iptables":
            iptables.restore(
                step.payload, family=int(step.args[0]), backend=self.backend, netns=self.env.netns
            )
        elif step.kind == "ipset-destroy":
            self._destroy(step.payload.split())
        elif step.kind == "switch":
            self._switch(step.payload)
        else:
            raise ValueError(f"unknown step {step.kind!r}")

    def _switch_state(self) -> str:
        """``ipset save`` of the switch and match-everything sets only."""
        out = []
        for name in (*SWITCH_SET.values(), *ALL_SET.values()):
            with contextlib.suppress(ipset.IpsetError):  # absent: switch_ready says no
                out.append(ipset.save_set(name, netns=self.env.netns))
        return "".join(out)

    def _switch(self, gen: str) -> None:
        """Make ``gen`` live with one ``ipset swap`` (nothing when it is live already)."""
        state = self._switch_state()
        if live_generation(state) == gen:
            return
        if not switch_ready(state):
            raise RuntimeError(
                "the switch sets do not hold one live and one empty generation; not swapping"
            )
        ipset.swap(SWITCH_SET["a"], SWITCH_SET["b"], netns=self.env.netns)

    def _destroy(self, names: Sequence[str]) -> None:
        for name in _destroy_order(names):
            try:
                ipset.destroy([name], netns=self.env.netns)
            except ipset.IpsetError as e:  # still referenced by someone else's rule
                logger.warning("could not destroy stale set %s: %s", name, e.stderr.strip())

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        if plan.mode not in ("full", "sets") or not plan.desired:
            return []
        desired = json.loads(plan.desired)
        files, gen = desired["files"], desired["generation"]
        problems = []
        if live_generation(after.raw.get("ipset", "")) != gen:
            problems.append(f"generation {gen} is not live")
        want_sets = {
            rename_set(line.split()[2], "t", NORMAL)
            for line in files[IPSET_FILE].splitlines()
            if line.startswith("swap ")
        }
        have_sets = {
            u.split(" ", 1)[1] for u, t in after.units.items() if u.startswith("ipset ") and t
        }
        problems += [f"set {n} is missing" for n in sorted(want_sets - have_sets)]
        chains = {
            x
            for u, t in after.units.items()
            if u.startswith("ip") and not u.startswith("ipset") and t
            for x in t.splitlines()
            if x.startswith(":")
        }
        for line in (files[RULES_FILE[4]] + files[RULES_FILE[6]]).splitlines():
            if line.startswith(":tt-"):
                name = rename_chain(line.split()[0][1:], "t", NORMAL)
                if f":{name}" not in chains:
                    problems.append(f"chain {line.split()[0][1:]} is missing")
        return sorted(set(problems))

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        old = plan.current
        if any(s.kind == "switch" for s in attempted):
            # The old generation was never touched: making it live again is the whole rollback.
            self._switch(live_generation(old.raw.get("ipset", "")))
            if not self.read().differs(old.units):
                return
        # Something else changed too (the static part, a hand-made change): put back every own
        # chain and set as they were.
        old_sets = [n for n in _set_names(old.raw.get("ipset", "")) if is_own_set(n)]
        ordered = sorted(old_sets, key=lambda n: (n in SWITCH_SET.values(), n))
        if ordered:
            self._ipset_file(refill_script(old.raw["ipset"], ordered), self.env.netns)
        for family in (4, 6):
            text = plan_iptables(snapshot_restore(old.raw[f"ip{family}"]), self._save(family))
            for _, section in _sections(text):
                iptables.restore(section, family=family, backend=self.backend, netns=self.env.netns)
        now = _set_names(ipset.save(netns=self.env.netns))
        self._destroy([n for n in now if is_own_set(n) and n not in old_sets])

    def remove(self) -> None:
        for family in (4, 6):
            for _, section in _sections(plan_iptables("", self._save(family))):
                iptables.restore(section, family=family, backend=self.backend, netns=self.env.netns)
        names = [n for n in _set_names(ipset.save(netns=self.env.netns)) if is_own_set(n)]
        self._destroy(names)


def _set_names(save_text: str) -> list[str]:
    return [
        w[1] for w in (x.split() for x in save_text.splitlines()) if len(w) > 1 and w[0] == "create"
    ]
