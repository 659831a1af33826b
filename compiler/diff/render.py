"""Output of ``tortie diff``: text for people, JSON for tools, Markdown for a pull request.

All three show the same things in the same order: the verdict changes (groups from
``report.py``: newly allowed first, then newly denied), then the flows forwarded through host
endpoints whose verdict changed only at the endpoint's applyOnForward policy (``forward.py``,
per endpoint, numbered ``F1``, ``F2``, ...), endpoints added and removed, what the
staged policies did (``--staged``), and the artifact change (``--artifacts``). Text and Markdown
show at most ``max_groups`` groups and say how many were left out; JSON has everything.

Markdown is sized for a pull-request comment: a summary line; a summary table rolling the groups
up by what decides them now (one global Deny is one line, however many groups it touches); a
table with one row per group (from, to, services, decided before, decided after); then the
details (members, full decisions with ``file:line``) folded in a ``<details>`` block.
"""

from __future__ import annotations

from collections.abc import Iterable

from compiler.diff import SemanticDiff
from compiler.diff.artifacts import ArtifactDiff
from compiler.diff.report import ChangeGroup, Services, Side
from compiler.diff.staged import Promotion
from compiler.diff.subjects import WORKLOAD

__all__ = ["as_json", "markdown", "summary", "text"]

MAX_LINES = 12  # rule lines / elements shown per artifact object


def _headline(d: SemanticDiff) -> str:
    allowed = sum(1 for g in d.groups if g.now_allowed)
    denied = len(d.groups) - allowed
    added = sum(1 for c in d.endpoints if c.change == "added")
    removed = sum(1 for c in d.endpoints if c.change == "removed")
    if not d.changed:
        return "no change in connectivity"
    parts = [f"{allowed} group{'s' * (allowed != 1)} of flows newly allowed, {denied} newly denied"]
    if d.forward:
        fa = sum(1 for f in d.forward if f.group.now_allowed)
        parts.append(
            f"forwarded through host endpoints: {fa} group{'s' * (fa != 1)} newly allowed, "
            f"{len(d.forward) - fa} newly denied"
        )
    if added or removed:
        parts.append(f"{added} endpoint{'s' * (added != 1)} added, {removed} removed")
    return "; ".join(parts)


def summary(d: SemanticDiff) -> list[tuple[str, str, str, int, int]]:
    """The groups rolled up by what decides them now: (change, decided now by, services,
    groups, endpoint/class pairs), most pairs first."""
    by: dict[tuple[bool, str], tuple[Services, int, int]] = {}
    for g in d.groups:
        key = (g.now_allowed, g.after.short())
        services, n, pairs = by.get(key, (Services(), 0, 0))
        services.update(g.services)
        by[key] = (services, n + 1, pairs + len(g.sources.names) * len(g.destinations.names))
    rows = [
        ("allowed" if allowed else "denied", after, services.text(), n, pairs)
        for (allowed, after), (services, n, pairs) in by.items()
    ]
    return sorted(rows, key=lambda r: (r[0] != "allowed", -r[4], r[1]))


def _shown(groups: list[ChangeGroup], limit: int) -> tuple[list[ChangeGroup], int]:
    return groups[:limit], max(0, len(groups) - limit)


def _limited(items: Iterable[str], limit: int = MAX_LINES) -> list[str]:
    items = list(items)
    if len(items) <= limit:
        return items
    return [*items[:limit], f"… ({len(items) - limit} more)"]


# -- text ---------------------------------------------------------------------------------------


def _group_text(n: int, g: ChangeGroup) -> list[str]:
    return [
        f"[{n}] {'ALLOWED now' if g.now_allowed else 'DENIED now'}: {g.sources.bucket} -> {g.destinations.bucket}",
        f"    from     {g.sources.text()}",
        f"    to       {g.destinations.text()}",
        f"    services {g.services.text()}",
        f"    before   {g.before.text()}",
        f"    after    {g.after.text()}",
    ]


def _artifact_lines(a: ArtifactDiff, bullet: str = "  ") -> list[str]:
    c = a.counts()
    out = [
        f"artifact change for node {a.node} ({a.target}): {c['added']} objects added, "
        f"{c['removed']} removed, {c['changed']} changed; {c['elements_added']} elements added, "
        f"{c['elements_removed']} removed"
    ]
    if not a.changed:
        out[0] = f"artifact change for node {a.node} ({a.target}): none"
    elif a.only_elements:
        out.append("only set elements change: no chain or rule is rewritten")
    for o in a.objects:
        out.append(f"{bullet}{o.change} {o.kind} {o.name}")
        out += [f"{bullet}  - {x}" for x in _limited(o.body_removed)]
        out += [f"{bullet}  + {x}" for x in _limited(o.body_added)]
        if o.elements_removed:
            out.append(f"{bullet}  elements removed: " + ", ".join(_limited(o.elements_removed)))
        if o.elements_added:
            out.append(f"{bullet}  elements added: " + ", ".join(_limited(o.elements_added)))
    return out


FORWARD_NOTE = (
    "forwarded through host endpoints (applyOnForward), where only the forward policy changed "
    "the verdict:"
)


def _forward_text(d: SemanticDiff, max_groups: int) -> list[str]:
    out: list[str] = []
    if d.forward:
        out += ["", FORWARD_NOTE]
    shown, hidden = d.forward[:max_groups], max(0, len(d.forward) - max_groups)
    for i, f in enumerate(shown, 1):
        lines = _group_text(i, f.group)
        lines[0] = lines[0].replace("[", "[F", 1) + f" via {f.via}"
        out += [""] + lines
    if hidden:
        out += [
            "",
            f"… {hidden} more forwarded group{'s' * (hidden != 1)} not shown "
            "(--max-groups, or -o json for all)",
        ]
    return out


def text(
    d: SemanticDiff,
    artifacts: ArtifactDiff | None = None,
    staged: list[Promotion] | None = None,
    max_groups: int = 50,
) -> str:
    out = [f"tortie diff: {_headline(d)}"]
    if staged:
        out += ["", "staged policies enforced:"] + [f"  {p.text()}" for p in staged]
    shown, hidden = _shown(d.groups, max_groups)
    if d.groups:
        out += ["", "by what decides now (groups, endpoint pairs):"]
        out += [
            f"  {c}: {a.split(': ', 1)[1]} — {s_} ({n}, {p})"
            for c, a, s_, n, p in summary(d)[:max_groups]
        ]
    for i, g in enumerate(shown, 1):
        out.append("")
        out += _group_text(i, g)
    if hidden:
        out += [
            "",
            f"… {hidden} more group{'s' * (hidden != 1)} not shown (--max-groups, or -o json for all)",
        ]
    out += _forward_text(d, max_groups)
    if d.endpoints:
        out += ["", "endpoints (flows to and from them are not compared):"]
        for c in d.endpoints:
            ips = ", ".join(c.after if c.change == "added" else c.before) or "no address"
            if c.change == "addresses":
                ips = f"{', '.join(c.before) or 'none'} -> {', '.join(c.after) or 'none'}"
            out.append(f"  {c.change} {c.kind} {c.name} ({ips})")
    if artifacts is not None:
        out += [""] + _artifact_lines(artifacts)
    return "\n".join(out) + "\n"


# -- json ---------------------------------------------------------------------------------------


def as_json(
    d: SemanticDiff, artifacts: ArtifactDiff | None = None, staged: list[Promotion] | None = None
) -> dict[str, object]:
    allowed = sum(1 for g in d.groups if g.now_allowed)
    out: dict[str, object] = {
        "changed": d.changed,
        "summary": {
            "groups": len(d.groups),
            "newly_allowed": allowed,
            "newly_denied": len(d.groups) - allowed,
            "forwarded_groups": len(d.forward),
            "forwarded_newly_allowed": sum(1 for f in d.forward if f.group.now_allowed),
            "endpoints_added": sum(1 for c in d.endpoints if c.change == "added"),
            "endpoints_removed": sum(1 for c in d.endpoints if c.change == "removed"),
        },
        "by_decision": [
            {"change": c, "decided_by": a, "services": s_, "groups": n, "pairs": p}
            for c, a, s_, n, p in summary(d)
        ],
        "groups": [g.as_dict() for g in d.groups],
        "forwarded": [f.as_dict() for f in d.forward],
        "endpoints": [
            {
                "change": c.change,
                "kind": c.kind,
                "name": c.name,
                "namespace": c.namespace,
                "before": list(c.before),
                "after": list(c.after),
            }
            for c in d.endpoints
        ],
        "stats": d.stats,
    }
    if staged is not None:
        out["staged"] = [p.as_dict() for p in staged]
    if artifacts is not None:
        out["artifacts"] = artifacts.as_dict()
    return out


# -- markdown -----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _side_md(side: Side, few: int = 3) -> str:
    """A table cell: the bucket, the labels all members share, and the members when few."""
    labels = "{" + ", ".join(f"{k}={v}" for k, v in side.labels) + "} " if side.labels else ""
    names = [n.split("/", 1)[-1] if side.kind == WORKLOAD else n for n in side.names]
    if len(names) <= few:
        return f"{side.bucket}: {labels}{', '.join(names)}"
    return f"{side.bucket}: {labels}({len(names)})"


COMMENT_LIMIT = 60_000  # GitHub refuses comments over 65,536 characters


def markdown(
    d: SemanticDiff,
    artifacts: ArtifactDiff | None = None,
    staged: list[Promotion] | None = None,
    max_groups: int = 50,
) -> str:
    """The Markdown for a pull-request comment; fewer groups are shown if ``max_groups`` of them
    would not fit in one comment (the note under the table says how many were left out)."""
    while True:
        out = _markdown(d, artifacts, staged, max_groups)
        if len(out) <= COMMENT_LIMIT or max_groups <= 1:
            return out
        max_groups = max(1, max_groups * 3 // 4)


def _forward_md(d: SemanticDiff, max_groups: int) -> list[str]:
    if not d.forward:
        return []
    out = [
        "",
        "**Forwarded through host endpoints** (applyOnForward; flows whose verdict changed only "
        "there):",
        "",
        "| # | change | via | from | to | services | before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(d.forward[:max_groups], 1):
        g = f.group
        row = [
            f"F{i}",
            "**allowed**" if g.now_allowed else "**denied**",
            f.via,
            _side_md(g.sources),
            _side_md(g.destinations),
            g.services.text(),
            g.before.short(),
            g.after.short(),
        ]
        out.append("| " + " | ".join(_cell(x) for x in row) + " |")
    hidden = len(d.forward) - max_groups
    if hidden > 0:
        out += [
            "",
            f"_{hidden} more forwarded group{'s' * (hidden != 1)} not shown; run "
            "`tortie diff -o json` for all._",
        ]
    return out


def _markdown(
    d: SemanticDiff,
    artifacts: ArtifactDiff | None,
    staged: list[Promotion] | None,
    max_groups: int,
) -> str:
    out = ["### Tortie policy diff", "", f"**{_headline(d)}**"]
    if staged:
        out += ["", "Staged policies enforced: " + "; ".join(f"`{p.text()}`" for p in staged)]
    shown, hidden = _shown(d.groups, max_groups)
    if shown:
        rolled = summary(d)
        out += [
            "",
            "| change | decided now by | services | groups | pairs |",
            "|---|---|---|---|---|",
        ]
        for change, after, services, n, pairs in rolled[:max_groups]:
            row = [f"**{change}**", after.split(": ", 1)[1], services, str(n), str(pairs)]
            out.append("| " + " | ".join(_cell(x) for x in row) + " |")
        if len(rolled) > max_groups:
            out += ["", f"_{len(rolled) - max_groups} more lines not shown._"]
        out += [
            "",
            "| # | change | from | to | services | before | after |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, g in enumerate(shown, 1):
            row = [
                str(i),
                "**allowed**" if g.now_allowed else "**denied**",
                _side_md(g.sources),
                _side_md(g.destinations),
                g.services.text(),
                g.before.short(),
                g.after.short(),
            ]
            out.append("| " + " | ".join(_cell(x) for x in row) + " |")
        if hidden:
            out += [
                "",
                f"_{hidden} more group{'s' * (hidden != 1)} not shown; run `tortie diff -o json` for all._",
            ]
        out += ["", "<details><summary>Details</summary>", ""]
        for i, g in enumerate(shown, 1):
            out += [
                f"**{i}.** {'allowed' if g.now_allowed else 'denied'} now",
                f"- from: {_cell(g.sources.text(limit=20))}",
                f"- to: {_cell(g.destinations.text(limit=20))}",
                f"- services: {g.services.text()}",
                f"- before: {_cell(g.before.text())}",
                f"- after: {_cell(g.after.text())}",
                "",
            ]
        out.append("</details>")
    out += _forward_md(d, max_groups)
    if d.endpoints:
        out += ["", "Endpoints added or removed (their flows are not compared):", ""]
        for c in d.endpoints:
            out.append(f"- {c.change} {c.kind} `{c.name}`")
    if artifacts is not None:
        lines = _artifact_lines(artifacts, bullet="")
        out += ["", f"**{lines[0]}**"]
        if len(lines) > 1:
            out += ["", "<details><summary>Artifact objects</summary>", "", "```"]
            out += lines[1:]
            out += ["```", "", "</details>"]
    return "\n".join(out) + "\n"
