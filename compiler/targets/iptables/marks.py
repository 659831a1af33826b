"""Packet-mark bits: how a verdict travels between chains (and tables).

In iptables ``ACCEPT`` ends the whole built-in chain, and for pod-to-pod traffic the
*destination's* ingress must still run after the source's egress allowed (SEMANTICS.md
§Evaluation order step 9). So, as in Felix, a policy that allows only **sets a bit and returns**;
the top-level chain ``ACCEPT``s at its very end, once every side that applies has been checked.
A deny is ``DROP``/``REJECT`` straight away: it needs no bit.

Bits, handed out from the lowest set bit of ``iptablesMarkMask`` upward (Felix's order for the
first two; the default mask gives ``0x10000`` … ``0x200000``):

========== ==============================================================================
accept     a policy/profile rule (or a failsafe port) allowed this endpoint and direction;
           an endpoint chain returns as soon as it is set, the top-level chain accepts on it
pass       a policy passed: the rest of its tier is skipped (each later policy jump is
           guarded by "pass clear"), and the end-of-tier deny does not apply
scratch0/1 match blocks: a rule whose criteria are ORs of several CIDRs or port groups is
           evaluated in blocks, each block's OR leaving its result in one scratch bit
           (see :mod:`.lower`)
from_wl    the packet came from a local workload's interface: set by the workload's egress
           chain (filter) or by the interface classifier (raw/mangle), read by the input
           path to apply ``defaultEndpointToHostAction``
untracked  a doNotTrack policy allowed the packet in the raw table (it was ``NOTRACK``-ed):
           the host endpoint's chains in mangle and filter see it and skip their policy,
           because an untracked allow decides that direction (the evaluator's order)
========== ==============================================================================

Every rule touches only these bits (``--set-xmark value/bits``, ``--mark value/bits``), so marks
that other software uses (kube-proxy's masquerade bit, …) survive.

>>> m = Marks.from_mask(0xFFFF0000)
>>> hex(m.accept), hex(m.pass_), hex(m.untracked)
('0x10000', '0x20000', '0x200000')
>>> m.match(m.accept)
('-m', 'mark', '--mark', '0x10000/0x10000')
>>> m.set(0, m.accept | m.pass_)
('-j', 'MARK', '--set-xmark', '0x0/0x30000')
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.targets.common import mark_bits

MARK_BITS_NEEDED = 6


@dataclass(frozen=True, slots=True)
class Marks:
    accept: int
    pass_: int
    scratch0: int
    scratch1: int
    from_wl: int
    untracked: int

    @classmethod
    def from_mask(cls, mask: int) -> Marks | None:
        """The bits to use, or None when the mask has fewer than six bits."""
        bits = mark_bits(mask, MARK_BITS_NEEDED)
        return None if bits is None else cls(*bits)

    @property
    def all(self) -> int:
        return (
            self.accept | self.pass_ | self.scratch0 | self.scratch1 | self.from_wl | self.untracked
        )

    @property
    def per_table(self) -> int:
        """Bits a filter/mangle top-level chain resets: all but ``untracked`` (set in raw)."""
        return self.all & ~self.untracked

    @staticmethod
    def match(bits: int, value: int | None = None) -> tuple[str, ...]:
        """Match "all of ``bits`` set" (or ``(mark & bits) == value``)."""
        value = bits if value is None else value
        return ("-m", "mark", "--mark", f"{value:#x}/{bits:#x}")

    @staticmethod
    def clear_match(bits: int) -> tuple[str, ...]:
        """Match "all of ``bits`` clear"."""
        return ("-m", "mark", "--mark", f"0x0/{bits:#x}")

    @staticmethod
    def set(value: int, bits: int) -> tuple[str, ...]:
        """Target: set ``bits`` of the mark to ``value`` (other bits untouched)."""
        return ("-j", "MARK", "--set-xmark", f"{value:#x}/{bits:#x}")
