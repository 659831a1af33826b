"""``tortie apply DIR``: load an artifact directory into this node's kernel (runtime/apply.py).

Also home of the options every runtime command shares (``--node``, ``--state-dir``,
``--bpffs``, the hidden ``--netns`` used by tests) and of their logging set-up.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from compiler.cli.common import EXIT_ERRORS, echo_json, output_option

__all__ = ["apply_cmd", "make_env", "runtime_options", "setup_logging"]

F = TypeVar("F", bound=Callable[..., Any])


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value != value:  # NaN compares unequal to itself and passes every range check
        raise click.BadParameter("nan is not a number of seconds")
    return value


def runtime_options(f: F) -> F:
    """``--state-dir``, ``--bpffs``, ``--lock-timeout``, ``-v`` and the hidden ``--netns``."""
    options = [
        click.option(
            "--state-dir",
            default="/var/lib/tortie",
            show_default=True,
            envvar="TORTIE_STATE_DIR",
            type=click.Path(file_okay=False),
            help="Lock, last-applied record and scratch files.",
        ),
        click.option(
            "--bpffs",
            default="/sys/fs/bpf/tortie",
            show_default=True,
            envvar="TORTIE_BPFFS",
            type=click.Path(file_okay=False),
            help="Where eBPF objects are pinned (a bpffs is mounted there if needed).",
        ),
        click.option(
            "--lock-timeout",
            default=30.0,
            show_default=True,
            type=click.FloatRange(min=0.0),
            callback=_not_nan,
            help="Seconds to wait for another apply to finish.",
        ),
        click.option(
            "--iptables-backend",
            type=click.Choice(["auto", "legacy", "nft"]),
            default="auto",
            show_default=True,
            envvar="TORTIE_IPTABLES_BACKEND",
            help="iptables flavour for the iptables target (auto: what `iptables` is).",
        ),
        click.option("-v", "--verbose", count=True, help="Log progress (-vv: tool commands)."),
        click.option(
            "--netns",
            default=None,
            hidden=True,
            envvar="TORTIE_NETNS",
            help="Tests only: run every kernel command inside this network namespace.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: int) -> None:
    """Runtime logs to stderr: warnings by default, INFO with -v, DEBUG (tool argv) with -vv."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("tortie: %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, level) if root.handlers[:-1] else level)


def make_env(
    state_dir: str, bpffs: str, lock_timeout: float, netns: str | None, backend: str = "auto"
) -> Any:
    from runtime.plan import Env
    from runtime.state import StateDir

    chosen = None if backend == "auto" else backend
    return Env(StateDir(state_dir), netns, Path(bpffs), lock_timeout, chosen)


@click.command("apply")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--node", default=None, metavar="NODE", help="This node's name [default: hostname].")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@output_option
@runtime_options
def apply_cmd(
    directory: str,
    node: str | None,
    dry_run: bool,
    output: str,
    state_dir: str,
    bpffs: str,
    lock_timeout: float,
    iptables_backend: str,
    verbose: int,
    netns: str | None,
) -> None:
    """Load an artifact directory (from `tortie compile`) into the kernel, atomically.

    Refuses an artifact compiled for another node or with a file that does not match
    manifest.json. On any failure the previous state is restored and the reason printed.
    Applying the same directory again changes nothing. Exit status 0 ok, 1 refused or failed.

    \b
    Example:
      tortie apply out/node1 --dry-run
      tortie apply out/node1
    """
    from runtime.apply import apply_artifact, load_dir
    from runtime.lock import LockBusy
    from runtime.plan import ApplyFailed, ArtifactRefused, CheckFailed

    setup_logging(verbose)
    env = make_env(state_dir, bpffs, lock_timeout, netns, iptables_backend)
    node = node or socket.gethostname()
    try:
        artifact = load_dir(directory, node)
        outcome = apply_artifact(artifact, env, dry_run=dry_run)
    except ArtifactRefused as e:
        click.echo(f"tortie: refusing to apply: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    except ApplyFailed as e:
        click.echo(f"tortie: apply failed: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    except CheckFailed as e:
        click.echo(f"tortie: dry run: {e}; nothing was changed", err=True)
        sys.exit(EXIT_ERRORS)
    except LockBusy as e:
        click.echo(f"tortie: {e}", err=True)
        sys.exit(EXIT_ERRORS)
    plan = outcome.plan
    if output == "json":
        echo_json(
            {
                "artifact": plan.artifact,
                "target": plan.target,
                "dry_run": dry_run,
                "changed": plan.changes,
                "applied": outcome.applied,
                "mode": plan.mode,
                "reason": plan.reason,
                "steps": [s.what for s in plan.steps],
                "diff": plan.diff_text(),
                "seconds": round(outcome.seconds, 4),
                "counts": dict(outcome.after.counts) if outcome.after else None,
            }
        )
        return
    short = plan.artifact[:12]
    if outcome.interrupted:
        click.echo("note: an earlier apply had been interrupted; everything was replaced", err=True)
    if not plan.changes:
        click.echo(f"no change: {plan.target} artifact {short} {plan.reason}")
        return
    if dry_run:
        click.echo(f"would apply {plan.target} artifact {short} ({plan.mode}: {plan.reason}):")
        for step in plan.steps:
            click.echo(f"  - {step.what}")
        click.echo(plan.diff_text().rstrip("\n") or "(no textual difference)")
        return
    counts = ", ".join(
        f"{v} {k}"
        for k, v in sorted((outcome.after.counts if outcome.after else {}).items())
        if k != "tables"
    )
    click.echo(
        f"applied {plan.target} artifact {short} ({plan.mode}: {plan.reason}) in "
        f"{outcome.seconds * 1000:.0f} ms: {counts}"
    )
