"""The watch cache (services/apiserver/watch_cache.py) against a real etcd.

One etcd watch serves any number of watchers; watchers resume from a
revision in memory or, when it is older, from etcd, with no gap and no
duplicate; compaction, slow consumers and etcd restarts end or recover
watchers as documented.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import pytest

from services.apiserver.storage import CompactedError, Storage
from services.apiserver.watch_cache import CacheEvent, WatchCache, Watcher, WatcherTooSlowError


class Obj(NamedTuple):
    value: str
    revision: int


class Decoder:
    """Decodes ``b"text"`` into ``Obj("text", revision)`` and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, value: bytes, revision: int) -> Obj:
        self.calls += 1
        return Obj(value.decode(), revision)


class Change(NamedTuple):
    type: str
    key: bytes
    value: str
    revision: int


async def write_changes(storage: Storage, prefix: bytes, count: int, tag: str = "") -> list[Change]:
    """``count`` changes under ``prefix``: creates, then updates and deletes mixed in."""
    changes: list[Change] = []
    live: dict[bytes, int] = {}
    for i in range(count):
        if i % 5 == 3 and live:
            key = next(iter(live))
            _, revision = await storage.delete(key, expected_mod_revision=live.pop(key))
            changes.append(Change("DELETED", key, "", revision))
        elif i % 3 == 2 and live:
            key = next(reversed(live))
            value = f"{tag}{i}"
            live[key] = await storage.update(key, value.encode(), live[key])
            changes.append(Change("MODIFIED", key, value, live[key]))
        else:
            key = prefix + f"{tag}k{i:04d}".encode()
            value = f"{tag}{i}"
            live[key] = await storage.create(key, value.encode())
            changes.append(Change("ADDED", key, value, live[key]))
    return changes


def summary(events: list[CacheEvent]) -> list[Change]:
    """What a watcher saw, comparable with ``write_changes``' result."""
    return [
        Change(e.type, e.key, "" if e.type == "DELETED" else e.obj.value, e.revision)
        for e in events
    ]


async def collect(watcher: Watcher, count: int, timeout: float = 10.0) -> list[CacheEvent]:
    async def take():
        return [await watcher.__anext__() for _ in range(count)]

    return await asyncio.wait_for(take(), timeout)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def decoder() -> Decoder:
    return Decoder()


@pytest.fixture
async def make_cache(storage, key_prefix, decoder):
    """Start a WatchCache on the test's prefix; every cache is stopped afterwards."""
    caches: list[WatchCache] = []

    async def make(capacity: int = 1000, store: Storage | None = None, **options) -> WatchCache:
        cache = WatchCache(store or storage, key_prefix, decoder, capacity, **options)
        await cache.start()
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.stop()


# -- fan-out ------------------------------------------------------------------


async def test_200_watchers_get_every_event_in_order_over_one_etcd_watch(
    storage, key_prefix, make_cache, decoder, etcd_watcher_count
):
    baseline = etcd_watcher_count()
    cache = await make_cache()
    watchers = [cache.watch() for _ in range(200)]
    consumers = [asyncio.create_task(collect(w, 60)) for w in watchers]

    changes = await write_changes(storage, key_prefix, 60)
    results = await asyncio.gather(*consumers)

    for events in results:
        assert summary(events) == changes
    # Every watcher got the very same decoded events: one decode per event,
    # plus one for the previous state of updates and deletions.
    assert all(a is b for events in results[1:] for a, b in zip(results[0], events))
    with_prev = sum(c.type != "ADDED" for c in changes)
    assert decoder.calls == len(changes) + with_prev
    assert storage.watches_opened == storage.open_watches == 1
    assert etcd_watcher_count() == baseline + 1
    assert cache.current_revision == changes[-1].revision


async def test_events_carry_decoded_objects_and_previous_states(storage, key_prefix, make_cache):
    cache = await make_cache()
    watcher = cache.watch()
    key = key_prefix + b"a"

    created = await storage.create(key, b"one")
    updated = await storage.update(key, b"two", created)
    _, deleted = await storage.delete(key)
    events = await collect(watcher, 3)

    assert events == [
        CacheEvent("ADDED", key, Obj("one", created), None, created),
        CacheEvent("MODIFIED", key, Obj("two", updated), Obj("one", created), updated),
        CacheEvent("DELETED", key, Obj("two", deleted), Obj("two", updated), deleted),
    ]
    assert watcher.last_revision == deleted


async def test_a_watcher_from_now_sees_only_later_events(storage, key_prefix, make_cache):
    cache = await make_cache()
    before = await write_changes(storage, key_prefix, 5, tag="before")
    await wait_until(lambda: cache.current_revision == before[-1].revision)
    watcher = cache.watch()

    later = await write_changes(storage, key_prefix, 3, tag="after")

    assert summary(await collect(watcher, 3)) == later


async def test_a_sub_prefix_watcher_sees_only_its_keys(storage, key_prefix, make_cache):
    cache = await make_cache()
    team_a = cache.watch(key_prefix=key_prefix + b"ns-a/")
    everyone = cache.watch()

    a1 = await write_changes(storage, key_prefix + b"ns-a/", 4, tag="a")
    b1 = await write_changes(storage, key_prefix + b"ns-b/", 4, tag="b")
    a2 = await write_changes(storage, key_prefix + b"ns-a/", 4, tag="c")

    assert summary(await collect(team_a, 8)) == a1 + a2
    assert summary(await collect(everyone, 12)) == a1 + b1 + a2

    # Changes elsewhere still move a caught-up watcher's bookmark forward.
    b2 = await write_changes(storage, key_prefix + b"ns-b/", 2, tag="d")
    assert await team_a.next(timeout=0.2) is None
    assert team_a.last_revision == a2[-1].revision
    assert team_a.progress_revision == cache.current_revision == b2[-1].revision
    with pytest.raises(ValueError):
        cache.watch(key_prefix=b"/somewhere/else/")


# -- resuming -----------------------------------------------------------------


async def test_resume_from_a_revision_in_the_buffer_replays_then_follows(
    storage, key_prefix, make_cache
):
    cache = await make_cache(capacity=100)
    history = await write_changes(storage, key_prefix, 10)
    await wait_until(lambda: cache.current_revision == history[-1].revision)

    watcher = cache.watch(start_revision=history[3].revision)
    replayed = await collect(watcher, 6)
    live = await write_changes(storage, key_prefix, 4, tag="live")
    followed = await collect(watcher, 4)

    assert summary(replayed) == history[4:]
    assert summary(followed) == live
    assert storage.watches_opened == 1  # served from memory


async def test_resume_from_older_than_the_buffer_catches_up_from_etcd(
    storage, key_prefix, make_cache
):
    cache = await make_cache(capacity=5)
    history = await write_changes(storage, key_prefix, 20)
    await wait_until(lambda: cache.current_revision == history[-1].revision)
    assert cache.oldest_revision > history[2].revision

    watcher = cache.watch(start_revision=history[2].revision)
    caught_up = await collect(watcher, 17)
    following = asyncio.create_task(collect(watcher, 8))
    live = await write_changes(storage, key_prefix, 8, tag="live")
    followed = await following

    assert summary(caught_up + followed) == history[3:] + live
    assert storage.watches_opened == 2  # the cache's own watch + one to catch up
    assert storage.open_watches == 1  # the catch-up watch was handed off and closed


async def test_catching_up_while_writes_continue_has_no_gap_and_no_duplicate(
    storage, key_prefix, make_cache
):
    cache = await make_cache(capacity=8)
    history = await write_changes(storage, key_prefix, 30, tag="old")
    await wait_until(lambda: cache.current_revision == history[-1].revision)

    watchers = [cache.watch(start_revision=history[i].revision) for i in (0, 10, 20)]
    consumers = [
        asyncio.create_task(collect(w, 29 - i + 60)) for w, i in zip(watchers, (0, 10, 20))
    ]
    concurrent = await write_changes(storage, key_prefix, 60, tag="new")
    results = await asyncio.gather(*consumers)

    for events, i in zip(results, (0, 10, 20)):
        assert summary(events) == history[i + 1:] + concurrent
    await wait_until(lambda: storage.open_watches == 1)


async def test_timeouts_and_cancelled_reads_lose_nothing(storage, key_prefix, make_cache):
    cache = await make_cache(capacity=4)
    history = await write_changes(storage, key_prefix, 12)
    await wait_until(lambda: cache.current_revision == history[-1].revision)
    watcher = cache.watch(start_revision=history[0].revision)  # catches up from etcd

    received: list[CacheEvent] = []

    async def drain(count: int) -> None:
        while len(received) < count:
            event = await watcher.next(timeout=0.001)
            if event is not None:
                received.append(event)

    writer = asyncio.create_task(write_changes(storage, key_prefix, 10, tag="live"))
    for _ in range(3):  # a reader cancelled while waiting must not cost an event
        reader = asyncio.create_task(watcher.__anext__())
        await asyncio.sleep(0)
        reader.cancel()
        try:
            received.append(await reader)
        except asyncio.CancelledError:
            pass
    await asyncio.wait_for(drain(21), 10)
    live = await writer

    assert summary(received) == history[1:] + live


async def test_closing_a_catching_up_watcher_releases_its_etcd_watch(
    storage, key_prefix, make_cache, etcd_watcher_count
):
    cache = await make_cache(capacity=2)
    history = await write_changes(storage, key_prefix, 6)
    await wait_until(lambda: cache.current_revision == history[-1].revision)
    baseline = etcd_watcher_count()

    watcher = cache.watch(start_revision=history[0].revision)
    assert summary(await collect(watcher, 1)) == history[1:2]
    assert storage.open_watches == 2
    watcher.close()

    assert storage.open_watches == 1
    await wait_until(lambda: etcd_watcher_count() == baseline)
    with pytest.raises(StopAsyncIteration):
        await watcher.__anext__()


async def test_a_watch_from_a_compacted_revision_is_compacted(storage, key_prefix, make_cache):
    cache = await make_cache(capacity=3)
    history = await write_changes(storage, key_prefix, 10)
    await wait_until(lambda: cache.current_revision == history[-1].revision)
    await storage.compact(history[-1].revision)

    watcher = cache.watch(start_revision=history[1].revision)
    with pytest.raises(CompactedError) as raised:
        await collect(watcher, 1)

    assert raised.value.compact_revision == history[-1].revision
    # A relist-and-watch from the compaction revision works.
    fresh = cache.watch(start_revision=history[-1].revision)
    live = await write_changes(storage, key_prefix, 2, tag="live")
    assert summary(await collect(fresh, 2)) == live


# -- slow consumers -----------------------------------------------------------


async def test_a_slow_watcher_is_terminated_without_holding_up_the_others(
    storage, key_prefix, make_cache
):
    cache = await make_cache(capacity=100)
    slow = cache.watch(queue_size=10)
    fast = cache.watch()
    consumer = asyncio.create_task(collect(fast, 30))

    changes = await write_changes(storage, key_prefix, 30)

    assert summary(await consumer) == changes
    with pytest.raises(WatcherTooSlowError):
        await slow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await slow.__anext__()
    assert cache.watcher_count == 1


async def test_a_watcher_that_falls_out_of_the_buffer_is_terminated(
    storage, key_prefix, make_cache
):
    cache = await make_cache(capacity=10)
    lagging = cache.watch()
    first = await write_changes(storage, key_prefix, 2)
    assert summary(await collect(lagging, 1)) == first[:1]

    more = await write_changes(storage, key_prefix, 20, tag="more")
    await wait_until(lambda: cache.current_revision == more[-1].revision)

    with pytest.raises(WatcherTooSlowError, match="watch again"):
        await lagging.__anext__()


async def test_next_with_a_timeout_returns_none_and_keeps_the_watcher(
    storage, key_prefix, make_cache
):
    cache = await make_cache()
    watcher = cache.watch()

    assert await watcher.next(timeout=0.05) is None
    changes = await write_changes(storage, key_prefix, 1)
    event = await watcher.next(timeout=5)

    assert summary([event]) == changes


# -- lifecycle and recovery ---------------------------------------------------


async def test_stop_ends_every_watcher_and_the_etcd_watch(
    storage, key_prefix, make_cache, etcd_watcher_count
):
    baseline = etcd_watcher_count()
    cache = await make_cache()
    history = await write_changes(storage, key_prefix, 3)
    await wait_until(lambda: cache.current_revision == history[-1].revision)
    watchers = [cache.watch() for _ in range(5)]
    consumers = [asyncio.create_task(collect(w, 1, timeout=30)) for w in watchers]
    await asyncio.sleep(0.05)

    await cache.stop()

    for consumer in consumers:
        with pytest.raises(StopAsyncIteration):
            await consumer
    assert storage.open_watches == 0
    await wait_until(lambda: etcd_watcher_count() == baseline)


async def test_the_cache_resumes_after_etcd_restarts_without_a_gap(fresh_etcd_server, decoder):
    etcd = fresh_etcd_server
    async with Storage([etcd.endpoint], connect_timeout=5) as storage:
        cache = WatchCache(storage, b"/r/", decoder, retry_delay=0.05, max_retry_delay=0.2)
        await cache.start()
        try:
            watcher = cache.watch()
            before = await write_changes(storage, b"/r/", 5)
            assert summary(await collect(watcher, 5)) == before

            await asyncio.to_thread(etcd.stop)
            await asyncio.to_thread(etcd.start)
            after = await write_changes(storage, b"/r/", 5, tag="after")

            assert summary(await collect(watcher, 5)) == after
            await wait_until(lambda: storage.open_watches == 1)
        finally:
            await cache.stop()


async def test_history_compacted_while_disconnected_ends_watchers_and_restarts_the_cache(
    fresh_etcd_server, decoder
):
    etcd = fresh_etcd_server
    async with Storage([etcd.endpoint], connect_timeout=5) as storage:
        # The pump waits 3 s before reopening its watch: time to restart etcd,
        # write and compact while the cache is away.
        cache = WatchCache(storage, b"/c/", decoder, retry_delay=3.0, max_retry_delay=3.0)
        await cache.start()
        try:
            watcher = cache.watch()
            seen = await write_changes(storage, b"/c/", 3)
            assert summary(await collect(watcher, 3)) == seen

            await asyncio.to_thread(etcd.stop)
            await asyncio.to_thread(etcd.start)
            missed = await write_changes(storage, b"/c/", 3, tag="missed")
            await storage.compact(missed[-1].revision)

            with pytest.raises(CompactedError):
                await collect(watcher, 1)
            await wait_until(lambda: cache.current_revision == missed[-1].revision, timeout=10)
            relisted = cache.watch(start_revision=missed[-1].revision)
            later = await write_changes(storage, b"/c/", 2, tag="later")
            assert summary(await collect(relisted, 2)) == later
        finally:
            await cache.stop()
