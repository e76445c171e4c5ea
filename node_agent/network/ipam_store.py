"""IPAM state on disk: one file per allocated address, under a file lock.

Layout, for network `name` under the state directory::

    ipam/<name>/lock                     flock(2)ed for every change
    ipam/<name>/last_reserved_ip         the address reserved last (round-robin)
    ipam/<name>/10.244.1.5               one file per allocated address: a JSON
                                         record with containerID and ifname
                                         (plus whatever the caller records)
    ipam/<name>/by-attachment/<cid>:<ifname>
                                         a symlink naming that address, so the
                                         attachment's address is found without
                                         reading every record

An address file is created with O_EXCL while the lock is held, so two
processes (the service and a plugin binary, or two plugin binaries) never
hand out one address twice; the state survives restarts because it is the
files. Writes of a record go through a temporary file and rename(2), so a
crash leaves either the old record or the new one.

The container id cannot contain ':' and neither can an interface name, so
`<cid>:<ifname>` names one attachment unambiguously.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from node_agent.network.allocator import Allocator

LAST_RESERVED = "last_reserved_ip"
BY_ATTACHMENT = "by-attachment"


class AlreadyAttachedError(Exception):
    """(container id, ifname) already holds an address."""

    def __init__(self, container_id: str, ifname: str, address: ipaddress.IPv4Address):
        super().__init__(f"container {container_id} interface {ifname} already holds {address}")
        self.address = address


class ExhaustedError(Exception):
    """No free address is left in the range."""


@dataclass
class Allocation:
    """An allocated address and its record."""

    address: ipaddress.IPv4Address
    record: dict

    @property
    def container_id(self) -> str:
        return self.record.get("containerID", "")

    @property
    def ifname(self) -> str:
        return self.record.get("ifname", "")


def _is_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


class IpamStore:
    """The allocations of one network in `directory` (created if missing)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._links = os.path.join(directory, BY_ATTACHMENT)
        os.makedirs(self._links, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(directory, "lock")

    @classmethod
    def for_network(cls, state_dir: str, network: str) -> "IpamStore":
        return cls(os.path.join(state_dir, "ipam", network))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock (blocking). Not re-entrant."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    # --- reads (no lock needed: files appear and vanish atomically) ---------

    def in_use(self) -> set[ipaddress.IPv4Address]:
        return {ipaddress.IPv4Address(n) for n in os.listdir(self.directory) if _is_address(n)}

    def find(self, container_id: str, ifname: str) -> Allocation | None:
        """The allocation of attachment (container_id, ifname), or None."""
        try:
            name = os.readlink(self._link(container_id, ifname))
        except FileNotFoundError:
            return None
        record = self._read(name)
        if record is None or record.get("containerID") != container_id or record.get("ifname") != ifname:
            return None
        return Allocation(ipaddress.IPv4Address(name), record)

    def get(self, address: ipaddress.IPv4Address) -> Allocation | None:
        record = self._read(str(address))
        return None if record is None else Allocation(address, record)

    def list(self) -> list[Allocation]:
        """Every allocation, by address."""
        out = []
        for addr in sorted(self.in_use()):
            record = self._read(str(addr))
            if record is not None:
                out.append(Allocation(addr, record))
        return out

    # --- changes -------------------------------------------------------------

    def reserve(self, allocator: Allocator, container_id: str, ifname: str,
                record: dict | None = None) -> ipaddress.IPv4Address:
        """Allocate the next free address to (container_id, ifname).

        Raises AlreadyAttachedError when the attachment holds an address
        already (nothing changes), ExhaustedError when the range is full.
        """
        with self.locked():
            existing = self.find(container_id, ifname)
            if existing is not None:
                raise AlreadyAttachedError(container_id, ifname, existing.address)
            in_use = self.in_use()
            last = self._last_reserved()
            while True:
                addr = allocator.next(in_use, last)
                if addr is None:
                    raise ExhaustedError(f"no IP addresses available in {allocator.subnet}"
                                         f" ({allocator.capacity} in use)")
                body = dict(record or {}, containerID=container_id, ifname=ifname)
                try:
                    fd = os.open(os.path.join(self.directory, str(addr)),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                except FileExistsError:  # only if someone bypassed the lock
                    in_use.add(addr)
                    continue
                try:
                    os.write(fd, json.dumps(body).encode())
                finally:
                    os.close(fd)
                break
            link = self._link(container_id, ifname)
            try:
                os.unlink(link)  # a stale link whose address file is gone
            except FileNotFoundError:
                pass
            os.symlink(str(addr), link)
            self._write_atomic(LAST_RESERVED, str(addr))
            return addr

    def update(self, address: ipaddress.IPv4Address, record: dict) -> None:
        """Replace the record of an allocated address (keeps containerID/ifname)."""
        with self.locked():
            current = self._read(str(address))
            if current is None:
                raise FileNotFoundError(errno.ENOENT, "address not allocated", str(address))
            body = dict(record, containerID=current["containerID"], ifname=current["ifname"])
            self._write_atomic(str(address), json.dumps(body))

    def release(self, container_id: str, ifname: str) -> ipaddress.IPv4Address | None:
        """Free the address of (container_id, ifname); None if it held none. Idempotent."""
        with self.locked():
            alloc = self.find(container_id, ifname)
            if alloc is not None:
                self._unlink(str(alloc.address))
            self._unlink(os.path.relpath(self._link(container_id, ifname), self.directory))
            return alloc.address if alloc else None

    # --- helpers -------------------------------------------------------------

    def _link(self, container_id: str, ifname: str) -> str:
        return os.path.join(self._links, f"{container_id}:{ifname}")

    def _last_reserved(self) -> ipaddress.IPv4Address | None:
        try:
            with open(os.path.join(self.directory, LAST_RESERVED)) as f:
                return ipaddress.IPv4Address(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _read(self, name: str) -> dict | None:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "containerID" not in record:
            # A record cut short cannot be trusted for anything but "in use".
            return {"containerID": "", "ifname": "", "corrupt": True}
        return record

    def _write_atomic(self, name: str, text: str) -> None:
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
