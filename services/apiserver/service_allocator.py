"""Cluster IPs and node ports for Services, allocated in etcd.

Every allocated address or port is one key, created only if absent:
`/registry/serviceipallocations/<ip>` and `/registry/servicenodeportallocations/<proto>/<port>`
(as Kubernetes' IPAddress objects do for cluster IPs). Creating the key is
the allocation, so two API servers on the same etcd can never hand out the
same one; deleting it is the release. The value names the Service, which
lets `repair()` free allocations whose Service is gone (an API server that
died between allocating and storing the Service).

A requested address or port is checked against the configured range and
refused when taken; a free one is picked at random first (few collisions in
a mostly empty range) and then by scanning what is allocated.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Iterable

from .errors import FieldError
from .storage import KeyExistsError, KeyNotFoundError, Storage

IP_PREFIX = b"/registry/serviceipallocations/"
PORT_PREFIX = b"/registry/servicenodeportallocations/"
RANDOM_TRIES = 16


class AllocationError(Exception):
    """A requested IP or port cannot be had; carries the FieldError to report."""

    def __init__(self, error: FieldError):
        super().__init__(str(error))
        self.error = error


class ServiceAllocator:
    def __init__(self, storage: Storage, service_cidr: str = "10.96.0.0/16",
                 node_port_range: tuple[int, int] = (30000, 32767)):
        self.storage = storage
        self.network = ipaddress.ip_network(service_cidr)
        if self.network.num_addresses < 4:
            raise ValueError(f"service CIDR {service_cidr} is too small")
        self.node_ports = node_port_range

    # ---------------------------------------------------------------- IPs

    def first_ip(self) -> str:
        """The address the `kubernetes` Service gets: the range's first host."""
        return str(self.network.network_address + 1)

    async def allocate_ip(self, owner: str, requested: str = "", path: str = "spec.clusterIP") -> str:
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                raise AllocationError(FieldError(path, "must be a valid IP address", requested)) from None
            if ip not in self.network or ip in (self.network.network_address, self.network.broadcast_address):
                raise AllocationError(FieldError(
                    path, f"provided IP is not in the valid range. The range of valid IPs is "
                          f"{self.network}", requested))
            if not await self._claim(IP_PREFIX + requested.encode(), owner):
                raise AllocationError(FieldError(path, "provided IP is already allocated", requested))
            return requested
        size = self.network.num_addresses
        base = int(self.network.network_address)
        for _ in range(RANDOM_TRIES):
            candidate = str(ipaddress.ip_address(base + random.randrange(2, size - 1)))
            if await self._claim(IP_PREFIX + candidate.encode(), owner):
                return candidate
        taken = await self._taken(IP_PREFIX)
        for offset in range(2, size - 1):
            candidate = str(ipaddress.ip_address(base + offset))
            if candidate not in taken and await self._claim(IP_PREFIX + candidate.encode(), owner):
                return candidate
        raise AllocationError(FieldError(path, f"no free addresses left in the service range "
                                               f"{self.network}", ""))

    async def release_ip(self, ip: str) -> None:
        if ip and ip != "None":
            await self._release(IP_PREFIX + ip.encode())

    # -------------------------------------------------------------- ports

    async def allocate_port(self, owner: str, protocol: str, requested: int = 0,
                            path: str = "spec.ports[0].nodePort") -> int:
        lo, hi = self.node_ports
        prefix = PORT_PREFIX + protocol.encode() + b"/"
        if requested:
            if not lo <= requested <= hi:
                raise AllocationError(FieldError(
                    path, f"provided port is not in the valid range. The range of valid ports is "
                          f"{lo}-{hi}", requested))
            if not await self._claim(prefix + str(requested).encode(), owner):
                raise AllocationError(FieldError(path, "provided port is already allocated", requested))
            return requested
        for _ in range(RANDOM_TRIES):
            candidate = random.randint(lo, hi)
            if await self._claim(prefix + str(candidate).encode(), owner):
                return candidate
        taken = await self._taken(prefix)
        for candidate in range(lo, hi + 1):
            if str(candidate) not in taken and await self._claim(prefix + str(candidate).encode(), owner):
                return candidate
        raise AllocationError(FieldError(path, f"no free node ports left in {lo}-{hi}", 0))

    async def release_port(self, protocol: str, port: int) -> None:
        if port:
            await self._release(PORT_PREFIX + protocol.encode() + b"/" + str(port).encode())

    # ------------------------------------------------------------- repair

    async def repair(self, used_ips: Iterable[str], used_ports: Iterable[tuple[str, int]]) -> int:
        """Release allocations no existing Service uses (left by an API server
        that died between allocating and storing); returns how many."""
        ips = {IP_PREFIX + ip.encode() for ip in used_ips}
        ports = {PORT_PREFIX + proto.encode() + b"/" + str(port).encode() for proto, port in used_ports}
        freed = 0
        for prefix, used in ((IP_PREFIX, ips), (PORT_PREFIX, ports)):
            result = await self.storage.list(prefix)
            for kv in result.items:
                if kv.key not in used:
                    await self._release(kv.key)
                    freed += 1
        return freed

    # ------------------------------------------------------------ storage

    async def _claim(self, key: bytes, owner: str) -> bool:
        try:
            await self.storage.create(key, owner.encode())
            return True
        except KeyExistsError:
            return False

    async def _release(self, key: bytes) -> None:
        try:
            await self.storage.delete(key)
        except KeyNotFoundError:
            pass

    async def _taken(self, prefix: bytes) -> set[str]:
        result = await self.storage.list(prefix)
        return {kv.key[len(prefix):].decode() for kv in result.items}
