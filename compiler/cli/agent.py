"""``tortie agent``: watch a YAML directory, recompile for this node, apply what changed
(runtime/agent.py), optionally serving Prometheus metrics on 127.0.0.1."""

from __future__ import annotations

import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from compiler.cli.apply import make_env, runtime_options, setup_logging
from compiler.cli.common import EXIT_ERRORS
from compiler.targets import BUILTIN

__all__ = ["agent_cmd"]


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds", param_hint=name)
    return value


@click.command("agent")
@click.option("--node", required=True, metavar="NODE", help="The node this agent runs on.")
@click.option(
    "--watch",
    required=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False),
    help="Directory of YAML to watch (e.g. a GitOps checkout).",
)
@click.option(
    "--target",
    default="nftables",
    show_default=True,
    type=click.Choice(sorted(BUILTIN)),
    help="Dataplane to compile to and load.",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    callback=lambda ctx, param, value: _finite(value, "--interval"),
    help="Seconds between scans.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on 127.0.0.1:PORT (0: any free port).",
)
@click.option(
    "--drift-interval",
    default=None,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Most seconds between full drift checks (list Tortie's objects, compare with the "
    "record). Default: every tick for iptables/ebpf; for nftables only when the nf_tables "
    "generation id (read every tick, ~1 ms, bumped by every committed transaction) changed. "
    "With nftables, SECONDS adds a periodic full check on top of that.",
)
@click.option(
    "--record-delay",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="nftables set-only updates are applied without rendering the artifact (only the "
    "touched sets are read back, recorded in STATE_DIR/sets.json); after SECONDS without "
    "changes the agent renders the artifact and writes the full record.",
)
@click.option("--once", is_flag=True, help="Reconcile once and exit (status 1 if it failed).")
@runtime_options
def agent_cmd(
    node: str,
    watch: str,
    target: str,
    interval: float,
    metrics_port: int | None,
    drift_interval: float | None,
    record_delay: float,
    once: bool,
    state_dir: str,
    bpffs: str,
    lock_timeout: float,
    iptables_backend: str,
    verbose: int,
    netns: str | None,
) -> None:
    """Keep this node's dataplane in step with a directory of policy YAML.

    Polls DIR every --interval seconds; when a file changed, recompiles for NODE and applies
    only the difference (set elements when only memberships changed, else one transaction).
    A kernel that drifted from the last apply is re-applied (see --drift-interval). Logs every
    reconcile with timings.

    \b
    Example:
      tortie agent --node node1 --watch /srv/policy --metrics-port 9105
    """
    from runtime.agent import Agent, AgentConfig
    from runtime.metrics import Metrics, serve

    setup_logging(max(verbose, 1))
    env = make_env(state_dir, bpffs, lock_timeout, netns, iptables_backend)
    config = AgentConfig(
        node=node,
        watch=Path(watch),
        env=env,
        target=target,
        interval=interval,
        drift_interval=drift_interval,
        record_delay=record_delay,
    )
    metrics = Metrics()
    try:
        server = serve(metrics, metrics_port) if metrics_port is not None and not once else None
    except OSError as e:
        click.echo(f"tortie: cannot serve metrics on port {metrics_port}: {e.strerror}", err=True)
        sys.exit(EXIT_ERRORS)
    if server is not None:
        click.echo(f"metrics: http://127.0.0.1:{server.port}/metrics", err=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = Agent(config, metrics).run(stop, once=once)
    finally:
        # Called in-process (tests, embedding), the caller's handlers must come back.
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None:
            server.close()
    sys.exit(status)
