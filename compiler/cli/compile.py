"""``tortie compile``: inputs -> IR -> passes -> target check -> render -> artifact directory."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from compiler import perf
from compiler.artifact import (
    INDEX,
    MANIFEST,
    Artifact,
    is_safe_dir_name,
    write_artifact,
    write_artifact_tree,
)
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
                f"{out_dir} is not empty and holds no Tortie {MANIFEST} or {INDEX}; it would be "
                "replaced as a whole, so choose a new or empty directory",
                param_hint="'-o'",
            )
    return out


def _is_artifact(path: str) -> bool:
    """An earlier output of ``tortie compile``: one node's artifact or a multi-node tree."""
    return _is_format_1(os.path.join(path, MANIFEST)) or _is_format_1(os.path.join(path, INDEX))


def _is_format_1(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == 1


class _NodeFailed(Exception):
    """A node's compile reported errors (they are in the sink): nothing is written."""


@click.command("compile")
@file_option
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="NODE",
    help="The node to compile for; repeat it for several nodes (then -o holds NODE/ each).",
)
@click.option(
    "--all-nodes",
    is_flag=True,
    help="Compile for every node in the input (Node resources and pods' nodeName); -o holds "
    "one NODE/ artifact directory each plus nodes.json. The input is read once.",
)
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
@click.option(
    "--nft-batch",
    is_flag=True,
    help="With --target nftables: also write nftables.batch, the script encoded as one netlink "
    "batch that the runtime loads without nft (at 10,000 policies ~0.7 s instead of ~2 s for "
    "nft -f; costs compile time). A script the encoder cannot reproduce gets no batch (a note "
    "on stderr says why); the runtime then uses nft -f.",
)
def compile_cmd(
    files: tuple[str, ...],
    nodes: tuple[str, ...],
    all_nodes: bool,
    target_name: str,
    out_dir: str,
    nft_batch: bool,
) -> None:
    """Compile policy for one node (or several) into an artifact directory.

    The directory gets the target's files plus manifest.json (input hashes, node, target,
    compiler version, file hashes). It is written all at once: on any error nothing is written
    and an existing directory is left as it was. Diagnostics go to stderr; exit status 0 ok,
    1 errors in the input, 2 usage.

    With several --node options or --all-nodes, DIR gets one artifact directory per node
    (DIR/NODE/, each as above) and nodes.json listing them, again all at once; the input is
    read and checked once, which is what a pipeline building every node wants.

    \b
    Examples:
      tortie compile -f examples/demo/ --node node1 --target nftables -o out/node1
      tortie compile -f examples/demo/ --all-nodes --target nftables -o out/
    """
    if not nodes and not all_nodes:
        raise click.UsageError("give --node NODE (repeatable) or --all-nodes")
    if nodes and all_nodes:
        raise click.UsageError("--node and --all-nodes cannot be combined")
    if nft_batch and target_name != "nftables":
        raise click.UsageError("--nft-batch is for --target nftables")
    sink = DiagnosticSink()
    sources = HashingSources()
    loaded = load_inputs(files, sink, sources)
    perf.keep_until_exit(loaded)  # freed with the process, not object by object (perf.py)
    if sink.has_errors:
        _fail(sink, sources)
    known = _known_nodes(loaded.resources)
    if all_nodes:
        chosen = sorted(known)
        if not chosen:
            click.echo("tortie: no nodes in the input; nothing written", err=True)
            sys.exit(EXIT_ERRORS)
    else:
        chosen = list(dict.fromkeys(nodes))
        unknown = [n for n in chosen if n not in known]
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            click.echo(
                f"tortie: unknown node {unknown[0]!r} (nodes in the input: {listed})", err=True
            )
            sys.exit(EXIT_ERRORS)
    target = get_target(target_name)
    inputs = dict(sorted(sources.hashes.items()))

    def artifact_for(node: str) -> Artifact:
        # Only what this node's endpoints use: the same artifact, less work (ir/build.py).
        program = compile_program(loaded.resources, node, sink, local_only=True)
        if len(chosen) == 1:
            perf.keep_until_exit(program)
        if not sink.has_errors:
            target.check(program, sink)
        if sink.has_errors:
            raise _NodeFailed(node)
        artifact = dataclasses.replace(target.render(program), inputs=inputs)
        if nft_batch:
            from compiler.targets.nftables import with_batch

            artifact, why = with_batch(artifact)
            if why is not None:
                click.echo(
                    f"tortie: node {node}: no nftables.batch ({why}); the runtime will load "
                    "the script with nft -f",
                    err=True,
                )
        return artifact

    if len(nodes) == 1:  # one --node: DIR is the artifact itself
        node = chosen[0]
        try:
            artifact = artifact_for(node)
        except _NodeFailed:
            _fail(sink, sources)
        out_path = _check_out_dir(out_dir)
        try:
            write_artifact(artifact, out_path)
        except OSError as e:
            click.echo(
                f"tortie: cannot write {out_dir}: {e.strerror or e}; nothing written", err=True
            )
            sys.exit(EXIT_ERRORS)
        emit_diagnostics([d for d in sink.sorted() if d.level is not Level.ERROR], sources)
        files_n = len(artifact.files) + 1
        click.echo(f"wrote {out_dir}: {files_n} files ({target_name}, node {node})")
        return
    bad = [n for n in chosen if not is_safe_dir_name(n)]
    if bad:
        click.echo(
            f"tortie: node {bad[0]!r} cannot name a directory under {out_dir} (letters, digits, "
            "'.', '_' and '-' only, not starting with '.'); compile it alone with --node; "
            "nothing written",
            err=True,
        )
        sys.exit(EXIT_ERRORS)
    out_path = _check_out_dir(out_dir)
    try:
        written = write_artifact_tree(target_name, (artifact_for(n) for n in chosen), out_path)
    except _NodeFailed as e:
        click.echo(f"tortie: errors compiling for node {e.args[0]!r}", err=True)
        _fail(sink, sources)
    except OSError as e:
        click.echo(f"tortie: cannot write {out_dir}: {e.strerror or e}; nothing written", err=True)
        sys.exit(EXIT_ERRORS)
    emit_diagnostics([d for d in sink.sorted() if d.level is not Level.ERROR], sources)
    click.echo(f"wrote {out_dir}: {len(written)} nodes ({target_name}), one directory each")
