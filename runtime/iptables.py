"""Loading an iptables artifact: ipset create-temp-and-swap, then one ``iptables-restore
--noflush`` per table and family, then stale sets destroyed.

Atomic units, and what a ``kill -9`` can leave:

* each **ipset** is refilled through a temporary set and ``swap``: a rule sees the old members
  or the new ones, never a half-filled set (``ipset restore`` itself is not a transaction, so
  between two sets the kernel may hold set A new and set B old);
* each **table of each family** (raw, mangle, filter × IPv4, IPv6) is one ``iptables-restore``
  run holding exactly one ``COMMIT``: the kernel replaces that table in one step. A truncated
  input (a killed writer) has no ``COMMIT`` and changes nothing.

So the kernel always holds, per unit, the old or the new version; across units a killed apply
can leave a mix, which ``status`` reports (the journal) and the next apply replaces. The
planning of hooks, stale chains and stale sets is the target's (``compiler.targets.iptables.
apply``): this module adds the per-table steps, the read-back, drift units and rollback.

Scripts for ``ipset`` go through ``ipset -file PATH restore`` (a file, never a pipe: a
truncated ``add`` line could still parse).
"""

from __future__ import annotations

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

from compiler.targets.iptables.apply import (
    parse_save,
    plan_ipset,
    plan_iptables,
    planned_sets,
    stale_sets,
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
_BUILTIN = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_KEEP_CREATE = ("family", "maxelem", "timeout", "netmask")


def detect_backend() -> str:
    """The backend ``iptables`` points at on this machine (Debian's alternatives)."""
    path = shutil.which("iptables")
    real = os.path.realpath(path) if path else ""
    return "legacy" if "legacy" in os.path.basename(real) else "nft"


def _is_temp(name: str) -> bool:
    return re.fullmatch(r"tt[46]t.*", name) is not None


# -- reading -----------------------------------------------------------------------------------


def table_units(family: int, save_text: str) -> dict[str, str | None]:
    """Own chains, their rules and the hooks (with their position) per table of one family."""
    saved = parse_save(save_text)
    out: dict[str, str | None] = {}
    for table in TABLES:
        t = saved.get(table)
        lines: list[str] = []
        if t is not None:
            lines += [f":{c}" for c in sorted(c for c in t.chains if is_own_chain(c))]
            position: dict[str, int] = {}
            for rule in t.rules:
                chain = rule.split()[1]
                position[chain] = position.get(chain, 0) + 1
                if is_own_chain(chain):
                    lines.append(rule)
                elif _HOOK in rule:
                    lines.append(f"[{chain} #{position[chain]}] {rule}")
        out[f"ip{family} {table}"] = "\n".join(lines) + "\n" if lines else None
    return out


def set_units(save_text: str) -> dict[str, str | None]:
    """One unit per own (non-temporary) ipset: its type, family, maxelem and sorted members."""
    creates: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for line in save_text.splitlines():
        words = line.split()
        if len(words) < 3 or not is_own_set(words[1]) or _is_temp(words[1]):
            continue
        if words[0] == "create":
            opts = [
                f"{k} {v}"
                for k, v in zip(words[3::2], words[4::2], strict=False)
                if k in _KEEP_CREATE
            ]
            creates[words[1]] = " ".join(["create", words[1], words[2], *opts])
            members.setdefault(words[1], [])
        elif words[0] == "add":
            members.setdefault(words[1], []).append(" ".join(words[2:]))
    return {
        f"ipset {name}": "\n".join([creates.get(name, f"create {name} ?"), *sorted(members[name])])
        + "\n"
        for name in sorted(members)
    }


def _counts(units: Mapping[str, str | None]) -> dict[str, int]:
    out = {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
    for name, text in units.items():
        if text is None:
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
        units: dict[str, str | None] = {}
        for f in (4, 6):
            units.update(table_units(f, raw[f"ip{f}"]))
        units.update(set_units(raw["ipset"]))
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
        if in_sync and set_update is not None:
            if not set_update:
                return Plan(
                    self.TARGET, artifact.hash, "none", "no set member changed", (), current, diff
                )
            step = Step("ipset", "refill the changed sets (each swapped atomically)", set_update)
            return Plan(
                self.TARGET,
                artifact.hash,
                "sets",
                "only set members changed",
                (step,),
                current,
                diff,
            )
        existing = {u.split(" ", 1)[1] for u in current.units if u.startswith("ipset ")}
        existing |= {n for n in _set_names(current.raw.get("ipset", "")) if _is_temp(n)}
        steps = [
            Step(
                "ipset",
                "create and refill sets (each swapped atomically)",
                plan_ipset(new[IPSET_FILE], existing),
            )
        ]
        for family in (4, 6):
            text = plan_iptables(new[RULES_FILE[family]], current.raw[f"ip{family}"])
            for table, section in _sections(text):
                what = f"iptables-restore --noflush: IPv{family} {table}"
                steps.append(Step("iptables", what, section, (str(family),)))
        stale = stale_sets(
            {u.split(" ", 1)[1] for u in current.units if u.startswith("ipset ")},
            planned_sets(new[IPSET_FILE]),
        )
        if stale:
            steps.append(
                Step("ipset-destroy", f"destroy {len(stale)} stale set(s)", "\n".join(stale))
            )
        if record is None:
            why = "no trusted record of the kernel state"
        elif not in_sync:
            why = f"the kernel drifted from the last apply ({', '.join(current.differs(record.kernel))})"
        else:
            why = "the rules changed"
        desired = json.dumps(new, sort_keys=True)
        return Plan(self.TARGET, artifact.hash, "full", why, tuple(steps), current, diff, desired)

    def check(self, plan: Plan) -> None:
        """Load the whole artifact into a throwaway network namespace (sets, then rules with
        ``--test``); the node's own namespace is not touched."""
        if not plan.desired:
            return
        files = json.loads(plan.desired)
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
        else:
            raise ValueError(f"unknown step {step.kind!r}")

    def _destroy(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                ipset.destroy([name], netns=self.env.netns)
            except ipset.IpsetError as e:  # still referenced by someone else's rule
                logger.warning("could not destroy stale set %s: %s", name, e.stderr.strip())

    def verify(self, plan: Plan, after: KernelState) -> list[str]:
        if plan.mode != "full":
            return []
        problems = []
        files = json.loads(plan.desired)
        want_sets = planned_sets(files[IPSET_FILE])
        have_sets = {
            u.split(" ", 1)[1] for u, t in after.units.items() if u.startswith("ipset ") and t
        }
        problems += [f"set {n} is missing" for n in sorted(want_sets - have_sets)]
        for line in (files[RULES_FILE[4]] + files[RULES_FILE[6]]).splitlines():
            if line.startswith(":tt-") and not any(
                t and f"\n{line.split()[0]}\n" in f"\n{t}"
                for u, t in after.units.items()
                if u.startswith("ip")
            ):
                problems.append(f"chain {line.split()[0][1:]} is missing")
        return sorted(set(problems))

    def rollback(self, plan: Plan, attempted: Sequence[Step]) -> None:
        old = plan.current
        old_sets = [u.split(" ", 1)[1] for u in old.units if u.startswith("ipset ")]
        if old_sets:
            self._ipset_file(refill_script(old.raw["ipset"], old_sets), self.env.netns)
        for family in (4, 6):
            text = plan_iptables(snapshot_restore(old.raw[f"ip{family}"]), self._save(family))
            for _, section in _sections(text):
                iptables.restore(section, family=family, backend=self.backend, netns=self.env.netns)
        now = set_units(ipset.save(netns=self.env.netns))
        self._destroy(sorted(u.split(" ", 1)[1] for u in now if u.split(" ", 1)[1] not in old_sets))

    def remove(self) -> None:
        for family in (4, 6):
            for _, section in _sections(plan_iptables("", self._save(family))):
                iptables.restore(section, family=family, backend=self.backend, netns=self.env.netns)
        names = [n for n in _set_names(ipset.save(netns=self.env.netns)) if is_own_set(n)]
        self._destroy(sorted(names))


def _set_names(save_text: str) -> list[str]:
    return [
        w[1] for w in (x.split() for x in save_text.splitlines()) if len(w) > 1 and w[0] == "create"
    ]
