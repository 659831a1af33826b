"""``compiler/targets/ebpf/layout.py`` is the one definition of every map layout: the C header
is generated from it, Python packs keys with it, and here a compiled object's BTF must agree
with it field by field (name, offset, size) and map by map (type, key, value, sizes, flags)."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from compiler.ir import nodes as ir
from compiler.targets.ebpf import EbpfTarget, layout
from compiler.tools import bpftool, clang
from tests.kernel.test_ebpf_support import one_endpoint_program, policy, rule

pytestmark = [
    pytest.mark.clang,
    pytest.mark.skipif(
        not (clang.available() and bpftool.available()), reason="needs clang and bpftool"
    ),
]

MAP_TYPE_IDS = {
    "hash": 1,
    "array": 2,
    "prog_array": 3,
    "percpu_array": 6,
    "lru_hash": 9,
    "lpm_trie": 11,
    "array_of_maps": 12,
}


@cache
def _btf(prefix: str = "obj/p-") -> dict[int, dict[str, Any]]:
    """BTF of the first policy object (``obj/p-``) or of the dispatcher (``obj/d-``)."""
    t = policy("gnp/p", "t0", ingress=[rule(ir.LOG, 0, ip_version=4)])
    art = EbpfTarget().render(one_endpoint_program([("t0", ir.DENY, [t])]))
    obj = next(data for name, data in sorted(art.files.items()) if name.startswith(prefix))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.o"
        path.write_bytes(obj)
        return {t["id"]: t for t in bpftool.btf_dump(str(path))}


def _resolve(types: dict[int, dict[str, Any]], tid: int) -> dict[str, Any]:
    """Skip typedefs and qualifiers."""
    t = types[tid]
    while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT"):
        t = types[t["type_id"]]
    return t


def _size(types: dict[int, dict[str, Any]], tid: int) -> int:
    t = _resolve(types, tid)
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _size(types, t["type_id"])
    return int(t["size"])


def _named(types: dict[int, dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [t for t in types.values() if t["kind"] == kind and t.get("name") == name]
    assert len(hits) == 1, f"{kind} {name}: {len(hits)} in BTF"
    return hits[0]


_STRUCTS = [("obj/p-", s) for s in layout.STRUCTS] + [
    ("obj/d-", s) for s in layout.DISPATCH_STRUCTS
]
_MAPS = [("obj/p-", m) for m in layout.MAPS] + [("obj/d-", m) for m in layout.DISPATCH_MAPS]


@pytest.mark.parametrize(("obj", "struct"), _STRUCTS, ids=lambda x: getattr(x, "name", x))
def test_struct_matches_btf(obj: str, struct: layout.Struct) -> None:
    types = _btf(obj)
    t = _named(types, "STRUCT", struct.name)
    assert t["size"] == struct.size
    got = [(m["name"], m["bits_offset"] // 8, _size(types, m["type_id"])) for m in t["members"]]
    want = [(f.name, struct.offsets[f.name], f.size) for f in struct.fields]
    assert got == want


def _map_attr(types: dict[int, dict[str, Any]], members: dict[str, Any], name: str) -> int:
    ptr = types[members[name]["type_id"]]
    return int(types[ptr["type_id"]]["nr_elems"])  # __uint(name, N): int (*name)[N]


@pytest.mark.parametrize(("obj", "m"), _MAPS, ids=lambda x: getattr(x, "name", x))
def test_map_definition_matches_btf(obj: str, m: layout.MapDef) -> None:
    types = _btf(obj)
    var = _named(types, "VAR", m.name)
    members = {x["name"]: x for x in _resolve(types, var["type_id"])["members"]}
    assert _map_attr(types, members, "type") == MAP_TYPE_IDS[m.type]
    assert _map_attr(types, members, "max_entries") == m.max_entries
    assert _map_attr(types, members, "map_flags") == m.flags
    if m.inner is not None:  # map-in-map: the inner definition, sized (see tortie_maps.h.j2)
        ptr = types[types[members["values"]["type_id"]]["type_id"]]  # values[]: pointers
        inner = _resolve(types, ptr["type_id"])
        assert (inner["kind"], inner["name"]) == ("STRUCT", m.inner.name)
        inner_members = {x["name"]: x for x in inner["members"]}
        assert _map_attr(types, inner_members, "type") == MAP_TYPE_IDS[m.inner.type]
        for attr in ("key_size", "value_size", "max_entries", "map_flags"):
            want = getattr(m.inner, {"map_flags": "flags"}.get(attr, attr))
            assert _map_attr(types, inner_members, attr) == want, attr
        return
    if m.type == "prog_array":  # sized, not typed: the kernel takes no BTF for prog arrays
        assert _map_attr(types, members, "key_size") == m.key_size
        assert _map_attr(types, members, "value_size") == m.value_size
        return
    for part, want in (("key", m.key), ("value", m.value)):
        target = _resolve(types, types[members[part]["type_id"]]["type_id"])
        if isinstance(want, layout.Struct):
            assert (target["kind"], target["name"]) == ("STRUCT", want.name)
        assert int(target["size"]) == (m.key_size if part == "key" else m.value_size)


def test_dispatcher_is_not_in_policy_objects_and_slot_keys_pack() -> None:
    """The dispatcher's maps live in its own object only; slot keys are three host words."""
    names = {t.get("name") for t in _btf("obj/p-").values() if t["kind"] == "VAR"}
    assert not names & {m.name for m in layout.DISPATCH_MAPS}
    assert layout.slot_key(7, layout.HOOK_TC_EGRESS, 1).hex() == "070000000100000001000000"


def test_set_key_bytes() -> None:
    """The LPM key as the C side builds it: prefix covers id, port, proto, pad, then the net."""
    key = layout.set_key(4, 0x0102030405060708, bytes([10, 0, 0, 0]), 8, proto=6, port=80)
    assert key.hex() == "680000000102030405060708005006000a000000"
    assert layout.SET_KEY_V4.unpack(key)["prefixlen"] == 64 + 32 + 8
    key6 = layout.set_key(6, 1, bytes(16), 128)
    assert len(key6) == layout.SET_KEY_V6.size == 32
