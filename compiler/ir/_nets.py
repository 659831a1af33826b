"""Fast paths for the ``ipaddress`` networks the IR holds (hot loops of the builder and passes).

``ipaddress.IPv4Network((n, 32))`` parses its argument, builds the address, validates the mask
and checks host bits: microseconds per network, and the builder and ``aggregate_cidrs`` make tens
of thousands of them from integers that are already valid. :func:`make_net` builds the very same
object (same class, same attributes, equal and hashing the same) directly. :func:`span` reads a
network's ``(version, first, last)`` from its fields instead of through properties.

>>> import ipaddress
>>> n = make_net(4, 0x0A000000, 24)
>>> n == ipaddress.ip_network("10.0.0.0/24"), hash(n) == hash(ipaddress.ip_network("10.0.0.0/24"))
(True, True)
>>> str(make_net(6, 1, 128)), list(make_net(4, 1, 32).hosts())
('::1/128', [IPv4Address('0.0.0.1')])
>>> span(ipaddress.ip_network("10.0.0.0/31"))
(4, 167772160, 167772161)
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from compiler.ir.nodes import IPNet

_new = object.__new__
# (netmask, prefixlen) per prefix length: what ``_make_netmask`` returns (and caches).
_V4_MASKS = [IPv4Network._make_netmask(p) for p in range(33)]  # type: ignore[attr-defined]
_V6_MASKS = [IPv6Network._make_netmask(p) for p in range(129)]  # type: ignore[attr-defined]


_FAMILY = {
    4: (IPv4Address, IPv4Network, _V4_MASKS, 32),
    6: (IPv6Address, IPv6Network, _V6_MASKS, 128),
}


def make_net(version: int, lo: int, prefixlen: int) -> IPNet:
    """``ip_network((lo, prefixlen))`` of that family, for a valid, aligned ``lo``: what
    ``IPv4Network.__init__`` / ``IPv6Network.__init__`` would set, in the same order."""
    address_class, network_class, masks, bits = _FAMILY[version]
    addr = _new(address_class)
    addr._ip = lo
    if version == 6:
        addr._scope_id = None
    net = _new(network_class)
    net.network_address = addr
    net.netmask, net._prefixlen = masks[prefixlen]
    if prefixlen == bits - 1:
        net.hosts = net.__iter__
    elif prefixlen == bits:
        net.hosts = lambda: [address_class(lo)]
    return net


def host_net(ip: IPv4Address | IPv6Address) -> IPNet:
    """The /32 or /128 network of one address (its scope id, if any, is not kept: as
    ``ip_network((int(ip), 32 or 128))``)."""
    if ip._version == 4:
        return make_net(4, ip._ip, 32)
    return make_net(6, ip._ip, 128)


def span(n: IPNet) -> tuple[int, int, int]:
    """``(version, first address, last address)`` as integers."""
    lo = n.network_address._ip
    return n._version, lo, lo + (1 << (n._max_prefixlen - n._prefixlen)) - 1
