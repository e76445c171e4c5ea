"""The Scheduler end to end over a fake API client: informer events in,
binds, Events and status writes out. No API server."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.client.errors import FailedPreconditionError, UnavailableError
from services.scheduler.scheduler import Scheduler

from .builders import FakeClock, make_node, make_pod


class FakeClient:
    """Records what the scheduler writes; `bind_error` makes binds fail."""

    def __init__(self):
        self.binds: list[tuple[str, str, str]] = []
        self.events: list = []
        self.statuses: list = []
        self.bind_error: Exception | None = None
        self.bound = asyncio.Event()

    async def bind(self, namespace, name, node_name, uid="", resource_version=""):
        await asyncio.sleep(0)
        if self.bind_error is not None:
            raise self.bind_error
        self.binds.append((namespace, name, node_name))
        self.bound.set()

    async def create(self, obj):
        self.events.append(obj)
        return obj

    async def update_status(self, obj):
        self.statuses.append(obj)
        return obj


async def until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.fixture
async def sched():
    client = FakeClient()
    scheduler = Scheduler(client, clock=FakeClock())
    task = asyncio.create_task(scheduler.run())
    yield scheduler, client
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def feed(scheduler, type_, obj):
    """What the informer does with a watch event: cache it, call the handlers."""
    informer = scheduler.node_informer if obj.kind == "Node" else scheduler.pod_informer
    await informer._apply(type_, obj)


async def test_binds_pod_to_a_feasible_node_and_records_scheduled(sched):
    scheduler, client = sched
    await feed(scheduler, "ADDED", make_node("small").allocatable(cpu="1").build())
    await feed(scheduler, "ADDED", make_node("big").allocatable(cpu="8").build())
    await feed(scheduler, "ADDED", make_pod("web").requests(cpu="2").build())
    await until(lambda: client.events)
    assert client.binds == [("default", "web", "big")]
    ev = client.events[0]
    assert (ev.type, ev.reason, ev.message) == ("Normal", "Scheduled",
                                                "Successfully assigned default/web to big")
    assert scheduler.snapshot.is_assumed("default/web")
    # The watch then shows it bound: the assumption is confirmed.
    await feed(scheduler, "MODIFIED", make_pod("web").requests(cpu="2").node("big").build())
    assert not scheduler.snapshot.is_assumed("default/web")
    assert scheduler.snapshot.get("big").req_cpu == 2000


async def test_unschedulable_pod_gets_event_and_condition_then_fits_a_new_node(sched):
    scheduler, client = sched
    for name in ("n1", "n2"):
        await feed(scheduler, "ADDED", make_node(name).allocatable(cpu="1").build())
    pod = make_pod("huge").requests(cpu="16")
    await feed(scheduler, "ADDED", pod.build())
    await until(lambda: client.events and client.statuses)
    message = "0/2 nodes are available: 2 Insufficient cpu."
    ev = client.events[0]
    assert (ev.type, ev.reason, ev.message) == ("Warning", "FailedScheduling", message)
    (cond,) = [c for c in client.statuses[0].status.conditions if c.type == "PodScheduled"]
    assert (cond.status, cond.reason, cond.message) == ("False", "Unschedulable", message)
    assert scheduler.queue.where("default/huge") == "unschedulable"
    assert client.binds == []

    scheduler.queue.clock.advance(1.5)  # its 1 s backoff is over: a new node retries it at once
    await feed(scheduler, "ADDED", make_node("n3").allocatable(cpu="32").build())
    await until(lambda: client.binds)
    assert client.binds == [("default", "huge", "n3")]


async def test_adding_a_node_that_cannot_help_leaves_pod_parked(sched):
    scheduler, client = sched
    await feed(scheduler, "ADDED", make_pod("huge").requests(cpu="16").build())
    await until(lambda: scheduler.queue.where("default/huge") == "unschedulable")
    await feed(scheduler, "ADDED", make_node("tiny").allocatable(cpu="1").build())
    assert scheduler.queue.where("default/huge") == "unschedulable"


async def test_failed_bind_forgets_assumption_and_backs_off(sched):
    scheduler, client = sched
    client.bind_error = UnavailableError("apiserver down")
    await feed(scheduler, "ADDED", make_node("n1").allocatable(cpu="1").build())
    await feed(scheduler, "ADDED", make_pod("a").requests(cpu="1").build())
    await until(lambda: scheduler.queue.where("default/a") == "backoff")
    assert not scheduler.snapshot.is_assumed("default/a")
    assert scheduler.snapshot.get("n1").req_cpu == 0
    client.bind_error = None
    scheduler.queue.clock.advance(1.5)
    scheduler.queue.flush_backoff_completed()
    await asyncio.wait_for(client.bound.wait(), 5)
    assert client.binds == [("default", "a", "n1")]


async def test_pod_already_bound_elsewhere_is_not_retried(sched):
    scheduler, client = sched
    client.bind_error = FailedPreconditionError("already assigned")
    await feed(scheduler, "ADDED", make_node("n1").build())
    await feed(scheduler, "ADDED", make_pod("a").build())
    await until(lambda: scheduler.bind_failures == 1)
    # the informer has not caught up yet, so it may be back in backoff; the
    # bound version then takes it out for good
    await feed(scheduler, "MODIFIED", make_pod("a").node("other").build())
    assert "default/a" not in scheduler.queue
    assert scheduler.snapshot.node_of("default/a") == "other"


async def test_ignores_other_schedulers_and_pods_being_deleted(sched):
    scheduler, client = sched
    await feed(scheduler, "ADDED", make_node("n1").build())
    await feed(scheduler, "ADDED", make_pod("mine-not").scheduler_name("other").build())
    deleting = make_pod("going").build()
    deleting.metadata.deletion_timestamp.GetCurrentTime()
    await feed(scheduler, "ADDED", deleting)
    await asyncio.sleep(0.05)
    assert client.binds == [] and len(scheduler.queue) == 0


async def test_deleting_an_assigned_pod_retries_pods_that_now_fit(sched):
    scheduler, client = sched
    await feed(scheduler, "ADDED", make_node("n1").allocatable(cpu="1").build())
    holder = make_pod("holder").requests(cpu="1").node("n1").build()
    await feed(scheduler, "ADDED", holder)
    await feed(scheduler, "ADDED", make_pod("waiting").requests(cpu="1").build())
    await until(lambda: scheduler.queue.where("default/waiting") == "unschedulable")
    scheduler.queue.clock.advance(1.5)
    await feed(scheduler, "DELETED", holder)
    await until(lambda: client.binds)
    assert client.binds == [("default", "waiting", "n1")]


async def test_finished_pod_frees_its_node(sched):
    scheduler, client = sched
    await feed(scheduler, "ADDED", make_node("n1").allocatable(cpu="1").build())
    done = make_pod("job").requests(cpu="1").node("n1")
    await feed(scheduler, "ADDED", done.build())
    assert scheduler.snapshot.get("n1").req_cpu == 1000
    # status.phase!=Succeeded stops matching: the watch says DELETED
    await feed(scheduler, "DELETED", done.phase("Succeeded").build())
    assert scheduler.snapshot.get("n1").req_cpu == 0
