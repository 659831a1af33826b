"""Put a rendered ``bird.cfg`` in force: write it atomically, validate it, reload or start BIRD.

:func:`apply_config` is idempotent and never leaves BIRD on a configuration it has not accepted:

1. If the file already holds exactly this text and BIRD answers on its control socket, nothing
   happens (:attr:`Outcome.UNCHANGED`): no write, no ``birdc configure``, no session reset.
2. Otherwise the new text goes to a temporary file next to the config, ``bird -p -c`` checks it,
   and only then is it renamed over the old file. A configuration BIRD rejects raises
   :class:`~compiler.tools.bird.BirdConfigError` and leaves the old file in place.
3. A running BIRD is told ``configure`` (:attr:`Outcome.RELOADED`); if it refuses, the previous
   file is restored before the error propagates, so the file on disk always matches what runs.
4. When no BIRD answers, one is started on the file (:attr:`Outcome.STARTED`), inside
   ``netns`` when given; its PID is in ``paths.pidfile``.

Only :mod:`compiler.tools.bird` runs ``bird``/``birdc``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from dataclasses import dataclass

from compiler.tools import bird
from runtime.ipam_state import write_atomic

__all__ = ["BirdPaths", "Outcome", "apply_config"]

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    UNCHANGED = "unchanged"
    RELOADED = "reloaded"
    STARTED = "started"


@dataclass(frozen=True, slots=True)
class BirdPaths:
    """Where one BIRD keeps its configuration, control socket and PID file."""

    config: str
    socket: str
    pidfile: str

    @classmethod
    def in_dir(cls, directory: str, name: str = "bird") -> BirdPaths:
        return cls(
            os.path.join(directory, f"{name}.cfg"),
            os.path.join(directory, f"{name}.ctl"),
            os.path.join(directory, f"{name}.pid"),
        )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def apply_config(
    text: str,
    paths: BirdPaths,
    *,
    netns: str | None = None,
    timeout: float = bird.DEFAULT_TIMEOUT,
) -> Outcome:
    """Make BIRD run ``text`` (see the module docstring); return what had to be done."""
    previous = _read(paths.config)
    running = bird.is_running(paths.socket)
    if previous == text and running:
        logger.debug("bird config %s unchanged", paths.config)
        return Outcome.UNCHANGED
    if previous != text:
        write_atomic(
            paths.config, text, validate=lambda tmp: bird.check_config(tmp, timeout=timeout)
        )
        logger.info("wrote bird config %s", paths.config)
    if running:
        try:
            reply = bird.configure(paths.socket, timeout=timeout)
        except bird.BirdError:
            if previous is not None and previous != text:
                write_atomic(paths.config, previous)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(paths.config)
            raise
        logger.info("bird reloaded %s: %s", paths.config, reply)
        return Outcome.RELOADED
    pid = bird.start(
        paths.config, socket=paths.socket, pidfile=paths.pidfile, netns=netns, timeout=timeout
    )
    logger.info("started bird pid %d on %s", pid, paths.config)
    return Outcome.STARTED
