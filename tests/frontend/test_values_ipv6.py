"""``values.ip_address`` reads plain IPv6 text with the C library's ``inet_pton``: it must accept
and return exactly what ``ipaddress.ip_address`` does, and raise ValueError alike."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.frontend.schema.values import ip_address

_HEXTET = st.text("0123456789abcdefABCDEF", max_size=5)


def _same(text: str) -> None:
    try:
        want = ipaddress.ip_address(text)
    except ValueError:
        want = None
    try:
        got = ip_address(text)
    except ValueError:
        got = None
    assert got == want, text
    assert type(got) is type(want), text


@settings(max_examples=3000, deadline=None)
@given(st.lists(_HEXTET, min_size=1, max_size=11).map(":".join))
def test_hextets_joined_by_colons(text: str) -> None:
    _same(text)


@settings(max_examples=2000, deadline=None)
@given(st.text("0123456789abcdefABCDEFG:.%", min_size=1, max_size=40))
def test_any_text_of_address_characters(text: str) -> None:
    _same(text)


def test_edge_cases() -> None:
    for text in (
        "::",
        "::1",
        "1::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "1:::2",
        "12345::",
        ":1::",
        "fd00:64::1",
        "FD00:64::A",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
    ):
        _same(text)
