"""The node agent end to end: a real API server (with etcd), a real runtime
service (runc, conmon), a real network service, and the node agent process
(`python -m node_agent.kubelet`), all on one `LocalNode` (tests/e2e/conftest.py).

Pods are created with spec.nodeName set, so no scheduler is needed; what is
asserted is what a user sees through the API (status, events) and what is
really on the node (containers, files, addresses). Each test works in a
namespace of its own; its finalizer force-deletes the namespace's pods and
checks that the node agent removed their sandboxes, containers and pod
directories. The module's node checks that nothing at all is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import NotFoundError
from kubeling.cri.v1 import api_pb2 as cri
from kubeling.objects import from_dict

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (shutil.which("runc") and shutil.which("conmon")), reason="needs runc and conmon"),
]

SHELL = "localhost/kubeling/shell:1"
HTTP = "localhost/kubeling/http:1"
# Short backoffs and resyncs keep the suite quick; the schedule itself is unit-tested.
KUBELET_FLAGS = ("--crashloop-backoff-initial", "2", "--crashloop-backoff-max", "20",
                 "--sync-frequency", "2", "--system-reserved", "cpu=100m,memory=256Mi",
                 "--node-labels", "kubeling.test/role=kubelet-e2e")


# -- helpers ------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable], timeout: float = 30, interval: float = 0.2,
                     what: str = "condition"):
    """Call `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except (NotFoundError, AssertionError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def pod_manifest(name: str, containers: list[dict], node: str, **spec) -> core_pb2.Pod:
    spec = {"nodeName": node, "containers": containers, "terminationGracePeriodSeconds": 2, **spec}
    return from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def shell(name: str, script: str, **extra) -> dict:
    return {"name": name, "image": SHELL, "command": ["sh", "-c", script], **extra}


def condition(pod, type_: str) -> str:
    return next((c.status for c in pod.status.conditions if c.type == type_), "")


def cstatus(pod, name: str):
    return next((c for c in pod.status.container_statuses if c.name == name), None)


class Env:
    """A test's namespace on the node, with an API client."""

    def __init__(self, client: ApiClient, node, namespace: str):
        self.client = client
        self.node = node
        self.ns = namespace

    async def create(self, obj):
        obj.metadata.namespace = self.ns
        return await self.client.create(obj)

    async def run(self, name: str, containers: list[dict], **spec) -> core_pb2.Pod:
        pod = pod_manifest(name, containers, self.node.name, **spec)
        return await self.create(pod)

    async def get(self, name: str):
        return await self.client.get("pods", name, self.ns)

    async def wait(self, name: str, predicate, timeout: float = 30, what: str = ""):
        async def check():
            pod = await self.get(name)
            return pod if predicate(pod) else None
        return await eventually(check, timeout, what=what or f"pod {name}")

    async def running(self, name: str, timeout: float = 30):
        return await self.wait(name, lambda p: p.status.phase == "Running" and all(
            c.state.HasField("running") for c in p.status.container_statuses) and
            len(p.status.container_statuses) == len(p.spec.containers), timeout, f"pod {name} running")

    async def events(self, name: str) -> list[tuple[str, str]]:
        evs = await self.client.list("events", self.ns)
        return [(e.reason, e.message) for e in evs.items if e.involved_object.name == name]

    def container_id(self, pod, name: str) -> str:
        return cstatus(pod, name).container_id.split("://", 1)[1]

    def volume_dir(self, pod, volume: str) -> Path:
        return self.node.kubelet_state / "pods" / pod.metadata.uid / "volumes" / volume


@pytest.fixture
async def env(local_node):
    namespace = f"kt-{uuid.uuid4().hex[:8]}"
    async with ApiClient(local_node.api_address) as client:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = namespace
        await client.create(ns)
        try:
            yield Env(client, local_node, namespace)
        finally:
            pods = await client.list("pods", namespace)
            uids = [p.metadata.uid for p in pods.items]
            for p in pods.items:
                try:
                    await client.delete("pods", p.metadata.name, namespace, grace_period_seconds=0)
                except NotFoundError:
                    pass
            problems = []
            deadline = time.monotonic() + 30
            while True:
                left = local_node.sandboxes(**{"io.kubernetes.pod.namespace": namespace}) + \
                    local_node.containers(**{"io.kubernetes.pod.namespace": namespace})
                dirs = [u for u in uids if (local_node.kubelet_state / "pods" / u).exists()]
                if not left and not dirs:
                    break
                if time.monotonic() > deadline:
                    problems = [f"sandbox/container {x.id[:12]}" for x in left] + [f"pod dir {d}" for d in dirs]
                    for x in left:
                        if isinstance(x, cri.PodSandbox):
                            local_node.cri.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=x.id))
                        else:
                            local_node.cri.RemoveContainer(cri.RemoveContainerRequest(container_id=x.id))
                    break
                await asyncio.sleep(0.2)
            try:
                await client.delete("namespaces", namespace, "")
            except NotFoundError:
                pass
            if problems:
                pytest.fail("the node agent did not clean up: " + "; ".join(problems) +
                            "\n--- kubelet log ---\n" + local_node.kubelet.log_tail(), pytrace=False)


# -- the node ----------------------------------------------------------------------------


async def test_node_is_registered_ready_with_capacity_and_a_renewed_lease(env):
    node = await env.client.get("nodes", env.node.name, "")
    labels = dict(node.metadata.labels)
    assert labels["kubernetes.io/hostname"] == env.node.name
    assert labels["kubeling.test/role"] == "kubelet-e2e"
    assert labels["kubernetes.io/os"] == "linux"
    cap, alloc = node.status.capacity, node.status.allocatable
    assert int(cap["cpu"]) == os.cpu_count()
    assert cap["pods"] == "110"
    from kubeling.quantity import parse_quantity
    assert parse_quantity(cap["cpu"]).milli_value() - parse_quantity(alloc["cpu"]).milli_value() == 100
    assert parse_quantity(cap["memory"]).value() - parse_quantity(alloc["memory"]).value() == 256 << 20
    assert {(a.type, a.address) for a in node.status.addresses} == {
        ("InternalIP", env.node.ip), ("Hostname", env.node.name)}
    assert node.status.daemon_endpoints.kubelet_endpoint.port > 0
    assert node.status.node_info.container_runtime_version.startswith("kubeling://")

    async def ready():
        n = await env.client.get("nodes", env.node.name, "")
        return next((c for c in n.status.conditions if c.type == "Ready" and c.status == "True"), None)
    await eventually(ready, 20, what="node Ready")

    first = await env.client.get("leases", env.node.name, "kube-node-lease")
    assert first.spec.holder_identity == env.node.name
    assert first.metadata.owner_references[0].name == env.node.name

    async def renewed():
        lease = await env.client.get("leases", env.node.name, "kube-node-lease")
        return lease.spec.renew_time.ToNanoseconds() > first.spec.renew_time.ToNanoseconds()
    await eventually(renewed, 5, what="a lease renewal")


# -- pods ---------------------------------------------------------------------------------


async def test_two_containers_share_localhost_and_an_empty_dir(env):
    containers = [
        {"name": "web", "image": HTTP, "volumeMounts": [{"name": "shared", "mountPath": "/www/shared"}]},
        shell("client", "echo from-client > /shared/note; "
                        "until wget -qO /shared/page http://127.0.0.1:8080/; do sleep 0.2; done; "
                        "exec sleep 3600",
              volumeMounts=[{"name": "shared", "mountPath": "/shared"}]),
    ]
    created = await env.run("pair", containers, volumes=[{"name": "shared", "emptyDir": {}}])
    pod = await env.running("pair")
    # The client fetched the web container's page over the pod's loopback.
    page = env.volume_dir(pod, "shared") / "page"
    await eventually(lambda: asyncio.sleep(0, page.exists() and page.read_text().strip() == "pair"),
                     20, what="the client's copy of the page")
    # ...and the web container serves what the client wrote into the shared emptyDir.
    web = env.container_id(pod, "web")
    r = env.node.exec(web, "wget", "-qO-", "http://127.0.0.1:8080/shared/note")
    assert r.stdout.decode().strip() == "from-client"

    pod = await env.wait("pair", lambda p: condition(p, "Ready") == "True", what="Ready")
    st = pod.status
    assert ipaddress.ip_address(st.pod_ip) in ipaddress.ip_network(env.node.pod_cidr)
    assert [i.ip for i in st.pod_ips] == [st.pod_ip]
    assert st.host_ip == env.node.ip
    assert st.HasField("start_time")
    assert {c.type: c.status for c in st.conditions} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    for cs in st.container_statuses:
        assert cs.ready and cs.started and cs.restart_count == 0
        assert cs.container_id.startswith("kubeling://") and cs.image_id
        assert cs.state.running.HasField("started_at")
    # The sandbox carries the pod's identity for restarts and other tools.
    sandboxes = env.node.sandboxes(**{"io.kubernetes.pod.uid": created.metadata.uid})
    assert len(sandboxes) == 1 and sandboxes[0].state == cri.SANDBOX_READY
    reasons = [r for r, _ in await env.events("pair")]
    for reason in ("Pulled", "Created", "Started"):
        assert reason in reasons
