"""Putting bird.cfg in force (runtime/bgp/reload.py): write, validate, reload only on change, start.

The logic is tested with ``compiler.tools.bird`` replaced by a fake, then end to end with a real
BIRD in a network namespace (kernel marker), stopped by PID afterwards.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler.diagnostics import DiagnosticSink
from compiler.frontend.model import Node, ResourceSet
from compiler.tools import bird
from runtime.bgp import reload
from runtime.bgp.reload import BirdPaths, Outcome, apply_config
from runtime.bgp.render import render_node
from tests.support.netns import Cluster

needs_bird = pytest.mark.skipif(not bird.available(), reason="bird/birdc (bird2) not installed")


class FakeBird:
    """Stands in for compiler.tools.bird: records calls, runs nothing."""

    BirdError = bird.BirdError
    BirdConfigError = bird.BirdConfigError
    DEFAULT_TIMEOUT = 1.0

    def __init__(self) -> None:
        self.running = False
        self.calls: list[str] = []
        self.refuse_check = False
        self.refuse_configure = False

    def is_running(self, socket: str) -> bool:
        return self.running

    def check_config(self, path: str, timeout: float = 0) -> None:
        self.calls.append("check")
        if self.refuse_check:
            raise bird.BirdConfigError(["bird", "-p"], 1, f"{path}:1:1 syntax error")

    def configure(self, socket: str, timeout: float = 0) -> str:
        self.calls.append("configure")
        if self.refuse_configure:
            raise bird.BirdError(["birdc", "configure"], 0, "8002 nope")
        return "Reconfigured"

    def start(self, config: str, **kw: object) -> int:
        self.calls.append("start")
        self.running = True
        return 4242


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBird:
    f = FakeBird()
    monkeypatch.setattr(reload, "bird", f)
    return f


def test_start_unchanged_reload(fake: FakeBird, tmp_path: Path) -> None:
    paths = BirdPaths.in_dir(str(tmp_path))
    assert apply_config("one\n", paths) is Outcome.STARTED
    assert apply_config("one\n", paths) is Outcome.UNCHANGED
    assert apply_config("two\n", paths) is Outcome.RELOADED
    assert fake.calls == ["check", "start", "check", "configure"]
    assert Path(paths.config).read_text() == "two\n"
    fake.running = False  # BIRD died: same config, but it must be started again
    assert apply_config("two\n", paths) is Outcome.STARTED


def test_rejected_config_keeps_the_old_file(fake: FakeBird, tmp_path: Path) -> None:
    paths = BirdPaths.in_dir(str(tmp_path))
    apply_config("good\n", paths)
    fake.refuse_check = True
    with pytest.raises(bird.BirdConfigError):
        apply_config("bad\n", paths)
    assert Path(paths.config).read_text() == "good\n"
    assert fake.calls == ["check", "start", "check"]
    fake.refuse_check, fake.refuse_configure = False, True
    with pytest.raises(bird.BirdError):
        apply_config("refused by the daemon\n", paths)
    assert Path(paths.config).read_text() == "good\n"  # restored: the file matches what runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.cfg"]


# -- a real BIRD --------------------------------------------------------------------------------------


def config(extra_peer: bool = False) -> str:
    nodes = [
        Node("a", ipaddress.ip_interface("192.168.50.1/24")),
        Node("b", ipaddress.ip_interface("192.168.50.2/24")),
    ]
    if extra_peer:
        nodes.append(Node("c", ipaddress.ip_interface("192.168.50.3/24")))
    text = render_node(ResourceSet(nodes=tuple(nodes)), "a", [], DiagnosticSink())
    assert text is not None
    return text


@pytest.fixture
def bird_dir(tmp_path: Path) -> Iterator[tuple[str, BirdPaths]]:
    paths = BirdPaths.in_dir(str(tmp_path))
    with Cluster() as cluster:
        node = cluster.add_node("a")
        node.ip_batch(
            [
                "link add eth0 type veth peer name eth1",
                "addr add 192.168.50.1/24 dev eth0",
                "link set eth0 up",
                "link set eth1 up",
            ]
        )
        try:
            yield node.name, paths
        finally:
            pid = bird.read_pid(paths.pidfile)
            if pid is not None:
                bird.stop(pid)


@needs_bird
@pytest.mark.kernel
def test_real_bird_start_reload_reject(bird_dir: tuple[str, BirdPaths]) -> None:
    netns, paths = bird_dir
    assert apply_config(config(), paths, netns=netns) is Outcome.STARTED
    pid = bird.read_pid(paths.pidfile)
    assert pid is not None and bird.pid_alive(pid)
    assert set(bird.show_protocols(paths.socket)) >= {"Mesh_192_168_50_2", "kernel_v4", "static_v4"}

    assert apply_config(config(), paths, netns=netns) is Outcome.UNCHANGED
    assert apply_config(config(extra_peer=True), paths, netns=netns) is Outcome.RELOADED
    assert "Mesh_192_168_50_3" in bird.show_protocols(paths.socket)
    assert bird.read_pid(paths.pidfile) == pid  # reloaded in place, not restarted

    before = Path(paths.config).read_text()
    with pytest.raises(bird.BirdConfigError) as err:
        apply_config(before + "protocol bogus {\n", paths, netns=netns)
    assert err.value.line is not None
    assert Path(paths.config).read_text() == before
    assert "Mesh_192_168_50_3" in bird.show_protocols(paths.socket)

    bird.stop(pid)
    assert not bird.is_running(paths.socket)
    assert apply_config(before, paths, netns=netns) is Outcome.STARTED
