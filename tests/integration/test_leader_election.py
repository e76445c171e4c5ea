"""Leader election on a real Lease through a real API server: one leader at a
time, hand-over on release, takeover after a leader stops renewing, and a
leader that cannot reach the server steps down before anyone else leads."""

import asyncio
import time

import pytest

from kubeling.client.api_client import ApiClient
from kubeling.client.leader_election import LeaderElector


async def eventually(predicate, timeout: float = 20.0, interval: float = 0.05):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


class Candidate:
    """An elector with its own client that records when it led."""

    def __init__(self, address: str, lease: str, identity: str, **kwargs):
        self.client = ApiClient(address, timeout=2)
        self.identity = identity
        self.log: list[tuple[str, str, float]] = []
        self.elector = LeaderElector(
            self.client, lease, identity,
            on_started_leading=lambda: self.log.append(("started", identity, time.monotonic())),
            on_stopped_leading=lambda: self.log.append(("stopped", identity, time.monotonic())),
            **{"lease_duration": 1, "renew_deadline": 0.8, "retry_period": 0.2, **kwargs})
        self.task: asyncio.Task | None = None

    def start(self) -> "Candidate":
        self.task = asyncio.create_task(self.elector.run())
        return self

    @property
    def leading(self) -> bool:
        return self.elector.is_leader

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def candidates(api_server, namespace_name):
    made: list[Candidate] = []

    def make(identity: str, **kwargs) -> Candidate:
        c = Candidate(api_server.address, f"lock-{namespace_name}", identity, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def lease_of(client, candidate: Candidate):
    return await client.get("leases", candidate.elector.lease_name, "kube-system")


async def test_exactly_one_of_two_candidates_leads(client, candidates):
    a, b = candidates("a").start(), candidates("b").start()
    await eventually(lambda: a.leading or b.leading)
    for _ in range(40):  # watch both for a while: never two leaders
        assert not (a.leading and b.leading)
        await asyncio.sleep(0.05)
    leader, follower = (a, b) if a.leading else (b, a)
    lease = await lease_of(client, leader)
    assert lease.spec.holder_identity == leader.identity
    assert lease.spec.lease_duration_seconds == 1
    assert lease.spec.lease_transitions == 0
    assert lease.spec.renew_time.ToDatetime() >= lease.spec.acquire_time.ToDatetime()
    assert follower.elector.leader == leader.identity
    assert follower.log == []


async def test_release_hands_the_lease_over_without_waiting_for_expiry(client, candidates):
    # Leases this long cannot expire during the test: only release explains a takeover.
    slow = {"lease_duration": 60, "renew_deadline": 40, "retry_period": 0.2}
    a = candidates("a", **slow).start()
    await eventually(lambda: a.leading)
    b = candidates("b", **slow).start()
    await eventually(lambda: b.elector.leader == "a")
    before = (await lease_of(client, a)).spec.lease_transitions

    await a.elector.release()
    assert not a.leading and a.task.done()
    assert [e[0] for e in a.log] == ["started", "stopped"]
    await eventually(lambda: b.leading, timeout=10)
    lease = await lease_of(client, b)
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == before + 1


async def test_a_leader_that_stops_renewing_is_replaced_after_its_lease_expires(client, candidates):
    a = candidates("a", release_on_cancel=False).start()
    await eventually(lambda: a.leading)
    b = candidates("b").start()
    await eventually(lambda: b.elector.leader == "a")
    assert not b.leading

    a.task.cancel()  # a crash: no release, the lease just stops being renewed
    await asyncio.gather(a.task, return_exceptions=True)
    assert (await lease_of(client, a)).spec.holder_identity == "a"
    await eventually(lambda: b.leading)
    lease = await lease_of(client, b)
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1


async def test_a_leader_cut_off_from_the_server_steps_down_before_another_leads(client, candidates):
    a = candidates("a", lease_duration=2, renew_deadline=1, retry_period=0.2).start()
    await eventually(lambda: a.leading)
    b = candidates("b", lease_duration=2, renew_deadline=1, retry_period=0.2).start()
    await eventually(lambda: b.elector.leader == "a")

    await a.client.close()  # every renewal now fails
    await eventually(lambda: a.task.done())  # run() returns after stepping down
    assert not a.leading
    await eventually(lambda: b.leading)
    stopped_a = next(t for what, who, t in a.log if what == "stopped")
    started_b = next(t for what, who, t in b.log if what == "started")
    assert stopped_a < started_b
    assert (await lease_of(client, b)).spec.lease_transitions == 1


async def test_lead_work_runs_while_leading_and_is_cancelled_on_step_down(api_server, namespace_name):
    ticks = []
    cancelled = asyncio.Event()

    async def lead():
        try:
            while True:
                ticks.append(1)
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with ApiClient(api_server.address) as c:
        elector = LeaderElector(c, f"work-{namespace_name}", "solo", lease_duration=1,
                                renew_deadline=0.8, retry_period=0.2, on_started_leading=lead)
        task = asyncio.create_task(elector.run())
        await eventually(lambda: len(ticks) >= 3)
        await elector.release()
        assert cancelled.is_set() and task.done()
        lease = await c.get("leases", f"work-{namespace_name}", "kube-system")
        assert lease.spec.holder_identity == ""


def test_durations_must_leave_room_for_renewal():
    with pytest.raises(ValueError):
        LeaderElector(None, "l", "me", lease_duration=1, renew_deadline=2, retry_period=0.5)
    with pytest.raises(ValueError):
        LeaderElector(None, "l", "", lease_duration=15, renew_deadline=10, retry_period=2)
