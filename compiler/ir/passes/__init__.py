"""The pass pipeline: one module per pass, run in this order.

Every pass keeps semantics: for any flow, ``evaluate`` gives the same verdict before and after.
"""

from __future__ import annotations

from compiler.ir.passes import resolve_sets, split_families

DEFAULT_PASSES = (
    resolve_sets.run,
    split_families.run,
)
