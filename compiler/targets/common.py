"""Small pure helpers more than one target needs (no target-specific quoting here: each target
sanitises the results for its own syntax).

>>> expand_log_prefix("%k/%t/%p (%n) %x", "default", "np", "web", "shop/web")
'np/default/shop/web (web) %x'
>>> parse_rate("10/second"), parse_rate(" 3 / minute "), parse_rate("fast")
((10, 'second'), (3, 'minute'), None)
>>> mark_bits(0xF0, 3)
(16, 32, 64)
"""

from __future__ import annotations

import os
import re

from compiler.diagnostics import Span
from compiler.ir import nodes as ir

_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)\s*")
_PLACEHOLDER = re.compile(r"%([tknp])")


def expand_log_prefix(template: str, tier: str, kind: str, name: str, ns_name: str) -> str:
    """FelixConfiguration ``logPrefix`` with Calico's placeholders replaced: ``%t`` tier, ``%k``
    kind short (``np gnp knp kcnp snp sgnp sknp``, ``pro`` for profiles), ``%n`` name, ``%p``
    ``namespace/name`` (just the name for cluster-scoped objects). Other ``%`` sequences stay."""
    values = {"t": tier, "k": kind, "n": name, "p": ns_name}
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


def policy_log_prefix(template: str, policy: ir.Policy) -> str:
    """:func:`expand_log_prefix` for a policy's Log rules."""
    return expand_log_prefix(
        template, policy.tier, policy.kind_short, policy.name, policy.qualified_name
    )


def profile_log_prefix(template: str, name: str) -> str:
    """:func:`expand_log_prefix` for a profile's Log rules (no tier, kind ``pro``)."""
    return expand_log_prefix(template, "", "pro", name, name)


def parse_rate(text: str | None) -> tuple[int, str] | None:
    """``logActionRateLimit`` as (count, unit), or None when unset or malformed."""
    if not text:
        return None
    m = _RATE.fullmatch(text)
    return (int(m[1]), m[2]) if m else None


def span_text(span: Span) -> str:
    """``file:line`` for comments; absolute paths are cut to the file name (artifacts never
    hold host paths)."""
    if span.line <= 0:
        return ""
    name = os.path.basename(span.file) if os.path.isabs(span.file) else span.file
    return f"{name}:{span.line}"


def mark_bits(mask: int, needed: int) -> tuple[int, ...] | None:
    """The lowest ``needed`` set bits of a mark mask, lowest first (the order Felix hands them
    out in), or None when the mask has fewer."""
    bits = [1 << i for i in range(32) if mask >> i & 1]
    return tuple(bits[:needed]) if len(bits) >= needed else None
