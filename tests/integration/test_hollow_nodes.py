"""Hollow nodes against a real API server: a process of 5 simulated nodes
registers them Ready, renews their Leases, runs pods bound to them with IPs
from their pod CIDRs, confirms pod deletion, and stops renewing when
killed. No IPAM controller runs here: the tests assign pod CIDRs."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import uuid

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import NotFoundError, retry_on_conflict
from kubeling.objects import from_dict
from tests.waiting import eventually as _eventually

COUNT = 5
TIMEOUT = 30.0



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
    return namespace_name


@pytest.fixture
def prefix() -> str:
    """Nodes are cluster-wide and the API server is shared: names of our own."""
    return f"hollow-{uuid.uuid4().hex[:6]}-"


@pytest.fixture
def hollow(components, prefix):
    proc = components("node_agent.hollow", "--count", str(COUNT), "--name-prefix", prefix,
                      "--renew-interval", "0.5", "--lease-duration", "10", "--status-interval", "2",
                      name="hollow")
    return proc


def names(prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, COUNT + 1)]


async def ready_nodes(client: ApiClient, prefix: str) -> dict:
    nodes = {n.metadata.name: n for n in (await client.list("nodes")).items
             if n.metadata.name.startswith(prefix)}
    ready = {name: n for name, n in nodes.items()
             if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)}
    return ready if len(ready) == COUNT else {}


async def set_pod_cidr(client: ApiClient, node: str, cidr: str) -> None:
    async def attempt():
        obj = await client.get("nodes", node, "")
        obj.spec.pod_cidr = cidr
        del obj.spec.pod_cidrs[:]
        obj.spec.pod_cidrs.append(cidr)
        await client.update(obj)
    await retry_on_conflict(attempt, attempts=20)


def bound_pod(name: str, ns: str, node: str, containers=("app",)):
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns},
                      "spec": {"nodeName": node,
                               "containers": [{"name": c, "image": "localhost/kubeling/http:1"}
                                              for c in containers]}})


def running_and_ready(pod) -> bool:
    st = pod.status
    conditions = {c.type: c.status for c in st.conditions}
    return (st.phase == "Running" and bool(st.pod_ip)
            and all(conditions.get(t) == "True" for t in ("PodScheduled", "Initialized",
                                                          "ContainersReady", "Ready")))


async def renew_times(client: ApiClient, prefix: str) -> dict[str, float]:
    out = {}
    for name in names(prefix):
        try:
            lease = await client.get("leases", name, "kube-node-lease")
        except NotFoundError:
            continue
        out[name] = lease.spec.renew_time.seconds + lease.spec.renew_time.nanos / 1e9
    return out


# --------------------------------------------------------------------- tests


async def test_nodes_register_ready_and_renew_their_leases(client, prefix, hollow):
    nodes = await eventually(lambda: ready_nodes(client, prefix), what="5 Ready hollow nodes")
    addresses = set()
    for name, node in nodes.items():
        assert node.metadata.labels["kubernetes.io/hostname"] == name
        assert node.metadata.labels["kubernetes.io/os"] == "linux"
        assert node.status.capacity["cpu"] == "4" and node.status.allocatable["pods"] == "110"
        internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert len(internal) == 1
        assert ipaddress.ip_address(internal[0]) in ipaddress.ip_network("198.18.0.0/15")
        addresses.add(internal[0])
    assert len(addresses) == COUNT

    first = await eventually(lambda: _all_leases(client, prefix), what="a Lease per node")
    for name in names(prefix):
        lease = await client.get("leases", name, "kube-node-lease")
        assert lease.spec.holder_identity == name and lease.spec.lease_duration_seconds == 10

    async def all_renewed():
        now = await renew_times(client, prefix)
        return all(now[n] > first[n] for n in first)
    await eventually(all_renewed, what="every Lease to be renewed")
    assert hollow.running, hollow.log_tail()


async def _all_leases(client, prefix):
    times = await renew_times(client, prefix)
    return times if len(times) == COUNT else None


async def test_bound_pod_runs_with_an_ip_from_its_nodes_pod_cidr(client, ns, prefix, hollow):
    await eventually(lambda: ready_nodes(client, prefix), what="5 Ready hollow nodes")
    node_name = f"{prefix}2"
    await client.create(bound_pod("web", ns, node_name, containers=("app", "sidecar")))

    # No pod CIDR yet: the node waits rather than invent an address.
    await asyncio.sleep(1.0)
    pod = await client.get("pods", "web", ns)
    assert not pod.status.pod_ip and pod.status.phase != "Running"

    cidr = "10.250.2.0/24"
    await set_pod_cidr(client, node_name, cidr)

    async def running():
        p = await client.get("pods", "web", ns)
        return p if running_and_ready(p) else None
    pod = await eventually(running, what="the pod to be Running and Ready")
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(cidr)
    assert [ip.ip for ip in pod.status.pod_ips] == [pod.status.pod_ip]
    node = await client.get("nodes", node_name, "")
    assert pod.status.host_ip == next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert pod.status.HasField("start_time")
    statuses = {c.name: c for c in pod.status.container_statuses}
    assert set(statuses) == {"app", "sidecar"}
    for c in statuses.values():
        assert c.ready and c.restart_count == 0 and c.state.HasField("running")

    # A second pod on the same node gets a different address from the same range.
    await client.create(bound_pod("api", ns, node_name))

    async def second():
        p = await client.get("pods", "api", ns)
        return p if running_and_ready(p) else None
    other = await eventually(second, what="the second pod to run")
    assert ipaddress.ip_address(other.status.pod_ip) in ipaddress.ip_network(cidr)
    assert other.status.pod_ip != pod.status.pod_ip


async def test_deleting_a_bound_pod_completes(client, ns, prefix, hollow):
    await eventually(lambda: ready_nodes(client, prefix), what="5 Ready hollow nodes")
    node_name = f"{prefix}3"
    await set_pod_cidr(client, node_name, "10.250.3.0/24")
    await client.create(bound_pod("web", ns, node_name))

    async def running():
        return running_and_ready(await client.get("pods", "web", ns))
    await eventually(running, what="the pod to run")

    deleted, pending = await client.delete("pods", "web", ns)
    assert pending  # bound: graceful, until its node confirms

    async def gone():
        try:
            await client.get("pods", "web", ns)
        except NotFoundError:
            return True
        return False
    await eventually(gone, what="the node to confirm the pod's termination")


async def test_killing_the_process_stops_lease_renewal(client, prefix, hollow):
    await eventually(lambda: ready_nodes(client, prefix), what="5 Ready hollow nodes")
    first = await eventually(lambda: _all_leases(client, prefix), what="a Lease per node")

    async def all_renewed():
        now = await renew_times(client, prefix)
        return now if all(now[n] > first[n] for n in first) else None
    await eventually(all_renewed, what="every Lease to be renewed")

    hollow.stop()  # SIGTERM
    assert hollow.proc.returncode == 0, hollow.log_tail()
    stopped = await renew_times(client, prefix)
    await asyncio.sleep(2.0)  # four renew intervals
    assert await renew_times(client, prefix) == stopped
