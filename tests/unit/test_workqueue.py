"""The work queue: dedup, one worker per key, retries with backoff, shutdown."""

import asyncio

import pytest

from kubeling.client.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    QueueShutDown,
    WorkQueue,
    default_controller_rate_limiter,
    run_workers,
)


def fast_queue() -> WorkQueue:
    return WorkQueue(ItemExponentialFailureRateLimiter(0.001, 0.05), name="test")


async def test_a_key_added_twice_is_handed_out_once():
    q = fast_queue()
    q.add("ns/a")
    q.add("ns/b")
    q.add("ns/a")
    assert len(q) == 2
    assert await q.get() == "ns/a"
    assert await q.get() == "ns/b"
    assert len(q) == 0


async def test_get_waits_for_an_add():
    q = fast_queue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.add("k")
    assert await asyncio.wait_for(getter, 1) == "k"


async def test_a_key_being_processed_is_not_handed_to_a_second_worker():
    q = fast_queue()
    q.add("k")
    assert await q.get() == "k"
    q.add("k")
    assert len(q) == 0  # held back while "k" is processing
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not second.done()
    q.done("k")
    assert await asyncio.wait_for(second, 1) == "k"


async def test_re_adds_during_processing_collapse_into_one_more_run():
    q = fast_queue()
    q.add("k")
    await q.get()
    q.add("k")
    q.add("k")
    q.done("k")
    assert len(q) == 1
    assert await q.get() == "k"
    q.done("k")
    assert len(q) == 0


async def test_done_without_re_add_does_not_requeue():
    q = fast_queue()
    q.add("k")
    await q.get()
    q.done("k")
    assert len(q) == 0


async def test_workers_never_reconcile_one_key_concurrently():
    q = fast_queue()
    running: set[str] = set()
    overlaps = []
    calls = {"a": 0, "b": 0}

    async def reconcile(key):
        if key in running:
            overlaps.append(key)
        running.add(key)
        calls[key] += 1
        await asyncio.sleep(0.01)
        # Events keep arriving for the key while it is being reconciled.
        q.add(key)
        running.discard(key)

    workers = asyncio.create_task(run_workers(q, reconcile, n=4))
    for _ in range(5):
        q.add("a")
        q.add("b")
    while min(calls.values()) < 5:
        await asyncio.sleep(0.005)
    q.shutdown()
    await asyncio.wait_for(workers, 2)
    assert overlaps == []


def test_exponential_backoff_doubles_to_the_cap_and_forget_resets_it():
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("k") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert limiter.num_requeues("k") == 20
    assert limiter.when("other") == 0.005  # per key
    limiter.forget("k")
    assert limiter.num_requeues("k") == 0
    assert limiter.when("k") == 0.005


def test_token_bucket_allows_a_burst_then_spaces_retries():
    now = [0.0]
    bucket = BucketRateLimiter(qps=10, burst=100, clock=lambda: now[0])
    assert [bucket.when("k") for _ in range(100)] == [0.0] * 100
    assert bucket.when("k") == pytest.approx(0.1)
    assert bucket.when("k") == pytest.approx(0.2)
    now[0] += 60.0  # refills (after paying the reserved tokens), never above the burst
    assert [bucket.when("k") for _ in range(100)] == [0.0] * 100


def test_default_limiter_takes_the_longer_of_backoff_and_bucket():
    limiter = default_controller_rate_limiter()
    assert limiter.when("k") == 0.005
    now = [0.0]
    combined = MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0),
                                BucketRateLimiter(qps=10, burst=1, clock=lambda: now[0]))
    assert combined.when("a") == 0.005       # token available: backoff wins
    assert combined.when("b") == pytest.approx(0.1)  # bucket empty: bucket wins


async def test_add_rate_limited_requeues_with_growing_backoff():
    q = fast_queue()
    q.add_rate_limited("k")
    q.add_rate_limited("k")
    assert q.num_requeues("k") == 2
    assert len(q) == 0  # not yet: it waits for its backoff
    assert await asyncio.wait_for(q.get(), 1) == "k"
    q.done("k")
    q.forget("k")
    assert q.num_requeues("k") == 0


async def test_add_after_hands_keys_out_in_ready_order():
    q = fast_queue()
    q.add_after("late", 0.05)
    q.add_after("early", 0.01)
    q.add("now")
    assert await q.get() == "now"
    assert await asyncio.wait_for(q.get(), 1) == "early"
    assert await asyncio.wait_for(q.get(), 1) == "late"


async def test_add_after_keeps_the_earlier_time_for_a_waiting_key():
    q = fast_queue()
    q.add_after("k", 30)
    q.add_after("k", 0.01)
    assert await asyncio.wait_for(q.get(), 1) == "k"
    q.done("k")
    q.add_after("k", 30)
    q.add_after("k", 60)
    await asyncio.sleep(0.02)
    assert len(q) == 0
    q.shutdown()  # cancels the timers


async def test_shutdown_wakes_waiting_getters_and_stops_adds():
    q = fast_queue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0.01)
    q.shutdown()
    for getter in getters:
        with pytest.raises(QueueShutDown):
            await asyncio.wait_for(getter, 1)
    q.add("k")
    assert len(q) == 0
    with pytest.raises(QueueShutDown):
        await q.get()


async def test_cancelled_getter_passes_its_key_on():
    q = fast_queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.add("k")
    first.cancel()  # woken, but cancelled before it could take the key
    assert await asyncio.wait_for(second, 1) == "k"


async def test_run_workers_retries_failures_and_forgets_on_success():
    q = fast_queue()
    attempts: list[str] = []
    requeues_seen: list[int] = []

    async def reconcile(key):
        attempts.append(key)
        requeues_seen.append(q.num_requeues(key))
        if len(attempts) < 4:
            raise RuntimeError("transient")

    workers = asyncio.create_task(run_workers(q, reconcile, n=2))
    q.add("ns/web")
    while len(attempts) < 4:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    assert attempts == ["ns/web"] * 4
    assert requeues_seen == [0, 1, 2, 3]
    assert q.num_requeues("ns/web") == 0
    q.shutdown()
    await asyncio.wait_for(workers, 2)


async def test_reconcile_returning_a_delay_requeues_the_key():
    q = fast_queue()
    runs = []

    async def reconcile(key):
        runs.append(key)
        return 0.01 if len(runs) < 3 else None

    workers = asyncio.create_task(run_workers(q, reconcile, n=1))
    q.add("k")
    while len(runs) < 3:
        await asyncio.sleep(0.005)
    assert q.num_requeues("k") == 0  # a periodic recheck is not a failure
    q.shutdown()
    await asyncio.wait_for(workers, 2)


async def test_cancelling_run_workers_cancels_the_workers():
    q = fast_queue()
    started = asyncio.Event()

    async def reconcile(key):
        started.set()
        await asyncio.sleep(3600)

    workers = asyncio.create_task(run_workers(q, reconcile, n=2))
    q.add("k")
    await asyncio.wait_for(started.wait(), 1)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
