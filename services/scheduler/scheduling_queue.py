"""The queue of pods waiting for a node, as kube-scheduler's PriorityQueue.

Three places a pod can wait:

- the active queue: ready to be scheduled, highest priority first, then in
  the order they arrived;
- the backoff queue: tried and failed recently; each pod waits 1 s after
  its first failed attempt, doubling per attempt up to 10 s, then moves to
  the active queue;
- the unschedulable set: no node fitted. Such a pod stays there until
  something changes that could make it fit (a Node added or changed, an
  assigned pod deleted: `move_all_to_active_or_backoff`), then moves to the
  active queue, or to the backoff queue if its backoff has not run out; or,
  as a safety net, after `max_unschedulable_seconds` (kube-scheduler: 5 min).

A pod popped for scheduling is "in flight" until it is bound, or put back
with `add_unschedulable` / `add_backoff`. If a move event happens while a pod
is in flight (`move_request_cycle` >= the cycle it was popped in), a failure
sends it to the backoff queue instead of the unschedulable set, so an event
that came during its scheduling attempt is not missed.

Every method but `pop` is synchronous and must be called from the event
loop's thread. Time comes from `clock` (monotonic seconds) so tests can
inject a fake one and call `flush_backoff_completed()` themselves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable

from google.protobuf.message import Message

from .node_info import PodInfo


class QueueClosed(Exception):
    """`pop` on a closed queue."""


class QueuedPodInfo:
    """A pod in the queue and its scheduling history."""

    __slots__ = ("info", "timestamp", "attempts", "initial_attempt_timestamp",
                 "unschedulable_plugins", "seq")

    def __init__(self, info: PodInfo, now: float):
        self.info = info
        self.timestamp = now                    # when it last entered a queue
        self.attempts = 0                       # scheduling attempts so far
        self.initial_attempt_timestamp: float | None = None
        self.unschedulable_plugins: set[str] = set()
        self.seq = -1  # its current heap entry; older entries are stale

    @property
    def key(self) -> str:
        return self.info.key

    @property
    def pod(self) -> Message:
        return self.info.pod

    def __repr__(self) -> str:
        return f"<QueuedPodInfo {self.key} attempts={self.attempts}>"


def pod_key(pod: Message) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _spec_changed(old: Message, new: Message) -> bool:
    """Whether anything but status / resourceVersion changed (kube-scheduler's
    isPodUpdated): a status write of our own must not retry the pod."""
    return (old.spec != new.spec or old.metadata.labels != new.metadata.labels
            or old.metadata.annotations != new.metadata.annotations
            or old.metadata.uid != new.metadata.uid)


class SchedulingQueue:
    """See the module doc. `on_node_added_check(pod_info) -> bool`, when
    given, decides whether a new node could fit an unschedulable pod (a quick
    pre-check, so adding a node does not retry pods it cannot help)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 max_unschedulable_seconds: float = 300.0):
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable_seconds = max_unschedulable_seconds
        self._seq = itertools.count()
        # key -> entry, with heaps of (sort key..., seq, entry); a heap entry
        # whose pod left the dict, or whose seq is not the pod's current
        # one, is stale and skipped.
        self._active: dict[str, QueuedPodInfo] = {}
        self._active_heap: list[tuple] = []
        self._backoff: dict[str, QueuedPodInfo] = {}
        self._backoff_heap: list[tuple] = []
        self._unschedulable: dict[str, QueuedPodInfo] = {}
        self.scheduling_cycle = 0
        self.move_request_cycle = -1
        self._last_leftover_flush = clock()
        self._wakeup = asyncio.Event()
        self._closed = False

    # -------------------------------------------------------------- inspection

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self._unschedulable)

    def __contains__(self, key: str) -> bool:
        return key in self._active or key in self._backoff or key in self._unschedulable

    @property
    def active_keys(self) -> list[str]:
        return list(self._active)

    @property
    def backoff_keys(self) -> list[str]:
        return list(self._backoff)

    @property
    def unschedulable_keys(self) -> list[str]:
        return list(self._unschedulable)

    def where(self, key: str) -> str | None:
        """"active", "backoff", "unschedulable", or None (in flight / unknown)."""
        if key in self._active:
            return "active"
        if key in self._backoff:
            return "backoff"
        if key in self._unschedulable:
            return "unschedulable"
        return None

    # ----------------------------------------------------------------- backoff

    def backoff_duration(self, q: QueuedPodInfo) -> float:
        """1 s after the first failure, doubling per attempt, capped at 10 s."""
        duration = self.initial_backoff
        for _ in range(1, q.attempts):
            duration *= 2
            if duration >= self.max_backoff:
                return self.max_backoff
        return duration

    def backoff_expiry(self, q: QueuedPodInfo) -> float:
        return q.timestamp + self.backoff_duration(q)

    def is_backing_off(self, q: QueuedPodInfo) -> bool:
        return q.attempts > 0 and self.backoff_expiry(q) > self.clock()

    # ---------------------------------------------------------- internal moves

    def _push_active(self, q: QueuedPodInfo) -> None:
        self._active[q.key] = q
        q.seq = next(self._seq)
        heapq.heappush(self._active_heap, (-q.info.priority, q.timestamp, q.seq, q))
        self._wakeup.set()

    def _push_backoff(self, q: QueuedPodInfo) -> None:
        self._backoff[q.key] = q
        q.seq = next(self._seq)
        heapq.heappush(self._backoff_heap, (self.backoff_expiry(q), q.seq, q))
        self._wakeup.set()  # pop() may need to wake earlier

    def _remove(self, key: str) -> QueuedPodInfo | None:
        return (self._active.pop(key, None) or self._backoff.pop(key, None)
                or self._unschedulable.pop(key, None))

    def _requeue(self, q: QueuedPodInfo) -> None:
        """Active if its backoff is over, else the backoff queue."""
        if self.is_backing_off(q):
            self._push_backoff(q)
        else:
            self._push_active(q)

    # ------------------------------------------------------ informer events

    def add(self, pod: Message | PodInfo) -> None:
        """A new pod to schedule. A pod already queued (seen again after a
        relist) keeps its place and history, with the newer object."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        for where in (self._active, self._backoff, self._unschedulable):
            q = where.get(info.key)
            if q is not None:
                q.info = info
                return
        self._push_active(QueuedPodInfo(info, self.clock()))

    def update(self, old: Message | None, new: Message) -> None:
        """A pending pod changed. In the active or backoff queue it is just
        refreshed; an unschedulable pod whose spec or labels changed is
        retried (after its backoff); one only its status changed stays put.
        A pod in no queue (not in flight) is added."""
        key = pod_key(new)
        q = self._active.get(key)
        if q is not None:
            priority = q.info.priority
            q.info = PodInfo(new)
            if q.info.priority != priority:
                self._push_active(q)  # re-sort; the old heap entry goes stale
            return
        q = self._backoff.get(key)
        if q is not None:
            q.info = PodInfo(new)
            return
        q = self._unschedulable.get(key)
        if q is not None:
            q.info = PodInfo(new)
            if old is None or _spec_changed(old, new):
                del self._unschedulable[key]
                self._requeue(q)
            return
        self.add(new)

    def delete(self, key: str) -> None:
        """The pod is gone, bound, or no longer ours."""
        self._remove(key)

    def move_all_to_active_or_backoff(self, could_fit: Callable[[PodInfo], bool] | None = None) -> int:
        """Something changed that may let unschedulable pods fit: retry them
        (those `could_fit` accepts, when given). Returns how many moved."""
        moved = 0
        for key, q in list(self._unschedulable.items()):
            if could_fit is not None and not could_fit(q.info):
                continue
            del self._unschedulable[key]
            self._requeue(q)
            moved += 1
        self.move_request_cycle = self.scheduling_cycle
        return moved

    # -------------------------------------------------------- after an attempt

    def add_unschedulable(self, q: QueuedPodInfo, pod_scheduling_cycle: int) -> None:
        """No node fitted `q`. Park it until something changes (or back it
        off, if something already changed during its attempt)."""
        if q.key in self:
            return
        q.timestamp = self.clock()
        if self.move_request_cycle >= pod_scheduling_cycle:
            self._push_backoff(q)
        else:
            self._unschedulable[q.key] = q

    def add_backoff(self, q: QueuedPodInfo) -> None:
        """Scheduling or binding `q` failed with an error: retry after its backoff."""
        if q.key in self:
            return
        q.timestamp = self.clock()
        self._push_backoff(q)

    # --------------------------------------------------------------- flushing

    def flush_backoff_completed(self) -> int:
        """Move pods whose backoff has run out to the active queue."""
        now = self.clock()
        heap = self._backoff_heap
        moved = 0
        while heap:
            expiry, seq, q = heap[0]
            if self._backoff.get(q.key) is not q or q.seq != seq:
                heapq.heappop(heap)  # stale entry
                continue
            if expiry > now:
                break
            heapq.heappop(heap)
            del self._backoff[q.key]
            self._push_active(q)
            moved += 1
        return moved

    def flush_unschedulable_left_over(self) -> int:
        """Retry pods unschedulable for longer than max_unschedulable_seconds."""
        now = self.clock()
        self._last_leftover_flush = now
        moved = 0
        for key, q in list(self._unschedulable.items()):
            if now - q.timestamp >= self.max_unschedulable_seconds:
                del self._unschedulable[key]
                self._requeue(q)
                moved += 1
        return moved

    def _next_backoff_expiry(self) -> float | None:
        heap = self._backoff_heap
        while heap:
            _, seq, q = heap[0]
            if self._backoff.get(q.key) is q and q.seq == seq:
                break
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -------------------------------------------------------------------- pop

    def pop_nowait(self) -> QueuedPodInfo | None:
        """The next active pod (starting a scheduling cycle), or None."""
        heap = self._active_heap
        while heap:
            entry = heapq.heappop(heap)
            q = entry[-1]
            if self._active.get(q.key) is q and q.seq == entry[2]:
                del self._active[q.key]
                self.scheduling_cycle += 1
                q.attempts += 1
                if q.initial_attempt_timestamp is None:
                    q.initial_attempt_timestamp = self.clock()
                return q
        return None

    async def pop(self) -> QueuedPodInfo:
        """Wait for the next pod to schedule. Raises QueueClosed after close()."""
        while True:
            if self._closed:
                raise QueueClosed()
            if self._backoff_heap:
                self.flush_backoff_completed()
            if self.clock() - self._last_leftover_flush >= 30.0:
                self.flush_unschedulable_left_over()
            q = self.pop_nowait()
            if q is not None:
                return q
            self._wakeup.clear()
            expiry = self._next_backoff_expiry()
            timeout = None if expiry is None else max(0.0, expiry - self.clock()) + 0.001
            timeout = 30.0 if timeout is None else min(timeout, 30.0)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
