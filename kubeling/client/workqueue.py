"""A work queue of string keys, as client-go's workqueue, for asyncio.

Event handlers `add` a key ("namespace/name"); workers `get` a key, reconcile
it, and call `done`. The queue guarantees:

- Deduplication: a key added several times before a worker takes it is handed
  out once.
- Exclusion: a key being processed is never handed to a second worker. A key
  re-added while it is processed is queued again when `done` is called, so the
  change that caused the re-add is always seen by a later reconcile.
- Fairness: keys are handed out in the order they were first added.

Retries go through `add_rate_limited`, whose delay is the maximum of a per-key
exponential backoff (5 ms doubling to 1000 s) and an overall token bucket
(10 per second, burst 100), like client-go's DefaultControllerRateLimiter.
`forget` ends a key's backoff once it reconciles cleanly.

All methods except `get` are synchronous and must be called from the event
loop's thread. `add_after` and `add_rate_limited` need a running loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable, Protocol

log = logging.getLogger(__name__)


class QueueShutDown(Exception):
    """Raised by `WorkQueue.get` once the queue is shut down."""


class RateLimiter(Protocol):
    """Decides how long a key waits before it is retried."""

    def when(self, key: str) -> float:
        """Seconds to wait before the next retry of `key`; records a failure."""

    def forget(self, key: str) -> None:
        """Stop tracking `key`: its next failure starts from the base delay."""

    def num_requeues(self, key: str) -> int:
        """How many failures of `key` are being tracked."""


class ItemExponentialFailureRateLimiter:
    """Per-key backoff: base * 2**failures, capped at max_delay."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        exp = self._failures.get(key, 0)
        self._failures[key] = exp + 1
        # Guard the exponent so huge failure counts do not overflow floats.
        if exp > 64:
            return self.max_delay
        return min(self.base_delay * (2 ** exp), self.max_delay)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """An overall token bucket: `qps` tokens a second, at most `burst` saved.

    Each `when` takes one token; when none are left it reserves a future one
    and returns how long until it exists (golang.org/x/time/rate's Reserve).
    """

    def __init__(self, qps: float = 10.0, burst: int = 100,
                 clock: Callable[[], float] = time.monotonic):
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: str) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: str) -> None:
        pass

    def num_requeues(self, key: str) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay any of several limiters asks for."""

    def __init__(self, *limiters: RateLimiter):
        self.limiters = limiters

    def when(self, key: str) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: str) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter() -> MaxOfRateLimiter:
    """client-go's default: 5 ms..1000 s per key, and 10 qps / burst 100 overall."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0),
                            BucketRateLimiter(qps=10.0, burst=100))


class WorkQueue:
    """A deduplicating, rate-limited queue of keys (see the module docstring)."""

    def __init__(self, rate_limiter: RateLimiter | None = None, name: str = ""):
        self.name = name
        self.rate_limiter = rate_limiter or default_controller_rate_limiter()
        self._queue: deque[str] = deque()   # keys ready to hand out, in order
        self._dirty: set[str] = set()       # keys that need processing
        self._processing: set[str] = set()  # keys handed out, not yet done
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._getters: deque[asyncio.Future] = deque()
        self._shutting_down = False

    def __len__(self) -> int:
        """Keys ready to be handed out (not those processing or waiting)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: str) -> None:
        """Queue `key` for processing. Idempotent; ignored after shutdown."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._wake_one()

    async def get(self) -> str:
        """Wait for the next key and mark it processing. Raises QueueShutDown."""
        while not self._queue and not self._shutting_down:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                # A cancelled getter must pass on a wake-up it consumed.
                if getter.done() and not getter.cancelled():
                    self._wake_one()
                else:
                    try:
                        self._getters.remove(getter)
                    except ValueError:
                        pass
                raise
        if self._shutting_down:
            raise QueueShutDown(self.name)
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        """Mark `key` processed; if it was re-added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` once `delay` seconds have passed.

        A key already waiting keeps the earlier of its two ready times.
        """
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready = loop.time() + delay
        waiting = self._waiting.get(key)
        if waiting is not None:
            if waiting[0] <= ready:
                return
            waiting[1].cancel()
        handle = loop.call_at(ready, self._ready, key)
        self._waiting[key] = (ready, handle)

    def _ready(self, key: str) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> None:
        """Re-add `key` after the rate limiter's delay (records a failure)."""
        if self._shutting_down:
            return
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        """Reset `key`'s backoff. Does not remove it from the queue."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        """Failures of `key` since it was last forgotten."""
        return self.rate_limiter.num_requeues(key)

    def shutdown(self) -> None:
        """Stop the queue: adds are ignored, pending and delayed keys are
        dropped, and every current and future `get` raises QueueShutDown.
        Keys being processed may still be `done`. Idempotent."""
        self._shutting_down = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._queue.clear()
        self._dirty.clear()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return


Reconcile = Callable[[str], Awaitable["float | None"]]


async def run_workers(queue: WorkQueue, reconcile: Reconcile, n: int = 1) -> None:
    """Run `n` workers that feed keys from `queue` to `reconcile` until the
    queue shuts down (then return) or this coroutine is cancelled (then the
    workers are cancelled too).

    Per key: on success the key's backoff is forgotten; if reconcile returns a
    number, the key is re-added after that many seconds (a periodic recheck,
    not a failure); on an exception it is logged and retried with backoff.
    """
    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                requeue_after = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%sreconcile %r failed (retry %d)",
                              f"{queue.name}: " if queue.name else "", key,
                              queue.num_requeues(key) + 1)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if requeue_after is not None:
                    queue.add_after(key, requeue_after)
            finally:
                queue.done(key)

    workers = [asyncio.create_task(worker(), name=f"worker-{queue.name}-{i}")
               for i in range(n)]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
