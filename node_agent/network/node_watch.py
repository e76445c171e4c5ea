"""Follows the cluster's Nodes: this node's pod CIDR, and routes to the others.

An informer caches every Node; any change wakes one reconcile loop that
reads the cache and (1) hands this node's `spec.podCIDR` to the pod network
(bridge, gateway, masquerade), and (2) syncs routes to every other node's
pod CIDR via its InternalIP. The reconcile is level-triggered and
idempotent; a failure is retried with backoff (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import asyncio
import logging

from kubeling.client.api_client import ApiClient
from kubeling.client.informer import Informer
from node_agent.network.network import PodNetwork
from node_agent.network.routes import NodeRoute, RouteManager, node_route

log = logging.getLogger(__name__)


def internal_ip(node) -> str:
    """The node's InternalIP (or, lacking one, its first address); "" if none."""
    addresses = list(node.status.addresses)
    for a in addresses:
        if a.type == "InternalIP":
            return a.address
    return addresses[0].address if addresses else ""


def routes_of(nodes) -> list[NodeRoute]:
    out = []
    for node in nodes:
        r = node_route(node.metadata.name, node.spec.pod_cidr, internal_ip(node))
        if r is not None:
            out.append(r)
    return out


class NodeWatcher:
    """Drives `network` and `routes` from the Nodes of the cluster at `client`."""

    def __init__(self, client: ApiClient, node_name: str, network: PodNetwork, routes: RouteManager,
                 *, fixed_pod_cidr: bool = False):
        self.client = client
        self.node_name = node_name
        self.network = network
        self.routes = routes
        self.fixed_pod_cidr = fixed_pod_cidr  # --pod-cidr given: ignore spec.podCIDR
        self.informer = Informer(client, "nodes")
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.synced = asyncio.Event()  # set after the first successful reconcile

    async def start(self) -> None:
        wake = lambda *_: self._wake.set()  # noqa: E731
        self.informer.add_handler(on_add=wake, on_update=wake, on_delete=wake)
        await self.informer.start()
        self._task = asyncio.create_task(self._loop(), name="node-watch")

    async def stop(self) -> None:
        await self.informer.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        await self.informer.wait_synced()
        self._wake.set()
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
                failures = 0
                self.synced.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried with backoff
                failures += 1
                delay = min(30.0, 0.5 * 2 ** (failures - 1))
                log.warning("node reconcile failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def reconcile(self) -> None:
        nodes = self.informer.store.list()
        me = next((n for n in nodes if n.metadata.name == self.node_name), None)
        if me is not None and me.spec.pod_cidr and not self.fixed_pod_cidr:
            if await self.network.set_pod_cidr(me.spec.pod_cidr):
                log.info("pod CIDR of node %s: %s", self.node_name, me.spec.pod_cidr)
        own = None
        subnet = self.network.config.subnet
        if me is not None and subnet is not None:
            own = node_route(self.node_name, str(subnet), internal_ip(me))
        await self.routes.sync(own, [r for r in routes_of(nodes) if r.name != self.node_name])
