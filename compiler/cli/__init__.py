"""The ``tortie`` command line (click).

Commands stay thin: parse options, call the library, render, pick the exit code
(0 ok, 1 input or semantic errors, 2 usage — click's own usage errors exit 2 —, 70 internal
error). Each command lives in its own module, listed in :data:`COMMANDS` and imported when it
runs (``tortie compile`` does not load the agent's or explain's modules: ~0.1 s per run).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from typing import Any

import click

from compiler import perf
from compiler.cli.common import EXIT_ERRORS, EXIT_INTERNAL

__all__ = ["COMMANDS", "main", "run"]

#: command name -> (module, attribute) of its click command (``tortie --help`` lists them sorted).
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("compiler.cli.check", "check"),
    "select": ("compiler.cli.select", "select"),
    "compile": ("compiler.cli.compile", "compile_cmd"),
    "explain": ("compiler.cli.explain", "explain"),
    "matrix": ("compiler.cli.matrix", "matrix"),
    "diff": ("compiler.cli.diff", "diff_cmd"),
    "ir": ("compiler.cli.ir", "ir_cmd"),
    "ipam": ("compiler.cli.ipam", "ipam"),
    "bgp": ("compiler.cli.bgp", "bgp"),
    "apply": ("compiler.cli.apply", "apply_cmd"),
    "status": ("compiler.cli.status", "status_cmd"),
    "agent": ("compiler.cli.agent", "agent_cmd"),
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tortie")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def _print_version(ctx: click.Context) -> None:
    if not ctx.resilient_parsing:
        click.echo(f"tortie, version {_version()}")
        ctx.exit()


class TortieGroup(click.Group):
    """A group that turns an unexpected exception into one line and exit status 70 (EX_SOFTWARE).

    User input never gets here: the library reports it as diagnostics. Anything that does is a
    bug, and a traceback would only bury the message; ``TORTIE_DEBUG=1`` shows it.

    Commands come from :data:`COMMANDS`, imported on first use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        perf.release_kept()  # what an earlier command in this process kept (tests)
        try:
            return super().invoke(ctx)
        except (
            click.exceptions.Exit,
            click.ClickException,
            click.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except MemoryError:
            # Not a bug but an input too large for this machine: say so, exit as for bad input.
            click.echo("tortie: out of memory: the input is too large for this machine", err=True)
            sys.exit(EXIT_ERRORS)
        except Exception as e:  # noqa: BLE001 - the one place that catches everything
            import os

            if os.environ.get("TORTIE_DEBUG"):
                raise
            click.echo(
                f"tortie: internal error: {type(e).__name__}: {e} (set TORTIE_DEBUG=1 for a traceback)",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)


@click.group(cls=TortieGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx) if value else None,
    help="Show the version and exit.",
)
def main() -> None:
    """Compile Calico and Kubernetes network policy into nftables, iptables+ipset and eBPF.

    \b
    Example:
      tortie check -f examples/demo/
      tortie select -f examples/demo/ 'app == "web"'
    """


def run() -> None:
    """The ``tortie`` executable: :data:`main`, then a quick end of the process.

    Once the command has returned, the interpreter would free every object still alive one by
    one (the inputs and IR of a 10,000-policy compile: 0.2-0.4 s of CPU) before exiting. Instead
    the atexit handlers run, stdout and stderr are flushed, and the process ends with
    ``os._exit`` and the command's exit status. With other threads still running, the usual exit
    (which waits for them) is kept. Tests call :data:`main` through click's CliRunner: unchanged.
    """
    try:
        main(standalone_mode=True)
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what Python's own exit reports as 120
            code = code or 120
    os._exit(code & 0xFF)
