"""Hollow nodes: many simulated node agents in one asyncio process, as
Kubernetes' kubemark.

Each hollow node does what the control plane can see of a node agent and
nothing else: it registers its Node (labels, capacity, fake addresses,
Ready=True), renews its Lease in `kube-node-lease`, posts Ready heartbeats,
reports every pod bound to it Running and Ready with a pod IP from its pod
CIDR, and confirms the termination of pods being deleted (a delete with
grace period 0, as a node agent does once the containers are gone). No
container, network namespace or address is ever made: node addresses are
labels from the RFC 2544 benchmarking range 198.18.0.0/15 that nothing
contacts, and pod IPs exist only in pod status.

Scale comes from sharing: one Node informer and one Pod informer (pods with
a node) serve every hollow node in the process, and a dict by node name
dispatches each pod event to its node; a single work queue with a bounded
number of workers writes pod status, and a semaphore bounds the lease and
heartbeat writes in flight. A thousand nodes cost two watches.

Nothing in the real node path depends on this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
import zlib
from dataclasses import dataclass

from google.protobuf.message import Message

from kubeling.api.v1 import coordination_pb2, core_pb2, meta_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import (AlreadyExistsError, ApiError, ConflictError, NotFoundError,
                                    retry_on_conflict)
from kubeling.client.informer import Informer
from kubeling.client.workqueue import ItemExponentialFailureRateLimiter, WorkQueue, run_workers
from kubeling.objects import copy, key_of

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
# RFC 2544's benchmarking range: never routed, so a fake address can never
# reach anyone's real machine. 16 slots of 8192 addresses, one per prefix.
FAKE_NODE_ADDRESSES = ipaddress.ip_network("198.18.0.0/15")
_SLOT = FAKE_NODE_ADDRESSES.num_addresses // 16
KUBELET_PORT = 10250
VERSION = "kubeling-hollow/0.1.0"
RUNTIME = "hollow"


@dataclass
class HollowConfig:
    """What the hollow nodes of one process look like and how often they report."""

    count: int = 1
    name_prefix: str = "hollow-node-"
    first_index: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    pods: str = "110"
    lease_duration: int = 40        # seconds, written into each Lease
    renew_interval: float = 1.0     # seconds between Lease renewals
    status_interval: float = 10.0   # seconds between Ready heartbeats in node status
    pod_workers: int = 32           # pod status writes in flight
    api_concurrency: int = 64       # lease writes in flight, and node status writes in flight
    stats_interval: float = 30.0    # seconds between progress lines in the log (0: never)

    def names(self) -> list[str]:
        return [f"{self.name_prefix}{i}" for i in range(self.first_index, self.first_index + self.count)]


def fake_node_address(prefix: str, index: int) -> str:
    """A documentation-range InternalIP for node `index` of `prefix`; distinct
    for up to 8190 nodes of one prefix, and usually across prefixes."""
    slot = zlib.crc32(prefix.encode()) % 16
    offset = 1 + (index - 1) % (_SLOT - 2)
    return str(FAKE_NODE_ADDRESSES[slot * _SLOT + offset])


def _now_ts(precise: bool = False):
    from google.protobuf.timestamp_pb2 import Timestamp
    ts = Timestamp()
    ts.GetCurrentTime()
    if not precise:
        ts.nanos = 0
    return ts


# ============================================================ pod addresses


class PodIPAllocator:
    """Hands out the host addresses of one pod CIDR, one per pod key, in
    order (the way host-local IPAM does: the cursor moves on after each
    allocation, so a released address is not reused at once). The first
    host address is left for the node's bridge, as a real node would."""

    def __init__(self, cidr: str):
        self.network = ipaddress.ip_network(cidr, strict=False)
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - (1 if self.network.version == 4 else 0)
        if self._last < self._first:
            raise ValueError(f"pod CIDR {cidr} has no room for pods")
        self._next = self._first
        self._by_key: dict[str, int] = {}
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> str | None:
        ip = self._by_key.get(key)
        return None if ip is None else str(ipaddress.ip_address(ip))

    def allocate(self, key: str) -> str:
        """The address of `key` (the same one on every call until released).
        Raises RuntimeError when the range is exhausted."""
        if key in self._by_key:
            return self.get(key)
        size = self._last - self._first + 1
        for _ in range(size):
            ip = self._next
            self._next = self._first if ip >= self._last else ip + 1
            if ip not in self._used:
                self._used.add(ip)
                self._by_key[key] = ip
                return str(ipaddress.ip_address(ip))
        raise RuntimeError(f"no free address left in {self.network}")

    def claim(self, key: str, address: str) -> bool:
        """Record that `key` already has `address` (found in its status after a
        restart). False when the address is outside the range or taken."""
        try:
            ip = int(ipaddress.ip_address(address))
        except ValueError:
            return False
        if not self._first <= ip <= self._last:
            return False
        if self._by_key.get(key) == ip:
            return True
        if ip in self._used:
            return False
        self.release(key)
        self._used.add(ip)
        self._by_key[key] = ip
        return True

    def release(self, key: str) -> None:
        ip = self._by_key.pop(key, None)
        if ip is not None:
            self._used.discard(ip)


# ================================================================ one node


class HollowNode:
    """The state of one simulated node."""

    def __init__(self, name: str, index: int, config: HollowConfig):
        self.name = name
        self.config = config
        self.address = fake_node_address(config.name_prefix, index)
        self.uid = ""
        self.pod_cidr = ""
        self.allocator: PodIPAllocator | None = None
        self.lease: Message | None = None      # as last written
        self.wake = asyncio.Event()            # post node status now

    def set_pod_cidr(self, cidr: str) -> bool:
        """Adopt the pod CIDR the control plane assigned; True if it is new."""
        if not cidr or cidr == self.pod_cidr:
            return False
        try:
            allocator = PodIPAllocator(cidr)
        except ValueError as e:
            log.warning("%s: unusable pod CIDR %s: %s", self.name, cidr, e)
            return False
        self.pod_cidr, self.allocator = cidr, allocator
        return True

    def node_status(self, status: Message | None = None) -> Message:
        """Node status as a node agent reports it: capacity, addresses, and a
        fresh Ready heartbeat (transition time kept while it stays True)."""
        new = core_pb2.NodeStatus()
        if status is not None:
            new.CopyFrom(status)
        resources = {"cpu": self.config.cpu, "memory": self.config.memory, "pods": self.config.pods}
        new.capacity.clear()
        new.capacity.update(resources)
        new.allocatable.clear()
        new.allocatable.update(resources)
        del new.addresses[:]
        new.addresses.add(type="InternalIP", address=self.address)
        new.addresses.add(type="Hostname", address=self.name)
        new.daemon_endpoints.kubelet_endpoint.port = KUBELET_PORT
        info = new.node_info
        info.machine_id = info.system_uuid = info.boot_id = self.name
        info.kernel_version = "hollow"
        info.os_image = "kubeling hollow node"
        info.container_runtime_version = f"{RUNTIME}://0.1.0"
        info.kubelet_version = info.kube_proxy_version = VERSION
        info.operating_system, info.architecture = "linux", "amd64"
        now = _now_ts()
        wanted = {
            "Ready": ("True", "KubeletReady", "kubelet is posting ready status (hollow node)"),
            "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        }
        old = {c.type: c for c in new.conditions}
        del new.conditions[:]
        for type_, (state, reason, message) in wanted.items():
            cond = new.conditions.add(type=type_, status=state, reason=reason, message=message)
            cond.last_heartbeat_time.CopyFrom(now)
            prev = old.get(type_)
            if prev is not None and prev.status == state and prev.HasField("last_transition_time"):
                cond.last_transition_time.CopyFrom(prev.last_transition_time)
            else:
                cond.last_transition_time.CopyFrom(now)
        return new

    def node_object(self) -> Message:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = self.name
        node.metadata.labels.update(self.labels())
        node.status.CopyFrom(self.node_status())
        return node

    def labels(self) -> dict[str, str]:
        return {LABEL_HOSTNAME: self.name, LABEL_OS: "linux", LABEL_ARCH: "amd64"}

    def lease_object(self) -> Message:
        lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
        lease.metadata.name = self.name
        lease.metadata.namespace = NODE_LEASE_NAMESPACE
        if self.uid:
            # As a kubelet does: the Lease goes when its Node goes.
            lease.metadata.owner_references.add(api_version="v1", kind="Node", name=self.name, uid=self.uid)
        self.fill_lease(lease)
        return lease

    def fill_lease(self, lease: Message) -> None:
        lease.spec.holder_identity = self.name
        lease.spec.lease_duration_seconds = self.config.lease_duration
        lease.spec.renew_time.CopyFrom(_now_ts(precise=True))


# ============================================================ pod status


def pod_reported(pod: Message, node: HollowNode) -> bool:
    """True when the pod's status already says what this node would write."""
    st = pod.status
    if st.phase != "Running" or not st.pod_ip or st.host_ip != node.address:
        return False
    if node.allocator is not None and node.allocator.get(key_of(pod)) not in (None, st.pod_ip):
        return False
    if not all(c.status == "True" for c in st.conditions if c.type in ("Ready", "ContainersReady")):
        return False
    if {c.type for c in st.conditions} < {"PodScheduled", "Initialized", "ContainersReady", "Ready"}:
        return False
    running = {c.name for c in st.container_statuses if c.ready and c.HasField("state")
               and c.state.HasField("running")}
    return running >= {c.name for c in pod.spec.containers}


def termination_confirmed(pod: Message) -> bool:
    """A delete with grace period 0 was already made (only finalizers hold the pod)."""
    meta = pod.metadata
    return meta.HasField("deletion_grace_period_seconds") and meta.deletion_grace_period_seconds == 0


def running_status(pod: Message, node: HollowNode, pod_ip: str) -> Message:
    """The pod's status once its (imaginary) containers run and are ready."""
    status = core_pb2.PodStatus()
    status.CopyFrom(pod.status)  # keeps qosClass and anything else set by others
    now = _now_ts()
    status.phase = "Running"
    status.reason = status.message = ""
    status.host_ip = node.address
    del status.host_ips[:]
    status.host_ips.add(ip=node.address)
    status.pod_ip = pod_ip
    del status.pod_ips[:]
    status.pod_ips.add(ip=pod_ip)
    if not status.HasField("start_time"):
        status.start_time.CopyFrom(now)
    old = {c.type: c for c in status.conditions}
    del status.conditions[:]
    for type_ in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        cond = status.conditions.add(type=type_, status="True")
        prev = old.get(type_)
        if prev is not None and prev.status == "True" and prev.HasField("last_transition_time"):
            cond.last_transition_time.CopyFrom(prev.last_transition_time)
        else:
            cond.last_transition_time.CopyFrom(now)
    for type_, prev in old.items():  # conditions others own (readiness gates...) stay
        if type_ not in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            status.conditions.add().CopyFrom(prev)
    uid = pod.metadata.uid.replace("-", "")[:16]
    del status.init_container_statuses[:]
    for c in pod.spec.init_containers:
        cs = status.init_container_statuses.add(name=c.name, image=c.image, ready=True, restart_count=0,
                                                image_id=f"{RUNTIME}://{c.image}",
                                                container_id=f"{RUNTIME}://{uid}-{c.name}")
        cs.started = False
        term = cs.state.terminated
        term.exit_code, term.reason = 0, "Completed"
        term.started_at.CopyFrom(status.start_time)
        term.finished_at.CopyFrom(status.start_time)
        term.container_id = cs.container_id
    del status.container_statuses[:]
    for c in pod.spec.containers:
        cs = status.container_statuses.add(name=c.name, image=c.image, ready=True, restart_count=0,
                                           image_id=f"{RUNTIME}://{c.image}",
                                           container_id=f"{RUNTIME}://{uid}-{c.name}")
        cs.started = True
        cs.state.running.started_at.CopyFrom(status.start_time)
    return status


# ================================================================ the fleet


class HollowNodes:
    """N hollow nodes sharing one client, one Node and one Pod informer.

    `await run()` registers the nodes, keeps their leases and heartbeats
    going and serves their pods until cancelled; cancelling stops every
    renewal at once (the nodes then go NotReady through the node lifecycle
    controller, as when a machine dies). `ready` is set once every node is
    registered and the pod cache has synced.
    """

    def __init__(self, client: ApiClient, config: HollowConfig):
        self.client = client
        self.config = config
        self.nodes: dict[str, HollowNode] = {
            name: HollowNode(name, i, config)
            for i, name in enumerate(config.names(), start=config.first_index)}
        self.ready = asyncio.Event()
        # Leases have a budget of their own: a burst of pod or node status
        # writes must not delay renewals (Kubernetes gives node leases a
        # priority level of their own for the same reason).
        self._lease_slots = asyncio.Semaphore(config.api_concurrency)
        self._api = asyncio.Semaphore(config.api_concurrency)
        self._renewed: dict[str, float] = {}  # node -> monotonic time of its last renewal
        self.node_informer = Informer(client, "nodes")
        self.node_informer.add_handler(on_add=self._on_node, on_update=lambda old, new: self._on_node(new),
                                       on_delete=self._on_node_deleted)
        self.pod_informer = Informer(client, "pods", field_selector="spec.nodeName!=")
        self.pod_informer.store.add_index("node", lambda pod: [pod.spec.node_name])
        self.pod_informer.add_handler(on_add=self._on_pod, on_update=lambda old, new: self._on_pod(new),
                                      on_delete=self._on_pod_deleted)
        self.queue = WorkQueue(ItemExponentialFailureRateLimiter(0.05, 10.0), name="hollow-pods")
        self.stats = {"pods_started": 0, "pods_deleted": 0, "lease_renewals": 0, "status_posts": 0}

    # ------------------------------------------------------------ life

    async def run(self) -> None:
        tasks: list[asyncio.Task] = []
        try:
            await self.node_informer.start()
            await self.node_informer.wait_synced()
            await self._gather_limited(self._register(n) for n in self.nodes.values())
            started = time.monotonic()
            for node in self.nodes.values():
                self._renewed[node.name] = started
                tasks.append(asyncio.create_task(self._lease_loop(node), name=f"lease-{node.name}"))
                tasks.append(asyncio.create_task(self._status_loop(node), name=f"status-{node.name}"))
            await self.pod_informer.start()
            await self.pod_informer.wait_synced()
            tasks.append(asyncio.create_task(
                run_workers(self.queue, self._reconcile_pod, self.config.pod_workers)))
            if self.config.stats_interval > 0:
                tasks.append(asyncio.create_task(self._stats_loop()))
            log.info("%d hollow nodes registered (%s...); serving their pods",
                     len(self.nodes), next(iter(self.nodes), ""))
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            self.queue.shutdown()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pod_informer.stop()
            await self.node_informer.stop()

    async def _gather_limited(self, coros) -> None:
        async def one(coro):
            async with self._api:
                await coro
        await asyncio.gather(*(one(c) for c in coros))

    # ------------------------------------------------------ registration

    async def _register(self, node: HollowNode) -> None:
        """Create the Node, or take over an existing one (a restart): make
        sure of its labels and post fresh status. Retries until it works."""
        delay = 0.5
        while True:
            try:
                try:
                    created = await self.client.create(node.node_object())
                    self._adopt(node, created)
                    return
                except AlreadyExistsError:
                    pass

                async def relabel() -> Message:
                    existing = await self.client.get("nodes", node.name, "")
                    if all(existing.metadata.labels.get(k) == v for k, v in node.labels().items()):
                        return existing
                    existing.metadata.labels.update(node.labels())
                    return await self.client.update(existing)
                existing = await retry_on_conflict(relabel)
                self._adopt(node, existing)
                await self._post_status(node, existing)
                return
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("%s: registration failed: %s; retrying in %.1fs", node.name, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _adopt(self, node: HollowNode, obj: Message) -> None:
        node.uid = obj.metadata.uid
        node.set_pod_cidr(obj.spec.pod_cidr)

    # ---------------------------------------------------- lease and status

    async def _lease_loop(self, node: HollowNode) -> None:
        interval = self.config.renew_interval
        await asyncio.sleep(random.uniform(0, interval))  # spread the fleet over the interval
        while True:
            started = time.monotonic()
            try:
                async with self._lease_slots:
                    await self._renew(node)
                self.stats["lease_renewals"] += 1
                self._renewed[node.name] = time.monotonic()
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("%s: lease renewal failed: %s", node.name, e)
            except Exception:  # noqa: BLE001 - one bad renewal must not stop the node
                log.exception("%s: lease renewal failed", node.name)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _renew(self, node: HollowNode) -> None:
        if node.lease is not None:
            lease = copy(node.lease)
            node.fill_lease(lease)
            try:
                node.lease = await self.client.update(lease)
                return
            except (ConflictError, NotFoundError):
                node.lease = None  # someone else wrote it, or it was deleted: start over
        try:
            node.lease = await self.client.create(node.lease_object())
        except AlreadyExistsError:
            lease = await self.client.get("leases", node.name, NODE_LEASE_NAMESPACE)
            node.fill_lease(lease)
            node.lease = await self.client.update(lease)

    async def _status_loop(self, node: HollowNode) -> None:
        interval = self.config.status_interval
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            node.wake.clear()
            try:
                async with self._api:
                    await self._post_status(node, self.node_informer.store.get(node.name))
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("%s: node status update failed: %s", node.name, e)
            except Exception:  # noqa: BLE001 - one bad post must not stop the node
                log.exception("%s: node status update failed", node.name)
            try:
                await asyncio.wait_for(node.wake.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def _post_status(self, node: HollowNode, current: Message | None) -> None:
        """Write a fresh Ready heartbeat. Unconditional (no resourceVersion):
        this node agent owns its node's status. A deleted Node is registered again."""
        obj = core_pb2.Node(api_version="v1", kind="Node")
        obj.metadata.name = node.name
        obj.status.CopyFrom(node.node_status(current.status if current is not None else None))
        try:
            await self.client.update_status(obj)
            self.stats["status_posts"] += 1
        except NotFoundError:
            log.warning("%s: Node object is gone; registering again", node.name)
            created = await self.client.create(node.node_object())
            self._adopt(node, created)
            node.lease = None

    async def _stats_loop(self) -> None:
        """A progress line every stats_interval: what a benchmark needs to see
        whether the API server keeps up with the fleet."""
        last = dict(self.stats)
        while True:
            await asyncio.sleep(self.config.stats_interval)
            now = time.monotonic()
            rates = {k: (v - last[k]) / self.config.stats_interval for k, v in self.stats.items()}
            last = dict(self.stats)
            oldest = max((now - t for t in self._renewed.values()), default=0.0)
            log.info("%d nodes: %.0f lease renewals/s (oldest %.1fs ago), %.1f node status posts/s, "
                     "%.1f pods started/s, %.1f pods deleted/s, %d pods queued",
                     len(self.nodes), rates["lease_renewals"], oldest, rates["status_posts"],
                     rates["pods_started"], rates["pods_deleted"], len(self.queue))

    def _on_node(self, obj: Message) -> None:
        node = self.nodes.get(obj.metadata.name)
        if node is None:
            return
        node.uid = obj.metadata.uid or node.uid
        if node.set_pod_cidr(obj.spec.pod_cidr):
            log.debug("%s: pod CIDR %s", node.name, node.pod_cidr)
            for key in self.pod_informer.store.index_keys("node", node.name):
                self.queue.add(key)
        ready = next((c for c in obj.status.conditions if c.type == "Ready"), None)
        if ready is not None and ready.status != "True" and self.ready.is_set():
            # Marked NotReady / Unknown while we run (a late renewal): correct it now.
            node.wake.set()

    def _on_node_deleted(self, obj: Message) -> None:
        node = self.nodes.get(obj.metadata.name)
        if node is not None and self.ready.is_set():
            node.wake.set()  # the next status post registers it again

    # -------------------------------------------------------------- pods

    def _on_pod(self, pod: Message) -> None:
        node = self.nodes.get(pod.spec.node_name)
        if node is None:
            return
        key = key_of(pod)
        if node.allocator is not None and pod.status.pod_ip and node.allocator.get(key) is None:
            node.allocator.claim(key, pod.status.pod_ip)  # reported before a restart
        if pod.metadata.HasField("deletion_timestamp"):
            if not termination_confirmed(pod):
                self.queue.add(key)
        elif pod.status.phase in ("Succeeded", "Failed"):
            return
        elif not pod_reported(pod, node):
            self.queue.add(key)

    def _on_pod_deleted(self, pod: Message) -> None:
        node = self.nodes.get(pod.spec.node_name)
        if node is not None and node.allocator is not None:
            node.allocator.release(key_of(pod))

    async def _reconcile_pod(self, key: str) -> float | None:
        pod = self.pod_informer.store.get(key)
        if pod is None:
            return None
        node = self.nodes.get(pod.spec.node_name)
        if node is None:
            return None
        meta = pod.metadata
        if meta.HasField("deletion_timestamp"):
            if termination_confirmed(pod):
                return None  # only finalizers hold it now
            # The containers "stopped" at once; confirm the termination.
            try:
                await self.client.delete("pods", meta.name, meta.namespace, grace_period_seconds=0,
                                         uid=meta.uid)
                self.stats["pods_deleted"] += 1
            except (NotFoundError, ConflictError):
                pass
            if node.allocator is not None:
                node.allocator.release(key)
            return None
        if pod.status.phase in ("Succeeded", "Failed") or pod_reported(pod, node):
            return None
        if node.allocator is None:
            return None  # no pod CIDR yet: queued again when the node gets one
        if node.allocator.get(key) is None and pod.status.pod_ip:
            node.allocator.claim(key, pod.status.pod_ip)
        pod_ip = node.allocator.allocate(key)
        update = core_pb2.Pod(api_version="v1", kind="Pod")
        update.metadata.name, update.metadata.namespace = meta.name, meta.namespace
        update.metadata.uid = meta.uid  # precondition: not a new pod of the same name
        update.status.CopyFrom(running_status(pod, node, pod_ip))
        try:
            await self.client.update_status(update)
        except NotFoundError:
            node.allocator.release(key)
            return None
        except ConflictError:
            return None  # a new pod took the name; its own event queues it
        self.stats["pods_started"] += 1
        return None
