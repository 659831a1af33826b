"""The agent's fast path for nftables: apply a set-only update without the full artifact.

A label change at 10,000 policies compiles incrementally in ~40 ms, but the general apply
(``runtime/apply.py``) needs the rendered artifact (seconds), lists the whole table before and
after (seconds, ~20 MB of text) and writes the artifact into the state dir. None of that is
needed to change a few set elements, so :func:`apply_sets`:

1. takes the state dir's lock and checks, cheaply, that the kernel and the state dir are still
   what the agent last saw: no journal, ``applied.json`` not replaced by anyone (same inode,
   size and mtime) and the nf_tables **generation id** unchanged (:func:`generation`, netlink
   ``NFT_MSG_GETGEN``: the kernel bumps it on every committed transaction of the namespace, so
   an unchanged id means no table was touched by anyone). Otherwise it declines and the agent
   takes the general path (which reads and compares everything);
2. writes ``journal.json`` (a kill from here on leaves it: the next apply replaces the table;
   not fsynced, like ``sets.json``: both describe only the kernel's volatile state, see
   ``runtime.state.atomic_write``);
3. sends the script as one transaction (the dataplane's ``sets`` step: one nf_tables netlink
   batch, or ``nft -f``);
4. reads back only the touched sets' elements over netlink (``NFT_MSG_GETSETELEM`` dumps on one
   socket, :func:`runtime.nftables_netlink.dump_sets`; no ``nft`` process), checks that each holds
   exactly the elements the new program wants, and renders each block as ``nft list`` prints it
   (the block's head from the record or overlay, the elements as nft 1.0.6 lays them out; the
   unit tests compare with ``nft``'s own listing);
5. records the touched sets' listings in ``sets.json`` (:class:`runtime.state.SetOverlay`): the
   record in force is ``applied.json`` (the last full artifact) with these set blocks spliced
   into its kernel snapshot (:func:`overlay_record`), which is what ``status`` and every later apply
   compare the kernel with; then removes the journal.

The generation id read after the read-back must be the one before plus one (our transaction and
nobody else's); else the agent's next idle tick runs the full drift comparison.

The full artifact and a plain record are written later (the agent's idle tick renders the
program in force and hands it to ``apply_artifact`` as a no-change set update, which checks the
whole kernel against the overlaid record and then replaces record and overlay at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from compiler.tools import nft
from runtime import nftables_netlink
from runtime.lock import apply_lock
from runtime.nftables import FAMILY, SETS_WHAT, TABLE, UNIT, NftablesDataplane
from runtime.plan import Env, Step
from runtime.state import Record, SetOverlay

__all__ = [
    "FastResult",
    "apply_sets",
    "block_head",
    "block_heads",
    "element_lines",
    "generation",
    "read_sets",
    "touched_sets",
]

logger = logging.getLogger(__name__)

NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 0x1

_TOUCHED = re.compile(rf"^(?:add|delete) element {FAMILY} {TABLE} (\S+) \{{", re.MULTILINE)


# -- generation id -------------------------------------------------------------------------------


def generation(netns: str | None = None, sock: socket.socket | None = None) -> int:
    """The nf_tables generation id of the namespace (bumped by every committed transaction);
    on ``sock`` (:func:`runtime.nftables_netlink.open_socket`) if given."""
    if sock is None:
        with nftables_netlink.open_socket(netns, 5.0) as own:
            return generation(netns, own)
    got = nftables_netlink.request(
        sock, NFT_MSG_GETGEN, NLM_F_REQUEST, b"", "NFT_MSG_GETGEN", socket.AF_UNSPEC
    )
    for msg in got or ():
        off = 0
        while off + 4 <= len(msg):
            alen, atype = struct.unpack_from("=HH", msg, off)
            if alen < 4:
                break
            if atype & 0x3FFF == NFTA_GEN_ID:
                return int(struct.unpack_from(">I", msg, off + 4)[0])
            off += (alen + 3) & ~3
    raise OSError(0, "NFT_MSG_GETGEN: no NFTA_GEN_ID in the reply")


# -- set listings --------------------------------------------------------------------------------


def touched_sets(script: str) -> list[str]:
    """Names of the sets a set-update script adds to or deletes from, sorted."""
    return sorted(set(_TOUCHED.findall(script)))


def read_sets(names: Iterable[str], netns: str | None = None) -> dict[str, str]:
    """name -> the set's block as ``nft list table`` prints it (``\\tset NAME {`` ... ``\\t}``).

    One ``nft list set`` per set, run concurrently (nft 1.0.6 cannot run several ``list set``
    commands from one ``-f`` file: its cache then misses every set but the last)."""
    names = sorted(names)
    if not names:
        return {}
    if len(names) == 1:
        outs = [_list_set(names[0], netns)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(names), 8)) as pool:
            outs = list(pool.map(lambda n: _list_set(n, netns), names))
    blocks: dict[str, str] = {}
    lines = "".join(outs).splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\tset (\S+) \{$", lines[i])
        if m:
            j = i
            while j < len(lines) and lines[j] != "\t}":
                j += 1
            blocks[m[1].strip('"')] = "\n".join(lines[i : j + 1]) + "\n"
            i = j + 1
            continue
        i += 1
    missing = [n for n in names if n not in blocks]
    if missing:
        raise RuntimeError(f"set(s) missing from the read-back: {', '.join(missing)}")
    return blocks


def _list_set(name: str, netns: str | None) -> str:
    return nft.run(["list", "set", FAMILY, TABLE, name], netns=netns).stdout + "\n"


def element_lines(block: str) -> tuple[str, ...]:
    """The elements of one set block, as the kernel prints them."""
    start = block.find("elements = {")
    if start < 0:
        return ()
    inner = block[start + len("elements = {") :].rsplit("}", 2)[0]
    return tuple(e.strip() for e in inner.replace("\n", " ").split(",") if e.strip())


def _names(blocks: Iterable[str]) -> set[str]:
    """The names of these blocks (``\tset NAME {`` ...)."""
    return {b.split(None, 2)[1].strip('"') for b in blocks}


def block_head(block: str) -> str:
    """A set block without its ``elements = { ... }`` lines and closing ``\t}``."""
    cut = block.find("\t\telements = {")
    if cut < 0:
        cut = block.rfind("\t}")
    return block[:cut]


_BLOCK = re.compile(r"^\tset (\S+) \{\n.*?^\t\}\n", re.MULTILINE | re.DOTALL)


def block_heads(listing: str) -> dict[str, str]:
    """set name -> :func:`block_head` of its block, for every set of an ``nft list`` text."""
    return {m[1].strip('"'): block_head(m[0]) for m in _BLOCK.finditer(listing)}


class ReadBackWrong(RuntimeError):
    """The kernel's sets do not hold what the update should have left in them."""


def _read_back(
    names: list[str],
    want: Mapping[str, Iterable[str]],
    netns: str | None,
    heads: Mapping[str, str] | None,
    overlay: SetOverlay | None,
    sock: socket.socket | None = None,
) -> dict[str, str]:
    """Read the touched sets' elements over netlink (one socket, one dump each), check them
    against ``want`` and return their blocks as ``nft list`` prints them."""
    raw = nftables_netlink.dump_sets(names, TABLE, netns, sock=sock)
    problems = []
    decoded: dict[str, list[str]] = {}
    for name in names:
        got = nftables_netlink.decode(raw[name])
        have, expect = set(got), set(want.get(name, ()))
        if have != expect or len(have) != len(got):
            extra = sorted(have - expect)[:3]
            lost = sorted(expect - have)[:3]
            problems.append(f"set {name}: unexpected {extra}, missing {lost}")
        decoded[name] = got
    if problems:
        raise ReadBackWrong("; ".join(problems[:10]))
    known = dict(heads or {})
    if overlay is not None:
        known.update((n, block_head(b)) for n, b in overlay.sets.items())
    blocks: dict[str, str] = {}
    for name in names:
        head = known.get(name)
        if head is not None:
            width = len(raw[name][0].key) if raw[name] else 4
            text = nftables_netlink.elements_text(decoded[name], width)
            blocks[name] = head + text + "\t}\n"
    missing = [n for n in names if n not in blocks]
    if missing:  # no head known: list these once with nft (and check that it agrees)
        listed = read_sets(missing, netns)
        for name in missing:
            if list(element_lines(listed[name])) != decoded[name]:
                raise ReadBackWrong(f"set {name}: nft and netlink disagree")
        blocks.update(listed)
    return blocks


# Tortie's sets keyed by interface name (the nftables target's dispatch maps and wl-ifaces)
DISPATCH = frozenset({"wl-egress", "wl-ifaces", "wl-ingress"})


def stand_in(kind: str, name: str, digest: str) -> str:
    """The block that stands for an object a chain update made, in the overlay and in
    listings compared with it (runtime/nftables_chains.py)."""
    return f"\t{kind} {name} {{\n\t\t# netlink sha256:{digest}\n\t}}\n"


def restate(
    kinds: Mapping[str, str],
    want: Mapping[str, Iterable[str]],
    netns: str | None,
    sock: socket.socket,
) -> dict[str, str]:
    """name -> the stand-in of each set or map in ``kinds`` (name -> "set" | "map") after
    its elements changed, once its elements are checked to be exactly ``want``'s."""
    if not kinds:
        return {}
    from runtime import nftables_readback

    names = sorted(kinds)
    decls = nftables_readback.dump_set_decls(names, TABLE, netns, sock, True)
    out = {}
    for n in names:
        decl = decls.get(n)
        if decl is None:
            raise ReadBackWrong(f"set {n}: missing from the kernel")
        raw = nftables_netlink.raw_elements(decl.elements or ())
        decode = nftables_netlink.decode_names if n in DISPATCH else nftables_netlink.decode
        got = decode(raw)
        if set(got) != set(want.get(n, ())) or len(set(got)) != len(got):
            raise ReadBackWrong(f"set {n}: not the elements the update should leave")
        out[n] = stand_in(kinds[n], n, nftables_readback.set_dump_digest(decl))
    return out


def _send(env: Env, script: str, sock: socket.socket) -> None:
    """The script as one transaction: a netlink batch on ``sock`` (no new socket), or, for a
    shape the encoder does not handle, the dataplane's ``nft -f``."""
    try:
        nftables_netlink.apply(script, env.netns, sock=sock)
    except nftables_netlink.Unsupported:  # raised before anything is sent
        NftablesDataplane(env).run(Step("nft", SETS_WHAT, script))


# -- the fast apply ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FastResult:
    applied: bool  # False: declined (see ``reason``), nothing was changed
    reason: str
    overlay: SetOverlay | None = None
    generation: int | None = None  # after our commit; None when someone else committed too
    record_stat: tuple[int, int, int] | None = None
    sets: tuple[str, ...] = ()
    # time.monotonic() when the kernel acknowledged the transaction: from then on it is in
    # force; what follows is the read-back and the bookkeeping
    committed: float = 0.0


class Declined(RuntimeError):
    """The fast path does not apply; the general path must run (nothing was changed)."""


def record_stat(env: Env) -> tuple[int, int, int] | None:
    return env.state.record_stat()


def preflight(
    env: Env,
    stack: contextlib.ExitStack,
    overlay: SetOverlay | None,
    known_generation: int | None,
    known_record: tuple[int, int, int] | None,
) -> tuple[socket.socket, int]:
    """(a netlink socket closed with ``stack``, the generation id) once the kernel and the
    state dir are what the caller last saw (called with the state dir's lock held); raises
    :class:`Declined` otherwise."""
    if env.state.read_journal() is not None:
        raise Declined("an earlier apply did not finish")
    if known_generation is None or known_record is None:
        raise Declined("the kernel state is not known to match the record")
    if record_stat(env) != known_record:
        raise Declined("the record was replaced by another apply")
    if env.state.read_overlay() != overlay:
        raise Declined("the set overlay is not the one this agent wrote")
    sock = stack.enter_context(nftables_netlink.open_socket(env.netns))
    gen0 = generation(env.netns, sock)
    if gen0 != known_generation:
        raise Declined("the nf_tables generation changed (someone committed a transaction)")
    return sock, gen0


def commit(env: Env, sock: socket.socket, gen0: int, send: Callable[[], None], what: str) -> float:
    """``send()`` the fast path's transaction (its journal begun); time.monotonic() when the
    kernel acknowledged it. A refusal raises ``ApplyFailed``, restored (the journal ended: the
    record in force is still right) when the generation says nothing was committed."""
    from runtime.plan import ApplyFailed

    try:
        send()
    except Exception as e:
        try:
            unchanged = generation(env.netns, sock) == gen0
        except OSError:
            unchanged = False
        if unchanged:  # refused as a whole
            env.state.end()
        raise ApplyFailed(f"{what} failed: {e}", unchanged) from e
    return time.monotonic()


@contextlib.contextmanager
def verifying(update: str, objects: str) -> Iterator[None]:
    """The read-back after a committed fast update: whatever goes wrong is ``ApplyFailed``,
    not restored (the journal stays: the next apply replaces the table)."""
    from runtime.plan import ApplyFailed

    try:
        yield
    except ReadBackWrong as e:
        raise ApplyFailed(f"read-back after the {update} is wrong: {e}", False) from e
    except Exception as e:  # committed, but unverified
        raise ApplyFailed(f"cannot read the {objects} back: {e}", False) from e


def record_overlay(
    env: Env,
    overlay: SetOverlay | None,
    base: str,
    known_record: tuple[int, int, int],
    program: str,
    sets: Mapping[str, str],
    masked: Mapping[str, list],
    removed: Iterable[str],
) -> SetOverlay:
    """Write the overlay after a fast update on top of ``overlay`` and end the journal."""
    new = SetOverlay(
        base=base,
        base_record=list(known_record),
        program=program,
        updates=(overlay.updates if overlay is not None else 0) + 1,
        applied_at=time.time(),
        sets=dict(sorted(sets.items())),
        masked=dict(sorted(masked.items())),
        removed=sorted(set(removed)),
    )
    env.state.write_overlay(new, durable=False)
    env.state.end()
    return new


def apply_sets(
    env: Env,
    script: str,
    want: Mapping[str, Iterable[str]],
    *,
    base: str,
    overlay: SetOverlay | None,
    known_generation: int | None,
    known_record: tuple[int, int, int] | None,
    program: str,
    heads: Mapping[str, str] | None = None,
) -> FastResult:
    """Apply the set-update ``script`` if the kernel and state dir are what the caller last
    saw (``base`` artifact with ``overlay``, ``known_generation``, ``known_record``).

    ``want``: set name -> the elements (as the nftables target renders them) every touched
    set must hold afterwards. ``program`` names the program now in force (the overlay's id).
    ``heads``: set name -> the head of its block in the record (:func:`block_heads`); a touched
    set whose head is neither there nor in ``overlay`` is listed with ``nft`` once.
    Raises :class:`Declined` before changing anything when the fast path does not apply, and
    ``ApplyFailed`` (journal left behind: the next apply replaces the table) when the kernel
    refused the script or the read-back is wrong.
    """
    names = touched_sets(script)
    with apply_lock(env.state.root, env.lock_timeout), contextlib.ExitStack() as stack:
        # One netlink socket for the generation reads and the read-back.
        sock, gen0 = preflight(env, stack, overlay, known_generation, known_record)
        # Not fsynced (journal and overlay): they describe only the kernel's volatile state
        # (see runtime.state.atomic_write).
        env.state.begin("nftables", f"sets:{program}", base, durable=False)
        committed = commit(env, sock, gen0, lambda: _send(env, script, sock), "set update")
        # Sets a chain update made (runtime/nftables_chains.py) are stand-ins in the overlay:
        # checked the same way, their digest taken again.
        masked = dict(overlay.masked) if overlay is not None else {}
        listed = [n for n in names if n not in masked]
        again = {n: masked[n][0] for n in names if n in masked}
        with verifying("set update", "updated sets"):
            blocks = _read_back(listed, want, env.netns, heads, overlay, sock) if listed else {}
            blocks.update(restate(again, want, env.netns, sock))
        gen1 = generation(env.netns, sock)
        sets = dict(overlay.sets) if overlay is not None else {}
        sets.update(blocks)
        masked.update((n, [kind, len(set(want.get(n, ())))]) for n, kind in again.items())
        removed = overlay.removed if overlay is not None else []
        new_overlay = record_overlay(
            env, overlay, base, known_record, program, sets, masked, removed
        )
    return FastResult(
        True,
        "only set elements changed",
        new_overlay,
        gen1 if gen1 == gen0 + 1 else None,
        known_record,
        tuple(names),
        committed,
    )


def mask(normalised: str, masked: Mapping[str, list], netns: str | None) -> str:
    """A normalised listing with the blocks of the ``masked`` objects replaced by their
    stand-ins made from the kernel's dump now (``runtime/nftables_chains.py``); an object the
    kernel lacks is left out."""
    from runtime.nftables_chains import stand_ins
    from runtime.nftables_delta import replace_blocks

    blocks: dict[str, str | None] = dict.fromkeys(masked)
    blocks.update(stand_ins(masked, netns))
    text = replace_blocks(normalised, blocks)
    return normalised if text is None else text


def overlay_record(record: Record, overlay: SetOverlay) -> Record:
    """``record`` as in force after the overlay's fast updates (see
    :meth:`runtime.state.StateDir.read_record`): its kernel snapshot with the overlay's blocks
    replaced, removed or added (stand-ins for what nft would list; one pass over the sorted
    snapshot), counts adjusted by what left and came (stand-ins: with the counts the overlay
    keeps for them), mode "sets". An overlay that names a set the record lacks (other than one
    a chain update made) does not belong to it: the record is returned as it is."""
    from runtime.nftables import listing_counts
    from runtime.nftables_delta import replace_blocks

    text = record.kernel.get(UNIT)
    if text is None:
        return record
    changes: dict[str, str | None] = dict.fromkeys(overlay.removed)
    changes.update(overlay.sets)
    old: list[str] = []
    new_text = replace_blocks(text, changes, old)
    if new_text is None:
        logger.warning("the record's table is not in sorted form: ignoring the set overlay")
        return record
    had = _names(old)
    lacking = sorted(n for n in overlay.sets if n not in overlay.masked and n not in had)
    if lacking:
        logger.warning("set overlay names set %s, which the record lacks: ignoring it", lacking[0])
        return record
    counts = dict(record.counts)
    for sign, blocks in ((-1, old), (1, [overlay.sets[n] for n in sorted(overlay.sets)])):
        got = listing_counts(f"table {FAMILY} {TABLE} {{\n" + "".join(blocks) + "}\n")
        if got is None:
            logger.warning("a block of the set overlay does not count: counts left as recorded")
            break
        for k in ("chains", "rules", "sets", "maps", "elements"):
            if k in counts:
                counts[k] += sign * got[k]
    else:
        for kind, n in overlay.masked.values():
            k = "rules" if kind == "chain" else "elements"
            if k in counts:
                counts[k] += n
    return dataclasses.replace(
        record,
        kernel={**record.kernel, UNIT: new_text},
        counts=counts,
        mode="sets",
        applied_at=overlay.applied_at,
        overlay=overlay.program,
        overlay_updates=overlay.updates,
    )
