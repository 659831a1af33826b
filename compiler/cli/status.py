"""``tortie status``: what is loaded and whether the kernel still matches it (runtime/status.py)."""

from __future__ import annotations

import sys

import click

from compiler.cli.apply import make_env, runtime_options, setup_logging
from compiler.cli.common import EXIT_ERRORS, EXIT_OK, echo_json, output_option

__all__ = ["status_cmd"]


@click.command("status")
@output_option
@click.option(
    "--full",
    is_flag=True,
    help="Always read the kernel back and compare (by default an nftables ruleset whose "
    "nf_tables generation is unchanged since the apply is not read again).",
)
@runtime_options
def status_cmd(
    output: str,
    full: bool,
    state_dir: str,
    bpffs: str,
    lock_timeout: float,
    iptables_backend: str,
    verbose: int,
    netns: str | None,
) -> None:
    """Show the last applied artifact (hash, time, counts) and check the kernel for drift.

    Exit status 0 when the kernel matches the last apply, 1 on drift, an interrupted apply,
    or when nothing was applied.

    \b
    Example:
      tortie status
      tortie status -o json
      tortie status --full
    """
    from runtime.status import read_status, render_text

    setup_logging(verbose)
    env = make_env(state_dir, bpffs, lock_timeout, netns, iptables_backend)
    st = read_status(env, lock_wait=min(lock_timeout, 2.0), full=full)
    if output == "json":
        doc = st.as_json()
        doc["diff"] = st.diff
        echo_json(doc)
    else:
        click.echo(render_text(st))
    sys.exit(EXIT_OK if st.in_sync else EXIT_ERRORS)
