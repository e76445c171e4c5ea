"""Pod networking for one node: CNI's ADD, DEL, CHECK and STATUS, done.

This is the logic both faces share: the gRPC service (`service.py`) and the
CNI plugin binary (`plugin.py`) parse their input into `Attachment` and a
`NetworkConfig`, call `PodNetwork`, and render what comes back (a CNI 1.0
result as a dict) or the `CniError` raised.

Contracts:
- add: allocates an address, builds the veth pair, configures the pod and
  hostPorts. Anything it took is given back when it fails half-way. A
  second add for the same (container id, ifname) fails with code 4 and
  leaves the first attachment as it was.
- delete: removes the interface, hostPorts and the address. Idempotent;
  succeeds when the namespace or any part is already gone.
- check: compares live state with the Add result (the caller's prevResult,
  or the one recorded with the address).
- status: can Add be served now?

The node's own namespace (`node_netns`) holds the bridge, the host ends of
the veths, routes and nftables tables; None means the current namespace
(the plugin binary, or a service running on a real node).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from dataclasses import dataclass, field

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.network import hostport, masquerade, netns
from node_agent.network.allocator import Allocator
from node_agent.network.bridge import BridgeInfo, bridge_problems, ensure_bridge, get_link, link_kind
from node_agent.network.config import (
    NetworkConfig,
    PortMapping,
    check_port_conflicts,
    port_mapping,
    validate_container_id,
    validate_ifname,
)
from node_agent.network.errors import (
    INTERFACE_FAILURE,
    INVALID_ENVIRONMENT_VARIABLES,
    IO_FAILURE,
    PLUGIN_NOT_AVAILABLE,
    PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from node_agent.network.ipam_store import AlreadyAttachedError, ExhaustedError, IpamStore
from node_agent.network.pod_interface import (
    configure_pod_side,
    create_veth,
    delete_link,
    host_side_problems,
    host_veth_name,
    pod_side_problems,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodInfo:
    """Who the attachment is for (CNI_ARGS K8S_POD_*); informational."""

    name: str = ""
    namespace: str = ""
    uid: str = ""


@dataclass(frozen=True)
class Attachment:
    """The parameters of one operation: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, ..."""

    container_id: str
    netns: str
    ifname: str
    pod: PodInfo = field(default_factory=PodInfo)
    port_mappings: tuple[PortMapping, ...] = ()
    config: NetworkConfig | None = None  # None: the PodNetwork's own


class PodNetwork:
    """The pod network of one node (see the module docstring).

    `config.subnet` may be None until the node's pod CIDR is known
    (`set_pod_cidr`); until then Add fails with code 11 and Status with 50.
    """

    def __init__(self, config: NetworkConfig, node_netns: str | None = None, *,
                 manage_masquerade: bool = True):
        self.config = config
        self.node_netns = netns.netns_path(node_netns) if node_netns else None
        self.manage_masquerade = manage_masquerade
        self._node_fd: int | None = None
        self._node_ipr: AsyncIPRoute | None = None
        self._stores: dict[tuple[str, str], IpamStore] = {}
        self._hostport_lock = asyncio.Lock()
        self._node_ready = False
        self._bridges: dict[tuple, BridgeInfo] = {}  # bridges verified by a full ensure

    # --- lifecycle -----------------------------------------------------------

    async def start(self, setup_node: bool = True) -> None:
        """Open the node session; set up the node network if the pod CIDR is known
        (unless `setup_node` is False: the plugin binary prepares per ADD)."""
        if self.node_netns:
            try:
                self._node_fd = netns.open_netns(self.node_netns)
            except (FileNotFoundError, ValueError) as e:
                raise CniError(PLUGIN_NOT_AVAILABLE, f"node network namespace {self.node_netns} is unusable",
                               str(e)) from None
        self._node_ipr = netns.iproute(self._node_fd)
        if setup_node and self.config.subnet is not None:
            await self.setup_node()

    async def close(self) -> None:
        if self._node_ipr is not None:
            self._node_ipr.close()
            self._node_ipr = None
        if self._node_fd is not None:
            os.close(self._node_fd)
            self._node_fd = None

    async def __aenter__(self) -> "PodNetwork":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def node_fd(self) -> int | None:
        return self._node_fd

    @property
    def node_ipr(self) -> AsyncIPRoute:
        if self._node_ipr is None:
            raise RuntimeError("PodNetwork not started")
        return self._node_ipr

    async def set_pod_cidr(self, cidr: str) -> bool:
        """Adopt the node's pod CIDR; True when it changed. Sets up the node network."""
        new = self.config.with_subnet(cidr)
        if self.config.subnet == new.subnet and self._node_ready:
            return False
        if self.config.subnet is not None and self.config.subnet != new.subnet:
            log.warning("pod CIDR changes from %s to %s; existing pods keep their addresses",
                        self.config.subnet, new.subnet)
        self.config = new
        await self.setup_node()
        return True

    async def setup_node(self) -> None:
        """Bridge, IP forwarding, masquerade and hostPort tables for the node. Idempotent."""
        cfg = self.config
        assert cfg.subnet is not None
        await self._ensure_bridge(cfg)
        await asyncio.to_thread(netns.write_sysctl, self._node_fd, "net.ipv4.ip_forward", "1")
        if self.manage_masquerade:
            await masquerade.sync(self.node_netns, cfg.subnet, cfg.cluster_cidr, cfg.ip_masq)
        await self._sync_hostports(cfg)
        self._node_ready = True

    async def prepare_node(self) -> None:
        """The part of setup_node an ADD needs (plugin binary): forwarding, masquerade."""
        cfg = self.config
        if netns.read_sysctl(self._node_fd, "net.ipv4.ip_forward") != "1":
            netns.write_sysctl(self._node_fd, "net.ipv4.ip_forward", "1")
        if self.manage_masquerade and cfg.ip_masq and cfg.subnet is not None:
            await masquerade.sync(self.node_netns, cfg.subnet, cfg.cluster_cidr, True)

    async def gc(self, keep: set[tuple[str, str]], cfg: NetworkConfig | None = None) -> list[str]:
        """Delete every attachment not in `keep` ((container id, ifname) pairs); what was removed."""
        cfg = cfg or self.config
        removed = []
        for alloc in self.store(cfg).list():
            key = (alloc.container_id, alloc.ifname)
            if key in keep or not alloc.container_id:
                continue
            await self.delete(Attachment(alloc.container_id, alloc.record.get("netns", ""), alloc.ifname,
                                         config=cfg))
            removed.append(f"{alloc.container_id}:{alloc.ifname}")
        return removed

    def store(self, cfg: NetworkConfig) -> IpamStore:
        key = (cfg.state_dir, cfg.name)
        store = self._stores.get(key)
        if store is None:
            try:
                store = IpamStore.for_network(cfg.state_dir, cfg.name)
            except OSError as e:
                raise CniError(IO_FAILURE, f"cannot open IPAM state in {cfg.state_dir}", str(e)) from None
            self._stores[key] = store
        return store

    # --- ADD -----------------------------------------------------------------

    async def add(self, att: Attachment) -> dict:
        """Attach; the CNI 1.0 result. CniError 3, 4, 7, 11 or 100 (see module docstring)."""
        cfg = att.config or self.config
        validate_container_id(att.container_id)
        validate_ifname(att.ifname)
        if not att.netns:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, "CNI_NETNS is required")
        check_port_conflicts(att.port_mappings)
        if cfg.subnet is None:
            raise CniError(TRY_AGAIN_LATER, "the node has no pod CIDR yet",
                           "waiting for the control plane to assign spec.podCIDR")
        pod_fd = _open_pod_netns(att.netns)
        try:
            return await self._add(att, cfg, pod_fd)
        finally:
            os.close(pod_fd)

    async def _add(self, att: Attachment, cfg: NetworkConfig, pod_fd: int) -> dict:
        store = self.store(cfg)
        gateway = cfg.gateway_ip
        allocator = Allocator(cfg.subnet, gateway)
        record = {"netns": att.netns, "pod": {"name": att.pod.name, "namespace": att.pod.namespace,
                                              "uid": att.pod.uid}}
        try:
            address = store.reserve(allocator, att.container_id, att.ifname, record)
        except AlreadyAttachedError as e:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES,
                           f"container {att.container_id} already has interface {att.ifname} ({e.address})",
                           "CNI_CONTAINERID and CNI_IFNAME name an existing attachment; DEL it first") from None
        except ExhaustedError as e:
            raise CniError(TRY_AGAIN_LATER, f"pod CIDR {cfg.subnet} is exhausted", str(e)) from None
        except OSError as e:
            raise CniError(IO_FAILURE, "cannot write IPAM state", str(e)) from None

        host = host_veth_name(att.container_id, att.ifname)
        iface = ipaddress.IPv4Interface(f"{address}/{cfg.subnet.prefixlen}")
        node = self.node_ipr
        veth_made = False
        try:
            bridge = await self._ensure_bridge(cfg)
            try:
                host_mac, _ = await create_veth(node, pod_fd, host, att.ifname, bridge.index, cfg.mtu)
            except NetlinkError as e:
                if e.code != 17:
                    raise
                if await get_link(node, host) is None:
                    raise CniError(INVALID_ENVIRONMENT_VARIABLES,
                                   f"interface {att.ifname} already exists in {att.netns}",
                                   "CNI_IFNAME must name an interface the namespace does not have") from None
                # A host end without an IPAM record: left by an Add that died
                # before it could clean up. It is ours by name; replace it.
                await delete_link(node, host)
                host_mac, _ = await create_veth(node, pod_fd, host, att.ifname, bridge.index, cfg.mtu)
            veth_made = True
            async with netns.netns_session(pod_fd) as pod:
                pod_mac = await configure_pod_side(pod, att.ifname, iface, gateway)
            result = self._result(cfg, bridge, host, host_mac, att, pod_mac, iface)
            store.update(address, dict(record, result=result,
                                       portMappings=[m.to_json() for m in att.port_mappings]))
            if att.port_mappings:
                await self._sync_hostports(cfg)
            return result
        except BaseException as e:
            await self._undo_add(att, cfg, store, host if veth_made else None)
            if isinstance(e, NetlinkError):
                raise CniError(INTERFACE_FAILURE, f"failed to set up {att.ifname} in {att.netns}", str(e)) from None
            if isinstance(e, OSError):
                raise CniError(IO_FAILURE, "cannot write IPAM state", str(e)) from None
            raise

    async def _undo_add(self, att: Attachment, cfg: NetworkConfig, store: IpamStore, host: str | None) -> None:
        """Give back what a failed Add took. Never raises: the Add's own error matters."""
        if host is not None:
            try:
                await delete_link(self.node_ipr, host)
            except Exception:  # noqa: BLE001 - reported, not raised
                log.exception("cleanup: cannot delete %s", host)
        try:
            store.release(att.container_id, att.ifname)
        except Exception:  # noqa: BLE001
            log.exception("cleanup: cannot release the address of %s/%s", att.container_id, att.ifname)
        if att.port_mappings:
            try:
                await self._sync_hostports(cfg)
            except Exception:  # noqa: BLE001
                log.exception("cleanup: cannot resync hostPorts")

    def _result(self, cfg: NetworkConfig, bridge: BridgeInfo, host: str, host_mac: str, att: Attachment,
                pod_mac: str, iface: ipaddress.IPv4Interface) -> dict:
        pod_if = {"name": att.ifname, "mac": pod_mac, "sandbox": att.netns}
        if cfg.cni_version != "1.0.0":
            pod_if["mtu"] = cfg.mtu  # mtu appeared in the 1.1.0 result
        result = {
            "cniVersion": cfg.cni_version,
            "interfaces": [{"name": bridge.name, "mac": bridge.mac}, {"name": host, "mac": host_mac}, pod_if],
            "ips": [{"address": str(iface), "gateway": str(cfg.gateway_ip), "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": str(cfg.gateway_ip)}],
        }
        dns = cfg.dns.to_json()
        if dns:
            result["dns"] = dns
        return result

    async def _ensure_bridge(self, cfg: NetworkConfig) -> BridgeInfo:
        """The bridge, verified. After one full ensure, an Add only re-reads the
        link (one netlink call) and redoes the full ensure if it changed."""
        key = (cfg.bridge, cfg.gateway_ip, cfg.subnet.prefixlen, cfg.mtu)
        cached = self._bridges.get(key)
        if cached is not None:
            link = await get_link(self.node_ipr, cfg.bridge)
            if (link is not None and link["index"] == cached.index and link["flags"] & 1
                    and link.get("mtu") == cfg.mtu and link_kind(link) == "bridge"):
                return cached
        info = await ensure_bridge(self.node_ipr, cfg.bridge, cfg.gateway_ip, cfg.subnet.prefixlen, cfg.mtu)
        self._bridges[key] = info
        return info

    # --- DEL -----------------------------------------------------------------

    async def delete(self, att: Attachment) -> None:
        """Detach; succeeds when anything (or everything) is already gone. CniError 4, 100."""
        cfg = att.config or self.config
        validate_container_id(att.container_id)
        validate_ifname(att.ifname)
        store = self.store(cfg)
        alloc = store.find(att.container_id, att.ifname)
        host = host_veth_name(att.container_id, att.ifname)
        try:
            removed = await delete_link(self.node_ipr, host)
            if not removed and alloc is not None and att.netns:
                await _delete_in_pod(att.netns, att.ifname)
        except NetlinkError as e:
            # Keep the address: the interface may still use it. The runtime retries DEL.
            raise CniError(INTERFACE_FAILURE, f"failed to delete {att.ifname} of {att.container_id}",
                           str(e)) from None
        try:
            store.release(att.container_id, att.ifname)
        except OSError as e:
            raise CniError(IO_FAILURE, "cannot write IPAM state", str(e)) from None
        if alloc is not None and alloc.record.get("portMappings"):
            await self._sync_hostports(cfg)

    # --- CHECK ---------------------------------------------------------------

    async def check(self, att: Attachment, prev_result: dict | None = None) -> None:
        """Raise CniError (3: namespace gone, 100: a difference) unless the attachment is intact."""
        cfg = att.config or self.config
        validate_container_id(att.container_id)
        validate_ifname(att.ifname)
        if not att.netns:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, "CNI_NETNS is required")
        alloc = self.store(cfg).find(att.container_id, att.ifname)
        if alloc is None:
            raise CniError(INTERFACE_FAILURE, f"container {att.container_id} interface {att.ifname} holds no address",
                           "the IP reservation is missing (was the attachment deleted?)")
        expected = prev_result or alloc.record.get("result")
        if not expected:
            raise CniError(INTERFACE_FAILURE, "no result recorded for this attachment",
                           "the Add did not complete")
        pod_if, iface, gateway = _expected_pod_side(expected, att.ifname)
        problems = []
        if iface.ip != alloc.address:
            problems.append(f"the result's address {iface.ip} is not the one reserved ({alloc.address})")
        pod_fd = _open_pod_netns(att.netns)
        try:
            async with netns.netns_session(pod_fd) as pod:
                problems += await pod_side_problems(pod, att.ifname, pod_if.get("mac", ""), iface, gateway)
        except NetlinkError as e:
            raise CniError(INTERFACE_FAILURE, "cannot inspect the pod namespace", str(e)) from None
        finally:
            os.close(pod_fd)
        node = self.node_ipr
        problems += await bridge_problems(node, cfg.bridge, gateway, iface.network.prefixlen)
        bridge = await get_link(node, cfg.bridge)
        if bridge is not None:
            problems += await host_side_problems(node, host_veth_name(att.container_id, att.ifname), bridge["index"])
        mappings = _mappings(alloc.record)
        if mappings:
            problems += await hostport.problems(
                self.node_netns, hostport.PodPorts(att.container_id, att.ifname, alloc.address, mappings))
        if problems:
            raise CniError(INTERFACE_FAILURE, problems[0], "; ".join(problems))

    # --- STATUS --------------------------------------------------------------

    async def status(self, cfg: NetworkConfig | None = None) -> dict:
        """Facts about the node network, and `error` (a CniError or None) when Add cannot be served."""
        cfg = cfg or self.config
        info = {"pod_cidr": str(cfg.subnet) if cfg.subnet else "", "bridge": cfg.bridge,
                "gateway": str(cfg.gateway_ip) if cfg.subnet else "", "allocated": 0, "capacity": 0,
                "error": None}
        if cfg.subnet is None:
            info["error"] = CniError(PLUGIN_NOT_AVAILABLE, "the node has no pod CIDR yet")
            return info
        allocator = Allocator(cfg.subnet, cfg.gateway_ip)
        in_use = [a for a in self.store(cfg).in_use() if allocator.contains(a)]
        info["allocated"], info["capacity"] = len(in_use), allocator.capacity
        problems = await bridge_problems(self.node_ipr, cfg.bridge, cfg.gateway_ip, cfg.subnet.prefixlen)
        if problems and in_use:
            info["error"] = CniError(PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY, problems[0], "; ".join(problems))
        elif len(in_use) >= allocator.capacity:
            info["error"] = CniError(PLUGIN_NOT_AVAILABLE, f"pod CIDR {cfg.subnet} is exhausted",
                                     f"all {allocator.capacity} addresses are allocated")
        return info

    # --- hostPorts -----------------------------------------------------------

    async def _sync_hostports(self, cfg: NetworkConfig) -> None:
        async with self._hostport_lock:
            pods = [hostport.PodPorts(a.container_id, a.ifname, a.address, _mappings(a.record))
                    for a in self.store(cfg).list() if a.record.get("portMappings")]
            await hostport.sync(self.node_netns, pods, cfg.subnet)


def _mappings(record: dict) -> tuple[PortMapping, ...]:
    out = []
    for m in record.get("portMappings") or ():
        try:
            out.append(port_mapping(m.get("hostPort"), m.get("containerPort"), m.get("protocol", ""),
                                    m.get("hostIP", "")))
        except CniError:
            log.warning("ignoring a recorded port mapping that is no longer valid: %r", m)
    return tuple(out)


def _open_pod_netns(path: str) -> int:
    try:
        return netns.open_netns(path)
    except FileNotFoundError:
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {path} does not exist",
                       "CNI_NETNS must name an existing network namespace") from None
    except ValueError as e:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_NETNS {path!r}", str(e)) from None
    except OSError as e:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"cannot open CNI_NETNS {path!r}", str(e)) from None


async def _delete_in_pod(path: str, ifname: str) -> None:
    """Delete our veth `ifname` inside the pod namespace, if both still exist."""
    try:
        fd = netns.open_netns(path)
    except (OSError, ValueError):
        return  # namespace gone: so is the interface
    try:
        async with netns.netns_session(fd) as pod:
            link = await get_link(pod, ifname)
            if link is not None and link_kind(link) == "veth":
                await delete_link(pod, ifname)
    finally:
        os.close(fd)


def _expected_pod_side(result: dict, ifname: str):
    """(pod interface, its address, gateway) from a CNI result; CniError 100 if absent."""
    try:
        interfaces = result.get("interfaces") or []
        index = next(i for i, itf in enumerate(interfaces) if itf.get("name") == ifname and itf.get("sandbox"))
        ip = next(ip for ip in result.get("ips") or [] if ip.get("interface") == index)
        iface = ipaddress.IPv4Interface(ip["address"])
        gateway = ipaddress.IPv4Address(ip.get("gateway") or str(iface.network.network_address + 1))
        return interfaces[index], iface, gateway
    except (StopIteration, KeyError, ValueError, TypeError, AttributeError):
        raise CniError(INTERFACE_FAILURE, f"the result has no address for sandbox interface {ifname}",
                       "prevResult must be the result of this attachment's ADD") from None


__all__ = ["Attachment", "PodInfo", "PodNetwork"]
