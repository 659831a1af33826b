"""``runtime/nftables_readback.py`` without a kernel: what a hand-made batch leaves in each chain
(:func:`expected_chains`), and the canonical form (each normalisation, and that it hides
nothing else). The kernel tests (``tests/kernel/test_nftables_readback.py``) check both against
real dumps."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from runtime import nftables_batchcheck as bc
from runtime import nftables_readback as rb
from runtime.nftables_readback import ChainDump, Rule, SetDecl

NESTED = 0x8000


# -- building messages ---------------------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def nest(kind: int, *parts: bytes, flag: bool = True) -> bytes:
    return attr(kind | (NESTED if flag else 0), b"".join(parts))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value))


def s(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def expr(name: str, *attrs: bytes, flag: bool = True) -> bytes:
    return nest(1, s(1, name), nest(2, *attrs, flag=flag), flag=flag)


def cmp(value: bytes, op: int = 0, flag: bool = True) -> bytes:
    return expr("cmp", u32(1, 1), u32(2, op), nest(3, attr(1, value), flag=flag), flag=flag)


def meta(key: int) -> bytes:
    return expr("meta", u32(2, key), u32(1, 1))


def lookup(name: str, set_id: int | None = None, flags: int | None = None) -> bytes:
    attrs = [u32(2, 1), s(1, name)]
    if set_id is not None:
        attrs.append(u32(4, set_id))
    if flags is not None:
        attrs.append(u32(5, flags))
    return expr("lookup", *attrs)


def jump(chain: str | None = None, chain_id: int | None = None) -> bytes:
    verdict = u32(1, 0xFFFFFFFD)
    verdict += s(2, chain) if chain is not None else u32(3, chain_id or 0)
    return expr("immediate", u32(1, 0), nest(2, nest(2, verdict)))


def exprs(*e: bytes) -> bytes:
    return b"".join(e)


def msg(kind: int, flags: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", 1, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, flags, 0, 0) + body


T = s(1, "tortie")
APPEND = 0x1 | 0x400 | 0x800


def newchain(name: str, comment: str | None = None, hook: bool = False) -> bytes:
    a = [T, s(3, name)]
    if hook:
        a += [s(7, "filter"), u32(5, 1), nest(4, u32(1, 2), u32(2, 0))]
    if comment is not None:
        a.append(attr(12, bytes((0, len(comment) + 1)) + comment.encode() + b"\0"))
    return msg(3, 0x401, *a)


def newrule(chain: str, e: bytes, comment: str | None = None, flags: int = APPEND, *extra: bytes):
    a = [T, s(2, chain), attr(4 | NESTED, e), *extra]
    if comment is not None:
        a.append(attr(7, bytes((0, len(comment) + 1)) + comment.encode() + b"\0"))
    return msg(6, flags, *a)


def flush(chain: str) -> bytes:
    return msg(8, 0x1, T, s(2, chain))


def batch(*messages: bytes) -> bytes:
    begin = struct.pack("=IHHIIBBH", 20, 0x10, 1, 0, 0, 0, 0, 0x0A00)
    end = struct.pack("=IHHIIBBH", 20, 0x11, 1, 0, 0, 0, 0, 0x0A00)
    return begin + b"".join(messages) + end


R1 = exprs(meta(16), cmp(b"\x06"))
R2 = exprs(meta(16), cmp(b"\x11"))
R3 = exprs(meta(15), cmp(b"\x02"))


def rules_of(c: bc.ExpectedChain) -> list[bytes]:
    return [r.expressions for r in c.rules]


# -- expected_chains ---------------------------------------------------------------------------


def test_flush_then_add() -> None:
    got = bc.expected_chains(batch(flush("x"), newrule("x", R1), newrule("x", R2, "c")))
    x = got["x"]
    assert x.exists and x.flushed and not x.created and x.complete and x.attrs is None
    assert rules_of(x) == [R1, R2]
    assert x.rules[1].userdata == bytes((0, 2)) + b"c\0" and x.rules[0].userdata is None


def test_rules_before_the_last_flush_are_gone() -> None:
    b = batch(
        flush("x"), newrule("x", R1), flush("x"), newrule("x", R2), newrule("x", R3), flush("y")
    )
    got = bc.expected_chains(b)
    assert rules_of(got["x"]) == [R2, R3] and got["x"].complete
    assert rules_of(got["y"]) == [] and got["y"].complete and got["y"].flushed


def test_created_chain() -> None:
    got = bc.expected_chains(batch(newchain("c", "hello", hook=True), newrule("c", R1)))
    c = got["c"]
    assert c.created and c.complete and not c.flushed and rules_of(c) == [R1]
    assert c.attrs is not None and (3, b"c\0") in c.attrs


def test_rules_on_an_untouched_chain_are_flagged() -> None:
    got = bc.expected_chains(batch(newrule("z", R1)))
    assert not got["z"].complete and "neither creates nor flushes" in got["z"].notes[0]
    dumped = {"z": ChainDump("z", ((3, b"z\0"),), (Rule(R1, None),))}
    problems = bc.compare(got, dumped)
    assert problems == ["chain z: cannot be checked (the batch neither creates nor flushes it)"]


def test_flush_after_rules_makes_an_untouched_chain_complete() -> None:
    got = bc.expected_chains(batch(newrule("z", R1), flush("z"), newrule("z", R2)))
    assert got["z"].complete and rules_of(got["z"]) == [R2]


def test_insert_without_append_goes_first() -> None:
    got = bc.expected_chains(batch(flush("x"), newrule("x", R1), newrule("x", R2, None, 0x401)))
    assert rules_of(got["x"]) == [R2, R1]


def test_rule_by_handle_cannot_be_checked() -> None:
    b = batch(flush("x"), newrule("x", R1, None, APPEND, attr(6, struct.pack(">Q", 5))))
    assert not bc.expected_chains(b)["x"].complete
    b = batch(flush("x"), msg(8, 1, T, s(2, "x"), attr(3, struct.pack(">Q", 5))))
    assert not bc.expected_chains(b)["x"].complete


def test_deleted_chain_and_table() -> None:
    got = bc.expected_chains(batch(newchain("a"), newrule("a", R1), msg(5, 1, T, s(3, "a"))))
    assert not got["a"].exists
    dumped = {"a": ChainDump("a", (), ())}
    assert bc.compare(got, dumped) == ["chain a: should not exist, but the kernel has it"]
    assert bc.compare(got, {}) == []
    # a full batch: the table is deleted and made anew
    full = batch(newchain("a"), newrule("a", R1), msg(2, 1, s(1, "tortie")), newchain("b"))
    got = bc.expected_chains(full)
    assert not got["a"].exists and got["b"].exists and got["b"].created


def test_other_tables_are_ignored() -> None:
    other = msg(6, APPEND, s(1, "filter"), s(2, "x"), attr(4 | NESTED, R1))
    assert bc.expected_chains(batch(other)) == {}


def test_anonymous_set_by_id_and_jump_by_chain_id() -> None:
    newset = msg(9, 0x401, T, s(2, "__set%d"), u32(3, 3), u32(4, 13), u32(5, 2), u32(10, 7))
    elems = msg(
        12, 0x401, T, s(2, "__set%d"), u32(4, 7),
        nest(3, nest(1, nest(1, attr(1, b"\x00\x16")))),
    )  # fmt: skip
    chain_with_id = msg(3, 0x401, T, s(3, "new"), u32(11, 42))
    rule = exprs(lookup("__set%d", 7), jump(chain_id=42))
    got = bc.expected_chains(batch(newset, elems, chain_with_id, flush("x"), newrule("x", rule)))
    ((key, decl),) = got["x"].rules[0].anon
    assert key == "id:7" and decl.elements == (nest(1, attr(1, b"\x00\x16")),)  # LIST_ELEM payloads
    # The kernel's dump: the set named __set3, flags always, no id, nests without the flag;
    # the jump names the chain.
    kernel_set = SetDecl(
        "__set3",
        ((1, b"tortie\0"), (2, b"__set3\0"), (16, bytes(8)), (3, struct.pack(">I", 3)),
         (4, struct.pack(">I", 13)), (5, struct.pack(">I", 2)), (9, b""),
         (19, b"0xffff\0"), (20, struct.pack(">I", 1))),
        (nest(1, attr(1, b"\x00\x16"), flag=False),),
    )  # fmt: skip
    dumped_rule = exprs(
        expr("lookup", s(1, "__set3"), u32(2, 1), u32(5, 0), flag=False),
        expr("immediate", u32(1, 0), nest(2, nest(2, u32(1, 0xFFFFFFFD), s(2, "new"))), flag=False),
    )
    new = ChainDump("new", ((3, b"new\0"),), ())
    dumped = {"x": ChainDump("x", (), (Rule(dumped_rule, None, (), (("__set3", kernel_set),)),))}
    dumped["new"] = new
    assert bc.compare(got, dumped) == []
    # another element in the kernel's anonymous set: a difference
    other = SetDecl(kernel_set.name, kernel_set.attrs, (nest(1, attr(1, b"\x00\x17")),))
    dumped = {"x": ChainDump("x", (), (Rule(dumped_rule, None, (), (("__set3", other),)),))}
    dumped["new"] = new
    assert [p[:23] for p in bc.compare(got, dumped)] == ["chain x: rule 0 differs"]


def test_expected_sets_follow_elements() -> None:
    newset = msg(9, 0x401, T, s(2, "s4-a"), u32(3, 4), u32(4, 7), u32(5, 4), u32(10, 1))
    e1, e2 = nest(1, nest(1, attr(1, b"\x0a\0\0\0"))), nest(1, nest(1, attr(1, b"\x0b\0\0\0")))
    add = msg(12, 0x401, T, s(2, "s4-a"), nest(3, e1, e2))
    delete = msg(14, 0x1, T, s(2, "s4-a"), nest(3, e1))
    got = bc.expected_sets(batch(newset, add, delete))
    assert list(got) == ["s4-a"] and got["s4-a"].elements == (e2[4:],)  # LIST_ELEM payloads


# -- the canonical form --------------------------------------------------------------------------


def canon(e: bytes) -> list[str]:
    return rb.canonical_expressions(e)


def test_nested_flag_is_not_compared() -> None:
    assert canon(cmp(b"\x06")) == canon(cmp(b"\x06", flag=False))


def test_attribute_order_is_not_compared() -> None:
    a = expr("ct", u32(2, 0), u32(1, 1))
    b = expr("ct", u32(1, 1), u32(2, 0), flag=False)
    assert canon(a) == canon(b)


def test_lookup_set_id_and_default_flags() -> None:
    sent = lookup("s4-a", set_id=9)
    dumped = expr("lookup", s(1, "s4-a"), u32(2, 1), u32(5, 0), flag=False)
    assert canon(sent) == canon(dumped)
    assert canon(lookup("s4-a", flags=1)) != canon(dumped)  # != is not ==
    assert canon(lookup("s4-b", set_id=9)) != canon(dumped)  # another set


def test_bitwise_default_op() -> None:
    head = [
        u32(1, 1),
        u32(2, 1),
        u32(3, 4),
        nest(4, attr(1, b"\xff" * 4)),
        nest(5, attr(1, bytes(4))),
    ]
    assert canon(expr("bitwise", *head)) == canon(expr("bitwise", *head, u32(6, 0)))
    assert canon(expr("bitwise", *head)) != canon(expr("bitwise", *head, u32(6, 1)))


def test_values_are_compared() -> None:
    assert canon(cmp(b"\x06")) != canon(cmp(b"\x11"))
    assert canon(cmp(b"\x06")) != canon(cmp(b"\x06", op=1))
    assert canon(jump("a")) != canon(jump("b"))
    extra = expr("cmp", u32(1, 1), u32(2, 0), nest(3, attr(1, b"\x06")), u32(9, 0))
    assert canon(extra) != canon(cmp(b"\x06"))  # an attribute more
    twice = expr("cmp", u32(1, 1), u32(1, 1), u32(2, 0), nest(3, attr(1, b"\x06")))
    assert canon(twice) != canon(cmp(b"\x06"))  # a type twice


def test_counter_values_are_not_compared() -> None:
    a = expr("counter", attr(1, struct.pack(">Q", 10)), attr(2, struct.pack(">Q", 1)))
    b = expr("counter", attr(1, struct.pack(">Q", 99)), attr(2, struct.pack(">Q", 7)))
    assert canon(a) == canon(b) and canon(a) != canon(cmp(b"\x06"))


def test_chain_header() -> None:
    sent = newchain("c", "hi", hook=True)
    exp = bc.expected_chains(batch(sent))
    kernel = (
        (1, b"tortie\0"), (3, b"c\0"), (2, bytes(8)),
        (4, u32(1, 2) + u32(2, 0)),
        (5, struct.pack(">I", 1)), (7, b"filter\0"), (10, struct.pack(">I", 1)),
        (6, struct.pack(">I", 3)), (12, bytes((0, 3)) + b"hi\0"),
    )  # fmt: skip
    assert bc.compare(exp, {"c": ChainDump("c", kernel, ())}) == []
    no_base = tuple((t, v) for t, v in kernel if t != 10)  # a base chain without the flag
    assert bc.compare(exp, {"c": ChainDump("c", no_base, ())})
    other = tuple((t, bytes((0, 3)) + b"ho\0") if t == 12 else (t, v) for t, v in kernel)
    assert "header differs" in bc.compare(exp, {"c": ChainDump("c", other, ())})[0]


def test_set_canonical_form() -> None:
    sent = SetDecl(
        "m",
        ((1, b"tortie\0"), (2, b"m\0"), (3, struct.pack(">I", 8)), (4, struct.pack(">I", 41)),
         (5, struct.pack(">I", 16)), (6, struct.pack(">I", 0xFFFFFF00)), (7, bytes(4)),
         (10, struct.pack(">I", 5)), (13, b"\0\x04\1\0\0\0")),
    )  # fmt: skip
    dumped = SetDecl(
        "m",
        ((1, b"tortie\0"), (2, b"m\0"), (16, bytes(8)), (3, struct.pack(">I", 8)),
         (4, struct.pack(">I", 41)), (5, struct.pack(">I", 16)),
         (6, struct.pack(">I", 0xFFFFFF00)), (7, struct.pack(">I", 16)), (13, b"\0\x04\1\0\0\0"),
         (9, b""), (19, b"0xffffffff82507f40\0"), (20, struct.pack(">I", 9))),
    )  # fmt: skip
    assert rb.canonical_set(sent) == rb.canonical_set(dumped)
    other = SetDecl(
        "m", tuple((t, b"\0\x04\2\0\0\0") if t == 13 else (t, v) for t, v in dumped.attrs)
    )
    assert rb.canonical_set(sent) != rb.canonical_set(other)
    no_flags = SetDecl("h", ((3, bytes(4)), (4, struct.pack(">I", 41))))
    assert rb.canonical_set(no_flags) == rb.canonical_set(
        SetDecl("h", ((4, struct.pack(">I", 41)),))
    )
    e1, e2 = nest(1, nest(1, attr(1, b"a"))), nest(1, nest(1, attr(1, b"b")))
    assert rb.canonical_set(SetDecl("x", (), (e1, e2))) == rb.canonical_set(
        SetDecl("x", (), (e2, e1))
    )
    assert bc.compare_sets({"m": sent}, {"m": dumped}) == []
    assert bc.compare_sets({"m": sent}, {}) == ["set m: missing from the kernel"]


# -- the digest ----------------------------------------------------------------------------------


def test_digest_ignores_handles_and_order_of_names_but_not_rules() -> None:
    a = ChainDump("a", ((3, b"a\0"), (2, bytes(8))), (Rule(R1, None, (), (), 4), Rule(R2, None)))
    a2 = ChainDump(
        "a", ((2, b"\0" * 7 + b"\1"), (3, b"a\0")), (Rule(R1, None, (), (), 9), Rule(R2, None))
    )
    b = ChainDump("b", (), ())
    assert rb.digest({"a": a, "b": b}) == rb.digest({"b": b, "a": a2})
    swapped = ChainDump("a", a.attrs, (a.rules[1], a.rules[0]))
    assert rb.digest({"a": a}) != rb.digest({"a": swapped})
    commented = ChainDump("a", a.attrs, (Rule(R1, b"\0\2c\0"), Rule(R2, None)))
    assert rb.digest({"a": a}) != rb.digest({"a": commented})
    assert rb.digest({"a": a}) != rb.digest({"a": a}, {"s": SetDecl("s", ())})
    assert len(rb.digest({})) == 64


def test_compare_reports_rule_differences() -> None:
    exp = bc.expected_chains(batch(flush("x"), newrule("x", R1), newrule("x", R2)))
    ok = ChainDump("x", (), (Rule(R1, None), Rule(R2, None)))
    assert bc.compare(exp, {"x": ok}) == []
    p = bc.compare(exp, {"x": ChainDump("x", (), (Rule(R1, None), Rule(R3, None)))})
    assert len(p) == 1 and p[0].startswith("chain x: rule 1 differs")
    p = bc.compare(exp, {"x": ChainDump("x", (), (Rule(R1, None),))})
    assert p == ["chain x: 2 rules sent, 1 in the kernel", p[1]] and "kernel lacks" in p[1]
    assert bc.compare(exp, {}) == ["chain x: missing from the kernel"]


def test_import_is_cheap() -> None:
    """The module must not pull in the compiler package (the agent imports it on its fast path)."""
    code = "import sys, runtime.nftables_readback; print(any(m.startswith('compiler') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("bad", [b"\x08\x00", b"\x40\x00\x00\x00" + b"\0" * 12])
def test_malformed_batch_raises(bad: bytes) -> None:
    with pytest.raises(ValueError):
        bc.expected_chains(bad + b"\0" * 16)


def test_chain_named_again_after_a_flush_keeps_its_rules() -> None:
    """A delta's table block sends NEWCHAIN {table, name} for a flushed chain that gets rules."""
    b = batch(flush("x"), newchain("x"), newrule("x", R1), newchain("x"), newrule("x", R2))
    x = bc.expected_chains(b)["x"]
    assert x.flushed and not x.created and x.complete and x.attrs is None
    assert rules_of(x) == [R1, R2]
    kernel = ChainDump("x", ((3, b"x\0"), (12, b"\0\2c\0")), (Rule(R1, None), Rule(R2, None)))
    assert bc.compare({"x": x}, {"x": kernel}) == []  # its comment is not the batch's to check


def test_created_chain_named_again_keeps_its_header_and_rules() -> None:
    b = batch(newchain("c", "hi"), newrule("c", R1), newchain("c"), newrule("c", R2))
    c = bc.expected_chains(b)["c"]
    assert c.created and c.complete and rules_of(c) == [R1, R2]
    assert c.attrs is not None and any(t == 12 for t, _ in c.attrs)


def test_chain_deleted_then_created_again() -> None:
    b = batch(flush("c"), newrule("c", R1), msg(5, 1, T, s(3, "c")), newchain("c"))
    c = bc.expected_chains(b)["c"]
    assert c.exists and c.created and c.complete and rules_of(c) == []
