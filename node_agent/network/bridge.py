"""The node bridge: exists, really is a bridge, holds the gateway, is up.

`ensure_bridge` is declarative and safe to run before every Add: it creates
what is missing, fixes what drifted (address, MTU, state), and refuses a
same-named link that is not a bridge rather than reuse it. IP forwarding is
switched on in the node's namespace, since the bridge routes pod traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.network.errors import INTERFACE_FAILURE, INVALID_NETWORK_CONFIG, CniError


@dataclass(frozen=True)
class BridgeInfo:
    index: int
    name: str
    mac: str
    mtu: int


def link_kind(link) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def gateway_mac(gateway: ipaddress.IPv4Address) -> str:
    """A stable, locally administered MAC for the bridge (0a:58 + the gateway).

    A bridge without an assigned MAC takes the smallest of its ports' and
    changes it as pods come and go, which breaks pods' ARP caches.
    """
    return "0a:58:" + ":".join(f"{b:02x}" for b in gateway.packed)


async def get_link(ipr: AsyncIPRoute, ifname: str):
    """The link named `ifname`, or None."""
    try:
        return (await ipr.link("get", ifname=ifname))[0]
    except NetlinkError as e:
        if e.code == 19:  # ENODEV
            return None
        raise


async def ensure_bridge(ipr: AsyncIPRoute, name: str, gateway: ipaddress.IPv4Address,
                        prefixlen: int, mtu: int) -> BridgeInfo:
    """Make bridge `name` exist with `gateway/prefixlen`, MTU `mtu`, up.

    CniError 7 when `name` exists but is not a bridge; 100 when netlink fails.
    """
    try:
        link = await get_link(ipr, name)
        if link is None:
            try:
                await ipr.link("add", ifname=name, kind="bridge", address=gateway_mac(gateway), mtu=mtu)
            except NetlinkError as e:
                if e.code != 17:  # EEXIST: created concurrently; checked below
                    raise
            link = await get_link(ipr, name)
            if link is None:
                raise CniError(INTERFACE_FAILURE, f"bridge {name} vanished while being created")
        if link_kind(link) != "bridge":
            raise CniError(INVALID_NETWORK_CONFIG, f"{name} is not a bridge",
                           f"a link named {name} exists with kind {link_kind(link) or 'unknown'!r}")
        index = link["index"]
        if link.get("mtu") != mtu:
            await ipr.link("set", index=index, mtu=mtu)
        addrs = [(a.get("address"), a["prefixlen"]) async for a in await ipr.addr("dump", index=index, family=2)]
        if (str(gateway), prefixlen) not in addrs:
            try:
                await ipr.addr("add", index=index, address=str(gateway), prefixlen=prefixlen)
            except NetlinkError as e:
                if e.code != 17:
                    raise
        if not link["flags"] & 1:  # IFF_UP
            await ipr.link("set", index=index, state="up")
        return BridgeInfo(index=index, name=name, mac=link.get("address") or "", mtu=mtu)
    except NetlinkError as e:
        raise CniError(INTERFACE_FAILURE, f"failed to set up bridge {name}", str(e)) from None


async def bridge_problems(ipr: AsyncIPRoute, name: str, gateway: ipaddress.IPv4Address,
                          prefixlen: int) -> list[str]:
    """What is wrong with the bridge, for Check and Status; empty when all is well."""
    link = await get_link(ipr, name)
    if link is None:
        return [f"bridge {name} does not exist"]
    if link_kind(link) != "bridge":
        return [f"{name} is not a bridge"]
    problems = []
    if not link["flags"] & 1:
        problems.append(f"bridge {name} is down")
    addrs = [(a.get("address"), a["prefixlen"]) async for a in await ipr.addr("dump", index=link["index"], family=2)]
    if (str(gateway), prefixlen) not in addrs:
        problems.append(f"bridge {name} lacks the gateway address {gateway}/{prefixlen}")
    return problems
