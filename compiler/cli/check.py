"""``tortie check``: validate the inputs and summarise what was read."""

from __future__ import annotations

import sys

import click

from compiler.cli.common import (
    counts_line,
    diagnostics_json,
    echo_json,
    emit_diagnostics,
    exit_code,
    file_option,
    load_inputs,
    output_option,
)
from compiler.diagnostics import Level
from compiler.frontend.model import ResourceSet

__all__ = ["check", "summary"]


def summary(rs: ResourceSet, warnings: int) -> str:
    """One line: resources per kind, endpoints, warnings (and what was skipped, if anything)."""
    total = sum(n for _, n in rs.kind_counts)
    kinds = ", ".join(f"{kind} {n}" for kind, n in rs.kind_counts)
    line = f"ok: {total} resource{'s' * (total != 1)}"
    if kinds:
        line += f" ({kinds})"
    line += f", {len(rs.endpoints)} endpoint{'s' * (len(rs.endpoints) != 1)}"
    skipped = sum(n for _, n in rs.skipped)
    if skipped:
        line += f", {skipped} skipped"
    return line + f", {warnings} warning{'s' * (warnings != 1)}"


@click.command()
@file_option
@output_option
def check(files: tuple[str, ...], output: str) -> None:
    """Validate Calico and Kubernetes policy YAML; report every problem.

    Diagnostics go to stderr as FILE:LINE:COL: error[CODE]: message, with the source line and a
    caret. Without errors a one-line summary goes to stdout. Exit status: 0 ok (warnings
    allowed), 1 errors in the input, 2 usage.

    \b
    Example:
      tortie check -f examples/demo/
      kubectl get pods,namespaces -A -o yaml | tortie check -f - -f policies/
    """
    loaded = load_inputs(files)
    diags = loaded.sink.sorted()
    warnings = sum(1 for d in diags if d.level is Level.WARNING)
    errors = sum(1 for d in diags if d.level is Level.ERROR)
    rs = loaded.resources
    if output == "json":
        echo_json(
            {
                "ok": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics_json(diags),
                "kinds": dict(rs.kind_counts),
                "skipped": dict(rs.skipped),
                "endpoints": len(rs.endpoints),
                "policies": len(rs.policies),
            }
        )
        sys.exit(exit_code(loaded.sink))
    emit_diagnostics(diags, loaded.sources)
    if errors:
        click.echo(f"tortie: {counts_line(loaded.sink)}", err=True)
    else:
        click.echo(summary(rs, warnings))
    sys.exit(exit_code(loaded.sink))
