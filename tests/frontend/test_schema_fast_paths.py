"""The shortcuts of the schema readers give exactly what the long way gives: the dotted-quad
parser, the frozen model classes' generated ``__init__``, the cache of clean selector texts and
the unknown-field check of :class:`Fields`."""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import pickle
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.diagnostics import NO_SPAN, DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text, model
from compiler.frontend.schema.fields import Fields
from compiler.frontend.schema.values import _dotted_quad, ip_address, ip_network
from compiler.frontend.yaml_loader import load_documents


def _dotted_quad_reference(text: str) -> int | None:
    """What ``ipaddress`` accepts as a dotted quad: four ASCII decimal parts, no leading zeros,
    each at most 255."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for p in parts:
        if not (p.isascii() and p.isdigit()) or len(p) > 3 or (p[0] == "0" and p != "0"):
            return None
        if int(p) > 255:
            return None
        n = n << 8 | int(p)
    return n


_PART = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(
        ["", "0", "00", "01", "007", "255", "256", "1000", "x", " 1", "1\n", "١", "+1"]
    ),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PART, min_size=1, max_size=6).map(".".join))
def test_dotted_quad_matches_the_reference(text: str) -> None:
    assert _dotted_quad(text) == _dotted_quad_reference(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789.:/ \nx", max_size=20))
def test_ip_parsers_agree_with_ipaddress(text: str) -> None:
    try:
        want: object = ipaddress.ip_address(text)
    except ValueError:
        want = ValueError
    try:
        got: object = ip_address(text)
    except ValueError:
        got = ValueError
    assert got == want
    try:
        want = ipaddress.ip_network(text, strict=False)
    except ValueError:
        want = ValueError
    try:
        got = ip_network(text)
    except ValueError:
        got = ValueError
    assert got == want


_FAST = [
    model.PortSpec,
    model.EntityRule,
    model.Rule,
    model.Policy,
    model.NamedPort,
    model.Endpoint,
]


@pytest.mark.parametrize("cls", _FAST, ids=lambda c: c.__name__)
def test_generated_init_has_the_dataclass_signature(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert p.default is (
            inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        )


def test_generated_init_makes_frozen_hashable_instances() -> None:
    rule = model.Rule(
        "Allow", protocol=6, destination=model.EntityRule(ports=(model.PortSpec(80, 80),))
    )
    same = model.Rule(
        action="Allow", protocol=6, destination=model.EntityRule(ports=(model.PortSpec(80, 80),))
    )
    assert rule == same and hash(rule) == hash(same)
    assert rule.source == model.EntityRule() and rule.span == NO_SPAN
    assert dataclasses.replace(rule, protocol=17).protocol == 17
    assert pickle.loads(pickle.dumps(rule)) == rule
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.protocol = 17  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.Rule()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        model.Rule("Allow", bogus=1)  # type: ignore[call-arg]


def _check(text: str) -> str:
    sink, sources = DiagnosticSink(), SourceRegistry()
    load_text(textwrap.dedent(text), "t.yaml", sink, sources)
    return render_all(sink.sorted(), sources)


_GNP = """\
    apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata:
      name: {name}
    spec:
      selector: {sel}
      ingress:
      - action: Allow
        source:
          namespaceSelector: {sel}
          selector: {sel}
    """


def test_a_selector_valid_in_one_field_is_checked_again_in_another() -> None:
    """global() is fine as a whole source namespaceSelector and wrong anywhere else: a text seen
    valid once must not skip the global() check later."""
    once = _check(_GNP.format(name="a", sel="global()"))
    twice = _check(
        _GNP.format(name="a", sel="global()") + "---\n" + _GNP.format(name="b", sel="global()")
    )
    assert once.count("E031") == 2
    assert twice.count("E031") == 4
    assert _check(_GNP.format(name="c", sel="app == 'x'")) == ""
    assert _check(_GNP.format(name="d", sel="app == 'x'")) == ""


def _mapping(text: str):  # noqa: ANN202
    sink = DiagnosticSink()
    return load_documents(text, "t.yaml", sink)[0], sink


@pytest.mark.parametrize("known", [("a", "b"), ["a", "b"], {"a", "b"}])
def test_unknown_fields_are_reported_whatever_the_collection(known: object) -> None:
    node, _ = _mapping("a: 1\nb: 2\nc: 3\nbb: 4\n")
    sink = DiagnosticSink()
    Fields(sink, node, "thing", known)  # type: ignore[arg-type]
    assert [d.message for d in sink.diagnostics] == [
        'unknown field "c" in thing',
        'unknown field "bb" in thing (did you mean "b"?)',
    ]
    sink = DiagnosticSink()
    Fields(sink, node, "thing", known, ("c", "bb"))  # type: ignore[arg-type]
    Fields(sink, node, "thing", (), strict=False)
    assert sink.diagnostics == []
