"""Render a :class:`~runtime.bgp.model.BirdConfig` as BIRD 2 configuration text.

One file, ``bird.cfg``, holds both address families (BIRD 2 runs IPv4 and IPv6 in one daemon;
Calico's confd writes ``bird.cfg`` and ``bird6.cfg`` for two BIRD 1.x daemons). The template
``templates/bird.cfg.j2`` only lays out data: Jinja2 runs with ``StrictUndefined`` (a missing
value is an error, not an empty string), ``trim_blocks`` and ``lstrip_blocks``, and no
autoescape (this is not HTML). Two filters make text safe:

- ``bird_str``: a double-quoted BIRD string; raises :class:`~runtime.bgp.text.UnsafeText` for
  text BIRD cannot quote (it has no escapes), so a hostile value fails the render instead of
  editing the configuration;
- ``comment``: text for a ``#`` comment, reduced to an allowlist of characters.

Output is deterministic: the builder sorts everything, and nothing time- or host-dependent is
rendered.

>>> from compiler.frontend.model import IPPool, Node, ResourceSet
>>> from compiler.diagnostics import DiagnosticSink
>>> import ipaddress
>>> rs = ResourceSet(nodes=(Node("a", ipaddress.ip_interface("192.168.0.1/24")),
...                         Node("b", ipaddress.ip_interface("192.168.0.2/24"))))
>>> text = render_node(rs, "a", [], DiagnosticSink())
>>> "protocol bgp Mesh_192_168_0_2 from bgp_template" in text and "passive on" in text
True
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping

import jinja2

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import ResourceSet
from runtime.bgp.build import BuildOptions, build_config
from runtime.bgp.model import BirdConfig
from runtime.bgp.text import bird_string, comment_text
from runtime.ipam_state import Block

__all__ = ["CONFIG_NAME", "render", "render_node"]

CONFIG_NAME = "bird.cfg"
_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["bird_str"] = bird_string
    env.filters["comment"] = comment_text
    return env


def render(cfg: BirdConfig) -> str:
    """The text of ``bird.cfg`` for ``cfg``."""
    text = _environment().get_template("bird.cfg.j2").render(cfg=cfg)
    # Collapse the blank lines that empty sections leave behind, for stable, readable goldens.
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip("\n") + "\n"


def render_node(
    rs: ResourceSet,
    node: str,
    blocks: Iterable[Block],
    sink: DiagnosticSink,
    *,
    secrets: Mapping[str, str] | None = None,
    options: BuildOptions | None = None,
) -> str | None:
    """Build and render the configuration of ``node``; None when it cannot be built."""
    cfg = build_config(rs, node, blocks, sink, secrets=secrets, options=options)
    return render(cfg) if cfg is not None else None
