"""Masquerade for pod traffic that leaves the cluster network, with nftables.

Packets from the node's pod CIDR to anything outside the cluster CIDR take
the node's address (`masquerade`), so the world can answer them; traffic
between pods, on this node or another, keeps its pod addresses. The table
`ip kubeling_masq` is replaced whole, atomically.
"""

from __future__ import annotations

import ipaddress

from node_agent.network import nft

FAMILY = "ip"
TABLE = "kubeling_masq"


def render(pod_cidr: ipaddress.IPv4Network, cluster_cidr: ipaddress.IPv4Network) -> str:
    return (
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {pod_cidr} ip daddr != {cluster_cidr} ip daddr != 224.0.0.0/4 masquerade\n"
        "  }\n")


async def sync(netns_path: str | None, pod_cidr: ipaddress.IPv4Network | None,
               cluster_cidr: ipaddress.IPv4Network, enabled: bool = True) -> None:
    """Install the masquerade rule for `pod_cidr` (or remove the table when disabled)."""
    body = render(pod_cidr, cluster_cidr) if enabled and pod_cidr is not None else None
    await nft.apply(netns_path, nft.replace_table(FAMILY, TABLE, body))


async def remove(netns_path: str | None) -> None:
    await nft.apply(netns_path, nft.replace_table(FAMILY, TABLE, None))
