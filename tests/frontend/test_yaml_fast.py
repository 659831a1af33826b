"""The fast block-YAML reader (``yaml_fast``) against the libyaml event reader.

Whenever the fast reader accepts a text, its documents must be the event reader's node for node:
same types, values (and value types), styles, ``raw`` text, lines, columns, key order and index;
and the event reader must find nothing wrong with the text. Everything else it must refuse
(None), so that the event reader reads it and reports.

Every test runs on both readers, the C one (``_yaml_lines.c``) and the Python one (``_read``);
``test_yaml_lines_c.py`` compares the two with each other.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from compiler.diagnostics import DiagnosticSink
from compiler.frontend import yaml_fast
from compiler.frontend.yaml_fast import fast_documents
from compiler.frontend.yaml_loader import Mapping, Node, Scalar, _event_documents, load_documents

ROOT = Path(__file__).resolve().parents[2]
_C_READER = yaml_fast._yaml_lines


@pytest.fixture(autouse=True, params=["c", "python"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the C reader, then on the Python one."""
    if request.param == "c" and _C_READER is None:
        pytest.skip("the C reader is not built (see setup.py)")
    monkeypatch.setattr(yaml_fast, "_yaml_lines", _C_READER if request.param == "c" else None)
    return request.param


def _diff(a: Node, b: Node, path: str = "$") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if a.span != b.span:
        return f"{path}: at {a.span} vs {b.span}"
    if isinstance(a, Scalar):
        fa = (a.value, type(a.value), a.style, a.raw)
        fb = (b.value, type(b.value), b.style, b.raw)  # type: ignore[union-attr]
        return None if fa == fb else f"{path}: {fa!r} vs {fb!r}"
    if len(a.items) != len(b.items):  # type: ignore[union-attr]
        return f"{path}: {len(a.items)} vs {len(b.items)} items"  # type: ignore[union-attr]
    if isinstance(a, Mapping):
        if a._index != b._index:  # type: ignore[union-attr]
            return f"{path}: key index differs"
        for (ka, va), (kb, vb) in zip(a.items, b.items, strict=True):  # type: ignore[union-attr]
            d = _diff(ka, kb, path + ".<key>") or _diff(va, vb, f"{path}.{ka.value}")
            if d:
                return d
        return None
    for i, (x, y) in enumerate(zip(a.items, b.items, strict=True)):  # type: ignore[union-attr]
        d = _diff(x, y, f"{path}[{i}]")
        if d:
            return d
    return None


def agree(text: str, name: str = "t.yaml") -> bool:
    """Asserts the contract; returns whether the fast reader took the text."""
    fast = fast_documents(text, name)
    if fast is None:
        return False
    sink = DiagnosticSink()
    slow = _event_documents(text, name, sink)
    assert not sink.diagnostics, (text, sink.diagnostics)
    assert len(fast) == len(slow), text
    for a, b in zip(fast, slow, strict=True):
        d = _diff(a, b)
        assert d is None, (text, d)
    return True


KUBECTL = textwrap.dedent(
    """\
    # a comment
    apiVersion: v1
    items:
    - apiVersion: v1
      kind: Pod   # trailing comment
      metadata:
        labels:
          app: web
          "n": x
        name: 'it''s'
        namespace: "ns-1"
      spec:
        containers:
        -   image: registry.example/web:1
            ports:
            - containerPort: 9090
              name: grpc
        nodeName: node-001
        empty: {}
        none: []
      status:
        podIPs:
          - ip: 10.64.0.1
          - ip: fd00:64::1
    ---
    kind: GlobalNetworkPolicy
    spec:
      selector: app in {"web", "db"} && !has(x) || tier == 'a'
      order: 10.5
      on: yes
      ports: [80]
    """
)


def test_kubectl_style_documents_take_the_fast_path_and_agree() -> None:
    text = KUBECTL.replace("  ports: [80]\n", "  ports:\n  - 80\n")
    text = text.replace('      "n": x\n', "")  # a quoted key is left to libyaml
    assert agree(text)
    (pods, gnp) = fast_documents(text, "t.yaml")  # type: ignore[misc]
    spec = gnp.get("spec")
    assert spec.get("order").value == 10.5 and spec.get("on").value is True
    assert spec.get("ports").items[0].value == 80


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: !!str 1\n",  # tags
        "a: |\n  text\n",  # block scalars
        "a: b\n  c\n",  # a multi-line plain scalar
        "a:\nb: 1\n",  # a null value
        "a: 1\na: 2\n",  # a duplicate key (reported by the event reader)
        "a:\tb\n",  # tabs
        "a: b\r\n",  # CR
        "a: é\n",  # non-ASCII
        'a: "x\\ty"\n',  # escapes
        "a: {b: 1}\n",  # flow collections
        "<<: {a: 1}\n",  # merge keys
        "a: b: c\n",  # an error
        "- - a\n",  # compact nested sequences
        "-\n  a: 1\n",  # an item on the next line
        "hello\n",  # a scalar document
        "a: 1 \n",  # trailing space
        '"a": 1\n',  # a quoted key
        "--- a\n",
        "a: 1\n...\n",
        "%YAML 1.1\n---\na: 1\n",
        "a:\n  b: 1\n c: 2\n",  # bad indentation
        "k" * 1100 + ": v\n",  # libyaml: a simple key is at most 1024 characters
        "- " + "k" * 1100 + ": v\n",
    ],
)
def test_everything_else_is_left_to_the_event_reader(text: str) -> None:
    assert fast_documents(text, "t.yaml") is None
    load_documents(text, "t.yaml", DiagnosticSink())  # and the full loader still reads it


def test_duplicate_keys_are_still_reported() -> None:
    sink = DiagnosticSink()
    load_documents("kind: Pod\nkind: Pod\n", "t.yaml", sink)
    assert [d.code for d in sink.errors] == ["E004"]


def _repo_yaml() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def test_every_yaml_file_of_the_repository() -> None:
    taken = 0
    for path in _repo_yaml():
        taken += agree(path.read_text().removeprefix("\ufeff"), str(path))
    assert taken >= 20  # most of them are in the subset


def test_generated_benchmark_input(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gen", "--policies", "60", "--endpoints", "200"]
        + ["--nodes", "4", "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    files = sorted(tmp_path.glob("*.yaml"))
    assert files
    for f in files:
        assert agree(f.read_text(), f.name), f"{f.name} left the fast path"


# -- generated documents, dumped by PyYAML, then randomly damaged ----------------------------------

_KEYS = ["a", "b", "key", "app", "name", "ns-01", "x.y/z", "a b", "p:80", "on", "n", "x#y", "-k"]
_VALUES = [
    "a", "web", "name", "a b c", "10.0.0.0/8", "10.64.0.1", "fd00::1", "it's", 'app == "x"', "1",
    "on", "p:80", "0x1f", "1.5", "-3", "true", "null", "~", "x: y", "#c", "a #b", "-", "- x", "?",
    ":x", "a:", "[1]", "{a}", "!t", "&a", "*a", "", " lead", "2001-01-01", "<<", "=", "1e3",
    ".inf", "@x", "%x", 'a"b', "'q'",
]  # fmt: skip
_DAMAGE = [*" -:#'\"\n\tab{}[]&*!|>?,.%@`\\", "  ", "- ", ": ", " #", "---\n", "...\n", "\n  "]


def _tree(rng: random.Random, depth: int) -> object:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([rng.choice(_VALUES), rng.randint(-5, 10**5), None, True, 1.5])
    if r < 0.7:
        return {rng.choice(_KEYS): _tree(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [
        _tree(rng, depth + 1) if rng.random() < 0.5 else {rng.choice(_KEYS): _tree(rng, depth + 1)}
        for _ in range(rng.randint(0, 4))
    ]


@pytest.mark.parametrize("seed", range(4))
def test_generated_and_damaged_documents(seed: int) -> None:
    rng = random.Random(seed)
    taken = 0
    for _ in range(600):
        docs = [_tree(rng, 0) for _ in range(rng.randint(1, 3))]
        text = yaml.safe_dump_all(
            docs,
            default_flow_style=rng.choice([False, False, None]),
            indent=rng.choice([2, 2, 4]),
            explicit_start=rng.random() < 0.5,
            sort_keys=rng.random() < 0.5,
        )
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            i = rng.randrange(len(text) + 1)
            if rng.random() < 0.6:
                text = text[:i] + rng.choice(_DAMAGE) + text[i:]
            else:
                text = text[:i] + text[i + rng.randint(1, 3) :]
        taken += agree(text)
    assert taken > 10
