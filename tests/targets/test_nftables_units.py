"""Unit tests of the nftables target's parts: quoting, names, match lowering, marks, check(),
set-only updates and the ``tortie compile`` command."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.ir.nodes import Match, PortMatch, Side
from compiler.targets import get_target
from compiler.targets.common import expand_log_prefix
from compiler.targets.nftables import NftablesTarget, render_program, render_set_update
from compiler.targets.nftables.chains import log_prefix
from compiler.targets.nftables.marks import Marks
from compiler.targets.nftables.names import (
    _SAFE_CHARS,
    ident,
    is_ifname,
    nft_string,
    sanitize,
    script_comment,
    stable_hash,
)
from compiler.targets.nftables.rules import (
    addr_text,
    lower_match,
    merge_nets,
    merge_ranges,
    merged_keys,
    merged_texts,
    net_text,
    proto,
)
from compiler.targets.nftables.sets import port_elements
from compiler.tools import nft
from tests.targets.test_nftables_programs import (
    HOSTILE,
    host_program,
    hostile_program,
    workloads_program,
)

ROOT = Path(__file__).resolve().parents[2]
SAFE = re.compile(r'"[ !#%-\[\]-~]*"')


# -- quoting -------------------------------------------------------------------------------------


@given(st.text())
def test_nft_string_never_breaks_out(text: str) -> None:
    quoted = nft_string(text)
    assert SAFE.fullmatch(quoted), quoted
    assert len(quoted.encode()) <= 127 + 2
    assert "\n" not in script_comment(text)


@pytest.mark.parametrize(
    "text",
    [HOSTILE, '"', "\\", "$x", "a\nb", "a\rb", "\x00", "é", "\u2028", "}", "#", ";" * 300],
)
def test_nft_string_hostile(text: str) -> None:
    quoted = nft_string(text)
    assert quoted.count('"') == 2 and SAFE.fullmatch(quoted)
    assert "$" not in quoted and "\\" not in quoted


@given(st.text(), st.none() | st.integers(0, 40))
def test_sanitize_is_the_regex_replacement(text: str, limit: int | None) -> None:
    """The fast path for clean text changes nothing: always the regex's result."""
    want = _SAFE_CHARS.sub("?", text.replace('"', "'"))
    if limit is not None and len(want) > limit:
        want = want[: max(limit - 3, 0)] + "..."
    assert sanitize(text, limit) == want


@given(st.text(), st.integers(0, 60))
def test_stable_hash_is_base32_of_sha256(text: str, length: int) -> None:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    want = base64.b32encode(digest).decode("ascii").lower()[:length]
    assert stable_hash(text, length) == want


def test_sanitize_limit() -> None:
    assert sanitize("x" * 200, 10) == "xxxxxxx..."
    assert len(nft_string("y" * 500)) == 127 + 2


def test_ident_clean_and_hashed() -> None:
    assert ident("pol-ingress/", "knp/default/allow-web") == "pol-ingress/knp/default/allow-web"
    dirty = ident("pol-ingress/", "gnp/a b")
    assert dirty.startswith("pol-ingress/gnp-a-b_") and re.fullmatch(r"[a-z0-9./_-]+", dirty)
    # Sanitised forms never collide with clean ones (clean names have no '_').
    assert ident("p/", "a-b") != ident("p/", "a b")
    assert ident("p/", "a b") != ident("p/", "a  b")
    assert ident("p/", "..") != ident("p/", "x")
    assert len(ident("p/", "x" * 1000)) < 80


@given(st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=10, unique=True))
def test_ident_injective(keys: list[str]) -> None:
    assert len({ident("p/", k) for k in keys}) == len(keys)


def test_is_ifname() -> None:
    assert is_ifname("cali0123456789a")
    for bad in ("", "cali0123456789ab", "eth*", 'a"b', "a b", "a/b"):
        assert not is_ifname(bad)


def test_log_prefix_placeholders() -> None:
    text = expand_log_prefix("%t|%k|%n|%p|%x", "tier1", "np", "web", "ns/web")
    assert log_prefix(text) == '"tier1|np|web|ns/web|%x: "'
    long = log_prefix(expand_log_prefix("z" * 300, "t", "k", "n", "p"))
    assert len(long) == 127 + 2 and long.endswith('..."')


# -- match lowering -------------------------------------------------------------------------------


def n(text: str) -> ir.IPNet:
    return ipaddress.ip_network(text)


def test_merge_nets_and_ranges() -> None:
    merged = merge_nets([n("10.0.0.0/25"), n("10.0.0.128/25"), n("10.0.0.5/32"), n("fd00::/64")])
    assert [str(x) for x in merged] == ["10.0.0.0/24", "fd00::/64"]
    assert merge_ranges([(80, 80), (81, 90), (100, 200), (150, 160), (5, 5)]) == [
        (5, 5),
        (80, 90),
        (100, 200),
    ]


_nets = st.one_of(
    st.builds(
        lambda a, p: ipaddress.ip_network((a >> (32 - p) << (32 - p), p)),
        st.integers(0, 2**32 - 1),
        st.integers(20, 32),
    ),
    st.builds(
        lambda a, p: ipaddress.ip_network((a >> (128 - p) << (128 - p), p)),
        st.sampled_from([0, 1, 2**128 - 1, 0xFD00 << 112, 0xFFFF << 32 | 0x0A000001])
        | st.integers(0, 2**128 - 1),
        st.integers(118, 128),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_nets, max_size=40))
def test_merge_nets_is_collapse_addresses(nets: list[ir.IPNet]) -> None:
    """The integer merge (and its text) equals ipaddress's collapse, per family, v4 first."""
    want = [
        *ipaddress.collapse_addresses(x for x in nets if x.version == 4),
        *ipaddress.collapse_addresses(x for x in nets if x.version == 6),
    ]
    assert merge_nets(nets) == want
    assert merged_texts(nets) == [net_text(x) for x in want]
    assert merged_keys(nets) == [(x.version, int(x.network_address), x.prefixlen) for x in want]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x100, 0xDB8]), min_size=8, max_size=8)
    | st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8)
)
def test_addr_text_is_ipaddress_str(hextets: list[int]) -> None:
    value = 0
    for h in hextets:
        value = value << 16 | h
    assert addr_text(6, value) == str(ipaddress.IPv6Address(value))
    assert addr_text(4, value >> 96) == str(ipaddress.IPv4Address(value >> 96))


def test_port_elements_merge_per_port() -> None:
    members = [(n("10.0.0.0/25"), 6, 80), (n("10.0.0.128/25"), 6, 80), (n("10.0.0.1/32"), 17, 80)]
    assert port_elements(members) == ("10.0.0.0/24 . tcp . 80", "10.0.0.1 . udp . 80")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(_nets, st.sampled_from([6, 17, 132, 200]), st.sampled_from([0, 80, 443, 65535])),
        max_size=30,
    )
)
def test_port_elements_are_collapsed_per_port_and_sorted(
    members: list[tuple[ir.IPNet, int, int]],
) -> None:
    """Per (protocol, port) the collapsed nets; all sorted by (family, address, prefix
    length, protocol, port)."""
    rows = []
    for protocol, port in {(pr, po) for _, pr, po in members}:
        nets = [net for net, pr, po in members if (pr, po) == (protocol, port)]
        for v in (4, 6):
            for net in ipaddress.collapse_addresses(x for x in nets if x.version == v):
                rows.append((v, int(net.network_address), net.prefixlen, protocol, port, net))
    rows.sort(key=lambda r: r[:5])
    want = tuple(f"{net_text(r[5])} . {proto(r[3])} . {r[4]}" for r in rows)
    assert port_elements(members) == want


def test_lower_match_basic() -> None:
    m = Match(
        ip_version=4,
        protocol=17,
        src=Side(nets=(n("10.0.0.0/8"), n("192.168.0.0/16")), not_sets=("s:x:4",)),
        dst=Side(not_ports=PortMatch(((53, 53),))),
    )
    assert lower_match(m, {"s:x:4": "s4-x"}) == [
        "meta nfproto ipv4 meta l4proto udp ip saddr { 10.0.0.0/8, 192.168.0.0/16 }"
        " ip saddr != @s4-x th dport != 53"
    ]


def test_lower_match_never() -> None:
    assert lower_match(Match(ip_version=4, src=Side(nets=())), {}) == []
    assert lower_match(Match(ip_version=4, dst=Side(ports=PortMatch())), {}) == []


def test_lower_match_alternatives_are_disjoint() -> None:
    """Port OR over several lookups: alternative k excludes 1..k-1 on the same side, and the
    two sides multiply."""
    names = {"a": "np4-a", "b": "np4-b", "c": "np4-c"}
    m = Match(
        ip_version=4,
        src=Side(ports=PortMatch(((1, 2),), ("a",))),
        dst=Side(ports=PortMatch(((80, 80),), ("b", "c"))),
    )
    alts = lower_match(m, names)
    assert len(alts) == 2 * 3
    dst_parts = [
        "th dport 80",
        "th dport != 80 ip daddr . meta l4proto . th dport @np4-b",
        "th dport != 80 ip daddr . meta l4proto . th dport != @np4-b"
        " ip daddr . meta l4proto . th dport @np4-c",
    ]
    for alt in alts[:3]:
        assert "th sport 1-2" in alt and "th sport !=" not in alt
    for alt, dst in zip(alts[:3], dst_parts, strict=True):
        assert alt.endswith(dst)
    for alt in alts[3:]:
        assert "th sport != 1-2 ip saddr . meta l4proto . th sport @np4-a" in alt


def test_lower_match_icmp() -> None:
    assert lower_match(Match(ip_version=6, protocol=58, icmp_type=128, icmp_code=0), {}) == [
        "meta nfproto ipv6 meta l4proto icmpv6 icmpv6 type 128 icmpv6 code 0"
    ]
    assert lower_match(Match(ip_version=4, protocol=1, not_icmp_type=3), {}) == [
        "meta nfproto ipv4 meta l4proto icmp icmp type != 3"
    ]
    assert lower_match(Match(ip_version=4, protocol=1, not_icmp_type=3, not_icmp_code=1), {}) == [
        "meta nfproto ipv4 meta l4proto icmp icmp type . icmp code != { 3 . 1 }"
    ]
    assert lower_match(Match(ip_version=4, protocol=47, not_protocol=6), {}) == [
        "meta nfproto ipv4 meta l4proto 47 meta l4proto != tcp"
    ]


# -- marks ---------------------------------------------------------------------------------------


def test_marks_from_mask() -> None:
    assert Marks.from_mask(0x3) is None
    m = Marks.from_mask(0x00F00000)
    assert m is not None and (m.accept, m.pass_, m.untracked) == (0x100000, 0x200000, 0x400000)
    assert m.clear(m.accept) == "meta mark set meta mark & 0xffefffff"


def test_custom_mark_mask_used_everywhere() -> None:
    prog = workloads_program(FelixConfig(mark_mask=0x0F000000))
    script = render_program(prog).script
    assert "0x01000000" in script and "0x00010000" not in script


# -- check() -------------------------------------------------------------------------------------


def _codes(prog: ir.Program) -> list[str]:
    sink = DiagnosticSink()
    NftablesTarget().check(prog, sink)
    return [d.code for d in sink.sorted()]


def test_check_clean_programs() -> None:
    assert _codes(workloads_program()) == []
    assert _codes(host_program()) == ["W812"]  # the "*" HEP has applyOnForward policy


def test_check_reports() -> None:
    prog = workloads_program(FelixConfig(mark_mask=0x3, log_rate_limit="fast"))
    assert _codes(prog) == ["E810", "W815"]
    bad_if = dataclasses.replace(prog.endpoints[0], interface="cali*")
    prog = ir.replace_program(workloads_program(), endpoints=(bad_if, *prog.endpoints[1:]))
    assert "E811" in _codes(prog)
    base = workloads_program()
    twin = dataclasses.replace(base.endpoints[1], interface=base.endpoints[0].interface)
    prog = ir.replace_program(base, endpoints=(base.endpoints[0], twin, *base.endpoints[2:]))
    assert "E816" in _codes(prog)
    hosts = host_program()
    star, eth0, *rest = hosts.endpoints
    no_ips = dataclasses.replace(eth0, ips=(), interface="")
    codes = _codes(ir.replace_program(hosts, endpoints=(star, no_ips, *rest)))
    assert "W812" in codes and "W813" in codes


def test_check_long_log_prefix() -> None:
    prog = ir.replace_program(hostile_program(), felix=FelixConfig(log_prefix="x" * 200))
    assert "W814" in _codes(prog)


def test_registry() -> None:
    target = get_target("nftables")
    assert target.NAME == "nftables" and "host-endpoints" in target.CAPABILITIES
    artifact = target.render(workloads_program())
    assert set(artifact.files) == {"nftables.nft"} and artifact.node == "n1"
    assert artifact.summary["endpoints"] == 3


# -- incremental ---------------------------------------------------------------------------------


def test_set_update_none_when_rules_change() -> None:
    old = workloads_program()
    pol = old.policies["np/ns1/allow-web"]
    changed = dataclasses.replace(pol, ingress=pol.ingress[:1])
    new = ir.replace_program(old, policies={**old.policies, pol.id: changed})
    assert render_set_update(old, new) is None
    assert render_set_update(old, old) == ""


def test_set_update_none_when_endpoints_change() -> None:
    old = workloads_program()
    new = ir.replace_program(old, endpoints=old.endpoints[1:])
    assert render_set_update(old, new) is None


def test_set_update_deletes_before_adds() -> None:
    old = workloads_program()
    web = old.sets["s:web:4"]
    merged = dataclasses.replace(web, members=frozenset({n("10.65.0.0/30")}))
    new = ir.replace_program(old, sets={**old.sets, web.id: merged})
    update = render_set_update(old, new)
    assert update is not None
    lines = [x for x in update.splitlines() if not x.startswith("#")]
    assert lines == [
        "delete element inet tortie s4-wubzrymkca66 { 10.65.0.1, 10.65.0.2 }",
        "add element inet tortie s4-wubzrymkca66 { 10.65.0.0/30 }",
    ]


# -- hostile input through the real parser ---------------------------------------------------


def _nft_reason() -> str | None:
    if not nft.available():
        return "nft is not installed"
    if os.geteuid() != 0:
        return "nft -c needs root"
    return None


@pytest.mark.skipif(_nft_reason() is not None, reason=str(_nft_reason()))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(max_size=60), prefix=st.text(max_size=60))
def test_hostile_names_survive_nft(name: str, prefix: str) -> None:
    """Arbitrary text as policy name, profile name, file name and log prefix: the script
    still parses, and it defines exactly the chains and sets we meant (nothing injected)."""
    prog = hostile_program()
    pol = next(iter(prog.policies.values()))
    renamed = dataclasses.replace(pol, name=name or "x")
    prog = ir.replace_program(
        prog,
        policies={pol.id: renamed},
        felix=FelixConfig(log_prefix=prefix + "%n%p"),
    )
    script = render_program(prog).script
    nft.check(script, isolated=True)
    heads = [line.split()[0] for line in script.splitlines() if line.strip()]
    assert heads.count("table") == 2 and heads.count("delete") == 1


# -- tortie compile ------------------------------------------------------------------------------

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: 80}]
"""


def _run(args: list[str]) -> tuple[int, str, str]:
    from compiler.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_compile_writes_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "out"
    base = "tests/conformance/base/cluster.yaml"
    code, stdout, _ = _run(
        ["compile", "-f", base, "-f", str(policy), "--node", "node1", "--target", "nftables"]
        + ["-o", str(out)]
    )
    assert code == 0, stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "nftables" and manifest["node"] == "node1"
    assert set(manifest["inputs"]) == {base, str(policy)}
    assert set(manifest["files"]) == {"nftables.nft"}
    assert "pol-ingress/knp/x/web" in (out / "nftables.nft").read_text()


def test_cli_compile_errors_write_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {}\n")
    out = tmp_path / "out"
    code, _, stderr = _run(
        ["compile", "-f", str(bad), "--node", "n1", "--target", "nftables", "-o", str(out)]
    )
    assert code == 1 and "error[" in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_cli_compile_unknown_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    code, _, stderr = _run(
        ["compile", "-f", "tests/conformance/base/cluster.yaml", "--node", "nope"]
        + ["--target", "nftables", "-o", str(out)]
    )
    assert code == 1 and "unknown node" in stderr and not out.exists()


def test_cli_compile_keeps_old_dir_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "nftables.nft").write_text("old\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    code, _, _ = _run(
        ["compile", "-f", str(bad), "--node", "n1", "--target", "nftables", "-o", str(out)]
    )
    assert code == 1 and (out / "nftables.nft").read_text() == "old\n"
