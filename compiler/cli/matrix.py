"""``tortie matrix``: the reachability truth table of workload endpoints."""

from __future__ import annotations

import click

from compiler.cli.common import fail, file_option, output_option
from compiler.cli.explain import ECHO_REQUEST, ICMP, ICMP6, parse_protocol
from compiler.cli.ir import load_program
from compiler.frontend.model import PORT_PROTOCOLS
from compiler.ir.matrix import Probe, compute, iter_json, render_text

__all__ = ["matrix"]


@click.command()
@file_option
@click.option(
    "--protocol",
    "protocols",
    multiple=True,
    metavar="PROTO",
    help="TCP (default), UDP, SCTP, ICMP, ...; repeatable.",
)
@click.option(
    "--port",
    "ports",
    multiple=True,
    type=click.IntRange(1, 65535),
    help="Destination port (default 80); repeatable.",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Only pods of this namespace; repeatable.",
)
@click.option(
    "--family",
    type=click.Choice(["4", "6"]),
    default="4",
    show_default=True,
    help="Address family to probe.",
)
@click.option("--node", metavar="NODE", default=None, help="Use this node's Felix configuration.")
@output_option
def matrix(
    files: tuple[str, ...],
    protocols: tuple[str, ...],
    ports: tuple[int, ...],
    namespaces: tuple[str, ...],
    family: str,
    node: str | None,
    output: str,
) -> None:
    """Print which workload endpoints can open a connection to which.

    One table per protocol and port (default TCP 80), rows are sources and columns destinations,
    as the Kubernetes netpol e2e tests print it: '.' allowed, 'X' denied. The diagonal (a pod to
    itself) is implementation-defined in Kubernetes; it is shown as Tortie's evaluator decides it
    and marked with '*'. Each pod is probed at its first address of --family; pods without one are
    listed and left out.

    -o json prints an array of {"from", "to", "protocol", "port", "allowed"} objects, one for every
    ordered pair of pods including a pod to itself, for every protocol and port asked.

    \b
    Example:
      tortie matrix -f examples/demo/
      tortie matrix -f examples/demo/ --port 80 --port 443 --namespace shop-backend -o json
      tortie matrix -f examples/demo/ --protocol ICMP
    """
    fam = int(family)
    if ports and not any(parse_protocol(t) in PORT_PROTOCOLS for t in protocols or ("TCP",)):
        raise click.UsageError("--port only applies to TCP, UDP and SCTP; none was asked for")
    probes: list[Probe] = []
    for text in protocols or ("TCP",):
        proto = parse_protocol(text)
        if proto in (ICMP, ICMP6):
            if proto == ICMP and fam == 6:
                proto = ICMP6
            probes.append(Probe(proto, None, ECHO_REQUEST[6 if proto == ICMP6 else 4], 0))
        elif proto in PORT_PROTOCOLS:
            probes.extend(Probe(proto, p) for p in ports or (80,))
        else:
            probes.append(Probe(proto))
    program = load_program(files, node).program
    known = {e.namespace for e in program.endpoints if not e.is_host}
    missing = sorted(set(namespaces) - known)
    if missing:
        fail(f"--namespace {', '.join(missing)}: no workload endpoints in that namespace")
    results = [compute(program, probe, fam, namespaces) for probe in probes]
    if output == "json":
        for chunk in iter_json(results):
            click.echo(chunk, nl=False)
        return
    for i, m in enumerate(results):
        if i:
            click.echo("")
        click.echo(render_text(m), nl=False)
