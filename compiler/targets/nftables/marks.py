"""Packet-mark bits and the verdict statements built on them.

Why marks: an endpoint chain jumps to one chain per policy, and a policy's verdict must reach
the endpoint chain. ``accept`` cannot carry it — in nftables ``accept`` ends the whole base
chain, and for pod-to-pod traffic the *destination's* ingress must still run after the source's
egress allowed. So (like Felix) a policy chain records its verdict in a mark bit and ``return``s:

* **accept** bit: a rule allowed; the endpoint chain returns at once ("allowed for this endpoint
  and direction"), and the base chain goes on to the next check. Only the base chain's own
  ``policy accept`` (after every check ran) lets the packet through.
* **pass** bit: a rule passed; the endpoint chain skips the rest of that tier.
* **untracked** bit: a doNotTrack rule allowed in the raw hook (the packet was ``notrack``-ed);
  the host endpoint's chains in the later hooks see it and skip their policy, as the evaluator
  does (an untracked allow decides that direction).

Deny needs no mark: ``drop``/``reject`` ends processing of the packet.

Bits come from ``FelixConfig.mark_mask`` (``nftablesMarkMask``), lowest set bit first, as Felix
hands them out; every other mark bit is left untouched (``meta mark set meta mark & ~bits``).

>>> m = Marks.from_mask(0xFFFF0000)
>>> hex(m.accept), hex(m.pass_), hex(m.untracked)
('0x10000', '0x20000', '0x40000')
>>> m.clear(m.accept | m.pass_)
'meta mark set meta mark & 0xfffcffff'
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.targets.common import mark_bits

MARK_BITS_NEEDED = 3


def hexmark(value: int) -> str:
    return f"0x{value:08x}"


@dataclass(frozen=True, slots=True)
class Marks:
    accept: int
    pass_: int
    untracked: int

    @classmethod
    def from_mask(cls, mask: int) -> Marks | None:
        """The bits to use, or None when the mask has fewer than three bits."""
        bits = mark_bits(mask, MARK_BITS_NEEDED)
        return None if bits is None else cls(*bits)

    @property
    def all(self) -> int:
        return self.accept | self.pass_ | self.untracked

    def set(self, bits: int) -> str:
        return f"meta mark set meta mark | {hexmark(bits)}"

    def clear(self, bits: int) -> str:
        return f"meta mark set meta mark & {hexmark(~bits & 0xFFFFFFFF)}"

    def is_set(self, bit: int) -> str:
        return f"meta mark & {hexmark(bit)} == {hexmark(bit)}"

    def is_clear(self, bit: int) -> str:
        return f"meta mark & {hexmark(bit)} == 0x00000000"
