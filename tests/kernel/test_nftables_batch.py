"""Differential test of the netlink batch encoder (``compiler/targets/nftables/batch.py``): the
kernel must hold exactly the same table after ``send_batch(encode(script))`` as after
``nft -f script``.

For every input script: netns A gets ``nft -f``, a fresh netns B gets the batch; then both are
compared in three views (``tests/support/nft_listing.py``): ``nft list table`` text,
``nft --debug=netlink list table`` (element words and rule bytecode, handles, comments' userdata)
and the kernel's raw netlink dump of every object, all exactly equal (set elements sorted, the
only normalisation: see that module). Then the same again into the existing table (A: a second
``nft -f``, B: the same batch a second time), the replace case the agent sees on every apply.

Inputs: every node of every example under ``examples/``; a generated cluster
(``benchmarks.gen``, 100 policies, 300 endpoints, node ``node-001``); the hand-made programs of
``tests/targets/test_nftables_programs.py`` including ``hostile`` (names, spans and log prefixes
with quotes, semicolons, newlines, ``$``, backslashes, non-ASCII, over-long text) plus variants
of it with other hostile strings; every node of every case of the conformance corpus
(``tests/conformance``); the demo example under FelixConfiguration variants (reject, log rate
limits, mark masks, conntrack, endpoint-to-host action, failsafe ports); random clusters from the property strategies (a script the
encoder refuses with ``Unencodable`` is counted and reported, and at least 80 % must be
encodable). Finally, a batch the kernel refuses (a jump to a chain that does not exist, at the
end of the batch, after the table was deleted and half re-made) must raise ``NetlinkError`` and
leave the table loaded before exactly as it was.

Every difference found is reported whole (script, view, a unified diff of the listings), not
just the first one. ``TORTIE_NFT_BATCH_EXAMPLES`` sets the number of random clusters (25).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from benchmarks.gen import generate, write
from compiler.cli.compile import _known_nodes  # the nodes `tortie compile --all-nodes` builds
from compiler.diagnostics import DiagnosticSink, SourceRegistry
from compiler.frontend import load
from compiler.frontend import model as m
from compiler.pipeline import compile_program
from compiler.targets.nftables import batch, render_program
from compiler.tools import nft
from runtime.nftables_netlink import NetlinkError, send_batch
from tests.conformance.loader import load_cases
from tests.property.strategies import resource_sets
from tests.support import nft_listing
from tests.support.conformance import compile_case
from tests.support.netns import Cluster
from tests.targets import test_nftables_programs as programs

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not nft.available(), reason="nft (nftables) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
RANDOM_EXAMPLES = int(os.environ.get("TORTIE_NFT_BATCH_EXAMPLES", "25"))
CASES = {case.name: case for case in load_cases()}
DIFF_LINES = 40  # of one view's unified diff, in a failure message
DIFF_WIDTH = 400  # characters of one diff line (a raw-dump rule line is kilobytes of hex)

HOSTILE_VARIANTS = (
    programs.HOSTILE,
    "q'uo\"te;semi;colon\nnew\rline\ttab $HOME ${x} \\back\\slash {brace} [x] #hash %n%s%d",
    "ünïcödé 日本語 🐈 \u202e\u200b\x00nul\x7fdel\x1besc",
    "x" * 300,
    "é" * 200,  # two bytes each in UTF-8: the renderer's byte limit is what counts
    '"',
    "%",
)


# -- compiling the inputs --------------------------------------------------------------------


def _scripts_of(resources: m.ResourceSet, nodes: list[str]) -> dict[str, str]:
    sink = DiagnosticSink()
    out = {}
    for node in nodes:
        program = compile_program(resources, node, sink, local_only=True)
        out[node] = render_program(program).script
    assert not sink.has_errors, [str(d) for d in sink.sorted()]
    return out


def _load_dir(path: Path) -> m.ResourceSet:
    sink = DiagnosticSink()
    resources = load([str(path)], sink, SourceRegistry())
    assert not sink.has_errors, [str(d) for d in sink.sorted()]
    return resources


@functools.cache
def _example_scripts(example: str) -> dict[str, str]:
    """node -> script, for every node of ``examples/EXAMPLE`` (what ``--all-nodes`` writes)."""
    resources = _load_dir(EXAMPLES_DIR / example)
    return _scripts_of(resources, sorted(_known_nodes(resources)))


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir())


# -- the comparison --------------------------------------------------------------------------


def _diff(view: str, a: str, b: str) -> str:
    lines = list(
        difflib.unified_diff(
            a.splitlines(),
            b.splitlines(),
            fromfile=f"{view}: nft -f (A)",
            tofile=f"{view}: batch (B)",
            lineterm="",
            n=1,
        )
    )
    more = f"\n... {len(lines) - DIFF_LINES} more diff lines" if len(lines) > DIFF_LINES else ""
    cut = [x if len(x) <= DIFF_WIDTH else x[:DIFF_WIDTH] + " ..." for x in lines[:DIFF_LINES]]
    return "\n".join(cut) + more


def _differences(a: str, b: str) -> list[str]:
    """One unified diff per view in which the two namespaces differ."""
    va, vb = nft_listing.views(a), nft_listing.views(b)
    return [_diff(view, va[view], vb[view]) for view in va if va[view] != vb[view]]


def _new_pair(cluster: Cluster) -> tuple[str, str]:
    """Two fresh, empty namespaces (A for nft -f, B for the batch)."""
    n = len(cluster.nodes)
    return cluster.add_node(f"a{n}").name, cluster.add_node(f"b{n + 1}").name


def compare_loads(
    cluster: Cluster, script: str, label: str, data: bytes | None = None
) -> list[str]:
    """Load ``script`` with nft -f into a fresh netns A and its batch into a fresh netns B, twice
    (the second time into the existing table); the differences found, each headed by
    ``label`` and the round. ``data``: the batch, if already encoded."""
    if data is None:
        data = batch.encode(script)
    a, b = _new_pair(cluster)
    found = []
    for round_ in ("first load (no table)", "second load (replace)"):
        nft.load(script, netns=a)
        send_batch(data, netns=b)
        found += [f"{label}, {round_}:\n{d}" for d in _differences(a, b)]
    return found


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


def _fail_on(found: list[str]) -> None:
    assert not found, f"{len(found)} difference(s):\n\n" + "\n\n".join(found)


# -- the inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("example", _examples())
def test_examples_match_nft(cluster: Cluster, example: str) -> None:
    scripts = _example_scripts(example)
    assert scripts, f"examples/{example} has no nodes"
    found: list[str] = []
    for node, script in scripts.items():
        found += compare_loads(cluster, script, f"examples/{example} node {node}")
    _fail_on(found)


@pytest.fixture(scope="module")
def generated_script(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("gen")
    write(out, generate(policies=100, endpoints=300, nodes=10, seed=1))
    return _scripts_of(_load_dir(out), ["node-001"])["node-001"]


def test_generated_cluster_matches_nft(cluster: Cluster, generated_script: str) -> None:
    assert generated_script.count("\n") > 1000, "the generated cluster should be sizeable"
    _fail_on(compare_loads(cluster, generated_script, "benchmarks.gen 100x300 node-001"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_conformance_cases_match_nft(cluster: Cluster, case: str) -> None:
    found: list[str] = []
    for node, program in compile_case(CASES[case]).items():
        script = render_program(program).script
        found += compare_loads(cluster, script, f"conformance case {case} node {node}")
    _fail_on(found)


# FelixConfiguration settings the renderer turns into different statements (reject, limit
# rate, mark bits, conntrack, endpoint-to-host verdicts, failsafe ports), on the demo example.
FELIX_VARIANTS: dict[str, dict[str, object]] = {
    "reject": {"deny_action": "Reject"},
    "no-invalid-check": {"disable_conntrack_invalid_check": True},
    "rate-minute": {"log_rate_limit": "3/minute", "log_rate_limit_burst": 1},
    "rate-hour": {"log_rate_limit": "100/hour", "log_rate_limit_burst": 1000},
    "rate-day": {"log_rate_limit": "1/day", "log_rate_limit_burst": 5},
    "no-rate": {"log_rate_limit": None},
    "high-marks": {"mark_mask": 0xFF000000},
    "low-marks": {"mark_mask": 0x00000007},
    "to-host-return": {"default_endpoint_to_host_action": "Return"},
    "to-host-accept": {"default_endpoint_to_host_action": "Accept"},
    "no-failsafes": {"failsafe_inbound": (), "failsafe_outbound": ()},
}


@pytest.mark.parametrize("variant", sorted(FELIX_VARIANTS))
def test_felix_variants_match_nft(cluster: Cluster, variant: str) -> None:
    resources = _load_dir(EXAMPLES_DIR / "demo")
    felix = dataclasses.replace(resources.felix, **FELIX_VARIANTS[variant])
    resources = dataclasses.replace(resources, felix=felix)
    found: list[str] = []
    for node, script in _scripts_of(resources, sorted(_known_nodes(resources))).items():
        found += compare_loads(cluster, script, f"demo, felix {variant}, node {node}")
    _fail_on(found)


@pytest.mark.parametrize("name", sorted(programs.PROGRAMS))
def test_hand_made_programs_match_nft(cluster: Cluster, name: str) -> None:
    script = render_program(programs.PROGRAMS[name]()).script
    _fail_on(compare_loads(cluster, script, f"program {name}"))


@pytest.mark.parametrize("index", range(len(HOSTILE_VARIANTS)))
def test_hostile_strings_match_nft(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    hostile = HOSTILE_VARIANTS[index]
    # hostile_program() puts programs.HOSTILE into policy, profile, set and file names, spans and
    # the log prefix; swap in each variant.
    monkeypatch.setattr(programs, "HOSTILE", hostile)
    script = render_program(programs.hostile_program()).script
    assert "comment" in script and "log prefix" in script
    _fail_on(compare_loads(cluster, script, f"hostile string {hostile[:40]!r}"))


@dataclasses.dataclass
class _Tally:
    scripts: int = 0
    refused: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    found: list[str] = dataclasses.field(default_factory=list)


def test_random_clusters_match_nft() -> None:
    tally = _Tally()

    @settings(
        max_examples=RANDOM_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # Differences are collected and reported all at once below, not shrunk one by one.
        phases=(Phase.explicit, Phase.generate),
    )
    @given(res=resource_sets())
    def one_cluster(res: m.ResourceSet) -> None:
        nodes = sorted({e.node for e in res.endpoints} | {"node1"})
        scripts = _scripts_of(res, nodes)
        with Cluster() as cluster:
            for node, script in scripts.items():
                tally.scripts += 1
                try:
                    data = batch.encode(script)
                except batch.Unencodable as e:
                    tally.refused[str(e)] += 1
                    continue
                label = f"random cluster #{tally.scripts} node {node}"
                found = compare_loads(cluster, script, label, data)
                if found:
                    tally.found += found + [f"{label}: the script:\n{script}"]

    one_cluster()
    refused = sum(tally.refused.values())
    report = [f"{tally.scripts} scripts, {refused} refused by the encoder (Unencodable):"]
    report += [f"  {n} x {msg}" for msg, n in tally.refused.most_common()]
    print("\n".join(report))
    if refused:  # shown in pytest's summary even when the test passes: what to encode next
        warnings.warn("\n".join(report), stacklevel=1)
    _fail_on(tally.found)
    assert tally.scripts and refused <= 0.2 * tally.scripts, "\n".join(report)


# -- a refused batch commits nothing ---------------------------------------------------------


def _with_bad_jump(script: str) -> str:
    """``script`` with a last rule (at the end of the last chain, so after the table was deleted
    and most of it re-made in the same transaction) that jumps to a chain that does not exist."""
    body, tail = script.rstrip().rsplit("\n\t}\n}", 1)
    assert not tail.strip(), "the script should end with its last chain and the table"
    return body + "\n\t\tjump no-such-chain\n\t}\n}\n"


def test_refused_batch_changes_nothing(cluster: Cluster) -> None:
    scripts = list(_example_scripts(_examples()[0]).values())
    before_script, other = scripts[0], scripts[-1]
    if other == before_script:  # one node only: any other valid script will do
        other = render_program(programs.workloads_program()).script
    bad = _with_bad_jump(other)
    a, b = _new_pair(cluster)
    nft.load(before_script, netns=a)
    send_batch(batch.encode(before_script), netns=b)
    before = nft_listing.views(b)
    assert before == nft_listing.views(a)
    with pytest.raises(nft.NftError):  # nft refuses it too: the batch is the same transaction
        nft.load(bad, netns=a)
    data = batch.encode(bad)
    assert data != batch.encode(other)
    with pytest.raises(NetlinkError):
        send_batch(data, netns=b)
    after = nft_listing.views(b)
    _fail_on(
        [_diff(view, before[view], after[view]) for view in before if before[view] != after[view]]
    )
    # The socket and the table still work: the good version of the refused script loads.
    send_batch(batch.encode(other), netns=b)
    nft.load(other, netns=a)
    _fail_on(_differences(a, b))
