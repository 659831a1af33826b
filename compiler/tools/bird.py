"""The one place that runs BIRD 2 (``bird``) and its control client (``birdc``).

Every call is an argv list (never a shell), with a timeout and captured output. Failures raise a
:class:`BirdError` subclass that carries the argv, the exit status and the output:

- :class:`BirdConfigError` — ``bird -p -c`` or ``birdc configure`` refused a configuration; it
  also carries the ``file:line:col`` BIRD pointed at, when it said;
- :class:`BirdNotRunning` — nothing answers on the control socket;
- :class:`BirdError` — anything else (missing binary, timeout, an unexpected reply).

``birdc`` talks to a filesystem Unix socket, which does not depend on the network namespace,
so only starting the daemon needs ``netns`` (``ip netns exec NAME bird ...``): the daemon then
lives in that namespace, and so does everything it learns and programs.

``birdc -v`` prefixes every reply line with BIRD's 4-digit reply code (``0003 Reconfigured``,
``8002 file:3:1 syntax error``); codes 8xxx and 9xxx are errors (BIRD's ``doc/reply_codes``).

>>> bird_argv(["-p", "-c", "/x/bird.conf"], netns="tortie-n1")
['ip', 'netns', 'exec', 'tortie-n1', 'bird', '-p', '-c', '/x/bird.conf']
>>> birdc_argv("/run/t.ctl", ["show", "protocols"])
['birdc', '-v', '-s', '/run/t.ctl', 'show', 'protocols']
>>> parse_reply("0001 BIRD 2.0.12 ready.\\n0002-Reading configuration from /x\\n0003 Reconfigured\\n")
[(1, 'BIRD 2.0.12 ready.'), (2, 'Reading configuration from /x'), (3, 'Reconfigured')]
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.tools._exec import exit_status, in_netns
from compiler.tools._exec import run as run_tool

__all__ = [
    "BIRD",
    "BIRDC",
    "BirdConfigError",
    "BirdError",
    "BirdNotRunning",
    "Protocol",
    "available",
    "bird_argv",
    "birdc",
    "birdc_argv",
    "check_config",
    "configure",
    "is_running",
    "parse_reply",
    "pid_alive",
    "read_pid",
    "show_protocols",
    "start",
    "stop",
]

logger = logging.getLogger(__name__)

BIRD = "bird"
BIRDC = "birdc"
DEFAULT_TIMEOUT = 30.0

_REPLY = re.compile(r"^(\d{4})([ -])(.*)$")
_WHERE = re.compile(r"(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+) (?P<msg>.*)")


class BirdError(RuntimeError):
    """``bird``/``birdc`` failed: non-zero exit, timeout, missing binary or an error reply."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        status = exit_status(returncode)
        super().__init__(f"{' '.join(self.argv)!r} {status}: {output.strip()[-2000:]}")


class BirdConfigError(BirdError):
    """BIRD refused a configuration. ``file``/``line``/``col`` say where, when BIRD said."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        super().__init__(argv, returncode, output)
        m = _WHERE.search(output)
        self.file: str | None = m.group("file") if m else None
        self.line: int | None = int(m.group("line")) if m else None
        self.col: int | None = int(m.group("col")) if m else None
        self.message: str = m.group("msg").strip() if m else output.strip()


class BirdNotRunning(BirdError):
    """No BIRD answers on the control socket."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """One row of ``show protocols``."""

    name: str
    proto: str
    table: str
    state: str
    info: str


def available() -> bool:
    """Whether both ``bird`` and ``birdc`` are on PATH."""
    return shutil.which(BIRD) is not None and shutil.which(BIRDC) is not None


def bird_argv(args: Sequence[str], netns: str | None = None) -> list[str]:
    return in_netns([BIRD, *args], netns)


def birdc_argv(socket: str, args: Sequence[str]) -> list[str]:
    return [BIRDC, "-v", "-s", socket, *args]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    logger.debug("run %s", argv)
    start = time.monotonic()
    proc = run_tool(argv, BirdError, timeout=timeout, check=False)
    logger.debug("%s exited %d in %.3fs", argv[0], proc.returncode, time.monotonic() - start)
    return proc


def parse_reply(text: str) -> list[tuple[int, str]]:
    """``birdc -v`` output as (code, text) pairs; continuation lines (a leading space instead of
    a code) get code 0 and continue the reply above them."""
    out: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _REPLY.match(line)
        if m:
            out.append((int(m.group(1)), m.group(3)))
        elif line.startswith(" ") and out:
            out.append((0, line.strip()))
    return out


def check_config(path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``bird -p -c PATH``: parse and check a configuration without starting anything."""
    argv = bird_argv(["-p", "-c", path])
    proc = _run(argv, timeout)
    if proc.returncode != 0:
        raise BirdConfigError(argv, proc.returncode, proc.stderr or proc.stdout)


def birdc(socket: str, args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run one ``birdc`` command; return its raw ``-v`` output. Error replies raise."""
    argv = birdc_argv(socket, args)
    proc = _run(argv, timeout)
    output = proc.stdout + proc.stderr
    if "Unable to connect to server control socket" in output:
        raise BirdNotRunning(argv, proc.returncode, output)
    codes = [code for code, _ in parse_reply(proc.stdout)]
    if proc.returncode != 0 or any(code >= 8000 for code in codes):
        if any(8000 <= code < 9000 for code in codes) and args[:1] == ["configure"]:
            raise BirdConfigError(argv, proc.returncode, output)
        raise BirdError(argv, proc.returncode, output)
    return proc.stdout


def is_running(socket: str, *, timeout: float = 5.0) -> bool:
    """Whether a BIRD answers ``show status`` on ``socket``."""
    try:
        birdc(socket, ["show", "status"], timeout=timeout)
    except BirdNotRunning:
        return False
    except BirdError as e:
        logger.debug("bird on %s did not answer: %s", socket, e)
        return False
    return True


def configure(socket: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """``birdc configure``: re-read the configuration file BIRD was started with.

    Returns BIRD's final message (``Reconfigured``, ``Reconfiguration in progress`` ...).
    """
    out = birdc(socket, ["configure"], timeout=timeout)
    replies = parse_reply(out)
    return replies[-1][1] if replies else ""


def show_protocols(socket: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Protocol]:
    """``show protocols``, by protocol name."""
    out = birdc(socket, ["show", "protocols"], timeout=timeout)
    protocols: dict[str, Protocol] = {}
    last = 0
    for code, text in parse_reply(out):
        last = code or last  # continuation lines (code 0) belong to the reply above them
        if last != 1002:
            continue
        parts = text.split(None, 5)
        if len(parts) < 4:
            continue
        info = parts[5] if len(parts) > 5 else ""
        protocols[parts[0]] = Protocol(parts[0], parts[1], parts[2], parts[3], info.strip())
    return protocols


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start(
    config: str,
    *,
    socket: str,
    pidfile: str,
    netns: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Start the BIRD daemon (``bird -c CONFIG -s SOCKET -P PIDFILE``) and return its PID.

    BIRD forks into the background; this returns once the control socket answers. With
    ``netns`` the daemon runs inside that network namespace.
    """
    with _suppress_missing():
        os.unlink(pidfile)
    argv = bird_argv(["-c", config, "-s", socket, "-P", pidfile], netns)
    proc = _run(argv, timeout)
    if proc.returncode != 0:
        raise BirdConfigError(argv, proc.returncode, proc.stderr or proc.stdout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        if pid is not None and is_running(socket, timeout=2.0):
            logger.info("started bird (pid %d) with %s", pid, config)
            return pid
        time.sleep(0.05)
    raise BirdError(argv, None, f"bird did not answer on {socket} within {timeout}s")


def stop(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM the BIRD with this PID and wait for it to go; SIGKILL it after ``timeout``."""
    with _suppress_missing():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while pid_alive(pid):
        if time.monotonic() > deadline:
            if killed:
                raise BirdError(["kill", str(pid)], None, f"bird pid {pid} survived SIGKILL")
            logger.warning("bird pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
            with _suppress_missing():
                os.kill(pid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


class _suppress_missing:
    """Ignore "no such file" / "no such process": the thing is already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> bool:
        return exc_type is not None and issubclass(exc_type, FileNotFoundError | ProcessLookupError)
