"""runtime/nftables_fast.py and the state dir's set overlay, without a kernel."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from runtime.nftables import UNIT, normalise
from runtime.nftables_fast import element_lines, overlay_record, touched_sets
from runtime.state import Record, SetOverlay, StateDir

LISTING = """table inet tortie {
\tset s4-b {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.1, 10.0.1.0/24 }
\t}

\tset s4-a {
\t\ttype ipv4_addr
\t\tflags interval
\t}

\tchain c {
\t\tip saddr @s4-a accept
\t}
}
"""


def _record(kernel: str) -> Record:
    return Record(
        "nftables", "n1", "A" * 64, "x", "t", 1.0, "full", {"elements": 2}, {UNIT: kernel}
    )


def test_touched_sets_and_elements() -> None:
    script = (
        "# Tortie set update\n"
        "delete element inet tortie s4-b { 10.0.0.1 }\n"
        "add element inet tortie s4-a { 10.0.0.1, 10.0.0.2 }\n"
        "add element inet tortie s4-a { 10.0.0.3 }\n"
    )
    assert touched_sets(script) == ["s4-a", "s4-b"]
    block = "\tset x {\n\t\ttype ipv4_addr\n\t\telements = { 1.2.3.4, 10.0.0.0/8,\n\t\t\t     5.6.7.8 }\n\t}\n"
    assert element_lines(block) == ("1.2.3.4", "10.0.0.0/8", "5.6.7.8")
    assert element_lines("\tset x {\n\t\ttype ipv4_addr\n\t}\n") == ()


def test_overlay_record_equals_normalising_the_changed_listing() -> None:
    new_a = (
        "\tset s4-a {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.9.9.9 }\n\t}\n"
    )
    new_b = "\tset s4-b {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n"
    changed = LISTING.replace(
        "\tset s4-a {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n", new_a
    ).replace(
        "\tset s4-b {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.0.0.1, 10.0.1.0/24 }\n\t}\n",
        new_b,
    )
    rec = _record(normalise(LISTING))
    got = overlay_record(
        rec, SetOverlay(rec.artifact, [1, 2, 3], "p1", 1, 5.0, {"s4-a": new_a, "s4-b": new_b})
    )
    assert got.kernel[UNIT] == normalise(changed)
    # A set the listing lacks is not spliced: the overlay does not belong to this record.
    lacking = SetOverlay(rec.artifact, [1, 2, 3], "p1", 1, 5.0, {"s4-zz": new_a})
    assert overlay_record(rec, lacking) is rec


def test_overlay_record_counts_and_mode() -> None:
    new_a = "\tset s4-a {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 1.1.1.1, 2.2.2.2, 3.3.3.3 }\n\t}\n"
    rec = _record(normalise(LISTING))
    ov = SetOverlay(rec.artifact, [1, 2, 3], "p1", 2, 5.0, {"s4-a": new_a})
    got = overlay_record(rec, ov)
    assert got.counts["elements"] == 5 and got.mode == "sets" and got.overlay == "p1"
    assert got.overlay_updates == 2 and got.applied_at == 5.0
    assert "3.3.3.3" in (got.kernel[UNIT] or "") and rec.kernel[UNIT] != got.kernel[UNIT]


def test_state_dir_merges_only_a_current_overlay(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    rec = _record(normalise(LISTING))
    state.write_record(rec)
    stat = state.record_stat()
    assert stat is not None
    new_a = (
        "\tset s4-a {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 7.7.7.7 }\n\t}\n"
    )
    state.write_overlay(SetOverlay(rec.artifact, list(stat), "p1", 1, 9.0, {"s4-a": new_a}))
    merged = state.read_record()
    assert merged is not None and merged.overlay == "p1" and "7.7.7.7" in merged.kernel[UNIT]
    plain = state.read_record(overlay=False)
    assert plain is not None and not plain.overlay and "7.7.7.7" not in plain.kernel[UNIT]
    # An overlay made on another artifact or another applied.json is stale: ignored.
    state.write_overlay(SetOverlay("B" * 64, list(stat), "p1", 1, 9.0, {"s4-a": new_a}))
    assert not state.read_record().overlay  # type: ignore[union-attr]
    state.write_overlay(SetOverlay(rec.artifact, [0, 0, 0], "p1", 1, 9.0, {"s4-a": new_a}))
    assert not state.read_record().overlay  # type: ignore[union-attr]
    # Writing a record drops the overlay.
    state.write_overlay(SetOverlay(rec.artifact, list(stat), "p1", 1, 9.0, {"s4-a": new_a}))
    state.write_record(rec)
    assert state.read_overlay() is None and not os.path.exists(state.overlay_path)
    # A corrupt sets.json is ignored, not fatal.
    state.overlay_path.write_text("{not json")
    assert state.read_overlay() is None and state.read_record() == state.read_record(False)


def test_cli_documents_drift_interval() -> None:
    out = CliRunner().invoke(main, ["agent", "--help"]).output
    assert "--drift-interval" in out and "generation id" in out and "--record-delay" in out


def test_ntop_is_glibc_inet_ntop() -> None:
    """Addresses print as nft prints them (glibc inet_ntop, embedded IPv4 forms included)."""
    from runtime.nftables_netlink import ntop

    rng = random.Random(5)
    for _ in range(3000):
        words = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.randrange(1 << 16))) for _ in range(8)]
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        assert ntop(raw) == socket.inet_ntop(socket.AF_INET6, raw), words
        raw4 = bytes(rng.randrange(256) for _ in range(4))
        assert ntop(raw4) == socket.inet_ntop(socket.AF_INET, raw4)


def test_decode_intervals_and_layout() -> None:
    from runtime.nftables_netlink import RawElement, decode, elements_text

    def v4(text: str) -> bytes:
        return socket.inet_aton(text)

    end = 1  # NFT_SET_ELEM_INTERVAL_END
    raw = [  # dump order (descending), nft's end element at 0, adjacent ranges
        RawElement(v4("10.1.0.10"), None, end),
        RawElement(v4("10.1.0.6"), None, 0),
        RawElement(v4("10.1.0.6"), None, end),
        RawElement(v4("10.1.0.1"), None, 0),
        RawElement(v4("10.0.1.0"), None, end),
        RawElement(v4("10.0.0.0"), None, 0),
        RawElement(v4("0.0.0.0"), None, end),
    ]
    got = decode(raw)
    assert got == ["10.0.0.0/24", "10.1.0.1-10.1.0.5", "10.1.0.6-10.1.0.9"]
    assert elements_text(got, 4) == (
        "\t\telements = { 10.0.0.0/24, 10.1.0.1-10.1.0.5,\n\t\t\t     10.1.0.6-10.1.0.9 }\n"
    )
    assert decode([RawElement(v4("255.0.0.0"), None, 0)]) == ["255.0.0.0/8"]  # to the top
    tail = bytes([6, 0, 0, 0, 0, 80, 0, 0])
    assert decode([RawElement(v4("10.0.0.1") + tail, v4("10.0.0.9") + tail, 0)]) == [
        "10.0.0.1-10.0.0.9 . tcp . 80"
    ]
    with pytest.raises(ValueError):
        decode([RawElement(v4("10.0.0.1"), None, end), RawElement(v4("10.0.0.9"), None, end)])
    with pytest.raises(ValueError):
        decode([RawElement(b"\1\2", None, 0)])


def test_block_heads() -> None:
    from runtime.nftables_fast import block_head, block_heads

    listing = (
        "table inet tortie {\n\tset a {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
        '\t\tcomment "x"\n\t\telements = { 1.2.3.4, 5.6.7.8,\n\t\t\t     9.9.9.9 }\n\t}\n\n'
        "\tset b {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n\n"
        "\tchain c {\n\t\tip saddr @a accept\n\t}\n}\n"
    )
    heads = block_heads(listing)
    assert heads == {
        "a": '\tset a {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tcomment "x"\n',
        "b": "\tset b {\n\t\ttype ipv4_addr\n\t\tflags interval\n",
    }
    assert block_head("\tset b {\n\t\ttype ipv4_addr\n\t}\n") == "\tset b {\n\t\ttype ipv4_addr\n"
