"""Two rule generations and one atomic switch: a killed apply leaves one complete ruleset.

An iptables node is many kernel objects (a table per family, an ipset per selector), and no
single kernel operation replaces them all. The runtime therefore keeps two *generations*, ``a``
and ``b``, of every chain and set the artifact has, under their own names, and flips between
them with **one** ``ipset swap``:

* chains ``tt-…`` of the artifact become ``ta-…`` / ``tb-…`` (same length: the 28-character
  limit still holds); sets ``tt4…`` / ``tt6…`` become ``ta4…`` / ``tb4…`` (31 still holds);
* the static part, identical for both generations, is the artifact's hooks (``-j tt-INPUT``
  from the built-in chains, unchanged) and one *dispatch chain* per top-level chain::

      -A tt-INPUT -m set --match-set tt-on-a src -g ta-INPUT
      -A tt-INPUT -m set --match-set tt-on-b src -g tb-INPUT
      -A tt-INPUT -g ta-INPUT

* ``tt-on-a`` and ``tt-on-b`` are ``list:set`` sets (family-agnostic: one set serves
  iptables and ip6tables). The live generation's set holds ``tt4-all`` (``0.0.0.0/1``,
  ``128.0.0.0/1``) and ``tt6-all`` (``::/1``, ``8000::/1``), which match every source
  address; the other one is empty. ``ipset swap tt-on-a tt-on-b`` exchanges their contents in
  one kernel operation, so every table of both families changes generation at once.

An apply fills the *inactive* generation (its sets, then its chains, table by table: nothing
reaches them yet), then swaps. A ``kill -9`` before the swap leaves the old generation live and
whole; after it, the new one. The previous generation stays in the kernel, unreachable: the next
apply overwrites it, and a rollback is a swap back.

``-g`` (goto) keeps the built-in chain's semantics: when the generation's chain returns, the
packet continues after the hook, exactly as with ``-j tt-INPUT`` into the chain itself. The
third rule covers a swap *between* the first two lookups of one packet (``b`` -> ``a``: neither
set matches at its lookup): with at most one swap during the three rules, a packet runs exactly
one generation's chain, never none and never both.

Everything here is text in, text out (restore input, ``iptables-save`` / ``ipset save``
output), so it is unit-tested without a kernel; ``runtime/iptables.py`` runs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from compiler.targets.iptables.apply import _split_sections, parse_save, plan_iptables
from compiler.targets.iptables.names import HOOK_COMMENT, quoted

GENERATIONS = ("a", "b")
SWITCH_SET = {"a": "tt-on-a", "b": "tt-on-b"}
ALL_SET = {4: "tt4-all", 6: "tt6-all"}
ALL_MEMBERS = {4: ("0.0.0.0/1", "128.0.0.0/1"), 6: ("::/1", "8000::/1")}
STATIC_SETS = frozenset({*SWITCH_SET.values(), *ALL_SET.values()})
NORMAL = "g"  # the live generation's letter in read-back text ("tg-…", "tg4s:…")

_HOOK_MARK = f"--comment {quoted(HOOK_COMMENT)}"
_BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_SET_RE = re.compile(r"t([tabg])([46])(\S*)")
_GEN_SET = {g: re.compile(rf"t{g}[46]\S+") for g in GENERATIONS}
_ANY_GEN_SET = re.compile(r"t[ab][46]\S+")
# An option that names a chain or a set, and the name (one unquoted segment at a time).
_NAMED = re.compile(r"(?:^|(?<= ))(-[AIDRNFXEjgP]|--match-set) (\S+)")


def other(gen: str) -> str:
    return "b" if gen == "a" else "a"


def chain_prefix(gen: str) -> str:
    return f"t{gen}-"


def is_gen_chain(name: str, gen: str | None = None) -> bool:
    """A chain of generation ``gen`` (or of either generation)."""
    gens = GENERATIONS if gen is None else (gen,)
    return any(name.startswith(chain_prefix(g)) for g in gens)


def is_gen_set(name: str, gen: str | None = None) -> bool:
    return (_ANY_GEN_SET if gen is None else _GEN_SET[gen]).fullmatch(name) is not None


def rename_chain(name: str, src: str, dst: str) -> str:
    """``t{src}-x`` -> ``t{dst}-x``; any other name unchanged."""
    pre = chain_prefix(src)
    return chain_prefix(dst) + name[len(pre) :] if name.startswith(pre) else name


def rename_set(name: str, src: str, dst: str) -> str:
    """``t{src}4…`` -> ``t{dst}4…`` (also temporary and host sets); static sets unchanged."""
    if name in STATIC_SETS:
        return name
    m = _SET_RE.fullmatch(name)
    return f"t{dst}{m[2]}{m[3]}" if m and m[1] == src else name


def rename_words(line: str, chain: Callable[[str], str], set_: Callable[[str], str]) -> str:
    """Apply ``chain`` to every chain name and ``set_`` to every set name of one restore or
    save line: ``:NAME`` declarations, the words after ``-A/-I/-j/-g…`` and after
    ``--match-set``. Quoted text (comments, log prefixes) is never touched."""
    if line.startswith(":"):
        name, sep, rest = line[1:].partition(" ")
        return ":" + chain(name) + sep + rest

    def sub(m: re.Match[str]) -> str:
        opt, name = m.group(1), m.group(2)
        return f"{opt} {set_(name) if opt == '--match-set' else chain(name)}"

    if '"' not in line:
        return _NAMED.sub(sub, line)
    parts = line.split('"')
    for i in range(0, len(parts), 2):  # the odd parts are quoted
        parts[i] = _NAMED.sub(sub, parts[i])
    return '"'.join(parts)


def rules_to_gen(text: str, gen: str) -> str:
    """An artifact's restore input with every chain and set renamed into generation ``gen``
    (hook lines kept as they are: they jump into the static dispatch chains)."""
    out = []
    for line in text.splitlines():
        if (
            line.startswith("#")
            or not line
            or line.startswith("*")
            or line == "COMMIT"
            or hooks_of([line])
        ):
            out.append(line)
        else:
            out.append(
                rename_words(
                    line, lambda c: rename_chain(c, "t", gen), lambda s: rename_set(s, "t", gen)
                )
            )
    return "\n".join(out) + "\n"


def ipset_to_gen(text: str, gen: str) -> str:
    """An artifact's ``ipset.restore`` with every set renamed into generation ``gen``."""
    out = []
    for line in text.splitlines():
        words = line.split(" ")
        if words[0] in ("create", "flush", "add", "destroy", "del") and len(words) > 1:
            words[1] = rename_set(words[1], "t", gen)
        elif words[0] == "swap" and len(words) > 2:
            words[1:3] = [rename_set(w, "t", gen) for w in words[1:3]]
        out.append(" ".join(words))
    return "\n".join(out) + "\n"


def normalize(line: str, gen: str) -> str:
    """A save line of generation ``gen`` with that generation's names as ``tg-…`` / ``tg4…``,
    so the same artifact reads back the same whichever generation holds it."""
    return rename_words(
        line, lambda c: rename_chain(c, gen, NORMAL), lambda s: rename_set(s, gen, NORMAL)
    )


def dispatch_rules(chain: str) -> list[str]:
    """The static dispatch chain ``tt-X``: goto the live generation's ``t?-X``."""
    a, b = (rename_chain(chain, "t", g) for g in GENERATIONS)
    return [
        f"-A {chain} -m set --match-set {SWITCH_SET['a']} src -g {a}",
        f"-A {chain} -m set --match-set {SWITCH_SET['b']} src -g {b}",
        f"-A {chain} -g {a}",
    ]


def hooks_of(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(built-in chain, static chain) of the hook lines of one table's restore input."""
    out = []
    for line in lines:
        words = line.split()
        if (
            _HOOK_MARK in line
            and len(words) > 3
            and words[0] in ("-I", "-A")
            and words[1] in _BUILTIN
            and "-j" in words
        ):
            out.append((words[1], words[words.index("-j") + 1]))
    return out


# -- the switch --------------------------------------------------------------------------------


def switch_members(ipset_save: str) -> dict[str, list[str]]:
    """Members of ``tt-on-a`` / ``tt-on-b`` (absent sets: no key)."""
    out: dict[str, list[str]] = {}
    for line in ipset_save.splitlines():
        if not line.startswith(("create tt-on-", "add tt-on-")):
            continue
        words = line.split()
        if len(words) >= 2 and words[1] in SWITCH_SET.values():
            if words[0] == "create":
                out.setdefault(words[1], [])
            elif words[0] == "add" and len(words) > 2:
                out.setdefault(words[1], []).append(words[2])
    return out


def live_generation(ipset_save: str) -> str:
    """The generation the dispatch chains send packets to: ``b`` only when ``tt-on-a`` is empty
    (or absent) and ``tt-on-b`` is not; otherwise ``a`` (the third dispatch rule)."""
    m = switch_members(ipset_save)
    return "b" if not m.get(SWITCH_SET["a"]) and m.get(SWITCH_SET["b"]) else "a"


def switch_ready(ipset_save: str) -> bool:
    """One switch set holds exactly both match-everything sets, the other is empty, and those
    hold exactly their halves: a swap then flips every family at once."""
    m = switch_members(ipset_save)
    full = sorted(ALL_SET.values())
    sets = [sorted(m.get(SWITCH_SET[g], ["?"])) for g in GENERATIONS]
    if sorted(map(tuple, sets)) != [(), tuple(full)]:
        return False
    members: dict[str, set[str]] = {}
    for line in ipset_save.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "add" and words[1] in full:
            members.setdefault(words[1], set()).add(words[2])
    return all(members.get(ALL_SET[f]) == set(ALL_MEMBERS[f]) for f in (4, 6))


def bootstrap_script(ipset_save: str) -> list[str]:
    """ipset restore lines creating the static sets where missing. A node without any switch
    set starts with ``a`` live (its chains are created empty by the first restore); existing
    contents are completed, never flipped."""
    live = live_generation(ipset_save)
    lines = []
    for f in (4, 6):
        family = "inet" if f == 4 else "inet6"
        lines.append(f"create {ALL_SET[f]} hash:net family {family} -exist")
        lines += [f"add {ALL_SET[f]} {m} -exist" for m in ALL_MEMBERS[f]]
    lines += [f"create {SWITCH_SET[g]} list:set -exist" for g in GENERATIONS]
    lines += [f"add {SWITCH_SET[live]} {ALL_SET[f]} -exist" for f in (4, 6)]
    return lines


# -- sets of one generation --------------------------------------------------------------------


def parse_ipset_save(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """``ipset save`` (or a restore script's create/add lines) -> (name -> "type family
    maxelem", name -> members). ``hash:net`` host members are written without ``/32`` /
    ``/128``, as the kernel prints them."""
    creates: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3:
            continue
        if words[0] == "create":
            opts = dict(zip(words[3::2], words[4::2], strict=False))
            creates[words[1]] = " ".join(
                [words[2], opts.get("family", "?"), opts.get("maxelem", "65536")]
            )
            members.setdefault(words[1], set())
        elif words[0] == "add":
            m = words[2]
            if m.endswith("/32") and ":" not in m or m.endswith("/128"):
                m = m.rsplit("/", 1)[0]
            members.setdefault(words[1], set()).add(m)
    return creates, members


def _temps(ipset_text: str) -> dict[str, str]:
    """real set -> its temporary set, from the ``swap TMP REAL`` lines."""
    out = {}
    for line in ipset_text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "swap":
            out[words[2]] = words[1]
    return out


def gen_ipset_plan(ipset_gen_text: str, kernel_save: str) -> tuple[list[str], set[str]]:
    """The lines that make the (inactive) generation's sets hold what ``ipset_gen_text``
    (an artifact's script, renamed) says, skipping sets that already do; and the set names it
    fills. Leftover temporary sets of a killed run are destroyed first."""
    temps = _temps(ipset_gen_text)
    real_of = {t: r for r, t in temps.items()}
    mapped = []
    blocks: dict[str, list[str]] = {}
    for line in ipset_gen_text.splitlines():
        words = line.split()
        if len(words) < 2 or line.startswith("#"):
            continue
        real = real_of.get(words[1], words[1])
        if real in temps:
            blocks.setdefault(real, []).append(line)
        if len(words) > 2 and words[0] in ("create", "add") and words[1] in real_of:
            mapped.append(" ".join([words[0], real, *words[2:]]))
    want_create, want_members = parse_ipset_save("\n".join(mapped))
    have_create, have_members = parse_ipset_save(kernel_save)
    out: list[str] = [f"destroy {t}" for t in sorted(temps.values()) if t in have_create]
    for real in sorted(temps):
        same = have_create.get(real) == want_create.get(real) and have_members.get(
            real, set()
        ) == want_members.get(real, set())
        if same:
            continue
        block = blocks[real]
        if real in have_create:  # "create -exist" refuses changed options; the swap carries them
            block = [x for x in block if not x.startswith(f"create {real} ")]
        out += block
    return out, set(temps)


# -- rules of one generation -------------------------------------------------------------------


def gen_restore(rules_text: str, saved_text: str, gen: str) -> str:
    """The restore input that builds generation ``gen`` of one family, given the artifact's
    rules file and ``iptables-save`` output: per table, ``gen``'s chains (each declared, so
    replaced whole), the dispatch chains rewritten (same text: the live path is unchanged),
    the live generation's top-level chains created empty where missing (the dispatch rules
    name them), hooks repaired as :func:`.apply.plan_iptables` does, and stale chains of
    ``gen`` (or of a layout without generations) deleted. Nothing of the live generation is
    touched, so until the switch no packet sees any of this."""
    live = other(gen)
    saved = parse_save(saved_text)
    out: list[str] = []
    for table, lines in _split_sections(rules_to_gen(rules_text, gen)):
        if not table:
            out += lines
            continue
        tops = [chain for _, chain in hooks_of(lines)]
        have = set(saved[table].chains) if table in saved else set()
        decl = [f":{c} - [0:0]" for c in tops]
        decl += [f":{n} - [0:0]" for c in tops if (n := rename_chain(c, "t", live)) not in have]
        body = [x for c in tops for x in dispatch_rules(c)]
        out += [f"*{table}", *decl, *lines, *body, "COMMIT"]
    return plan_iptables("\n".join(out) + "\n", saved_text, keep=lambda c: is_gen_chain(c, live))
