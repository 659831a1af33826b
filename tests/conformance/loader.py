"""Load the conformance corpus: small clusters plus hand-derived expected verdicts.

Each case file under ``cases/<family>/<case>.yaml`` is a multi-document YAML stream. Document 1 is a
``kind: ConformanceCase`` header (never a real resource); the remaining documents are the resources
under test. When the header says ``base: true``, the standard e2e cluster in ``base/cluster.yaml`` is
prepended, and any case document that names the same object (kind, namespace, name) as a base item
replaces that item, which is how a case relabels a pod or a namespace.

Expected verdicts are written as ordered pattern lines, ``"SRC -> DST: allow|deny"``, on top of a
``default`` verdict for every ordered pod pair. :func:`load_cases` expands them into one explicit
``{(src, dst): allowed}`` table per check, so that a runner only has to look values up.

>>> parse_rule("fd00:65::20 -> x/a: deny")
('fd00:65::20', 'x/a', False)
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent
BASE_CLUSTER = ROOT / "base" / "cluster.yaml"
CASES_DIR = ROOT / "cases"

# libyaml when available: the base cluster is parsed once per case otherwise, and that dominates.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

HEADER_KIND = "ConformanceCase"
HEADER_KEYS = frozenset({"kind", "description", "base", "expect"})
CHECK_KEYS = frozenset({"protocol", "port", "family", "default", "rules"})
PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMP")
VERDICTS = {"allow": True, "deny": False}

_RULE_RE = re.compile(r"^\s*(?P<src>\S+)\s+->\s+(?P<dst>\S+?):\s+(?P<verdict>allow|deny)\s*$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class CaseError(ValueError):
    """A case file that does not follow the corpus format."""


@dataclass(frozen=True)
class Check:
    """One probe matrix: every (src, dst) pair gets an expected verdict for one protocol/port.

    ``src``/``dst`` are pod ids (``ns/name``), literal IP addresses (traffic from or to outside the
    pod network) or ``host:<HostEndpointName>``. ``port`` is ``None`` for ICMP (echo request).
    """

    protocol: str
    port: int | None
    family: int
    expected: dict[tuple[str, str], bool]


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    description: str
    documents_yaml_text: str
    checks: list[Check]
    pods: dict[str, dict[int, str]] = field(default_factory=dict)
    """Pod id -> {4: IPv4, 6: IPv6}, from the pods' ``status.podIPs`` (base and case)."""


def parse_rule(line: str) -> tuple[str, str, bool]:
    """Split ``"SRC -> DST: allow|deny"``; IPv6 literals keep their colons."""
    m = _RULE_RE.match(line)
    if m is None:
        raise CaseError(f"bad rule {line!r}: expected 'SRC -> DST: allow|deny'")
    return m["src"], m["dst"], VERDICTS[m["verdict"]]


def expand_pattern(
    pattern: str, pods: dict[str, dict[int, str]], host_endpoints: set[str], family: int
) -> list[str]:
    """Endpoints a pattern names: pods for ``ns/pod`` (``*`` allowed in either part), else itself."""
    if pattern.startswith("host:"):
        if pattern[len("host:") :] not in host_endpoints:
            raise CaseError(f"{pattern!r}: no HostEndpoint of that name in the case")
        return [pattern]
    if "/" in pattern:
        ns, _, name = pattern.partition("/")
        if not ns or not name or "/" in name:
            raise CaseError(f"{pattern!r}: expected ns/pod")
        for part in (ns, name):
            if part != "*" and not _NAME_RE.match(part):
                raise CaseError(f"{pattern!r}: {part!r} is neither '*' nor a name")
        found = [
            pod_id
            for pod_id in sorted(pods)
            if (ns == "*" or pod_id.split("/")[0] == ns)
            and (name == "*" or pod_id.split("/")[1] == name)
        ]
        if not found:
            raise CaseError(f"{pattern!r} matches no pod")
        return found
    try:
        ip = ipaddress.ip_address(pattern)
    except ValueError:
        raise CaseError(f"{pattern!r} is not ns/pod, an IP address or host:<name>") from None
    if str(ip) != pattern:
        raise CaseError(f"{pattern!r}: write the IP in canonical form ({ip})")
    if ip.version != family:
        raise CaseError(f"{pattern!r} is IPv{ip.version} in a family {family} check")
    return [pattern]


def _flatten(docs: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc:
            raise CaseError(f"document without kind: {doc!r:.80}")
        if doc["kind"] == "List":
            out.extend(_flatten(doc.get("items") or []))
        else:
            out.append(doc)
    return out


def _identity(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc.get("metadata") or {}
    return doc.get("apiVersion", ""), doc["kind"], meta.get("namespace", ""), meta.get("name", "")


def _pod_ips(doc: dict[str, Any]) -> dict[int, str]:
    status = doc.get("status") or {}
    raw = [entry["ip"] for entry in status.get("podIPs") or []] or (
        [status["podIP"]] if status.get("podIP") else []
    )
    ips: dict[int, str] = {}
    for text in raw:
        ip = ipaddress.ip_address(text)
        ips.setdefault(ip.version, str(ip))
    return ips


def _split_documents(text: str) -> list[tuple[Any, str]]:
    """Each document of a stream with its own source text (comments and separators dropped)."""
    out = []
    for node in yaml.compose_all(text, Loader=_Loader):
        if node is None:
            continue
        chunk = text[node.start_mark.index : node.end_mark.index].rstrip() + "\n"
        out.append((yaml.load(chunk, Loader=_Loader), chunk))
    return out


@functools.lru_cache(maxsize=4)
def _parse_base(base_text: str) -> tuple[dict[str, Any], ...]:
    return tuple(_flatten(list(yaml.load_all(base_text, Loader=_Loader))))


def _parse_check(
    raw: Any, pods: dict[str, dict[int, str]], host_endpoints: set[str], where: str
) -> Check:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: a check must be a mapping")
    unknown = set(raw) - CHECK_KEYS
    if unknown:
        raise CaseError(f"{where}: unknown keys {sorted(unknown)}")
    protocol = raw.get("protocol")
    if protocol not in PROTOCOLS:
        raise CaseError(f"{where}: protocol must be one of {PROTOCOLS}")
    port = raw.get("port")
    if protocol == "ICMP":
        if port is not None:
            raise CaseError(f"{where}: ICMP checks take no port")
    elif not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise CaseError(f"{where}: port must be 1-65535")
    family = raw.get("family", 4)
    if family not in (4, 6):
        raise CaseError(f"{where}: family must be 4 or 6")
    default = raw.get("default")
    if default not in VERDICTS:
        raise CaseError(f"{where}: default must be allow or deny")
    missing = [pod_id for pod_id, ips in pods.items() if family not in ips]
    if missing:
        raise CaseError(f"{where}: pods without an IPv{family} address: {missing}")

    expected = {(s, d): VERDICTS[default] for s in sorted(pods) for d in sorted(pods) if s != d}
    for line in raw.get("rules") or []:
        src, dst, verdict = parse_rule(line)
        pairs = [
            (s, d)
            for s in expand_pattern(src, pods, host_endpoints, family)
            for d in expand_pattern(dst, pods, host_endpoints, family)
            if s != d
        ]
        if not pairs:
            raise CaseError(f"{where}: {line!r} names no pair (pod-to-itself is never checked)")
        for pair in pairs:
            expected[pair] = verdict
    if not expected:
        raise CaseError(f"{where}: empty check")
    return Check(protocol=protocol, port=port, family=family, expected=expected)


def load_case(path: Path, base_text: str | None = None, cases_dir: Path = CASES_DIR) -> Case:
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(cases_dir).with_suffix("").as_posix()
    docs = _split_documents(text)
    if not docs or not isinstance(docs[0][0], dict) or docs[0][0].get("kind") != HEADER_KIND:
        raise CaseError(f"{name}: the first document must be the {HEADER_KIND} header")
    header = docs[0][0]
    unknown = set(header) - HEADER_KEYS
    if unknown:
        raise CaseError(f"{name}: unknown header keys {sorted(unknown)}")
    description = header.get("description")
    if not isinstance(description, str) or not description.strip():
        raise CaseError(f"{name}: the header needs a description")
    use_base = header.get("base", True)
    if not isinstance(use_base, bool):
        raise CaseError(f"{name}: base must be true or false")
    expect = header.get("expect")
    if not isinstance(expect, list) or not expect:
        raise CaseError(f"{name}: expect must be a non-empty list of checks")

    resources = docs[1:]
    for doc, _ in resources:
        if not isinstance(doc, dict) or doc.get("kind") == HEADER_KIND:
            raise CaseError(f"{name}: only the first document may be the header")
    case_items = _flatten([doc for doc, _ in resources])
    own = {_identity(doc) for doc in case_items}
    if len(own) != len(case_items):
        raise CaseError(f"{name}: two documents name the same object")

    parts: list[str] = []
    base_items: list[dict[str, Any]] = []
    if use_base:
        if base_text is None:
            base_text = BASE_CLUSTER.read_text(encoding="utf-8")
        base_items = [copy.deepcopy(item) for item in _parse_base(base_text)]
        kept = [item for item in base_items if _identity(item) not in own]
        if len(kept) == len(base_items):
            parts.append(base_text)
        else:
            base_list = {"apiVersion": "v1", "kind": "List", "items": kept}
            parts.append(yaml.dump(base_list, Dumper=_Dumper, sort_keys=False))
        base_items = kept
    parts.extend(chunk for _, chunk in resources)
    documents_yaml_text = "---\n".join(
        part if part.endswith("\n") else part + "\n" for part in parts
    )

    everything = base_items + case_items
    pods = {
        f"{doc['metadata']['namespace']}/{doc['metadata']['name']}": _pod_ips(doc)
        for doc in everything
        if doc["kind"] == "Pod"
    }
    host_endpoints = {
        doc["metadata"]["name"] for doc in everything if doc["kind"] == "HostEndpoint"
    }
    checks = [
        _parse_check(raw, pods, host_endpoints, f"{name}: expect[{i}]")
        for i, raw in enumerate(expect)
    ]
    return Case(
        name=name,
        path=path,
        description=description.strip(),
        documents_yaml_text=documents_yaml_text,
        checks=checks,
        pods=pods,
    )


def case_paths(cases_dir: Path = CASES_DIR) -> list[Path]:
    return sorted(cases_dir.rglob("*.yaml"))


def load_cases(cases_dir: Path = CASES_DIR, base_path: Path = BASE_CLUSTER) -> list[Case]:
    """Every case in the corpus, sorted by name. Raises :class:`CaseError` on a malformed case."""
    base_text = base_path.read_text(encoding="utf-8")
    return [load_case(path, base_text, cases_dir) for path in case_paths(cases_dir)]
