"""The scheduling queue: order, backoff (1 s doubling to 10 s), parking
unschedulable pods and moving them back when the cluster changes. Time is a
fake clock; nothing waits on the wall clock."""

from __future__ import annotations

import asyncio

import pytest

from services.scheduler.scheduling_queue import QueueClosed, SchedulingQueue

from .builders import FakeClock, make_pod


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def queue(clock):
    return SchedulingQueue(clock=clock)


def fail_unschedulable(queue, q):
    queue.add_unschedulable(q, queue.scheduling_cycle)


def test_pops_in_arrival_order_and_higher_priority_first(queue, clock):
    queue.add(make_pod("a").build())
    clock.advance(1)
    queue.add(make_pod("b").build())
    clock.advance(1)
    queue.add(make_pod("urgent").priority(1000).build())
    assert [queue.pop_nowait().info.name for _ in range(3)] == ["urgent", "a", "b"]
    assert queue.pop_nowait() is None


def test_adding_a_queued_pod_again_keeps_one_entry(queue):
    queue.add(make_pod("a").build())
    queue.add(make_pod("a").resource_version("2").build())
    assert queue.pop_nowait().pod.metadata.resource_version == "2"
    assert queue.pop_nowait() is None


@pytest.mark.parametrize("attempts, want", [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (12, 10)],
                         ids=lambda v: str(v))
def test_backoff_doubles_from_one_second_to_ten(queue, attempts, want):
    queue.add(make_pod("a").build())
    q = queue.pop_nowait()
    q.attempts = attempts
    assert queue.backoff_duration(q) == want


def test_error_waits_out_its_backoff(queue, clock):
    queue.add(make_pod("a").build())
    q = queue.pop_nowait()
    queue.add_backoff(q)
    assert queue.where("default/a") == "backoff"
    clock.advance(0.9)
    assert queue.flush_backoff_completed() == 0 and queue.pop_nowait() is None
    clock.advance(0.2)
    assert queue.flush_backoff_completed() == 1
    assert queue.pop_nowait().attempts == 2


def test_unschedulable_pod_stays_parked_until_something_changes(queue, clock):
    queue.add(make_pod("a").build())
    fail_unschedulable(queue, queue.pop_nowait())
    clock.advance(60)
    queue.flush_backoff_completed()
    assert queue.where("default/a") == "unschedulable" and queue.pop_nowait() is None


def test_node_added_moves_unschedulable_pod_to_active_at_once(queue, clock):
    queue.add(make_pod("a").build())
    fail_unschedulable(queue, queue.pop_nowait())
    clock.advance(1.5)  # past its 1 s backoff
    assert queue.move_all_to_active_or_backoff() == 1
    assert queue.where("default/a") == "active"
    assert queue.pop_nowait().info.name == "a"


def test_move_during_backoff_goes_to_backoff_queue(queue, clock):
    queue.add(make_pod("a").build())
    q = queue.pop_nowait()
    q.attempts = 3  # fourth try would wait 4 s
    fail_unschedulable(queue, q)
    clock.advance(1)
    queue.move_all_to_active_or_backoff()
    assert queue.where("default/a") == "backoff"
    clock.advance(3.1)
    queue.flush_backoff_completed()
    assert queue.where("default/a") == "active"


def test_move_only_pods_the_change_could_help(queue):
    for name in ("small", "big"):
        queue.add(make_pod(name).build())
        fail_unschedulable(queue, queue.pop_nowait())
    queue.clock.advance(5)
    assert queue.move_all_to_active_or_backoff(lambda p: p.name == "small") == 1
    assert queue.where("default/small") == "active"
    assert queue.where("default/big") == "unschedulable"


def test_event_during_the_attempt_is_not_missed(queue, clock):
    """A node added while the pod was being scheduled: the failure backs it
    off instead of parking it, since the move found nothing to move."""
    queue.add(make_pod("a").build())
    q = queue.pop_nowait()
    cycle = queue.scheduling_cycle
    queue.move_all_to_active_or_backoff()  # the node arrives mid-attempt
    queue.add_unschedulable(q, cycle)
    assert queue.where("default/a") == "backoff"


def test_status_only_update_keeps_pod_parked_but_spec_change_retries(queue, clock):
    pod = make_pod("a")
    queue.add(pod.build())
    fail_unschedulable(queue, queue.pop_nowait())
    clock.advance(2)
    old = pod.build()
    status_only = pod.resource_version("2").build()
    status_only.status.conditions.add(type="PodScheduled", status="False")
    queue.update(old, status_only)
    assert queue.where("default/a") == "unschedulable"
    relabelled = pod.resource_version("3").labels(tier="x").build()
    queue.update(status_only, relabelled)
    assert queue.where("default/a") == "active"


def test_delete_removes_from_every_queue(queue):
    queue.add(make_pod("a").build())
    queue.add(make_pod("b").build())
    fail_unschedulable(queue, queue.pop_nowait())
    queue.delete("default/a")
    queue.delete("default/b")
    assert len(queue) == 0 and queue.pop_nowait() is None


def test_unschedulable_pods_are_retried_after_the_safety_net_interval(queue, clock):
    queue.add(make_pod("a").build())
    fail_unschedulable(queue, queue.pop_nowait())
    clock.advance(299)
    assert queue.flush_unschedulable_left_over() == 0
    clock.advance(2)
    assert queue.flush_unschedulable_left_over() == 1
    assert queue.where("default/a") == "active"


async def test_pop_waits_for_a_pod_and_close_ends_it(queue):
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(make_pod("a").build())
    assert (await asyncio.wait_for(waiter, 5)).info.name == "a"
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    queue.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(waiter, 5)
