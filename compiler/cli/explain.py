"""``tortie explain``: the verdict for one flow and the trace that led to it."""

from __future__ import annotations

import click

from compiler.cli.common import (
    echo_json,
    emit_diagnostics,
    fail,
    file_option,
    output_option,
)
from compiler.cli.ir import load_program
from compiler.diagnostics import Level
from compiler.frontend.model import PORT_PROTOCOLS, PROTOCOLS
from compiler.ir.evaluate import evaluate
from compiler.ir.explain import (
    ExplainError,
    choose_addresses,
    explain_dict,
    explain_text,
    find_peer,
)
from compiler.ir.flow import Flow

__all__ = ["explain", "parse_protocol"]

ICMP, ICMP6 = 1, 58
ECHO_REQUEST = {4: 8, 6: 128}


def parse_protocol(text: str) -> int:
    """A protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite; any case) or a number 1-255."""
    by_lower = {k.lower(): v for k, v in PROTOCOLS.items()}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    if text.isdigit() and 1 <= int(text) <= 255:
        return int(text)
    raise click.BadParameter(
        f"{text!r}: expected one of {', '.join(PROTOCOLS)} or a number 1-255",
        param_hint="--protocol",
    )


@click.command()
@file_option
@click.option(
    "--from", "src", required=True, metavar="SRC", help="namespace/pod, host endpoint name, or IP."
)
@click.option(
    "--to", "dst", required=True, metavar="DST", help="namespace/pod, host endpoint name, or IP."
)
@click.option(
    "--protocol",
    default="TCP",
    show_default=True,
    help="TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or 1-255.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Destination port (TCP/UDP/SCTP)."
)
@click.option(
    "--icmp-type",
    type=click.IntRange(0, 255),
    default=None,
    help="ICMP type (default: echo request).",
)
@click.option(
    "--icmp-code", type=click.IntRange(0, 255), default=None, help="ICMP code (default 0)."
)
@click.option(
    "--via",
    metavar="HEP",
    default=None,
    help="Host endpoint the flow is forwarded through (applyOnForward).",
)
@click.option("--node", metavar="NODE", default=None, help="Use this node's Felix configuration.")
@output_option
def explain(
    files: tuple[str, ...],
    src: str,
    dst: str,
    protocol: str,
    port: int | None,
    icmp_type: int | None,
    icmp_code: int | None,
    via: str | None,
    node: str | None,
    output: str,
) -> None:
    """Explain the verdict for the first packet of one flow.

    A flow from SRC to DST needs the source's egress AND the destination's ingress. For each,
    the trace lists every step taken — which tier, which policy (kind and namespace/name), which
    rule (counted from 1 in the list as written) at which file:line, Log and Pass included — or
    which default decided: end of tier, no profile matched, failsafe port, not a Calico endpoint,
    or defaultEndpointToHostAction.

    SRC and DST are namespace/pod, a host endpoint name (or host:NAME), or an IP address. An
    endpoint with several addresses is probed at its first IPv4 address, unless the other side has
    only IPv6 ones. For ICMP over IPv6 the protocol becomes ICMPv6; the ICMP type defaults to echo
    request (8, or 128 for ICMPv6).

    \b
    Example:
      tortie explain -f examples/demo/ --from shop/web --to shop/db --protocol TCP --port 5432
      tortie explain -f examples/demo/ --from 192.0.2.10 --to shop/web --port 80 -o json
      tortie explain -f examples/demo/ --from shop/web --to 10.0.0.9 --protocol ICMP --icmp-type 8
    """
    proto = parse_protocol(protocol)
    is_icmp = proto in (ICMP, ICMP6)
    if proto in PORT_PROTOCOLS and port is None:
        raise click.UsageError(f"--port is required for {protocol}")
    if proto not in PORT_PROTOCOLS and port is not None:
        raise click.UsageError(f"--port only applies to TCP, UDP and SCTP, not {protocol}")
    if not is_icmp and (icmp_type is not None or icmp_code is not None):
        raise click.UsageError("--icmp-type/--icmp-code only apply to ICMP and ICMPv6")
    if icmp_code is not None and icmp_type is None:
        raise click.UsageError("--icmp-code needs --icmp-type")

    loaded = load_program(files, node)
    program = loaded.program
    src_peer, dst_peer = find_peer(program, src), find_peer(program, dst)
    for flag, text, peer in (("--from", src, src_peer), ("--to", dst, dst_peer)):
        if peer is None:
            fail(
                f"{flag} {text!r}: no such endpoint; expected namespace/pod of a workload, "
                "the name of a host endpoint, or an IP address"
            )
    via_id = None
    if via is not None:
        via_peer = find_peer(program, via if via.startswith("host:") else f"host:{via}")
        if via_peer is None or via_peer.endpoint is None:
            fail(f"--via {via!r}: no host endpoint of that name")
        via_id = via_peer.endpoint.id  # type: ignore[union-attr]
    try:
        src_ip, dst_ip = choose_addresses(src_peer, dst_peer)  # type: ignore[arg-type]
    except ExplainError as e:
        fail(str(e))
    family = src_ip.version
    if is_icmp:
        if family == 6 and proto == ICMP:
            proto = ICMP6
        icmp_type = ECHO_REQUEST[family] if icmp_type is None else icmp_type
        icmp_code = 0 if icmp_code is None else icmp_code
    flow = Flow(src_ip, dst_ip, proto, None, port, icmp_type, icmp_code)
    verdict = evaluate(program, flow, via_id)

    warnings = [d for d in loaded.sink.sorted() if d.level is Level.WARNING]
    if output == "json":
        echo_json(explain_dict(program, flow, verdict, src_peer, dst_peer, via_id))  # type: ignore[arg-type]
    else:
        emit_diagnostics(warnings, loaded.sources)
        click.echo(explain_text(program, flow, verdict, src_peer, dst_peer, via_id), nl=False)  # type: ignore[arg-type]
