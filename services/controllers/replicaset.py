"""ReplicaSet: keep `spec.replicas` pods of a template running, as
kube-controller-manager's replicaset controller.

One reconcile per ReplicaSet key:

1. The RS's pods come from the shared pod cache: active pods (not finished,
   not being deleted) whose controlling owner reference is this RS. Orphans
   the selector matches are adopted (an owner reference is added); owned
   pods the selector no longer matches are released.
2. Too few pods: create the missing ones from the template (generateName
   `<rs>-`, labels and annotations of the template, controller owner
   reference) in slow-start batches of 1, 2, 4, 8, ... so a broken template
   fails once, not five hundred times; at most 500 per reconcile.
   Too many: delete the surplus, unscheduled, then pending, then not ready,
   then most recently ready / newest first (Kubernetes' ActivePods ranking).
3. "Expectations" (Kubernetes' ControllerExpectations) remember the creates
   and deletes a reconcile made until the informer has seen them, so a
   reconcile running on a cache that lags its own writes does nothing twice.
4. Status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
   observedGeneration, a ReplicaFailure condition while creates or deletes
   fail) is written through UpdateStatus only when it changed. A pod that
   is ready but not yet for minReadySeconds brings the key back when it will be.

Events on the RS: SuccessfulCreate, SuccessfulDelete, FailedCreate, FailedDelete.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.client import events
from kubeling.client.errors import (ApiError, ConflictError, ForbiddenError, NotFoundError)
from kubeling.labels import selector_from_set
from kubeling.objects import copy, key_of

from .controller import Controller
from .manager import register
from .pod_template import (BY_CONTROLLER_UID, BY_NAMESPACE, ORPHANS_BY_NAMESPACE, controller_ref,
                           ensure_indexes, is_pod_active, is_pod_available, is_pod_ready, matches,
                           new_controller_ref, available_in, ready_since, selector_of,
                           timestamp_seconds)

log = logging.getLogger(__name__)

# Kubernetes' BurstReplicas: the most pods one reconcile creates or deletes.
BURST_REPLICAS = 500
# Kubernetes' SlowStartInitialBatchSize.
SLOW_START_INITIAL_BATCH = 1
# Expectations older than this are assumed lost (a watch event never came).
EXPECTATIONS_TTL = 300.0
# How soon to look again after an optimistic-concurrency conflict.
CONFLICT_RETRY = 0.05
# Kubernetes' annotation through which users rank pods for scale-down.
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Generated names are the prefix plus 5 characters, at most 63 in all.
MAX_GENERATE_NAME_PREFIX = 58

REPLICA_FAILURE = "ReplicaFailure"


def replicas_of(rs: apps_pb2.ReplicaSet) -> int:
    """spec.replicas; an unset value means 1, as the API server defaults it."""
    return rs.spec.replicas if rs.spec.HasField("replicas") else 1


# ------------------------------------------------------------ expectations


@dataclass
class _Expectation:
    adds: int = 0
    deletes: int = 0
    delete_keys: set[str] = field(default_factory=set)
    since: float = 0.0


class Expectations:
    """Creates and deletes a controller is waiting to see through its
    informer, per controller key (Kubernetes' UIDTrackingControllerExpectations).

    A reconcile acts only when `satisfied(key)`: nothing outstanding, or the
    record is older than `ttl` (an event was lost; act again rather than
    wait forever). Deletions are tracked by pod key, so the update that sets
    a deletionTimestamp and the final delete count once.
    """

    def __init__(self, ttl: float = EXPECTATIONS_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._items: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        e = self._items.get(key)
        if e is None:
            return True
        if e.adds <= 0 and e.deletes <= 0:
            return True
        if self.clock() - e.since > self.ttl:
            log.info("expectations of %s expired (%d creates, %d deletes unseen); syncing anyway",
                     key, e.adds, e.deletes)
            return True
        return False

    def expect_creations(self, key: str, n: int) -> None:
        self._items[key] = _Expectation(adds=n, since=self.clock())

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        keys = set(pod_keys)
        self._items[key] = _Expectation(deletes=len(keys), delete_keys=keys, since=self.clock())

    def creation_observed(self, key: str) -> None:
        e = self._items.get(key)
        if e is not None:
            e.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        e = self._items.get(key)
        if e is not None and pod_key in e.delete_keys:
            e.delete_keys.discard(pod_key)
            e.deletes -= 1

    def delete(self, key: str) -> None:
        self._items.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        """(creates, deletes) still expected; for tests and logs."""
        e = self._items.get(key)
        return (max(e.adds, 0), max(e.deletes, 0)) if e else (0, 0)


# ------------------------------------------------------------ pure parts


def slow_start_batches(count: int, initial: int = SLOW_START_INITIAL_BATCH) -> list[int]:
    """Batch sizes for `count` operations: initial, doubling, the last one
    trimmed (Kubernetes' slowStartBatch): 11 -> [1, 2, 4, 4]."""
    sizes, remaining, size = [], count, min(count, initial)
    while size > 0:
        sizes.append(size)
        remaining -= size
        size = min(2 * size, remaining)
    return sizes


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[None]],
                           initial: int = SLOW_START_INITIAL_BATCH) -> tuple[int, Exception | None]:
    """Run `fn` `count` times in growing parallel batches; stop after the
    first batch with a failure. Returns (successes, first error or None)."""
    successes = 0
    for size in slow_start_batches(count, initial):
        results = await asyncio.gather(*(fn() for _ in range(size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for r in errors:
            if isinstance(r, asyncio.CancelledError):
                raise r
        successes += size - len(errors)
        if errors:
            return successes, errors[0]
    return successes, None


_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def _deletion_cost(pod: core_pb2.Pod) -> int:
    try:
        return int(pod.metadata.annotations.get(POD_DELETION_COST, "0"))
    except ValueError:
        return 0


def _max_restarts(pod: core_pb2.Pod) -> int:
    return max((c.restart_count for c in pod.status.container_statuses), default=0)


def _after_or_zero(t1: float | None, t2: float | None) -> bool:
    """Kubernetes' afterOrZero: an unknown time sorts first, then the later one."""
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def _less(a: tuple[core_pb2.Pod, int], b: tuple[core_pb2.Pod, int]) -> bool:
    """Whether pod a should be deleted before pod b (Kubernetes' ActivePodsWithRanks.Less)."""
    pa, rank_a = a
    pb, rank_b = b
    na, nb = pa.spec.node_name, pb.spec.node_name
    # 1. Not yet scheduled before scheduled.
    if na != nb and (not na or not nb):
        return not na
    # 2. Pending before Unknown before Running.
    oa, ob = _PHASE_ORDER.get(pa.status.phase, 0), _PHASE_ORDER.get(pb.status.phase, 0)
    if oa != ob:
        return oa < ob
    # 3. Not ready before ready.
    ra, rb = is_pod_ready(pa), is_pod_ready(pb)
    if ra != rb:
        return not ra
    # 4. Lower pod-deletion-cost first.
    ca, cb = _deletion_cost(pa), _deletion_cost(pb)
    if ca != cb:
        return ca < cb
    # 5. Doubled up (more pods of the same owner on its node) first.
    if rank_a != rank_b:
        return rank_a > rank_b
    # 6. Ready for less time first.
    if ra and rb:
        ta, tb = ready_since(pa), ready_since(pb)
        if ta != tb:
            return _after_or_zero(ta, tb)
    # 7. More container restarts first.
    ma, mb = _max_restarts(pa), _max_restarts(pb)
    if ma != mb:
        return ma > mb
    # 8. Newer first.
    ta, tb = (timestamp_seconds(pa.metadata.creation_timestamp),
              timestamp_seconds(pb.metadata.creation_timestamp))
    if ta != tb:
        return _after_or_zero(ta, tb)
    return False


def _compare(a, b) -> int:
    return -1 if _less(a, b) else (1 if _less(b, a) else 0)


def pods_to_delete(pods: list[core_pb2.Pod], n: int,
                   related: Iterable[core_pb2.Pod] = ()) -> list[core_pb2.Pod]:
    """The `n` of `pods` to delete first, in order (Kubernetes'
    getPodsToDelete). `related` are the active pods of every ReplicaSet of
    the same owner: a pod sharing its node with more of them goes first."""
    if n >= len(pods):
        return list(pods)
    on_node: dict[str, int] = {}
    for p in related:
        if p.spec.node_name and is_pod_active(p):
            on_node[p.spec.node_name] = on_node.get(p.spec.node_name, 0) + 1
    ranked = [(p, on_node.get(p.spec.node_name, 0) if p.spec.node_name else 0) for p in pods]
    ranked.sort(key=functools.cmp_to_key(_compare))
    return [p for p, _ in ranked[:n]]


def pod_from_template(rs: apps_pb2.ReplicaSet) -> core_pb2.Pod:
    """A new pod for `rs` (Kubernetes' GetPodFromTemplate): the template's
    labels, annotations, finalizers and spec, generateName `<rs>-`, and the
    RS as controller."""
    template = rs.spec.template
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    meta = pod.metadata
    meta.namespace = rs.metadata.namespace
    meta.generate_name = f"{rs.metadata.name}-"[:MAX_GENERATE_NAME_PREFIX]
    meta.labels.update(template.metadata.labels)
    meta.annotations.update(template.metadata.annotations)
    meta.finalizers.extend(template.metadata.finalizers)
    meta.owner_references.append(new_controller_ref(rs, "apps/v1", "ReplicaSet"))
    pod.spec.CopyFrom(template.spec)
    return pod


def calculate_status(rs: apps_pb2.ReplicaSet, pods: list[core_pb2.Pod], now: float,
                     manage_error: Exception | None = None,
                     failure_reason: str = "FailedCreate") -> apps_pb2.ReplicaSetStatus:
    """The RS's status for its active, owned `pods` (Kubernetes' calculateStatus)."""
    status = apps_pb2.ReplicaSetStatus()
    status.CopyFrom(rs.status)
    template_labels = selector_from_set(dict(rs.spec.template.metadata.labels))
    fully_labeled = ready = available = 0
    for pod in pods:
        if template_labels.matches(pod.metadata.labels):
            fully_labeled += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, rs.spec.min_ready_seconds, now):
                available += 1
    failure = next((c for c in status.conditions if c.type == REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        cond = status.conditions.add(type=REPLICA_FAILURE, status="True", reason=failure_reason,
                                     message=str(manage_error))
        cond.last_transition_time.seconds = int(now)
    elif manage_error is None and failure is not None:
        kept = [c for c in status.conditions if c.type != REPLICA_FAILURE]
        del status.conditions[:]
        status.conditions.extend(kept)
    status.replicas = len(pods)
    status.fully_labeled_replicas = fully_labeled
    status.ready_replicas = ready
    status.available_replicas = available
    status.observed_generation = rs.metadata.generation
    return status


def next_available_in(rs: apps_pb2.ReplicaSet, pods: list[core_pb2.Pod], now: float) -> float | None:
    """Seconds until the first ready-but-not-yet-available pod becomes
    available, or None when there is none."""
    waits = [w for p in pods if (w := available_in(p, rs.spec.min_ready_seconds, now)) is not None]
    return min(waits) if waits else None


# ------------------------------------------------------------ the controller


@register("replicaset")
class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 5

    def setup(self) -> None:
        self.clock: Callable[[], float] = time.time
        self.expectations = Expectations()
        self.replicasets = self.informers.informer("replicasets")
        self.pods = self.informers.informer("pods")
        ensure_indexes(self.replicasets.store, BY_NAMESPACE)
        ensure_indexes(self.pods.store, BY_CONTROLLER_UID, ORPHANS_BY_NAMESPACE)
        self.watch(self.replicasets)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                              on_delete=self._pod_deleted)
        self._event_slots = asyncio.Semaphore(16)
        self._background: set[asyncio.Task] = set()

    # ---------------------------------------------------------- pod events

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        """The key of the ReplicaSet controlling `pod`, if it is one we know."""
        ref = controller_ref(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return None
        key = f"{pod.metadata.namespace}/{ref.name}"
        rs = self.replicasets.store.get(key)
        if rs is None or rs.metadata.uid != ref.uid:
            return None
        return key

    def _matching_replica_sets(self, pod: core_pb2.Pod) -> list[str]:
        """Keys of the ReplicaSets whose selector matches an orphan pod."""
        return [key_of(rs) for rs in self.replicasets.store.by_index(BY_NAMESPACE, pod.metadata.namespace)
                if matches(selector_of(rs.spec.selector), pod)]

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if pod.metadata.HasField("deletion_timestamp"):
            # Seen for the first time already terminating (after a restart).
            self._pod_deleted(pod)
            return
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)
        elif controller_ref(pod) is None:
            for k in self._matching_replica_sets(pod):
                self.queue.add(k)

    def _pod_updated(self, old: core_pb2.Pod, cur: core_pb2.Pod) -> None:
        if old.metadata.resource_version == cur.metadata.resource_version:
            return  # a resync: nothing changed
        labels_changed = old.metadata.labels != cur.metadata.labels
        if cur.metadata.HasField("deletion_timestamp"):
            self._pod_deleted(cur)
            if labels_changed:
                self._pod_deleted(old)
            return
        cur_ref, old_ref = controller_ref(cur), controller_ref(old)
        if cur_ref != old_ref and old_ref is not None:
            old_key = self._owner_key(old)
            if old_key:
                self.queue.add(old_key)
        if cur_ref is not None:
            key = self._owner_key(cur)
            if key:
                self.queue.add(key)
                rs = self.replicasets.store.get(key)
                if rs is not None and rs.spec.min_ready_seconds > 0 and \
                        not is_pod_ready(old) and is_pod_ready(cur):
                    self.queue.add_after(key, rs.spec.min_ready_seconds)
            return
        if labels_changed or cur_ref != old_ref:
            for k in self._matching_replica_sets(cur):
                self.queue.add(k)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        self.expectations.deletion_observed(key, key_of(pod))
        self.queue.add(key)

    # ---------------------------------------------------------- reconcile

    async def reconcile(self, key: str) -> float | None:
        cached = self.replicasets.store.get(key)
        if cached is None:
            self.expectations.delete(key)
            return None
        try:
            return await self._sync(key, cached)
        except ConflictError as e:
            log.debug("replicaset %s: %s; retrying", key, e)
            return CONFLICT_RETRY

    def owned_pods(self, rs: apps_pb2.ReplicaSet) -> list[core_pb2.Pod]:
        """Active pods of the namespace that name `rs` as controller, plus active orphans."""
        owned = self.pods.store.by_index(BY_CONTROLLER_UID, rs.metadata.uid)
        orphans = self.pods.store.by_index(ORPHANS_BY_NAMESPACE, rs.metadata.namespace)
        return [p for p in (*owned, *orphans)
                if is_pod_active(p) and p.metadata.namespace == rs.metadata.namespace]

    async def _sync(self, key: str, rs: apps_pb2.ReplicaSet) -> float | None:
        needs_sync = self.expectations.satisfied(key)
        selector = selector_of(rs.spec.selector)
        pods = await self._claim_pods(rs, selector, self.owned_pods(rs))
        manage_error: Exception | None = None
        failure_reason = "FailedCreate"
        if needs_sync and not rs.metadata.HasField("deletion_timestamp") and selector is not None:
            diff = len(pods) - replicas_of(rs)
            failure_reason = "FailedCreate" if diff < 0 else "FailedDelete"
            try:
                await self._manage_replicas(key, rs, pods, diff)
            except ApiError as e:
                manage_error = e
        now = self.clock()
        status = calculate_status(rs, pods, now, manage_error, failure_reason)
        if status != rs.status:
            updated = copy(rs)
            updated.status.CopyFrom(status)
            # The status says which generation it reflects, so it may land on a
            # newer spec (the Deployment controller resizes RSs all the time):
            # no resourceVersion precondition, as Kubernetes' re-get-and-retry
            # amounts to. The uid still guards against a recreated namesake.
            updated.metadata.resource_version = ""
            rs = await self.client.update_status(updated)
        if manage_error is not None:
            raise manage_error  # retried with backoff; the condition says why meanwhile
        wait = next_available_in(rs, pods, now)
        return None if wait is None else wait + 0.05

    async def _claim_pods(self, rs: apps_pb2.ReplicaSet, selector, pods: list[core_pb2.Pod]
                          ) -> list[core_pb2.Pod]:
        """Kubernetes' ClaimPods: keep owned pods that match, release owned
        pods that do not, adopt matching orphans. Returns the RS's pods."""
        claimed: list[core_pb2.Pod] = []
        deleting = rs.metadata.HasField("deletion_timestamp")
        for pod in pods:
            ref = controller_ref(pod)
            if ref is not None:
                if ref.uid != rs.metadata.uid:
                    continue
                if matches(selector, pod):
                    claimed.append(pod)
                elif not deleting:
                    await self._release(rs, pod)
                continue
            if deleting or not matches(selector, pod):
                continue
            adopted = await self._adopt(rs, pod)
            if adopted is not None:
                claimed.append(adopted)
        return claimed

    async def _adopt(self, rs: apps_pb2.ReplicaSet, pod: core_pb2.Pod) -> core_pb2.Pod | None:
        new = copy(pod)
        new.metadata.owner_references.append(new_controller_ref(rs, "apps/v1", "ReplicaSet"))
        try:
            return await self.client.update(new)
        except (NotFoundError, ConflictError) as e:
            # Gone or changed meanwhile: the next event brings it back if still an orphan.
            log.debug("replicaset %s: not adopting pod %s: %s", key_of(rs), pod.metadata.name, e)
            return None

    async def _release(self, rs: apps_pb2.ReplicaSet, pod: core_pb2.Pod) -> None:
        new = copy(pod)
        kept = [r for r in new.metadata.owner_references if r.uid != rs.metadata.uid]
        del new.metadata.owner_references[:]
        new.metadata.owner_references.extend(kept)
        try:
            await self.client.update(new)
        except (NotFoundError, ConflictError) as e:
            log.debug("replicaset %s: not releasing pod %s: %s", key_of(rs), pod.metadata.name, e)

    async def _manage_replicas(self, key: str, rs: apps_pb2.ReplicaSet,
                               pods: list[core_pb2.Pod], diff: int) -> None:
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            # Expect before creating: the informer may see a pod before create() returns.
            self.expectations.expect_creations(key, count)
            template_pod = pod_from_template(rs)

            async def create_one() -> None:
                try:
                    created = await self.client.create(copy(template_pod))
                except ForbiddenError as e:
                    if "terminat" in str(e).lower():
                        return  # the namespace is going away; nothing to do
                    self._record(rs, events.WARNING, events.FAILED_CREATE, f"Error creating: {e}")
                    raise
                except ApiError as e:
                    self._record(rs, events.WARNING, events.FAILED_CREATE, f"Error creating: {e}")
                    raise
                self._record(rs, events.NORMAL, events.SUCCESSFUL_CREATE,
                             f"Created pod: {created.metadata.name}")

            successes, error = await slow_start_batch(count, create_one)
            # Pods never attempted, or that failed, will not be seen: stop expecting them.
            for _ in range(count - successes):
                self.expectations.creation_observed(key)
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, BURST_REPLICAS)
            victims = pods_to_delete(pods, count, self._related_pods(rs))
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])

            async def delete_one(pod: core_pb2.Pod) -> None:
                try:
                    await self.client.delete("pods", pod.metadata.name, pod.metadata.namespace,
                                             uid=pod.metadata.uid)
                except (NotFoundError, ConflictError):
                    self.expectations.deletion_observed(key, key_of(pod))  # already gone
                    return
                except ApiError as e:
                    self.expectations.deletion_observed(key, key_of(pod))
                    self._record(rs, events.WARNING, events.FAILED_DELETE, f"Error deleting: {e}")
                    raise
                self._record(rs, events.NORMAL, events.SUCCESSFUL_DELETE,
                             f"Deleted pod: {pod.metadata.name}")

            results = await asyncio.gather(*(delete_one(p) for p in victims), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    def _related_pods(self, rs: apps_pb2.ReplicaSet) -> list[core_pb2.Pod]:
        """Active pods of every ReplicaSet with the same controller as `rs`
        (its Deployment), for ranking pods doubled up on a node."""
        owner = controller_ref(rs)
        if owner is None:
            return self.pods.store.by_index(BY_CONTROLLER_UID, rs.metadata.uid)
        related: list[core_pb2.Pod] = []
        for sibling in self.replicasets.store.by_index(BY_NAMESPACE, rs.metadata.namespace):
            ref = controller_ref(sibling)
            if ref is not None and ref.uid == owner.uid:
                related.extend(self.pods.store.by_index(BY_CONTROLLER_UID, sibling.metadata.uid))
        return related

    def _record(self, rs: apps_pb2.ReplicaSet, type_: str, reason: str, message: str) -> None:
        """Record an Event without holding up the reconcile (one per pod adds up)."""
        async def record() -> None:
            async with self._event_slots:
                await self.recorder.event(rs, type_, reason, message)
        task = asyncio.create_task(record())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


__all__ = ["ReplicaSetController", "Expectations", "slow_start_batches", "pods_to_delete",
           "pod_from_template", "calculate_status", "next_available_in"]
