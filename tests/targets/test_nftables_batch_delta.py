"""The delta batch encoder (compiler/targets/nftables/batch_delta.py), without a kernel.

What the kernel makes of a delta batch is tested in tests/kernel/test_nftables_batch_delta.py.
Here: framing and message kinds per delta statement, set ids, nft's end element at 0 for an
empty set only, determinism, and refusals (Unencodable) for what the encoder does not know.
"""

from __future__ import annotations

import struct

import pytest

from compiler.targets.nftables import batch as nb
from compiler.targets.nftables.batch_delta import declarations, encode_delta
from tests.targets.test_nftables_batch import messages

DELCHAIN, DELRULE, DELSET, DELSETELEM = 5, 8, 11, 14
NEWTABLE, NEWCHAIN, NEWRULE, NEWSET, NEWSETELEM = 0, 3, 6, 9, 12

BASE_SCRIPT = """table inet tortie {}
delete table inet tortie
table inet tortie {
\tset a {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment "a"
\t}
\tset b {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.1, 10.0.1.0/24 }
\t}
\tset np {
\t\ttype ipv4_addr . inet_proto . inet_service
\t\tflags interval
\t\telements = { 10.0.0.0/31 . tcp . 80 }
\t}
\tmap vm {
\t\ttype ifname : verdict
\t}
\tchain c {
\t\tcomment "c"
\t\tip saddr @b accept
\t}
}
"""
BASE = declarations(BASE_SCRIPT)
DELTA = """# Tortie delta transaction
flush chain inet tortie c
delete element inet tortie b { 10.0.0.1 }
delete element inet tortie np { 10.0.0.0/31 . tcp . 80 }
table inet tortie {
\tset e {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.9.0.1 }
\t}
\tchain g {
\t\tcomment "g"
\t\tip saddr @e ip daddr @b accept
\t}
\tchain c {
\t\tip saddr @a jump g
\t}
}
add element inet tortie a { 10.1.0.1 }
add element inet tortie b { 10.3.0.0/16, 10.2.0.1 }
add element inet tortie vm { "cali1" : jump g }
delete chain inet tortie old
delete map inet tortie vm
"""


def kinds(data: bytes) -> list[int]:
    msgs = messages(data)
    assert msgs[0][0] == nb.NFNL_MSG_BATCH_BEGIN and msgs[-1][0] == nb.NFNL_MSG_BATCH_END
    seqs = [seq for _, _, seq, _ in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert msgs[-2][1] & nb.NLM_F_ACK  # the runtime waits for that acknowledgement
    return [kind & 0xFF for kind, *_ in msgs[1:-1]]


def test_declarations_drop_elements_keep_order() -> None:
    assert list(BASE) == ["a", "b", "np", "vm"]
    assert "elements" not in BASE["b"] and "type ipv4_addr" in BASE["b"]


def test_messages_follow_the_delta() -> None:
    data = encode_delta(DELTA, BASE, empty={"a"})
    assert kinds(data) == [
        DELRULE,
        DELSETELEM,
        DELSETELEM,
        NEWTABLE,
        NEWCHAIN,  # g
        NEWCHAIN,  # c, existing: only gets rules
        NEWSET,
        NEWSETELEM,
        NEWRULE,
        NEWRULE,
        NEWSETELEM,  # a
        NEWSETELEM,  # b
        NEWSETELEM,  # vm
        DELCHAIN,
        DELSET,
    ]
    assert encode_delta(DELTA, BASE, empty={"a"}) == data  # deterministic


def _set_id(payload: bytes) -> int | None:
    off = 0
    while off + 4 <= len(payload):
        alen, atype = struct.unpack_from("=HH", payload, off)
        if atype == 4:
            return struct.unpack_from(">I", payload, off + 4)[0]
        off += (alen + 3) & ~3
    return None


def test_set_ids_as_nft_numbers_them() -> None:
    # The block declares one set (id 1); the cache's sets follow in base order: a=2, b=3.
    msgs = messages(encode_delta(DELTA, BASE, empty={"a"}))[1:-1]
    adds = [p for kind, _, _, p in msgs if kind & 0xFF == NEWSETELEM]
    assert [_set_id(p) for p in adds] == [1, 2, 3, 5]


def test_end_element_at_zero_only_for_an_empty_set() -> None:
    one = "add element inet tortie a { 10.1.0.1 }\n"
    empty = messages(encode_delta(one, BASE, empty={"a"}))[1][3]
    filled = messages(encode_delta(one, BASE))[1][3]
    assert len(empty) > len(filled)
    assert bytes(4) in empty[-60:]


def test_address_keyed_maps_are_not_taken_for_interface_maps() -> None:
    """An ipv6_addr key and an ifname key are both 16 bytes: the map's type decides (the
    host endpoint dispatch maps are keyed by address)."""
    base = {
        "hep-ingress6": "map hep-ingress6 {\n\ttype ipv6_addr : verdict\n}",
        "wl-ingress": "map wl-ingress {\n\ttype ifname : verdict\n}",
    }
    addr = "fd00:2::2"
    for verb in ("add", "delete"):
        data = encode_delta(
            f"{verb} element inet tortie hep-ingress6 {{ {addr} : jump c }}\n", base
        )
        payload = messages(data)[1][3]
        assert bytes.fromhex("fd000002000000000000000000000002") in payload
        with pytest.raises(nb.Unencodable):  # not an interface name
            encode_delta(f"{verb} element inet tortie wl-ingress {{ {addr} : jump c }}\n", base)
    data = encode_delta('add element inet tortie wl-ingress { "cali1" : jump c }\n', base)
    assert b"cali1" + bytes(11) in messages(data)[1][3]


def test_at_words_in_comments_are_not_set_references() -> None:
    """A comment may hold any text (a file name like ``x @home.yaml``): only lookups outside
    quoted strings name sets."""
    delta = (
        "flush chain inet tortie c\ntable inet tortie {\n\tchain c {\n"
        '\t\tip saddr @a accept comment "from @nowhere.yaml"\n\t}\n}\n'
    )
    assert encode_delta(delta, BASE)
    with pytest.raises(nb.Unencodable):
        encode_delta(delta.replace("@a accept", "@nowhere accept"), BASE)


def test_concat_delete_key_only_unless_a_prefix() -> None:
    single = "delete element inet tortie np { 10.0.0.5 . tcp . 80 }\n"
    prefix = "delete element inet tortie np { 10.0.0.5 . tcp . 80, 10.0.0.0/31 . tcp . 80 }\n"
    one = messages(encode_delta(single, BASE))[1][3]
    two = messages(encode_delta(prefix, BASE))[1][3]
    assert one.count(bytes.fromhex("0a000005060000000050")) == 1  # KEY only
    assert two.count(bytes.fromhex("0a000005060000000050")) == 2  # KEY and KEY_END


@pytest.mark.parametrize(
    "delta",
    [
        "add element inet tortie nosuch { 10.0.0.1 }\n",  # not in base
        "table inet tortie {\n\tchain x {\n\t\tip saddr @nosuch accept\n\t}\n}\n",
        "delete set inet tortie nosuch\n",
        "delete set inet tortie vm\n",  # a map
        "insert rule inet tortie c accept\n",
        "flush table inet tortie\n",
        "flush chain inet tortie c\nflush chain inet other c\n",
        "add element inet tortie b { 0.0.0.0/0 }\n",  # reaches the top
        "add element inet tortie b { 10.0.0.0/8, 10.1.0.0/16 }\n",  # overlap
        "table inet tortie {\n\tchain x {\n\t\tmeta cpu 1 accept\n\t}\n}\n",
        "table inet tortie {\n\tset b {\n\t\ttype ipv4_addr\n\t}\n}\n",  # exists already
        'table inet tortie {\n\tchain x {\n\t\tcomment "a\\\\b"\n\t}\n}\n',
        "add element inet tortie b { 10.0.0.1\n",
    ],
)
def test_refuses(delta: str) -> None:
    with pytest.raises(nb.Unencodable):
        encode_delta(delta, BASE)


def test_refuses_bad_declarations() -> None:
    line = "add element inet tortie s { 10.0.0.1 }\n"
    for decl in (
        "set s {\n\ttype ipv4_addr\n\tflags timeout\n}",
        "set t {\n\ttype ipv4_addr\n}",
        "set s {\n\ttype ether_addr\n}",
        "set s {\n\tsize 10\n}",
    ):
        with pytest.raises(nb.Unencodable):
            encode_delta(line, {"s": decl})
