"""The nftables script as one netlink batch (compiler/targets/nftables/batch.py), without a kernel.

What the kernel makes of a batch is tested in tests/kernel/test_nftables_batch.py (both ways
loaded into namespaces, listings and bytecode compared). Here: the batch's framing and message
counts agree with the script, encoding is deterministic, every statement the encoder does not
reproduce is refused with :class:`Unencodable` (never another exception, also for randomly
damaged scripts), and the batch file's header binds it to one script and one byte order.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.targets.nftables import BATCH, render_program, with_batch
from compiler.targets.nftables import batch as nb
from compiler.targets.nftables.script import Rendered
from runtime import nftables_netlink
from tests.targets.test_nftables_golden import CASES

ROOT = Path(__file__).resolve().parents[2]
NEWTABLE, DELTABLE, NEWCHAIN, NEWRULE, NEWSET, NEWSETELEM = 0, 2, 3, 6, 9, 12


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload after the nfgenmsg) of every message, checking the framing."""
    out = []
    off = 0
    while off < len(data):
        length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        assert length >= 16 and off + length <= len(data), f"bad length at {off}"
        out.append((kind, flags, seq, data[off + 20 : off + length]))
        off += (length + 3) & ~3
    assert off == len(data)
    return out


def rendered(name: str) -> Rendered:
    return render_program(CASES[name]())


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_frames_the_whole_script(name: str) -> None:
    r = rendered(name)
    data = nb.encode(r.script)
    msgs = messages(data)
    assert msgs[0][0] == nb.NFNL_MSG_BATCH_BEGIN and msgs[-1][0] == nb.NFNL_MSG_BATCH_END
    body = msgs[1:-1]
    assert all(kind >> 8 == nb.NFNL_SUBSYS_NFTABLES for kind, *_ in body)
    kinds = [kind & 0xFF for kind, *_ in body]
    # create-if-missing, delete, create: the script's three commands, in its order
    assert kinds[:3] == [NEWTABLE, DELTABLE, NEWTABLE]
    assert kinds.count(NEWCHAIN) == r.summary["chains"]
    assert kinds.count(NEWRULE) == r.summary["rules"]
    named = [p for kind, _f, _s, p in body if kind & 0xFF == NEWSET and b"__set%d" not in p]
    declared = sum(1 for line in r.script.splitlines() if line.startswith(("\tset ", "\tmap ")))
    assert len(named) == declared
    # chains before sets before the first rule (rules refer to both)
    last_chain = max(i for i, k in enumerate(kinds) if k == NEWCHAIN)
    assert all(k == NEWCHAIN for k in kinds[3 : last_chain + 1])
    first_rule = kinds.index(NEWRULE)
    assert all(k in (NEWSET, NEWSETELEM) for k in kinds[last_chain + 1 : first_rule])
    assert all(k in (NEWRULE, NEWSET, NEWSETELEM) for k in kinds[first_rule:])
    seqs = [seq for _k, _f, seq, _p in msgs]
    assert seqs == list(range(len(msgs)))
    # only the last message asks for an acknowledgement (runtime send_batch waits for it)
    acked = [i for i, (_k, flags, _s, _p) in enumerate(body) if flags & nb.NLM_F_ACK]
    assert acked == [len(body) - 1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_is_deterministic(name: str) -> None:
    script = rendered(name).script
    assert nb.encode(script) == nb.encode(script)


def test_comments_travel_as_userdata() -> None:
    r = rendered("hostile")
    data = nb.encode(r.script)
    for line in r.script.splitlines():
        if ' comment "' in line and not line.lstrip().startswith("#"):
            text = line.rsplit(' comment "', 1)[1][:-1].encode()
            assert bytes((len(text) + 1,)) + text + b"\0" in data


TABLE = "table inet tortie {}\ndelete table inet tortie\ntable inet tortie {\n"


def script_with(rule: str, extra: str = "") -> str:
    return (
        TABLE
        + extra
        + '\tchain c {\n\t\tcomment "x"\n\t\t'
        + rule
        + "\n\t}\n\tchain d {\n\t\treturn\n\t}\n}\n"
    )


def test_a_known_rule_encodes() -> None:
    data = nb.encode(script_with("meta nfproto ipv4 ip saddr 10.0.0.0/8 th dport 80 jump d"))
    assert sum(1 for k, *_ in messages(data) if k & 0xFF == NEWRULE) == 2


@pytest.mark.parametrize(
    "rule",
    [
        "counter accept",  # a statement Tortie does not write
        "ip saddr { 10.0.0.1, 10.0.0.2 } accept",  # anonymous address set
        "meta nfproto ipv4 th sport 1 th dport 2 accept",  # adjacent compares nft merges
        "meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.2 accept",  # the same
        'log prefix "a\\" level info',  # a backslash in a string
        "meta nfproto ipv4 ip saddr 10.0.0.1/8 accept",  # host bits set
        "meta nfproto ipv4 ip saddr 0.0.0.0/0 accept",
        "meta nfproto ipv5 accept",
        "th dport 70000 accept",
        "th dport 010 accept",  # leading zero: nft's reading of it is not ours to guess
        "ip saddr @nosuchset accept",
        "jump",
        "meta mark set 1",
    ],
)
def test_unknown_forms_are_refused(rule: str) -> None:
    with pytest.raises(nb.Unencodable):
        nb.encode(script_with(rule))


@pytest.mark.parametrize(
    "extra",
    [
        "\tset s {\n\t\ttype ether_addr\n\t}\n",
        "\tset s {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.0.0.0/8, 10.1.0.0/16 }\n\t}\n",
        "\tset s {\n\t\ttype ipv4_addr\n\t\tflags constant\n\t}\n",
        "\tflowtable f {\n\t}\n",
        "\tchain x {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n",
    ],
)
def test_unknown_declarations_are_refused(extra: str) -> None:
    with pytest.raises(nb.Unencodable):
        nb.encode(script_with("accept", extra))


def test_other_commands_are_refused() -> None:
    with pytest.raises(nb.Unencodable):
        nb.encode("flush ruleset\n" + script_with("accept"))
    with pytest.raises(nb.Unencodable):
        nb.encode(script_with("accept") + "add rule inet tortie c accept\n")
    with pytest.raises(nb.Unencodable):
        nb.encode("")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(CASES)),
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(["delete", "dup", "swap", "insert"]),
            st.sampled_from(
                ['"', "{", "}", "@", ".", ",", "!=", "/", "-", "0x", "jump", "\n", "\t}", "%"]
            ),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_damaged_scripts_encode_or_are_refused(name: str, edits: list) -> None:
    """Random damage: the encoder returns a well-framed batch or raises Unencodable, nothing
    else (no IndexError, no struct.error, no half-built output)."""
    text = rendered(name).script
    for pos, op, token in edits:
        p = pos % (len(text) + 1)
        if op == "delete":
            text = text[:p] + text[p + 1 :]
        elif op == "dup":
            text = text[:p] + text[p : p + 8] + text[p:]
        elif op == "swap":
            text = text[:p] + token + text[p + 1 :]
        else:
            text = text[:p] + token + text[p:]
    try:
        data = nb.encode(text)
    except nb.Unencodable:
        return
    msgs = messages(data)
    assert msgs[0][0] == nb.NFNL_MSG_BATCH_BEGIN and msgs[-1][0] == nb.NFNL_MSG_BATCH_END


# -- the batch file ---------------------------------------------------------------------------


def test_batch_file_is_bound_to_its_script_and_byte_order() -> None:
    script = rendered("workloads").script
    data = nb.encode(script)
    file = nb.with_header(script, data)
    assert nftables_netlink.read_batch(file, script) == data
    meta = json.loads(file.split(b"\n")[1])  # the header line after the magic
    assert meta["byteorder"] == sys.byteorder and meta["bytes"] == len(data)
    assert nftables_netlink.read_batch(file, script + "\n") is None  # another script
    assert nftables_netlink.read_batch(file[:-1], script) is None  # truncated
    other = b"big" if sys.byteorder == "little" else b"little"
    swapped = file.replace(sys.byteorder.encode(), other, 1)
    assert nftables_netlink.read_batch(swapped, script) is None
    assert nftables_netlink.read_batch(b"garbage", script) is None


def test_send_batch_checks_the_framing_before_sending() -> None:
    with pytest.raises(ValueError):
        nftables_netlink.send_batch(b"\x10\x00\x00\x00" * 4, netns="no-such-netns-tortie")
    script = rendered("empty").script
    data = nb.encode(script)
    with pytest.raises(ValueError):
        nftables_netlink.send_batch(data[:-20], netns="no-such-netns-tortie")
    msgs = messages(data)
    offsets = [0]
    for _k, _f, _s, p in msgs:
        offsets.append(offsets[-1] + ((20 + len(p) + 3) & ~3))
    last = offsets[-3]  # the message before BATCH_END
    no_ack = bytearray(data)
    struct.pack_into("=H", no_ack, last + 6, msgs[-2][1] & ~nb.NLM_F_ACK)
    foreign = bytearray(data)
    struct.pack_into("=H", foreign, offsets[1] + 4, (1 << 8) | 0)  # another subsystem
    gap = bytearray(data)
    struct.pack_into("=I", gap, offsets[-2] + 8, len(msgs) + 5)  # BATCH_END's seq
    for bad in (no_ack, foreign, gap):
        with pytest.raises(ValueError):
            nftables_netlink.send_batch(bytes(bad), netns="no-such-netns-tortie")


def test_with_batch_adds_the_file() -> None:
    from compiler.targets.nftables import NftablesTarget

    artifact = NftablesTarget().render(CASES["hosts"]())
    added, why = with_batch(artifact)
    assert why is None and set(added.files) == {*artifact.files, BATCH}
    assert BATCH in added.manifest()["files"]  # type: ignore[operator]


def test_cli_writes_the_batch(tmp_path: Path) -> None:
    demo = str(ROOT / "examples" / "demo")

    def compile_to(target: str, out: Path):  # type: ignore[no-untyped-def]
        args = ["compile", "-f", demo, "--node", "node1", "--target", target, "--nft-batch"]
        return CliRunner().invoke(main, [*args, "-o", str(out)])

    res = compile_to("nftables", tmp_path / "n1")
    assert res.exit_code == 0, res.output
    script = (tmp_path / "n1" / "nftables.nft").read_text()
    batch_file = (tmp_path / "n1" / BATCH).read_bytes()
    assert nftables_netlink.read_batch(batch_file, script) is not None
    res = compile_to("iptables", tmp_path / "x")
    assert res.exit_code == 2 and "--nft-batch" in res.output
    assert not (tmp_path / "x").exists()
