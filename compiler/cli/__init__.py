"""The ``tortie`` command line (click).

Commands stay thin: parse options, call the library, render, pick the exit code
(0 ok, 1 input or semantic errors, 2 usage — click's own usage errors exit 2 —, 70 internal
error). Each command lives in its own module and is added to :data:`main` here.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

import click

from compiler import perf
from compiler.cli import check as check_cmd  # keep compiler.cli.check a module, not the command
from compiler.cli import select as select_cmd
from compiler.cli.agent import agent_cmd
from compiler.cli.apply import apply_cmd
from compiler.cli.bgp import bgp
from compiler.cli.common import EXIT_ERRORS, EXIT_INTERNAL
from compiler.cli.compile import compile_cmd
from compiler.cli.diff import diff_cmd
from compiler.cli.explain import explain
from compiler.cli.ipam import ipam
from compiler.cli.ir import ir_cmd
from compiler.cli.matrix import matrix
from compiler.cli.status import status_cmd

__all__ = ["main", "run"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tortie")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


class TortieGroup(click.Group):
    """A group that turns an unexpected exception into one line and exit status 70 (EX_SOFTWARE).

    User input never gets here: the library reports it as diagnostics. Anything that does is a
    bug, and a traceback would only bury the message; ``TORTIE_DEBUG=1`` shows it.
    """

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
@click.version_option(_version(), "--version", prog_name="tortie")
def main() -> None:
    """Compile Calico and Kubernetes network policy into nftables, iptables+ipset and eBPF.

    \b
    Example:
      tortie check -f examples/demo/
      tortie select -f examples/demo/ 'app == "web"'
    """


main.add_command(check_cmd.check)
main.add_command(select_cmd.select)
main.add_command(compile_cmd)
main.add_command(explain)
main.add_command(matrix)
main.add_command(diff_cmd)
main.add_command(ir_cmd)
main.add_command(ipam)
main.add_command(bgp)
main.add_command(apply_cmd)
main.add_command(status_cmd)
main.add_command(agent_cmd)


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
