"""``tortie diff``: what a policy change does to connectivity (and to a node's artifacts)."""

from __future__ import annotations

import json
import sys

import click

from compiler.cli.common import (
    EXIT_OK,
    counts_line,
    emit_diagnostics,
    fail,
    load_inputs,
)
from compiler.diagnostics import DiagnosticSink, Level, SourceRegistry
from compiler.frontend.model import ResourceSet
from compiler.targets import BUILTIN

__all__ = ["EXIT_CHANGED", "diff_cmd"]

EXIT_CHANGED = 3


def _check(sink: DiagnosticSink, sources: SourceRegistry, what: str) -> None:
    if sink.has_errors:
        emit_diagnostics(sink.sorted(), sources)
        fail(f"{what}: {counts_line(sink)}")


def _load_paths(
    paths: tuple[str, ...], what: str
) -> tuple[ResourceSet, SourceRegistry, DiagnosticSink]:
    loaded = load_inputs(paths)
    _check(loaded.sink, loaded.sources, what)
    return loaded.resources, loaded.sources, loaded.sink


def _load_revs(
    base_rev: str, head_rev: str | None, paths: tuple[str, ...]
) -> tuple[ResourceSet, ResourceSet]:
    from compiler.diff.revs import RevError, load_rev, repo_root

    try:
        root = repo_root()
        out = []
        for rev in (base_rev, head_rev):
            sink, sources = DiagnosticSink(), SourceRegistry()
            out.append(load_rev(rev, paths, root, sink, sources))
            _check(sink, sources, f"{rev or 'working tree'}")
    except RevError as e:
        fail(str(e))
    return out[0], out[1]


@click.command("diff")
@click.option(
    "--base",
    "base",
    multiple=True,
    metavar="PATH",
    help="The tree before the change (file or directory); repeatable.",
)
@click.option(
    "--head", "head", multiple=True, metavar="PATH", help="The tree after the change; repeatable."
)
@click.option(
    "--base-rev",
    metavar="REV",
    default=None,
    help="Git revision before the change (with -f paths from the repository root).",
)
@click.option(
    "--head-rev",
    metavar="REV",
    default=None,
    help="Git revision after the change (default: the working tree).",
)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help="With --base-rev or --staged: file or directory to read (repository-relative with --base-rev); repeatable.",
)
@click.option(
    "--staged", is_flag=True, help="Compare the -f tree with its staged policies enforced."
)
@click.option(
    "--artifacts", is_flag=True, help="Also show the artifact change for --node and --target."
)
@click.option(
    "--node",
    metavar="NODE",
    default=None,
    help="Node whose artifacts to compare (with --artifacts).",
)
@click.option(
    "--target",
    "target_name",
    type=click.Choice(sorted(BUILTIN)),
    default=None,
    help="Target (with --artifacts).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--max-groups",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Groups shown in text and markdown.",
)
def diff_cmd(
    base: tuple[str, ...],
    head: tuple[str, ...],
    base_rev: str | None,
    head_rev: str | None,
    files: tuple[str, ...],
    staged: bool,
    artifacts: bool,
    node: str | None,
    target_name: str | None,
    output: str,
    max_groups: int,
) -> None:
    """Show which flows a policy change allows or denies, and what decides them.

    Compares two policy trees exactly (no sampling): every flow — source endpoint or address
    range, destination, protocol, port range or ICMP type — whose verdict differs is reported,
    grouped by namespace pair, endpoint group and ports, with the rule that decides it before
    and after (policy, rule number, file:line). Flows forwarded through a host endpoint whose
    verdict changed only at its applyOnForward policy are listed in their own section, per host
    endpoint. Endpoints present in only one tree are listed as added or removed; flows to and
    from them are not compared.

    Exit status: 0 nothing changed, 3 something changed, 1 input errors, 2 usage.

    \b
    Example:
      tortie diff --base old/ --head new/
      tortie diff --base-rev origin/main --head-rev HEAD -f policies/ -f cluster/ -o markdown
      tortie diff --staged -f policies/
      tortie diff --base old/ --head new/ --artifacts --node node1 --target nftables
    """
    modes = [bool(base or head), base_rev is not None, staged]
    if sum(modes) != 1:
        raise click.UsageError(
            "give exactly one of: --base/--head, --base-rev [--head-rev], --staged"
        )
    if (base or head) and not (base and head):
        raise click.UsageError("--base and --head go together")
    if head_rev is not None and base_rev is None:
        raise click.UsageError("--head-rev needs --base-rev")
    if staged and not files:
        raise click.UsageError("--staged needs -f PATH")
    if files and not (staged or base_rev is not None):
        raise click.UsageError("-f is for --base-rev and --staged; use --base/--head for two trees")
    if artifacts and (node is None or target_name is None):
        raise click.UsageError("--artifacts needs --node and --target")
    if not artifacts and (node is not None or target_name is not None):
        raise click.UsageError("--node and --target go with --artifacts")

    from compiler.diff import render, semantic_diff
    from compiler.diff.artifacts import artifact_change
    from compiler.diff.staged import promote

    promotions = None
    if staged:
        base_rs, _, _ = _load_paths(files, "input")
        head_rs, promotions = promote(base_rs)
    elif base_rev is not None:
        base_rs, head_rs = _load_revs(base_rev, head_rev, files)
    else:
        base_rs, _, _ = _load_paths(base, "base")
        head_rs, _, _ = _load_paths(head, "head")

    result = semantic_diff(base_rs, head_rs)
    change = None
    if artifacts:
        assert node is not None and target_name is not None
        known = {e.node for rs in (base_rs, head_rs) for e in rs.endpoints} | {
            n.name for rs in (base_rs, head_rs) for n in rs.nodes
        }
        if node not in known:
            fail(
                f"unknown node {node!r} (nodes in the input: {', '.join(sorted(known)) or 'none'})"
            )
        sink, sources = DiagnosticSink(), SourceRegistry()
        change = artifact_change(base_rs, head_rs, node, target_name, sink)
        if change is None:
            emit_diagnostics([d for d in sink.sorted() if d.level is Level.ERROR], sources)
            fail(f"cannot compile for node {node} with {target_name}: {counts_line(sink)}")
    if output == "json":
        click.echo(json.dumps(render.as_json(result, change, promotions), indent=2, sort_keys=True))
    elif output == "markdown":
        click.echo(render.markdown(result, change, promotions, max_groups), nl=False)
    else:
        click.echo(render.text(result, change, promotions, max_groups), nl=False)
    sys.exit(EXIT_CHANGED if result.changed else EXIT_OK)
