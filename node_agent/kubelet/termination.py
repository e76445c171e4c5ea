"""Stopping containers and removing pods from the node.

- `kill_container`: the container's preStop hook (exec or httpGet, within
  the grace period), then StopContainer with what is left of the grace
  period: the runtime sends the stop signal (SIGTERM), waits, then SIGKILLs.
  A Killing event says why.
- `kill_pod`: every running container of the pod at once, then the pod's
  network (Del, when the node agent attached it) and StopPodSandbox.
- `remove_pod`: RemovePodSandbox for every sandbox of the pod, any
  container left outside them, the pod's volumes, logs and record.
- `final_delete`: the delete with grace period 0 (and the pod's uid as
  precondition) that removes a terminated pod from the API server, as
  Kubernetes' kubelet does once the containers are gone.

Everything here is idempotent: stopping a stopped container, removing a
removed sandbox and deleting a deleted pod all succeed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Awaitable, Callable

from google.protobuf.message import Message

from kubeling.client import events as ev
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ConflictError, NotFoundError
from node_agent.kubelet.cri_client import CriNotFound, RuntimeClient
from node_agent.kubelet.network_client import NetworkClient
from node_agent.kubelet.pod_state import PodStateStore
from node_agent.kubelet.probes import FAILURE, Prober, ProbeTarget
from node_agent.kubelet.runtime_pods import RuntimeContainer, RuntimePod
from node_agent.kubelet.volumes import VolumeManager

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30
MIN_KILL_GRACE = 2  # a pod being deleted always gets this long, as in Kubernetes

EventFn = Callable[[Message, str, str, str], Awaitable[None]]


def spec_grace(pod: Message) -> int:
    return pod.spec.termination_grace_period_seconds if pod.spec.HasField(
        "termination_grace_period_seconds") else DEFAULT_GRACE


def deletion_grace(pod: Message, now: float | None = None) -> int:
    """Seconds the containers of a pod being deleted still get: the
    deletion's grace period, less what has already passed of it (but at
    least MIN_KILL_GRACE, or the whole period when it is shorter)."""
    meta = pod.metadata
    grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") \
        else spec_grace(pod)
    if grace <= 0:
        return 0
    if meta.HasField("deletion_timestamp"):
        left = meta.deletion_timestamp.seconds - (time.time() if now is None else now)
        return max(min(grace, math.ceil(left)), min(grace, MIN_KILL_GRACE))
    return grace


class PodKiller:
    def __init__(self, runtime: RuntimeClient, network: NetworkClient | None, volumes: VolumeManager,
                 states: PodStateStore, prober: Prober, event: EventFn, client: ApiClient,
                 log_root: Path):
        self.runtime = runtime
        self.network = network
        self.volumes = volumes
        self.states = states
        self.prober = prober
        self.event = event
        self.client = client
        self.log_root = Path(log_root)

    async def kill_container(self, pod: Message | None, spec: Message | None, c: RuntimeContainer,
                             grace: int, message: str | None = None) -> None:
        """Stop one container (preStop hook first). Idempotent."""
        started = time.monotonic()
        if pod is not None:
            await self.event(pod, ev.NORMAL, ev.KILLING, message or f"Stopping container {c.name}")
        if spec is not None and pod is not None and c.running and grace > 0 and \
                spec.HasField("lifecycle") and spec.lifecycle.HasField("pre_stop"):
            rec = self.states.get(pod.metadata.uid)
            target = ProbeTarget(c.id, rec.pod_ip if rec else "", (rec.netns or None) if rec else None)
            try:
                outcome, msg = await asyncio.wait_for(
                    self.prober.run(spec.lifecycle.pre_stop, spec, target, grace), grace)
            except asyncio.TimeoutError:
                outcome, msg = FAILURE, f"timed out after {grace}s"
            if outcome == FAILURE:
                await self.event(pod, ev.WARNING, "FailedPreStopHook",
                                 f"PreStopHook failed for container {c.name}: {msg}")
        left = max(0, grace - int(time.monotonic() - started)) if grace > 0 else 0
        try:
            await self.runtime.stop_container(c.id, left)
        except CriNotFound:
            pass

    async def kill_pod(self, pod: Message | None, rp: RuntimePod, grace: int,
                       specs: dict[str, Message] | None = None, message: str | None = None) -> None:
        """Stop every running container at once, then the pod's network and sandboxes."""
        running = rp.running()
        if running:
            results = await asyncio.gather(*(
                self.kill_container(pod, (specs or {}).get(c.name), c, grace, message) for c in running),
                return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        await self.stop_sandboxes(rp)

    async def detach_network(self, sandbox_id: str, uid: str) -> None:
        rec = self.states.get(uid)
        if self.network is None:
            return
        if rec is not None and rec.sandbox_id == sandbox_id and not rec.network_attached:
            return  # the runtime did the networking; StopPodSandbox undoes it
        await self.network.delete(sandbox_id, rec.netns if rec and rec.sandbox_id == sandbox_id else "",
                                  rec.namespace if rec else "", rec.name if rec else "", uid)

    async def stop_sandboxes(self, rp: RuntimePod) -> None:
        for s in rp.sandboxes:
            if s.ready:
                await self.detach_network(s.id, rp.uid)
                await self.runtime.stop_pod_sandbox(s.id)

    async def remove_pod(self, rp: RuntimePod) -> None:
        """Remove everything the node holds for the pod (its containers must be stopped)."""
        uid = rp.uid
        rec = self.states.get(uid)
        for s in rp.sandboxes:
            await self.detach_network(s.id, uid)
            await self.runtime.remove_pod_sandbox(s.id)
        left = [c for c in rp.containers if c.sandbox_id not in {s.id for s in rp.sandboxes}]
        for c in left:
            await self.runtime.remove_container(c.id)
        self.volumes.teardown(uid)
        log_dir = self.log_dir(rp.namespace or (rec.namespace if rec else ""),
                               rp.name or (rec.name if rec else ""), uid)
        if rec is not None and rec.log_directory:
            shutil.rmtree(rec.log_directory, ignore_errors=True)
        shutil.rmtree(log_dir, ignore_errors=True)
        self.states.forget(uid)

    def log_dir(self, namespace: str, name: str, uid: str) -> Path:
        """Where the pod's container logs go (as Kubernetes' /var/log/pods/<ns>_<name>_<uid>)."""
        return self.log_root / f"{namespace}_{name}_{uid}"

    async def final_delete(self, pod: Message) -> None:
        meta = pod.metadata
        try:
            await self.client.delete("pods", meta.name, meta.namespace, grace_period_seconds=0, uid=meta.uid)
        except (NotFoundError, ConflictError):
            pass  # already gone, or a new pod took the name

