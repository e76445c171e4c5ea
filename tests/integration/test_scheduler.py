"""The real scheduler process against a real API server and etcd.

Nodes are plain Node objects created here (Ready, with allocatable), no node
agents. The module runs its own API server so that "0/N nodes" messages
count only this module's nodes; each test names its nodes uniquely and
deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from tests.integration.conftest import ApiServerProcess

TIMEOUT = 30.0
FAST_ELECTION = ("--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.5")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """A cluster of this module's own (overrides the session-wide one, also
    for the `components` fixture)."""
    server = ApiServerProcess(tmp_path_factory.mktemp("scheduler-apiserver"))
    try:
        server.start()
        yield server
    finally:
        server.shutdown()


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    namespace = core_pb2.Namespace()
    namespace.metadata.name = namespace_name
    await client.create(namespace)
    return namespace_name


@pytest.fixture
async def nodes(client):
    """make(suffix, cpu=..., ...) creates a Node named uniquely for this test;
    all are deleted at teardown."""
    prefix = f"n-{uuid.uuid4().hex[:6]}-"
    made: list[str] = []

    async def make(suffix: str, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
                   labels: dict[str, str] | None = None, taints=(), ready: str = "True") -> str:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = prefix + suffix
        node.metadata.labels["kubernetes.io/hostname"] = node.metadata.name
        node.metadata.labels.update(labels or {})
        for key, value, effect in taints:
            node.spec.taints.add(key=key, value=value, effect=effect)
        node.status.capacity.update({"cpu": cpu, "memory": memory, "pods": str(pods)})
        node.status.allocatable.update(node.status.capacity)
        node.status.conditions.add(type="Ready", status=ready, reason="KubeletReady")
        await client.create(node)
        made.append(node.metadata.name)
        return node.metadata.name

    make.prefix = prefix
    yield make
    for name in made:
        try:
            await client.delete("nodes", name)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


def new_pod(ns: str, name: str, cpu: str = "100m", memory: str = "64Mi", owner_uid: str = "",
            node_selector: dict[str, str] | None = None, tolerations=()) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = ns
    if owner_uid:
        pod.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name="web",
                                          uid=owner_uid, controller=True)
    c = pod.spec.containers.add(name="app", image="localhost/kubeling/shell:1")
    c.resources.requests["cpu"].string_value = cpu
    c.resources.requests["memory"].string_value = memory
    pod.spec.node_selector.update(node_selector or {})
    for key, op, value, effect in tolerations:
        pod.spec.tolerations.add(key=key, operator=op, value=value, effect=effect)
    return pod


async def eventually(check, timeout: float = TIMEOUT, interval: float = 0.1, what: str = ""):
    """Await `check()` until it returns a truthy value; return that value."""
    last = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what or check.__name__} (last: {last!r})")


async def placements(client, ns: str) -> dict[str, str]:
    """pod name -> node name ("" while pending)."""
    return {p.metadata.name: p.spec.node_name for p in (await client.list("pods", ns)).items}


async def all_bound(client, ns: str, count: int) -> dict[str, str] | None:
    where = await placements(client, ns)
    return where if len(where) == count and all(where.values()) else None


async def events_for(client, ns: str, pod: str, reason: str) -> list[core_pb2.Event]:
    return [e for e in (await client.list("events", ns)).items
            if e.involved_object.name == pod and e.reason == reason]


def pod_scheduled(pod: core_pb2.Pod) -> core_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled":
            return cond
    return None


async def test_spreads_pods_of_one_owner_evenly(client, ns, nodes, components):
    names = [await nodes(f"{i}") for i in range(5)]
    sched = components("services.scheduler", "--leader-elect=false")
    owner = str(uuid.uuid4())
    await asyncio.gather(*(client.create(new_pod(ns, f"web-{i}", owner_uid=owner))
                           for i in range(30)))
    where = await eventually(lambda: all_bound(client, ns, 30), what="30 pods bound")
    per_node = {n: list(where.values()).count(n) for n in names}
    assert per_node == {n: 6 for n in names}, sched.log_tail()

    pod = await client.get("pods", "web-0", ns)
    assert pod_scheduled(pod).status == "True"
    events = await eventually(lambda: events_for(client, ns, "web-0", "Scheduled"),
                              what="Scheduled event")
    assert events[0].type == "Normal"
    assert events[0].message == f"Successfully assigned {ns}/web-0 to {where['web-0']}"


async def test_too_big_pod_waits_with_reason_then_fits_a_new_node(client, ns, nodes, components):
    await nodes("small-a", cpu="2")
    await nodes("small-b", cpu="2")
    await nodes("lost", cpu="64", ready="Unknown",
                taints=[("node.kubernetes.io/unreachable", "", "NoExecute")])
    components("services.scheduler", "--leader-elect=false")
    await client.create(new_pod(ns, "huge", cpu="8"))

    want = ("0/3 nodes are available: 1 node(s) had untolerated taint "
            "{node.kubernetes.io/unreachable: }, 2 Insufficient cpu.")
    events = await eventually(lambda: events_for(client, ns, "huge", "FailedScheduling"),
                              what="FailedScheduling event")
    assert (events[0].type, events[0].message) == ("Warning", want)

    async def unschedulable_condition():
        cond = pod_scheduled(await client.get("pods", "huge", ns))
        return cond if cond is not None and cond.status == "False" else None
    cond = await eventually(unschedulable_condition, what="PodScheduled=False")
    assert (cond.reason, cond.message) == ("Unschedulable", want)
    assert (await client.get("pods", "huge", ns)).spec.node_name == ""

    big = await nodes("big", cpu="16")
    await eventually(lambda: all_bound(client, ns, 1), timeout=15, what="huge bound to the new node")
    pod = await client.get("pods", "huge", ns)
    assert pod.spec.node_name == big
    assert pod_scheduled(pod).status == "True"


async def test_tainted_node_is_avoided_unless_tolerated(client, ns, nodes, components):
    clean = await nodes("clean")
    tainted = await nodes("tainted", taints=[("dedicated", "gpu", "NoSchedule")])
    components("services.scheduler", "--leader-elect=false")
    for i in range(8):
        await client.create(new_pod(ns, f"plain-{i}", cpu="200m"))
    where = await eventually(lambda: all_bound(client, ns, 8), what="plain pods bound")
    assert set(where.values()) == {clean}
    # The tainted node is now the emptier one: a tolerating pod goes there.
    await client.create(new_pod(ns, "tolerant", cpu="200m",
                                tolerations=[("dedicated", "Equal", "gpu", "NoSchedule")]))
    where = await eventually(lambda: all_bound(client, ns, 9), what="tolerant pod bound")
    assert where["tolerant"] == tainted


async def test_node_selector_is_honoured(client, ns, nodes, components):
    await nodes("hdd-1", labels={"disk": "hdd"})
    ssd = await nodes("ssd", labels={"disk": "ssd"})
    await nodes("hdd-2", labels={"disk": "hdd"})
    components("services.scheduler", "--leader-elect=false")
    for i in range(5):
        await client.create(new_pod(ns, f"fast-{i}", node_selector={"disk": "ssd"}))
    where = await eventually(lambda: all_bound(client, ns, 5), what="ssd pods bound")
    assert set(where.values()) == {ssd}

    await client.create(new_pod(ns, "nowhere", node_selector={"disk": "nvme"}))
    events = await eventually(lambda: events_for(client, ns, "nowhere", "FailedScheduling"),
                              what="FailedScheduling event")
    assert events[0].message == ("0/3 nodes are available: "
                                 "3 node(s) didn't match Pod's node affinity/selector.")


async def test_standby_takes_over_when_the_leader_is_killed(client, ns, nodes, components):
    await nodes("1")
    await nodes("2")
    replicas = {name: components("services.scheduler", "--leader-elect=true", "--identity", name,
                                 *FAST_ELECTION, name=name)
                for name in ("sched-a", "sched-b")}

    async def holder():
        try:
            lease = await client.get("leases", "kube-scheduler", "kube-system")
        except Exception:  # noqa: BLE001 - not created yet
            return None
        return lease.spec.holder_identity or None

    await client.create(new_pod(ns, "before"))
    await eventually(lambda: all_bound(client, ns, 1), what="first pod bound")
    leader = await eventually(holder, what="a lease holder")
    standby = next(n for n in replicas if n != leader)

    replicas[leader].kill()
    await client.create(new_pod(ns, "after"))
    await eventually(lambda: all_bound(client, ns, 2), what="pod bound by the standby")
    assert await holder() == standby
    assert replicas[standby].running
