"""``tortie ipam``: show, allocate and release addresses (runtime/ipam.py does the work).

The state lives in a JSON file (``--state``), written atomically under a lock. ``show`` without
``--state`` rebuilds the state from the workload endpoints in the input: each pod's addresses
are assigned to blocks of its pools, claimed for its node.

The CLI is the one layer allowed to reach into ``runtime/``; the imports are local to each
command so that ``compiler`` stays importable without the runtime's dependencies.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

import click

from compiler.cli.common import (
    EXIT_ERRORS,
    echo_json,
    emit_diagnostics,
    file_option,
    load_inputs,
    output_option,
)

__all__ = ["ipam"]


def _config_options(f: Any) -> Any:
    f = click.option(
        "--strict-affinity", is_flag=True, help="Never borrow addresses from other nodes' blocks."
    )(f)
    f = click.option(
        "--max-blocks-per-host",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Blocks a node may claim per family (0: no limit).",
    )(f)
    return f


def _load(files: tuple[str, ...]) -> Any:
    loaded = load_inputs(files)
    diags = loaded.sink.sorted()
    if diags:
        emit_diagnostics(diags, loaded.sources)
    if loaded.sink.has_errors:
        sys.exit(EXIT_ERRORS)
    return loaded.resources


def _ipam(rs: Any, state: Any, strict: bool = False, max_blocks: int = 0) -> Any:
    from runtime.ipam import IPAM, IPAMConfig

    nodes = {n.name: dict(n.labels) for n in rs.nodes}
    return IPAM(state, rs.ip_pools, nodes, IPAMConfig(strict, max_blocks))


def _text_report(report: dict[str, Any]) -> str:
    lines = []
    for node, data in report["nodes"].items():
        lines.append(f"node {node}")
        for b in data["blocks"]:
            lines.append(
                f"  block {b['cidr']:<24} pool {b['pool']:<20} {b['state']:<16} "
                f"used {b['used']}/{b['size']}"
            )
        for a in data["borrowed"]:
            lines.append(f"  borrowed {a['address']} from block {a['block']} ({a['handle']})")
    if report["unaffine_blocks"]:
        lines.append("blocks without affinity")
        for b in report["unaffine_blocks"]:
            lines.append(
                f"  block {b['cidr']:<24} pool {b['pool']:<20} used {b['used']}/{b['size']}"
            )
    lines.append("pools")
    for p in report["pools"]:
        flag = " (disabled)" if p["disabled"] else ""
        lines.append(
            f"  {p['name']:<20} {p['cidr']:<24} /{p['block_size']:<4} blocks {p['blocks']}/"
            f"{p['blocks_total']}  addresses {p['used']}/{p['size']}{flag}"
        )
    return "\n".join(lines)


def _check_handle(handle: str) -> None:
    """A handle is printed in reports one per line: no spaces or control characters."""
    if not handle or len(handle) > 512 or any(not c.isprintable() or c.isspace() for c in handle):
        raise click.BadParameter(
            f"{handle!r}: a handle is 1-512 printable characters without spaces, e.g. ns/pod",
            param_hint="'--handle'",
        )


@click.group()
def ipam() -> None:
    """IP address management: blocks per node, allocation and release."""


@ipam.command()
@file_option
@output_option
@click.option("--state", "state_path", metavar="FILE", help="IPAM state file (JSON).")
@click.option("--node", "node", metavar="NODE", help="Show this node only.")
def show(files: tuple[str, ...], output: str, state_path: str | None, node: str | None) -> None:
    """Print blocks per node, their usage, borrowed addresses and pool totals.

    \b
    Example:
      tortie ipam show -f cluster/
      tortie ipam show -f cluster/ --state /var/lib/tortie/ipam.json -o json
    """
    from runtime.ipam import import_endpoints, usage_report
    from runtime.ipam_state import IPAMState, StateError, StateFile

    rs = _load(files)
    if state_path is not None:
        try:
            state = StateFile(state_path).read()
        except StateError as e:
            click.echo(f"tortie: {state_path}: {e}", err=True)
            sys.exit(EXIT_ERRORS)
        engine = _ipam(rs, state)
        for problem in engine.stray_blocks():
            click.echo(f"warning: {state_path}: {problem}", err=True)
    else:
        engine = _ipam(rs, IPAMState())
        for problem in import_endpoints(engine, rs.endpoints):
            click.echo(f"warning: {problem}", err=True)
    report = usage_report(engine)
    if node is not None:
        report["nodes"] = {k: v for k, v in report["nodes"].items() if k == node}
    if output == "json":
        echo_json(report)
    else:
        click.echo(_text_report(report))


@ipam.command()
@file_option
@_config_options
@click.option(
    "--state", "state_path", metavar="FILE", required=True, help="IPAM state file (JSON)."
)
@click.option("--node", required=True, metavar="NODE", help="The node the addresses are for.")
@click.option("--handle", required=True, metavar="ID", help="Owner of the addresses, e.g. ns/pod.")
@click.option("--ipv4", "num4", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--ipv6", "num6", type=click.IntRange(min=0), default=0, show_default=True)
def allocate(
    files: tuple[str, ...],
    state_path: str,
    node: str,
    handle: str,
    num4: int,
    num6: int,
    strict_affinity: bool,
    max_blocks_per_host: int,
) -> None:
    """Allocate addresses for HANDLE on NODE and print them, one per line.

    All of them or none: if one cannot be had, the state file is not changed.

    \b
    Example:
      tortie ipam allocate -f cluster/ --state ipam.json --node node-a --handle default/web-1
    """
    from runtime.ipam import IPAMError
    from runtime.ipam_state import StateError, StateFile

    _check_handle(handle)
    rs = _load(files)
    try:
        with StateFile(state_path).transaction() as state:
            engine = _ipam(rs, state, strict_affinity, max_blocks_per_host)
            addrs = [engine.allocate(node, handle, 4) for _ in range(num4)]
            addrs += [engine.allocate(node, handle, 6) for _ in range(num6)]
    except StateError as e:
        click.echo(f"tortie: {state_path}: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    except IPAMError as e:
        click.echo(f"tortie: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    for addr in addrs:
        click.echo(str(addr))


@ipam.command()
@click.option(
    "--state", "state_path", metavar="FILE", required=True, help="IPAM state file (JSON)."
)
@click.option("--handle", metavar="ID", help="Release every address of this handle.")
@click.argument("addresses", nargs=-1)
def release(state_path: str, handle: str | None, addresses: tuple[str, ...]) -> None:
    """Release ADDRESSES (and/or every address of --handle); print what was freed.

    An address that is not allocated is an error (exit 1, nothing released); a handle that
    holds no addresses is not (it may have been released already): a note on stderr, exit 0.

    \b
    Example:
      tortie ipam release --state ipam.json --handle default/web-1
      tortie ipam release --state ipam.json 10.65.0.7
    """
    from runtime.ipam import IPAM, IPAMError
    from runtime.ipam_state import StateError, StateFile

    if not addresses and handle is None:
        raise click.UsageError("give addresses to release, or --handle")
    try:
        parsed = [ipaddress.ip_address(a) for a in addresses]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        with StateFile(state_path).transaction() as state:
            engine = IPAM(state, [], {})
            freed = [(a, engine.release(a).handle) for a in parsed]
            if handle is not None:
                by_handle = engine.release_handle(handle)
                freed += [(a, handle) for a in by_handle]
    except StateError as e:
        click.echo(f"tortie: {state_path}: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    except IPAMError as e:
        click.echo(f"tortie: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    if handle is not None and not by_handle:
        click.echo(
            f"tortie: handle {handle!r} holds no addresses; nothing released for it", err=True
        )
    for addr, owner in freed:
        click.echo(f"{addr} {owner}")
