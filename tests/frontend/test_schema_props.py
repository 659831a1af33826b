"""Properties of the whole frontend: no input makes it raise, and input order never matters."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import NO_SPAN, DiagnosticSink, SourceRegistry, Span
from compiler.frontend import load, load_text
from compiler.frontend.schema import READERS
from compiler.frontend.schema.felix import FELIX_READ
from compiler.frontend.schema.rules import ENTITY_FIELDS, RULE_FIELDS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(docs: list[Any], **kw: Any) -> str:
    return yaml.dump_all(docs, Dumper=DUMPER, allow_unicode=True, **kw)


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_ok(text: str) -> DiagnosticSink:
    """load_text must return; every problem must be a diagnostic."""
    sink, sources = DiagnosticSink(), SourceRegistry()
    load_text(text, "fuzz.yaml", sink, sources)
    for d in sink.diagnostics:
        assert d.code[0] in "EW" and d.message
    return sink


# -- arbitrary YAML-ish text ----------------------------------------------------------------------
YAML_BITS = st.sampled_from(
    [
        ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "'", '"', "\\", "\n", "\n  ", "\n    ", "\t", "#",
        "&a ", "*a", "&b ", "*b", "!!str ", "!!binary ", "!foo ", "<<: ", "? ", "|", ">", "---\n", "...\n",
        "apiVersion: projectcalico.org/v3\n", "kind: NetworkPolicy\n", "kind: List\n", "apiVersion: v1\n",
        "metadata:\n  name: x\n", "spec:\n", "items:\n", "selector: ", "ingress:\n- action: Allow\n",
        "nets: [10.0.0.0/8]", "ports: [80]", "all()", "has(a)", "0x10", "1e9", "~", "null", "yes", "\x00",
        "\u2028", "é", "\ufeff",
    ]
)  # fmt: skip
yamlish = st.lists(st.one_of(YAML_BITS, st.text(max_size=8)), max_size=40).map("".join)


@SETTINGS
@given(yamlish)
def test_arbitrary_yamlish_text_never_raises(text: str) -> None:
    load_ok(text)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    load_ok(text)


# -- arbitrary structured documents ---------------------------------------------------------------
KNOWN_KEYS = sorted(
    {"apiVersion", "kind", "metadata", "spec", "name", "namespace", "labels", "items", "status"}
    | set(RULE_FIELDS)
    | set(ENTITY_FIELDS)
    | set(FELIX_READ)
    | {
        "selector", "types", "order", "tier", "podSelector", "policyTypes", "from", "to", "ipBlock",
        "cidr", "except", "matchLabels", "matchExpressions", "key", "operator", "values", "port",
        "endPort", "protocol", "nodeName", "podIP", "podIPs", "ip", "containers", "ports",
        "containerPort", "interfaceName", "expectedIPs", "node", "profiles", "subject", "priority",
        "namespaces", "pods", "networks", "protocols", "tcp", "destinationPort", "number", "range",
        "blockSize", "ipipMode", "vxlanMode", "peerIP", "asNumber", "communities", "value",
        "labelsToApply", "defaultAction", "preDNAT", "doNotTrack", "applyOnForward", "http",
    }
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["all()", "global()", "app == 'x'", "10.0.0.0/8", "fd00::/64", "TCP", "ICMP", "Allow", "Deny",
                     "Reject", "Ingress", "Egress", "80:90", "http", "In", "Exists", "Admin", "eth0", "*"]),
)  # fmt: skip
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=30,
)
kinds = st.sampled_from(
    sorted(READERS) + [("v1", "List"), ("projectcalico.org/v3", "NetworkPolicyList"), ("x/v1", "Y")]
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    api_version, kind = draw(kinds)
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    doc["metadata"] = draw(
        st.one_of(
            trees,
            st.fixed_dictionaries(
                {"name": st.sampled_from(["x", "Bad", ""]), "namespace": scalars}
            ),
        )
    )
    doc["spec"] = draw(
        st.one_of(trees, st.dictionaries(st.sampled_from(KNOWN_KEYS), trees, max_size=8))
    )
    if draw(st.booleans()):
        doc["items"] = draw(
            st.lists(st.dictionaries(st.sampled_from(KNOWN_KEYS), trees, max_size=5), max_size=3)
        )
    return doc


@SETTINGS
@given(st.lists(documents(), min_size=1, max_size=4), st.booleans())
def test_arbitrary_structured_documents_never_raise(
    docs: list[dict[str, Any]], as_json: bool
) -> None:
    # JSON is YAML too: one JSON object per document.
    load_ok("\n---\n".join(json.dumps(d, default=str) for d in docs) if as_json else dump(docs))


def _demo_docs() -> list[dict[str, Any]]:
    out = []
    for path in sorted(DEMO.rglob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            out.extend(d["items"] if d and d.get("kind") == "List" else [d] if d else [])
    return out


DEMO_DOCS = _demo_docs()


def _mutate(doc: Any, rnd: random.Random, replacement: Any) -> Any:
    """``doc`` with one random subtree replaced."""
    if isinstance(doc, dict) and doc and rnd.random() < 0.8:
        k = rnd.choice(sorted(doc, key=str))
        return {**doc, k: _mutate(doc[k], rnd, replacement)}
    if isinstance(doc, list) and doc and rnd.random() < 0.8:
        i = rnd.randrange(len(doc))
        return doc[:i] + [_mutate(doc[i], rnd, replacement)] + doc[i + 1 :]
    return replacement


@SETTINGS
@given(st.integers(min_value=0, max_value=2**32), trees)
def test_mutated_realistic_documents_never_raise(seed: int, replacement: Any) -> None:
    rnd = random.Random(seed)
    doc = _mutate(rnd.choice(DEMO_DOCS), rnd, replacement)
    load_ok(dump([doc]))


# -- determinism -------------------------------------------------------------------------------------
def strip_spans(obj: Any) -> Any:
    """``obj`` with every Span replaced by NO_SPAN (reordering input moves lines, nothing else)."""
    if isinstance(obj, Span):
        return NO_SPAN
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj,
            **{
                f.name: strip_spans(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init
            },
        )
    if isinstance(obj, tuple):
        return tuple(strip_spans(x) for x in obj)
    return obj


def _shuffle_keys(doc: Any, rnd: random.Random) -> Any:
    if isinstance(doc, dict):
        items = list(doc.items())
        rnd.shuffle(items)
        return {k: _shuffle_keys(v, rnd) for k, v in items}
    if isinstance(doc, list):
        return [_shuffle_keys(x, rnd) for x in doc]  # list order is meaning (rules), keep it
    return doc


def test_file_order_does_not_change_the_result() -> None:
    files = sorted(str(p) for p in DEMO.rglob("*.yaml"))
    results = []
    for seed in range(3):
        order = files[:]
        random.Random(seed).shuffle(order)
        sink, sources = DiagnosticSink(), SourceRegistry()
        results.append(load(order, sink, sources))
        assert not sink.has_errors
    assert results[0] == results[1] == results[2]


_BASE_SINK = DiagnosticSink()
_BASE = strip_spans(load_text(dump(DEMO_DOCS), "a.yaml", _BASE_SINK, SourceRegistry()))


@settings(max_examples=10, deadline=None)
@given(st.randoms(use_true_random=False))
def test_shuffled_documents_and_keys_give_the_same_resources(rnd: random.Random) -> None:
    docs = [_shuffle_keys(d, rnd) for d in DEMO_DOCS]
    rnd.shuffle(docs)
    sink = DiagnosticSink()
    shuffled = load_text(dump(docs, sort_keys=False), "a.yaml", sink, SourceRegistry())
    assert strip_spans(shuffled) == _BASE
    assert sorted(d.code for d in sink.diagnostics) == sorted(
        d.code for d in _BASE_SINK.diagnostics
    )
