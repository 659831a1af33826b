"""Incremental recompilation for ``tortie agent``: exact by construction, tested against a full
compile (``tests/property/test_incremental.py``).

* :mod:`.sources` — per-file caching of the frontend: only files whose bytes changed are read
  again, and inside a changed file only the list items (pods, endpoints) that changed are parsed;
  the result is spliced into the previous :class:`~compiler.frontend.model.ResourceSet` when
  that is provably the same as a full load, else the frontend reads every file again.
* :mod:`.program` — given the previous compile's state and the endpoints that changed, the new
  :class:`~compiler.ir.nodes.Program` (after the membership-stable passes) with only the
  affected sets and endpoints recomputed; everything else is the previous object (identity), so
  targets can diff quickly. Anything else falls back to the full compile.
* :mod:`.driver` — :class:`~.driver.IncrementalCompiler`: both, with the fallback, and a state
  that only advances on :meth:`~.driver.IncrementalCompiler.commit` (the agent commits once
  the kernel took the result).

Measured with ``python -m benchmarks.agent`` (``--compile-only`` for these two stages alone).
"""
