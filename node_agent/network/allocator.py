"""The pure IPv4 address allocator of one pod CIDR (no I/O).

Like CNI's host-local IPAM, addresses are handed out round-robin: the next
free address after the last one reserved, wrapping around at the end of the
range, so a just-released address is not reused at once (a stale peer may
still be talking to it). The network address, the broadcast address and
the gateway are never handed out.

The store (`ipam_store`) owns the state: which addresses are in use and
which was reserved last. This module only decides.
"""

from __future__ import annotations

import ipaddress
from typing import Collection


class Allocator:
    """Chooses addresses of `subnet` in [range_start, range_end], minus the gateway.

    range_start defaults to the first host address, range_end to the last.
    """

    def __init__(self, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address | None = None,
                 range_start: ipaddress.IPv4Address | None = None,
                 range_end: ipaddress.IPv4Address | None = None):
        if subnet.prefixlen > 30:
            raise ValueError(f"network {subnet} too small to allocate from")
        first = subnet.network_address + 1
        last = subnet.broadcast_address - 1
        self.subnet = subnet
        self.gateway = gateway if gateway is not None else first
        self.start = range_start if range_start is not None else first
        self.end = range_end if range_end is not None else last
        for what, addr in (("gateway", self.gateway), ("range start", self.start), ("range end", self.end)):
            if not first <= addr <= last:
                raise ValueError(f"{what} {addr} is not a host address of {subnet}")
        if self.start > self.end:
            raise ValueError(f"range start {self.start} is after range end {self.end}")

    @property
    def capacity(self) -> int:
        """How many addresses can be handed out at once."""
        size = int(self.end) - int(self.start) + 1
        return size - (1 if self.start <= self.gateway <= self.end else 0)

    def contains(self, addr: ipaddress.IPv4Address) -> bool:
        """True when `addr` is one this allocator could hand out."""
        return self.start <= addr <= self.end and addr != self.gateway

    def next(self, in_use: Collection[ipaddress.IPv4Address],
             last_reserved: ipaddress.IPv4Address | None = None) -> ipaddress.IPv4Address | None:
        """The first free address after `last_reserved` (wrapping), or None when full."""
        start, end = int(self.start), int(self.end)
        size = end - start + 1
        if last_reserved is not None and start <= int(last_reserved) <= end:
            offset = int(last_reserved) - start + 1
        else:
            offset = 0
        gateway = int(self.gateway)
        used = {int(a) for a in in_use}
        for i in range(size):
            candidate = start + (offset + i) % size
            if candidate != gateway and candidate not in used:
                return ipaddress.IPv4Address(candidate)
        return None
