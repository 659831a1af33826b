"""A cheap proof that a dataplane has not changed since it was read: the *stamp*.

Reading Tortie's nftables table back takes seconds at 10,000 policies (``nft list table`` twice,
then normalising ~100,000 lines), and ``tortie status`` did that every time. The kernel keeps a
counter that makes most of those reads unnecessary: the nf_tables **generation id**, bumped by
every committed transaction in the network namespace (NFT_MSG_GETGEN, < 1 ms). If it is the same
as when the table was read, no transaction committed since, so the table is what was read.

A stamp is ``nft-gen:<boot id>:<netns dev:inode>:<generation>``: the counter restarts at boot and
is per network namespace, so a stamp taken elsewhere never matches. :func:`read_stamped` takes one
before and one after a read and keeps it only if they agree (a commit in between would otherwise
be hidden). Dataplanes without such a counter (iptables legacy, eBPF maps) have no stamp ("");
callers then read the kernel as before.

Not covered, on purpose, because Tortie's objects never use them: set elements added from the
packet path (``update @set``/``add @set`` rules, element timeouts) change a set without a
transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from runtime.plan import Env, KernelState
from runtime.state import Record

__all__ = ["kernel_stamp", "read_stamped", "unchanged_since"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _netns_id(env: Env) -> str:
    path = f"/run/netns/{env.netns}" if env.netns else "/proc/self/ns/net"
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def _boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def kernel_stamp(dp: object) -> str:
    """The stamp of dataplane ``dp`` now, or "" when it has none (or it cannot be read)."""
    from runtime.nftables import NftablesDataplane
    from runtime.nftables_fast import generation

    if not isinstance(dp, NftablesDataplane):
        return ""
    env = dp.env
    try:
        return f"nft-gen:{_boot_id()}:{_netns_id(env)}:{generation(env.netns)}"
    except OSError as e:
        logger.debug("no nf_tables generation id: %s", e)
        return ""


def read_stamped(dp: object, read: Callable[[], T]) -> tuple[T, str]:
    """``read()`` and the stamp of ``dp`` it was read at ("" when none, or when something
    committed while it ran)."""
    before = kernel_stamp(dp)
    value = read()
    after = kernel_stamp(dp) if before else ""
    return value, before if before and before == after else ""


def unchanged_since(dp: object, record: Record) -> KernelState | None:
    """What ``dp``'s kernel holds if it provably still holds what ``record`` read back: the
    dataplane's ``recorded`` state while the kernel's stamp is the record's; None otherwise (no
    stamp, set updates recorded on top of it, or a dataplane without stamps)."""
    recorded = getattr(dp, "recorded", None)
    if not record.stamp or record.overlay or recorded is None:
        return None
    if kernel_stamp(dp) != record.stamp:
        return None
    state: KernelState | None = recorded(record)
    return state
