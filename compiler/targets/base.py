"""What every target provides.

A target turns an optimised :class:`~compiler.ir.nodes.Program` (after ``DEFAULT_PASSES``) into an
:class:`~compiler.artifact.Artifact` for one node. The contract of its input:

* every :class:`AddrSet` is resolved (``members`` / ``port_members`` filled) and has ``family``
  4 or 6; rules only reference sets of their own family;
* every rule has ``match.ip_version`` 4 or 6 (the family split has run), nets are filtered to
  that family, and rules that can never match were dropped;
* ``program.node`` names the node; the endpoints to program are those with ``e.node == node``
  (other endpoints are there as peers, through set members).

Targets declare what they can do as data (``CAPABILITIES``, ``LIMITS``); shared code asks about a
capability and never tests a target's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from compiler.artifact import Artifact
from compiler.diagnostics import DiagnosticSink
from compiler.ir.nodes import Endpoint, Program


class Target(Protocol):
    NAME: ClassVar[str]
    CAPABILITIES: ClassVar[frozenset[str]]
    LIMITS: ClassVar[Mapping[str, int]]

    def check(self, program: Program, sink: DiagnosticSink) -> None:
        """Report what this target cannot express, as diagnostics with spans."""

    def render(self, program: Program) -> Artifact:
        """Pure: the same program gives byte-identical files."""


def local_endpoints(program: Program) -> tuple[Endpoint, ...]:
    """The endpoints this node programs, sorted by id."""
    return tuple(e for e in program.endpoints if e.node == program.node)
