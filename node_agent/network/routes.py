"""Routes to other nodes' pod CIDRs: host-gw and VXLAN.

`RouteManager.sync(own, peers)` makes the node's routing match the list of
nodes, declaratively: what is missing is added, what drifted is replaced,
and what belongs to nodes that are gone is removed. Every route it makes
carries the routing protocol number `ROUTE_PROTO`, so a restarted service
finds (and prunes) its own routes without keeping state.

- host-gw (flannel's host-gw backend): `<peer podCIDR> via <peer InternalIP>`.
  Works when nodes share an L2 segment; a peer whose address is not on a
  connected network is skipped with a warning.
- vxlan: one VXLAN device (`VXLAN_DEVICE`, VNI 1, UDP 4789, learning off)
  whose address is the node's pod CIDR network address (/32) and whose MAC
  is derived from the node's InternalIP (`vtep_mac`), so no node needs to
  publish anything beyond its address. Per peer: a route
  `<peer podCIDR> via <peer podCIDR network address> dev VXLAN onlink`, a
  permanent neighbour entry for that gateway with the peer's VTEP MAC, and
  a forwarding (FDB) entry sending that MAC to the peer's InternalIP.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.network.bridge import get_link, link_kind

log = logging.getLogger(__name__)

ROUTE_PROTO = 108        # rtnetlink protocol marking kubeling's routes
MAIN_TABLE = 254
VXLAN_DEVICE = "kubeling.vxlan"
VXLAN_VNI = 1
VXLAN_PORT = 4789
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
AF_INET = 2
AF_BRIDGE = 7


@dataclass(frozen=True)
class NodeRoute:
    """What routing needs to know of one node."""

    name: str
    pod_cidr: ipaddress.IPv4Network
    address: ipaddress.IPv4Address


def vtep_mac(address: ipaddress.IPv4Address) -> str:
    """The VTEP MAC of the node at `address`: 0e:6b + the four address bytes."""
    return "0e:6b:" + ":".join(f"{b:02x}" for b in address.packed)


def node_route(name: str, pod_cidr: str, address: str) -> NodeRoute | None:
    """A NodeRoute, or None when the node lacks a valid IPv4 pod CIDR or address."""
    try:
        net = ipaddress.ip_network(pod_cidr, strict=True)
        addr = ipaddress.ip_address(address)
    except ValueError:
        return None
    if not isinstance(net, ipaddress.IPv4Network) or not isinstance(addr, ipaddress.IPv4Address):
        return None
    return NodeRoute(name, net, addr)


class RouteManager:
    """Keeps the routes of one node (in the namespace of `ipr`) in line with its peers."""

    def __init__(self, ipr: AsyncIPRoute, mode: str = "host-gw", *, vxlan_mtu: int = 1450):
        if mode not in ("host-gw", "vxlan"):
            raise ValueError(f"unknown mode {mode!r}")
        self.ipr = ipr
        self.mode = mode
        self.vxlan_mtu = vxlan_mtu
        self.skipped: dict[str, str] = {}  # peer name -> why it has no route

    async def sync(self, own: NodeRoute | None, peers: list[NodeRoute]) -> None:
        """Make routing match `peers` (own node excluded). Idempotent."""
        peers = [p for p in peers if own is None or (p.name != own.name and p.pod_cidr != own.pod_cidr)]
        self.skipped = {}
        if self.mode == "vxlan":
            if own is None:
                log.info("vxlan: waiting for this node's pod CIDR and address")
                return
            await self._sync_vxlan(own, peers)
        else:
            await self._delete_vxlan()
            await self._sync_routes({p.pod_cidr: (str(p.address), None, p.name) for p in peers})

    async def cleanup(self) -> None:
        """Remove every route and device this manager made."""
        await self._sync_routes({})
        await self._delete_vxlan()

    # --- routes ---------------------------------------------------------------

    async def own_routes(self) -> dict[ipaddress.IPv4Network, tuple[str | None, int]]:
        """Our routes in the main table: dst -> (gateway, oif)."""
        out = {}
        async for r in await self.ipr.route("dump", family=AF_INET, table=MAIN_TABLE):
            if r["proto"] != ROUTE_PROTO:
                continue
            dst = ipaddress.IPv4Network(f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}")
            out[dst] = (r.get("gateway"), r.get("oif"))
        return out

    async def _sync_routes(self, desired: dict[ipaddress.IPv4Network, tuple[str, int | None, str]]) -> None:
        existing = await self.own_routes()
        for dst, (gw, _oif) in existing.items():
            if dst not in desired:
                try:
                    await self.ipr.route("del", dst=str(dst), gateway=gw, proto=ROUTE_PROTO, table=MAIN_TABLE)
                except NetlinkError as e:
                    if e.code != 3:  # ESRCH: already gone
                        raise
        for dst, (gw, oif, name) in desired.items():
            current = existing.get(dst)
            if current is not None and current[0] == gw and (oif is None or current[1] == oif):
                continue
            spec = dict(dst=str(dst), gateway=gw, proto=ROUTE_PROTO, table=MAIN_TABLE)
            if oif is not None:
                spec.update(oif=oif, flags=RTNH_F_ONLINK)
            try:
                await self.ipr.route("replace", **spec)
            except NetlinkError as e:
                # ENETUNREACH: the peer is not on a connected network (host-gw
                # needs a shared L2 segment; use vxlan otherwise).
                self.skipped[name] = f"route to {dst} via {gw}: {e}"
                log.warning("no route to node %s's pods %s via %s: %s", name, dst, gw, e)

    # --- vxlan ----------------------------------------------------------------

    async def _delete_vxlan(self) -> None:
        try:
            await self.ipr.link("del", ifname=VXLAN_DEVICE)
        except NetlinkError as e:
            if e.code != 19:
                raise

    async def _ensure_vxlan(self, own: NodeRoute) -> int:
        link = await get_link(self.ipr, VXLAN_DEVICE)
        if link is not None:
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA") if link_kind(link) == "vxlan" else None
            if (data is None or data.get_attr("IFLA_VXLAN_ID") != VXLAN_VNI
                    or data.get_attr("IFLA_VXLAN_LOCAL") != str(own.address)
                    or (link.get("address") or "") != vtep_mac(own.address)):
                await self._delete_vxlan()
                link = None
        if link is None:
            await self.ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VXLAN_VNI,
                                vxlan_local=str(own.address), vxlan_port=VXLAN_PORT, vxlan_learning=0,
                                address=vtep_mac(own.address), mtu=self.vxlan_mtu)
            link = await get_link(self.ipr, VXLAN_DEVICE)
        index = link["index"]
        vtep_ip = str(own.pod_cidr.network_address)
        addrs = [(a.get("address"), a["prefixlen"]) async for a in await self.ipr.addr("dump", index=index, family=AF_INET)]
        if (vtep_ip, 32) not in addrs:
            for addr, plen in addrs:
                await self.ipr.addr("del", index=index, address=addr, prefixlen=plen)
            await self.ipr.addr("add", index=index, address=vtep_ip, prefixlen=32)
        if not link["flags"] & 1:
            await self.ipr.link("set", index=index, state="up")
        return index

    async def _sync_vxlan(self, own: NodeRoute, peers: list[NodeRoute]) -> None:
        index = await self._ensure_vxlan(own)
        want_neigh = {str(p.pod_cidr.network_address): vtep_mac(p.address) for p in peers}
        want_fdb = {vtep_mac(p.address): str(p.address) for p in peers}
        # Neighbours (ARP) for each peer's VTEP address.
        async for n in await self.ipr.neigh("dump", ifindex=index, family=AF_INET):
            dst, mac = n.get("dst"), n.get("lladdr")
            if dst and want_neigh.get(dst) != mac:
                await _ignore_missing(self.ipr.neigh("del", ifindex=index, dst=dst, lladdr=mac, family=AF_INET))
        for dst, mac in want_neigh.items():
            await self.ipr.neigh("replace", ifindex=index, dst=dst, lladdr=mac, state=NUD_PERMANENT,
                                 family=AF_INET)
        # Forwarding entries: which node each VTEP MAC lives on.
        async for f in await self.ipr.fdb("dump", ifindex=index):
            mac, dst = f.get("lladdr"), f.get("dst")
            if f["ifindex"] != index or not mac or not dst:
                continue
            if want_fdb.get(mac) != dst:
                await _ignore_missing(self.ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst))
        existing_fdb = {(f.get("lladdr"), f.get("dst")) async for f in await self.ipr.fdb("dump", ifindex=index)}
        for mac, dst in want_fdb.items():
            if (mac, dst) not in existing_fdb:
                await self.ipr.fdb("append", ifindex=index, lladdr=mac, dst=dst)
        await self._sync_routes({p.pod_cidr: (str(p.pod_cidr.network_address), index, p.name) for p in peers})


async def _ignore_missing(awaitable) -> None:
    try:
        await awaitable
    except NetlinkError as e:
        if e.code not in (2, 3, 19):  # ENOENT, ESRCH, ENODEV
            raise
