"""``tortie bgp render``: the BIRD 2 configuration of one node (confd's job).

Blocks come from the IPAM state file (``--state``) or, without one, from the workload
endpoints in the input (see ``tortie ipam show``). Passwords are secret references
(``name/key``); their values come from ``--secrets FILE``, a JSON object
``{"name/key": "value"}``, because the YAML never holds them.

The CLI is the one layer allowed to reach into ``runtime/``; imports are local to the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from compiler.cli.common import EXIT_ERRORS, emit_diagnostics, file_option, load_inputs
from compiler.diagnostics import DiagnosticSink

__all__ = ["bgp"]


def _missing_dirs(path: str) -> list[str]:
    """The directories ``os.makedirs(path)`` would create, deepest first."""
    out = []
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


@click.group()
def bgp() -> None:
    """BGP: render BIRD configuration for a node."""


@bgp.command()
@file_option
@click.option("--node", required=True, metavar="NODE", help="The node to render for.")
@click.option("-o", "--output", "out_dir", required=True, metavar="DIR", help="Output directory.")
@click.option("--state", "state_path", metavar="FILE", help="IPAM state file (JSON).")
@click.option("--secrets", "secrets_path", metavar="FILE", help='JSON {"name/key": "password"}.')
@click.option("--router-id", metavar="ID", help='IPv4 router id, or "hash" (CALICO_ROUTER_ID).')
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Validate with bird -p -c when bird is installed.",
)
def render(
    files: tuple[str, ...],
    node: str,
    out_dir: str,
    state_path: str | None,
    secrets_path: str | None,
    router_id: str | None,
    check: bool,
) -> None:
    """Write DIR/bird.cfg for NODE from BGPConfiguration, BGPPeer, Node and IPPool resources.

    \b
    Example:
      tortie bgp render -f cluster/ --node node-a -o /etc/bird
      tortie bgp render -f cluster/ --node node-a --state ipam.json --secrets pw.json -o out/
    """
    from compiler.tools import bird
    from runtime.bgp.build import BuildOptions
    from runtime.bgp.render import CONFIG_NAME, render_node
    from runtime.bgp.text import UnsafeText
    from runtime.ipam import IPAM, import_endpoints
    from runtime.ipam_state import IPAMState, StateError, StateFile, write_atomic

    loaded = load_inputs(files)
    rs = loaded.resources
    secrets: dict[str, str] = {}
    if secrets_path is not None:
        try:
            with open(secrets_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:  # ValueError: JSON or UTF-8 decoding
            raise click.UsageError(f"--secrets {secrets_path}: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise click.UsageError('--secrets must hold a JSON object {"name/key": "value"}')
        secrets = data
    try:
        if state_path is not None:
            state = StateFile(state_path).read()
            stray = IPAM(state, rs.ip_pools, {}).stray_blocks()
            if stray and not loaded.sink.has_errors:
                raise StateError("; ".join(stray) + " (refusing to announce or route it)")
        else:
            state = IPAMState()
            engine = IPAM(state, rs.ip_pools, {n.name: dict(n.labels) for n in rs.nodes})
            import_endpoints(engine, rs.endpoints)
    except StateError as e:
        click.echo(f"tortie: {state_path}: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    sink = DiagnosticSink()
    text = None
    known = sorted({n.name for n in rs.nodes})
    if not loaded.sink.has_errors and node not in known:
        emit_diagnostics(loaded.sink.sorted(), loaded.sources)
        listed = ", ".join(known) or "none"
        click.echo(
            f"tortie: error[B004]: --node {node!r}: no Node of that name (in the input: {listed})",
            err=True,
        )
        sys.exit(EXIT_ERRORS)
    if not loaded.sink.has_errors:
        try:
            text = render_node(
                rs,
                node,
                state.sorted_blocks(),
                sink,
                secrets=secrets,
                options=BuildOptions(router_id=router_id),
            )
        except (UnsafeText, ValueError) as e:
            click.echo(f"tortie: {e}", err=True)
            sys.exit(EXIT_ERRORS)
    diags = [*loaded.sink.sorted(), *sink.sorted()]
    if diags:
        emit_diagnostics(diags, loaded.sources)
    if text is None or loaded.sink.has_errors or sink.has_errors:
        sys.exit(EXIT_ERRORS)
    path = os.path.join(out_dir, CONFIG_NAME)
    validate = None
    if check and bird.available():
        validate = bird.check_config
    created = _missing_dirs(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(path, text, validate=validate)
    except (bird.BirdError, OSError) as e:
        for d in created:  # deepest first: leave no empty directory behind
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if isinstance(e, bird.BirdError):
            click.echo(f"tortie: bird rejected the rendered configuration: {e}", err=True)
        else:
            click.echo(f"tortie: cannot write {path}: {e.strerror or e}; nothing written", err=True)
        sys.exit(EXIT_ERRORS)
    click.echo(path)
