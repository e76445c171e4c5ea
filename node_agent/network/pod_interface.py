"""A pod's interface: a veth pair between the node bridge and the pod namespace.

The host end is named from the attachment (`host_veth_name`), so Del and
Check find it from (container id, ifname) alone, even when the pod's
namespace is gone. It is created in the node namespace with its peer placed
straight into the pod namespace under the requested name (one netlink call:
the kernel refuses, EEXIST, if that name is taken there). Then, inside the
pod: the address, the interface up, a default route via the gateway, and
loopback up. Deleting either end of a veth pair deletes both.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.network.bridge import get_link, link_kind

IFF_UP = 1
MAIN_TABLE = 254


def host_veth_name(container_id: str, ifname: str) -> str:
    """The host end's name: "veth" + 11 hex digits of a hash of the attachment."""
    digest = hashlib.sha256(f"{container_id}:{ifname}".encode()).hexdigest()
    return "veth" + digest[:11]


@dataclass(frozen=True)
class PodLinks:
    host_name: str
    host_mac: str
    pod_name: str
    pod_mac: str
    mtu: int


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


async def create_veth(node: AsyncIPRoute, pod_fd: int, host_name: str, ifname: str,
                      bridge_index: int, mtu: int) -> tuple[str, str]:
    """Create the pair, host end enslaved to the bridge and up; (host MAC, pod MAC).

    NetlinkError 17 if a name is taken. The MACs are chosen here so that no
    read-back is needed to report them.
    """
    host_mac, pod_mac = random_mac(), random_mac()
    await node.link("add", ifname=host_name, kind="veth", mtu=mtu, master=bridge_index, address=host_mac,
                    state="up", peer={"ifname": ifname, "net_ns_fd": pod_fd, "mtu": mtu, "address": pod_mac})
    # Hairpin: a pod that reaches itself through its Service's address has
    # its packet DNAT'ed back out of the port it came in on.
    index = (await node.link_lookup(ifname=host_name))[0]
    await node.brport("set", index=index, mode=1)
    return host_mac, pod_mac


async def configure_pod_side(pod: AsyncIPRoute, ifname: str, address: ipaddress.IPv4Interface,
                             gateway: ipaddress.IPv4Address) -> str:
    """Address, up, default route via `gateway`, loopback up; returns the pod MAC as set."""
    link = await get_link(pod, ifname)
    if link is None:
        raise NetlinkError(19, f"{ifname} did not appear in the pod namespace")
    index = link["index"]
    await pod.link("set", index=1, state="up")  # lo
    await pod.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    await pod.link("set", index=index, state="up")
    await pod.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=index)
    return link.get("address") or ""


async def delete_link(ipr: AsyncIPRoute, ifname: str) -> bool:
    """Delete link `ifname`; False when it did not exist. Idempotent."""
    try:
        await ipr.link("del", ifname=ifname)
        return True
    except NetlinkError as e:
        if e.code == 19:  # ENODEV
            return False
        raise


async def pod_side_problems(pod: AsyncIPRoute, ifname: str, mac: str, address: ipaddress.IPv4Interface,
                            gateway: ipaddress.IPv4Address) -> list[str]:
    """What differs inside the pod from what Add set up; empty when all is well."""
    link = await get_link(pod, ifname)
    if link is None:
        return [f"interface {ifname} does not exist in the pod namespace"]
    problems = []
    if link_kind(link) != "veth":
        problems.append(f"{ifname} is a {link_kind(link) or 'non-veth'} link, not a veth")
    if mac and (link.get("address") or "").lower() != mac.lower():
        problems.append(f"{ifname} has MAC {link.get('address')}, expected {mac}")
    if not link["flags"] & IFF_UP:
        problems.append(f"{ifname} is down")
    addrs = [(a.get("address"), a["prefixlen"]) async for a in await pod.addr("dump", index=link["index"], family=2)]
    if (str(address.ip), address.network.prefixlen) not in addrs:
        problems.append(f"{ifname} lacks address {address}")
    routes = [r async for r in await pod.route("dump", table=MAIN_TABLE, family=2)]
    if not any(r["dst_len"] == 0 and r.get("gateway") == str(gateway) for r in routes):
        problems.append(f"no default route via {gateway}")
    return problems


async def host_side_problems(node: AsyncIPRoute, host_name: str, bridge_index: int) -> list[str]:
    link = await get_link(node, host_name)
    if link is None:
        return [f"host interface {host_name} does not exist"]
    problems = []
    if link.get("master") != bridge_index:
        problems.append(f"host interface {host_name} is not attached to the bridge")
    if not link["flags"] & IFF_UP:
        problems.append(f"host interface {host_name} is down")
    return problems
