"""``tortie diff`` on the command line: modes, outputs and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from tests.diff.cluster import CLUSTER
from tests.diff.test_cases import API, DB, FWD, FWD_IN, HEP

WIDE = API.replace("port: 8080}", "port: 8080, endPort: 8090}")


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(main, list(args))


def tree(root: Path, *policies: str, cluster: str = CLUSTER) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.yaml").write_text(cluster)
    (root / "policy.yaml").write_text("\n---\n".join(policies) if policies else "")
    return str(root)


def test_exit_0_when_nothing_changes(tmp_path: Path) -> None:
    r = invoke("diff", "--base", tree(tmp_path / "a", API), "--head", tree(tmp_path / "b", API))
    assert r.exit_code == 0, r.output
    assert r.stdout == "tortie diff: no change in connectivity\n"


def test_exit_3_and_text_when_something_changes(tmp_path: Path) -> None:
    r = invoke("diff", "--base", tree(tmp_path / "a", API), "--head", tree(tmp_path / "b", WIDE))
    assert r.exit_code == 3, r.output
    assert r.stdout.splitlines()[:7] == [
        "tortie diff: 1 group of flows newly allowed, 0 newly denied",
        "",
        "by what decides now (groups, endpoint pairs):",
        "  allowed: knp/backend/api-ingress rule 1 at "
        + str(tmp_path / "b" / "policy.yaml")
        + ":7 — IPv4: TCP 8081-8090 (1, 4)",
        "",
        "[1] ALLOWED now: frontend -> backend",
        "    from     frontend: {app=web} 2 pods: web-0, web-1",
    ]
    assert "services IPv4: TCP 8081-8090" in r.stdout
    assert "ingress: knp/backend/api-ingress rule 1 (Allow) at " in r.stdout


def test_json(tmp_path: Path) -> None:
    r = invoke(
        "diff",
        "--base",
        tree(tmp_path / "a", API),
        "--head",
        tree(tmp_path / "b", WIDE),
        "-o",
        "json",
    )
    assert r.exit_code == 3
    data = json.loads(r.stdout)
    assert data["changed"] is True
    assert data["summary"] == {
        "groups": 1,
        "newly_allowed": 1,
        "newly_denied": 0,
        "forwarded_groups": 0,
        "forwarded_newly_allowed": 0,
        "endpoints_added": 0,
        "endpoints_removed": 0,
    }
    assert data["forwarded"] == []
    (g,) = data["groups"]
    assert g["change"] == "allowed"
    assert g["from"]["names"] == ["frontend/web-0", "frontend/web-1"]
    assert g["to"]["names"] == ["backend/api-0", "backend/api-1"]
    assert g["services"]["ipv4"]["ports"] == [
        {"protocol": "TCP", "source_ports": [1, 65535], "ports": [[8081, 8090]]}
    ]
    assert g["before"]["allowed"] is False and g["after"]["allowed"] is True
    step = [s for s in g["after"]["decided_by"] if s["reason"] == "rule"][0]
    assert (step["policy"], step["rule"], step["line"]) == ("knp/backend/api-ingress", 1, 7)
    assert step["file"].endswith("policy.yaml")


def test_input_errors_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.yaml").write_text(
        "kind: GlobalNetworkPolicy\napiVersion: projectcalico.org/v3\nmetadata: {name: x}\nspec: {selector: 'a ='}\n"
    )
    r = invoke("diff", "--base", tree(tmp_path / "a", API), "--head", str(bad))
    assert r.exit_code == 1
    assert "error[" in r.stderr
    r = invoke("diff", "--base", str(tmp_path / "missing"), "--head", tree(tmp_path / "b", API))
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--base", "a"),
        ("--base", "a", "--head", "b", "--staged", "-f", "c"),
        ("--staged",),
        ("--head-rev", "HEAD"),
        ("--base", "a", "--head", "b", "-f", "c"),
        ("--base", "a", "--head", "b", "--artifacts"),
        ("--base", "a", "--head", "b", "--node", "n"),
        ("--base", "a", "--head", "b", "-o", "yaml"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert invoke("diff", *args).exit_code == 2


STAGED = """\
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: db-lockdown, namespace: backend}
spec:
  stagedAction: Set
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api'}
    destination: {ports: [5432]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: api-ingress, namespace: backend}
spec:
  stagedAction: Delete
  podSelector: {}
"""


def test_staged(tmp_path: Path) -> None:
    r = invoke("diff", "--staged", "-f", tree(tmp_path / "a", API, STAGED), "-o", "json")
    assert r.exit_code == 3, r.output
    data = json.loads(r.stdout)
    assert data["staged"] == [
        {
            "staged": "sknp/backend/api-ingress",
            "action": "Delete",
            "enforced": "knp/backend/api-ingress",
            "effect": "deletes",
        },
        {
            "staged": "snp/backend/db-lockdown",
            "action": "Set",
            "enforced": "np/backend/db-lockdown",
            "effect": "creates",
        },
    ]
    changes = {(g["change"], g["to"]["bucket"], tuple(g["to"]["names"])) for g in data["groups"]}
    # api is no longer isolated (its policy is deleted); db becomes isolated but for api:5432.
    assert ("allowed", "backend", ("backend/api-0", "backend/api-1")) in changes
    assert ("denied", "backend", ("backend/db-0",)) in changes
    after = [g["after"] for g in data["groups"] if g["to"]["names"] == ["backend/db-0"]]
    assert all(not a["allowed"] for a in after)
    # Nothing staged: nothing changes.
    r = invoke("diff", "--staged", "-f", tree(tmp_path / "b", API))
    assert r.exit_code == 0


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "cluster").mkdir(parents=True)
    (repo / "cluster" / "all.yaml").write_text(CLUSTER)
    (repo / "policies").mkdir()
    (repo / "policies" / "api.yaml").write_text(API)
    (repo / "README.md").write_text("not read\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    (repo / "policies" / "api.yaml").write_text(WIDE)
    (repo / "policies" / "db.yaml").write_text(DB % "")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "head")
    (repo / "policies" / "db.yaml").unlink()  # the working tree differs from HEAD
    monkeypatch.chdir(repo / "policies")  # paths are relative to the repository root anyway
    r = invoke(
        "diff",
        "--base-rev",
        "HEAD~1",
        "--head-rev",
        "HEAD",
        "-f",
        "cluster",
        "-f",
        "policies",
        "-o",
        "json",
    )
    assert r.exit_code == 3, r.output
    data = json.loads(r.stdout)
    files = {
        s["file"]
        for g in data["groups"]
        for d in ("before", "after")
        for s in g[d]["decided_by"]
        if s["file"]
    }
    assert "policies/api.yaml" in files  # spans are repository paths, not temporary ones
    # db.yaml isolates db: what its rule allows was allowed before, the rest is now denied.
    assert any(
        g["to"]["names"] == ["backend/db-0"] and not g["after"]["allowed"] for g in data["groups"]
    )
    # HEAD~1 against the working tree: only the widened port.
    r = invoke("diff", "--base-rev", "HEAD~1", "-f", "cluster", "-f", "policies")
    assert r.exit_code == 3, r.output
    assert "TCP 8081-8090" in r.stdout and "db-ingress" not in r.stdout
    assert (
        invoke(
            "diff", "--base-rev", "HEAD", "--head-rev", "HEAD", "-f", "cluster", "-f", "policies"
        ).exit_code
        == 0
    )
    bad = invoke("diff", "--base-rev", "no-such-rev", "--head-rev", "HEAD", "-f", "policies")
    assert bad.exit_code == 1 and "no-such-rev" in bad.stderr
    # A revision that looks like an option, and a path outside the repository, are errors.
    opt = invoke("diff", "--base-rev=--output=/tmp/x", "--head-rev", "HEAD", "-f", "policies")
    assert opt.exit_code == 1 and "not a revision name" in opt.stderr
    outside = invoke("diff", "--base-rev", "HEAD", "--head-rev", "HEAD", "-f", str(tmp_path))
    assert outside.exit_code == 1 and "outside the git repository" in outside.stderr
    inside = invoke("diff", "--base-rev", "HEAD~1", "--head-rev", "HEAD", "-f", str(repo))
    assert inside.exit_code == 3, inside.output


def test_artifacts(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a", API), tree(tmp_path / "b", WIDE)
    r = invoke(
        "diff",
        "--base",
        a,
        "--head",
        b,
        "--artifacts",
        "--node",
        "node1",
        "--target",
        "nftables",
        "-o",
        "json",
    )
    assert r.exit_code == 3, r.output
    art = json.loads(r.stdout)["artifacts"]
    assert (art["target"], art["node"], art["only_elements"]) == ("nftables", "node1", False)
    changed = [o for o in art["objects"] if o["change"] == "changed"]
    assert any("8080-8090" in line for o in changed for line in o["body_added"])
    # A namespace label change moves endpoints between sets: only set elements change.
    relabelled = tree(tmp_path / "c", API, cluster=CLUSTER.replace("{team: misc}", "{team: web}"))
    r = invoke(
        "diff",
        "--base",
        a,
        "--head",
        relabelled,
        "--artifacts",
        "--node",
        "node1",
        "--target",
        "nftables",
    )
    assert r.exit_code == 3, r.output
    assert "only set elements change: no chain or rule is rewritten" in r.stdout
    assert "elements added: 10.0.3.1" in r.stdout
    r = invoke(
        "diff", "--base", a, "--head", a, "--artifacts", "--node", "node1", "--target", "iptables"
    )
    assert r.exit_code == 0
    assert "artifact change for node node1 (iptables): none" in r.stdout
    r = invoke(
        "diff", "--base", a, "--head", b, "--artifacts", "--node", "nope", "--target", "iptables"
    )
    assert r.exit_code == 1 and "unknown node" in r.stderr


def test_forwarded_changes_in_every_format(tmp_path: Path) -> None:
    """Forwarded groups come after the ordinary ones, numbered F1, F2, ... per host endpoint."""
    base = tree(tmp_path / "a", HEP % "gw")
    head = tree(tmp_path / "b", HEP % "gw", FWD % "true")
    r = invoke("diff", "--base", base, "--head", head)
    assert r.exit_code == 3, r.output
    assert r.stdout.splitlines()[0] == (
        "tortie diff: 0 groups of flows newly allowed, 4 newly denied; forwarded through host "
        "endpoints: 0 groups newly allowed, 8 newly denied"
    )
    assert "[F1] DENIED now: backend -> (external) via node1-eth0" in r.stdout
    assert "after    denied by egress: [applyOnForward] gnp/fwd rule 1 (Deny) at " in r.stdout
    r = invoke("diff", "--base", base, "--head", head, "-o", "json")
    assert r.exit_code == 3
    data = json.loads(r.stdout)
    assert data["summary"]["forwarded_groups"] == 8
    f = data["forwarded"][0]
    assert (f["via"], f["change"], f["from"]["names"]) == (
        "node1-eth0",
        "denied",
        ["backend/api-0"],
    )
    assert [s["hook"] for s in f["after"]["decided_by"]] == ["forward"]
    r = invoke("diff", "--base", base, "--head", head, "-o", "markdown", "--max-groups", "2")
    assert r.exit_code == 3
    assert (
        "| F2 | **denied** | node1-eth0 | backend: {app=api} api-0 | backend: api-0, api-1, db-0 |"
        in r.stdout
    )
    assert "_6 more forwarded groups not shown" in r.stdout


def test_forwarded_only_change_exits_3(tmp_path: Path) -> None:
    """No ordinary flow changed, only forwarded ones: still a change (exit 3)."""
    base = tree(tmp_path / "a", HEP % "gw")
    head = tree(tmp_path / "b", HEP % "gw", FWD_IN)
    r = invoke("diff", "--base", base, "--head", head)
    assert r.exit_code == 3, r.output
    assert r.stdout.splitlines()[0] == (
        "tortie diff: 0 groups of flows newly allowed, 0 newly denied; forwarded through host "
        "endpoints: 0 groups newly allowed, 2 newly denied"
    )
