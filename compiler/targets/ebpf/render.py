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
    return environment().get_template("policy_tc.bpf.c.j2").render(prog=prog)


def headers() -> dict[str, bytes]:
    """Every header a program includes (hand-written ones and the generated maps header),
    by file name."""
    out = {p.name: p.read_bytes() for p in sorted(INCLUDE.glob("*.h"))}
    out[MAPS_HEADER] = render_maps_header().encode()
    out[DISPATCH_MAPS_HEADER] = render_dispatch_maps_header().encode()
    return dict(sorted(out.items()))


def object_name(c_source: str, header_files: dict[str, bytes], prefix: str = "p-") -> str:
    """Content address of one program: the hash of its C and of every header it includes
    (``p-…`` policy objects, ``d-…`` the dispatcher)."""
    h = hashlib.sha256()
    for name, data in sorted(header_files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(c_source.encode())
    return prefix + h.hexdigest()[:16]
