"""A small interpreter of the iptables-restore text the iptables target renders.

It runs the *text* (``iptables.rules`` / ``ip6tables.rules`` split into words like the restore
parser does) against
the first packet of a flow on a simulated node, with the ipsets of ``ipset.restore``. It knows
exactly the options the target emits (and fails loudly on anything else), so a fast hypothesis
test can compare thousands of flows with the evaluator; the kernel tests
(``tests/kernel/test_iptables_*``) then check that real iptables (legacy and nft) agrees.

Packet paths through one node (the netns harness topology):

* forwarded: raw PREROUTING, mangle PREROUTING, filter FORWARD;
* to the node: raw PREROUTING, mangle PREROUTING, filter INPUT;
* from the node: raw OUTPUT, filter OUTPUT.

Only the first packet of a flow is simulated: connection state is NEW (or UNTRACKED after
``CT --notrack``), as the evaluator assumes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "udplite": 136}


def _proto(text: str) -> int:
    return _PROTO[text] if text in _PROTO else int(text)


@dataclass
class Packet:
    src: IPAddr
    dst: IPAddr
    protocol: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    iif: str | None = None
    oif: str | None = None
    mark: int = 0
    ctstate: str = "NEW"
    hop_limit: int = 64
    local: bool = False  # addressed to this node (addrtype --dst-type LOCAL)
    logged: list[str] = field(default_factory=list)


@dataclass
class Rule:
    chain: str
    tokens: list[str]


class SimError(AssertionError):
    pass


_TOKEN = re.compile(r'"([^"\\]*)"|(\S+)')


def _tokens(line: str) -> list[str]:
    """Split a restore line like iptables-restore does, for the quoting the target emits:
    double quotes without escapes (the target never writes a backslash or a quote inside).
    Anything else is a rendering bug, so it fails loudly."""
    if "\\" in line:
        raise SimError(f"backslash in restore line: {line!r}")
    if line.count('"') % 2:
        raise SimError(f"unbalanced quotes: {line!r}")
    return [bare or quoted for quoted, bare in _TOKEN.findall(line)]


def parse_rules(text: str) -> dict[str, dict[str, list[list[str]]]]:
    """table -> chain -> rules (token lists, without ``-A chain``). Built-in chains hold the
    hook rules (``-I X 1`` goes first, ``-A`` last)."""
    tables: dict[str, dict[str, list[list[str]]]] = {}
    cur: dict[str, list[list[str]]] | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
            continue
        if line == "COMMIT":
            cur = None
            continue
        assert cur is not None, line
        if line.startswith(":"):
            cur.setdefault(line[1:].split()[0], [])
            continue
        toks = _tokens(line)
        if toks[0] == "-A":
            cur.setdefault(toks[1], []).append(toks[2:])
        elif toks[0] == "-I":
            assert toks[2] == "1", line
            cur.setdefault(toks[1], []).insert(0, toks[3:])
        else:
            raise SimError(f"unexpected restore line {line!r}")
    return tables


def parse_ipset(text: str) -> dict[str, tuple[str, set]]:
    """Set name -> (type, members) after running the script's create/add/swap/destroy."""
    sets: dict[str, tuple[str, set]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "create":
            sets.setdefault(words[1], (words[2], set()))
        elif words[0] == "flush":
            sets[words[1]][1].clear()
        elif words[0] == "add":
            typ, members = sets[words[1]]
            if typ == "hash:net":
                members.add(ipaddress.ip_network(words[2]))
            else:
                ip, _, rest = words[2].partition(",")
                proto, _, port = rest.partition(":")
                members.add((ipaddress.ip_address(ip), _proto(proto), int(port)))
        elif words[0] == "swap":
            sets[words[1]], sets[words[2]] = sets[words[2]], sets[words[1]]
        elif words[0] == "destroy":
            del sets[words[1]]
        else:
            raise SimError(f"unexpected ipset line {line!r}")
    return sets


def _ports(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.append((int(lo), int(hi or lo)))
    return out


def _in_ports(port: int | None, text: str) -> bool:
    return port is not None and any(lo <= port <= hi for lo, hi in _ports(text))


def _iface(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _icmp(p: Packet, value: str) -> bool:
    t, _, c = value.partition("/")
    if p.icmp_type != int(t):
        return False
    return not c or p.icmp_code == int(c)


class Node:
    """One node's rules for one family, plus its ipsets."""

    def __init__(self, rules_text: str, ipset_text: str) -> None:
        self.tables = parse_rules(rules_text)
        self.sets = parse_ipset(ipset_text)

    # -- matching --------------------------------------------------------------------------------

    def _set_match(self, p: Packet, name: str, flags: str) -> bool:
        if name not in self.sets:
            raise SimError(f"rule refers to missing set {name}")
        typ, members = self.sets[name]
        where = flags.split(",")
        ip = p.src if where[0] == "src" else p.dst
        if typ == "hash:net":
            return any(ip.version == n.version and ip in n for n in members)
        port = p.sport if where[1] == "src" else p.dport
        return (ip, p.protocol, port) in members

    def _module(self, p: Packet, mod: str, opts: list[tuple[bool, str, list[str]]]) -> bool:
        ok = True
        for neg, opt, vals in opts:
            if mod == "comment" or mod == "limit":
                r = True
            elif mod == "mark":
                v, _, m = vals[0].partition("/")
                r = (p.mark & int(m, 16)) == int(v, 16)
            elif mod in ("tcp", "udp", "sctp"):
                if p.protocol != _PROTO[mod]:
                    return False
                r = _in_ports(p.dport if opt == "--dport" else p.sport, vals[0])
            elif mod == "multiport":
                if p.protocol not in (6, 17, 132, 136, 33):
                    return False
                r = _in_ports(p.dport if opt == "--dports" else p.sport, vals[0])
            elif mod in ("icmp", "icmp6"):
                if p.protocol != (1 if mod == "icmp" else 58):
                    return False
                r = _icmp(p, vals[0])
            elif mod == "iprange":
                lo, _, hi = vals[0].partition("-")
                ip = p.src if opt == "--src-range" else p.dst
                lo_a, hi_a = ipaddress.ip_address(lo), ipaddress.ip_address(hi)
                r = ip.version == lo_a.version and lo_a <= ip <= hi_a
            elif mod == "set":
                r = self._set_match(p, vals[0], vals[1])
            elif mod == "conntrack":
                r = p.ctstate in vals[0].split(",")
            elif mod == "addrtype":
                if opt != "--dst-type" or vals[0] != "LOCAL":
                    raise SimError(f"unknown addrtype option {opt} {vals}")
                r = p.local
            elif mod == "hl":
                r = p.hop_limit == int(vals[0])
            else:
                raise SimError(f"unknown match module {mod}")
            ok = ok and (r != neg)
        return ok

    def _matches(self, p: Packet, toks: list[str]) -> tuple[bool, list[str]]:
        """Whether the rule's conditions hold, and its target tokens."""
        i, neg = 0, False
        while i < len(toks):
            t = toks[i]
            if t == "!":
                neg, i = True, i + 1
                continue
            if t in ("-j", "-g"):
                return True, toks[i:]
            if t in ("-s", "-d"):
                net = ipaddress.ip_network(toks[i + 1])
                ip = p.src if t == "-s" else p.dst
                r = ip.version == net.version and ip in net
                i += 2
            elif t in ("-i", "-o"):
                r = _iface(toks[i + 1], p.iif if t == "-i" else p.oif)
                i += 2
            elif t == "-p":
                r = p.protocol == _proto(toks[i + 1])
                i += 2
            elif t == "-m":
                mod = toks[i + 1]
                i += 2
                opts: list[tuple[bool, str, list[str]]] = []
                while i < len(toks) and (toks[i] == "!" or toks[i].startswith("--")):
                    oneg = toks[i] == "!"
                    if oneg:
                        i += 1
                    opt = toks[i]
                    n = 2 if opt == "--match-set" else 1
                    opts.append((oneg, opt, toks[i + 1 : i + 1 + n]))
                    i += 1 + n
                r = self._module(p, mod, opts)
            else:
                raise SimError(f"unknown option {t} in {toks}")
            if r == neg:
                return False, []
            neg = False
        raise SimError(f"rule without target: {toks}")

    # -- running ---------------------------------------------------------------------------------

    def run_hook(self, table: str, builtin: str, p: Packet) -> str:
        """``ACCEPT`` (ends the hook, packet goes on), ``DROP``, or ``CONTINUE`` (policy)."""
        chains = self.tables.get(table, {})
        stack: list[tuple[str, int]] = [(builtin, 0)]
        steps = 0
        while stack:
            chain, pos = stack.pop()
            rules = chains.get(chain, [])
            while pos < len(rules):
                steps += 1
                if steps > 100000:
                    raise SimError("loop")
                ok, target = self._matches(p, rules[pos])
                pos += 1
                if not ok:
                    continue
                verb, name = target[0], target[1]
                if name == "ACCEPT":
                    return "ACCEPT"
                if name in ("DROP", "REJECT"):
                    return "DROP"
                if name == "RETURN":
                    break
                if name == "LOG":
                    p.logged.append(target[target.index("--log-prefix") + 1])
                    continue
                if name == "MARK":
                    v, _, m = target[target.index("--set-xmark") + 1].partition("/")
                    p.mark = (p.mark & ~int(m, 16)) | int(v, 16)
                    continue
                if name == "CT":
                    assert target[2] == "--notrack"
                    p.ctstate = "UNTRACKED"
                    continue
                if name not in chains:
                    raise SimError(f"jump to missing chain {name}")
                if verb == "-j":
                    stack.append((chain, pos))
                stack.append((name, 0))
                break
        return "CONTINUE"

    def path(self, p: Packet, kind: str) -> bool:
        """Whether the node lets ``p`` through: ``kind`` is forward / input / output."""
        hooks = {
            "forward": (("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("filter", "FORWARD")),
            "input": (("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("filter", "INPUT")),
            "output": (("raw", "OUTPUT"), ("filter", "OUTPUT")),
        }[kind]
        p.local = kind == "input"
        return all(self.run_hook(table, builtin, p) != "DROP" for table, builtin in hooks)


# -- a simulated cluster: where addresses live, which nodes a flow crosses ----------------------


class SimCluster:
    """Every node's rendered rules, and the netns harness topology: node addresses
    (``host_ips``) on the node, pods behind their interfaces, nodes joined to the first node by
    ``n<i>``/``n0`` links, everything else behind the first node's uplink ``x0``."""

    UPLINK = "x0"

    def __init__(self, programs: dict[str, object], render) -> None:  # noqa: ANN001
        self.programs = programs
        self.first = sorted(programs)[0]
        self.index = {name: i for i, name in enumerate(sorted(programs))}
        self.nodes: dict[tuple[str, int], Node] = {}
        for name, prog in programs.items():
            files = render(prog).files
            ipset_text = files["ipset.restore"].decode()
            for fam, fname in ((4, "iptables.rules"), (6, "ip6tables.rules")):
                self.nodes[(name, fam)] = Node(files[fname].decode(), ipset_text)
        prog = programs[self.first]
        self.pods: dict[IPAddr, tuple[str, str]] = {}
        for ep in prog.endpoints:  # type: ignore[attr-defined]
            if not ep.is_host and ep.node in programs:
                for ip in ep.ips:
                    self.pods.setdefault(ip, (ep.node, ep.interface))
        self.hosts: dict[IPAddr, str] = {}
        for node, ips in prog.host_ips.items():  # type: ignore[attr-defined]
            if node in programs:
                for ip in ips:
                    self.hosts.setdefault(ip, node)

    def where(self, ip: IPAddr) -> tuple[str, str | None, str | None]:
        """("pod", node, iface) | ("host", node, None) | ("ext", None, None)."""
        if ip in self.pods:
            return ("pod", *self.pods[ip])
        if ip in self.hosts:
            return ("host", self.hosts[ip], None)
        return ("ext", None, None)

    def _link(self, a: str, b: str) -> str:
        """The interface of node ``a`` towards node ``b`` (or towards the outside)."""
        if b == "ext":
            return self.UPLINK if a == self.first else "n0"
        if a == self.first:
            return f"n{self.index[b]}"
        return "n0"

    def route(self, start: str, end: str) -> list[str]:
        """Nodes crossed from ``start`` to ``end`` (node names, or "ext" for the outside, which
        is behind the first node; the first node is also the hub between other nodes)."""
        if start == end:
            return [self.first if start == "ext" else start]
        path = [] if start == "ext" else [start]
        if self.first not in (start, end):
            path.append(self.first)
        if end != "ext":
            path.append(end)
        return path

    def segments(self, src: IPAddr, dst: IPAddr) -> list[tuple[str, str, str | None, str | None]]:
        """(node, kind, iif, oif) for every node the first packet crosses, in order."""
        s_kind, s_node, s_if = self.where(src)
        d_kind, d_node, d_if = self.where(dst)
        start, end = s_node or "ext", d_node or "ext"
        path = self.route(start, end)
        out: list[tuple[str, str, str | None, str | None]] = []
        for i, node in enumerate(path):
            first, last = i == 0, i == len(path) - 1
            prev = path[i - 1] if not first else ("ext" if start == "ext" else None)
            nxt = path[i + 1] if not last else ("ext" if end == "ext" else None)
            iif = self._link(node, prev) if prev else None
            oif = self._link(node, nxt) if nxt else None
            if first and s_kind == "pod":
                iif = s_if
            if last and d_kind == "pod":
                oif = d_if
            if first and last and s_kind == "host" and d_kind == "host":
                out += [(node, "output", None, "lo"), (node, "input", "lo", None)]
            elif first and s_kind == "host":
                out.append((node, "output", None, oif))
            elif last and d_kind == "host":
                out.append((node, "input", iif, None))
            else:
                out.append((node, "forward", iif, oif))
        return out

    def allowed(self, flow) -> bool:  # noqa: ANN001
        """Whether the first packet of ``flow`` gets through every node on its way."""
        family = flow.src_ip.version
        segs = self.segments(flow.src_ip, flow.dst_ip)
        carry: Packet | None = None
        for node, kind, iif, oif in segs:
            if carry is not None and kind == "input" and oif is None and iif == "lo":
                p = carry  # host to itself: the same packet comes back in through lo
                p.iif, p.oif = "lo", None
            else:
                p = Packet(
                    flow.src_ip,
                    flow.dst_ip,
                    flow.protocol,
                    flow.src_port,
                    flow.dst_port,
                    flow.icmp_type,
                    flow.icmp_code,
                    iif,
                    oif,
                )
            if not self.nodes[(node, family)].path(p, kind):
                return False
            carry = p
        return True


# -- tests of the simulator itself --------------------------------------------------------------


def test_tokens_and_ipset_script() -> None:
    assert _tokens('-A x -m comment --comment "a b" -j RETURN') == [
        "-A",
        "x",
        "-m",
        "comment",
        "--comment",
        "a b",
        "-j",
        "RETURN",
    ]
    sets = parse_ipset(
        "create s hash:net family inet -exist\ncreate t hash:net family inet -exist\n"
        "flush t\nadd t 10.0.0.0/8\nswap t s\ndestroy t\n"
    )
    assert sets == {"s": ("hash:net", {ipaddress.ip_network("10.0.0.0/8")})}


def test_goto_returns_to_the_jumping_chain() -> None:
    rules = """*filter
:top - [0:0]
:tree - [0:0]
:leaf - [0:0]
-A top -j tree
-A top -m mark --mark 0x1/0x1 -j ACCEPT
-A top -j DROP
-A tree -i a+ -g leaf
-A leaf -j MARK --set-xmark 0x1/0x1
-A leaf -j RETURN
-A leaf -j DROP
-I FORWARD 1 -j top
COMMIT
"""
    node = Node(rules, "")
    v4 = ipaddress.ip_address("10.0.0.1")
    assert node.path(Packet(v4, v4, 6, iif="ab"), "forward") is True
    assert node.path(Packet(v4, v4, 6, iif="b"), "forward") is False
