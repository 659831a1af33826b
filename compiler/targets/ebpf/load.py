"""A small reference loader for an eBPF artifact: what the tests (and a node runtime) do with it.

Steps, all below a bpffs directory the caller owns (never ``/sys/fs/bpf`` itself):

1. create the shared maps from :data:`layout.SHARED_MAPS` and pin them in ``<root>/maps`` (the
   IP-set maps as bank 0 of ``tortie_setbank_v4|v6``);
2. load every object through the verifier (``bpftool prog loadall``), reusing the shared maps,
   and pin its programs in ``<root>/objs/<name>`` (``tortie_main`` is the one to attach);
3. write ``tortie_config`` and every IP-set member from ``maps.json``, with keys built by
   :mod:`layout` (the same definitions the C was generated from).

The dispatcher object (``maps.json`` ``dispatch``) is not loaded here: the entry programs are
attached directly and use set bank 0. ``runtime/ebpf.py`` is the loader with the dispatcher.

Attaching is up to the caller (``tc filter add dev IF ingress|egress bpf da object-pinned
<root>/objs/<name>/tortie_main``): :func:`attachments` says where, given the node's interface
names (resolved to ifindexes only then), and :func:`attach_argv` builds the command lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.targets.ebpf import data, layout
from compiler.tools import bpftool


@dataclass(frozen=True)
class Loaded:
    root: Path
    maps: Mapping[str, str]  # shared map name -> pinned path
    objects: Mapping[str, Path]  # object name (p-…) -> its pin directory
    doc: Mapping[str, Any]  # maps.json

    def entry(self, obj_file: str) -> str:
        """Pinned path of the entry program of ``obj_file`` (``p-….bpf.o`` or ``p-…``)."""
        return str(self.objects[obj_file.removesuffix(".bpf.o")] / "tortie_main")

    def endpoint(self, endpoint_id: str) -> Mapping[str, Any]:
        return next(e for e in self.doc["endpoints"] if e["id"] == endpoint_id)


@contextmanager
def private_bpffs(prefix: str = "tortie-bpffs-") -> Iterator[Path]:
    """A fresh bpffs instance mounted on a temporary directory; unmounting drops every pin."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False, capture_output=True)
    finally:
        os.rmdir(path)


def create_map(path: str, m: layout.MapDef, inner: str | None = None) -> None:
    """Create and pin map ``m`` (a map-in-map needs a pinned ``inner`` map as its template)."""
    bpftool.map_create(
        path, m.type, m.key_size, m.value_size, m.max_entries, m.name, m.flags, inner_map=inner
    )


def create_shared_maps(root: Path) -> dict[str, str]:
    """Every shared map pinned in ``<root>/maps``, by name. Bank 0 of a set bank is the set trie
    of the same name (``tortie_sets_v4|v6``): loaded this way (without the dispatcher) a
    program always uses bank 0, and :func:`fill_maps` fills those tries."""
    (root / "maps").mkdir(exist_ok=True)
    out: dict[str, str] = {}
    for m in layout.SHARED_MAPS:
        path = str(root / "maps" / m.name)
        if m.inner is not None:
            create_map(path, m, out[m.inner.name])
            bpftool.map_of_maps_update(path, 0, out[m.inner.name])
        else:
            create_map(path, m)
        out[m.name] = path
    return out


def fill_maps(maps: Mapping[str, str], doc: Mapping[str, Any]) -> None:
    """Write the config entry and every set member of ``maps.json`` into the shared maps."""
    config = bytes.fromhex(doc["config"]["value"])
    bpftool.map_update_batch(maps["tortie_config"], [(bytes(4), config)])
    by_family: dict[int, list[tuple[bytes, bytes]]] = {4: [], 6: []}
    for s in doc["sets"]:
        by_family[s["family"]].extend(set_from_json(s).entries())
    bpftool.map_update_batch(maps[layout.SETS_V4.name], by_family[4])
    bpftool.map_update_batch(maps[layout.SETS_V6.name], by_family[6])


def set_from_json(s: Mapping[str, Any]) -> data.SetData:
    import ipaddress

    if s["kind"] == "named-port":
        pm = tuple((ipaddress.ip_network(n), int(p), int(o)) for n, p, o in s["members"])
        return data.SetData(s["id"], s["family"], True, port_members=pm)
    return data.SetData(
        s["id"], s["family"], False, members=tuple(ipaddress.ip_network(n) for n in s["members"])
    )


def load_artifact(artifact_dir: Path, root: Path) -> Loaded:
    """Create, load and fill everything of the artifact in ``artifact_dir`` below ``root``."""
    doc = json.loads((artifact_dir / "maps.json").read_text())
    maps = create_shared_maps(root)
    (root / "objs").mkdir(exist_ok=True)
    objects = {}
    for name in sorted(doc["objects"]):
        pin_dir = root / "objs" / name
        bpftool.prog_loadall(str(artifact_dir / "obj" / f"{name}.bpf.o"), str(pin_dir), maps)
        objects[name] = pin_dir
    fill_maps(maps, doc)
    return Loaded(root, maps, objects, doc)


def attachments(doc: Mapping[str, Any], interfaces: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(interface, hook, object file)`` for every attachment on a node whose interfaces are
    ``interfaces``: workloads and named host endpoints on their own interface; a host endpoint
    with interfaceName ``*`` (or ``""``) on every other interface except ``lo``."""
    out = []
    named = {e["interface"] for e in doc["endpoints"] if e["interface"] not in ("*", "")}
    present = set(interfaces)
    for e in doc["endpoints"]:
        if e["interface"] in ("*", ""):
            targets = sorted(present - named - {"lo"})
        else:
            targets = [e["interface"]] if e["interface"] in present else []
        for ifname in targets:
            out.extend((ifname, hook, e[hook]) for hook in ("tc_ingress", "tc_egress"))
    return sorted(out)


def attach_argv(ifname: str, hook: str, pinned_prog: str) -> list[list[str]]:
    """``tc`` commands attaching ``pinned_prog`` at ``hook`` ("tc_ingress" | "tc_egress")."""
    direction = "ingress" if hook == "tc_ingress" else "egress"
    return [
        ["tc", "qdisc", "replace", "dev", ifname, "clsact"],
        [
            "tc", "filter", "replace", "dev", ifname, direction, "pref", "1", "handle", "1",
            "bpf", "direct-action", "object-pinned", pinned_prog,
        ],
    ]  # fmt: skip
