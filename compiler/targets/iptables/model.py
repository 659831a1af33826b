"""The iptables rule model: conditions, rules, chains and tables, printed as restore input.

A :class:`Rule` is a conjunction of :class:`Cond` (each one iptables option group, e.g.
``-s 10.0.0.0/8`` or ``-m set --match-set tt4s:… src``) plus a target. Conditions are printed
in a fixed order — entry fields (``-s -d -i -o -p``) first, as ``iptables-save`` prints them,
then the comment, then matches — so ``-p`` always precedes the protocol modules that need it
(``-m tcp``, ``-m multiport``, ``-m icmp``) and the text of a rule does not depend on the order
conditions were collected in.

>>> r = Rule((Cond(RANK_PORTS, ("-m", "tcp", "--dport", "80")), Cond(RANK_PROTO, ("-p", "tcp"))),
...          ("-j", "DROP"), comment="np/a/db ingress rule 0")
>>> r.text("tt-pi-np/a/db")
'-A tt-pi-np/a/db -p tcp -m comment --comment "np/a/db ingress rule 0" -m tcp --dport 80 -j DROP'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.targets.iptables.names import CHAIN_PREFIX, HOOK_COMMENT, quoted

# Print order of conditions. Entry fields first (iptables-save order), then matches.
RANK_SRC = 0
RANK_DST = 1
RANK_IN = 2
RANK_OUT = 3
RANK_PROTO = 4
RANK_MARK = 10
RANK_PORTS = 12  # protocol modules: tcp/udp/sctp/multiport/icmp/icmp6
RANK_RANGE = 13
RANK_SET = 14
RANK_CT = 15
RANK_LIMIT = 16
_ENTRY = RANK_PROTO


@dataclass(frozen=True, slots=True, order=True)
class Cond:
    rank: int
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    conds: tuple[Cond, ...]
    target: tuple[str, ...]
    comment: str = ""
    # The printed arguments, computed once (rules are immutable, and one rule object is often
    # printed in many chains: the same policy jump in every endpoint's chain).
    _body: str | None = field(default=None, init=False, compare=False, hash=False, repr=False)

    def args(self) -> list[str]:
        conds = sorted(set(self.conds))
        out = [a for c in conds if c.rank <= _ENTRY for a in c.args]
        if self.comment:
            out += ["-m", "comment", "--comment", quoted(self.comment)]
        out += [a for c in conds if c.rank > _ENTRY for a in c.args]
        return out + list(self.target)

    def body(self) -> str:
        """``" ".join(self.args())``, memoised."""
        body = self._body
        if body is None:
            body = " ".join(self.args())
            object.__setattr__(self, "_body", body)
        return body

    def text(self, chain: str, verb: str = "-A") -> str:
        return f"{verb} {chain} {self.body()}"

    def set_names(self) -> list[str]:
        """The ipsets this rule matches on (``--match-set NAME``), from its conditions only:
        a comment that happens to read ``--match-set x`` names no set."""
        out = []
        for c in self.conds:
            if c.rank == RANK_SET and "--match-set" in c.args:
                out.append(c.args[c.args.index("--match-set") + 1])
        return out

    @property
    def jumps_to(self) -> str | None:
        """The chain this rule jumps or goes to (``-j``/``-g`` to a Tortie chain), if any."""
        if (
            len(self.target) >= 2
            and self.target[0] in ("-j", "-g")
            and self.target[1].startswith(CHAIN_PREFIX)
        ):
            return self.target[1]
        return None


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    comment: str = ""  # one "# …" line above the chain's rules in the file


@dataclass(frozen=True, slots=True)
class Hook:
    """A jump from a built-in chain into Tortie's top-level chain (``-I`` or ``-A``)."""

    builtin: str
    chain: str
    insert: bool = True

    def text(self) -> str:
        verb = f"-I {self.builtin} 1" if self.insert else f"-A {self.builtin}"
        return f"{verb} -m comment --comment {quoted(HOOK_COMMENT)} -j {self.chain}"

    def saved_form(self) -> str:
        """How ``iptables-save`` prints this rule (to find it among the kernel's rules)."""
        return f"-A {self.builtin} -m comment --comment {quoted(HOOK_COMMENT)} -j {self.chain}"


@dataclass(frozen=True, slots=True)
class Table:
    """One ``*table`` … ``COMMIT`` section: Tortie's chains (top-level first) and its hooks."""

    name: str
    chains: tuple[Chain, ...]
    hooks: tuple[Hook, ...]

    def chain_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.chains)
