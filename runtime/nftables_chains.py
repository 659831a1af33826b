"""The agent's fast path for a chain update: a local workload's change as one small batch.

``compiler/targets/nftables/chain_update.py`` gives the transaction (flush the workload's
chains and add their new rules, create and delete policy/sequence chains and sets, change set
and map elements) and ``compiler/targets/nftables/batch_delta.py`` its netlink batch. Like the
set-only path (``runtime/nftables_fast.py``), :func:`apply_chains` runs only when the kernel and
the state dir are what the agent last saw (no journal, the same ``applied.json``, the same set
overlay, the nf_tables generation id unchanged), then:

1. writes the journal and sends the batch (one ``sendmsg``, one transaction);
2. reads back over netlink every chain the batch created or flushed and every set it created
   (``runtime/nftables_readback.py``) and checks them (see :func:`_check`), and the elements
   of the existing sets it changed (as the set-only path does) — with the generation id
   bracketing the read-back, so it sees our transaction and nothing else;
3. records the result in the overlay (``sets.json``): the changed existing sets as
   ``nft list`` prints them, the deleted blocks, and for each created or flushed chain and
   created set a *stand-in* block holding the SHA-256 of its netlink dump (``nft list`` of even
   one chain costs ~0.5 s at 10,000 policies: it fetches the whole table). Whoever reads the
   kernel while such an overlay is in force (:meth:`runtime.nftables.NftablesDataplane.read`)
   puts the same stand-ins, made from the kernel's current dump, in the listing: equal digests
   mean the objects are still exactly what was checked in step 2. The agent's idle tick later
   writes a plain record (nft's listing of everything) and drops the overlay.

A failure after the batch was sent leaves the journal (the next apply replaces the table).
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterable, Mapping

from runtime import nftables_netlink, nftables_readback
from runtime.lock import apply_lock
from runtime.nftables_fast import (
    FastResult,
    ReadBackWrong,
    _read_back,
    commit,
    generation,
    preflight,
    record_overlay,
    restate,
    stand_in,
    verifying,
)
from runtime.plan import Env
from runtime.state import SetOverlay

__all__ = ["apply_chains", "stand_ins"]

TABLE = "tortie"


def stand_ins(
    masked: Mapping[str, list], netns: str | None, sock: socket.socket | None = None
) -> dict[str, str]:
    """name -> the stand-in block of each ``masked`` object as the kernel holds it now (absent
    when the kernel lacks it)."""
    if sock is None:
        with nftables_netlink.open_socket(netns) as own:
            return stand_ins(masked, netns, own)
    chains = sorted(n for n, (kind, _) in masked.items() if kind == "chain")
    sets = sorted(n for n, (kind, _) in masked.items() if kind != "chain")
    out: dict[str, str] = {}
    for name, dump in nftables_readback.dump_chains(chains, TABLE, netns, sock).items():
        out[name] = stand_in("chain", name, nftables_readback.dump_digest({name: dump}))
    decls = nftables_readback.dump_set_decls(sets, TABLE, netns, sock, elements=True)
    for name, decl in decls.items():
        out[name] = stand_in(masked[name][0], name, nftables_readback.set_dump_digest(decl))
    return out


def apply_chains(
    env: Env,
    batch: bytes,
    *,
    chains: Iterable[str],
    deleted_chains: Iterable[str],
    created_sets: Iterable[str],
    deleted_sets: Iterable[str],
    element_sets: Iterable[str],
    want: Mapping[str, Iterable[str]],
    rules: Mapping[str, int],
    dispatch: Mapping[str, str],
    base: str,
    overlay: SetOverlay | None,
    known_generation: int | None,
    known_record: tuple[int, int, int] | None,
    program: str,
    heads: Mapping[str, str] | None = None,
) -> FastResult:
    """Send ``batch`` (a chain update) if the kernel and the state dir are what the caller
    last saw, check it over netlink and record it in the overlay.

    ``chains``: the chains the batch creates or flushes; ``element_sets``: existing sets and
    maps whose elements it changes and each set it creates, ``want`` their elements afterwards
    (as rendered), and of them ``dispatch``: those keyed by interface name (name -> "map" or
    "set"), recorded as stand-ins; ``rules``: rules of each of ``chains`` (for the record's
    counts). Raises :class:`Declined` before changing anything, and
    ``ApplyFailed`` when the kernel refused the batch (nothing changed) or the read-back is
    wrong (journal left behind)."""
    chains = sorted(chains)
    deleted_chains = sorted(deleted_chains)
    created_sets = sorted(created_sets)
    deleted_sets = sorted(deleted_sets)
    element_sets = sorted(element_sets)
    with apply_lock(env.state.root, env.lock_timeout), contextlib.ExitStack() as stack:
        sock, gen0 = preflight(env, stack, overlay, known_generation, known_record)
        env.state.begin("nftables", f"chains:{program}", base, durable=False)
        send = functools.partial(nftables_netlink.send_batch, batch, sock=sock)
        committed = commit(env, sock, gen0, send, "chain update")
        with verifying("chain update", "updated chains"):
            # The read-back must see the kernel of our transaction and of nothing else: the
            # generation is ours (one more) before it and the same after it.
            gen1 = generation(env.netns, sock)
            if gen1 != gen0 + 1:
                raise ReadBackWrong("another transaction was committed with ours")
            blocks, masked = _check(
                env, sock, chains, rules, created_sets, element_sets, want, dispatch, heads,
                overlay,
            )  # fmt: skip
            if generation(env.netns, sock) != gen1:
                raise ReadBackWrong("another transaction was committed during the read-back")
        gone = {*deleted_chains, *deleted_sets}
        sets = {k: v for k, v in (overlay.sets if overlay else {}).items() if k not in gone}
        sets.update(blocks)
        old_masked = dict(overlay.masked) if overlay is not None else {}
        kept = {k: v for k, v in old_masked.items() if k not in gone and k not in masked}
        counts = {
            **{n: ["chain", rules[n]] for n in chains},
            **{n: ["set", len(set(want.get(n, ())))] for n in created_sets},
            **{
                n: [old_masked[n][0], len(set(want.get(n, ())))]
                for n in element_sets
                if n in old_masked
            },
            **{n: [kind, len(set(want.get(n, ())))] for n, kind in dispatch.items()},
        }
        all_masked = {**kept, **counts}
        for name in all_masked:
            sets[name] = masked[name] if name in masked else sets[name]
        removed = [*(overlay.removed if overlay else ()), *gone]
        new_overlay = record_overlay(
            env, overlay, base, known_record, program, sets, all_masked, removed
        )
    return FastResult(
        True,
        "local workload chains changed",
        new_overlay,
        gen1,
        known_record,
        tuple(chains),
        committed,
    )


def _check(
    env: Env,
    sock: socket.socket,
    chains: list[str],
    rules: Mapping[str, int],
    created_sets: list[str],
    element_sets: list[str],
    want: Mapping[str, Iterable[str]],
    dispatch: Mapping[str, str],
    heads: Mapping[str, str] | None,
    overlay: SetOverlay | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Check the kernel after the batch (no other transaction in between: the caller checks
    the generation); (listing blocks of the changed existing sets, stand-ins of the created
    or flushed chains and created sets).

    Checked: every created or flushed chain exists with exactly the rules the update has
    (their number; the rules themselves are what the kernel acknowledged in the transaction,
    and the encoder is held to nft's bytes by the kernel differential tests), created sets
    exist, and every changed set holds exactly the elements it should (decoded from the
    kernel's dump, as the set-only path checks them). Deletions are not looked up: the
    acknowledged transaction made them, and nothing else has run since."""
    rb = nftables_readback
    dumped = rb.dump_chains(chains, TABLE, env.netns, sock)
    problems = [f"chain {n}: missing" for n in chains if n not in dumped]
    problems += [
        f"chain {n}: {len(dumped[n].rules)} rules, not {rules[n]}"
        for n in chains
        if n in dumped and len(dumped[n].rules) != rules[n]
    ]
    sets = rb.dump_set_decls(created_sets, TABLE, env.netns, sock, True)
    problems += [f"set {n}: missing" for n in created_sets if n not in sets]
    if problems:
        raise ReadBackWrong("; ".join(problems[:5]))
    masked = {n: stand_in("chain", n, rb.dump_digest({n: dumped[n]})) for n in chains}
    masked.update((n, stand_in("set", n, rb.set_dump_digest(sets[n]))) for n in created_sets)
    # Existing sets whose elements changed: as the set-only path reads them. A set a chain
    # update created earlier is a stand-in: its elements are checked, its digest taken again.
    # The dispatch maps and wl-ifaces (interface names, verdicts) are stand-ins too, and so are
    # sets an earlier chain update made.
    old_masked = overlay.masked if overlay is not None else {}
    listed = [n for n in element_sets if n not in old_masked and n not in dispatch]
    again = {
        n: dispatch.get(n) or old_masked[n][0]
        for n in element_sets
        if n in old_masked or n in dispatch
    }
    masked.update(restate(again, want, env.netns, sock))
    blocks = _read_back(listed, want, env.netns, heads, overlay, sock) if listed else {}
    return blocks, masked
