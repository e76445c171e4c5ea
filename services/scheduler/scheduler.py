"""The scheduler: informers feed the queue and the snapshot; one loop takes
one pod at a time, finds it a node, assumes it there and binds it.

- One pod informer over every non-terminal pod (field selector
  `status.phase!=Succeeded,status.phase!=Failed`, as kube-scheduler's): pods
  with no spec.nodeName (and our schedulerName, not being deleted) go to the
  scheduling queue, assigned ones to the snapshot. A bind shows up as an
  update from unassigned to assigned, one event per pod; a pod that
  finishes stops matching and arrives as a delete, freeing its node.
- A node informer keeps the snapshot's nodes; a node added, or changed in a
  way that matters (readiness, allocatable, labels, taints, unschedulable),
  moves unschedulable pods that fit it back to the active queue, as does a
  deleted assigned pod.
- A scheduling cycle is synchronous (filter, score, assume); the Bind RPC
  then runs as a task of its own, so the next pod is scheduled while binds
  are in flight (at most `max_binds_in_flight`). A failed bind forgets the
  assumption and retries the pod with backoff.
- No fit: a `FailedScheduling` Warning Event with kube-scheduler's message
  and PodScheduled=False (reason Unschedulable) on the pod; success: a
  `Scheduled` Event. Both are fire-and-forget (BackgroundWrites).

Nothing here re-reads the API: every decision comes from the informers'
caches and the assume cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from google.protobuf.message import Message

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import (ApiError, ConflictError, FailedPreconditionError,
                                    NotFoundError)
from kubeling.client.events import (FAILED_SCHEDULING, NORMAL, SCHEDULED, WARNING,
                                    EventRecorder)
from kubeling.client.informer import SharedInformerFactory
from kubeling.objects import copy

from .algorithm import ScheduleAlgorithm
from .background_writes import BackgroundWrites
from .framework import FitError, Framework
from .node_info import PodInfo, pod_is_terminal
from .scheduling_queue import QueueClosed, QueuedPodInfo, SchedulingQueue, pod_key
from .snapshot import Snapshot

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER_NAME = "default-scheduler"
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
POD_SCHEDULED = "PodScheduled"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_SCHEDULER_ERROR = "SchedulerError"


def _ready_status(node: Message) -> str:
    for cond in node.status.conditions:
        if cond.type == "Ready":
            return cond.status
    return ""


def node_scheduling_changed(old: Message, new: Message) -> bool:
    """Whether a node update can change what fits on it (heartbeats cannot)."""
    return (old.spec.unschedulable != new.spec.unschedulable
            or old.status.allocatable != new.status.allocatable
            or old.metadata.labels != new.metadata.labels
            or list(old.spec.taints) != list(new.spec.taints)
            or _ready_status(old) != _ready_status(new))


class Scheduler:
    """Schedules pods whose spec.schedulerName is `scheduler_name`.

    `start()` starts the informers and waits for their caches (a standby
    does this before it leads, so it takes over warm); `run()` schedules
    until cancelled; `stop()` stops the informers.
    """

    def __init__(self, client: ApiClient, *, scheduler_name: str = DEFAULT_SCHEDULER_NAME,
                 percentage_of_nodes_to_score: int = 0, framework: Framework | None = None,
                 identity: str = "", max_binds_in_flight: int = 64,
                 event_workers: int = 2, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.scheduler_name = scheduler_name
        self.framework = framework or Framework()
        self.snapshot = Snapshot(clock=clock)
        self.queue = SchedulingQueue(clock=clock)
        self.algorithm = ScheduleAlgorithm(self.framework, self.snapshot,
                                           percentage_of_nodes_to_score)
        self.recorder = EventRecorder(client, scheduler_name, identity)
        self.events = BackgroundWrites("events", workers=event_workers)
        self.status_writes = BackgroundWrites("pod-status", workers=2)
        self.max_binds_in_flight = max_binds_in_flight
        self._bind_slots = asyncio.Semaphore(max_binds_in_flight)
        self._binds: set[asyncio.Task] = set()
        self.informers = SharedInformerFactory(client)
        self.pod_informer = self.informers.informer("pods", field_selector=POD_FIELD_SELECTOR)
        self.node_informer = self.informers.informer("nodes")
        self.pod_informer.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self.node_informer.add_handler(self._on_node_add, self._on_node_update, self._on_node_delete)
        # counters, for logs and tests
        self.scheduled = 0
        self.unschedulable_attempts = 0
        self.bind_failures = 0

    # ------------------------------------------------------------- lifecycle

    async def start(self, timeout: float | None = None) -> bool:
        """Start the informers; True once their caches have synced."""
        await self.informers.start_all()
        return await self.informers.wait_for_cache_sync(timeout)

    async def stop(self) -> None:
        self.queue.close()
        await self._cancel_binds()
        await self.informers.stop_all()

    async def run(self) -> None:
        """Schedule pods until cancelled (the leader's loop). Call start() first."""
        log.info("scheduling: %d nodes, %d pods pending", len(self.snapshot), len(self.queue))
        helpers = [asyncio.create_task(self.events.run(), name="scheduler-events"),
                   asyncio.create_task(self.status_writes.run(), name="scheduler-status"),
                   asyncio.create_task(self._housekeeping(), name="scheduler-housekeeping")]
        try:
            while True:
                await self._bind_slots.acquire()
                try:
                    q = await self.queue.pop()
                except QueueClosed:
                    self._bind_slots.release()
                    return
                binding = False
                try:
                    binding = self.schedule_one(q)
                except Exception:  # noqa: BLE001 - one bad pod must not stop scheduling
                    log.exception("scheduling %s failed", q.key)
                    self.snapshot.forget_pod(q.key)
                    self.queue.add_backoff(q)
                if not binding:
                    self._bind_slots.release()
                # A cycle never awaits; let watch events and bind replies in.
                await asyncio.sleep(0)
        finally:
            for t in helpers:
                t.cancel()
            await self._cancel_binds()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _cancel_binds(self) -> None:
        binds = list(self._binds)
        for t in binds:
            t.cancel()
        await asyncio.gather(*binds, return_exceptions=True)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.snapshot.cleanup_expired()

    # ------------------------------------------------------- one scheduling cycle

    def schedule_one(self, q: QueuedPodInfo) -> bool:
        """Find a node for `q`, assume it there and start the bind (or park
        the pod as unschedulable). True if a bind was started: it holds a
        bind slot, which the bind releases when it ends."""
        pod = q.info
        cycle = self.queue.scheduling_cycle
        if self.snapshot.node_of(pod.key) is not None:
            return False  # already assumed or bound: nothing to do
        try:
            result = self.algorithm.schedule(pod)
        except FitError as e:
            self.unschedulable_attempts += 1
            q.unschedulable_plugins = e.plugins
            self.queue.add_unschedulable(q, cycle)
            log.debug("%s: %s", pod.key, e.message)
            self._record_failure(pod, REASON_UNSCHEDULABLE, e.message)
            return False
        self.snapshot.assume_pod(pod, result.node_name)
        task = asyncio.create_task(self._bind(q, result.node_name))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)
        return True

    async def _bind(self, q: QueuedPodInfo, node_name: str) -> None:
        pod = q.info
        try:
            await self.client.bind(pod.namespace, pod.name, node_name, uid=pod.uid)
        except asyncio.CancelledError:
            self.snapshot.forget_pod(pod.key)
            raise
        except (NotFoundError, FailedPreconditionError, ConflictError) as e:
            # Gone, already bound, being deleted, or replaced by a new pod of
            # the same name: the informer brings the truth; nothing to retry.
            self.snapshot.forget_pod(pod.key)
            self.bind_failures += 1
            log.info("binding %s to %s: %s", pod.key, node_name, e)
            self._requeue_after_error(q)
        except Exception as e:  # noqa: BLE001 - ApiError, timeouts: retry with backoff
            self.snapshot.forget_pod(pod.key)
            self.bind_failures += 1
            log.warning("binding %s to %s failed: %s", pod.key, node_name, e)
            self._record_failure(pod, REASON_SCHEDULER_ERROR, f"Binding rejected: {e}")
            self._requeue_after_error(q)
        else:
            self.snapshot.finish_binding(pod.key)
            self.scheduled += 1
            message = f"Successfully assigned {pod.namespace}/{pod.name} to {node_name}"
            self.events.submit(lambda: self.recorder.event(pod.pod, NORMAL, SCHEDULED, message))
        finally:
            self._bind_slots.release()

    def _requeue_after_error(self, q: QueuedPodInfo) -> None:
        """Retry `q` with backoff if it is still a pending pod of ours."""
        latest = self.pod_informer.store.get(q.key)
        if latest is None or latest.spec.node_name or not self._responsible(latest):
            return
        if latest is not q.info.pod:
            q.info = PodInfo(latest)
        self.queue.add_backoff(q)

    # ------------------------------------------------------------- reporting

    def _record_failure(self, pod: PodInfo, reason: str, message: str) -> None:
        self.events.submit(lambda: self.recorder.event(pod.pod, WARNING, FAILED_SCHEDULING, message))
        cond = _pod_scheduled_condition(pod.pod)
        if cond is not None and cond.status == "False" and cond.reason == reason \
                and cond.message == message:
            return  # already says so
        self.status_writes.submit(lambda: self._write_unschedulable_status(pod.key, reason, message))

    async def _write_unschedulable_status(self, key: str, reason: str, message: str) -> None:
        """PodScheduled=False on the pod's latest cached version; a conflict
        means it changed meanwhile, and the next attempt writes again."""
        cached = self.pod_informer.store.get(key)
        if cached is None or cached.spec.node_name:
            return
        cond = _pod_scheduled_condition(cached)
        if cond is not None and cond.status == "False" and cond.reason == reason \
                and cond.message == message:
            return
        pod = copy(cached)
        cond = _pod_scheduled_condition(pod)
        if cond is None:
            cond = pod.status.conditions.add(type=POD_SCHEDULED)
        if cond.status != "False" or not cond.HasField("last_transition_time"):
            cond.last_transition_time.GetCurrentTime()
            cond.last_transition_time.nanos = 0
        cond.status = "False"
        cond.reason = reason
        cond.message = message
        try:
            await self.client.update_status(pod)
        except (ConflictError, NotFoundError):
            pass
        except ApiError as e:
            log.info("could not update status of %s: %s", key, e)

    # -------------------------------------------------------- informer events

    def _responsible(self, pod: Message) -> bool:
        return (pod.spec.scheduler_name in (self.scheduler_name, "")
                and not pod.metadata.HasField("deletion_timestamp"))

    def _on_pod_add(self, pod: Message) -> None:
        if pod.spec.node_name:
            if not pod_is_terminal(pod):
                self.snapshot.add_pod(pod)
        elif self._responsible(pod) and not pod_is_terminal(pod):
            self.queue.add(pod)

    def _on_pod_update(self, old: Message, new: Message) -> None:
        key = pod_key(new)
        if new.spec.node_name:
            if not old.spec.node_name:
                self.queue.delete(key)  # bound: by us, or by someone else
            if pod_is_terminal(new):
                self._assigned_pod_gone(new)
            else:
                self.snapshot.add_pod(new)
            return
        if old.spec.node_name:  # cannot happen through the API; be level-correct anyway
            self._assigned_pod_gone(old)
        if self.snapshot.is_assumed(key):
            return  # our bind is in flight; its result decides
        if not self._responsible(new) or pod_is_terminal(new):
            self.queue.delete(key)
            return
        self.queue.update(old, new)

    def _on_pod_delete(self, pod: Message) -> None:
        key = pod_key(pod)
        self.queue.delete(key)
        if self.snapshot.node_of(key) is not None:
            self._assigned_pod_gone(pod)

    def _assigned_pod_gone(self, pod: Message) -> None:
        self.snapshot.remove_pod(pod)
        # Room was freed on one node: retry the pods that now fit there.
        info = self.snapshot.get(pod.spec.node_name)
        if info is not None:
            self.queue.move_all_to_active_or_backoff(
                lambda p: self.framework.run_filters(p, info).is_success)
        else:
            self.queue.move_all_to_active_or_backoff()

    def _on_node_add(self, node: Message) -> None:
        info = self.snapshot.add_node(node)
        self.queue.move_all_to_active_or_backoff(
            lambda p: self.framework.run_filters(p, info).is_success)

    def _on_node_update(self, old: Message, new: Message) -> None:
        info = self.snapshot.update_node(new)
        if node_scheduling_changed(old, new):
            self.queue.move_all_to_active_or_backoff(
                lambda p: self.framework.run_filters(p, info).is_success)

    def _on_node_delete(self, node: Message) -> None:
        self.snapshot.remove_node(node.metadata.name)


def _pod_scheduled_condition(pod: Message) -> core_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == POD_SCHEDULED:
            return cond
    return None
