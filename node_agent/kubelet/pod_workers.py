"""Pod workers: who syncs which pod, when.

Keys are pod UIDs (a pod deleted and created again under the same name is
a different pod, with its own containers). Three sources queue a UID:

- the pod informer (pods with `spec.nodeName=<this node>`): every add,
  update and delete;
- the PLEG (pleg.py), when the runtime's containers of a pod change state
  (a container exited) or a UID is found in the runtime that the API
  server no longer has (an orphan);
- probe results that flip, and the sync itself (`requeue` seconds: backoff
  expiry, periodic resync).

The work queue hands a UID to one worker at a time, so a pod is never
synced twice at once, while many pods sync in parallel. `reconcile(uid)`
reads the informer's cache and picks: gone -> cleanup, being deleted ->
terminate, else sync. Errors are retried with per-UID backoff (0.2 s
doubling to 30 s).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from google.protobuf.message import Message

from kubeling.client.errors import ApiError
from kubeling.client.informer import Informer
from kubeling.objects import copy
from kubeling.client.workqueue import (BucketRateLimiter, ItemExponentialFailureRateLimiter,
                                       MaxOfRateLimiter, WorkQueue, run_workers)
from node_agent.kubelet.cri_client import CriError
from node_agent.kubelet.network_client import NetworkError
from node_agent.kubelet.pod_sync import PodSyncer
from node_agent.kubelet.volumes import VolumeError

log = logging.getLogger(__name__)

UID_INDEX = "uid"
_RETRY_BASE, _RETRY_MAX = 0.2, 30.0
_REMEMBER_DELETED = 2048


def _without_status(pod: Message) -> Message:
    bare = copy(pod)
    bare.ClearField("status")
    bare.metadata.resource_version = ""
    return bare


class PodWorkers:
    def __init__(self, informer: Informer, syncer: PodSyncer, node_name: str, workers: int = 16):
        self.informer = informer
        self.syncer = syncer
        self.node_name = node_name
        self.workers = workers
        self.queue = WorkQueue(MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.2, 30.0),
                                                BucketRateLimiter(qps=50.0, burst=200)), name="pods")
        # The last state of pods deleted from the API server (for their grace period).
        self._deleted: OrderedDict[str, Message] = OrderedDict()
        self._failures: dict[str, int] = {}
        informer.store.add_index(UID_INDEX, lambda pod: [pod.metadata.uid])
        informer.add_handler(on_add=self._on_pod, on_update=self._on_pod_update,
                             on_delete=self._on_pod_deleted)

    def enqueue(self, uid: str) -> None:
        if uid:
            self.queue.add(uid)

    def pod(self, uid: str) -> Message | None:
        """The cached pod with this UID, or None."""
        pods = self.informer.store.by_index(UID_INDEX, uid)
        return pods[0] if pods else None

    def known(self, uid: str) -> bool:
        return bool(self.informer.store.index_keys(UID_INDEX, uid))

    def _on_pod(self, pod: Message) -> None:
        self.enqueue(pod.metadata.uid)

    def _on_pod_update(self, old: Message, new: Message) -> None:
        # A change of status alone is (nearly always) our own write coming
        # back; as Kubernetes' kubelet, do not sync for it. Periodic syncs
        # correct what others may have written there.
        if old is not new and _without_status(old) == _without_status(new):
            return
        self.enqueue(new.metadata.uid)

    def _on_pod_deleted(self, pod: Message) -> None:
        self._deleted[pod.metadata.uid] = pod
        while len(self._deleted) > _REMEMBER_DELETED:
            self._deleted.popitem(last=False)
        self.enqueue(pod.metadata.uid)

    async def reconcile(self, uid: str) -> float | None:
        """One pass for `uid`. Expected failures (the runtime, the network or
        the API server refusing or unreachable) are logged in one line and
        retried after a per-UID backoff; anything else propagates (logged
        with its traceback by the worker, and retried too)."""
        try:
            result = await self._reconcile(uid)
        except (CriError, NetworkError, ApiError, VolumeError) as e:
            failures = self._failures.get(uid, 0) + 1
            self._failures[uid] = failures
            delay = min(_RETRY_MAX, _RETRY_BASE * 2 ** (failures - 1))
            pod = self.pod(uid)
            what = f"{pod.metadata.namespace}/{pod.metadata.name}" if pod is not None else uid
            log.warning("pod %s: %s (retry %d in %.1fs)", what, e, failures, delay)
            return delay
        self._failures.pop(uid, None)
        return result

    async def _reconcile(self, uid: str) -> float | None:
        pod = self.pod(uid)
        if pod is None or pod.spec.node_name != self.node_name:
            last = self._deleted.pop(uid, None) or pod
            if await self.syncer.cleanup(uid, last):
                log.info("cleaned up pod %s (uid %s), gone from the API server",
                         f"{last.metadata.namespace}/{last.metadata.name}" if last is not None else "?", uid)
            return None
        if pod.metadata.HasField("deletion_timestamp"):
            await self.syncer.terminate(pod)
            log.info("pod %s/%s terminated", pod.metadata.namespace, pod.metadata.name)
            return None
        return await self.syncer.sync(pod)

    async def run(self) -> None:
        """Run the workers until cancelled (the informer must have synced)."""
        await run_workers(self.queue, self.reconcile, self.workers)

    def shutdown(self) -> None:
        self.queue.shutdown()
