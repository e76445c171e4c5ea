"""Pod CIDRs carved out of the cluster CIDR, as kube-controller-manager's cidrset.

The cluster CIDR (e.g. 10.244.0.0/16) is split into equal subnets of
`mask_size` bits (e.g. /24, 256 of them); each node gets one. The allocator
is pure bookkeeping in memory, with no I/O: the node IPAM controller rebuilds
it from the Nodes' `spec.podCIDRs` at startup (`occupy`), so the Nodes are
the only durable record.

- `allocate()` returns the lowest free subnet, so results are deterministic;
  it raises `CIDRRangeExhausted` when none is left.
- `occupy(cidr)` marks every subnet overlapping `cidr` as used (a CIDR wider
  than one subnet takes all it covers, as in Kubernetes); idempotent.
- `release(cidr)` frees them again; releasing a free subnet is harmless.

Both raise `CIDRError` for a CIDR that is malformed, of the other IP family,
or entirely outside the cluster CIDR.
"""

from __future__ import annotations

import ipaddress
from typing import Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Kubernetes refuses cluster CIDR / mask size pairs that make more than
# 2**16 subnets (clusterSubnetMaxDiff); so do we, which also bounds memory.
MAX_SUBNET_BITS = 16


class CIDRError(ValueError):
    """A CIDR that is malformed or does not fit the cluster CIDR."""


class CIDRRangeExhausted(CIDRError):
    """Every subnet of the cluster CIDR is in use."""


class CIDRAllocator:
    """Hands out the `mask_size`-bit subnets of `cluster_cidr` (see the module docstring)."""

    def __init__(self, cluster_cidr: str, mask_size: int):
        try:
            self.cluster = ipaddress.ip_network(cluster_cidr, strict=True)
        except ValueError as e:
            raise CIDRError(f"invalid cluster CIDR {cluster_cidr!r}: {e}") from None
        prefix = self.cluster.prefixlen
        if not prefix <= mask_size <= self.cluster.max_prefixlen:
            raise CIDRError(f"node CIDR mask size {mask_size} must be between the cluster CIDR's "
                            f"prefix length {prefix} and {self.cluster.max_prefixlen}")
        if mask_size - prefix > MAX_SUBNET_BITS:
            raise CIDRError(f"node CIDR mask size {mask_size} is more than {MAX_SUBNET_BITS} bits longer "
                            f"than the cluster CIDR {cluster_cidr} (too many subnets)")
        self.mask_size = mask_size
        self.capacity = 1 << (mask_size - prefix)
        self._host_bits = self.cluster.max_prefixlen - mask_size
        self._base = int(self.cluster.network_address)
        self._used = 0   # bit i set: subnet i is in use
        self._count = 0

    def __repr__(self) -> str:
        return f"<CIDRAllocator {self.cluster} /{self.mask_size} used={self._count}/{self.capacity}>"

    @property
    def used(self) -> int:
        """How many subnets are in use."""
        return self._count

    def subnet(self, index: int) -> str:
        """The subnet with this index (0 is the lowest), as a string."""
        if not 0 <= index < self.capacity:
            raise IndexError(index)
        address = ipaddress.ip_address(self._base + (index << self._host_bits))
        return f"{address}/{self.mask_size}"

    def allocate(self) -> str:
        """Mark the lowest free subnet used and return it. Raises CIDRRangeExhausted."""
        # The lowest zero bit of the bitmap is the lowest free subnet.
        index = (~self._used & (self._used + 1)).bit_length() - 1
        if index >= self.capacity:
            raise CIDRRangeExhausted(f"no pod CIDR left in cluster CIDR {self.cluster}: all "
                                     f"{self.capacity} /{self.mask_size} subnets are in use")
        self._set(index, index + 1, True)
        return self.subnet(index)

    def occupy(self, cidr: str) -> None:
        """Mark every subnet overlapping `cidr` as used. Idempotent. Raises CIDRError."""
        self._set(*self._span(cidr), True)

    def release(self, cidr: str) -> None:
        """Mark every subnet overlapping `cidr` as free. Idempotent. Raises CIDRError."""
        self._set(*self._span(cidr), False)

    def is_used(self, cidr: str) -> bool:
        """Whether every subnet overlapping `cidr` is in use."""
        first, last = self._span(cidr)
        return all(self._used >> i & 1 for i in range(first, last))

    # ------------------------------------------------------------- internals

    def _span(self, cidr: str) -> tuple[int, int]:
        """[first, last) subnet indexes that `cidr` overlaps."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as e:
            raise CIDRError(f"invalid CIDR {cidr!r}: {e}") from None
        if net.version != self.cluster.version:
            raise CIDRError(f"CIDR {cidr} is IPv{net.version}; the cluster CIDR {self.cluster} "
                            f"is IPv{self.cluster.version}")
        if not net.overlaps(self.cluster):
            raise CIDRError(f"CIDR {cidr} is outside the cluster CIDR {self.cluster}")
        start = max(int(net.network_address), self._base)
        end = min(int(net.broadcast_address), int(self.cluster.broadcast_address))
        return (start - self._base) >> self._host_bits, ((end - self._base) >> self._host_bits) + 1

    def _set(self, first: int, last: int, used: bool) -> None:
        mask = ((1 << (last - first)) - 1) << first
        before = (self._used & mask).bit_count()
        self._used = self._used | mask if used else self._used & ~mask
        self._count += (last - first - before) if used else -before
