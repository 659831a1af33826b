"""The pass pipeline: one module per pass, run in the order of :data:`DEFAULT_PASSES`.

Every pass is a pure ``run(program, ctx) -> Program`` and keeps semantics: for any flow,
``compiler.ir.evaluate.evaluate`` gives the same verdict *and the same trace* before and after
(``tests/property/test_pass_semantics.py`` checks this after each pass alone and after each step
of the pipeline). Why this order:

1. ``resolve_sets`` — selector and named-port sets get their members. Everything after reasons
   about members, so this comes first.
2. ``split_families`` — one copy of each rule and set per IP family, as the targets need; the
   rest then works on single-family lists (aggregation only merges within a family anyway, and a
   v4 set and a v6 set must never be merged by deduplication).
3. ``aggregate_cidrs`` — minimal prefix lists in sets and inline ``nets``/``notNets``, so that
   sets with the same addresses also have the same *members* …
4. ``dedupe_sets`` — … which is what deduplication compares: one set per distinct membership,
   the smallest id of each group surviving.
5. ``fold_empty`` — drop rules that can never match (empty positive set, empty ``nets``, …).
   Before shadow detection, so an unmatchable rule is reported as dead by neither pass (it is
   simply dropped) and cannot make the quadratic shadow check longer.
6. ``shadowed_rules`` — last, on the smallest rule lists, with final set members: warn (W101)
   about and drop rules that an earlier terminal rule always pre-empts.

Rules dropped by the last two passes are recorded in ``Program.dropped_rules`` as
``(owner, rule index, direction)`` once no copy of the rule (v4 or v6) is left; ``owner`` is a
policy id or, for rules of a profile, the profile name (profile names never contain ``/``).
"""

from __future__ import annotations

from compiler.ir.passes import (
    aggregate_cidrs,
    dedupe_sets,
    fold_empty,
    resolve_sets,
    shadowed_rules,
    split_families,
)

DEFAULT_PASSES = (
    resolve_sets.run,
    split_families.run,
    aggregate_cidrs.run,
    dedupe_sets.run,
    fold_empty.run,
    shadowed_rules.run,
)

#: The passes whose *rules* never depend on set members: resolving, the family split and CIDR
#: aggregation change set contents only. Deduplication, folding and shadowing look at members
#: (an emptied set folds a rule away, equal members merge two sets), so with them a pod coming or
#: going can rewrite rules. The agent compiles with this pipeline so that endpoint churn stays a
#: set-element update (DESIGN.md: "set contents are data, rules are code"); a full compile uses
#: DEFAULT_PASSES for the smallest artifact and the W101 warnings.
MEMBERSHIP_STABLE_PASSES = (
    resolve_sets.run,
    split_families.run,
    aggregate_cidrs.run,
)

#: Diagnostic codes the passes emit (stable; never renumber or reuse one).
CODES: dict[str, str] = {
    shadowed_rules.CODE: "a rule can never match because an earlier terminal rule of the same "
    "policy and direction matches every packet it would (removed)",
}

#: Pass name (module name, as ``--dump-after`` takes it) -> pass.
BY_NAME = {p.__module__.rsplit(".", 1)[-1]: p for p in DEFAULT_PASSES}
