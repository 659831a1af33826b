"""``tortie check`` and ``tortie select``: output, exit codes, and no tracebacks for any input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler.cli.check as check_module
from compiler.cli import main
from compiler.frontend.labels import effective_labels
from compiler.frontend.model import Endpoint, Profile

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo")

BAD = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: app == 'web' &&
  ingress:
  - action: Reject
"""


def invoke(*args: str, stdin: str | None = None):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(main, list(args), input=stdin)


def test_check_the_demo() -> None:
    r = invoke("check", "-f", DEMO)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout == (
        "ok: 26 resources (FelixConfiguration 1, GlobalNetworkPolicy 3, GlobalNetworkSet 1, HostEndpoint 1, "
        "IPPool 2, Namespace 3, NetworkPolicy 1, NetworkPolicy.networking.k8s.io 3, Node 2, Pod 6, "
        "ServiceAccount 2, Tier 1), 6 endpoints, 1 skipped, 0 warnings\n"
    )


def test_check_reports_errors_with_source_and_caret() -> None:
    r = invoke("check", "-f", "-", stdin=BAD)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == (
        "<stdin>:5:28: error[E030]: invalid selector: unexpected end of selector; expected an expression\n"
        "    selector: app == 'web' &&\n"
        "                             ^\n"
        "<stdin>:7:13: error[E060]: there is no Reject action: use Deny (FelixConfiguration "
        "iptablesFilterDenyAction / nftablesFilterDenyAction: Reject makes every deny a reject)\n"
        "    - action: Reject\n"
        "              ^\n"
        "tortie: 2 errors, 0 warnings\n"
    )


def test_check_json() -> None:
    r = invoke("check", "-f", "-", "-o", "json", stdin=BAD)
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert (data["ok"], data["errors"], data["warnings"]) == (False, 2, 0)
    assert data["diagnostics"][0] == {
        "file": "<stdin>",
        "line": 5,
        "col": 28,
        "level": "error",
        "code": "E030",
        "message": "invalid selector: unexpected end of selector; expected an expression",
        "notes": [],
    }
    ok = json.loads(invoke("check", "-f", DEMO, "-o", "json").stdout)
    assert (
        ok["ok"]
        and ok["endpoints"] == 6
        and ok["kinds"]["Pod"] == 6
        and ok["skipped"] == {"Pod: hostNetwork": 1}
    )


def test_warnings_do_not_fail_check(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\n")
    r = invoke("check", "-f", str(f))
    assert r.exit_code == 0
    assert "warning[W005]" in r.stderr
    assert r.stdout.endswith("1 warning\n")


def test_usage_errors_exit_2() -> None:
    assert invoke("check").exit_code == 2  # -f is required
    assert invoke("check", "-f", DEMO, "-o", "yaml").exit_code == 2
    assert invoke("select", "-f", DEMO).exit_code == 2  # no selector
    assert invoke("frobnicate").exit_code == 2


def test_missing_input_exits_1() -> None:
    r = invoke("check", "-f", "/nonexistent/policy.yaml")
    assert r.exit_code == 1
    assert r.stderr.startswith(
        "/nonexistent/policy.yaml: error[E002]: cannot read /nonexistent/policy.yaml"
    )


def test_select_text_and_json() -> None:
    r = invoke("select", "-f", DEMO, 'pcns.team == "shop"')
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [
        "shop-backend/api-5c6b9d7f4-lm2np",
        "shop-backend/postgres-0",
        "shop-frontend/web-7d9f8b6c5d-2xkqp",
        "shop-frontend/web-7d9f8b6c5d-q8wzt",
    ]
    r = invoke("select", "-f", DEMO, "-o", "json", 'has(host-endpoint) || pcsa.role == "database"')
    assert json.loads(r.stdout) == ["node1-eth0", "shop-backend/postgres-0"]
    assert (
        json.loads(invoke("select", "-f", DEMO, "-o", "json", "blocklist == 'true'").stdout) == []
    )  # sets are not endpoints


def test_select_invalid_selector_points_into_the_argument() -> None:
    r = invoke("select", "-f", DEMO, 'app == "web" && (tier == "x"')
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == (
        "<selector>:1:29: error[E030]: invalid selector: unexpected end of selector; expected ')'\n"
        '  app == "web" && (tier == "x"\n'
        "                              ^\n"
    )


def test_select_with_bad_input_exits_1() -> None:
    r = invoke("select", "-f", "-", "all()", stdin=BAD)
    assert r.exit_code == 1 and r.stdout == ""
    assert "error[E030]" in r.stderr


def test_help_has_examples_and_version() -> None:
    for cmd in (["--help"], ["check", "--help"], ["select", "--help"]):
        r = invoke(*cmd)
        assert r.exit_code == 0 and "Example:" in r.stdout
    assert invoke("--version").stdout.startswith("tortie, version ")


def test_internal_errors_are_one_line_and_exit_70(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(check_module, "load_inputs", boom)
    monkeypatch.delenv("TORTIE_DEBUG", raising=False)
    r = invoke("check", "-f", DEMO)
    assert r.exit_code == 70
    assert (
        r.stderr
        == "tortie: internal error: RuntimeError: kaput (set TORTIE_DEBUG=1 for a traceback)\n"
    )


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["check", "select"]))
def test_no_input_makes_the_cli_crash(text: str, command: str) -> None:
    # "--": a selector may start with "-" (a label key can), which click would read as an option.
    selector = ["select", "-f", "-", "--", text[:30] or "all()"]
    args = ["check", "-f", "-"] if command == "check" else selector
    r = invoke(*args, stdin=text)
    assert r.exit_code in (0, 1), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


@pytest.mark.skipif(
    shutil.which("tortie") is None, reason="the tortie entry point is not installed"
)
def test_entry_point() -> None:
    r = subprocess.run(
        ["tortie", "select", "-f", DEMO, "app == 'postgres'"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (0, "shop-backend/postgres-0\n")


def test_effective_labels_own_wins_then_first_profile() -> None:
    ep = Endpoint(
        "WorkloadEndpoint",
        "w",
        "ns",
        "node1",
        "cali0",
        labels=(("app", "web"), ("projectcalico.org/namespace", "ns")),
        profiles=("kns.ns", "ksa.ns.sa", "missing"),
    )
    profiles = {
        "kns.ns": Profile("kns.ns", (("app", "db"), ("pcns.team", "a"))),
        "ksa.ns.sa": Profile("ksa.ns.sa", (("pcns.team", "b"), ("pcsa.role", "x"))),
    }
    assert effective_labels(ep, profiles) == {
        "app": "web",
        "projectcalico.org/namespace": "ns",
        "pcns.team": "a",
        "pcsa.role": "x",
    }
