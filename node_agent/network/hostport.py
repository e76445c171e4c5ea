"""hostPort mappings: DNAT from the node's addresses to pods, with nftables.

The table `ip kubeling_hostport` is rendered from every attachment that has
port mappings (the IPAM records hold them) and replaced as a whole in one
nft transaction whenever that set changes, so it never drifts from the
records and a restart rebuilds it exactly. Traffic to a local address of
the node (`fib daddr type local`) on a mapped port is sent to the pod;
loopback addresses are left alone (reaching a pod from 127.0.0.1 would need
route_localnet). Pods reaching a hostPort that leads back into their own
node's pod network are masqueraded, so the reply returns the same way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from node_agent.network import nft
from node_agent.network.config import PortMapping

FAMILY = "ip"
TABLE = "kubeling_hostport"


@dataclass(frozen=True)
class PodPorts:
    """The port mappings of one attachment."""

    container_id: str
    ifname: str
    address: ipaddress.IPv4Address
    mappings: tuple[PortMapping, ...]


def _rule(pod: PodPorts, m: PortMapping) -> str:
    match = f"ip daddr {m.host_ip} " if m.host_ip else ""
    comment = f"{pod.container_id}:{pod.ifname}"[:120]
    return (f"    {match}meta l4proto {m.protocol} th dport {m.host_port} "
            f"dnat to {pod.address}:{m.container_port} comment \"{comment}\"\n")


def render(pods: Iterable[PodPorts], pod_cidr: ipaddress.IPv4Network | None) -> str | None:
    """The table body for `pods`; None when no pod maps a port (no table at all)."""
    rules = [_rule(pod, m) for pod in sorted(pods, key=lambda p: (p.container_id, p.ifname)) for m in pod.mappings]
    if not rules:
        return None
    body = (
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        "    fib daddr type local jump hostports\n"
        "  }\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        "    ip daddr != 127.0.0.0/8 fib daddr type local jump hostports\n"
        "  }\n"
        "  chain hostports {\n" + "".join(rules) + "  }\n")
    if pod_cidr is not None:
        body += (
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ct status dnat ip saddr {pod_cidr} ip daddr {pod_cidr} masquerade\n"
            "  }\n")
    return body


async def sync(netns_path: str | None, pods: Iterable[PodPorts], pod_cidr: ipaddress.IPv4Network | None) -> None:
    """Make the table match `pods` (removing it when none maps a port). Atomic."""
    await nft.apply(netns_path, nft.replace_table(FAMILY, TABLE, render(pods, pod_cidr)))


async def problems(netns_path: str | None, pod: PodPorts) -> list[str]:
    """Mappings of `pod` missing from the live table; empty when all are there."""
    if not pod.mappings:
        return []
    listing = await nft.list_table(netns_path, FAMILY, TABLE)
    if listing is None:
        return [f"nftables table {FAMILY} {TABLE} does not exist"]
    missing = []
    for m in pod.mappings:
        # nft lists "meta l4proto tcp th dport N" as "tcp dport N".
        if not any(f"dport {m.host_port} " in line and f"dnat to {pod.address}:{m.container_port}" in line
                   and m.protocol in line for line in listing.splitlines()):
            missing.append(f"hostPort {m.host_port}/{m.protocol} -> {pod.address}:{m.container_port} is missing")
    return missing
