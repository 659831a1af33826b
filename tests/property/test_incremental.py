"""The agent's incremental compile is exact: after any sequence of edits to a YAML tree, the
program it derives (and the resources, diagnostics and input hashes it loads) equal a full
compile of the edited tree from scratch.

Edits are made the way a GitOps checkout changes: YAML files rewritten (``benchmarks/gen.py``'s
deterministic dumper, so unchanged items keep their exact text), a pod in a file of its own
added or deleted. They cover what the fast paths handle (label changes of local and remote pods,
pods added, removed or re-addressed) and what must fall back (namespace labels, policy edits,
line shifts under later items), so both paths and the switching between them are checked.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path
from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.gen import _dump, _strip_none, generate
from compiler.diagnostics import DiagnosticSink, HashingSources
from compiler.frontend import load
from compiler.frontend.selector import evaluate
from compiler.frontend.selector.canon import canon
from compiler.incremental.driver import IncrementalCompiler
from compiler.incremental.program import _compiled, _Selectors
from compiler.ir.dump import dump
from compiler.ir.nodes import Program
from compiler.ir.passes import MEMBERSHIP_STABLE_PASSES
from compiler.pipeline import compile_program
from compiler.targets.nftables import render_set_update
from compiler.targets.nftables.script import render_program
from tests.frontend.test_selector_props import (
    _leaves,
    _trees,
    label_sets,
    small_keys,
    small_selectors,
    small_values,
)

NODE = "node-001"
_TREES = _trees(_leaves(st.sampled_from(["app", "in", "k", "a.b/c"]), st.text(max_size=3)))
FIELDS = (
    "node",
    "tiers",
    "policies",
    "profiles",
    "sets",
    "endpoints",
    "selectables",
    "felix",
    "host_ips",
    "dropped_rules",
)


def program_diff(a: Program, b: Program) -> str | None:
    """The first field in which two programs differ (None: equal, dump included)."""
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, MappingProxyType):
            x, y = dict(x), dict(y)
            if list(x) != list(y):
                return f"{f} (order)"
        if x != y:
            return f
    return None if dump(a) == dump(b) else "dump"


class Tree:
    """A generated cluster as data, written back with the generator's dumper."""

    def __init__(self, root: Path, seed: int = 1) -> None:
        self.root = root
        self.files = {k: _strip_none(v) for k, v in generate(24, 36, 3, seed).items()}
        self.extra: dict[str, dict] = {}  # file name -> one pod of its own
        self.serial = 0
        for name in self.files:
            self.write(name)

    def write(self, name: str) -> None:
        _dump(self.root / name, self.files[name])  # type: ignore[arg-type]

    @property
    def pods(self) -> list[dict]:
        return self.files["pods.yaml"]

    def apply(self, edit: tuple) -> None:  # noqa: C901 - one branch per kind of edit
        kind, a, b = edit
        pods = self.pods
        if kind == "label" and pods:
            pod = pods[a % len(pods)]
            labels = pod["metadata"].setdefault("labels", {})
            key = ["app", "tier", "team", "version", "extra"][b % 5]
            value = ["web", "db", "api", "red", "blue", "v9"][(a + b) % 6]
            if (a + b) % 7 == 0:
                labels.pop(key, None)
            else:
                labels[key] = value
            self.write("pods.yaml")
        elif kind == "unique" and pods:  # a label value no pod had
            self.serial += 1
            pods[a % len(pods)]["metadata"].setdefault("labels", {})["app"] = f"u{self.serial}"
            self.write("pods.yaml")
        elif kind == "local" and pods:
            local = [p for p in pods if p["spec"]["nodeName"] == NODE]
            if local:
                pod = local[a % len(local)]
                labels = pod["metadata"].setdefault("labels", {})
                labels["app"] = ["web", "db", "api", "cache"][b % 4]
                self.write("pods.yaml")
        elif kind == "add":
            self.serial += 1
            pod = copy.deepcopy(pods[a % len(pods)]) if pods else None
            if pod is None:
                return
            pod["metadata"]["name"] = f"added-{self.serial}"
            ip4 = f"10.99.{self.serial // 250}.{self.serial % 250 + 1}"
            pod["status"] = {"podIP": ip4, "podIPs": [{"ip": ip4}]}
            pod["spec"]["nodeName"] = f"node-00{b % 3}"
            if b % 2:
                pods.append(pod)  # appended to the list
                self.write("pods.yaml")
            else:
                name = f"extra-{self.serial}.yaml"
                self.extra[name] = pod
                _dump(self.root / name, [pod])
        elif kind == "remove":
            if self.extra and b % 2:
                name = sorted(self.extra)[a % len(self.extra)]
                del self.extra[name]
                (self.root / name).unlink()
            elif pods:
                pods.pop(-1 if b % 3 else a % len(pods))
                self.write("pods.yaml")
        elif kind == "ip" and pods:
            pod = pods[a % len(pods)]
            ip = pod["status"].get("podIP", "10.64.0.1")
            base = ".".join(ip.split(".")[:3])
            new = f"{base}.{(a + b) % 250 + 1}"  # may collide with another pod's address
            ips = pod["status"].get("podIPs") or [{"ip": ip}]
            pod["status"] = {"podIP": new, "podIPs": [{"ip": new}, *ips[1:]]}
            self.write("pods.yaml")
        elif kind == "namespace":
            nss = [x for x in self.files["namespaces.yaml"] if x["kind"] == "Namespace"]
            ns = nss[a % len(nss)]
            self.serial += 1
            team = ["red", "blue", "gold"][b % 3] if b % 2 else f"t{self.serial}"
            ns["metadata"].setdefault("labels", {})["team"] = team
            self.write("namespaces.yaml")
        elif kind == "policy":
            pols = [
                x for x in self.files["policies-calico.yaml"] if "selector" in x.get("spec", {})
            ]
            if pols:
                pol = pols[a % len(pols)]
                self.serial += 1
                app = ["web", "db", "api"][b % 3] if b % 2 else f"a{self.serial}"
                pol["spec"]["selector"] = f"app == '{app}'"
                self.write("policies-calico.yaml")
        elif kind == "netset":
            sets = self.files["netsets.yaml"]
            nets = sets[a % len(sets)]["spec"].setdefault("nets", [])
            nets.append(f"10.64.0.{b % 250}/32")  # may overlap pod addresses
            self.write("netsets.yaml")
        elif kind == "touch":
            path = self.root / "pods.yaml"
            path.write_bytes(path.read_bytes())


EDITS = st.tuples(
    st.sampled_from(
        [
            "label",
            "label",
            "unique",
            "local",
            "add",
            "remove",
            "ip",
            "namespace",
            "policy",
            "netset",
            "touch",
        ]
    ),
    st.integers(0, 1000),
    st.integers(0, 1000),
)


def full_compile(root: Path) -> tuple[object, Program, tuple, dict]:
    sink = DiagnosticSink()
    sources = HashingSources()
    rs = load([str(root)], sink, sources)
    program = compile_program(rs, NODE, sink, passes=MEMBERSHIP_STABLE_PASSES)
    return rs, program, tuple(sink.diagnostics), dict(sources.hashes)


def check(inc: IncrementalCompiler, root: Path, paths: list[str], commit: bool = True) -> Program:
    got = inc.compile()
    rs, program, _diags, hashes = full_compile(root)
    assert got.program is not None
    assert got.load.resources == rs
    assert got.load.hashes == hashes
    where = program_diff(got.program, program)
    assert where is None, f"{got.path} ({got.reason}) differs from a full compile in {where}"
    if commit:  # else: as when the apply failed; the next compile starts from the last commit
        inc.commit()
    paths.append(f"{got.path}/{got.load.path}")
    return got.program


@settings(max_examples=25)
@given(
    st.lists(st.tuples(EDITS, st.booleans()), min_size=1, max_size=8),
    st.integers(1, 3),
    st.booleans(),
)
def test_incremental_equals_full_compile(edits: list[tuple], seed: int, keep_trees: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="tortie-inc-"))
    try:
        tree = Tree(root, seed)
        inc = IncrementalCompiler(str(root), NODE)
        inc.sources.keep_trees = keep_trees
        paths: list[str] = []
        prev = check(inc, root, paths)
        for edit, failed_apply in edits:
            tree.apply(edit)
            new = check(inc, root, paths, commit=not failed_apply)
            if failed_apply:
                new = check(inc, root, paths)  # retried: nothing changed on disk since
            # The target's set-only update from the incremental program (which shares objects
            # with the previous one) is the one from unshared copies.
            render_program(prev)
            assert render_set_update(prev, new) == _reference_set_update(prev, new)
            prev = new
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reference_set_update(old: Program, new: Program) -> str | None:
    """render_set_update on structurally equal copies that share no object with each other."""
    return render_set_update(
        dataclasses.replace(old, sets=MappingProxyType(dict(old.sets))),
        dataclasses.replace(new, sets=MappingProxyType(dict(new.sets))),
    )


def test_fast_paths_are_taken(tmp_path: Path) -> None:
    """Each endpoint edit of the agent's benchmark is spliced and compiled incrementally, and
    edits that are not endpoint-only fall back to the full compile (and still agree)."""
    tree = Tree(tmp_path)
    inc = IncrementalCompiler(str(tmp_path), NODE)
    paths: list[str] = []
    check(inc, tmp_path, paths)
    remote = next(i for i, p in enumerate(tree.pods) if p["spec"]["nodeName"] != NODE)
    local = next(i for i, p in enumerate(tree.pods) if p["spec"]["nodeName"] == NODE)
    steps = [
        (("label", remote, 1), "incremental/splice"),
        (("local", local, 1), "incremental/splice"),
        (("add", 3, 1), "incremental/splice"),  # appended to pods.yaml
        (("add", 4, 2), "incremental/splice"),  # a file of its own
        (("remove", 0, 1), "incremental/splice"),  # that file deleted
        (("remove", 0, 2), "incremental/splice"),  # the last list item
        (("ip", 5, 7), "incremental/splice"),
        (("touch", 0, 0), "incremental/unchanged"),
        (("namespace", 1, 2), "full/full"),
        (("policy", 2, 2), "full/full"),
        (("unique", remote, 0), "incremental/splice"),
    ]
    for edit, want in steps:
        tree.apply(edit)
        check(inc, tmp_path, paths)
        assert paths[-1] == want, (edit, paths[-1])


@settings(max_examples=300)
@given(
    _TREES,
    st.dictionaries(st.sampled_from(["app", "in", "k", "a.b/c", "x"]), st.text(max_size=3)),
)
def test_compiled_selectors_agree_with_evaluate(sel: object, labels: dict[str, str]) -> None:
    """The incremental compile tests selectors with closures; they are the evaluator."""
    assert _compiled(sel)(labels) == evaluate(sel, labels)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(
    st.lists(small_selectors, min_size=1, max_size=8),
    label_sets,
    label_sets,
    st.dictionaries(st.tuples(small_keys, small_values), st.integers(0, 5)),
)
def test_selector_candidates_hold_every_possible_match(
    sels: list, old: dict[str, str], new: dict[str, str], counts: dict
) -> None:
    """``_Selectors.candidates`` (the anchor index the incremental compile tests selectors
    through) leaves out only selectors that match neither label set (or read no changed key),
    whatever the anchors chosen."""
    index = _Selectors.of([canon(s) for s in sels], counts)
    changed = frozenset(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    got = index.candidates([old, new], changed)
    got_all = index.candidates([new], None)
    for text, ast in index.parsed.items():
        if index.keys[text] & changed and (evaluate(ast, old) or evaluate(ast, new)):
            assert text in got, (text, old, new)
        if evaluate(ast, new):
            assert text in got_all, (text, new)


def test_selector_candidates_by_anchor() -> None:
    sels = [
        'ns == "a" && app in {"x", "y"}',
        'app in {"x", "y"} && ns == "b"',
        '(ns == "a" && has(app)) && !(app == "z")',
        'app == "x" || ns == "a"',
        "all()",
        'tier != "t"',
    ]
    counts = {("ns", "a"): 1, ("ns", "b"): 1, ("app", "x"): 9, ("app", "y"): 9}
    index = _Selectors.of(sels, counts)
    # Anchored on the rarer namespace label; the last three have no anchor.
    assert index.by_anchor[("ns", "a")] == (sels[2], sels[0])
    assert index.unanchored == {sels[3], sels[4], sels[5]}
    app = frozenset({"app"})
    got = index.candidates([{"ns": "a", "app": "x"}, {"ns": "a", "app": "y"}], app)
    assert got == {sels[0], sels[2], sels[3]}
    assert index.candidates([{"ns": "c", "app": "y"}], app) == {sels[3]}
    assert index.candidates([{"ns": "b"}], None) == {sels[1], sels[3], sels[4], sels[5]}
    by_values = _Selectors.of(['app in {"x", "y"}'])
    assert by_values.candidates([{"app": "y"}], app) == {'app in {"x", "y"}'}


def test_endpoint_sharing_an_id_with_a_network_set(tmp_path: Path) -> None:
    """resolve_sets indexes selectables by id, so a pod and a NetworkSet with the same
    namespace/name shadow each other: such a change takes the full compile, and agrees."""
    from tests.support.demo_cluster import cluster_yaml

    netset = (
        "---\napiVersion: projectcalico.org/v3\nkind: NetworkSet\n"
        "metadata: {name: a, namespace: demo, labels: {role: client}}\n"
        "spec: {nets: [10.77.0.0/24]}\n"
    )
    (tmp_path / "c.yaml").write_text(cluster_yaml(clients=("a",)) + netset)
    inc = IncrementalCompiler(str(tmp_path), "n1")
    paths: list[str] = []
    for clients in (("a",), ("c",), ("a", "c")):
        (tmp_path / "c.yaml").write_text(cluster_yaml(clients=clients) + netset)
        got = inc.compile()
        rs, program, _, _ = full_compile_for(tmp_path, "n1")
        assert got.program is not None and program_diff(got.program, program) is None
        inc.commit()
        paths.append(got.reason)
    assert any("shares its id with a network set" in p for p in paths), paths


def full_compile_for(root: Path, node: str) -> tuple[object, Program, tuple, dict]:
    sink = DiagnosticSink()
    sources = HashingSources()
    rs = load([str(root)], sink, sources)
    program = compile_program(rs, node, sink, passes=MEMBERSHIP_STABLE_PASSES)
    return rs, program, tuple(sink.diagnostics), dict(sources.hashes)
