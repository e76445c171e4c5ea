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
        seen = []

        async def check():
            pod = await self.get(name)
            seen[:] = [pod]
            return pod if predicate(pod) else None
        try:
            return await eventually(check, timeout, what=what or f"pod {name}")
        except AssertionError as e:
            status = seen[0].status if seen else None
            raise AssertionError(f"{e}\npod status: {status}\nevents: {await self.events(name)}") from None

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


async def test_env_and_volumes_from_config_maps_and_secrets(env):
    cm = from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                    "data": {"COLOR": "blue", "size": "10"}})
    secret = from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                        "stringData": {"password": "s3cret", "token": "t0k", "1bad": "skipped"}})
    await env.create(cm)
    await env.create(secret)
    script = "env | sort > /out/env; exec sleep 3600"
    container = shell("app", script, env=[
        {"name": "GREETING", "value": "hello $(CM_COLOR) world $$(CM_COLOR) $(UNDEFINED)"},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "size"}}},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MISSING_OK", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope",
                                                                  "optional": True}}},
    ], envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}, {"secretRef": {"name": "creds"}}],
        volumeMounts=[{"name": "out", "mountPath": "/out"}, {"name": "cfg", "mountPath": "/etc/cfg"},
                      {"name": "sec", "mountPath": "/etc/sec"}])
    await env.run("envy", [container], volumes=[
        {"name": "out", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "settings", "items": [{"key": "COLOR", "path": "sub/color"}]}},
        {"name": "sec", "secret": {"secretName": "creds"}}])
    pod = await env.running("envy")
    env_file = env.volume_dir(pod, "out") / "env"
    text = await eventually(lambda: asyncio.sleep(0, env_file.exists() and env_file.read_text()), 15,
                            what="the container's environment")
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert values["GREETING"] == "hello blue world $(CM_COLOR) $(UNDEFINED)"
    assert values["FROM_CM"] == "10"
    assert values["FROM_SECRET"] == "s3cret"
    assert (values["POD_NAME"], values["POD_NS"], values["NODE"]) == ("envy", env.ns, env.node.name)
    assert values["POD_IP"] == pod.status.pod_ip
    assert (values["CM_COLOR"], values["CM_size"], values["password"], values["token"]) == \
        ("blue", "10", "s3cret", "t0k")
    assert "MISSING_OK" not in values and "1bad" not in values

    # Volumes: keys as files (items at their paths), secrets 0400, read-only.
    cid = env.container_id(pod, "app")
    assert env.node.exec(cid, "cat", "/etc/cfg/sub/color").stdout == b"blue"
    assert env.node.exec(cid, "cat", "/etc/sec/password").stdout == b"s3cret"
    mode = env.node.exec(cid, "stat", "-L", "-c", "%a", "/etc/sec/token").stdout.decode().strip()
    assert mode == "400"
    assert env.node.exec(cid, "sh", "-c", "echo x > /etc/sec/new").exit_code != 0
    sec_dir = env.volume_dir(pod, "sec")
    assert os.path.ismount(sec_dir)  # a tmpfs: secrets never reach the node's disk
    assert stat.S_IMODE(os.stat(sec_dir.parents[2]).st_mode) == 0o700  # the pod's directory

    # An update of the ConfigMap reaches the running container's files.
    cm = await env.client.get("configmaps", "settings", env.ns)
    cm.data["COLOR"] = "green"
    await env.client.update(cm)

    async def updated():
        return env.node.exec(cid, "cat", "/etc/cfg/sub/color").stdout == b"green"
    await eventually(updated, 15, what="the configMap volume to follow the update")


async def test_a_missing_key_is_a_config_error_until_it_exists(env):
    await env.create(from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "partial"},
                                "data": {"present": "1"}}))
    container = shell("app", "exec sleep 3600", env=[
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "partial", "key": "absent"}}}])
    await env.run("keyless", [container])
    pod = await env.wait("keyless", lambda p: cstatus(p, "app") is not None and
                         cstatus(p, "app").state.waiting.reason == "CreateContainerConfigError",
                         what="CreateContainerConfigError")
    assert "absent" in cstatus(pod, "app").state.waiting.message
    assert pod.status.phase == "Pending"
    assert any(r == "Failed" and "absent" in m for r, m in await env.events("keyless"))
    cm = await env.client.get("configmaps", "partial", env.ns)
    cm.data["absent"] = "now-here"
    await env.client.update(cm)
    await env.running("keyless", 20)


# -- probes -------------------------------------------------------------------------------


async def test_a_failing_liveness_probe_restarts_the_container_once_per_failure(env):
    # The first run turns unhealthy after 2 s; its replacement stays healthy.
    script = ("touch /tmp/healthy; if [ ! -f /state/ran ]; then touch /state/ran; sleep 2; rm /tmp/healthy; fi; "
              "exec sleep 3600")
    container = shell("app", script, volumeMounts=[{"name": "state", "mountPath": "/state"}],
                      livenessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}, "initialDelaySeconds": 1,
                                     "periodSeconds": 1, "failureThreshold": 2})
    await env.run("lively", [container], volumes=[{"name": "state", "emptyDir": {}}],
                  terminationGracePeriodSeconds=1)
    first = await env.running("lively")
    first_id = env.container_id(first, "app")
    pod = await env.wait("lively", lambda p: cstatus(p, "app").restart_count == 1 and
                         cstatus(p, "app").state.HasField("running"), 30, "one restart")
    cs = cstatus(pod, "app")
    assert env.container_id(pod, "app") != first_id
    assert cs.last_state.terminated.exit_code == 137, cs  # SIGKILL after the grace period (sleep ignores TERM)
    assert cs.last_state.terminated.container_id.endswith(first_id), cs
    # The healthy replacement is left alone.
    await asyncio.sleep(4)
    pod = await env.get("lively")
    cs = cstatus(pod, "app")
    assert cs.restart_count == 1 and cs.state.HasField("running"), (cs, await env.events("lively"))
    events = await env.events("lively")
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed") for r, m in events)
    assert any(r == "Killing" and "failed liveness probe, will be restarted" in m for r, m in events)


async def test_a_readiness_probe_toggles_the_pods_ready_condition(env):
    container = {"name": "web", "image": HTTP,
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1,
                                    "failureThreshold": 1},
                 "ports": [{"name": "http", "containerPort": 8080}]}
    await env.run("ready", [container])
    pod = await env.running("ready")
    await asyncio.sleep(2)
    pod = await env.get("ready")
    assert condition(pod, "Ready") == "False" and not cstatus(pod, "web").ready
    reason = next(c for c in pod.status.conditions if c.type == "Ready").reason
    assert reason == "ContainersNotReady"
    cid = env.container_id(pod, "web")
    env.node.exec(cid, "touch", "/www/ready")
    pod = await env.wait("ready", lambda p: condition(p, "Ready") == "True", 10, "Ready")
    assert cstatus(pod, "web").ready and condition(pod, "ContainersReady") == "True"
    env.node.exec(cid, "rm", "/www/ready")
    await env.wait("ready", lambda p: condition(p, "Ready") == "False", 10, "not Ready again")
    pod = await env.get("ready")
    assert cstatus(pod, "web").restart_count == 0  # readiness never restarts
    assert any(r == "Unhealthy" and "Readiness probe failed: HTTP probe failed with statuscode: 404" in m
               for r, m in await env.events("ready"))


async def test_a_startup_probe_holds_liveness_until_it_passes(env):
    # Liveness would fail at once, but only runs after startup passes (when /tmp/up exists).
    container = shell("app", "sleep 3; touch /tmp/up; exec sleep 3600",
                      startupProbe={"exec": {"command": ["cat", "/tmp/up"]}, "periodSeconds": 1,
                                    "failureThreshold": 30},
                      livenessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1})
    await env.run("slow", [container], terminationGracePeriodSeconds=1)
    pod = await env.running("slow")
    assert not cstatus(pod, "app").started
    await asyncio.sleep(2)
    pod = await env.get("slow")
    assert cstatus(pod, "app").restart_count == 0 and not cstatus(pod, "app").started
    # Once started, the (closed-port) liveness probe kills it.
    pod = await env.wait("slow", lambda p: cstatus(p, "app").restart_count >= 1, 20, "a liveness restart")
    events = await env.events("slow")
    assert any(r == "Unhealthy" and "Liveness probe failed: dial tcp" in m and "refused" in m
               for r, m in events), events


# -- restarts ------------------------------------------------------------------------------


async def test_crash_loop_back_off_delays_grow(env):
    await env.run("crashy", [shell("app", "echo crashing; exit 1")])
    starts: dict[int, float] = {}  # restart count -> when it was first seen
    reasons = set()
    deadline = time.monotonic() + 40
    while not {1, 2, 3, 4} <= set(starts) and time.monotonic() < deadline:
        pod = await env.get("crashy")
        cs = cstatus(pod, "app")
        if cs is not None and cs.container_id:
            starts.setdefault(cs.restart_count, time.monotonic())
            if cs.state.HasField("waiting"):
                reasons.add(cs.state.waiting.reason)
                if cs.state.waiting.reason == "CrashLoopBackOff":
                    assert "back-off" in cs.state.waiting.message
                    assert cs.last_state.terminated.exit_code == 1
        await asyncio.sleep(0.1)
    assert {1, 2, 3, 4} <= set(starts), f"restarts seen: {sorted(starts)}"
    gaps = [starts[i + 1] - starts[i] for i in (1, 2, 3)]
    # Backoff 2 s doubling (this node's flags): the wait before each restart grows.
    assert gaps[0] >= 1.5 and gaps[1] > gaps[0] + 1 and gaps[2] > gaps[1] + 2, gaps
    assert "CrashLoopBackOff" in reasons
    pod = await env.get("crashy")
    assert pod.status.phase == "Running"  # restartPolicy Always: restarting, not failed
    assert any(r == "BackOff" and "Back-off restarting failed container app" in m
               for r, m in await env.events("crashy"))
    # Only the newest and the previous container are kept (for logs --previous).
    assert len(env.node.containers(**{"io.kubernetes.pod.uid": pod.metadata.uid})) <= 2


@pytest.mark.parametrize("policy, script, phase, restarts, exit_code", [
    ("Never", "exit 0", "Succeeded", 0, 0),
    ("Never", "exit 3", "Failed", 0, 3),
    ("OnFailure", "if [ -f /state/ran ]; then exit 0; fi; touch /state/ran; exit 7", "Succeeded", 1, 0),
], ids=["never-succeeds", "never-fails", "on-failure-retries-then-succeeds"])
async def test_restart_policy_decides_the_phase(env, policy, script, phase, restarts, exit_code):
    await env.run("once", [shell("app", script, volumeMounts=[{"name": "state", "mountPath": "/state"}])],
                  restartPolicy=policy, volumes=[{"name": "state", "emptyDir": {}}])
    pod = await env.wait("once", lambda p: p.status.phase in ("Succeeded", "Failed"), 30, "a final phase")
    assert pod.status.phase == phase
    cs = cstatus(pod, "app")
    assert cs.restart_count == restarts
    assert cs.state.terminated.exit_code == exit_code
    assert cs.state.terminated.reason == ("Completed" if exit_code == 0 else "Error")
    if restarts:
        assert cs.last_state.terminated.exit_code == 7
    assert condition(pod, "Ready") == "False"
    # A finished pod's sandbox is stopped (its network released); its containers stay for logs.
    await eventually(lambda: asyncio.sleep(0, all(
        s.state == cri.SANDBOX_NOTREADY for s in env.node.sandboxes(**{"io.kubernetes.pod.uid": pod.metadata.uid}))),
        10, what="the sandbox stopped")
    assert env.node.containers(**{"io.kubernetes.pod.uid": pod.metadata.uid})
    await asyncio.sleep(1.5)
    assert (await env.get("once")).status.phase == phase  # and it stays so



async def test_a_new_image_restarts_the_container_with_it(env):
    await env.run("upgrade", [shell("app", "exec sleep 3600")])
    pod = await env.running("upgrade")
    old_id = env.container_id(pod, "app")
    pod.spec.containers[0].image = HTTP
    await env.client.update(pod)
    pod = await env.wait("upgrade", lambda p: cstatus(p, "app").state.HasField("running") and
                         env.container_id(p, "app") != old_id, 20, "the container on its new image")
    cs = cstatus(pod, "app")
    assert cs.image == HTTP and cs.restart_count == 1
    assert any(r == "Killing" and "definition changed" in m for r, m in await env.events("upgrade"))


async def test_a_pod_past_its_active_deadline_fails(env):
    await env.run("deadline", [shell("app", "exec sleep 3600")], activeDeadlineSeconds=3)
    await env.running("deadline")
    pod = await env.wait("deadline", lambda p: p.status.phase == "Failed", 15, "Failed")
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    assert cstatus(pod, "app").state.HasField("terminated")

# -- termination ---------------------------------------------------------------------------


async def test_graceful_termination_is_honoured_and_enforced(env, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    polite = shell("app", "trap 'echo got-term > /host/polite; exit 0' TERM; while true; do sleep 0.1; done",
                   volumeMounts=[{"name": "host", "mountPath": "/host"}])
    stubborn = shell("app", "trap 'echo ignored-term > /host/stubborn' TERM; while true; do sleep 0.1; done",
                     volumeMounts=[{"name": "host", "mountPath": "/host"}])
    volumes = [{"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}}]
    await env.run("polite", [polite], volumes=volumes, terminationGracePeriodSeconds=30)
    await env.run("stubborn", [stubborn], volumes=volumes, terminationGracePeriodSeconds=3)
    polite_pod = await env.running("polite")
    stubborn_pod = await env.running("stubborn")
    await asyncio.sleep(0.5)

    async def gone(name):
        try:
            await env.get(name)
            return False
        except NotFoundError:
            return True

    started = time.monotonic()
    await env.client.delete("pods", "polite", env.ns)
    await env.client.delete("pods", "stubborn", env.ns)
    terminating = await env.get("stubborn")
    assert terminating.metadata.HasField("deletion_timestamp")
    await eventually(lambda: gone("polite"), 10, what="the polite pod to go")
    polite_time = time.monotonic() - started
    await eventually(lambda: gone("stubborn"), 20, what="the stubborn pod to go")
    stubborn_time = time.monotonic() - started
    assert (host_dir / "polite").read_text().strip() == "got-term"
    assert (host_dir / "stubborn").read_text().strip() == "ignored-term"  # it did get SIGTERM first
    assert polite_time < 5, polite_time          # exited on SIGTERM, well within its 30 s
    assert 3 <= stubborn_time < 12, stubborn_time  # SIGKILLed after its 3 s
    for pod in (polite_pod, stubborn_pod):
        uid = pod.metadata.uid
        assert not env.node.sandboxes(**{"io.kubernetes.pod.uid": uid})
        assert not env.node.containers(**{"io.kubernetes.pod.uid": uid})
        assert not (env.node.kubelet_state / "pods" / uid).exists()


async def test_a_pod_removed_from_the_api_server_is_cleaned_up_as_an_orphan(env):
    await env.run("orphan", [shell("app", "exec sleep 3600")])
    pod = await env.running("orphan")
    uid = pod.metadata.uid
    await env.client.delete("pods", "orphan", env.ns, grace_period_seconds=0)  # gone at once
    await eventually(lambda: asyncio.sleep(0, not env.node.sandboxes(**{"io.kubernetes.pod.uid": uid})
                                           and not env.node.containers(**{"io.kubernetes.pod.uid": uid})),
                     15, what="the orphan's sandbox and containers to go")


# -- restart safety -------------------------------------------------------------------------


async def test_the_node_agent_restarts_without_restarting_any_container(env):
    containers = [
        {"name": "web", "image": HTTP, "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                                          "periodSeconds": 1}},
        shell("side", "exec sleep 3600"),
    ]
    await env.run("steady", containers)
    await env.run("crashy", [shell("app", "exit 1")])
    before = await env.wait("steady", lambda p: condition(p, "Ready") == "True", 20, "Ready")
    ids = {c.name: c.container_id for c in before.status.container_statuses}
    crashy = await env.wait("crashy", lambda p: cstatus(p, "app") is not None and
                            cstatus(p, "app").restart_count >= 1, 20, "a restart")

    env.node.kill_kubelet()
    await asyncio.sleep(1)
    env.node.start_kubelet()
    await asyncio.sleep(4)

    after = await env.get("steady")
    assert {c.name: c.container_id for c in after.status.container_statuses} == ids
    assert all(c.restart_count == 0 for c in after.status.container_statuses)
    assert condition(after, "Ready") == "True"
    uid = before.metadata.uid
    assert len(env.node.sandboxes(**{"io.kubernetes.pod.uid": uid})) == 1
    # The crash-looping pod goes on counting where it was.
    crashy_after = await env.get("crashy")
    assert cstatus(crashy_after, "app").restart_count >= cstatus(crashy, "app").restart_count
    # The agent still serves: a new pod runs.
    await env.run("fresh", [shell("app", "exec sleep 3600")])
    await env.running("fresh")


# -- bad input -----------------------------------------------------------------------------


async def test_bad_images_commands_and_volumes_show_why_in_status_and_events(env):
    await env.run("noimage", [{"name": "app", "image": "127.0.0.1:1/kubeling/nope:1"}])
    await env.run("nocmd", [{"name": "app", "image": SHELL, "command": ["/no/such/binary"]}])
    await env.run("novolume", [shell("app", "exec sleep 3600",
                                     volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])],
                  volumes=[{"name": "cfg", "configMap": {"name": "does-not-exist"}}])

    def waiting(reason):
        return lambda p: cstatus(p, "app") is not None and cstatus(p, "app").state.waiting.reason == reason
    # ErrImagePull after a failed pull, ImagePullBackOff while the next one waits.
    pod = await env.wait("noimage", lambda p: waiting("ErrImagePull")(p) or waiting("ImagePullBackOff")(p),
                         30, "ErrImagePull")
    assert "nope" in cstatus(pod, "app").state.waiting.message
    await env.wait("noimage", waiting("ImagePullBackOff"), 30, "ImagePullBackOff")
    events = await env.events("noimage")
    assert ("Failed", "Error: ErrImagePull") in events
    assert any(r == "Failed" and m.startswith('Failed to pull image "127.0.0.1:1/kubeling/nope:1"')
               for r, m in events), events
    assert any(r == "BackOff" and m.startswith("Back-off pulling image") for r, m in events), events

    def cannot_run(p):
        cs = cstatus(p, "app")
        return cs is not None and (cs.state.waiting.reason in ("CreateContainerError", "RunContainerError", "CrashLoopBackOff")
                                   or cs.last_state.HasField("terminated") or cs.state.HasField("terminated"))
    pod = await env.wait("nocmd", cannot_run, 30, "a container that cannot run")
    assert pod.status.phase in ("Pending", "Running")
    assert any(r in ("Failed", "BackOff") for r, _ in await env.events("nocmd"))

    async def failed_mount():
        return [m for r, m in await env.events("novolume") if r == "FailedMount"]
    messages = await eventually(failed_mount, 20, what="a FailedMount event")
    assert 'configmap "does-not-exist" not found' in messages[0]
    pod = await env.get("novolume")
    assert pod.status.phase == "Pending"
    assert cstatus(pod, "app").state.waiting.reason == "ContainerCreating"
    # Creating the ConfigMap lets the pod start.
    await env.create(from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "does-not-exist"}, "data": {"k": "v"}}))
    await env.running("novolume", 20)
    # None of this upset the node agent.
    assert env.node.kubelet.running


async def test_init_containers_run_in_order_before_the_app(env):
    init = [shell("first", "echo first >> /work/log"), shell("second", "echo second >> /work/log")]
    for c in init:
        c["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    app = shell("app", "echo app >> /work/log; exec sleep 3600", volumeMounts=[{"name": "work", "mountPath": "/work"}])
    await env.run("inits", [app], initContainers=init, volumes=[{"name": "work", "emptyDir": {}}])
    pod = await env.running("inits")
    assert condition(pod, "Initialized") == "True"
    assert [c.state.terminated.reason for c in pod.status.init_container_statuses] == ["Completed", "Completed"]
    log = env.volume_dir(pod, "work") / "log"
    await eventually(lambda: asyncio.sleep(0, log.exists() and log.read_text().split() == ["first", "second", "app"]),
                     10, what="init containers then app")


async def test_the_node_agent_rides_out_a_restart_of_the_runtime(env):
    await env.run("before", [shell("app", "exec sleep 3600")])
    pod = await env.running("before")
    cid = env.container_id(pod, "app")
    env.node.runtime.kill()
    await asyncio.sleep(2)  # the agent's relists and syncs fail meanwhile

    async def not_ready():
        node = await env.client.get("nodes", env.node.name, "")
        return next(c for c in node.status.conditions if c.type == "Ready").status != "True"
    await eventually(not_ready, 10, what="the node NotReady without its runtime")
    env.node.runtime.start()
    await env.run("after", [shell("app", "exec sleep 3600")])
    await env.running("after", 30)

    async def ready():
        node = await env.client.get("nodes", env.node.name, "")
        return next(c for c in node.status.conditions if c.type == "Ready").status == "True"
    await eventually(ready, 15, what="the node Ready again")
    pod = await env.get("before")
    assert env.container_id(pod, "app") == cid and cstatus(pod, "app").restart_count == 0
    assert env.node.kubelet.running
