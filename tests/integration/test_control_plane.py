"""The whole control plane together, with hollow nodes for nodes: the real
API server on its own etcd, the scheduler, the controller manager and
simulated nodes, each its own process. Times are printed, never asserted."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from kubeling import objects
from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import NotFoundError
from tests.waiting import eventually

from .conftest import ApiServerProcess, Component

WAIT = 90.0
FAST_LEADER = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")
FAST_NODES = ("--node-monitor-grace-period", "2", "--pod-eviction-timeout", "1")


class Cluster:
    """A private API server plus the components a test starts on it."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.api = ApiServerProcess(tmp)
        self.components: list[Component] = []

    def start(self, module: str, *args: str, name: str = "") -> Component:
        log = self.tmp / f"{name or module.rsplit('.', 1)[-1]}-{len(self.components)}.log"
        comp = Component(module, ["--server", self.api.address, *args], log)
        self.components.append(comp.start())
        return comp

    def stop(self) -> None:
        for comp in reversed(self.components):
            comp.stop()
        self.api.shutdown()


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.api.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
async def client(cluster):
    async with ApiClient(cluster.api.address) as c:
        yield c


def deployment(name: str, replicas: int, cpu: str = "100m", **spec):
    doc = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{
                                  "name": "web", "image": "localhost/kubeling/http:1",
                                  "resources": {"requests": {"cpu": cpu, "memory": "32Mi"}}}]}},
                 **spec},
    }
    return objects.from_dict(doc)


async def available(client, name: str, want: int):
    d = await client.get("deployments", name, "default")
    return (d.status.available_replicas == want and d.status.updated_replicas == want
            and d.status.replicas == want and d.status.observed_generation == d.metadata.generation)


async def live_pods(client, app: str) -> list[core_pb2.Pod]:
    pods = (await client.list("pods", "default", label_selector=f"app={app}")).items
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")]


async def test_deployment_spreads_over_hollow_nodes_scales_and_is_collected(cluster, client):
    cluster.start("services.controllers", "--leader-elect", "false", *FAST_NODES)
    cluster.start("services.scheduler", "--leader-elect", "false")
    cluster.start("node_agent.hollow", "--count", "5", "--name-prefix", "hollow-")
    await eventually(lambda: _ready_nodes(client, 5), WAIT, what="5 Ready hollow nodes")

    start = time.monotonic()
    await client.create(deployment("web", 30))
    await eventually(lambda: available(client, "web", 30), WAIT, what="30 available")
    print(f"30 replicas available in {time.monotonic() - start:.1f}s")
    per_node = Counter(p.spec.node_name for p in await live_pods(client, "web"))
    assert len(per_node) == 5 and max(per_node.values()) - min(per_node.values()) <= 1, per_node

    for replicas in (50, 0):
        d = await client.get("deployments", "web", "default")
        d.spec.replicas = replicas
        await client.update(d)
        await eventually(lambda: available(client, "web", replicas), WAIT, what=f"{replicas} replicas")
        await eventually(lambda: _count(live_pods(client, "web"), replicas), WAIT,
                         what=f"{replicas} live pods")

    d = await client.get("deployments", "web", "default")
    d.spec.replicas = 6
    await client.update(d)
    await eventually(lambda: available(client, "web", 6), WAIT, what="6 available")
    await client.delete("deployments", "web", "default")
    await eventually(lambda: _gone(client, "web"), WAIT, what="ReplicaSets and pods collected")


async def test_pending_pod_is_scheduled_when_a_big_enough_node_joins(cluster, client):
    cluster.start("services.controllers", "--leader-elect", "false", *FAST_NODES)
    cluster.start("services.scheduler", "--leader-elect", "false")
    cluster.start("node_agent.hollow", "--count", "3", "--name-prefix", "small-", "--cpu", "2")
    await eventually(lambda: _ready_nodes(client, 3), WAIT, what="3 Ready nodes")

    await client.create(deployment("big", 1, cpu="16"))
    event = await eventually(lambda: _event(client, "FailedScheduling"), WAIT, what="FailedScheduling")
    assert "0/3 nodes are available: 3 Insufficient cpu" in event.message, event.message
    [pod] = await live_pods(client, "big")
    assert not pod.spec.node_name

    cluster.start("node_agent.hollow", "--count", "1", "--name-prefix", "large-", "--cpu", "32")
    await eventually(lambda: available(client, "big", 1), WAIT, what="the big pod running")
    [pod] = await live_pods(client, "big")
    assert pod.spec.node_name == "large-1"


async def test_a_dead_hollow_node_has_its_pods_replaced(cluster, client):
    cluster.start("services.controllers", "--leader-elect", "false", *FAST_NODES)
    cluster.start("services.scheduler", "--leader-elect", "false")
    cluster.start("node_agent.hollow", "--count", "3", "--name-prefix", "keep-")
    victim = cluster.start("node_agent.hollow", "--count", "1", "--name-prefix", "victim-",
                           name="victim")
    await eventually(lambda: _ready_nodes(client, 4), WAIT, what="4 Ready nodes")
    await client.create(deployment("web", 12))
    await eventually(lambda: available(client, "web", 12), WAIT, what="12 available")
    on_victim = [p for p in await live_pods(client, "web") if p.spec.node_name == "victim-1"]
    assert on_victim, "the spread put no pod on the victim"

    killed = time.monotonic()
    victim.kill()
    await eventually(lambda: _node_not_ready(client, "victim-1"), WAIT, what="victim NotReady")
    noticed = time.monotonic() - killed
    await eventually(lambda: _replaced(client, "web", 12, "victim-1"), WAIT,
                     what="12 pods running off the victim")
    print(f"dead node noticed after {noticed:.1f}s; pods replaced after "
          f"{time.monotonic() - killed:.1f}s")


async def test_killing_the_leaders_does_not_stop_progress(cluster, client):
    managers = [cluster.start("services.controllers", "--identity", f"cm-{i}", *FAST_LEADER,
                              *FAST_NODES, name=f"cm-{i}") for i in range(2)]
    schedulers = [cluster.start("services.scheduler", "--identity", f"sched-{i}", *FAST_LEADER,
                                name=f"sched-{i}") for i in range(2)]
    cluster.start("node_agent.hollow", "--count", "3", "--name-prefix", "ha-")
    await eventually(lambda: _ready_nodes(client, 3), WAIT, what="3 Ready nodes")
    await client.create(deployment("web", 3))
    await eventually(lambda: available(client, "web", 3), WAIT, what="3 available")

    for lease, group in (("kube-controller-manager", managers), ("kube-scheduler", schedulers)):
        holder = (await client.get("leases", lease, "kube-system")).spec.holder_identity
        leader = group[int(holder.rsplit("-", 1)[1])]
        leader.kill()

    d = await client.get("deployments", "web", "default")
    d.spec.replicas = 9
    await client.update(d)
    await eventually(lambda: available(client, "web", 9), WAIT, what="9 available after failover")
    for lease in ("kube-controller-manager", "kube-scheduler"):
        holder = (await client.get("leases", lease, "kube-system")).spec.holder_identity
        survivor = managers if lease.startswith("kube-c") else schedulers
        assert survivor[int(holder.rsplit("-", 1)[1])].running, f"{lease} held by a dead process"


async def test_deleting_a_namespace_empties_it(cluster, client):
    cluster.start("services.controllers", "--leader-elect", "false", *FAST_NODES)
    cluster.start("services.scheduler", "--leader-elect", "false")
    cluster.start("node_agent.hollow", "--count", "2", "--name-prefix", "ns-")
    await eventually(lambda: _ready_nodes(client, 2), WAIT, what="2 Ready nodes")
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = "doomed"
    await client.create(ns)
    d = deployment("web", 4)
    d.metadata.namespace = "doomed"
    await client.create(d)
    await eventually(lambda: _count(_pods_in(client, "doomed"), 4), WAIT, what="4 pods in doomed")
    await client.delete("namespaces", "doomed", "")
    await eventually(lambda: _namespace_gone(client, "doomed"), WAIT, what="namespace removed")
    assert not (await client.list("pods", "doomed")).items


# ------------------------------------------------------------------ helpers

async def _ready_nodes(client, n: int) -> bool:
    nodes = (await client.list("nodes")).items
    ready = [x for x in nodes if any(c.type == "Ready" and c.status == "True" for c in x.status.conditions)]
    return len(ready) >= n and all(x.spec.pod_cidr for x in ready)


async def _node_not_ready(client, name: str) -> bool:
    node = await client.get("nodes", name, "")
    return any(c.type == "Ready" and c.status != "True" for c in node.status.conditions)


async def _replaced(client, app: str, want: int, dead: str) -> bool:
    pods = [p for p in await live_pods(client, app) if p.spec.node_name != dead
            and p.status.phase == "Running"]
    return len(pods) >= want


async def _count(pods_coro, want: int) -> bool:
    return len(await pods_coro) == want


async def _pods_in(client, namespace: str):
    return (await client.list("pods", namespace)).items


async def _gone(client, app: str) -> bool:
    rs = (await client.list("replicasets", "default", label_selector=f"app={app}")).items
    pods = (await client.list("pods", "default", label_selector=f"app={app}")).items
    return not rs and not pods


async def _event(client, reason: str):
    for ev in (await client.list("events", "default")).items:
        if ev.reason == reason:
            return ev
    return None


async def _namespace_gone(client, name: str) -> bool:
    try:
        await client.get("namespaces", name, "")
    except NotFoundError:
        return True
    return False
