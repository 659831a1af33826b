"""YAML loading: spans on every node, JSON, multi-document files, and every way YAML can be bad."""

from __future__ import annotations

import textwrap

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, Span, render_all
from compiler.frontend.yaml_loader import MAX_ALIAS_NODES, Mapping, Scalar, Sequence, load_documents


def docs_of(text: str, name: str = "t.yaml") -> tuple[list, DiagnosticSink, SourceRegistry]:
    text = textwrap.dedent(text)
    sink, sources = DiagnosticSink(), SourceRegistry()
    sources.add(name, text)
    return load_documents(text, name, sink), sink, sources


def rendered(text: str) -> str:
    _, sink, sources = docs_of(text)
    return render_all(sink.sorted(), sources)


def test_every_key_value_and_item_has_a_span() -> None:
    (doc,), sink, _ = docs_of(
        """\
        kind: Pod
        spec:
          list:
          - a
          -   b: 1
        """
    )
    assert not sink.diagnostics
    assert isinstance(doc, Mapping)
    kind_key, kind_val = doc.items[0]
    assert kind_key.span == Span("t.yaml", 1, 1)
    assert kind_val.span == Span("t.yaml", 1, 7)
    spec = doc.get("spec")
    assert isinstance(spec, Mapping) and spec.span == Span("t.yaml", 3, 3)
    items = spec.get("list")
    assert isinstance(items, Sequence)
    assert [i.span for i in items.items] == [Span("t.yaml", 4, 5), Span("t.yaml", 5, 7)]
    inner = items.items[1]
    assert isinstance(inner, Mapping)
    b = inner.get("b")
    assert isinstance(b, Scalar) and b.value == 1 and b.span == Span("t.yaml", 5, 10)


def test_multi_document_files_skip_empty_documents() -> None:
    docs, sink, _ = docs_of("a: 1\n---\n---\n# only a comment\n---\nb: 2\n...\n")
    assert not sink.diagnostics
    assert [d.keys() for d in docs] == [["a"], ["b"]]
    assert docs[1].span.line == 6


def test_json_keeps_spans() -> None:
    (doc,), sink, _ = docs_of(
        '{"kind":"Tier",\n "spec": {"order": 10}}\n',
    )
    assert not sink.diagnostics
    spec = doc.get("spec")
    order = spec.get("order")
    assert order.value == 10
    assert order.span == Span("t.yaml", 2, 20)


def test_scalar_types_follow_kubectl() -> None:
    (doc,), _, _ = docs_of(
        "a: '1'\nb: 1\nc: 1.5\nd: true\ne: null\nf: 2024-05-14\ng: 0x10\nh: on\n"
    )
    values = {str(k.value): v.value for k, v in doc.items}
    # A YAML 1.1 timestamp stays text, as when kubectl converts YAML to JSON.
    assert values == {
        "a": "1",
        "b": 1,
        "c": 1.5,
        "d": True,
        "e": None,
        "f": "2024-05-14",
        "g": 16,
        "h": True,
    }


def test_keys_are_their_source_text() -> None:
    (doc,), _, _ = docs_of("80: a\non: b\n'x': c\n")
    assert doc.keys() == ["80", "on", "x"]


def test_merge_keys_and_aliases() -> None:
    (doc,), sink, _ = docs_of(
        """\
        base: &b {app: web, tier: x}
        labels:
          <<: *b
          tier: y
        """
    )
    assert not sink.diagnostics
    labels = doc.get("labels")
    assert {str(k.value): v.value for k, v in labels.items} == {"tier": "y", "app": "web"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: b\n c: d: e\n",
            "t.yaml:2:3: error[E001]: malformed YAML: mapping values are not allowed in this context\n"
            "   c: d: e\n"
            "    ^",
        ),
        (
            "spec:\n  selector: 'abc\n",
            "t.yaml:3:1: error[E001]: malformed YAML: found unexpected end of stream\n"
            "  = note: while scanning a quoted scalar at t.yaml:2:13",
        ),
        (
            "a: [1, 2\nb: 3\n",
            "t.yaml:2:2: error[E001]: malformed YAML: did not find expected ',' or ']'\n"
            "  b: 3\n"
            "   ^\n"
            "  = note: while parsing a flow sequence at t.yaml:1:4",
        ),
        (
            "a: 1\na: 2\n",
            "t.yaml:2:1: error[E004]: duplicate key 'a' in this mapping\n"
            "  a: 2\n"
            "  ^\n"
            "  = note: first given at t.yaml:1:1",
        ),
        (
            "a: !!python/object:os.system x\n",
            "t.yaml:1:4: error[E005]: unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'\n"
            "  a: !!python/object:os.system x\n"
            "     ^",
        ),
        (
            "a: *nothing\n",
            "t.yaml:1:4: error[E001]: malformed YAML: unknown alias 'nothing'\n"
            "  a: *nothing\n"
            "     ^",
        ),
        (
            "name: ok\nbad: a\x07b\n",
            "t.yaml:2:7: error[E001]: malformed YAML: character U+0007 is not allowed in YAML text\n"
            "  bad: a?b\n"
            "        ^",
        ),
    ],
)
def test_malformed_yaml_is_one_diagnostic_at_the_problem(text: str, expected: str) -> None:
    assert rendered(text) == expected


def test_documents_before_a_syntax_error_are_kept() -> None:
    docs, sink, _ = docs_of("a: 1\n---\nb: [\n")
    assert [d.keys() for d in docs] == [["a"]]
    assert [d.code for d in sink.diagnostics] == ["E001"]


def test_billion_laughs_is_refused_without_expanding() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    docs, sink, _ = docs_of("\n".join(lines) + "\n")
    assert [d.code for d in sink.diagnostics] == ["E006"]
    assert f"more than {MAX_ALIAS_NODES} nodes" in sink.diagnostics[0].message
    assert docs == []


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    docs, sink, _ = docs_of(text)
    assert [d.code for d in sink.diagnostics] == ["E006"]
    assert "nested more than" in sink.diagnostics[0].message


def test_recursive_alias_is_an_error_not_a_loop() -> None:
    _, sink, _ = docs_of("a: &x [*x]\n")
    assert [d.code for d in sink.diagnostics] == ["E001"]


def test_complex_keys_are_rejected() -> None:
    _, sink, _ = docs_of("? [a, b]\n: c\n")
    assert [d.code for d in sink.diagnostics] == ["E021"]


@pytest.mark.parametrize(
    ("line", "offset", "col"),
    [
        ("s: ab == 'x'\n", 3, 7),  # plain: same column
        ("s: 'ab == ''x'''\n", 7, 13),  # single quotes: '' is one character
        ('s: "ab \\" c"\n', 4, 10),  # double quotes: \" is one character
        ('s: "\\x41\\u00e9 z"\n', 3, 16),  # \x41 and \u00e9 are one character each
    ],
)
def test_span_at_points_inside_quoted_scalars(line: str, offset: int, col: int) -> None:
    (doc,), _, _ = docs_of(line)
    s = doc.get("s")
    assert isinstance(s, Scalar)
    assert s.span_at(offset).col == col


def test_span_at_block_scalar_points_at_the_scalar() -> None:
    (doc,), _, _ = docs_of("s: |\n  a == 'b'\n")
    s = doc.get("s")
    assert s.span_at(5) == s.span
