"""Node IPAM: every Node gets a pod CIDR of its own, as kube-controller-manager's
range allocator.

The cluster CIDR (`--cluster-cidr`, default 10.244.0.0/16) is cut into
subnets of `--node-cidr-mask-size` bits (default /24). A Node without
`spec.podCIDR` gets the lowest free subnet in `spec.podCIDR` and
`spec.podCIDRs`; the network service on that node takes pod IPs from it.

The Nodes are the only record of what is taken: before assigning anything
the controller waits for the node cache and marks every CIDR already on a
Node as used, so two Nodes never get the same CIDR, across restarts and
leader changes alike. A deleted Node's CIDR is freed for the next Node.
Assignment is a compare-and-set update of the Node (retried on conflict);
`podCIDR` never changes once set (the API server forbids it).
"""

from __future__ import annotations

import logging

from google.protobuf.message import Message

from kubeling.client.errors import ConflictError, NotFoundError
from kubeling.client.events import WARNING
from kubeling.objects import copy

from .cidr_allocator import CIDRAllocator, CIDRError, CIDRRangeExhausted
from .controller import Controller
from .manager import register

log = logging.getLogger(__name__)

# Event reasons, as Kubernetes' node IPAM controller names them.
CIDR_NOT_AVAILABLE = "CIDRNotAvailable"
CIDR_ASSIGNMENT_FAILED = "CIDRAssignmentFailed"

# How often a Node waiting for a free CIDR is looked at again.
EXHAUSTED_RETRY_SECONDS = 5.0


def pod_cidrs_of(node: Message) -> list[str]:
    """The pod CIDRs a Node carries (podCIDRs, else podCIDR), possibly none."""
    return list(node.spec.pod_cidrs) or ([node.spec.pod_cidr] if node.spec.pod_cidr else [])


@register("nodeipam")
class NodeIpamController(Controller):
    """Assigns `spec.podCIDR` to Nodes; one key per Node name."""

    name = "nodeipam"
    workers = 2

    def setup(self) -> None:
        self.allocator = CIDRAllocator(self.options.get("cluster_cidr", "10.244.0.0/16"),
                                       int(self.options.get("node_cidr_mask_size", 24)))
        # node name -> the CIDRs it holds in the allocator; a CIDR two Nodes
        # share (set by hand) is freed only when the last of them goes.
        self._held: dict[str, list[str]] = {}
        self._holders: dict[str, int] = {}
        self.nodes = self.informers.informer("nodes")
        self.watch(self.nodes)

    async def run(self) -> None:
        await self.informers.start_all()
        await self.informers.wait_for_cache_sync()
        # Every CIDR already assigned is taken before any worker assigns one.
        for node in self.nodes.store.list():
            self._hold(node.metadata.name, pod_cidrs_of(node))
        log.info("nodeipam: %d of %d pod CIDRs in use in %s", self.allocator.used,
                 self.allocator.capacity, self.allocator.cluster)
        await super().run()

    async def reconcile(self, key: str) -> float | None:
        node = self.nodes.store.get(key)
        if node is None:
            self._hold(key, [])
            return None
        cidrs = pod_cidrs_of(node)
        if cidrs:
            self._hold(key, cidrs)
            return None
        try:
            cidr = self.allocator.allocate()
        except CIDRRangeExhausted as e:
            await self.recorder.event(node, WARNING, CIDR_NOT_AVAILABLE,
                                      f"Node {key} status is now: {CIDR_NOT_AVAILABLE}: {e}")
            return EXHAUSTED_RETRY_SECONDS
        try:
            assigned = await self._assign(key, cidr)
        except NotFoundError:
            self.allocator.release(cidr)
            return None
        except Exception as e:
            self.allocator.release(cidr)
            if not isinstance(e, ConflictError):
                await self.recorder.event(node, WARNING, CIDR_ASSIGNMENT_FAILED,
                                          f"Failed to assign pod CIDR {cidr} to node {key}: {e}")
            raise
        held = pod_cidrs_of(assigned)
        self._hold(key, held)
        if cidr not in held:  # someone else set a CIDR meanwhile
            self.allocator.release(cidr)
            for other in self._held.get(key, []):
                self.allocator.occupy(other)  # in case theirs overlaps ours
            return None
        log.info("nodeipam: assigned pod CIDR %s to node %s", cidr, key)
        return None

    async def _assign(self, name: str, cidr: str, attempts: int = 5) -> Message:
        """Write `cidr` to the Node (compare-and-set, re-read from the server
        on conflict) and return it; if it meanwhile got CIDRs from elsewhere,
        return it as read, with those."""
        cached = self.nodes.store.get(name)
        node = copy(cached) if cached is not None else await self.client.get("nodes", name)
        for attempt in range(1, attempts + 1):
            if pod_cidrs_of(node):
                return node
            node.spec.pod_cidr = cidr
            del node.spec.pod_cidrs[:]
            node.spec.pod_cidrs.append(cidr)
            try:
                return await self.client.update(node)
            except ConflictError:
                if attempt == attempts:
                    raise
                node = await self.client.get("nodes", name)
        raise AssertionError("unreachable")

    def _hold(self, name: str, cidrs: list[str]) -> None:
        """Record that Node `name` holds exactly `cidrs` (empty: nothing, e.g. deleted)."""
        old = self._held.pop(name, [])
        if cidrs:
            for cidr in cidrs:
                if cidr in old:
                    continue
                try:
                    self.allocator.occupy(cidr)
                except CIDRError as e:
                    # Set by hand outside our range: not ours to track, nothing to retry.
                    log.warning("nodeipam: node %s has pod CIDR %s: %s", name, cidr, e)
                    continue
                self._holders[cidr] = self._holders.get(cidr, 0) + 1
            self._held[name] = [c for c in cidrs if c in self._holders]
        for cidr in old:
            if cidr in cidrs:
                continue
            left = self._holders.get(cidr, 0) - 1
            if left > 0:
                self._holders[cidr] = left
                continue
            self._holders.pop(cidr, None)
            self.allocator.release(cidr)
            log.info("nodeipam: released pod CIDR %s of node %s", cidr, name)
