"""IPAM state: blocks, their affinities and allocations, kept in one JSON file.

The file is the whole truth about which addresses are handed out (Calico keeps the same facts in
its ``IPAMBlock`` and ``BlockAffinity`` resources). It is read and written under an exclusive
``flock`` on a sibling ``.lock`` file, so two ``tortie ipam`` processes on one machine serialise,
and written atomically (temporary file in the same directory, ``fsync``, ``rename``, ``fsync``
of the directory), so a crash leaves either the old file or the new one, never half of one.

The JSON is deterministic: blocks sorted by address, allocations by ordinal, keys sorted. The
same state always gives byte-identical files, which keeps diffs in review small::

    {
      "blocks": [
        {"affinity": "node-a", "allocations": [[0, "default/web-1", "node-a"]],
         "cidr": "10.65.0.0/26", "pool": "default-ipv4", "state": "confirmed"}
      ],
      "version": 1
    }

>>> s = IPAMState()
>>> b = s.add_block(Block(ipaddress.ip_network("10.65.0.0/26"), "p", "n1"))
>>> b.allocations[0] = Allocation("ns/pod", "n1")
>>> IPAMState.from_json(s.to_json()) == s
True
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AFFINITY_STATES",
    "Allocation",
    "Block",
    "IPAMState",
    "StateError",
    "StateFile",
    "write_atomic",
]

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

FORMAT_VERSION = 1
# BlockAffinity states (SEMANTICS.md §IPAM): a claim is pending until confirmed; a release
# passes through pendingDeletion. Only confirmed blocks are exported by BGP.
AFFINITY_STATES = ("confirmed", "pending", "pendingDeletion")


class StateError(ValueError):
    """The state file is not valid IPAM state (bad JSON, overlapping blocks, bad ordinals)."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """Who holds an address: the ``handle`` (``namespace/pod``, ``tunnel:<node>``...) and the
    node it was allocated for (None when unknown). An allocation whose node differs from its
    block's affinity is *borrowed*: that node advertises the address as a /32 itself."""

    handle: str
    node: str | None = None


@dataclass(slots=True)
class Block:
    """One IPAM block: a CIDR carved from a pool, an optional host affinity, an allocation map.

    ``allocations`` maps an ordinal (the offset of the address in the block) to its
    :class:`Allocation`. Mutable on purpose: the allocator updates blocks in place inside one
    locked transaction.
    """

    cidr: IPNet
    pool: str
    affinity: str | None = None
    state: str = "confirmed"
    allocations: dict[int, Allocation] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.cidr.num_addresses

    @property
    def free(self) -> int:
        return self.size - len(self.allocations)

    def address(self, ordinal: int) -> IPAddr:
        return self.cidr.network_address + ordinal

    def ordinal(self, addr: IPAddr) -> int:
        return int(addr) - int(self.cidr.network_address)

    def first_free(self) -> int | None:
        """The lowest unallocated ordinal (deterministic allocation), or None when full."""
        if len(self.allocations) >= self.size:
            return None
        for i in range(self.size):
            if i not in self.allocations:
                return i
        return None  # pragma: no cover - unreachable: the size check above

    def as_dict(self) -> dict[str, Any]:
        return {
            "cidr": str(self.cidr),
            "pool": self.pool,
            "affinity": self.affinity,
            "state": self.state,
            "allocations": [[o, a.handle, a.node] for o, a in sorted(self.allocations.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        try:
            if not isinstance(data.get("cidr"), str):
                raise TypeError("cidr must be a string")
            cidr = ipaddress.ip_network(data["cidr"])
            pool = str(data["pool"])
            affinity = data.get("affinity")
            state = str(data.get("state", "confirmed"))
            allocations = {
                int(o): Allocation(str(h), None if n is None else str(n))
                for o, h, n in data.get("allocations", [])
            }
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"bad block entry {data!r}: {e}") from None
        if affinity is not None and not isinstance(affinity, str):
            raise StateError(f"block {cidr}: affinity must be a node name or null")
        if state not in AFFINITY_STATES:
            raise StateError(f"block {cidr}: unknown affinity state {state!r}")
        bad = [o for o in allocations if not 0 <= o < cidr.num_addresses]
        if bad:
            raise StateError(f"block {cidr}: ordinals {bad} are outside the block")
        return cls(cidr, pool, affinity, state, allocations)


@dataclass(slots=True)
class IPAMState:
    """Every block, by CIDR."""

    blocks: dict[IPNet, Block] = field(default_factory=dict)

    def add_block(self, block: Block) -> Block:
        for other in self.blocks.values():
            if other.cidr.version == block.cidr.version and other.cidr.overlaps(block.cidr):
                raise StateError(f"block {block.cidr} overlaps existing block {other.cidr}")
        self.blocks[block.cidr] = block
        return block

    def sorted_blocks(self) -> list[Block]:
        return sorted(self.blocks.values(), key=lambda b: (b.cidr.version, b.cidr))

    def block_of(self, addr: IPAddr) -> Block | None:
        """The block that contains ``addr``, if any."""
        for block in self.blocks.values():
            if block.cidr.version == addr.version and addr in block.cidr:
                return block
        return None

    def to_json(self) -> str:
        data = {
            "version": FORMAT_VERSION,
            "blocks": [b.as_dict() for b in self.sorted_blocks()],
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> IPAMState:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise StateError(f"IPAM state is not JSON: {e}") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise StateError(f"IPAM state must be an object with version {FORMAT_VERSION}")
        state = cls()
        blocks = data.get("blocks", [])
        if not isinstance(blocks, list):
            raise StateError("IPAM state: blocks must be a list")
        for item in blocks:
            if not isinstance(item, dict):
                raise StateError(f"bad block entry {item!r}")
            state.add_block(Block.from_dict(item))
        return state


def write_atomic(
    path: str, text: str, mode: int = 0o644, validate: Callable[[str], None] | None = None
) -> None:
    """Replace ``path`` with ``text``: temp file in the same directory, fsync, rename, fsync dir.

    Readers see the old content or the new one, never a mix, even across a crash. ``validate``
    is called with the temporary file's path before the rename; if it raises, ``path`` is left
    untouched and the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if validate is not None:
            validate(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StateFile:
    """The IPAM state file at ``path``, with its lock at ``path + ".lock"``.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> sf = StateFile(os.path.join(d, "ipam.json"))
    >>> with sf.transaction() as st:
    ...     _ = st.add_block(Block(ipaddress.ip_network("10.0.0.0/30"), "p", "n1"))
    >>> [str(b.cidr) for b in sf.read().sorted_blocks()]
    ['10.0.0.0/30']
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StateError(
                f"cannot create the lock file {self.lock_path}: {e.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _load(self) -> IPAMState:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return IPAMState()
        except OSError as e:
            raise StateError(f"cannot read the state file: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise StateError(f"not UTF-8 text: {e.reason} at byte {e.start}") from None
        return IPAMState.from_json(text)

    def read(self) -> IPAMState:
        """A snapshot of the state (empty when the file does not exist yet)."""
        with self._locked(exclusive=False):
            return self._load()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[IPAMState]:
        """Lock, load, let the body change the state, write it back if it changed.

        An exception in the body discards every change: the file is left as it was.
        """
        with self._locked(exclusive=True):
            state = self._load()
            before = state.to_json()
            yield state
            after = state.to_json()
            if after != before:
                try:
                    write_atomic(self.path, after)
                except OSError as e:
                    raise StateError(f"cannot write the state file: {e.strerror or e}") from None
