"""``tortie select``: which endpoints a selector matches."""

from __future__ import annotations

import sys

import click

from compiler.cli.common import (
    counts_line,
    echo_json,
    emit_diagnostics,
    file_option,
    load_inputs,
    output_option,
)
from compiler.diagnostics import DiagnosticSink, SourceRegistry, Span
from compiler.frontend.labels import effective_labels
from compiler.frontend.model import Endpoint, ResourceSet
from compiler.frontend.selector import SelectorError, evaluate, parse

__all__ = ["select", "selected_ids"]

SELECTOR_NAME = "<selector>"


def selected_ids(rs: ResourceSet, selector_text: str) -> list[str]:
    """Ids of the endpoints (workload and host) whose effective labels match, sorted.

    Raises SelectorError for an invalid selector (the command turns it into a diagnostic).
    """
    sel = parse(selector_text)
    profiles = {p.name: p for p in rs.profiles}
    hits: list[Endpoint] = [
        ep for ep in rs.endpoints if evaluate(sel, effective_labels(ep, profiles))
    ]
    return sorted({ep.id for ep in hits})


@click.command()
@file_option
@output_option
@click.argument("selector")
def select(files: tuple[str, ...], output: str, selector: str) -> None:
    """Print the endpoints that SELECTOR matches, one id per line.

    The selector is evaluated on each endpoint's effective labels: its own labels, Calico's
    implicit ones (projectcalico.org/namespace, ...) and those inherited from its profiles
    (pcns.* from the namespace, pcsa.* from the service account). Ids are namespace/pod for
    workloads and the name for host endpoints; network sets are not endpoints. Put -- before a
    selector that starts with '-'.

    \b
    Example:
      tortie select -f examples/demo/ 'app == "web"'
      tortie select -f examples/demo/ -o json 'pcns.team == "shop"'
    """
    sink, sources = DiagnosticSink(), SourceRegistry()
    sources.add(SELECTOR_NAME, selector)
    try:
        parse(selector)
    except SelectorError as e:
        sink.error("E030", f"invalid selector: {e.message}", Span(SELECTOR_NAME, 1, e.offset + 1))
        emit_diagnostics(sink.sorted(), sources)
        sys.exit(1)
    loaded = load_inputs(files, sink, sources)
    emit_diagnostics(sink.sorted(), sources)
    if sink.has_errors:
        click.echo(f"tortie: {counts_line(sink)}", err=True)
        sys.exit(1)
    ids = selected_ids(loaded.resources, selector)
    if output == "json":
        echo_json(ids)
    else:
        for i in ids:
            click.echo(i)
