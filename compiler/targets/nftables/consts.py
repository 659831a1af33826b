"""Named constant sets: the lists that rules used to carry as anonymous sets.

Why: the kernel binds every *anonymous* set a rule uses by walking the whole transaction
(``__nft_set_trans_bind`` has no early exit), so a script with A anonymous sets and T
transaction entries costs O(A * T) at load time. At 10,000 policies that was 88 % of a
10.9 s ``nft -f``. A *named* set returns from that function at once.

So every list of two or more nets or ports in a rule (``ip saddr { a, b }``,
``th dport { 80, 443 }``) and every merged run of rules (:mod:`.runs`) becomes a named set
declared once in the table and looked up as ``@name``. The name is a hash of the set's type and
elements, so equal lists share one set and the same input always renders the same name. The
elements are part of the rule's meaning (code, not data): they are written in the skeleton too,
and a change of them changes the name, i.e. the rules, so it is never mistaken for a set-only
update.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.targets.nftables.names import short_name


@dataclass(frozen=True, slots=True)
class ConstSet:
    name: str
    type: str
    elements: tuple[str, ...]
    comment: str


class ConstSets:
    """Content-addressed named sets, declared in name order."""

    __slots__ = ("sets",)

    def __init__(self) -> None:
        self.sets: dict[str, ConstSet] = {}

    def ref(self, prefix: str, typ: str, elements: tuple[str, ...], comment: str) -> str:
        """``@name`` of the set with exactly these elements (declared on first use)."""
        name = short_name(prefix, typ + "\n" + ",".join(elements))
        have = self.sets.get(name)
        if have is None:
            self.sets[name] = ConstSet(name, typ, elements, comment)
        elif have.type != typ or have.elements != elements:
            raise ValueError(f"constant set name collision: {name}")
        return "@" + name

    def sorted(self) -> list[ConstSet]:
        return [self.sets[k] for k in sorted(self.sets)]
