"""The node agent: wiring of registration, lease, pod informer, PLEG, pod
workers and probes around one API client, one CRI runtime and (optionally)
one network service.

Start-up order (`run`):
1. wait for the runtime to answer (Version), read its name and version;
2. register the Node (retrying until the API server answers), then keep
   the Lease and the node status fresh in background tasks;
3. list and watch the pods bound to this node; once the cache has synced,
   start the PLEG (whose first relist queues every pod the runtime holds,
   so pods from before a restart are adopted and orphans cleaned up) and
   the pod workers.
Logs "node agent ready" at that point. Before registering, it starts the
node's logs and exec service (node_agent.node_service, `--address:--port`)
and publishes its port in the Node's daemonEndpoints. SIGTERM stops the agent; pods keep
running (a restarted agent adopts them).

That service finds containers by their CRI labels; the agent also
offers `container_location(namespace, pod, container, previous)`: the
container id to ExecSync in (through `agent.runtime`) and its log file
(CRI log format); the same facts are on disk in
`<state-dir>/pods/<uid>/pod.json` (see pod_state.py) and every log lives
under `<state-dir>/logs/<namespace>_<pod>_<uid>/<container>/<attempt>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from kubeling.client import events as ev
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError
from kubeling.client.events import EventRecorder
from kubeling.client.informer import Informer
from kubeling.cri.v1 import api_pb2
from node_agent.kubelet import node_status as ns
from node_agent.kubelet.backoff import Backoff
from node_agent.kubelet.cri_client import CriError, RuntimeClient
from node_agent.kubelet.image_manager import ImageManager
from node_agent.kubelet.lease import LeaseRenewer
from node_agent.kubelet.network_client import NetworkClient
from node_agent.kubelet.pleg import Pleg
from node_agent.kubelet.pod_state import PodRecord, PodStateStore
from node_agent.kubelet.pod_sync import PodSyncer, SyncSettings
from node_agent.kubelet.pod_workers import PodWorkers
from node_agent.kubelet.probes import Prober, ProbeManager
from node_agent.kubelet.runtime_pods import CONTAINER_KIND, CONTAINER_NAME, POD_UID
from node_agent.kubelet.termination import PodKiller
from node_agent.kubelet.volumes import VolumeManager

log = logging.getLogger(__name__)

COMPONENT = "kubelet"


@dataclass
class AgentConfig:
    server: str
    node_name: str
    node_ip: str
    runtime_endpoint: str
    state_dir: Path
    network_endpoint: str = ""
    lease_duration: int = 40
    renew_interval: float = 1.0
    status_interval: float = 10.0
    system_reserved: dict[str, str] = field(default_factory=dict)
    node_labels: dict[str, str] = field(default_factory=dict)
    max_pods: int = ns.DEFAULT_MAX_PODS
    pod_workers: int = 16
    pleg_period: float = 1.0
    sync_frequency: float = 10.0
    crashloop_initial: float = 10.0
    crashloop_max: float = 300.0
    cgroup_root: str = ""
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    port: int = 10250          # the logs/exec service's port (0: any free one; -1: do not serve)
    address: str = "0.0.0.0"   # and the address it listens on


@dataclass
class ContainerLocation:
    """Where a container is, for logs and exec."""

    pod_uid: str
    container_id: str
    log_path: str
    running: bool
    attempt: int


class NodeAgent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.state_dir = Path(config.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.pods_dir = self.state_dir / "pods"
        self.logs_dir = self.state_dir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.client: ApiClient | None = None
        self.runtime = RuntimeClient(config.runtime_endpoint)
        self.network = NetworkClient(config.network_endpoint) if config.network_endpoint else None
        self.runtime_name = "cri"
        self.runtime_version = ""
        self.ready = asyncio.Event()          # set once pods are being served
        self.node_ready = False
        self.node_not_ready_message = "container runtime status check may not have completed yet"
        self._tasks: list[asyncio.Task] = []
        self.workers: PodWorkers | None = None
        self.pleg: Pleg | None = None
        self.probes: ProbeManager | None = None
        self.states = PodStateStore(self.pods_dir)
        self.node_service = None
        self.port = config.port if config.port > 0 else 0

    # ---------------------------------------------------------------- life

    async def run(self) -> None:
        cfg = self.config
        self.client = ApiClient(cfg.server, timeout=30) if cfg.server else ApiClient.from_config(timeout=30)
        recorder = EventRecorder(self.client, COMPONENT, host=cfg.node_name)

        pending: set[asyncio.Task] = set()

        async def event(obj: Message | None, type_: str, reason: str, message: str) -> None:
            # Recorded in the background: an Event never delays a pod's start.
            if obj is not None:
                task = asyncio.create_task(recorder.event(obj, type_, reason, message))
                pending.add(task)
                task.add_done_callback(pending.discard)

        try:
            await self._wait_for_runtime()
            await self._start_node_service()
            capacity = ns.machine_capacity(str(self.state_dir), cfg.max_pods)
            allocatable = ns.allocatable(capacity, cfg.system_reserved)
            node_cfg = ns.NodeConfig(cfg.node_name, cfg.node_ip, capacity, allocatable, cfg.node_labels,
                                     self.port)
            self.registrar = ns.NodeRegistrar(self.client, node_cfg)
            await self._check_node_ready()
            await self._register()
            lease = LeaseRenewer(self.client, cfg.node_name, cfg.lease_duration, cfg.renew_interval,
                                 node_uid=lambda: self.registrar.uid)
            self._tasks.append(asyncio.create_task(lease.run(), name="lease"))
            self._tasks.append(asyncio.create_task(self._node_status_loop(), name="node-status"))

            informer = Informer(self.client, "pods", field_selector=f"spec.nodeName={cfg.node_name}")
            volumes = VolumeManager(self.pods_dir)
            prober = Prober(self.runtime)
            workers_box: list[PodWorkers] = []

            def probe_changed(uid: str) -> None:
                if workers_box:
                    workers_box[0].enqueue(uid)

            async def probe_failed(uid: str, container: str, kind: str, message: str) -> None:
                pod = workers_box[0].pod(uid) if workers_box else None
                await event(pod, ev.WARNING, ev.UNHEALTHY, f"{kind} probe failed: {message}")

            self.probes = ProbeManager(prober, probe_changed, probe_failed)
            killer = PodKiller(self.runtime, self.network, volumes, self.states, prober, event, self.client,
                               self.logs_dir)
            settings = SyncSettings(
                node_name=cfg.node_name, node_ip=cfg.node_ip, cgroup_root=cfg.cgroup_root,
                cluster_dns=cfg.cluster_dns, cluster_domain=cfg.cluster_domain,
                sync_frequency=cfg.sync_frequency, memory_capacity=ns.memory_total_bytes(),
                allocatable=allocatable)
            syncer = PodSyncer(settings, self.client, self.runtime, self.network, volumes, self.states,
                               self.probes, ImageManager(self.runtime, event), killer, event,
                               Backoff(cfg.crashloop_initial, cfg.crashloop_max), lambda: self.runtime_name)
            self.workers = PodWorkers(informer, syncer, cfg.node_name, cfg.pod_workers)
            workers_box.append(self.workers)
            self.volumes = volumes
            self.pleg = Pleg(self.runtime, self._on_runtime_change, cfg.pleg_period)

            await informer.start()
            while not await informer.wait_synced(30):
                log.warning("still waiting for the pod cache to sync")
            self._tasks.append(asyncio.create_task(self.pleg.run(), name="pleg"))
            self._tasks.append(asyncio.create_task(self.workers.run(), name="pod-workers"))
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
            self.ready.set()
            log.info("node agent ready: node %s, %d pods bound here", cfg.node_name, len(informer.store))
            await asyncio.gather(*self._tasks)
        finally:
            await self._shutdown()

    async def _start_node_service(self) -> None:
        """The node's logs and exec service (node_agent.node_service), published
        as the Node's daemonEndpoints.kubeletEndpoint.Port."""
        if self.config.port < 0:
            return
        from node_agent.node_service import start_node_service
        self.node_service = await start_node_service(f"{self.config.address}:{self.config.port}",
                                                     self.config.runtime_endpoint)
        self.port = self.node_service.port

    async def _shutdown(self) -> None:
        if self.node_service is not None:
            with contextlib.suppress(Exception):
                await self.node_service.stop()
        if self.workers is not None:
            self.workers.shutdown()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.workers is not None:
            await self.workers.informer.stop()
        if self.probes is not None:
            await self.probes.close()
        await self.runtime.close()
        if self.network is not None:
            await self.network.close()
        if self.client is not None:
            await self.client.close()

    def _on_runtime_change(self, uid: str) -> None:
        if self.workers is not None:
            self.workers.enqueue(uid)

    async def _wait_for_runtime(self) -> None:
        delay = 0.1
        while True:
            try:
                v = await self.runtime.version()
                self.runtime_name, self.runtime_version = v.runtime_name or "cri", v.runtime_version
                log.info("container runtime %s %s (CRI %s) at %s", v.runtime_name, v.runtime_version,
                         v.runtime_api_version, self.config.runtime_endpoint)
                return
            except CriError as e:
                log.info("waiting for the container runtime at %s: %s", self.config.runtime_endpoint, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def runtime_version_string(self) -> str:
        return f"{self.runtime_name}://{self.runtime_version}"

    async def _register(self) -> None:
        delay = 0.2
        while True:
            try:
                node = await self.registrar.register(self.node_ready, self.node_not_ready_message,
                                                     self.runtime_version_string)
                log.info("registered node %s (uid %s)", node.metadata.name, node.metadata.uid)
                return
            except ApiError as e:
                log.warning("registering node %s failed: %s; retrying", self.config.node_name, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _check_node_ready(self) -> bool:
        """Ask the runtime and the network; True when readiness changed."""
        ready, message = True, ""
        try:
            resp = await self.runtime.status()
            for cond in resp.status.conditions:
                if cond.type in ("RuntimeReady", "NetworkReady") and not cond.status:
                    ready = False
                    what = "runtime" if cond.type == "RuntimeReady" else "runtime network"
                    message = f"container {what} not ready: {cond.type}=false reason:{cond.reason} " \
                              f"message:{cond.message}"
                    break
        except CriError as e:
            ready, message = False, f"container runtime is down: {e}"
        if ready and self.network is not None:
            ok, why = await self.network.status()
            if not ok:
                ready, message = False, f"network plugin not ready: {why}"
        if self.pleg is not None and self.pleg.relists and not self.pleg.healthy:
            ready, message = False, "PLEG is not healthy: the runtime cannot be relisted"
        changed = (ready, message) != (self.node_ready, self.node_not_ready_message)
        self.node_ready = ready
        self.node_not_ready_message = message
        return changed

    async def _node_status_loop(self) -> None:
        last_post = 0.0
        while True:
            try:
                changed = await self._check_node_ready()
                if changed or time.monotonic() - last_post >= self.config.status_interval:
                    await self.registrar.post(self.node_ready, self.node_not_ready_message,
                                              self.runtime_version_string)
                    last_post = time.monotonic()
                    if changed:
                        log.info("node %s is %s%s", self.config.node_name,
                                 "Ready" if self.node_ready else "NotReady",
                                 "" if self.node_ready else f": {self.node_not_ready_message}")
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("node status update failed: %s", e)
            except Exception:  # noqa: BLE001 - keep reporting
                log.exception("node status update failed")
            await asyncio.sleep(min(1.0, self.config.status_interval))

    async def _housekeeping(self) -> None:
        """Every few seconds: queue UIDs that the runtime or the pods directory
        still hold but the API server no longer has (orphans), and drop old
        backoff entries."""
        while True:
            await asyncio.sleep(5)
            try:
                workers = self.workers
                stale = set(self.pleg.uids if self.pleg else ()) | set(self.volumes.pod_uids())
                for uid in stale:
                    if not workers.known(uid):
                        workers.enqueue(uid)
                workers.syncer.crash_backoff.gc()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("housekeeping failed")

    # ---------------------------------------------------------------- for logs and exec

    def pod_record(self, namespace: str, name: str) -> PodRecord | None:
        """The on-disk record of a pod on this node (see pod_state.py), or None."""
        pod = None
        if self.workers is not None:
            pod = self.workers.informer.store.get(f"{namespace}/{name}")
        if pod is not None:
            rec = self.states.get(pod.metadata.uid)
            if rec is not None:
                return rec
        return self.states.find(namespace, name)

    async def container_location(self, namespace: str, pod: str, container: str = "",
                                 previous: bool = False) -> ContainerLocation | None:
        """The current (or, with `previous`, the one before) container of a pod on
        this node, asked of the runtime: its id (for ExecSync) and log path.
        `container` "" means the pod's only (first) container. None when the
        pod or container has nothing on this node."""
        uid = ""
        spec_pod = self.workers.informer.store.get(f"{namespace}/{pod}") if self.workers else None
        if spec_pod is not None:
            uid = spec_pod.metadata.uid
            if not container and spec_pod.spec.containers:
                container = spec_pod.spec.containers[0].name
        else:
            rec = self.states.find(namespace, pod)
            if rec is None:
                return None
            uid = rec.uid
            if not container and rec.containers:
                container = sorted(rec.containers)[0]
        labels = {POD_UID: uid}
        if container:
            labels[CONTAINER_NAME] = container
        found = await self.runtime.list_containers(labels)
        if not found:
            return None
        found.sort(key=lambda c: (c.labels.get(CONTAINER_KIND) == "app", c.metadata.attempt, c.created_at),
                   reverse=True)
        index = 1 if previous else 0
        if index >= len(found):
            return None
        chosen = found[index]
        status = (await self.runtime.container_status(chosen.id)).status
        return ContainerLocation(uid, chosen.id, status.log_path, status.state == api_pb2.CONTAINER_RUNNING,
                                 chosen.metadata.attempt)
