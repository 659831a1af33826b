"""Policy, profile and endpoint chains, for one IP family.

* One chain per **policy and direction**, shared by every endpoint that uses it:
  ``tt-pi-<policy id>`` (ingress) / ``tt-po-<policy id>`` (egress). It lives in the table of the
  policy's flavour: filter (normal and applyOnForward policy), raw (doNotTrack: an untracked
  policy sees every packet) or mangle (preDNAT). Per rule, in the user's order::

      [match] -j MARK --set-xmark A/A   +  -m mark --mark A/A -j RETURN      Allow
      [match] -j MARK --set-xmark P/P   +  -m mark --mark P/P -j RETURN      Pass
      [match] -j DROP | REJECT                                                Deny
      [match] -j LOG --log-prefix "…: " --log-level 5                         Log

  ``REJECT`` (``iptablesFilterDenyAction: Reject``) is only valid in the filter table; denies in
  raw and mangle stay ``DROP``. A trailing ``RETURN`` is left out (the chain ends anyway).
* One chain per **profile and direction**: ``tt-pri-<name>`` / ``tt-pro-<name>``. ``Pass`` in a
  profile is a plain ``RETURN``: on to the next profile (the evaluator's choice, which is
  Calico's iptables behaviour).
* One chain per **endpoint, hook and direction** running the endpoint's tier plans: jump to each
  policy chain (guarded by "pass clear" once a policy of the tier can pass); ``RETURN`` once the
  accept bit is set; the end-of-tier deny where the hook has one; then the profiles and the "no
  profile matched" deny. See :mod:`.marks` for the bits and :mod:`.tables` for the chains that
  reach these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.ir import nodes as ir
from compiler.targets.common import parse_rate, policy_log_prefix, profile_log_prefix, span_text
from compiler.targets.iptables.lower import Context, lower_rule
from compiler.targets.iptables.marks import Marks
from compiler.targets.iptables.model import RANK_CT, RANK_LIMIT, RANK_MARK, Chain, Cond, Rule
from compiler.targets.iptables.names import LOG_PREFIX_MAX, limited, quoted

FILTER = "filter"
RAW = "raw"
MANGLE = "mangle"

# Flavours of policy chains: which table they live in.
NORMAL = "normal"
PREDNAT = "prednat"
UNTRACKED = "untracked"
TABLE_OF = {NORMAL: FILTER, PREDNAT: MANGLE, UNTRACKED: RAW}

_LIMIT_UNITS = {"second": "sec", "minute": "min", "hour": "hour", "day": "day"}
_PER_SECOND = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
LIMIT_MAX_PER_SECOND = 10000  # xt_limit: XT_LIMIT_SCALE ("Rate too fast")


def log_limit(rate: str | None, burst: int) -> tuple[Cond, ...]:
    """``-m limit`` for Log rules when ``logActionRateLimit`` is set, well formed and not faster
    than xt_limit allows; printed the way iptables-save prints it."""
    parsed = parse_rate(rate)
    if parsed is None or parsed[0] < 1 or parsed[0] > LIMIT_MAX_PER_SECOND * _PER_SECOND[parsed[1]]:
        return ()
    n, unit = parsed
    args = ["-m", "limit", "--limit", f"{n}/{_LIMIT_UNITS[unit]}"]
    if burst != 5:
        args += ["--limit-burst", str(max(burst, 1))]
    return (Cond(RANK_LIMIT, tuple(args)),)


def log_target(prefix: str) -> tuple[str, ...]:
    """``LOG`` with ``<prefix>: `` cut so the whole prefix fits xt_LOG's 29 characters."""
    text = prefix[: LOG_PREFIX_MAX - 2] + ": "
    return ("-j", "LOG", "--log-prefix", quoted(text, LOG_PREFIX_MAX), "--log-level", "5")


def ct_rules(disable_invalid: bool) -> list[Rule]:
    """Only the first packet of a flow meets policy (SEMANTICS.md §Evaluation order step 0)."""
    rules = [
        Rule(
            (Cond(RANK_CT, ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")),),
            ("-j", "ACCEPT"),
            "conntrack: established flow",
        )
    ]
    if not disable_invalid:
        rules.append(
            Rule(
                (Cond(RANK_CT, ("-m", "conntrack", "--ctstate", "INVALID")),),
                ("-j", "DROP"),
                "conntrack: invalid",
            )
        )
    return rules


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """What an endpoint chain needs to know about a policy/profile chain it jumps to."""

    name: str
    can_allow: bool
    can_pass: bool


@dataclass
class ChainBuilder:
    """Builds policy/profile chains on demand (each once per table) and the tier/profile part
    of endpoint chains. ``tables`` collects every chain by table name."""

    program: ir.Program
    family: int
    marks: Marks
    set_names: dict[str, str]
    tables: dict[str, dict[str, Chain]] = field(
        default_factory=lambda: {RAW: {}, MANGLE: {}, FILTER: {}}
    )
    _infos: dict[tuple[str, str, str], ChainInfo] = field(default_factory=dict)
    # (policy, direction, flavour, pass pending) -> its jump rules in an endpoint chain, and
    # whether it can pass: the same rules (the same objects, so printed once) for every endpoint.
    _jumps: dict[tuple[str, str, str, bool], tuple[tuple[Rule, ...], bool]] = field(
        default_factory=dict
    )

    @property
    def ctx(self) -> Context:
        return Context(self.family, self.set_names, self.marks)

    def add(self, table: str, chain: Chain) -> str:
        if chain.name in self.tables[table]:
            raise ValueError(f"duplicate chain {chain.name} in table {table}")
        self.tables[table][chain.name] = chain
        return chain.name

    # -- verdicts -----------------------------------------------------------------------------

    def deny(self, table: str) -> tuple[str, ...]:
        if table == FILTER and self.program.felix.deny_action == "Reject":
            kind = "icmp-port-unreachable" if self.family == 4 else "icmp6-port-unreachable"
            return ("-j", "REJECT", "--reject-with", kind)
        return ("-j", "DROP")

    def _rules_of(
        self,
        rules: tuple[ir.Rule, ...],
        label: str,
        target_of: Callable[[ir.Rule], tuple[tuple[str, ...], tuple[Cond, ...], int]],
    ) -> list[Rule]:
        """Lowered rules of one policy/profile direction (this family's rules only).

        ``target_of`` gives (target, extra conditions, bit to RETURN on or 0)."""
        out: list[Rule] = []
        mine = [r for r in rules if r.match.ip_version in (None, self.family)]
        for i, rule in enumerate(mine):
            where = span_text(rule.origin)
            comment = f"{label} rule {rule.index}" + (f" {where}" if where else "")
            target, extra, return_bit = target_of(rule)
            lowered = lower_rule(rule.match, self.ctx, target, comment, extra)
            out.extend(lowered)
            if lowered and return_bit and i < len(mine) - 1:
                out.append(
                    Rule(
                        (Cond(RANK_MARK, self.marks.match(return_bit)),), ("-j", "RETURN"), comment
                    )
                )
        return out

    def policy_chain(self, pid: str, direction: str, flavour: str) -> ChainInfo:
        key = (pid, direction, flavour)
        if key in self._infos:
            return self._infos[key]
        policy = self.program.policies[pid]
        table = TABLE_OF[flavour]
        prefix = "tt-pi-" if direction == ir.INGRESS else "tt-po-"
        name = limited(prefix, pid)
        felix = self.program.felix
        prefix_text = policy_log_prefix(felix.log_prefix, policy)
        m = self.marks

        def target_of(rule: ir.Rule) -> tuple[tuple[str, ...], tuple[Cond, ...], int]:
            if rule.action == ir.ALLOW:
                return m.set(m.accept, m.accept), (), m.accept
            if rule.action == ir.PASS:
                return m.set(m.pass_, m.pass_), (), m.pass_
            if rule.action == ir.DENY:
                return self.deny(table), (), 0
            return (
                log_target(prefix_text),
                log_limit(felix.log_rate_limit, felix.log_rate_limit_burst),
                0,
            )

        rules = policy.rules(direction)
        body = self._rules_of(rules, f"{pid} {direction}", target_of)
        where = span_text(policy.origin)
        comment = f"policy {pid} tier {policy.tier} {direction}" + (
            f" ({flavour})" if flavour != NORMAL else ""
        )
        self.add(table, Chain(name, tuple(body), comment + (f" {where}" if where else "")))
        mine = [r for r in rules if r.match.ip_version in (None, self.family)]
        info = ChainInfo(
            name,
            can_allow=any(r.action == ir.ALLOW for r in mine),
            can_pass=any(r.action == ir.PASS for r in mine),
        )
        self._infos[key] = info
        return info

    def profile_chain(self, name: str, direction: str) -> ChainInfo:
        key = (name, direction, "profile")
        if key in self._infos:
            return self._infos[key]
        profile = self.program.profiles[name]
        chain = limited("tt-pri-" if direction == ir.INGRESS else "tt-pro-", name)
        felix = self.program.felix
        prefix_text = profile_log_prefix(felix.log_prefix, name)
        m = self.marks

        def target_of(rule: ir.Rule) -> tuple[tuple[str, ...], tuple[Cond, ...], int]:
            if rule.action == ir.ALLOW:
                return m.set(m.accept, m.accept), (), m.accept
            if rule.action == ir.PASS:
                return ("-j", "RETURN"), (), 0  # on to the next profile
            if rule.action == ir.DENY:
                return self.deny(FILTER), (), 0
            return (
                log_target(prefix_text),
                log_limit(felix.log_rate_limit, felix.log_rate_limit_burst),
                0,
            )

        rules = profile.rules(direction)
        body = self._rules_of(rules, f"profile {name} {direction}", target_of)
        where = span_text(profile.origin)
        self.add(
            FILTER,
            Chain(
                chain, tuple(body), f"profile {name} {direction}" + (f" {where}" if where else "")
            ),
        )
        mine = [r for r in rules if r.match.ip_version in (None, self.family)]
        info = ChainInfo(chain, any(r.action == ir.ALLOW for r in mine), False)
        self._infos[key] = info
        return info

    # -- endpoint chain bodies ----------------------------------------------------------------

    def tier_rules(
        self,
        plans: tuple[ir.TierPlan, ...],
        direction: str,
        flavour: str,
        end_of_tier_deny: bool,
    ) -> tuple[list[Rule], bool]:
        """Jumps to each tier's policy chains with the accept/pass bookkeeping, and whether the
        rules end in an unconditional deny (an end-of-tier deny no pass can skip: nothing after
        it, profiles included, can ever run, so callers leave it out).

        Untracked (raw) chains turn an allow into the ``untracked`` bit, which the raw top-level
        chain turns into ``NOTRACK`` and the later tables read as "this side is allowed"."""
        m = self.marks
        table = TABLE_OF[flavour]
        out: list[Rule] = []
        pass_pending = False  # may the pass bit be set at this point?
        for plan in plans:
            if pass_pending:
                out.append(Rule((), m.set(0, m.pass_), f"tier {plan.tier}: clear pass"))
            pass_pending = False
            for pid in plan.policies:
                rules, can_pass = self._policy_jumps(pid, direction, flavour, pass_pending)
                out += rules
                pass_pending = pass_pending or can_pass
            if end_of_tier_deny and plan.default_action == ir.DENY:
                guard = (Cond(RANK_MARK, m.clear_match(m.pass_)),) if pass_pending else ()
                out.append(Rule(guard, self.deny(table), f"end of tier {plan.tier}"))
                if not pass_pending:
                    return out, True
        return out, False

    def _policy_jumps(
        self, pid: str, direction: str, flavour: str, pass_pending: bool
    ) -> tuple[tuple[Rule, ...], bool]:
        key = (pid, direction, flavour, pass_pending)
        hit = self._jumps.get(key)
        if hit is not None:
            return hit
        m = self.marks
        info = self.policy_chain(pid, direction, flavour)
        guard = (Cond(RANK_MARK, m.clear_match(m.pass_)),) if pass_pending else ()
        out = [Rule(guard, ("-j", info.name), f"policy {pid}")]
        if info.can_allow:
            allowed = (Cond(RANK_MARK, m.match(m.accept)),)
            if flavour == UNTRACKED:
                out.append(
                    Rule(allowed, m.set(m.untracked, m.untracked), f"allowed by {pid}: untracked")
                )
            out.append(Rule(allowed, ("-j", "RETURN"), f"allowed by {pid}"))
        hit = (tuple(out), info.can_pass)
        self._jumps[key] = hit
        return hit

    def profile_rules(self, ep: ir.Endpoint, direction: str) -> list[Rule]:
        m = self.marks
        out: list[Rule] = []
        for name in ep.profiles:
            if name not in self.program.profiles:
                continue  # the evaluator skips undefined profiles too
            info = self.profile_chain(name, direction)
            out.append(Rule((), ("-j", info.name), f"profile {name}"))
            if info.can_allow:
                out.append(
                    Rule(
                        (Cond(RANK_MARK, m.match(m.accept)),),
                        ("-j", "RETURN"),
                        f"allowed by profile {name}",
                    )
                )
        out.append(Rule((), self.deny(FILTER), "no profile matched"))
        return out
