"""Process-level performance settings for batch runs (the CLI, benchmarks).

The compiler builds millions of small objects that live until the end of a run: YAML nodes,
resources, IR nodes. They are acyclic trees, so reference counting frees them; CPython's cyclic
garbage collector still walks every live container object each time the older generations fill
up, and on a 10,000-endpoint input that walking cost more than the work itself (``load`` took
twice as long with the collector on; ``build`` 3.7 s instead of 1.5 s). Two tools:

* :func:`paused_gc` turns the collector off for a block and back on afterwards (nesting is fine):
  use it around a bulk build of acyclic data, in long-running processes too;
* :func:`batch_mode` is for one command (the CLI calls it once the inputs are loaded): it moves
  everything alive now to the permanent generation (``gc.freeze()``: never scanned again) and
  makes young collections rarer. Garbage cycles are still collected, just less often. It returns
  the function that undoes it, to call when the command ends: a frozen object is not collected
  even when it becomes cyclic garbage, so a long-running process (the agent, a test run calling
  commands in-process) must not stay frozen.

At the end of a command, freeing that data object by object is work nobody needs when the
process ends anyway (0.2-0.4 s of CPU after a 10,000-policy compile, most of it the
interpreter's teardown): :func:`keep_until_exit` holds a command's large objects, and
``compiler.cli.run`` (the ``tortie`` executable) ends the process with ``os._exit`` once the
command is done, its atexit handlers have run and its output is flushed.

>>> with paused_gc():
...     import gc
...     gc.isenabled()
False
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["BATCH_THRESHOLDS", "batch_mode", "keep_until_exit", "paused_gc", "release_kept"]

#: (gen0, gen1, gen2) thresholds in batch mode. CPython's default is (700, 10, 10): a young
#: collection every 700 net allocations. With a large young generation the collector runs a
#: hundred times less often, each run still cheap because most young objects are alive or freed.
BATCH_THRESHOLDS = (50_000, 20, 10)


_batch = False  # inside batch_mode()
_kept: list[object] = []  # see keep_until_exit


def keep_until_exit(*objects: object) -> None:
    """Hold ``objects`` until the command ends, so that they are not freed one by one when the
    function holding them returns: the ``tortie`` executable exits without freeing them at all.
    In a process that runs several commands (tests through click's CliRunner), the next command
    lets go of them (:func:`release_kept`), so at most one command's objects are held."""
    _kept.extend(objects)


def release_kept() -> None:
    """Let go of what :func:`keep_until_exit` holds (called as each command starts)."""
    _kept.clear()


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the previous state is restored after.

    In :func:`batch_mode`, what the block built is then frozen as well (``gc.freeze()``): the
    stages that use this block build the command's data (resources, the IR, each pass's
    program), which lives until the command ends or is freed by reference counting, and
    without the freeze every later collection would walk it again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _batch:
            gc.freeze()
        if was_enabled:
            gc.enable()


def batch_mode() -> Callable[[], None]:
    """Tune the collector for the rest of a batch run (see the module docstring); returns the
    function that undoes it (unfreeze, default thresholds), for processes that go on after."""
    global _batch
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*BATCH_THRESHOLDS)
    _batch = True

    def restore() -> None:
        global _batch
        _batch = False
        gc.set_threshold(*old)
        gc.unfreeze()

    return restore
