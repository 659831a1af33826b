"""Small pure helpers more than one target needs (no target-specific quoting here: each target
sanitises the results for its own syntax).

>>> expand_log_prefix("%k/%t/%p (%n) %x", "default", "np", "web", "shop/web")
'np/default/shop/web (web) %x'
>>> parse_rate("10/second"), parse_rate(" 3 / minute "), parse_rate("fast")
((10, 'second'), (3, 'minute'), None)
"""

from __future__ import annotations

import os
import re

from compiler.diagnostics import Span

_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)\s*")
_PLACEHOLDER = re.compile(r"%([tknp])")


def expand_log_prefix(template: str, tier: str, kind: str, name: str, ns_name: str) -> str:
    """FelixConfiguration ``logPrefix`` with Calico's placeholders replaced: ``%t`` tier, ``%k``
    kind short (``np gnp knp kcnp snp sgnp sknp``, ``pro`` for profiles), ``%n`` name, ``%p``
    ``namespace/name`` (just the name for cluster-scoped objects). Other ``%`` sequences stay."""
    values = {"t": tier, "k": kind, "n": name, "p": ns_name}
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


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
