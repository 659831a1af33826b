"""The nftables delta transaction (runtime/nftables_delta.py) and listing normalisation,
without a kernel (the kernel tests load the results for real)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.nftables import declared, normalise
from runtime.nftables_delta import delta, parse, replace_blocks, sort_blocks

OLD = """\
# header comment
table inet tortie {}
delete table inet tortie
table inet tortie {
\tcomment "managed by tortie: do not edit"

\tset s4-a {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment "s:a:4"
\t\telements = { 10.0.0.1, 10.0.0.2,
\t\t             10.0.0.3 }
\t}
\tmap wl-egress {
\t\ttype ifname : verdict
\t\telements = { "cali1" : jump wl-egress/cali1,
\t\t             "cali2" : jump wl-egress/cali2 }
\t}

\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tcomment "traffic through the host"
\t\tct state established,related accept
\t\tiifname vmap @wl-egress
\t}
\tchain wl-egress/cali1 {
\t\tcomment "cali1 egress"
\t\tip daddr @s4-a accept
\t}
\tchain wl-egress/cali2 {
\t\tcomment "cali2 egress"
\t\tdrop
\t}
}
"""


def test_parse_splits_blocks() -> None:
    p = parse(OLD)
    assert p is not None
    assert p.table == ('comment "managed by tortie: do not edit"',)
    assert sorted(p.blocks) == [
        "forward",
        "s4-a",
        "wl-egress",
        "wl-egress/cali1",
        "wl-egress/cali2",
    ]
    assert p.blocks["s4-a"].body == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert p.blocks["wl-egress"].body == (
        '"cali1" : jump wl-egress/cali1',
        '"cali2" : jump wl-egress/cali2',
    )
    assert p.blocks["forward"].head[0].startswith("type filter hook forward")
    assert p.blocks["forward"].body == (
        "ct state established,related accept",
        "iifname vmap @wl-egress",
    )
    assert parse("no table here") is None


def test_same_ruleset_is_an_empty_delta() -> None:
    assert delta(OLD, OLD) == ""
    assert delta(OLD, OLD.replace("# header comment", "# another comment")) == ""


def test_elements_only() -> None:
    new = OLD.replace("10.0.0.2,", "10.0.0.9,")
    out = delta(OLD, new)
    assert out is not None
    lines = out.splitlines()[1:]
    assert lines == [
        "delete element inet tortie s4-a { 10.0.0.2 }",
        "add element inet tortie s4-a { 10.0.0.9 }",
    ]


def test_changed_chain_is_flushed_and_refilled_alone() -> None:
    new = OLD.replace("ip daddr @s4-a accept", "ip daddr @s4-a tcp dport 80 accept")
    out = delta(OLD, new)
    assert out is not None
    assert "flush chain inet tortie wl-egress/cali1" in out
    assert "\t\tip daddr @s4-a tcp dport 80 accept" in out
    assert "cali2" not in out and "s4-a {" not in out


def test_removed_endpoint_and_added_set() -> None:
    new = (
        OLD.replace(',\n\t\t             "cali2" : jump wl-egress/cali2 }', " }")
        .replace('\tchain wl-egress/cali2 {\n\t\tcomment "cali2 egress"\n\t\tdrop\n\t}\n', "")
        .replace(
            "\tmap wl-egress {",
            "\tset s4-b {\n\t\ttype ipv4_addr\n\t\telements = { 10.1.0.1 }\n\t}\n\tmap wl-egress {",
        )
        .replace("ip daddr @s4-a accept", "ip daddr @s4-b accept")
    )
    out = delta(OLD, new)
    assert out is not None
    lines = out.splitlines()
    order = [
        "flush chain inet tortie wl-egress/cali1",
        "flush chain inet tortie wl-egress/cali2",
        'delete element inet tortie wl-egress { "cali2" : jump wl-egress/cali2 }',
        "\tset s4-b {",
        "\tchain wl-egress/cali1 {",
        "delete chain inet tortie wl-egress/cali2",
    ]
    positions = [lines.index(x) for x in order]
    assert positions == sorted(positions), out


def test_vanishing_map_is_deleted_before_the_chains_it_jumps_to() -> None:
    """The kernel refuses to delete a chain a map element still jumps to (EBUSY): a map that
    goes away with its chains is deleted first (the base chain's rule using it is flushed)."""
    start = OLD.index("\tmap wl-egress {")
    end = OLD.index("\tchain forward {")
    new = OLD[:start] + OLD[end:]
    new = new.replace("\t\tiifname vmap @wl-egress\n", "")
    for iface in ("cali1", "cali2"):
        head = f"\tchain wl-egress/{iface} {{"
        i = new.index(head)
        new = new[:i] + new[new.index("\t}\n", i) + 3 :]
    out = delta(OLD, new)
    assert out is not None
    lines = out.splitlines()
    order = [
        "flush chain inet tortie forward",
        "delete map inet tortie wl-egress",
        "delete chain inet tortie wl-egress/cali1",
        "delete chain inet tortie wl-egress/cali2",
    ]
    positions = [lines.index(x) for x in order]
    assert positions == sorted(positions), out


@pytest.mark.parametrize(
    "change",
    [
        ("priority filter; policy accept", "priority filter; policy drop"),  # base chain header
        ("flags interval", "flags interval,timeout"),  # set declaration
        ('comment "cali1 egress"', 'comment "renamed"'),  # chain comment
        ('comment "managed by tortie: do not edit"', 'comment "x"'),  # table line
    ],
)
def test_changes_a_delta_cannot_express(change: tuple[str, str]) -> None:
    assert delta(OLD, OLD.replace(*change)) is None


def test_listing_normalisation_sorts_blocks_and_masks_counters() -> None:
    a = "table inet tortie {\n\tchain b {\n\t\tcounter packets 5 bytes 300 accept\n\t}\n\tchain a {\n\t\tdrop\n\t}\n}\n"
    b = "table inet tortie {\n\tchain a {\n\t\tdrop\n\t}\n\tchain b {\n\t\tcounter packets 0 bytes 0 accept\n\t}\n}\n"
    assert normalise(a) == normalise(b)
    assert sort_blocks("garbage") == "garbage"
    assert declared(OLD) == {
        ("set", "s4-a"),
        ("map", "wl-egress"),
        ("chain", "forward"),
        ("chain", "wl-egress/cali1"),
        ("chain", "wl-egress/cali2"),
    }


def test_real_scripts_round_trip_through_parse() -> None:
    """Every script the nftables target writes for the fixture parses, and the delta between
    two variants touches only the unrelated policy's chain."""
    from tests.support.demo_cluster import cluster_yaml, compile_yaml

    _, a = compile_yaml(cluster_yaml(7000))
    _, b = compile_yaml(cluster_yaml(7001))
    text_a = a.files["nftables.nft"].decode()  # type: ignore[attr-defined]
    text_b = b.files["nftables.nft"].decode()  # type: ignore[attr-defined]
    assert parse(text_a) is not None
    out = delta(text_a, text_b)
    assert out is not None and out.count("flush chain") == 1 and "7001" in out


def _table(blocks: dict[str, str]) -> str:
    return 'table inet tortie {\n\tcomment "x"\n' + "".join(blocks.values()) + "}\n"


def _block(kind: str, name: str, body: str) -> str:
    return f"\t{kind} {name} {{\n\t\t{body}\n\t}}\n"


NAMES = [(k, n) for k in ("chain", "map", "set") for n in ("a", "b/c", "d-1", "z")]


@given(
    st.sets(st.sampled_from(NAMES)),
    st.dictionaries(
        st.sampled_from(NAMES), st.one_of(st.none(), st.sampled_from(["drop", "accept"]))
    ),
)
def test_replace_blocks_is_sort_blocks_of_the_result(
    present: set[tuple[str, str]], changes: dict[tuple[str, str], str | None]
) -> None:
    """One pass over a sorted table equals rebuilding and sorting it."""
    have = {name: _block(kind, name, "return") for kind, name in sorted(present)}
    text = sort_blocks(_table(have))
    wanted: dict[str, str | None] = {}
    for (kind, name), body in changes.items():
        wanted[name] = None if body is None else _block(kind, name, body)
    result = dict(have)
    old: list[str] = []
    for name, block in wanted.items():
        if name in result:
            old.append(result.pop(name))
        if block is not None:
            result[name] = block
    got_old: list[str] = []
    assert replace_blocks(text, wanted, got_old) == sort_blocks(_table(result))
    assert sorted(got_old) == sorted(old)


def test_replace_blocks_refuses_unsorted_text() -> None:
    text = _table({"b": _block("chain", "b", "drop"), "a": _block("chain", "a", "drop")})
    assert replace_blocks(text, {"c": None}) is None
