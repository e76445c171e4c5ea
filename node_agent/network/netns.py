"""Network namespaces: netlink sessions and short actions inside them.

A netlink socket belongs to the namespace its creator was in when it was
created. Rather than fork a helper process (pyroute2's default for
`netns=`), a short-lived thread enters the namespace with setns(2) (which
changes only the calling thread), creates the socket (or runs a small
function) and exits; the rest of the process never changes namespace.
Each session is one `AsyncIPRoute` over such a socket; close it when done
(`async with netns_session(path) as ipr:`).

A namespace path that does not exist raises FileNotFoundError: namespaces
are never created here.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, TypeVar

from pyroute2 import AsyncIPRoute

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def netns_path(name_or_path: str) -> str:
    """`/run/netns/<name>` for a bare name (as `ip netns` makes), the path otherwise."""
    return name_or_path if "/" in name_or_path else os.path.join(NETNS_RUN_DIR, name_or_path)


def open_netns(path: str) -> int:
    """An O_RDONLY descriptor of the namespace at `path`.

    FileNotFoundError when the path does not exist; ValueError when it is not
    a network namespace (a plain file, or another kind of namespace).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # NS_GET_NSTYPE (0xb703) tells the kind of namespace; anything that is
        # not an nsfs file fails with ENOTTY.
        import fcntl
        try:
            kind = fcntl.ioctl(fd, 0xB703)
        except OSError:
            raise ValueError(f"{path} is not a namespace") from None
        if kind != CLONE_NEWNET:
            raise ValueError(f"{path} is not a network namespace")
    except BaseException:
        os.close(fd)
        raise
    return fd


def run_in_netns(fd: int | None, fn: Callable[[], T]) -> T:
    """Run `fn()` in a fresh thread inside the namespace `fd` (None: here)."""
    if fd is None:
        return fn()
    box: dict = {}

    def target() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    thread = threading.Thread(target=target, name="netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def netlink_socket(fd: int | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace `fd` (None: the current one)."""
    return run_in_netns(fd, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))


def iproute(fd: int | None) -> AsyncIPRoute:
    """An AsyncIPRoute session in the namespace `fd`; the caller closes it."""
    sock = netlink_socket(fd)
    return AsyncIPRoute(fileno=sock.detach())


@asynccontextmanager
async def netns_session(fd: int | None) -> AsyncIterator[AsyncIPRoute]:
    ipr = iproute(fd)
    try:
        yield ipr
    finally:
        ipr.close()


def write_sysctl(fd: int | None, name: str, value: str) -> None:
    """Set sysctl `name` (dotted, e.g. net.ipv4.ip_forward) inside namespace `fd`.

    /proc/sys/net resolves to the namespace of the thread that opens it.
    """
    path = "/proc/sys/" + name.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    run_in_netns(fd, write)


def read_sysctl(fd: int | None, name: str) -> str:
    path = "/proc/sys/" + name.replace(".", "/")

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return run_in_netns(fd, read)
