"""C rendering from the Jinja2 templates in ``bpf_templates/``.

The environment is strict (``StrictUndefined``: a missing value fails loudly) and keeps the
output tidy (``trim_blocks``, ``lstrip_blocks``). Templates only lay out prepared data: the
struct and map definitions of :mod:`layout`, and the macro ops of :mod:`lower`. Everything they
loop over is already sorted, so the same program renders to the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from compiler.targets.ebpf import layout
from compiler.targets.ebpf.lower import Chunk

TEMPLATES = Path(__file__).resolve().parents[3] / "bpf_templates"
INCLUDE = TEMPLATES / "include"
MAPS_HEADER = "tortie_maps.h"
DISPATCH_MAPS_HEADER = "tortie_dispatch_maps.h"
DISPATCH_INCLUDES = ("tortie_common.h", DISPATCH_MAPS_HEADER)  # what dispatch_tc.bpf.c.j2 includes


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@dataclass(frozen=True, slots=True)
class ProgramSource:
    """Everything ``policy_tc.bpf.c.j2`` needs for one object."""

    summary: str
    description: tuple[str, ...]
    hook: int  # layout.HOOK_TC_INGRESS | HOOK_TC_EGRESS
    check_e2h: int  # 1: apply defaultEndpointToHostAction after an allow (workload egress)
    host_to_workload: int  # 1: this node's IPs reach the endpoint unpoliced (workload ingress)
    chunks: tuple[Chunk, ...]


def _maps_header(guard: str, structs: object, maps: object) -> str:
    return (
        environment()
        .get_template("tortie_maps.h.j2")
        .render(guard=guard, constants=sorted(layout.CONSTANTS), structs=structs, maps=maps)
    )


def render_maps_header() -> str:
    return _maps_header("TORTIE_MAPS_H", layout.STRUCTS, layout.MAPS)


def render_dispatch_maps_header() -> str:
    return _maps_header("TORTIE_DISPATCH_MAPS_H", layout.DISPATCH_STRUCTS, layout.DISPATCH_MAPS)


def render_dispatch() -> str:
    """The dispatcher's C (``dispatch_tc.bpf.c.j2``): the same for every artifact of a
    Tortie version."""
    return (
        environment()
        .get_template("dispatch_tc.bpf.c.j2")
        .render(maps_header=DISPATCH_MAPS_HEADER, progs=layout.DISPATCH_PROGS)
    )


def render_program(prog: ProgramSource) -> str:
    return anchor_lines(environment().get_template("policy_tc.bpf.c.j2").render(prog=prog))


def anchor_lines(text: str) -> str:
    r"""Give every op of a chunk the line of the comment above it (``/* rule 3: allow */``)
    through ``#line`` directives, and put the real line numbers back after it.

    BTF line info carries the text of each instruction's source line, and clang 14 adds each
    to the BTF string table with a linear search (``BTFStringTable::addString``): with one
    distinct line per op, that search was quadratic, 6.3 of 11.7 s of clang for a 26,000-line
    object (10,000 policies). Anchored, a program has a handful of distinct line texts (the
    rule comments), and a verifier log still names the rule's line in this file.

    >>> anchor_lines("{\n\t/* rule 0 */\n\tT_A();\n\tT_B();\n}").split("\n")
    ['{', '\t/* rule 0 */', '#line 2', '\tT_A();', '#line 2', '\tT_B();', '#line 8', '}']
    """
    out: list[str] = []
    anchor = 0  # line of the last comment in this function; 0: none yet
    remapped = False  # the last line was given another line number than its own
    for line in text.split("\n"):
        if anchor and line.startswith("\tT_"):
            out += [f"#line {anchor}", line]
            remapped = True
            continue
        if remapped:  # back to real line numbers: the next line is line len(out) + 2
            out.append(f"#line {len(out) + 2}")
            remapped = False
        out.append(line)
        if line.startswith("\t/* "):
            anchor = len(out)
        elif line.startswith("}"):
            anchor = 0
    return "\n".join(out)


@functools.cache
def render_entry(summary: str, hook: int, check_e2h: int, host_to_workload: int) -> str:
    """The entry program's work before the policy (``tortie_prepare_linked``), the same for every
    policy object of one kind, on its own (``entry_tc.bpf.c.j2``); ``build`` links it into the
    objects built with ``-DTORTIE_LINKED_ENTRY``."""
    return (
        environment()
        .get_template("entry_tc.bpf.c.j2")
        .render(
            summary=summary,
            hook=hook,
            check_e2h=check_e2h,
            host_to_workload=host_to_workload,
        )
    )


def headers() -> dict[str, bytes]:
    """Every header a program includes (hand-written ones and the generated maps header),
    by file name."""
    out = {p.name: p.read_bytes() for p in sorted(INCLUDE.glob("*.h"))}
    out[MAPS_HEADER] = render_maps_header().encode()
    out[DISPATCH_MAPS_HEADER] = render_dispatch_maps_header().encode()
    return dict(sorted(out.items()))


def object_name(
    c_source: str, header_files: dict[str, bytes], prefix: str = "p-", linked: str = ""
) -> str:
    """Content address of one program: the hash of its C, of every header it includes and of
    the C linked into it (``linked``: its entry program) (``p-…`` policy objects, ``d-…`` the
    dispatcher, ``e-…`` entry programs)."""
    h = hashlib.sha256()
    for name, data in sorted(header_files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(c_source.encode())
    if linked:
        h.update(b"\0linked\0" + linked.encode())
    return prefix + h.hexdigest()[:16]
