"""One etcd watch per resource prefix, fanned out to any number of watchers.

How it works
------------
``start()`` reads etcd's current revision R and opens a single
``storage.watch(prefix, R + 1)``. A pump task turns each etcd event into a
``CacheEvent`` (decoding the value exactly once, whatever the number of
watchers) and appends it to a ring buffer of ``capacity`` events. Events are
numbered by a sequence number that only grows, so slot ``seq % capacity``
holds event ``seq`` while it is in the ring.

The ring covers every event with a revision above ``oldest_revision`` (the
revision of the last event pushed out, or R). A ``Watcher`` is a cursor
into the ring, not a queue: it walks the shared events itself, skipping keys
outside its ``key_prefix``, and parks on its own ``asyncio.Event`` when it has
caught up; the pump wakes the parked watchers after each event. A watcher
therefore costs no copy and no decode per event, and memory stays bounded by
the ring whatever the watchers do.

Where a watcher starts:

* ``start_revision`` None or 0: after ``current_revision`` ("from now").
* ``start_revision >= oldest_revision``: the events in the ring with a
  higher revision, then live events. Because ``watch()`` positions the
  cursor synchronously, nothing can slip in between (no gap, no duplicate).
* ``start_revision < oldest_revision``: the watcher catches up from etcd
  itself with a temporary ``storage.watch(key_prefix, start_revision + 1)``
  until the revision it has delivered is covered by the ring, then closes
  that watch and continues from the matching ring position, skipping what it
  already delivered. If etcd has compacted ``start_revision``, iterating
  raises ``CompactedError``; the client must relist.

A watcher whose consumer falls more than ``queue_size`` events behind the
newest event (or whose next event was pushed out of the ring) ends with
``WatcherTooSlowError``; the others never wait for it.

Recovery: if the etcd watch breaks (etcd restarted, member down) the pump
reopens it from ``current_revision + 1`` with backoff; watchers just see the
events later. If that revision has been compacted, the history in between is
lost: every current watcher ends with ``CompactedError`` (clients relist), the
ring is emptied and the cache restarts from etcd's current revision.

Bookmarks and selectors are the caller's business. ``Watcher.next(timeout)``
returns None when nothing came in time, and ``Watcher.progress_revision``
is a revision the watcher is complete up to (the cache's current revision
once it has caught up), which is what a bookmark carries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import weakref
from typing import Any, AsyncIterator, Callable, Literal, Optional

from .storage import (
    CompactedError,
    Storage,
    StorageError,
    StorageUnavailableError,
    WatchEvent,
    WatchStream,
)

__all__ = ["CacheEvent", "WatchCache", "Watcher", "WatcherTooSlowError"]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 20_000
_RETRY_DELAY = 0.1
_MAX_RETRY_DELAY = 2.0
# While the cache re-establishes itself after a compaction, nothing is
# covered by the ring: every watcher with a revision goes to etcd.
_NOTHING_COVERED = sys.maxsize


class WatcherTooSlowError(Exception):
    """The watcher's consumer fell too far behind; watch again from its last revision."""


@dataclasses.dataclass(frozen=True, slots=True)
class CacheEvent:
    """A decoded change, shared by every watcher: treat ``obj`` and ``prev_obj`` as read-only.

    ADDED: ``obj`` is the new object, ``prev_obj`` None.
    MODIFIED: ``obj`` the new state, ``prev_obj`` the previous one (None if
    etcd had already compacted it).
    DELETED: ``obj`` is the last state carrying the deletion revision,
    ``prev_obj`` the same last state with its own revision.
    """

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    key: bytes
    obj: Any
    prev_obj: Any
    revision: int


class WatchCache:
    """Fan one etcd watch on ``prefix`` out to many ``Watcher``s.

    ``decode(value, revision)`` turns stored bytes into the object handed to
    watchers, ``revision`` being the resource version to give it. It is called
    once per event (twice for updates and deletions: new and previous state).
    An event whose value cannot be decoded is logged and skipped.
    """

    def __init__(
        self,
        storage: Storage,
        prefix: bytes,
        decode: Callable[[bytes, int], Any],
        capacity: int = DEFAULT_CAPACITY,
        *,
        retry_delay: float = _RETRY_DELAY,
        max_retry_delay: float = _MAX_RETRY_DELAY,
    ):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.storage = storage
        self.prefix = prefix
        self.capacity = capacity
        self._decode = decode
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._ring: list[Optional[CacheEvent]] = [None] * capacity
        self._first_seq = 0  # oldest event still in the ring
        self._next_seq = 0  # sequence number the next event gets
        self._floor = 0  # every event with a higher revision is in the ring
        self._current = 0
        self._watchers: "weakref.WeakSet[Watcher]" = weakref.WeakSet()
        self._parked: set[Watcher] = set()
        self._task: Optional[asyncio.Task] = None
        self._stream: Optional[WatchStream] = None
        self._started = False

    def __repr__(self) -> str:
        return (
            f"WatchCache({self.prefix!r}, revisions ({self._floor}, {self._current}],"
            f" {self._next_seq - self._first_seq}/{self.capacity} events,"
            f" {len(self._watchers)} watchers)"
        )

    async def __aenter__(self) -> "WatchCache":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # -- state --------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        """Revision of the last event seen (etcd's revision at ``start()`` before any)."""
        return self._current

    @property
    def oldest_revision(self) -> int:
        """Watches from this revision or later are served from memory."""
        return self._floor

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Read etcd's current revision and start following ``prefix`` from there.

        Raises ``StorageUnavailableError`` if etcd cannot be reached. After it
        returns, no event after the revision read can be missed.
        """
        if self._started:
            raise RuntimeError("watch cache already started")
        revision = await self.storage.current_revision()
        self._first_seq = self._next_seq
        self._floor = self._current = revision
        self._started = True
        self._task = asyncio.create_task(self._pump(), name=f"watch-cache {self.prefix!r}")

    async def stop(self) -> None:
        """Stop following etcd; every watcher ends (StopAsyncIteration). Idempotent."""
        self._started = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for watcher in list(self._watchers):
            watcher.close()

    # -- watchers -----------------------------------------------------------

    def watch(
        self,
        start_revision: Optional[int] = None,
        key_prefix: Optional[bytes] = None,
        queue_size: Optional[int] = None,
    ) -> "Watcher":
        """Return a ``Watcher`` of the events after ``start_revision``.

        ``start_revision`` None or 0 means after ``current_revision``.
        ``key_prefix`` (default: the cache's prefix) narrows the events to
        keys under it, e.g. one namespace. ``queue_size`` (default and
        maximum: ``capacity``) is how many events the watcher may lag behind
        the newest one before it ends with ``WatcherTooSlowError``; a replay
        counts, so keep it above the replay a client may ask for.
        """
        if not self._started:
            raise RuntimeError("watch cache is not running")
        if key_prefix is None:
            key_prefix = self.prefix
        elif not key_prefix.startswith(self.prefix):
            raise ValueError(f"key_prefix {key_prefix!r} is outside {self.prefix!r}")
        if queue_size is None or queue_size > self.capacity:
            queue_size = self.capacity
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if start_revision is not None and start_revision < 0:
            raise ValueError("start_revision must not be negative")

        if not start_revision:
            watcher = Watcher(self, key_prefix, queue_size, self._current)
            watcher._cursor = self._next_seq
        elif start_revision >= self._floor:
            watcher = Watcher(self, key_prefix, queue_size, start_revision)
            watcher._cursor = self._seek(start_revision + 1)
        else:
            watcher = Watcher(self, key_prefix, queue_size, start_revision)
            watcher._stream = self.storage.watch(key_prefix, start_revision + 1)
        self._watchers.add(watcher)
        return watcher

    def _seek(self, revision: int) -> int:
        """Sequence number of the first ring event with a revision >= ``revision``."""
        lo, hi = self._first_seq, self._next_seq
        ring, capacity = self._ring, self.capacity
        while lo < hi:
            mid = (lo + hi) // 2
            if ring[mid % capacity].revision < revision:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- the pump -------------------------------------------------------------

    async def _pump(self) -> None:
        delay = self._retry_delay
        while True:
            if self._floor == _NOTHING_COVERED:
                try:
                    revision = await self.storage.current_revision()
                except StorageError as error:
                    log.warning("watch cache %r: cannot read the current revision: %s",
                                self.prefix, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay)
                    continue
                self._floor = self._current = revision
                log.info("watch cache %r restarted at revision %d", self.prefix, revision)

            stream = self._stream = self.storage.watch(self.prefix, self._current + 1)
            try:
                async for event in stream:
                    self._append(event)
                    delay = self._retry_delay
                log.info("watch cache %r: storage closed, stopping", self.prefix)
                for watcher in list(self._watchers):
                    watcher.close()
                return
            except CompactedError as error:
                log.warning(
                    "watch cache %r lost history after revision %d (%s): watchers must relist",
                    self.prefix, self._current, error,
                )
                self._reset(error)
                continue
            except StorageUnavailableError as error:
                log.warning("watch cache %r: etcd watch broke, resuming from %d: %s",
                            self.prefix, self._current + 1, error)
            except StorageError as error:
                log.error("watch cache %r: etcd watch failed, resuming from %d: %s",
                          self.prefix, self._current + 1, error)
            except Exception:  # a bug must not silently freeze every watcher
                log.exception("watch cache %r: pump failed, resuming from %d",
                              self.prefix, self._current + 1)
            finally:
                stream.close()
                self._stream = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_delay)

    def _append(self, event: WatchEvent) -> None:
        cache_event = self._convert(event)
        self._current = max(self._current, event.mod_revision)
        if cache_event is None:
            return
        if self._next_seq - self._first_seq == self.capacity:
            evicted = self._ring[self._first_seq % self.capacity]
            self._first_seq += 1
            self._floor = evicted.revision
        self._ring[self._next_seq % self.capacity] = cache_event
        self._next_seq += 1
        if self._parked:
            for watcher in self._parked:
                watcher._wakeup.set()
            self._parked.clear()

    def _reset(self, error: CompactedError) -> None:
        """History is gone: end every watcher with ``error`` and forget the ring."""
        for watcher in list(self._watchers):
            # One exception object per watcher: each is raised in its own task.
            watcher._terminate(
                CompactedError(error.compact_revision, requested_revision=watcher.last_revision + 1)
            )
        self._ring = [None] * self.capacity
        self._first_seq = self._next_seq
        self._floor = _NOTHING_COVERED

    def _convert(self, event: WatchEvent) -> Optional[CacheEvent]:
        decode = self._decode
        try:
            if event.type == "DELETE":
                return CacheEvent(
                    "DELETED",
                    event.key,
                    decode(event.prev_value, event.mod_revision),
                    decode(event.prev_value, event.prev_mod_revision),
                    event.mod_revision,
                )
            obj = decode(event.value, event.mod_revision)
            if event.create_revision == event.mod_revision:
                return CacheEvent("ADDED", event.key, obj, None, event.mod_revision)
            prev = None
            if event.prev_value is not None:
                prev = decode(event.prev_value, event.prev_mod_revision)
            return CacheEvent("MODIFIED", event.key, obj, prev, event.mod_revision)
        except Exception:
            log.exception(
                "watch cache %r: cannot decode %r at revision %d; event skipped",
                self.prefix, event.key, event.mod_revision,
            )
            return None


class Watcher:
    """An async iterator of ``CacheEvent`` in revision order, from ``WatchCache.watch``.

    Ends with StopAsyncIteration after ``close()`` or ``WatchCache.stop()``;
    raises ``CompactedError`` (relist), ``WatcherTooSlowError`` (watch again
    from ``last_revision``) or, while catching up from etcd,
    ``StorageUnavailableError`` (watch again from ``last_revision``). After
    an error it is closed.

    Cancelling a pending ``__anext__``/``next`` loses nothing and leaves the
    watcher usable; ``next(timeout)`` returns None when nothing came in time
    (handy for bookmarks). Iterate from one task at a time. ``close()`` is
    synchronous and idempotent; ``async with`` closes it too, and so does
    dropping the last reference.
    """

    def __init__(self, cache: WatchCache, key_prefix: bytes, queue_size: int, start_revision: int):
        self._cache = cache
        self.key_prefix = key_prefix
        self.queue_size = queue_size
        self.start_revision = start_revision
        #: Revision of the last event returned (``start_revision`` before any).
        self.last_revision = start_revision
        # Everything up to _after_revision has been delivered; if
        # _after_keys is a set, only those keys of _after_revision have
        # (one etcd revision can change several keys).
        self._after_revision = start_revision
        self._after_keys: Optional[set[bytes]] = None
        self._cursor = 0
        self._stream: Optional[WatchStream] = None
        self._read: Optional[asyncio.Task] = None
        self._wakeup = asyncio.Event()
        self._error: Optional[BaseException] = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("etcd" if self._stream is not None else "cache")
        return f"Watcher({self.key_prefix!r}, after={self._after_revision}, {state})"

    @property
    def progress_revision(self) -> int:
        """Every event up to this revision that concerns this watcher has been returned.

        At least ``last_revision``; when the watcher has caught up with the
        cache it is the cache's ``current_revision``, even if the events in
        between were for other keys. Use it for bookmarks and to resume.
        """
        cache = self._cache
        done = max(self.last_revision, self._after_revision)
        if self._stream is not None or self._closed or self._cursor < cache._first_seq:
            return done
        if self._cursor >= cache._next_seq:
            return max(done, cache._current)
        ring, capacity = cache._ring, cache.capacity
        passed = self._cursor - 1
        if passed < cache._first_seq:
            return done
        revision = ring[passed % capacity].revision
        if ring[self._cursor % capacity].revision == revision:
            revision -= 1  # the rest of that revision is still to come
        return max(done, revision)

    def __aiter__(self) -> AsyncIterator[CacheEvent]:
        return self

    async def __anext__(self) -> CacheEvent:
        return await self.next()

    async def __aenter__(self) -> "Watcher":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def __del__(self):
        if not self._closed and (self._stream is not None or self._read is not None):
            try:
                self.close()
            except Exception:
                pass

    def _terminate(self, error: BaseException) -> None:
        if not self._closed and self._error is None:
            self._error = error
            self._release()

    def _release(self) -> None:
        read, self._read = self._read, None
        if read is not None:
            read.cancel()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        self._cache._watchers.discard(self)
        self._cache._parked.discard(self)
        self._wakeup.set()

    async def next(self, timeout: Optional[float] = None) -> Optional[CacheEvent]:
        """The next event; None if ``timeout`` seconds pass first (the watcher stays usable).

        Without a timeout it waits as long as needed and never returns None.
        At the end raises StopAsyncIteration (or the error that ended it).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                if self._error is not None:
                    error, self._error = self._error, None
                    self._closed = True
                    raise error
                if self._closed:
                    raise StopAsyncIteration
                if self._stream is not None:
                    if self._hand_off():
                        continue
                    if self._read is None:
                        self._read = asyncio.ensure_future(_read_one(self._stream))
                    remaining = None if deadline is None else max(0.0, deadline - loop.time())
                    done, _ = await asyncio.wait({self._read}, timeout=remaining)
                    if not done:
                        return None
                    if self._closed or self._error is not None or self._read is None:
                        continue
                    read, self._read = self._read, None
                    event = self._accept_from_etcd(read.result())
                else:
                    event = self._next_from_ring()
                    if event is None:
                        self._wakeup.clear()
                        self._cache._parked.add(self)
                        remaining = None if deadline is None else deadline - loop.time()
                        try:
                            await asyncio.wait_for(self._wakeup.wait(), remaining)
                        except asyncio.TimeoutError:
                            return None
                        continue
                if event is not None:
                    self.last_revision = event.revision
                    return event
        except asyncio.CancelledError:
            raise  # the consumer was cancelled; nothing was lost
        except BaseException:
            self.close()
            raise

    def _next_from_ring(self) -> Optional[CacheEvent]:
        cache = self._cache
        lag = cache._next_seq - self._cursor
        if self._cursor < cache._first_seq or lag > self.queue_size:
            raise WatcherTooSlowError(
                f"watcher on {self.key_prefix!r} fell {lag} events behind (limit"
                f" {self.queue_size}) after revision {self.last_revision};"
                " watch again from there"
            )
        ring, capacity, prefix = cache._ring, cache.capacity, self.key_prefix
        while self._cursor < cache._next_seq:
            event = ring[self._cursor % capacity]
            self._cursor += 1
            if not event.key.startswith(prefix):
                continue
            if event.revision <= self._after_revision:
                if event.revision < self._after_revision:
                    continue
                if self._after_keys is None or event.key in self._after_keys:
                    continue
            return event
        return None

    def _accept_from_etcd(self, outcome) -> Optional[CacheEvent]:
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:  # the stream ended: closed by Storage.close()
            self._stream = None
            self._closed = True
            return None
        event: WatchEvent = outcome
        if event.mod_revision > self._after_revision:
            self._after_revision = event.mod_revision
            self._after_keys = {event.key}
        else:
            if self._after_keys is None:
                self._after_keys = set()
            self._after_keys.add(event.key)
        return self._cache._convert(event)

    def _hand_off(self) -> bool:
        """Leave the temporary etcd watch for the ring once the ring covers us.

        The ring holds every event above ``oldest_revision``; if we have
        delivered past it, everything we still need is in the ring (or will
        be). A read in flight whose result has not been taken is abandoned:
        whatever it would have returned is in the ring too.
        """
        cache = self._cache
        if not cache._started:
            return False
        if self._read is not None and self._read.done():
            return False  # take that result first
        covered = self._after_revision > cache._floor or (
            self._after_revision == cache._floor and self._after_keys is None
        )
        if not covered:
            return False
        first = self._after_revision if self._after_keys is not None else self._after_revision + 1
        self._cursor = cache._seek(first)
        read, self._read = self._read, None
        if read is not None:
            read.cancel()
        stream, self._stream = self._stream, None
        stream.close()
        return True


async def _read_one(stream: WatchStream):
    """One event from ``stream``; None at its end; an exception is returned, not raised."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return error
