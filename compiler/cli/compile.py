"""``tortie compile``: inputs -> IR -> passes -> target check -> render -> artifact directory."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from compiler.artifact import MANIFEST, write_artifact
from compiler.cli.common import (
    EXIT_ERRORS,
    counts_line,
    emit_diagnostics,
    file_option,
    load_inputs,
)
from compiler.diagnostics import DiagnosticSink, HashingSources, Level, SourceRegistry
from compiler.pipeline import compile_program
from compiler.targets import BUILTIN, get_target

__all__ = ["compile_cmd"]


def _known_nodes(resources: object) -> set[str]:
    nodes = {n.name for n in getattr(resources, "nodes", ())}
    nodes.update(e.node for e in getattr(resources, "endpoints", ()))
    return nodes


def _fail(sink: DiagnosticSink, sources: SourceRegistry) -> None:
    emit_diagnostics(sink.sorted(), sources)
    click.echo(f"tortie: {counts_line(sink)}; nothing written", err=True)
    sys.exit(EXIT_ERRORS)


def _check_out_dir(out_dir: str) -> str:
    """The absolute output path, or exit 2 when writing there could destroy something.

    The directory is replaced as a whole, so it must be new, empty, or an earlier artifact
    (a ``manifest.json`` of format 1): ``-o .`` or ``-o ~`` must not wipe unrelated files.
    """
    out = os.path.abspath(out_dir)
    if os.path.basename(out) in ("", ".", ".."):
        raise click.BadParameter(f"{out_dir!r} cannot be replaced", param_hint="'-o'")
    parent = os.path.dirname(out)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise click.BadParameter(f"{parent} is not a directory", param_hint="'-o'")
    if os.path.islink(out) or (os.path.lexists(out) and not os.path.isdir(out)):
        raise click.BadParameter(
            f"{out_dir} exists and is not a directory; remove it or choose another",
            param_hint="'-o'",
        )
    if os.path.isdir(out):
        try:
            entries = os.listdir(out)
        except OSError as e:
            raise click.BadParameter(f"{out_dir}: {e.strerror}", param_hint="'-o'") from None
        if entries and not _is_artifact(out):
            raise click.BadParameter(
                f"{out_dir} is not empty and holds no Tortie {MANIFEST}; it would be "
                "replaced as a whole, so choose a new or empty directory",
                param_hint="'-o'",
            )
    return out


def _is_artifact(path: str) -> bool:
    try:
        with open(os.path.join(path, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == 1


@click.command("compile")
@file_option
@click.option("--node", required=True, metavar="NODE", help="The node to compile for.")
@click.option(
    "--target",
    "target_name",
    required=True,
    type=click.Choice(sorted(BUILTIN)),
    help="Dataplane to compile to.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Artifact directory to write (replaced atomically).",
)
def compile_cmd(files: tuple[str, ...], node: str, target_name: str, out_dir: str) -> None:
    """Compile policy for one node into an artifact directory.

    The directory gets the target's files plus manifest.json (input hashes, node, target,
    compiler version, file hashes). It is written all at once: on any error nothing is written
    and an existing directory is left as it was. Diagnostics go to stderr; exit status 0 ok,
    1 errors in the input, 2 usage.

    \b
    Example:
      tortie compile -f examples/demo/ --node node1 --target nftables -o out/node1
    """
    sink = DiagnosticSink()
    sources = HashingSources()
    loaded = load_inputs(files, sink, sources)
    if sink.has_errors:
        _fail(sink, sources)
    known = _known_nodes(loaded.resources)
    if node not in known:
        listed = ", ".join(sorted(known)) or "none"
        click.echo(f"tortie: unknown node {node!r} (nodes in the input: {listed})", err=True)
        sys.exit(EXIT_ERRORS)
    # Only what this node's endpoints use: the same artifact, less work (ir/build.py).
    program = compile_program(loaded.resources, node, sink, local_only=True)
    target = get_target(target_name)
    if not sink.has_errors:
        target.check(program, sink)
    if sink.has_errors:
        _fail(sink, sources)
    artifact = dataclasses.replace(
        target.render(program), inputs=dict(sorted(sources.hashes.items()))
    )
    out_path = _check_out_dir(out_dir)
    try:
        write_artifact(artifact, out_path)
    except OSError as e:
        click.echo(f"tortie: cannot write {out_dir}: {e.strerror or e}; nothing written", err=True)
        sys.exit(EXIT_ERRORS)
    path = out_dir
    emit_diagnostics([d for d in sink.sorted() if d.level is not Level.ERROR], sources)
    files_n = len(artifact.files) + 1
    click.echo(f"wrote {path}: {files_n} files ({target_name}, node {node})")
