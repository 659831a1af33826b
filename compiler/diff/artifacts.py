"""``tortie diff --artifacts``: what a change does to one node's rendered artifact, structurally.

Both trees are compiled for the node with the target (the normal pipeline); each file is parsed
into **objects** — nft chains, sets and maps; iptables chains per table; ipsets; eBPF set maps,
attachments and programs — each with a **body** (its rules or definition, in order) and its
**elements** (set members, map entries). The diff lists objects added and removed, and for the
others the body lines added and removed (order-aware) and the elements added and removed.
:attr:`ArtifactDiff.only_elements` says when nothing but set elements changed: the kind of
change Tortie applies as data, without rewriting a rule (DESIGN.md, "Set contents are data").

Comments are not compared (a ``#`` line); rule comments that are part of a rule are. Files the
parsers do not know are compared whole, by hash.

>>> objs = parse_nft("table inet t {\\n set s {\\n  type ipv4_addr\\n  elements = { 10.0.0.1, 10.0.0.2 }\\n }\\n}\\n")
>>> sorted(objs["set s"].elements)
['10.0.0.1', '10.0.0.2']
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import ResourceSet
from compiler.pipeline import compile_program
from compiler.targets import get_target

__all__ = [
    "ArtifactDiff",
    "Obj",
    "ObjDiff",
    "artifact_change",
    "diff_artifacts",
    "parse_files",
    "parse_nft",
]


@dataclass(frozen=True)
class Obj:
    kind: str  # chain | set | map | ipset | program | attachment | config | file | table
    name: str
    body: tuple[str, ...] = ()
    elements: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ObjDiff:
    kind: str
    name: str
    change: str  # added | removed | changed
    body_added: tuple[str, ...] = ()
    body_removed: tuple[str, ...] = ()
    elements_added: tuple[str, ...] = ()
    elements_removed: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "change": self.change,
            "body_added": list(self.body_added),
            "body_removed": list(self.body_removed),
            "elements_added": list(self.elements_added),
            "elements_removed": list(self.elements_removed),
        }


@dataclass
class ArtifactDiff:
    target: str
    node: str
    objects: list[ObjDiff] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.objects)

    @property
    def only_elements(self) -> bool:
        """Something changed, and only set elements / map entries did."""
        return self.changed and all(
            o.change == "changed" and not o.body_added and not o.body_removed for o in self.objects
        )

    def counts(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0, "elements_added": 0, "elements_removed": 0}
        for o in self.objects:
            out[o.change] += 1
            out["elements_added"] += len(o.elements_added)
            out["elements_removed"] += len(o.elements_removed)
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "node": self.node,
            "only_elements": self.only_elements,
            "counts": self.counts(),
            "objects": [o.as_dict() for o in self.objects],
        }


# -- parsers ------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _braces(line: str) -> int:
    bare = _QUOTED.sub('""', line)
    return bare.count("{") - bare.count("}")


def parse_nft(text: str) -> dict[str, Obj]:
    """``nft -f`` script -> chains, sets and maps (keyed "chain NAME", "set NAME", "map NAME";
    table-level statements under "table")."""
    objs: dict[str, Obj] = {}
    table: list[str] = []
    current: tuple[str, str] | None = None
    body: list[str] = []
    elements: set[str] = set()
    collecting: list[str] | None = None  # an elements = { ... } spanning lines
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if collecting is not None:
            collecting.append(line)
            if _braces(" ".join(collecting)) <= 0:
                elements.update(_elements(" ".join(collecting)))
                collecting = None
            continue
        if current is None and depth == 1:
            m = re.match(r"(chain|set|map)\s+(\S+)\s*\{$", line)
            if m:
                current, body, elements = (m.group(1), m.group(2)), [], set()
                depth += 1
                continue
        if current is not None and depth == 2 and line.startswith("elements"):
            if _braces(line) <= 0:
                elements.update(_elements(line))
            else:
                collecting = [line]
            continue
        delta = _braces(line)
        if current is not None and depth + delta == 1 and line == "}":
            kind, name = current
            objs[f"{kind} {name}"] = Obj(kind, name, tuple(body), frozenset(elements))
            current = None
            depth = 1
            continue
        depth += delta
        if current is not None:
            body.append(line)
        else:
            table.append(line)
    objs["table"] = Obj("table", "table", tuple(table))
    return objs


def _elements(text: str) -> list[str]:
    inner = text[text.index("{") + 1 : text.rindex("}")]
    return [e.strip() for e in inner.split(",") if e.strip()]


def parse_iptables(text: str) -> dict[str, Obj]:
    """iptables-restore input -> one chain object per (table, chain); rules in order."""
    chains: dict[tuple[str, str], list[str]] = {}
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.setdefault((table, line[1:].split()[0]), [])
        elif line.startswith(("-A ", "-I ")):
            parts = line.split(None, 2)
            chains.setdefault((table, parts[1]), []).append(line)
    return {f"{t}:{c}": Obj("chain", f"{t}:{c}", tuple(rules)) for (t, c), rules in chains.items()}


def parse_ipset(text: str) -> dict[str, Obj]:
    """``ipset restore`` input -> the sets left after it runs (temporary sets swapped in and
    destroyed), with their members."""
    create: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for raw in text.splitlines():
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        op, args = parts[0], parts[1:]
        if op == "create" and args:
            create[args[0]] = " ".join(a for a in args[1:] if a != "-exist")
            members.setdefault(args[0], set())
        elif op == "add" and len(args) >= 2:
            members.setdefault(args[0], set()).add(" ".join(args[1:]))
        elif op == "flush" and args:
            members[args[0]] = set()
        elif op == "swap" and len(args) == 2:
            a, b = args
            members[a], members[b] = members.get(b, set()), members.get(a, set())
            create[a], create[b] = create.get(b, ""), create.get(a, "")
        elif op == "destroy" and args:
            members.pop(args[0], None)
            create.pop(args[0], None)
    return {
        name: Obj("ipset", name, (create.get(name, ""),), frozenset(m))
        for name, m in members.items()
    }


def parse_maps_json(text: str) -> dict[str, Obj]:
    """eBPF ``maps.json`` -> set maps (members as elements), attachments, programs, config."""
    data = json.loads(text)
    out: dict[str, Obj] = {}
    for s in data.get("sets", ()):
        members = frozenset(
            json.dumps(m, sort_keys=True) if not isinstance(m, str) else m
            for m in s.get("members", ())
        )
        out[f"set {s['id']}"] = Obj(
            "set", s["id"], (f"{s.get('kind')} family {s.get('family')}",), members
        )
    for e in data.get("endpoints", ()):
        body = tuple(f"{k}={v}" for k, v in sorted(e.items()) if k != "id")
        out[f"attachment {e['id']}"] = Obj("attachment", e["id"], body)
    for name, o in sorted(data.get("objects", {}).items()):
        out[f"program {name}"] = Obj(
            "program", name, tuple(f"{k}={v}" for k, v in sorted(o.items()))
        )
    config = data.get("config", {})
    out["config"] = Obj("config", "config", tuple(f"{k}={v}" for k, v in sorted(config.items())))
    return out


def parse_files(files: Mapping[str, bytes]) -> dict[str, Obj]:
    """Every object of an artifact, keyed "<file>: <object>"."""
    out: dict[str, Obj] = {}
    for fname, data in sorted(files.items()):
        text = data.decode("utf-8", "replace")
        if fname.endswith(".nft"):
            objs = parse_nft(text)
        elif fname.endswith(".rules"):
            objs = parse_iptables(text)
        elif fname.endswith(".restore") and "ipset" in fname:
            objs = parse_ipset(text)
        elif fname.endswith("maps.json"):
            objs = parse_maps_json(text)
        elif fname.endswith(".bpf.c"):
            objs = {"source": Obj("program source", fname, tuple(text.splitlines()))}
        else:
            objs = {"file": Obj("file", fname, (hashlib.sha256(data).hexdigest(),))}
        for key, obj in objs.items():
            out[f"{fname}: {key}"] = obj
    return out


def diff_artifacts(
    target: str, node: str, base: Mapping[str, bytes], head: Mapping[str, bytes]
) -> ArtifactDiff:
    a, b = parse_files(base), parse_files(head)
    out = ArtifactDiff(target, node)
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            o = y or x
            assert o is not None
            change = "added" if x is None else "removed"
            lines, elems = tuple(o.body), tuple(sorted(o.elements))
            out.objects.append(
                ObjDiff(
                    o.kind,
                    key,
                    change,
                    lines if change == "added" else (),
                    lines if change == "removed" else (),
                    elems if change == "added" else (),
                    elems if change == "removed" else (),
                )
            )
            continue
        if x == y:
            continue
        added: list[str] = []
        removed: list[str] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
            None, x.body, y.body, autojunk=False
        ).get_opcodes():
            if tag in ("replace", "delete"):
                removed.extend(x.body[i1:i2])
            if tag in ("replace", "insert"):
                added.extend(y.body[j1:j2])
        out.objects.append(
            ObjDiff(
                x.kind,
                key,
                "changed",
                tuple(added),
                tuple(removed),
                tuple(sorted(y.elements - x.elements)),
                tuple(sorted(x.elements - y.elements)),
            )
        )
    return out


def artifact_change(
    base: ResourceSet, head: ResourceSet, node: str, target: str, sink: DiagnosticSink
) -> ArtifactDiff | None:
    """Compile both trees for ``node`` with ``target`` (the whole pipeline, the target's
    checks) and diff the artifacts; None when either tree cannot be compiled (see ``sink``)."""
    files = []
    for resources in (base, head):
        program = compile_program(resources, node, sink)
        tgt = get_target(target)
        if not sink.has_errors:
            tgt.check(program, sink)
        if sink.has_errors:
            return None
        files.append(dict(tgt.render(program).files))
    return diff_artifacts(target, node, files[0], files[1])
