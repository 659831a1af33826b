"""Every ``tortie`` command against hostile input, the way a careless user or an attacker would
meet it.

The standard: every run ends with exit status 0, 1, 2 (or 3 for ``diff``), never a traceback
nor ``internal error`` (status 70); input errors name ``file:line:col``; an output directory is
either fully written or untouched and never replaces unrelated files; text from YAML, secrets
and the command line never becomes syntax in an nft script, an iptables/ipset file, C code or
``bird.cfg`` (the artifacts are loaded by the real tools to prove it); and the same input gives
byte-identical artifacts under other ``PYTHONHASHSEED`` values.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.tools import clang
from tests.support.hash_seed import python_stdout

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo")
BGP_GOLDEN = ROOT / "tests" / "runtime" / "golden" / "bgp" / "explicit-peers"
OK_CODES = {0, 1, 2}

# Text an attacker would like to see become syntax somewhere.
NASTY = "x'; } flush ruleset; */ # $(id) `id` \\ {a}"

# Valid input that still carries hostile strings everywhere the frontend lets them through:
# selector literals, a log prefix, annotations, a named port.
HOSTILE_VALID = """\
apiVersion: v1
kind: Namespace
metadata: {name: ns1, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDRs: [10.65.0.0/24]}
status: {addresses: [{address: 10.65.1.1, type: InternalIP}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: ns1
  labels: {app: web}
  annotations: {"x": "\\"; flush ruleset; */ #"}
spec:
  nodeName: node1
  containers: [{name: c, ports: [{name: h-ttp, containerPort: 80}]}]
status: {podIP: 10.65.0.5, podIPs: [{ip: 10.65.0.5}]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  logPrefix: "x'; flush ruleset; */ # $(id) {} `id`"
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: evil}
spec:
  selector: 'app == "web" || app == "}; */ #\\\\ $x `id` '' flush ruleset" || has(a) && !has(b)'
  ingress:
  - action: Log
    source: {nets: [1.2.3.4/32, 0.0.0.0/0]}
  - action: Allow
    protocol: TCP
    source: {selector: "app in {'a\\"b', '*/', '};', '\\\\\\\\'}"}
    destination: {ports: [1, 65535, "80:90", "h-ttp"]}
  egress:
  - action: Deny
    destination: {notSelector: "app == '\\" } */ # flush ruleset'", nets: ["::ffff:1.2.3.4/128"]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep1, labels: {role: h}}
spec: {node: node1, interfaceName: "eth0.1:x-", expectedIPs: [10.65.1.1]}
"""

_DEEP = 3000

# name -> file content (bytes or text): every one of them is invalid somewhere.
HOSTILE_FILES: dict[str, bytes | str] = {
    "empty": "",
    "only-comment": "# nothing\n",
    "only-separators": "---\n---\n...\n",
    "binary": bytes(range(256)) * 8,
    "nul": b"apiVersion: v1\nkind: Pod\x00\n",
    "bom-utf16": "kind: Pod\n".encode("utf-16"),
    "surrogate": b"kind: \xed\xa0\x80\n",
    "rtl-zero-width": "apiVersion: v1\nkind: Pod\nmetadata: {name: \u202eweb\u200b, namespace: a}\n",
    "deep-list": "a: " + "[" * _DEEP + "]" * _DEEP + "\n",
    "deep-map": "a: " + "{b: " * _DEEP + "1" + "}" * _DEEP + "\n",
    "billion-laughs": "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    "python-tag": "!!python/object/apply:os.system ['touch /tmp/tortie-pwned']\n",
    "scalar": "42\n",
    "list": "- 1\n- 2\n",
    "tabs": "kind:\tNetworkPolicy\n\tfoo: 1\n",
    "dup-key": "apiVersion: v1\nkind: Pod\nkind: Namespace\n",
    "unterminated-json": '{"kind": ',
    "wrong-types": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: [1], namespace: {a: b}, labels: [x]}
spec:
  order: "first"
  selector: 5
  types: Ingress
  ingress: {action: Allow}
  egress:
  - action: [Allow]
    protocol: {tcp: 1}
    destination: {ports: "80", nets: 10.0.0.0/8}
""",
    "bad-values": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bad}
spec:
  order: 1e400
  selector: all()
  ingress:
  - action: Allow
    protocol: TCP
    source: {nets: [1.2.3.4/33, 300.1.1.1/8, "::ffff:1.2.3.4/129", "10.0.0.1/8/8"]}
    destination: {ports: [0, 65536, "80:70", "-1", 99999999999999999999999999999]}
""",
    "hostile-names": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: "x\\"; flush ruleset; #"
  labels: {"a\\nb": "c;d", "e": "f\\u0000"}
spec:
  selector: 'app == "x" && '
  ingress: [{action: Log}]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {logPrefix: "a\\"b\\nflush ruleset"}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: "h\\u200b"}
spec: {node: n1, interfaceName: "eth0\\"; drop", expectedIPs: [1.2.3.4]}
""",
    "selector-nesting": "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
    "metadata: {name: deep}\nspec:\n  selector: '" + "(" * 5000 + "all()" + ")" * 5000 + "'\n",
    "selector-long": "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
    "metadata: {name: long}\nspec:\n  selector: '"
    + " || ".join(f'a{i} == "v"' for i in range(3000))
    + " && '\n",
}


def run(*args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"tortie {args!r} raised {result.exception!r}")
    return result.exit_code, result.stdout, result.stderr


def assert_clean(code: int, out: str, err: str, allowed: set[int] = OK_CODES) -> None:
    text = out + err
    assert code in allowed, f"exit {code}:\n{text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    assert "internal error" not in text, text[-2000:]


def write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def input_commands(path: str, tmp: Path) -> list[list[str]]:
    """Every command that reads -f input, pointed at ``path``."""
    return [
        ["check", "-f", path],
        ["check", "-f", path, "-o", "json"],
        ["select", "-f", path, "all()"],
        ["ir", "-f", path],
        ["matrix", "-f", path],
        ["explain", "-f", path, "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "80"],
        *(
            ["compile", "-f", path, "--node", "node1", "--target", t, "-o", str(tmp / f"o-{t}")]
            for t in ("nftables", "iptables", "ebpf")
        ),
        ["ipam", "show", "-f", path],
        ["bgp", "render", "-f", path, "--node", "node1", "-o", str(tmp / "bird")],
        ["diff", "--base", path, "--head", DEMO],
    ]


LOCATED = re.compile(r"^.+:\d+:\d+: error\[[A-Z]\d+\]", re.M)


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_file_every_command(name: str, tmp_path: Path) -> None:
    src = write(tmp_path / f"{name}.yaml", HOSTILE_FILES[name])
    for args in input_commands(str(src), tmp_path):
        code, out, err = run(*args)
        allowed = {0, 1, 2, 3} if args[0] == "diff" else OK_CODES
        assert_clean(code, out, err, allowed)
    # check: every error carries file:line:col (empty input is valid, with nothing in it)
    code, _, err = run("check", "-f", str(src))
    if code == 1 and name not in ("empty", "only-comment", "only-separators"):
        assert LOCATED.search(err), err
    # nothing half-written: compile failed on bad input, so no output directory at all
    assert not any(p.name.startswith("o-") for p in tmp_path.iterdir()) or code == 0
    assert not Path("/tmp/tortie-pwned").exists()


def test_stdin_junk_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "no-yaml").mkdir()
    write(tmp_path / "no-yaml" / "README.txt", "hello")
    for path in [
        "-",
        "/nonexistent/tortie",
        "/dev/zero",
        str(tmp_path / "empty-dir"),
        str(tmp_path / "no-yaml"),
    ]:
        for args in input_commands(path, tmp_path):
            code, out, err = run(*args, stdin=b"\x00\xff junk: [\n" if path == "-" else None)
            allowed = {0, 1, 2, 3} if args[0] == "diff" else OK_CODES
            assert_clean(code, out, err, allowed)
    code, _, err = run("check", "-f", "/nonexistent/tortie")
    assert code == 1 and "/nonexistent/tortie" in err
    code, _, err = run("check", "-f", "/dev/zero", "-f", DEMO)
    assert code == 1 and "/dev/zero" in err and "device" in err


@pytest.mark.parametrize(
    "args",
    [
        ["select", "-f", DEMO, "--", "((("],
        ["select", "-f", DEMO, "--", "(" * 20000 + "all()" + ")" * 20000],
        ["select", "-f", DEMO, "--", "!" * 100000 + "all()"],
        ["select", "-f", DEMO, "--", " || ".join(['a == "b"'] * 5000)],
        ["select", "-f", DEMO, "--", 'a == "\x00\u202e\u200b"'],
        ["select", "-f", DEMO, "--", "a in {"],
        ["explain", "-f", DEMO, "--from", "1.2.3.4/33", "--to", "shop/web", "--port", "80"],
        ["explain", "-f", DEMO, "--from", "10.0.0.1", "--to", "fd00::1", "--port", "80"],
        ["explain", "-f", DEMO, "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "0"],
        ["explain", "-f", DEMO, "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "65536"],
        ["explain", "-f", DEMO, "--from", "a", "--to", "b", "--protocol", "256", "--port", "1"],
        ["explain", "-f", DEMO, "--from", "\udcff", "--to", "host:", "--port", "1"],
        ["explain", "-f", DEMO, "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "1"]
        + ["--node", "no-such-node"],
        ["matrix", "-f", DEMO, "--port", "0"],
        ["matrix", "-f", DEMO, "--protocol", "FOO"],
        ["matrix", "-f", DEMO, "--node", "no-such-node"],
        ["ir", "-f", DEMO, "--node", "no-such-node"],
        ["ir", "-f", DEMO, "--dump-after", "nope"],
        ["compile", "-f", DEMO, "--node", 'x";', "--target", "nftables", "-o", "/tmp/x"],
        ["compile", "-f", DEMO, "--node", "node1", "--target", "nope", "-o", "/tmp/x"],
        ["diff", "--base", DEMO],
        ["diff", "--base", "/nonexistent", "--head", DEMO],
        ["diff", "--base", DEMO, "--head", DEMO, "--artifacts"],
        ["diff", "--base", DEMO, "--head", DEMO, "--max-groups", "0"],
        ["ipam", "release", "--state", "/nonexistent/s.json", "1.2.3.4/33"],
        ["ipam", "release", "--state", "/nonexistent/s.json"],
        ["bgp", "render", "-f", DEMO, "--node", "\udcff", "-o", "/nonexistent/b"],
        ["bgp", "render", "-f", DEMO, "--node", "node1", "-o", "/tmp/x", "--router-id", 'x";'],
        ["nosuchcommand"],
        [],
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_hostile_options(args: list[str]) -> None:
    code, out, err = run(*args)
    assert_clean(code, out, err, {0, 1, 2, 3} if args[:1] == ["diff"] else OK_CODES)
    if "no-such-node" in args:
        assert code == 1 and "unknown node" in err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_fuzzed_selectors(selector: str) -> None:
    code, out, err = run("select", "-f", DEMO, "--", selector)
    assert_clean(code, out, err)
    if code == 1:
        assert re.search(r"<selector>:1:\d+: error\[", err), err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
            max_leaves=30,
        ).map(
            lambda v: json.dumps(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "GlobalNetworkPolicy",
                    "metadata": {"name": "f"},
                    "spec": v,
                }
            ).encode()
        ),
    )
)
def test_fuzzed_documents(data: bytes) -> None:
    code, out, err = run("check", "-f", "-", stdin=data)
    assert_clean(code, out, err)
    if code == 1:
        assert re.search(r"^<stdin>:\d+:\d+: error\[", err, re.M), err


# -- output directories ---------------------------------------------------------------------


def compile_args(out: Path | str, target: str = "nftables") -> list[str]:
    return ["compile", "-f", DEMO, "--node", "node1", "--target", target, "-o", str(out)]


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_compile_never_replaces_unrelated_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write(home / "thesis.tex", "years of work")
    before = tree(home)
    code, out, err = run(*compile_args(home))
    assert_clean(code, out, err)
    assert code == 2 and "manifest.json" in err
    assert tree(home) == before
    # cwd-relative forms
    cwd = os.getcwd()
    os.chdir(home)
    try:
        for target in (".", "./", "..", "/"):
            code, out, err = run(*compile_args(target))
            assert_clean(code, out, err)
            assert code == 2
    finally:
        os.chdir(cwd)
    assert tree(home) == before


def test_compile_output_paths(tmp_path: Path) -> None:
    write(tmp_path / "file", "keep")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        code, o, e = run(*compile_args(out))
        assert_clean(code, o, e)
        assert code == 2
    assert (tmp_path / "file").read_text() == "keep"
    # new, nested, empty and earlier-artifact directories are fine
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "deep", tmp_path / "empty", tmp_path / "empty"):
        code, o, e = run(*compile_args(out))
        assert code == 0, e
        assert (out / "manifest.json").is_file()
    # another target into an existing artifact: replaced as a whole, no stale file left
    code, _, e = run(*compile_args(tmp_path / "empty", "iptables"))
    assert code == 0, e
    assert not (tmp_path / "empty" / "nftables.nft").exists()
    # an input error leaves the earlier artifact exactly as it was
    before = tree(tmp_path / "empty")
    bad = write(tmp_path / "bad.yaml", "kind: [\n")
    code, _, e = run(
        "compile",
        "-f",
        str(bad),
        "--node",
        "node1",
        "--target",
        "nftables",
        "-o",
        str(tmp_path / "empty"),
    )
    assert code == 1 and "nothing written" in e
    assert tree(tmp_path / "empty") == before
    # no temporary directories left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bgp_render_output_paths_and_secrets(tmp_path: Path) -> None:
    base = ["bgp", "render", "-f", str(BGP_GOLDEN / "input.yaml"), "--node", "node-a"]
    state = tmp_path / "ipam.json"  # a copy: reading takes a lock file beside the state
    shutil.copy(BGP_GOLDEN / "ipam.json", state)
    base += ["--state", str(state), "--no-check"]
    good = ["--secrets", str(BGP_GOLDEN / "secrets.json")]
    write(tmp_path / "file", "keep")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        code, o, e = run(*base, *good, "-o", str(out))
        assert_clean(code, o, e)
        assert code == 1 and "cannot write" in e
    assert (tmp_path / "file").read_text() == "keep"
    # secrets BIRD cannot quote: refused, the value never printed, nothing written
    for value in ['pw"; } protocol x {', "pw\nprotocol x {}", "pw\x00", "p" * 2000]:
        sec = tmp_path / "s.json"
        sec.write_text(json.dumps({"bgp-secrets/tor": value}))
        code, o, e = run(*base, "--secrets", str(sec), "-o", str(tmp_path / "b"))
        assert_clean(code, o, e)
        assert code == 1 and "B001" in e and value not in e and value[:40] not in o + e
        assert not (tmp_path / "b").exists()
    for content in (b"\xff\xfe", b"[1]", b'{"a": 1}', b"{", b"x" * 100):
        sec = write(tmp_path / "s.json", content)
        code, o, e = run(*base, "--secrets", str(sec), "-o", str(tmp_path / "b"))
        assert_clean(code, o, e)
        assert code == 2
    for rid in ("0.0.0.0", "1.2.3.4/33", 'x";', "::1", "999.1.1.1", ""):
        code, o, e = run(*base, *good, "--router-id", rid, "-o", str(tmp_path / "b"))
        assert_clean(code, o, e)
        assert code == 1 or rid == "", (rid, e)
    code, o, e = run(*base[:-5], "--node", "ghost", "-o", str(tmp_path / "b"))
    assert code == 1 and "ghost" in e and "B004" in e


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird is not installed")
def test_bgp_hostile_valid_strings_stay_strings(tmp_path: Path) -> None:
    """A password and community names full of BIRD syntax, but no double quote: rendered,
    accepted by ``bird -p``, and still one password line, no extra protocol."""
    cluster = (BGP_GOLDEN / "input.yaml").read_text() + (
        "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\n"
        "metadata: {name: node.node-a}\nspec:\n"
        "  communities:\n  - {name: \"x'; } protocol #\", value: '65000:100'}\n"
        "  prefixAdvertisements:\n"
        "  - {cidr: 10.65.0.0/16, communities: [\"x'; } protocol #\", '65001:7']}\n"
    )
    src = write(tmp_path / "in.yaml", cluster)
    state = tmp_path / "ipam.json"  # a copy: reading takes a lock file beside the state
    shutil.copy(BGP_GOLDEN / "ipam.json", state)
    password = "p'; } protocol bgp evil { # \\ $(id) `id` */"
    sec = write(tmp_path / "s.json", json.dumps({"bgp-secrets/tor": password}))
    code, o, e = run(
        "bgp", "render", "-f", str(src), "--node", "node-a", "--state",
        str(state), "--secrets", str(sec), "-o", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 0, e
    text = (tmp_path / "b" / "bird.cfg").read_text()
    assert f'  password "{password}";\n' in text
    assert "protocol bgp evil" not in text.replace(f'"{password}"', "")
    golden = (BGP_GOLDEN / "node-a.bird.cfg").read_text()
    assert text.count("\nprotocol ") == golden.count("\nprotocol ")
    assert "bgp_community.add((65000, 100));" in text
    subprocess.run(["bird", "-p", "-c", str(tmp_path / "b" / "bird.cfg")], check=True)


# -- ipam state files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff",
        b"[]",
        b"{}",
        b'{"version": 1, "blocks": 5}',
        b'{"version": 1, "blocks": [5]}',
        b'{"version": 1, "blocks": [{"cidr": 5, "pool": "p"}]}',
        b'{"version": 1, "blocks": [{"cidr": "10.0.0.0/33", "pool": "p"}]}',
        b'{"version": 1, "blocks": [{"cidr": "10.0.0.0/8", "pool": "p", "allocations": [[0]]}]}',
        b'{"version": 1, "blocks": [{"cidr": "10.0.0.0/30", "pool": "p", "allocations": [[9, "h", null]]}]}',
        b'{"version": 1, "blocks": [{"cidr": "10.0.0.0/8", "pool": "p"}, {"cidr": "10.1.0.0/16", "pool": "p"}]}',
        b'{"version": 1, "blocks": [{"cidr": "10.0.0.0/8", "pool": "p", "state": "x"}]}',
        b"[" * 100000,
    ],
)
def test_ipam_hostile_state_file(content: bytes, tmp_path: Path) -> None:
    state = write(tmp_path / "ipam.json", content)
    alloc = ["ipam", "allocate", "-f", DEMO, "--state", str(state), "--node", "node1"]
    for args in (
        ["ipam", "show", "-f", DEMO, "--state", str(state)],
        [*alloc, "--handle", "ns/pod"],
        ["ipam", "release", "--state", str(state), "10.65.0.1"],
        [
            "bgp",
            "render",
            "-f",
            DEMO,
            "--node",
            "node1",
            "--state",
            str(state),
            "-o",
            str(tmp_path / "b"),
        ],
    ):
        code, o, e = run(*args)
        assert_clean(code, o, e)
        assert code == 1, (args, o, e)
        assert str(state) in e
    assert state.read_bytes() == content  # a refused state file is never rewritten


def test_ipam_hostile_paths_and_handles(tmp_path: Path) -> None:
    alloc = ["ipam", "allocate", "-f", DEMO, "--node", "node1"]
    for state in ("/nonexistent/dir/ipam.json", str(tmp_path)):
        code, o, e = run(*alloc, "--state", state, "--handle", "a")
        assert_clean(code, o, e)
        assert code == 1
    assert not Path("/nonexistent").exists()
    state = str(tmp_path / "s.json")
    for handle in ("a\nb", "", "a b", "\x00", "\u200b\u202e" * 0 + "x" * 600):
        code, o, e = run(*alloc, "--state", state, "--handle", handle)
        assert_clean(code, o, e)
        assert code == 2
    code, o, e = run(*alloc, "--state", state, "--handle", "a", "--ipv4", "1000000")
    assert code == 1 and "exhausted" in e and not Path(state).exists()
    code, o, e = run(*alloc, "--state", state, "--node", "ghost", "--handle", "a")
    assert_clean(code, o, e)


# -- apply and status on hostile artifacts and state directories ----------------------------

_NETNS = "tortie-hostile-none"  # never created: any kernel access fails instead of touching ours


def _artifact(root: Path, manifest: object, files: dict[str, bytes] | None = None) -> Path:
    root.mkdir()
    for name, data in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(raw)
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HOSTNAME = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").is_file() else b""
M = {"format": 1, "node": "n1", "target": "nftables"}
HOSTILE_MANIFESTS = {
    "junk": b"\xff\xfe",
    "deep": b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "list": [1],
    "format2": {**M, "format": 2},
    "node-list": {**M, "node": ["n1"]},
    "target-dict": {**M, "target": {"a": 1}},
    "files-str": {**M, "files": "x"},
    "files-list": {**M, "files": [1]},
    "traversal": {**M, "files": {"../../../../../etc/hostname": _sha(HOSTNAME)}},
    "absolute": {**M, "files": {"/etc/hostname": _sha(HOSTNAME)}},
    "digest-int": {**M, "files": {"nftables.nft": 5}},
    "summary-str": {**M, "files": {}, "summary": "x"},
    "missing-file": {**M, "files": {"nftables.nft": _sha(b"")}},
    "no-script": {**M, "files": {}},
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MANIFESTS))
def test_apply_refuses_hostile_artifacts(name: str, tmp_path: Path) -> None:
    art = _artifact(tmp_path / "art", HOSTILE_MANIFESTS[name])
    for extra in ([], ["-o", "json"]):
        code, o, e = run(
            "apply", str(art), "--dry-run", "--node", "n1", "--state-dir", str(tmp_path / "st"),
            "--netns", _NETNS, *extra,
        )  # fmt: skip
        assert_clean(code, o, e)
        assert code == 1 and "refusing to apply" in e, e


def test_apply_refuses_non_utf8_script(tmp_path: Path) -> None:
    data = b"table inet tortie {\xff}\n"
    art = _artifact(
        tmp_path / "art", {**M, "files": {"nftables.nft": _sha(data)}}, {"nftables.nft": data}
    )
    code, o, e = run(
        "apply",
        str(art),
        "--dry-run",
        "--node",
        "n1",
        "--state-dir",
        str(tmp_path / "st"),
        "--netns",
        _NETNS,
    )
    assert_clean(code, o, e)
    assert code == 1 and "UTF-8" in e
    code, o, e = run(
        "apply",
        str(tmp_path / "nope"),
        "--dry-run",
        "--node",
        "n1",
        "--state-dir",
        str(tmp_path / "st"),
    )
    assert_clean(code, o, e)
    assert code == 1


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("applied.json", b"\xff"),
        ("applied.json", b"[1]"),
        ("applied.json", b'{"format": 1}'),
        (
            "applied.json",
            b'{"format": 1, "target": 5, "node": "n", "artifact": "a", "source": "s",'
            b' "compiler": "c", "applied_at": "x", "mode": "full", "counts": [], "kernel": 5}',
        ),
        ("journal.json", b"zz"),
        ("journal.json", b"[]"),
        ("journal.json", b'{"pid": "x"}'),
    ],
)
def test_status_hostile_state_dir(name: str, content: bytes, tmp_path: Path) -> None:
    write(tmp_path / name, content)
    for extra in ([], ["-o", "json"]):
        code, o, e = run("status", "--state-dir", str(tmp_path), "--netns", _NETNS, *extra)
        assert_clean(code, o, e)
        assert code == 1


def test_status_does_not_create_state_dir(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    code, o, e = run("status", "--state-dir", str(missing), "--netns", _NETNS)
    assert_clean(code, o, e)
    assert code == 1 and "nothing" in o and not (tmp_path / "a").exists()
    write(tmp_path / "f", "x")
    code, o, e = run("status", "--state-dir", str(tmp_path / "f"), "--netns", _NETNS)
    assert_clean(code, o, e)
    assert code == 2


# -- hostile but valid input: the artifacts load, and the strings stayed strings ---------------


@pytest.fixture(scope="module")
def hostile_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    # the file name is hostile too: it ends up in comments of every artifact
    src = write(tmp / 'a" drop; flush ruleset; #\nx *\\ $(id) `id`.yaml', HOSTILE_VALID)
    code, _, err = run("check", "-f", str(src))
    assert code == 0, err
    out = {}
    for target in ("nftables", "iptables", "ebpf"):
        if target == "ebpf" and shutil.which("clang") is None:
            continue
        code, _, err = run(
            "compile",
            "-f",
            str(src),
            "--node",
            "node1",
            "--target",
            target,
            "-o",
            str(tmp / target),
        )
        assert code == 0, err
        out[target] = tmp / target
    out["src"] = src
    return out


def _unshare(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--net", "sh", "-ec", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.kernel
def test_hostile_nft_script_loads_and_quotes(hostile_artifacts: dict[str, Path]) -> None:
    d = hostile_artifacts["nftables"]
    text = (d / "nftables.nft").read_text()
    res = _unshare("nft -c -f nftables.nft", d)
    assert res.returncode == 0, res.stderr
    # only inside a quoted string or a comment line
    for line in text.splitlines():
        if "flush ruleset" in line:
            code = re.sub(r'"[^"]*"', '""', line).split("#", 1)[0]
            assert "flush" not in code, line
    # load for real in a fresh namespace: one table, nothing flushed, rules listed back
    res = _unshare("nft -f nftables.nft; nft list tables", d)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["table", "inet", "tortie"] or "tortie" in res.stdout


@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("ipset") is None, reason="ipset is not installed")
def test_hostile_iptables_files_load(hostile_artifacts: dict[str, Path]) -> None:
    d = hostile_artifacts["iptables"]
    res = _unshare(
        "ipset restore < ipset.restore; iptables-restore --noflush --test < iptables.rules;"
        " ip6tables-restore --noflush --test < ip6tables.rules",
        d,
    )
    assert res.returncode == 0, res.stderr
    for name in ("iptables.rules", "ip6tables.rules", "ipset.restore"):
        for line in (d / name).read_text().splitlines():
            if "flush ruleset" in line:
                assert line.startswith("#") or re.search(r'"[^"\n]*flush ruleset[^"\n]*"', line), (
                    line
                )


@pytest.mark.clang
def test_hostile_ebpf_sources_compile(hostile_artifacts: dict[str, Path], tmp_path: Path) -> None:
    if "ebpf" not in hostile_artifacts:
        pytest.skip("clang is not installed")
    d = hostile_artifacts["ebpf"]
    sources = sorted((d / "src").glob("*.c"))
    assert sources
    for src in sources:
        text = src.read_text()
        code = re.sub(r"/\*.*?\*/|//[^\n]*|\"(?:[^\"\\\n]|\\.)*\"", " ", text, flags=re.S)
        assert "flush" not in code and "$(id)" not in code, src
        argv = clang.bpf_argv(
            str(src), str(tmp_path / (src.stem + ".o")), [str(d / "src" / "include")]
        )
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("target", ["nftables", "iptables", "ebpf"])
def test_hostile_artifacts_deterministic_across_hash_seeds(
    target: str, hostile_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    if target not in hostile_artifacts:
        pytest.skip("clang is not installed")
    cli = "from compiler.cli import main; main()"
    args = ["-f", str(hostile_artifacts["src"]), "--node", "node1", "--target", target]
    python_stdout(cli, "compile", *args, "-o", str(tmp_path / "a"), seed="1")
    python_stdout(cli, "compile", *args, "-o", str(tmp_path / "b"), seed="4242")
    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert first == second
    assert first == tree(hostile_artifacts[target])


@pytest.mark.parametrize("value", ["nan", "-1", "abc", "inf"])
def test_runtime_numeric_options(value: str, tmp_path: Path) -> None:
    """Seconds must be numbers: NaN passes every range check unless refused explicitly."""
    st_dir = str(tmp_path / "st")
    code, o, e = run("status", "--lock-timeout", value, "--state-dir", st_dir, "--netns", _NETNS)
    assert_clean(code, o, e)
    assert code == (1 if value == "inf" else 2)
    code, o, e = run(
        "agent", "--node", "n1", "--watch", str(tmp_path), "--once", "--interval", value,
        "--state-dir", st_dir, "--netns", _NETNS,
    )  # fmt: skip
    assert_clean(code, o, e)
    assert code == 2
    assert not (tmp_path / "st").exists()


def test_bgp_refuses_blocks_outside_every_pool(tmp_path: Path) -> None:
    """A tampered state file with a 0.0.0.0/0 block must not become a blackhole default route
    nor a BGP announcement."""
    state = tmp_path / "ipam.json"
    for cidr, pool in (("0.0.0.0/0", "default-ipv4"), ("10.70.0.0/26", "default-ipv4")):
        block = {"cidr": cidr, "pool": pool, "affinity": "node-a", "allocations": []}
        state.write_text(json.dumps({"version": 1, "blocks": [block]}))
        code, o, e = run(
            "bgp", "render", "-f", str(BGP_GOLDEN / "input.yaml"), "--node", "node-a",
            "--state", str(state), "--secrets", str(BGP_GOLDEN / "secrets.json"),
            "-o", str(tmp_path / "b"), "--no-check",
        )  # fmt: skip
        assert_clean(code, o, e)
        assert code == 1 and cidr in e and not (tmp_path / "b").exists()
        code, o, e = run(
            "ipam", "show", "-f", str(BGP_GOLDEN / "input.yaml"), "--state", str(state)
        )
        assert code == 0 and f"warning: {state}: block {cidr}" in e


def test_vxlan_ignores_blocks_outside_their_pool() -> None:
    from compiler.diagnostics import DiagnosticSink, SourceRegistry
    from compiler.frontend import load
    from runtime.ipam_state import Allocation, Block, IPAMState
    from runtime.vxlan import tunnel_handle, vteps, vxlan_routes

    sink = DiagnosticSink()
    rs = load([str(BGP_GOLDEN / "input.yaml")], sink, SourceRegistry())
    assert not sink.has_errors
    state = IPAMState()
    tunnel = Block(ipaddress.ip_network("10.70.0.0/26"), "overlay", "node-b")
    tunnel.allocations[0] = Allocation(tunnel_handle("node-b"), "node-b")
    state.add_block(tunnel)
    state.add_block(Block(ipaddress.ip_network("128.0.0.0/1"), "overlay", "node-b"))
    routes = vxlan_routes("node-a", vteps(rs.nodes, rs.ip_pools, state))
    assert [str(r.dst) for r in routes] == ["10.70.0.0/26"]


def test_bgp_render_rejected_config_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compiler.tools import bird

    def reject(path: str) -> None:
        raise bird.BirdError(["bird", "-p", "-c", path], 1, "bird.cfg:1:1 syntax error")

    monkeypatch.setattr(bird, "available", lambda: True)
    monkeypatch.setattr(bird, "check_config", reject)
    out = tmp_path / "new" / "deeper"
    (tmp_path / "st").mkdir()  # a copy of the state: reading takes a lock file beside it
    shutil.copy(BGP_GOLDEN / "ipam.json", tmp_path / "st" / "ipam.json")
    code, o, e = run(
        "bgp", "render", "-f", str(BGP_GOLDEN / "input.yaml"), "--node", "node-a",
        "--state", str(tmp_path / "st" / "ipam.json"),
        "--secrets", str(BGP_GOLDEN / "secrets.json"), "-o", str(out),
    )  # fmt: skip
    assert_clean(code, o, e)
    assert code == 1 and "bird rejected" in e
    assert [p.name for p in tmp_path.iterdir()] == ["st"]


def test_bgp_render_and_ir_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    cli = "from compiler.cli import main; main()"
    args = ["bgp", "render", "-f", str(BGP_GOLDEN / "input.yaml"), "--node", "node-a"]
    args += ["--secrets", str(BGP_GOLDEN / "secrets.json"), "--no-check"]
    texts, irs = set(), set()
    for seed in ("0", "123456"):
        out = tmp_path / seed
        python_stdout(cli, *args, "-o", str(out), seed=seed)
        texts.add((out / "bird.cfg").read_bytes())
        irs.add(python_stdout(cli, "ir", "-f", DEMO, seed=seed))
    assert len(texts) == 1 and len(irs) == 1
