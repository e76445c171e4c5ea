"""The storage contract (services/apiserver/storage.py) against a real etcd.

Create fails on an existing key, update and delete take an expected revision
and report a conflict without writing, list reads at a revision with pages,
watch streams ordered events with previous values, and a compacted revision
is a clear CompactedError everywhere.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kubeling.local.etcd_server import find_free_port
from services.apiserver.storage import (
    CompactedError,
    ConflictError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    Storage,
    StorageUnavailableError,
    WatchEvent,
)


async def next_events(stream, count: int, timeout: float = 5.0) -> list[WatchEvent]:
    async def take():
        return [await stream.__anext__() for _ in range(count)]

    return await asyncio.wait_for(take(), timeout)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# -- create / get ------------------------------------------------------------


async def test_create_stores_a_new_key_at_the_returned_revision(storage, key_prefix):
    key = key_prefix + b"a"
    revision = await storage.create(key, b"v1")

    kv = await storage.get(key)
    assert (kv.key, kv.value) == (key, b"v1")
    assert kv.create_revision == kv.mod_revision == revision
    assert await storage.current_revision() == revision


async def test_create_refuses_an_existing_key_and_writes_nothing(storage, key_prefix):
    key = key_prefix + b"a"
    revision = await storage.create(key, b"v1")

    with pytest.raises(KeyExistsError) as raised:
        await storage.create(key, b"v2")

    assert raised.value.key == key
    assert (await storage.get(key)).value == b"v1"
    assert await storage.current_revision() == revision


async def test_only_one_of_concurrent_creates_wins(storage, key_prefix):
    key = key_prefix + b"a"
    results = await asyncio.gather(
        *(storage.create(key, b"v%d" % i) for i in range(10)), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExistsError) for r in results if not isinstance(r, int))


async def test_get_of_a_missing_key_is_not_found(storage, key_prefix):
    with pytest.raises(KeyNotFoundError):
        await storage.get(key_prefix + b"missing")


# -- update -------------------------------------------------------------------


async def test_update_with_the_current_revision_replaces_the_value(storage, key_prefix):
    key = key_prefix + b"a"
    created = await storage.create(key, b"v1")

    updated = await storage.update(key, b"v2", created)

    assert updated > created
    kv = await storage.get(key)
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"v2", created, updated)


async def test_update_with_a_stale_revision_conflicts_and_writes_nothing(storage, key_prefix):
    key = key_prefix + b"a"
    created = await storage.create(key, b"v1")
    current = await storage.update(key, b"v2", created)

    with pytest.raises(ConflictError) as raised:
        await storage.update(key, b"v3", created)

    assert raised.value.current_mod_revision == current
    assert raised.value.expected_mod_revision == created
    assert (await storage.get(key)).value == b"v2"
    assert await storage.current_revision() == current


async def test_update_of_a_missing_key_is_not_found_and_creates_nothing(storage, key_prefix):
    key = key_prefix + b"a"
    with pytest.raises(KeyNotFoundError):
        await storage.update(key, b"v", 1)
    with pytest.raises(KeyNotFoundError):
        await storage.get(key)


async def test_update_needs_a_positive_expected_revision(storage, key_prefix):
    with pytest.raises(ValueError):
        await storage.update(key_prefix + b"a", b"v", 0)


async def test_exactly_one_of_concurrent_updates_with_the_same_revision_wins(storage, key_prefix):
    key = key_prefix + b"counter"
    created = await storage.create(key, b"0")

    results = await asyncio.gather(
        *(storage.update(key, b"writer-%d" % i, created) for i in range(20)),
        return_exceptions=True,
    )

    winners = [i for i, r in enumerate(results) if isinstance(r, int)]
    assert len(winners) == 1
    losers = [r for r in results if not isinstance(r, int)]
    assert all(isinstance(r, ConflictError) for r in losers)
    assert {r.current_mod_revision for r in losers} == {results[winners[0]]}
    assert (await storage.get(key)).value == b"writer-%d" % winners[0]


# -- delete -------------------------------------------------------------------


async def test_delete_returns_the_last_value_and_the_deletion_revision(storage, key_prefix):
    key = key_prefix + b"a"
    created = await storage.create(key, b"v1")

    deleted, revision = await storage.delete(key)

    assert (deleted.key, deleted.value, deleted.mod_revision) == (key, b"v1", created)
    assert revision == await storage.current_revision() > created
    with pytest.raises(KeyNotFoundError):
        await storage.get(key)


async def test_conditional_delete_with_the_current_revision_deletes(storage, key_prefix):
    key = key_prefix + b"a"
    created = await storage.create(key, b"v1")

    deleted, _ = await storage.delete(key, expected_mod_revision=created)

    assert deleted.value == b"v1"
    with pytest.raises(KeyNotFoundError):
        await storage.get(key)


async def test_conditional_delete_with_a_stale_revision_conflicts_and_keeps_the_key(
    storage, key_prefix
):
    key = key_prefix + b"a"
    created = await storage.create(key, b"v1")
    current = await storage.update(key, b"v2", created)

    with pytest.raises(ConflictError) as raised:
        await storage.delete(key, expected_mod_revision=created)

    assert raised.value.current_mod_revision == current
    assert (await storage.get(key)).value == b"v2"


@pytest.mark.parametrize("expected", [None, 5], ids=["unconditional", "conditional"])
async def test_delete_of_a_missing_key_is_not_found(storage, key_prefix, expected):
    before = await storage.current_revision()
    with pytest.raises(KeyNotFoundError):
        await storage.delete(key_prefix + b"missing", expected_mod_revision=expected)
    assert await storage.current_revision() == before


# -- list ---------------------------------------------------------------------


async def test_list_returns_the_prefix_in_key_order_at_the_latest_revision(storage, key_prefix):
    for name in (b"c", b"a", b"b"):
        await storage.create(key_prefix + name, name.upper())
    await storage.create(key_prefix[:-1] + b"-sibling/x", b"outside the prefix")

    result = await storage.list(key_prefix)

    assert [kv.key for kv in result.items] == [key_prefix + n for n in (b"a", b"b", b"c")]
    assert [kv.value for kv in result.items] == [b"A", b"B", b"C"]
    assert result.revision == await storage.current_revision()
    assert result.more is False


async def test_list_at_an_older_revision_shows_the_state_then(storage, key_prefix):
    a_created = await storage.create(key_prefix + b"a", b"1")
    revision = await storage.create(key_prefix + b"b", b"1")
    await storage.update(key_prefix + b"a", b"2", a_created)
    await storage.delete(key_prefix + b"b")
    await storage.create(key_prefix + b"c", b"1")

    then = await storage.list(key_prefix, revision=revision)
    now = await storage.list(key_prefix)

    assert then.revision == revision
    assert [(kv.key[-1:], kv.value) for kv in then.items] == [(b"a", b"1"), (b"b", b"1")]
    assert [(kv.key[-1:], kv.value) for kv in now.items] == [(b"a", b"2"), (b"c", b"1")]


async def test_list_pages_with_limit_and_start_key_at_one_revision(storage, key_prefix):
    keys = [key_prefix + b"k%02d" % i for i in range(7)]
    for key in keys:
        await storage.create(key, b"v")

    pages = []
    result = await storage.list(key_prefix, limit=3)
    revision = result.revision
    pages.append(result)
    # Writes between pages must not show up in pages read at the first revision.
    await storage.create(key_prefix + b"k03a", b"late")
    await storage.delete(keys[5])
    while result.more:
        result = await storage.list(
            key_prefix, revision=revision, start_key=result.items[-1].key + b"\0", limit=3
        )
        pages.append(result)

    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert [p.more for p in pages] == [True, True, False]
    assert all(p.revision == revision for p in pages)
    assert [kv.key for p in pages for kv in p.items] == keys


async def test_list_start_key_is_inclusive_and_must_be_inside_the_prefix(storage, key_prefix):
    for name in (b"a", b"b", b"c"):
        await storage.create(key_prefix + name, b"v")

    result = await storage.list(key_prefix, start_key=key_prefix + b"b")

    assert [kv.key[-1:] for kv in result.items] == [b"b", b"c"]
    with pytest.raises(ValueError):
        await storage.list(key_prefix, start_key=b"/elsewhere")


async def test_list_at_a_compacted_revision_is_compacted(storage, key_prefix):
    old = await storage.create(key_prefix + b"a", b"1")
    await storage.update(key_prefix + b"a", b"2", old)
    current = await storage.current_revision()
    await storage.compact(current)

    with pytest.raises(CompactedError) as raised:
        await storage.list(key_prefix, revision=old)

    assert raised.value.compact_revision == current
    assert raised.value.requested_revision == old
    # The compaction revision itself is still readable.
    assert [kv.value for kv in (await storage.list(key_prefix, revision=current)).items] == [b"2"]


async def test_list_at_a_future_revision_is_refused(storage, key_prefix):
    future = await storage.current_revision() + 1000
    with pytest.raises(FutureRevisionError):
        await storage.list(key_prefix, revision=future)


async def test_compacting_an_already_compacted_revision_is_compacted(storage, key_prefix):
    await storage.create(key_prefix + b"a", b"1")
    current = await storage.current_revision()
    await storage.compact(current)
    with pytest.raises(CompactedError):
        await storage.compact(current - 1)


# -- watch --------------------------------------------------------------------


async def test_watch_streams_changes_in_revision_order_with_previous_values(storage, key_prefix):
    start = await storage.current_revision() + 1
    a, b = key_prefix + b"a", key_prefix + b"b"
    r1 = await storage.create(a, b"a1")
    r2 = await storage.create(b, b"b1")
    r3 = await storage.update(a, b"a2", r1)
    _, r4 = await storage.delete(b, expected_mod_revision=r2)
    await storage.create(key_prefix[:-1] + b"-sibling/x", b"outside")
    r5 = await storage.create(b, b"b2")

    async with storage.watch(key_prefix, start) as stream:
        events = await next_events(stream, 5)

    assert events == [
        WatchEvent("PUT", a, b"a1", None, r1, r1),
        WatchEvent("PUT", b, b"b1", None, r2, r2),
        WatchEvent("PUT", a, b"a2", b"a1", r3, r1, r1),
        WatchEvent("DELETE", b, b"", b"b1", r4, 0, r2),
        WatchEvent("PUT", b, b"b2", None, r5, r5),
    ]
    assert storage.open_watches == 0


async def test_watch_delivers_live_events_after_history(storage, key_prefix):
    start = await storage.current_revision() + 1
    r1 = await storage.create(key_prefix + b"a", b"1")

    async with storage.watch(key_prefix, start) as stream:
        first = await next_events(stream, 1)
        r2 = await storage.update(key_prefix + b"a", b"2", r1)
        second = await next_events(stream, 1)

    assert [e.mod_revision for e in first + second] == [r1, r2]
    assert second[0].prev_value == b"1"


async def test_watch_from_a_compacted_revision_is_compacted(storage, key_prefix):
    old = await storage.create(key_prefix + b"a", b"1")
    await storage.update(key_prefix + b"a", b"2", old)
    current = await storage.current_revision()
    await storage.compact(current)

    with pytest.raises(CompactedError) as raised:
        await next_events(storage.watch(key_prefix, old), 1)

    assert raised.value.compact_revision == current
    assert storage.open_watches == 0


async def test_cancelling_a_watch_releases_the_etcd_watch_and_leaks_no_task(
    storage, key_prefix, etcd_watcher_count
):
    baseline_watchers = etcd_watcher_count()
    baseline_tasks = len(asyncio.all_tasks())
    stream = storage.watch(key_prefix, await storage.current_revision() + 1)
    consumer = asyncio.create_task(next_events(stream, 1, timeout=30))
    await wait_until(lambda: etcd_watcher_count() == baseline_watchers + 1)
    assert storage.open_watches == 1

    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert storage.open_watches == 0
    await wait_until(lambda: etcd_watcher_count() == baseline_watchers)
    # gRPC finishes the cancelled call in a task of its own, shortly after.
    await wait_until(lambda: len(asyncio.all_tasks()) <= baseline_tasks)


async def test_closing_a_watch_ends_a_pending_iteration(storage, key_prefix, etcd_watcher_count):
    baseline_watchers = etcd_watcher_count()
    stream = storage.watch(key_prefix, await storage.current_revision() + 1)
    received = []

    async def consume():
        async for event in stream:
            received.append(event)

    consumer = asyncio.create_task(consume())
    await wait_until(lambda: storage.open_watches == 1)
    stream.close()
    await asyncio.wait_for(consumer, 5)  # ends normally, not cancelled

    assert received == []
    await wait_until(lambda: etcd_watcher_count() == baseline_watchers)


# -- endpoints and failures ---------------------------------------------------


async def test_an_unreachable_first_member_fails_over_to_the_next(etcd_server, key_prefix):
    dead = f"127.0.0.1:{find_free_port()}"
    async with Storage([dead, etcd_server.endpoint], connect_timeout=2) as storage:
        revision = await storage.create(key_prefix + b"a", b"1")
        assert (await storage.get(key_prefix + b"a")).mod_revision == revision


async def test_no_reachable_member_is_unavailable_naming_the_endpoint():
    dead = f"127.0.0.1:{find_free_port()}"
    storage = Storage([dead], connect_timeout=0.5)
    try:
        with pytest.raises(StorageUnavailableError) as raised:
            await storage.connect()
        assert dead in str(raised.value)
    finally:
        await storage.close()


async def test_a_stopped_etcd_is_unavailable_and_a_restarted_one_serves_again(fresh_etcd_server):
    etcd = fresh_etcd_server
    async with Storage([etcd.endpoint], connect_timeout=1, request_timeout=2) as storage:
        created = await storage.create(b"/k", b"1")
        stream = storage.watch(b"/", created + 1)
        consumer = asyncio.create_task(next_events(stream, 1, timeout=30))
        await wait_until(lambda: storage.open_watches == 1)

        await asyncio.to_thread(etcd.stop)

        with pytest.raises(StorageUnavailableError) as raised:
            await consumer
        assert etcd.endpoint in str(raised.value)
        with pytest.raises(StorageUnavailableError) as raised:
            await storage.get(b"/k")
        assert etcd.endpoint in str(raised.value)
        assert storage.open_watches == 0

        await asyncio.to_thread(etcd.start)

        assert (await storage.get(b"/k")).value == b"1"
        assert await storage.update(b"/k", b"2", created) > created
