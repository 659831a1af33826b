"""Netlink read-back of chains and sets (``runtime/nftables_readback.py``) on the real kernel.

Every input script (each node of every example, each node of every conformance case, a
``benchmarks.gen`` cluster of 100 policies) is loaded three ways into three namespaces: its
batch (``compiler.targets.nftables.batch.encode``) with ``send_batch`` twice (A1, A2) and the
script with ``nft -f`` (B). In each, every chain the batch makes is dumped over netlink and
``compare(expected_chains(batch), dump)`` must find nothing, and the sets the batch creates
(declarations and elements) must match too; the digest must be the same for a second dump and
for all three namespaces.

Then the kernel is changed behind the batch's back (``nft add rule``, ``delete rule``,
``replace rule`` with another comment, another port, another set, and a table loaded with
another chain comment): ``compare`` must name the chain and the digest must change. A
``replace rule`` with the very same rule must change neither (the rule's handle may be new:
it is not part of the state). Finally a hand-made delta batch (flush one chain, add its rules
back with one changed, as the agent's fast path will) is sent and checked the same way.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.gen import generate, write
from compiler.targets.nftables import batch, render_program
from compiler.tools import nft
from runtime import nftables_batchcheck as bc
from runtime import nftables_readback as rb
from runtime.nftables_netlink import send_batch
from tests.conformance.loader import load_cases
from tests.kernel.test_nftables_batch import _example_scripts, _examples, _load_dir, _scripts_of
from tests.support.conformance import compile_case
from tests.support.netns import Cluster

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not nft.available(), reason="nft (nftables) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]


# -- inputs --------------------------------------------------------------------------------------


@functools.cache
def _generated() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        write(Path(out), generate(policies=100, endpoints=300, nodes=10, seed=1))
        return _scripts_of(_load_dir(Path(out)), ["node-001"])["node-001"]


@functools.cache
def _inputs() -> dict[str, str]:
    """label -> script."""
    out = {}
    for example in _examples():
        for node, script in _example_scripts(example).items():
            out[f"examples/{example} {node}"] = script
    for case in load_cases():
        for node, program in compile_case(case).items():
            out[f"case {case.name} {node}"] = render_program(program).script
    out["benchmarks.gen 100x300 node-001"] = _generated()
    return out


@pytest.fixture(scope="module")
def spaces() -> Iterator[tuple[str, str, str]]:
    """Three empty namespaces: A1 and A2 for the batch, B for ``nft -f``."""
    with Cluster() as c:
        yield c.add_node("a1").name, c.add_node("a2").name, c.add_node("b").name


def _check(ns: str, data: bytes) -> tuple[list[str], str]:
    """(problems, digest) of the chains and sets ``data`` made, as ``ns`` holds them."""
    want = bc.expected_chains(data)
    sets = bc.expected_sets(data)
    dumped = rb.dump_chains(want, netns=ns)
    dsets = rb.dump_set_decls(sets, netns=ns, elements=True)
    problems = bc.compare(want, dumped) + bc.compare_sets(sets, dsets, elements=True)
    return problems, rb.digest(dumped, dsets)


# -- every input, three loads --------------------------------------------------------------------


def test_batch_and_nft_loads_read_back_as_sent(spaces: tuple[str, str, str]) -> None:
    a1, a2, b = spaces
    found: list[str] = []
    checked = rules = 0
    for label, script in _inputs().items():
        data = batch.encode(script)
        want = bc.expected_chains(data)
        assert want and all(c.exists and c.complete and c.created for c in want.values())
        rules += sum(len(c.rules) for c in want.values())
        send_batch(data, netns=a1)
        send_batch(data, netns=a2)
        nft.load(script, netns=b)
        digests = set()
        for ns, how in ((a1, "batch"), (a2, "batch again"), (b, "nft -f")):
            problems, digest = _check(ns, data)
            found += [f"{label} ({how}): {p}" for p in problems]
            digests.add(digest)
        again = _check(a1, data)[1]  # a second dump of the same state
        digests.add(again)
        if len(digests) != 1:
            found.append(f"{label}: digests differ: {sorted(digests)}")
        checked += 1
    assert not found, f"{len(found)} problem(s):\n" + "\n".join(found[:20])
    assert checked > 50 and rules > 2000, (checked, rules)


# -- tampering -----------------------------------------------------------------------------------


def _chain_lines(script: str, chain: str) -> list[str]:
    """The rule lines of ``chain`` in the script (header lines dropped)."""
    m = re.search(rf"^\tchain {re.escape(chain)} {{\n(.*?)^\t}}\n", script, re.M | re.S)
    assert m, chain
    lines = [x.strip() for x in m[1].splitlines() if x.strip()]
    return [x for x in lines if not x.startswith(("type ", "comment "))]


def _find(script: str, pattern: str) -> tuple[str, int, str]:
    """(chain, index of the rule in it, the rule) of the first rule matching ``pattern``."""
    for m in re.finditer(r"^\tchain (\S+) \{\n", script, re.M):
        for i, line in enumerate(_chain_lines(script, m[1])):
            if re.search(pattern, line):
                return m[1], i, line
    raise AssertionError(f"no rule matches {pattern!r}")


@pytest.fixture
def loaded(spaces: tuple[str, str, str]) -> tuple[str, str, bytes, str]:
    """(netns, script, batch, digest) with the generated cluster freshly loaded in A1."""
    script = _generated()
    data = batch.encode(script)
    send_batch(data, netns=spaces[0])
    problems, digest = _check(spaces[0], data)
    assert not problems
    RAW[spaces[0]] = _raw_digest(spaces[0], data)
    assert _raw_digest(spaces[0], data) == RAW[spaces[0]]  # stable across dumps
    return spaces[0], script, data, digest


RAW: dict[str, str] = {}  # netns -> dump_digest right after the load


def _handle(ns: str, chain: str, index: int) -> int:
    handle = rb.dump_chains([chain], netns=ns)[chain].rules[index].handle
    assert handle is not None
    return handle


def _raw_digest(ns: str, data: bytes) -> str:
    """``dump_digest`` of the chains ``data`` made (the agent's stand-ins use it)."""
    return rb.dump_digest(rb.dump_chains(bc.expected_chains(data), netns=ns))


def _assert_caught(ns: str, data: bytes, digest: str, chain: str) -> None:
    problems, after = _check(ns, data)
    assert problems and all(f"chain {chain}:" in p for p in problems), problems
    assert after != digest
    assert _raw_digest(ns, data) != RAW[ns]


def test_added_rule_is_caught(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, _, _ = _find(script, r"^iifname ")
    nft.run(["add", "rule", "inet", "tortie", chain, "accept"], netns=ns)
    _assert_caught(ns, data, digest, chain)


def test_deleted_rule_is_caught(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, i, _ = _find(script, r" accept| drop| return")
    handle = _handle(ns, chain, i)
    nft.run(["delete", "rule", "inet", "tortie", chain, "handle", str(handle)], netns=ns)
    _assert_caught(ns, data, digest, chain)


def _replace(ns: str, chain: str, index: int, rule: str) -> None:
    handle = _handle(ns, chain, index)
    nft.load(f"replace rule inet tortie {chain} handle {handle} {rule}\n", netns=ns)


def test_identical_replace_changes_nothing(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, i, line = _find(script, r"@s4-")
    _replace(ns, chain, i, line)
    problems, after = _check(ns, data)
    assert not problems and after == digest
    assert _raw_digest(ns, data) == RAW[ns]


def test_changed_comment_is_caught(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, i, line = _find(script, r' comment "[^"]+"$')
    changed = re.sub(r' comment "([^"]+)"$', r' comment "\1."', line)
    _replace(ns, chain, i, changed)
    _assert_caught(ns, data, digest, chain)


def test_changed_port_is_caught(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, i, line = _find(script, r"th dport \d+ ")
    port = int(re.search(r"th dport (\d+) ", line)[1])  # type: ignore[index]
    changed = line.replace(f"th dport {port} ", f"th dport {port + 1} ", 1)
    _replace(ns, chain, i, changed)
    problems, _ = _check(ns, data)
    assert any("rule" in p and "differs" in p for p in problems), problems
    _assert_caught(ns, data, digest, chain)


def test_other_set_name_is_caught(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, i, line = _find(script, r"@s4-\S+")
    used = re.search(r"@(s4-\S+)", line)[1]  # type: ignore[index]
    other = next(n for n in re.findall(r"^\tset (s4-\S+) \{", script, re.M) if n != used)
    _replace(ns, chain, i, line.replace(f"@{used}", f"@{other}"))
    _assert_caught(ns, data, digest, chain)


def test_other_chain_comment_is_caught(spaces: tuple[str, str, str]) -> None:
    """The kernel keeps a chain's comment on ``add chain``, so the changed comment comes from
    a whole table loaded with it (someone else's script)."""
    ns = spaces[2]
    script = _generated()
    data = batch.encode(script)
    send_batch(data, netns=ns)
    digest = _check(ns, data)[1]
    m = re.search(r'^\tchain (\S+) \{\n\t\tcomment "([^"]+)"$', script, re.M)
    assert m
    nft.load(script.replace(m[0], m[0][:-1] + '."', 1), netns=ns)
    problems, after = _check(ns, data)
    assert problems and all(f"chain {m[1]}: header differs" in p for p in problems), problems
    assert after != digest


# -- a delta batch -------------------------------------------------------------------------------


def _messages(data: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack_from("=I", data, off)
        out.append(data[off : off + length])
        off += (length + 3) & ~3
    return out


def _message(kind: int, flags: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", 1, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, flags, 0, 0) + body


def _control(kind: int) -> bytes:
    return struct.pack("=IHHIIBBH", 20, kind, 1, 0, 0, 0, 0, 0x0A00)


def _sequenced(messages: list[bytes]) -> bytes:
    """BATCH_BEGIN, ``messages`` (the last one asking for an ack), BATCH_END, seq 1, 2, ..."""
    msgs = [_control(0x10), *messages, _control(0x11)]
    out = []
    for seq, m in enumerate(msgs, 1):
        b = bytearray(m)
        struct.pack_into("=I", b, 8, seq)
        if seq == len(msgs) - 1:
            struct.pack_into("=H", b, 6, struct.unpack_from("=H", b, 6)[0] | 0x4)
        out.append(bytes(b) + b"\0" * (-len(b) % 4))
    return b"".join(out)


def _rule_messages(data: bytes, chain: str) -> list[bytes]:
    """The full batch's NEWRULE messages for ``chain`` (NFTA_RULE_CHAIN == chain)."""
    name = chain.encode() + b"\0"
    out = []
    for m in _messages(data):
        kind = struct.unpack_from("=H", m, 4)[0]
        if kind == (10 << 8) | 6 and rb._first(rb._attrs(m, 20), 2) == name:
            out.append(m)
    return out


def test_delta_flush_and_add_reads_back(loaded: tuple[str, str, bytes, str]) -> None:
    ns, script, data, digest = loaded
    chain, _, _ = _find(script, r"th dport \d+ ")
    table = rb._attr(1, b"tortie\0")
    flush = _message(8, 0x1, table + rb._attr(2, chain.encode() + b"\0"))
    rules = _rule_messages(data, chain)
    assert rules
    delta = _sequenced([flush, *rules])
    want = bc.expected_chains(delta)
    assert list(want) == [chain] and want[chain].flushed and want[chain].complete
    send_batch(delta, netns=ns)
    problems, after = _check(ns, data)
    assert not problems and after == digest  # the same rules again: the same state
    assert not bc.compare(want, rb.dump_chains(want, netns=ns))
    # The delta's rules, one of them dropped: the delta reads back as sent, the full batch
    # no longer does.
    delta2 = _sequenced([flush, *rules[1:]])
    send_batch(delta2, netns=ns)
    want2 = bc.expected_chains(delta2)
    assert not bc.compare(want2, rb.dump_chains(want2, netns=ns))
    _assert_caught(ns, data, digest, chain)
