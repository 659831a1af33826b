"""The input contract targets rely on (``compiler/targets/base.py``), as an executable check."""

from __future__ import annotations

from compiler.ir.nodes import DIRECTIONS, Program, Side


def _side_sets(side: Side) -> list[str]:
    out = list(side.sets) + list(side.not_sets)
    for pm in (side.ports, side.not_ports):
        if pm is not None:
            out.extend(pm.named_sets)
    return out


def check_contract(program: Program) -> None:
    """Assert the post-pipeline contract; the message says which rule or set breaks it."""
    for sid, s in program.sets.items():
        assert s.resolved, f"set {sid} is not resolved"
        assert s.family in (4, 6), f"set {sid} has no family"
        if s.members is not None:
            assert all(n.version == s.family for n in s.members), f"set {sid} mixes families"
    owners = [(pid, p.rules) for pid, p in program.policies.items()]
    owners += [(name, p.rules) for name, p in program.profiles.items()]
    used = set()
    for owner, rules_of in owners:
        for d in DIRECTIONS:
            for r in rules_of(d):
                fam = r.match.ip_version
                assert fam in (4, 6), f"{owner} {d} rule {r.index}: no ip_version"
                for side in (r.match.src, r.match.dst):
                    if side.nets is not None:
                        assert side.nets, f"{owner} {d} rule {r.index}: empty nets survived"
                    for n in (side.nets or ()) + side.not_nets:
                        assert n.version == fam, f"{owner} {d} rule {r.index}: {n} in v{fam} rule"
                    for sid in _side_sets(side):
                        assert sid in program.sets, f"{owner} {d} rule {r.index}: no set {sid}"
                        assert program.sets[sid].family == fam, (
                            f"{owner} {d} rule {r.index}: set {sid} of the other family"
                        )
                        used.add(sid)
    unused = set(program.sets) - used
    assert not unused, f"sets nothing refers to: {sorted(unused)}"
