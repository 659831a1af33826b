"""Policy, profile and endpoint chains.

* One chain per **policy, direction and flavour**, shared by every endpoint that uses it:
  ``pol-ingress/<policy id>``, ``pol-egress/<policy id>`` (normal and applyOnForward hooks),
  ``pol-prednat/<id>`` (preDNAT: denies stay ``drop``), ``pol-untracked-ingress|egress/<id>``
  (doNotTrack: an allow is ``notrack``). Rules keep the user's order; see :mod:`.marks` for how
  a rule's verdict travels back to the endpoint chain.
* One chain per **profile and direction**: ``pro-ingress/<name>``, ``pro-egress/<name>``. ``Pass``
  in a profile returns without a mark, i.e. moves on to the next profile (the evaluator's choice,
  Calico's iptables behaviour).
* One chain per **endpoint, hook and direction**, running :meth:`Endpoint.plan` tier by tier:
  jump to each policy chain, each jump guarded by the mark bits earlier jumps may have set
  (skipped once the accept bit is set, or the pass bit: the rest of the tier is skipped);
  ``return`` after the tier's jumps when the accept bit is set; end-of-tier deny (where the hook
  has one); then the profiles and the "no profile matched" deny.
* One chain per **sequence** of policies (``seq-<direction>-<flavour>/<hash>``): a tier of more
  than SEQUENCE_MIN policies is cut into content-defined chunks (:func:`chunks`), each a shared
  chain of jumps with the same guards, and the endpoint chain jumps to the chunks. When that
  still leaves more than SEQUENCE_MIN jumps, the chunks are chunked again (level 2,
  ``seq2-<direction>-<flavour>/<hash>``, boundaries from a salted hash of the chunk names).
  Endpoints with common policies share the chunks. At 10,000 policies (100 local endpoints):
  ~67,500 rules before (a ``return`` rule after every jump, one level), ~43,200 now
  (endpoint chains 21,000 -> 3,300 rules, sequence chains 30,800 -> 24,300).
* Rules of policy and profile chains: runs of simple rules with one action are one set lookup
  (:mod:`.runs`); lists of nets or ports are named constant sets (:mod:`.consts`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from compiler.diagnostics import Span
from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.targets.common import parse_rate, policy_log_prefix, profile_log_prefix, span_text
from compiler.targets.nftables.consts import ConstSets
from compiler.targets.nftables.marks import Marks
from compiler.targets.nftables.names import (
    LOG_PREFIX_MAX,
    ident,
    nft_string,
    script_comment,
    short_name,
)
from compiler.targets.nftables.rules import lower_match
from compiler.targets.nftables.runs import Run, run_match, run_protocol, split_runs

NORMAL = "normal"
PREDNAT = "prednat"
UNTRACKED = "untracked"


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain as text: ``lines`` are rules and ``# comment`` lines, in order."""

    name: str
    comment: str
    lines: tuple[str, ...]
    hook: str | None = None  # "type filter hook ... priority ...; policy accept;" for base chains


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """What an endpoint chain needs to know about a policy/profile chain it jumps to."""

    name: str
    can_allow: bool
    can_pass: bool
    empty: bool = False  # no rules in this direction: not emitted, nothing to jump to


def with_comment(rule: str, text: str) -> str:
    return f"{rule} comment {nft_string(text)}" if text else rule


def log_rate(felix: FelixConfig) -> str:
    """``limit rate N/unit burst B packets `` when logActionRateLimit is set and well formed."""
    rate = parse_rate(felix.log_rate_limit)
    if rate is None:
        return ""
    count, unit = rate
    return f"limit rate {count}/{unit} burst {felix.log_rate_limit_burst} packets "


def log_prefix(text: str) -> str:
    """An expanded ``logPrefix`` (:mod:`compiler.targets.common`) as the nft string that follows
    ``log prefix``: ``": "`` appended, cut to 127 bytes."""
    return nft_string(text + ": ", LOG_PREFIX_MAX)


def _set_ids(m: ir.Match) -> list[str]:
    """The IR sets a match looks up (address sets and named-port sets, both sides), once for
    each lookup."""
    out: list[str] = []
    for side in (m.src, m.dst):
        out += side.sets
        out += side.not_sets
        for pm in (side.ports, side.not_ports):
            if pm is not None:
                out += pm.named_sets
    return out


@dataclass
class ChainBuilder:
    """Builds policy/profile chains on demand (each once) and the endpoint chains that use them.

    ``set_names`` maps every IR set id to its nft set name; ``used_sets`` collects the ids that
    rendered rules reference, so only those sets are declared.
    """

    program: ir.Program
    marks: Marks
    set_names: Mapping[str, str]
    set_families: Mapping[str, int]
    used_sets: set[str] = field(default_factory=set)
    # how many rules look each IR set up: the script declares the most used sets first, since
    # the kernel finds a rule's set by name walking the table's sets in declaration order
    set_refs: dict[str, int] = field(default_factory=dict)
    consts: ConstSets = field(default_factory=ConstSets)
    chains: dict[str, Chain] = field(default_factory=dict)
    _infos: dict[tuple[str, str, str, str], ChainInfo] = field(default_factory=dict)
    _by_policy: dict[tuple[str, str], dict[str, ChainInfo]] = field(default_factory=dict)
    _cuts: dict[str, bool] = field(default_factory=dict)  # chunk boundaries (see chunks())
    _guards: dict[int, str] = field(default_factory=dict)  # "mark bits clear" text, by mask
    _files: dict[str, str] = field(default_factory=dict)  # source file -> its name in comments
    # lower_match results by match (equal matches recur across policies: 3,700 distinct of
    # 14,800 at 10,000 policies); the same builder means the same set names and constant sets
    _lowered: dict[ir.Match, list[str]] = field(default_factory=dict)
    # chain name -> the ``_infos`` key of the policy, profile or sequence chain it is (endpoint
    # chains have none): what a chain update (:mod:`.chain_update`) forgets with a chain
    owners: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    # when a list: the name of every chain built from now on, in order (:mod:`.chain_update`)
    log: list[str] | None = None

    def put(self, chain: Chain, owner: tuple[str, str, str, str] | None = None) -> None:
        self.chains[chain.name] = chain
        if owner is not None:
            self.owners[chain.name] = owner
        if self.log is not None:
            self.log.append(chain.name)

    def where(self, span: Span) -> str:
        """``span_text(span)``, the file's part worked out once per file (it runs for every
        rule; most share a few files)."""
        if span.line <= 0:
            return ""
        name = self._files.get(span.file)
        if name is None:
            name = self._files[span.file] = span_text(Span(span.file, 1, 1)).removesuffix(":1")
        return f"{name}:{span.line}"

    # -- verdict statements -------------------------------------------------------------------

    def deny(
        self, match: str, comment: str, *, tracked: bool = True, protocol: int | None = None
    ) -> list[str]:
        """Deny as ``drop`` or (FelixConfig deny_action Reject, tracked hooks only) ``reject``:
        a TCP reset for TCP, ICMP(v6) port-unreachable otherwise."""
        pre = f"{match} " if match else ""
        if not tracked or self.program.felix.deny_action != "Reject":
            return [with_comment(f"{pre}drop", comment)]
        if protocol == 6:
            return [with_comment(f"{pre}reject with tcp reset", comment)]
        if protocol is not None:
            return [with_comment(f"{pre}reject", comment)]
        return [
            with_comment(f"{pre}meta l4proto tcp reject with tcp reset", comment),
            with_comment(f"{pre}reject", comment),
        ]

    # -- policy and profile chains ------------------------------------------------------------

    def _rule_lines(
        self,
        rule: ir.Rule,
        label: str,
        action: Callable[[ir.Rule, str, str], list[str]],
    ) -> list[str]:
        where = self.where(rule.origin)
        comment = f"{label} rule {rule.index}" + (f" {where}" if where else "")
        if rule.http_ignored:
            comment += " (http match not enforced at L3/L4)"
        alternatives = self._lowered.get(rule.match)
        set_ids = _set_ids(rule.match)
        if alternatives is None:
            consts = self.consts.sets
            known = len(consts)
            alternatives = lower_match(rule.match, self.set_names, self.set_families, self.consts)
            self._lowered[rule.match] = alternatives
            if alternatives:
                # (an equal match seen before has the same sets: they are in used_sets already)
                self.used_sets.update(set_ids)
            elif len(consts) > known:
                # Only what a rule refers to is declared: forget the constant sets made for a
                # side of a match that the other side then emptied.
                for name in list(consts)[known:]:
                    del consts[name]
        if not alternatives:
            return [script_comment(f"{comment}: can never match (nets emptied for this family)")]
        refs = self.set_refs
        for sid in set_ids:
            refs[sid] = refs.get(sid, 0) + len(alternatives)
        out = []
        for alt in alternatives:
            out.extend(action(rule, alt, comment))
        return out

    def _body(
        self,
        rules: tuple[ir.Rule, ...],
        label: str,
        action: Callable[[ir.Rule, str, str], list[str]],
    ) -> list[str]:
        """The rules' lines, runs of simple same-action rules as one lookup (:mod:`.runs`)."""
        lines: list[str] = []
        for item in split_runs(rules, self.set_families):
            if not isinstance(item, Run):
                lines.extend(self._rule_lines(item, label, action))
                continue
            first, last = item.rules[0], item.rules[-1]
            where = self.where(first.origin)
            comment = (
                f"{label} rules {first.index}-{last.index} ({len(item.rules)} rules, one lookup)"
            )
            if where:
                comment += f" {where}"
            # Only the action and (for reject) the shared protocol of the rules matter here.
            proxy = ir.Rule(item.action, ir.Match(protocol=run_protocol(item)), first.index)
            lines.extend(action(proxy, run_match(item, self.consts), comment))
        return lines

    def policy_chain(self, pid: str, direction: str, flavour: str) -> ChainInfo:
        key = ("policy", pid, direction, flavour)
        if key in self._infos:
            return self._infos[key]
        policy = self.program.policies[pid]
        prefix = {
            NORMAL: f"pol-{direction}/",
            PREDNAT: "pol-prednat/",
            UNTRACKED: f"pol-untracked-{direction}/",
        }[flavour]
        name = ident(prefix, pid)
        rules = policy.rules(direction)
        prefix_str = (
            log_prefix(policy_log_prefix(self.program.felix.log_prefix, policy))
            if any(r.action == ir.LOG for r in rules)
            else ""  # no Log rule: never written
        )
        tracked = flavour == NORMAL
        m = self.marks

        def action(rule: ir.Rule, match: str, comment: str) -> list[str]:
            pre = f"{match} " if match else ""
            if rule.action == ir.ALLOW:
                if flavour == UNTRACKED:
                    return [with_comment(f"{pre}notrack {m.set(m.untracked)} return", comment)]
                return [with_comment(f"{pre}{m.set(m.accept)} return", comment)]
            if rule.action == ir.PASS:
                return [with_comment(f"{pre}{m.set(m.pass_)} return", comment)]
            if rule.action == ir.DENY:
                return self.deny(match, comment, tracked=tracked, protocol=rule.match.protocol)
            rate = log_rate(self.program.felix)
            return [with_comment(f"{pre}{rate}log prefix {prefix_str} level info", comment)]

        lines = self._body(rules, f"{pid} {direction}", action)
        where = self.where(policy.origin)
        comment = f"{policy.kind_short} {policy.qualified_name} tier {policy.tier} {direction}"
        if flavour != NORMAL:
            comment += f" ({flavour})"
        if where:
            comment += f" {where}"
        info = ChainInfo(
            name,
            can_allow=any(r.action == ir.ALLOW for r in rules),
            can_pass=any(r.action == ir.PASS for r in rules),
            empty=not rules,
        )
        if rules:
            self.put(Chain(name, comment, tuple(lines)), key)
        self._infos[key] = info
        self._policy_infos(direction, flavour)[pid] = info
        return info

    def _policy_infos(self, direction: str, flavour: str) -> dict[str, ChainInfo]:
        """The policy chains built so far for this direction and flavour, by policy id."""
        infos = self._by_policy.get((direction, flavour))
        if infos is None:
            infos = self._by_policy[(direction, flavour)] = {}
        return infos

    def profile_chain(self, name: str, direction: str) -> ChainInfo:
        key = ("profile", name, direction, NORMAL)
        if key in self._infos:
            return self._infos[key]
        profile = self.program.profiles[name]
        chain_name = ident(f"pro-{direction}/", name)
        prefix_str = log_prefix(profile_log_prefix(self.program.felix.log_prefix, name))
        m = self.marks

        def action(rule: ir.Rule, match: str, comment: str) -> list[str]:
            pre = f"{match} " if match else ""
            if rule.action == ir.ALLOW:
                return [with_comment(f"{pre}{m.set(m.accept)} return", comment)]
            if rule.action == ir.PASS:
                return [with_comment(f"{pre}return", comment + " (pass: next profile)")]
            if rule.action == ir.DENY:
                return self.deny(match, comment, protocol=rule.match.protocol)
            rate = log_rate(self.program.felix)
            return [with_comment(f"{pre}{rate}log prefix {prefix_str} level info", comment)]

        lines = self._body(profile.rules(direction), f"profile {name} {direction}", action)
        where = self.where(profile.origin)
        comment = f"profile {name} {direction}" + (f" {where}" if where else "")
        rules = profile.rules(direction)
        if rules:
            self.put(Chain(chain_name, comment, tuple(lines)), key)
        info = ChainInfo(chain_name, any(r.action == ir.ALLOW for r in rules), False, not rules)
        self._infos[key] = info
        return info

    # -- endpoint chains ----------------------------------------------------------------------

    def _jumps(
        self, infos: list[tuple[str, ChainInfo]], allow_bit: int, pass_pending: bool, last: bool
    ) -> tuple[list[str], bool]:
        """Jump to each chain in turn, each jump guarded by the bits earlier ones may have set:
        skipped once the allow bit is set, or (in a tier) the pass bit. Unless this is the
        ``last`` part of a chain of its own (a sequence chain, which simply ends), one
        ``return`` after the jumps when the allow bit is set. One rule per jump, where a
        ``return`` after every jump would be two. Also says whether the pass bit may be set
        afterwards."""
        m = self.marks
        guards = self._guards
        lines: list[str] = []
        allowing: list[str] = []  # the targets that may set the allow bit, so far
        for what, info in infos:
            mask = (allow_bit if allowing else 0) | (m.pass_ if pass_pending else 0)
            guard = guards.get(mask)
            if guard is None:
                guard = guards[mask] = f"{m.is_clear(mask)} " if mask else ""
            lines.append(with_comment(f"{guard}jump {info.name}", f"policy {what}"))
            if info.can_allow:
                allowing.append(what)
            pass_pending = pass_pending or info.can_pass
        if allowing and not last:
            by = allowing[0] if len(allowing) == 1 else f"one of the {len(allowing)} above"
            lines.append(with_comment(f"{m.is_set(allow_bit)} return", f"allowed by {by}"))
        return lines, pass_pending

    def _sequence(
        self,
        targets: list[tuple[str, ChainInfo]],
        key: str,
        prefix: str,
        comment: str,
        allow_bit: int,
    ) -> ChainInfo:
        """A shared chain that jumps to these chains in order (see :func:`chunks`)."""
        cache_key = ("sequence", key, prefix, "")
        if cache_key in self._infos:
            return self._infos[cache_key]
        name = short_name(prefix, key)
        lines, _ = self._jumps(targets, allow_bit, False, True)
        self.put(Chain(name, comment, tuple(lines)), cache_key)
        info = ChainInfo(
            name,
            can_allow=any(i.can_allow for _, i in targets),
            can_pass=any(i.can_pass for _, i in targets),
        )
        self._infos[cache_key] = info
        return info

    def _policy_sequence(
        self, pids: tuple[str, ...], direction: str, flavour: str, allow_bit: int
    ) -> ChainInfo:
        """Level 1: a chunk of a tier's policies."""
        key = "\n".join(pids)
        prefix = f"seq-{direction}-{flavour}/"
        have = self._infos.get(("sequence", key, prefix, ""))
        if have is not None:
            return have
        infos = [(pid, self.policy_chain(pid, direction, flavour)) for pid in pids]
        comment = f"{direction} policies {pids[0]} .. {pids[-1]} ({len(pids)})"
        return self._sequence(infos, key, prefix, comment, allow_bit)

    def _chunked(
        self,
        targets: list[tuple[str, ChainInfo]],
        keys: list[str],
        make: Callable[[list[tuple[str, ChainInfo]]], ChainInfo],
    ) -> list[tuple[str, ChainInfo]]:
        """``targets`` cut into content-defined chunks of their ``keys``; a chunk of more than
        one becomes the chain ``make`` returns for that part of ``targets``."""
        out = []
        start = 0
        for stop in chunk_ends(keys, self._cuts):
            if stop - start == 1:
                out.append(targets[start])
            else:
                part = targets[start:stop]
                out.append((_span(part[0][0], part[-1][0]), make(part)))
            start = stop
        return out

    def tier_lines(
        self,
        plans: tuple[ir.TierPlan, ...],
        direction: str,
        flavour: str,
        end_of_tier_deny: bool,
    ) -> tuple[list[str], bool]:
        """Jumps to the policy chains of each tier, with the accept/pass bookkeeping.

        Also says whether the lines end in an unconditional deny (an end-of-tier deny that no
        pass can get past): then nothing after them is reachable and callers stop there.

        A tier of more than SEQUENCE_MIN policies jumps to shared sequence chains instead (each
        a chunk of its policies, :func:`chunks`): endpoints that share policies share those
        chains, so the script holds each run of policy jumps once, not once per endpoint.
        """
        m = self.marks
        allow_bit = m.untracked if flavour == UNTRACKED else m.accept
        lines: list[str] = []
        pass_pending = False  # may the pass bit be set here?
        for plan in plans:
            lines.append(script_comment(f"tier {plan.tier} (default action {plan.default_action})"))
            if pass_pending:
                lines.append(with_comment(m.clear(m.pass_), f"tier {plan.tier}: clear pass"))
            pass_pending = False
            infos = self._policy_infos(direction, flavour)
            targets: list[tuple[str, ChainInfo]] = []
            for pid in plan.policies:
                info = infos.get(pid)
                if info is None:
                    info = self.policy_chain(pid, direction, flavour)
                if info.empty:
                    lines.append(script_comment(f"policy {pid}: no {direction} rules"))
                else:
                    targets.append((pid, info))
            if len(targets) > SEQUENCE_MIN:
                live = [pid for pid, _ in targets]
                targets = self._chunked(
                    targets,
                    live,
                    lambda part: self._policy_sequence(
                        tuple([pid for pid, _ in part]), direction, flavour, allow_bit
                    ),
                )
            if len(targets) > SEQUENCE_MIN:
                # Level 2: chunks of the chunks (an endpoint in many policies would still
                # jump to a hundred sequence chains; endpoints share runs of those too).
                targets = self._chunked(
                    targets,
                    # salted: not the same boundaries as level 1's (a policy that ends a
                    # level-1 chunk would end a level-2 chunk as well)
                    ["2/" + info.name for _, info in targets],
                    lambda part: self._sequence(
                        part,
                        "\n".join([info.name for _, info in part]),
                        f"seq2-{direction}-{flavour}/",
                        f"{direction} policies {_span(part[0][0], part[-1][0])} "
                        f"({len(part)} chains)",
                        allow_bit,
                    ),
                )
            jumps, pass_pending = self._jumps(targets, allow_bit, False, False)
            lines += jumps
            if end_of_tier_deny and plan.default_action == ir.DENY:
                guard = m.is_clear(m.pass_) if pass_pending else ""
                lines.extend(self.deny(guard, f"end of tier {plan.tier}"))
                if not pass_pending:
                    return lines, True
                # Every packet that gets past this point passed: the tier's pass bit is set.
        return lines, False

    def profile_lines(self, ep: ir.Endpoint, direction: str) -> list[str]:
        m = self.marks
        lines = [script_comment("profiles")] if ep.profiles else []
        for name in ep.profiles:
            if name not in self.program.profiles:
                lines.append(script_comment(f"profile {name} is not defined: skipped"))
                continue
            info = self.profile_chain(name, direction)
            if info.empty:
                lines.append(script_comment(f"profile {name}: no {direction} rules"))
                continue
            lines.append(with_comment(f"jump {info.name}", f"profile {name}"))
            if info.can_allow:
                lines.append(
                    with_comment(f"{m.is_set(m.accept)} return", f"allowed by profile {name}")
                )
        lines.extend(self.deny("", "no profile matched"))
        return lines

    def add(self, chain: Chain) -> str:
        if chain.name in self.chains:
            raise ValueError(f"duplicate nft chain name {chain.name}")
        self.put(chain)
        return chain.name


SEQUENCE_MIN = 8  # tiers with more policies than this jump through sequence chains
CHUNK_MASK = 7  # a chunk ends after a policy whose id hash has these bits clear (~8 long)
CHUNK_MAX = 32


def chunks(pids: list[str], cuts: dict[str, bool] | None = None) -> list[tuple[str, ...]]:
    """Content-defined chunks of a policy list: a chunk ends after a policy whose id hashes to
    0 mod 8 (or at CHUNK_MAX). Boundaries depend only on the ids, not on their positions, so two
    endpoints whose lists share a stretch of policies get the same chunks for most of it.
    ``cuts`` caches "a chunk ends after this id" across calls."""
    out: list[tuple[str, ...]] = []
    start = 0
    for stop in chunk_ends(pids, {} if cuts is None else cuts):
        out.append(tuple(pids[start:stop]))
        start = stop
    return out


def chunk_ends(pids: list[str], cuts: dict[str, bool]) -> list[int]:
    """Where the :func:`chunks` of ``pids`` end, as indexes past each chunk's last id."""
    ends: list[int] = []
    size = 0  # of the current chunk
    for i, pid in enumerate(pids, 1):
        cut = cuts.get(pid)
        if cut is None:
            cut = cuts[pid] = zlib.crc32(pid.encode("utf-8", "surrogatepass")) & CHUNK_MASK == 0
        size += 1
        if cut or size >= CHUNK_MAX:
            ends.append(i)
            size = 0
    if size:
        ends.append(len(pids))
    return ends


def _span(first: str, last: str) -> str:
    """``a .. d`` for targets described as ``a .. b`` and ``c .. d`` (or plain ids)."""
    return f"{first.split(' .. ')[0]} .. {last.split(' .. ')[-1]}"


def sorted_chains(chains: Mapping[str, Chain]) -> list[Chain]:
    return [chains[k] for k in sorted(chains)]
