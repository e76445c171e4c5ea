"""Node lifecycle, node IPAM and endpoints controllers against a real API
server: the test plays the node agents (registers Nodes, renews their Leases,
posts Ready, marks pods Running) and runs the real controller manager with

    python -m services.controllers --controllers nodelifecycle,nodeipam,endpoints
        --leader-elect false --node-monitor-grace-period 2 --pod-eviction-timeout 1

Timing is only bounded by generous wait-until timeouts."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid

import pytest

from kubeling.api.v1 import coordination_pb2, core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ConflictError, NotFoundError, retry_on_conflict
from tests.waiting import eventually as _eventually

TIMEOUT = 30.0
UNREACHABLE = "node.kubernetes.io/unreachable"
CONTROLLER_ARGS = ("--controllers", "nodelifecycle,nodeipam,endpoints", "--leader-elect", "false",
                   "--node-monitor-grace-period", "2", "--pod-eviction-timeout", "1")



async def eventually(check, timeout: float = TIMEOUT, interval: float = 0.1, what: str = ""):
    return await _eventually(check, timeout, interval, what)


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    namespace = core_pb2.Namespace()
    namespace.metadata.name = namespace_name
    await client.create(namespace)
    yield namespace_name
    try:
        await client.delete("namespaces", namespace_name, "")
    except NotFoundError:
        pass


@pytest.fixture
def controllers(components):
    return components("services.controllers", *CONTROLLER_ARGS, name="controller-manager")


class FakeAgents:
    """Plays the node agents of a few Nodes: registers them Ready, renews
    their Leases every 0.3 s while `alive`, and can post Ready again."""

    def __init__(self, client: ApiClient, names: list[str]):
        self.client = client
        self.names = names
        self.alive = set(names)
        self._task: asyncio.Task | None = None

    async def register(self) -> None:
        for name in self.names:
            node = core_pb2.Node(api_version="v1", kind="Node")
            node.metadata.name = name
            node.metadata.labels["kubernetes.io/hostname"] = name
            node.status.capacity.update({"cpu": "4", "memory": "8Gi", "pods": "110"})
            await self.client.create(node)
            await self.post_ready(name)
            await self.renew(name, create=True)
        self._task = asyncio.create_task(self._renew_loop())

    async def post_ready(self, name: str) -> None:
        async def attempt():
            node = await self.client.get("nodes", name, "")
            for c in node.status.conditions:
                if c.type == "Ready":
                    break
            else:
                c = node.status.conditions.add(type="Ready")
            if c.status != "True":
                c.last_transition_time.GetCurrentTime()
            c.status, c.reason, c.message = "True", "KubeletReady", "kubelet is posting ready status"
            c.last_heartbeat_time.GetCurrentTime()
            await self.client.update_status(node)
        await retry_on_conflict(attempt, attempts=10)

    async def renew(self, name: str, create: bool = False) -> None:
        if create:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = name, "kube-node-lease"
            lease.spec.holder_identity = name
            lease.spec.lease_duration_seconds = 2
            lease.spec.renew_time.GetCurrentTime()
            await self.client.create(lease)
            return
        lease = await self.client.get("leases", name, "kube-node-lease")
        lease.spec.renew_time.GetCurrentTime()
        await self.client.update(lease)

    async def _renew_loop(self) -> None:
        while True:
            for name in sorted(self.alive):
                try:
                    await self.renew(name)
                except (ConflictError, NotFoundError):
                    pass
            await asyncio.sleep(0.3)

    async def cleanup(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Nodes are cluster-wide and the API server is shared: leave none behind.
        for name in self.names:
            for resource, namespace in (("nodes", ""), ("leases", "kube-node-lease")):
                try:
                    await self.client.delete(resource, name, namespace)
                except NotFoundError:
                    pass


@pytest.fixture
async def agents(client):
    prefix = f"nc-{uuid.uuid4().hex[:6]}"
    made: list[FakeAgents] = []

    async def start(count: int) -> FakeAgents:
        a = FakeAgents(client, [f"{prefix}-{len(made)}-{i}" for i in range(1, count + 1)])
        made.append(a)
        await a.register()
        return a

    yield start
    for a in made:
        await a.cleanup()


# ------------------------------------------------------------------ helpers


def condition(obj, type_: str):
    return next((c for c in obj.status.conditions if c.type == type_), None)


async def make_pod(client: ApiClient, ns: str, name: str, node: str | None, ip: str, *, ready: bool = True,
                   labels: dict | None = None, ports: dict | None = None, grace: int | None = None,
                   tolerations: list | None = None) -> core_pb2.Pod:
    """Create a pod (bound to `node` if given) and report it Running with `ip`, as its agent would."""
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, ns
    pod.metadata.labels.update(labels or {})
    if node:
        pod.spec.node_name = node
    if grace is not None:
        pod.spec.termination_grace_period_seconds = grace
    c = pod.spec.containers.add(name="main", image="localhost/kubeling/http:1")
    for port_name, number in (ports or {}).items():
        c.ports.add(name=port_name, container_port=number)
    for t in tolerations or []:
        pod.spec.tolerations.add(**t)
    await client.create(pod)
    return await set_pod_status(client, ns, name, ip=ip, ready=ready)


async def set_pod_status(client: ApiClient, ns: str, name: str, *, ip: str, ready: bool):
    async def attempt():
        pod = await client.get("pods", name, ns)
        pod.status.phase = "Running"
        pod.status.pod_ip = ip
        del pod.status.pod_ips[:]
        pod.status.pod_ips.add(ip=ip)
        del pod.status.conditions[:]
        for type_ in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            c = pod.status.conditions.add(type=type_, status="True" if ready or type_ in (
                "PodScheduled", "Initialized") else "False")
            c.last_transition_time.GetCurrentTime()
        return await client.update_status(pod)
    return await retry_on_conflict(attempt, attempts=10)


async def get_or_none(client: ApiClient, resource: str, name: str, ns: str = ""):
    try:
        return await client.get(resource, name, ns)
    except NotFoundError:
        return None


async def events_for(client: ApiClient, ns: str, name: str) -> set[str]:
    return {e.reason for e in (await client.list("events", ns)).items if e.involved_object.name == name}


# -------------------------------------------------------------------- IPAM


async def test_every_node_gets_a_distinct_pod_cidr_from_the_cluster_cidr(client, agents, controllers):
    a = await agents(4)

    async def cidrs():
        nodes = [await client.get("nodes", n, "") for n in a.names]
        got = {n.metadata.name: (n.spec.pod_cidr, list(n.spec.pod_cidrs)) for n in nodes}
        return got if all(cidr for cidr, _ in got.values()) else None

    got = await eventually(cidrs, what="pod CIDRs on every node")
    assert len({cidr for cidr, _ in got.values()}) == len(a.names)
    cluster = ipaddress.ip_network("10.244.0.0/16")
    for cidr, cidrs_list in got.values():
        net = ipaddress.ip_network(cidr)
        assert net.prefixlen == 24 and net.subnet_of(cluster)
        assert cidrs_list == [cidr]

    # Every CIDR in the cluster (ours and any other test's nodes) is distinct too.
    everyone = [n.spec.pod_cidr for n in (await client.list("nodes")).items if n.spec.pod_cidr]
    assert len(everyone) == len(set(everyone))

    # A node that joins later gets one no other node has, also after a restart
    # of the controller manager (which must rebuild what is taken from the Nodes).
    controllers.stop()
    b = await agents(1)
    controllers.start()
    late = await eventually(lambda: _cidr_of(client, b.names[0]), what="late node's CIDR")
    assert late not in {cidr for cidr, _ in got.values()}
    everyone = [n.spec.pod_cidr for n in (await client.list("nodes")).items if n.spec.pod_cidr]
    assert len(everyone) == len(set(everyone))


async def _cidr_of(client: ApiClient, name: str) -> str:
    return (await client.get("nodes", name, "")).spec.pod_cidr


# ---------------------------------------------------------- node lifecycle


async def test_silent_node_goes_unknown_is_tainted_and_its_pods_evicted_then_recovers(
        client, ns, agents, controllers):
    a = await agents(3)
    healthy, dead = a.names[0], a.names[2]
    await make_pod(client, ns, "victim", dead, "10.244.200.2", grace=1)
    await make_pod(client, ns, "slow", dead, "10.244.200.3")  # default 30 s grace
    await make_pod(client, ns, "tolerant", dead, "10.244.200.4",
                   tolerations=[{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}])
    await make_pod(client, ns, "safe", healthy, "10.244.201.2", grace=1)

    # Healthy nodes stay Ready and untainted while their leases are renewed.
    await asyncio.sleep(3)
    node = await client.get("nodes", dead, "")
    assert condition(node, "Ready").status == "True" and not node.spec.taints

    a.alive.discard(dead)

    async def unknown_and_tainted():
        node = await client.get("nodes", dead, "")
        ready = condition(node, "Ready")
        taints = {(t.key, t.effect) for t in node.spec.taints}
        ok = ready.status == "Unknown" and {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")} <= taints
        return node if ok else None

    node = await eventually(unknown_and_tainted, what="dead node Unknown with the unreachable taints")
    ready = condition(node, "Ready")
    assert (ready.reason, ready.message) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    no_execute = next(t for t in node.spec.taints if t.effect == "NoExecute")
    assert no_execute.HasField("time_added")
    assert "NodeNotReady" in await events_for(client, "default", dead)

    # The short-grace pod is evicted, then (the node cannot confirm) force-deleted.
    await eventually(lambda: _gone(client, ns, "victim"), what="victim deleted")
    assert "TaintManagerEviction" in await events_for(client, ns, "victim")
    # The default-grace pod is Terminating (its ReplicaSet would replace it now).
    slow = await eventually(lambda: _terminating(client, ns, "slow"), what="slow terminating")
    assert slow.metadata.deletion_grace_period_seconds == 30
    # A pod tolerating unreachable forever stays, but is no longer Ready (out of Services).
    tolerant = await client.get("pods", "tolerant", ns)
    assert not tolerant.metadata.HasField("deletion_timestamp")
    assert condition(tolerant, "Ready").status == "False"
    # Pods of healthy nodes are untouched.
    safe = await client.get("pods", "safe", ns)
    assert not safe.metadata.HasField("deletion_timestamp")
    assert condition(safe, "Ready").status == "True"
    for other in a.names[:2]:
        n = await client.get("nodes", other, "")
        assert condition(n, "Ready").status == "True" and not n.spec.taints

    # The agent comes back: it renews and posts Ready=True; the taints go.
    a.alive.add(dead)
    await a.post_ready(dead)

    async def recovered():
        node = await client.get("nodes", dead, "")
        return condition(node, "Ready").status == "True" and not node.spec.taints

    await eventually(recovered, what="node Ready and untainted again")
    # And it stays so while the lease is renewed.
    await asyncio.sleep(3)
    assert await recovered()


async def _gone(client: ApiClient, ns: str, name: str) -> bool:
    return await get_or_none(client, "pods", name, ns) is None


async def _terminating(client: ApiClient, ns: str, name: str):
    pod = await get_or_none(client, "pods", name, ns)
    return pod if pod is not None and pod.metadata.HasField("deletion_timestamp") else None


# ----------------------------------------------------------------- endpoints


def service(ns: str, name: str, selector: dict | None, ports: list[tuple[str, int, object]]):
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, ns
    svc.metadata.labels["app.kubernetes.io/name"] = name
    svc.spec.selector.update(selector or {})
    for port_name, port, target in ports:
        sp = svc.spec.ports.add(name=port_name, port=port)
        if isinstance(target, str):
            sp.target_port.string_value = target
        else:
            sp.target_port.number_value = target
    return svc


def shape(ep) -> list:
    """[(ports, ready ips, not-ready ips)] of an Endpoints."""
    if ep is None:
        return None
    return [(sorted((p.name, p.port) for p in s.ports), [a.ip for a in s.addresses],
             [a.ip for a in s.not_ready_addresses]) for s in ep.subsets]


async def test_endpoints_follow_pods_readiness_and_deletion(client, ns, agents, controllers):
    a = await agents(1)
    node = a.names[0]
    await client.create(service(ns, "web", {"app": "web"}, [("http", 80, "http"), ("metrics", 9100, 9100)]))
    await make_pod(client, ns, "web-1", node, "10.244.7.11", labels={"app": "web"}, ports={"http": 8080}, grace=5)
    await make_pod(client, ns, "web-2", node, "10.244.7.12", labels={"app": "web"}, ports={"http": 8080},
                   ready=False, grace=5)
    await make_pod(client, ns, "web-3", node, "10.244.7.13", labels={"app": "web"}, ports={"web": 8081}, grace=5)
    await make_pod(client, ns, "db-1", node, "10.244.7.20", labels={"app": "db"}, ports={"http": 8080}, grace=5)

    async def endpoints_are(expected):
        seen = []

        async def check():
            seen.append(shape(await get_or_none(client, "endpoints", "web", ns)))
            return seen[-1] == expected
        try:
            await eventually(check, what=f"endpoints == {expected}")
        except pytest.fail.Exception:
            assert seen[-1] == expected  # shows the difference
            raise

    # web-3 lacks the "http" port: it is an endpoint of "metrics" (numeric) only,
    # so the two ports have different addresses and get a subset each.
    await endpoints_are([
        ([("http", 8080)], ["10.244.7.11"], ["10.244.7.12"]),
        ([("metrics", 9100)], ["10.244.7.11", "10.244.7.13"], ["10.244.7.12"]),
    ])
    ep = await client.get("endpoints", "web", ns)
    assert dict(ep.metadata.labels) == {"app.kubernetes.io/name": "web"}
    address = ep.subsets[0].addresses[0]
    assert (address.target_ref.kind, address.target_ref.name, address.target_ref.namespace) == ("Pod", "web-1", ns)
    assert address.node_name == node

    # Nothing changes: nothing is written.
    version = ep.metadata.resource_version
    await asyncio.sleep(2)
    assert (await client.get("endpoints", "web", ns)).metadata.resource_version == version

    # web-2 becomes ready.
    await set_pod_status(client, ns, "web-2", ip="10.244.7.12", ready=True)
    await endpoints_are([
        ([("http", 8080)], ["10.244.7.11", "10.244.7.12"], []),
        ([("metrics", 9100)], ["10.244.7.11", "10.244.7.12", "10.244.7.13"], []),
    ])
    # web-1 stops being ready.
    await set_pod_status(client, ns, "web-1", ip="10.244.7.11", ready=False)
    await endpoints_are([
        ([("http", 8080)], ["10.244.7.12"], ["10.244.7.11"]),
        ([("metrics", 9100)], ["10.244.7.12", "10.244.7.13"], ["10.244.7.11"]),
    ])
    # web-2 is deleted: while it terminates (its node has yet to confirm) it is out already.
    deleted = await client.delete("pods", "web-2", ns)
    assert deleted.pending
    await endpoints_are([
        ([("http", 8080)], [], ["10.244.7.11"]),
        ([("metrics", 9100)], ["10.244.7.13"], ["10.244.7.11"]),
    ])
    # A pod's labels change so the selector no longer matches it: both ports
    # now have the same addresses and share one subset.
    async def relabel():
        pod = await client.get("pods", "web-3", ns)
        pod.metadata.labels["app"] = "other"
        await client.update(pod)
    await retry_on_conflict(relabel)
    await endpoints_are([([("http", 8080), ("metrics", 9100)], [], ["10.244.7.11"])])

    # The Service goes: so do its Endpoints.
    await client.delete("services", "web", ns)
    await eventually(lambda: _endpoints_gone(client, ns, "web"), what="endpoints deleted")


async def _endpoints_gone(client: ApiClient, ns: str, name: str) -> bool:
    return await get_or_none(client, "endpoints", name, ns) is None


async def test_endpoints_of_a_service_without_selector_are_left_to_the_user(client, ns, controllers):
    await client.create(service(ns, "external", None, [("", 5432, 5432)]))
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = "external", ns
    subset = ep.subsets.add()
    subset.addresses.add(ip="192.0.2.10")
    subset.ports.add(port=5432)
    await client.create(ep)
    # A selector Service next to it, so we know the controller is running.
    await client.create(service(ns, "probe", {"app": "none"}, [("", 80, 80)]))
    await eventually(lambda: get_or_none(client, "endpoints", "probe", ns), what="probe endpoints")
    await asyncio.sleep(1)
    got = await client.get("endpoints", "external", ns)
    assert shape(got) == [([("", 5432)], ["192.0.2.10"], [])]
