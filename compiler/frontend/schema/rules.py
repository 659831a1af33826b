"""Calico ``Rule`` and ``EntityRule`` (SEMANTICS.md §Resources and fields, Rule and EntityRule).

A rule is read field by field, then checked as a whole: ports against the protocol, ICMP against
protocol and ipVersion, the address families of all its nets against each other and against
ipVersion, ``services`` against the fields it excludes, ``http`` against action and protocol.
Everything found is reported; a rule with any error is dropped (returns None).
"""

from __future__ import annotations

from compiler.diagnostics import DiagnosticSink, Span
from compiler.frontend.model import (
    ICMP_PROTOCOLS,
    PROTOCOL_NAMES,
    EntityRule,
    IcmpSpec,
    IPNet,
    PortSpec,
    Rule,
    ServiceRef,
)
from compiler.frontend.yaml_loader import Mapping, Node, Scalar

from .fields import Fields, did_you_mean, expect_map
from .selectors import selector_field
from .values import check_name, check_safe, parse_cidr, parse_port, parse_protocol, supports_ports

__all__ = ["ACTIONS", "read_rules"]

ACTIONS = ("Allow", "Deny", "Log", "Pass")
RULE_FIELDS = (
    "action",
    "ipVersion",
    "protocol",
    "notProtocol",
    "icmp",
    "notICMP",
    "source",
    "destination",
    "http",
    "metadata",
)
ENTITY_FIELDS = (
    "nets",
    "notNets",
    "selector",
    "notSelector",
    "namespaceSelector",
    "ports",
    "notPorts",
    "serviceAccounts",
    "services",
)
SERVICE_EXCLUDES = (
    "selector",
    "notSelector",
    "namespaceSelector",
    "nets",
    "notNets",
    "serviceAccounts",
)
MAX_RULES = 1024
_NO_ENTITY = EntityRule()  # a side not given (immutable, so one serves every rule)


NetSpans = list[tuple[str, IPNet, Span]]


def _nets(f: Fields, key: str, where: NetSpans) -> tuple[IPNet, ...]:
    out = []
    for item in f.str_list(key):
        net = parse_cidr(f.sink, item, f"CIDR in {key}")
        if net is not None:
            out.append(net)
            where.append((key, net, item.span))
            if key == "notNets" and net.prefixlen == 0:
                f.sink.error(
                    "E042", f"notNets must not contain {net}: the rule could never match", item.span
                )
    return tuple(out)


def _ports(f: Fields, key: str) -> tuple[PortSpec, ...]:
    out = []
    for item in f.seq(key):
        p = parse_port(f.sink, item)
        if p is not None:
            out.append(p)
    return tuple(out)


def read_entity(
    sink: DiagnosticSink, node: Node | None, side: str, policy_ns: str | None, nets: NetSpans
) -> EntityRule:
    """The EntityRule; its nets are also appended to ``nets`` with their spans, for the family
    checks that look at both sides of the rule."""
    m = expect_map(sink, node, side)
    if m is None:
        return _NO_ENTITY
    f = Fields(sink, m, f"rule {side}", ENTITY_FIELDS)
    present = f.present  # most fields are absent: skip them with one dict lookup each
    sa_names: tuple[str, ...] = ()
    sa_selector: str | None = None
    services: ServiceRef | None = None
    if "serviceAccounts" in present:
        sa_names, sa_selector = _service_accounts(f)
    if "services" in present:
        svc = f.map("services")
        services = _services(f, svc, side, policy_ns) if svc is not None else None
    spans = tuple((k, f.span(k)) for k in ENTITY_FIELDS if k in present and f.has(k))
    return EntityRule(
        nets=_nets(f, "nets", nets) if "nets" in present else (),
        not_nets=_nets(f, "notNets", nets) if "notNets" in present else (),
        selector=_selector(f, "selector", side),
        not_selector=_selector(f, "notSelector", side),
        namespace_selector=_selector(f, "namespaceSelector", side, global_ok=True),
        sa_names=sa_names,
        sa_selector=sa_selector,
        services=services,
        ports=_ports(f, "ports") if "ports" in present else (),
        not_ports=_ports(f, "notPorts") if "notPorts" in present else (),
        span=m.span,
        field_spans=spans,
    )


def _selector(f: Fields, key: str, side: str, *, global_ok: bool = False) -> str | None:
    if key not in f.present:
        return None
    return selector_field(f, key, f"{side} {key}", global_ok=global_ok)


def _service_accounts(f: Fields) -> tuple[tuple[str, ...], str | None]:
    """``serviceAccounts``: (names, selector)."""
    sa = f.map("serviceAccounts")
    if sa is None:
        return (), None
    sink = f.sink
    fs = Fields(sink, sa, "serviceAccounts", ("names", "selector"))
    names = tuple(
        str(n.value) for n in fs.str_list("names") if check_name(sink, n, "service account name")
    )
    return names, selector_field(fs, "selector", "serviceAccounts selector")


def _services(f: Fields, svc: Mapping, side: str, policy_ns: str | None) -> ServiceRef | None:
    sink = f.sink
    fs = Fields(sink, svc, "services", ("name", "namespace"))
    name = fs.str_node("name", required=True)
    ns = fs.str_node("namespace")
    for other in SERVICE_EXCLUDES + (("ports", "notPorts") if side == "destination" else ()):
        if f.has(other):
            sink.error(
                "E065", f'{side} "services" cannot be combined with "{other}"', f.key_span(other)
            )
    # Tortie reads no Service or EndpointSlice objects, so it cannot know a service's backends;
    # ignoring the match would widen the rule, so it is an error, not a warning.
    sink.error(
        "E067",
        "rules that match Kubernetes services are not supported by Tortie (it reads no Service or "
        "EndpointSlice objects); use selector or nets instead",
        f.key_span("services"),
    )
    if name is None or not check_name(sink, name, "service name"):
        return None
    if ns is not None and not check_name(sink, ns, "namespace", label=True):
        return None
    namespace = str(ns.value) if ns is not None else (policy_ns or "")
    return ServiceRef(str(name.value), namespace)


def _icmp(f: Fields, key: str) -> IcmpSpec | None:
    m = f.map(key)
    if m is None:
        return None
    fi = Fields(f.sink, m, key, ("type", "code"))
    t, c = fi.int("type"), fi.int("code")
    for name, value, hi in (("type", t, 254), ("code", c, 255)):
        if value is not None and not 0 <= value <= hi:
            f.sink.error("E053", f"{key} {name} must be 0-{hi}, not {value}", fi.span(name))
    if fi.has("code") and not fi.has("type"):
        f.sink.error("E053", f"{key} code requires a type", fi.key_span("code"))
    return IcmpSpec(t, c)


def _annotations(f: Fields) -> tuple[tuple[str, str], ...]:
    m = f.map("metadata")
    if m is None:
        return ()
    fm = Fields(f.sink, m, "rule metadata", ("annotations",))
    ann = fm.map("annotations")
    out = []
    for key, value in ann.items if ann is not None else ():
        if not isinstance(value, Scalar) or not isinstance(value.value, str):
            f.sink.error("E021", f"rule annotation {str(key.value)!r} must be a string", value.span)
            continue
        if check_safe(f.sink, key, "a rule annotation key") and check_safe(
            f.sink, value, "a rule annotation value"
        ):
            out.append((str(key.value), value.value))
    return tuple(sorted(out))


def _http(f: Fields, action: str | None, protocol: int | None) -> bool:
    m = f.map("http")
    if m is None:
        return False
    sink = f.sink
    fh = Fields(sink, m, "http match", ("methods", "paths"))
    fh.str_list("methods")
    for p in fh.seq("paths"):
        pm = expect_map(sink, p, "an http path")
        if pm is not None:
            fp = Fields(sink, pm, "http path", ("exact", "prefix"))
            if fp.has("exact") == fp.has("prefix"):
                sink.error(
                    "E023", 'an http path needs exactly one of "exact" and "prefix"', pm.span
                )
            fp.str("exact")
            fp.str("prefix")
    span = f.key_span("http")
    if action is not None and action != "Allow":
        sink.error("E066", f"http matches are allowed only on Allow rules, not {action}", span)
    elif protocol is not None and protocol != 6:
        sink.error(
            "E066",
            f"http matches need protocol TCP (or none), not {PROTOCOL_NAMES.get(protocol, protocol)}",
            span,
        )
    else:
        sink.warning(
            "W001",
            "http match is not enforced: the nftables, iptables and eBPF dataplanes work at L3/L4, "
            "so this rule allows every request that the rest of it matches",
            span,
        )
    return True


def _check_families(
    sink: DiagnosticSink, ip_version: int | None, nets: list[tuple[str, IPNet, Span]]
) -> None:
    first: tuple[int, Span] | None = None
    for label, net, span in nets:
        if ip_version is not None and net.version != ip_version:
            sink.error(
                "E041",
                f"{label} {net} is IPv{net.version} but the rule has ipVersion {ip_version}",
                span,
            )
        elif first is None:
            first = (net.version, span)
        elif net.version != first[0]:
            sink.error(
                "E041",
                f"{label} {net} is IPv{net.version}, but the rule already has IPv{first[0]} nets: "
                "one rule cannot mix address families",
                span,
                f"the first IPv{first[0]} net is at {first[1]}",
            )


def _check_ports(
    sink: DiagnosticSink, protocol: int | None, ents: list[tuple[str, EntityRule]]
) -> bool:
    ok = True
    for side, ent in ents:
        for key, ports in (("ports", ent.ports), ("notPorts", ent.not_ports)):
            for p in ports:
                if protocol is not None and not supports_ports(protocol):
                    name = PROTOCOL_NAMES.get(protocol, str(protocol))
                    sink.error(
                        "E051", f"{side} {key} need protocol TCP, UDP or SCTP, not {name}", p.span
                    )
                    ok = False
                elif protocol is None and p.name is None:
                    sink.error(
                        "E051",
                        f"numeric {side} {key} need protocol TCP, UDP or SCTP to be set",
                        p.span,
                    )
                    ok = False
    return ok


def _ip_version(f: Fields) -> int | None:
    ip_version = f.int("ipVersion")
    if ip_version is not None and ip_version not in (4, 6):
        f.sink.error("E023", f'"ipVersion" must be 4 or 6, not {ip_version}', f.span("ipVersion"))
        return None
    return ip_version


def read_rule(sink: DiagnosticSink, node: Node, policy_ns: str | None) -> Rule | None:
    m = expect_map(sink, node, "a rule")
    if m is None:
        return None
    before = sink.error_count
    f = Fields(sink, m, "rule", RULE_FIELDS)
    action = None
    a = f.str_node("action", required=True)
    if a is not None:
        text = str(a.value)
        if text in ACTIONS:
            action = text
        elif text.lower() == "reject":
            sink.error(
                "E060",
                "there is no Reject action: use Deny (FelixConfiguration iptablesFilterDenyAction / "
                "nftablesFilterDenyAction: Reject makes every deny a reject)",
                a.span,
            )
        else:
            sink.error(
                "E060",
                f"invalid action {text!r}: use Allow, Deny, Log or Pass{did_you_mean(text, ACTIONS)}",
                a.span,
            )
    present = f.present  # most fields are absent: skip them with one dict lookup each
    ip_version = _ip_version(f) if "ipVersion" in present else None
    protocol = parse_protocol(sink, f.get("protocol")) if f.has("protocol") else None
    not_protocol = (
        parse_protocol(sink, f.get("notProtocol"), "notProtocol") if f.has("notProtocol") else None
    )
    icmp = _icmp(f, "icmp") if "icmp" in present else None
    not_icmp = _icmp(f, "notICMP") if "notICMP" in present else None
    for key, spec in (("icmp", icmp), ("notICMP", not_icmp)):
        if spec is not None and protocol not in ICMP_PROTOCOLS:
            sink.error("E053", f"{key} needs protocol ICMP or ICMPv6", f.key_span(key))
    if protocol == 1 and ip_version == 6:
        sink.error(
            "E054",
            "protocol ICMP is IPv4-only but the rule has ipVersion 6 (use ICMPv6)",
            f.span("protocol"),
        )
    if protocol == 58 and ip_version == 4:
        sink.error(
            "E054",
            "protocol ICMPv6 is IPv6-only but the rule has ipVersion 4 (use ICMP)",
            f.span("protocol"),
        )
    src_nets: NetSpans = []
    dst_nets: NetSpans = []
    source = read_entity(sink, f.get("source"), "source", policy_ns, src_nets)
    destination = read_entity(sink, f.get("destination"), "destination", policy_ns, dst_nets)
    ents = [("source", source), ("destination", destination)]
    labelled = [(f"source {k}", n, s) for k, n, s in src_nets] + [
        (f"destination {k}", n, s) for k, n, s in dst_nets
    ]
    _check_families(sink, ip_version, labelled)
    _check_ports(sink, protocol, ents)
    has_http = _http(f, action, protocol) if "http" in present else False
    annotations = _annotations(f) if "metadata" in present else ()
    if action is None or sink.error_count > before:
        return None
    return Rule(
        action=action,
        ip_version=ip_version,
        protocol=protocol,
        not_protocol=not_protocol,
        icmp=icmp,
        not_icmp=not_icmp,
        source=source,
        destination=destination,
        has_http=has_http,
        annotations=annotations,
        span=m.span,
    )


def read_rules(f: Fields, key: str, policy_ns: str | None) -> tuple[Rule, ...]:
    """The rules under ``key`` (``ingress`` / ``egress``), in order; invalid ones are dropped."""
    out = []
    for item in f.seq(key, max_items=MAX_RULES):
        rule = read_rule(f.sink, item, policy_ns)
        if rule is not None:
            out.append(rule)
    return tuple(out)
