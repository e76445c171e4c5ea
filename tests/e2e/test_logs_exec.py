"""`kubeling logs` and `kubeling exec` end to end, with nothing faked: the real
`kubeling` command talks to a real API server (with its etcd), which relays
to a real Node service (node_agent.node_service, run in this test process)
over TCP, which reads the logs and runs commands through a real runtime
service (runc, conmon) on its unix socket.

The test plays the node agent's part: it creates the Node (InternalIP
127.0.0.1 and the Node service's port), the Pod (bound with spec.nodeName),
and the pod's sandbox and containers through CRI, with the CRI labels a node
agent sets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.cri.v1 import api_pb2 as pb
from node_agent.node_service import start_node_service
from tests.e2e import test_runtime_cri as runtime_e2e
from tests.e2e.test_runtime_cri import SHELL, pytestmark  # noqa: F401 - the same requirements
from tests.integration.conftest import ApiServerProcess
from tests.integration.test_cli import KUBELING

# The runtime's e2e fixtures: `cri` (a real runtime service with the test
# images, checked for leftovers after each test) and whatever it builds on.
globals().update({name: obj for name, obj in vars(runtime_e2e).items()
                  if type(obj).__name__ == "FixtureFunctionDefinition" and name != "api_server"})

LABELS = ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.pod.uid",
          "io.kubernetes.container.name")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    server = ApiServerProcess(tmp_path_factory.mktemp("logs-apiserver"))
    try:
        server.start()
        yield server
    finally:
        server.shutdown()


class NodeServiceThread:
    """The Node service on 127.0.0.1 (a free port), in an event loop of its own
    thread, so the test can run the CLI synchronously meanwhile."""

    def __init__(self, runtime_socket: Path):
        self.runtime_socket = runtime_socket
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        try:
            running = await start_node_service("127.0.0.1:0", f"unix://{self.runtime_socket}",
                                               status_interval=0.2)
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._started.set()
            return
        self.port = running.port
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await running.stop(grace=0.5)

    def start(self) -> "NodeServiceThread":
        self._thread.start()
        self._started.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Cluster:
    """The API server side: a namespace, a Node pointing at the Node service,
    pods bound to it; and the node side: sandboxes and containers through CRI."""

    def __init__(self, api_address: str, cri_service, node_port: int, env: dict):
        self.api = api_address
        self.cri = cri_service
        self.node_port = node_port
        self.env = env
        self.namespace = f"logs-{uuid.uuid4().hex[:8]}"
        self.node = f"logs-node-{uuid.uuid4().hex[:8]}"
        self.sandboxes: dict[str, tuple[str, pb.PodSandboxConfig]] = {}

    def _api(self, fn):
        async def go():
            async with ApiClient(self.api) as client:
                return await fn(client)
        return asyncio.run(go())

    def setup(self, port: int | None = None) -> None:
        async def go(client):
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = self.namespace
            await client.create(ns)
            await self._create_node(client, self.node, port if port is not None else self.node_port)
        self._api(go)

    @staticmethod
    async def _create_node(client, name: str, port: int) -> None:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = name
        node.metadata.labels["kubernetes.io/hostname"] = name
        node = await client.create(node)
        node.status.addresses.add(type="InternalIP", address="127.0.0.1")
        node.status.addresses.add(type="Hostname", address=name)
        node.status.daemon_endpoints.kubelet_endpoint.port = port
        await client.update_status(node)

    def add_node(self, name: str, port: int) -> None:
        self._api(lambda client: self._create_node(client, name, port))

    def cleanup(self) -> None:
        async def go(client):
            for name in [self.node, *getattr(self, "extra_nodes", [])]:
                try:
                    await client.delete("nodes", name, "")
                except Exception:  # noqa: BLE001 - best effort
                    pass
            try:
                await client.delete("namespaces", self.namespace, "")
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._api(go)

    def pod(self, name: str, containers: list[str], node: str | None = None,
            annotations: dict | None = None) -> core_pb2.Pod:
        """Create the Pod object, bound to the node (no scheduler, no node agent)."""
        async def go(client):
            pod = core_pb2.Pod(api_version="v1", kind="Pod")
            pod.metadata.name = name
            pod.metadata.namespace = self.namespace
            pod.metadata.annotations.update(annotations or {})
            if node != "":
                pod.spec.node_name = node or self.node
            for c in containers:
                pod.spec.containers.add(name=c, image=SHELL)
            return await client.create(pod)
        return self._api(go)

    def container(self, pod: core_pb2.Pod, name: str, script: str, attempt: int = 0) -> str:
        """Run a container of `pod` on the node, as the node agent would."""
        if pod.metadata.name not in self.sandboxes:
            config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(
                name=pod.metadata.name, namespace=pod.metadata.namespace, uid=pod.metadata.uid),
                hostname=pod.metadata.name,
                labels=dict(zip(LABELS[:3], (pod.metadata.namespace, pod.metadata.name, pod.metadata.uid))))
            sid = self.cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
            self.sandboxes[pod.metadata.name] = (sid, config)
        sid, sconfig = self.sandboxes[pod.metadata.name]
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=attempt), image=pb.ImageSpec(image=SHELL),
            command=["sh", "-c", script],
            labels=dict(zip(LABELS, (pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, name))))
        cid = self.cri.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sconfig)).container_id
        self.cri.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    def kubeling(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(KUBELING), *args], capture_output=True, env=self.env, timeout=timeout)
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()
        return proc

    def logs(self, *args: str, ok: bool = True) -> str:
        proc = self.kubeling("logs", "-n", self.namespace, *args)
        if ok:
            assert proc.returncode == 0, proc.stderr.decode()
            return proc.stdout.decode()
        assert proc.returncode == 1, proc.stdout
        return proc.stderr.decode()

    def exec(self, *args: str) -> subprocess.CompletedProcess:
        return self.kubeling("exec", "-n", self.namespace, *args)


@pytest.fixture
def cluster(api_server, cri, tmp_path):
    node_service = NodeServiceThread(cri.socket).start()
    config = tmp_path / "config"
    config.write_text(f"server: {api_server.address}\n")
    env = dict(os.environ, KUBELING_CONFIG=str(config))
    c = Cluster(api_server.address, cri, node_service.port, env)
    c.setup()
    try:
        yield c
    finally:
        node_service.stop()
        c.cleanup()


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


PRINTER = "for i in 1 2 3 4 5; do echo line-$i; done; echo oops >&2; exec sleep 1000"


# -- logs -----------------------------------------------------------------------------------


def test_logs_whole_and_tail(cluster):
    pod = cluster.pod("printer", ["main"])
    cluster.container(pod, "main", PRINTER)
    want = "line-1\nline-2\nline-3\nline-4\nline-5\noops\n"
    assert wait_until(lambda: cluster.logs("printer") == want, what="all six lines")
    assert cluster.logs("pod/printer", "-c", "main") == want
    assert cluster.logs("printer", "--tail", "2") == "line-5\noops\n"
    assert cluster.logs("printer", "--tail", "0") == ""
    assert cluster.logs("printer", "--tail", "100") == want
    stamped = cluster.logs("printer", "--tail", "1", "--timestamps")
    stamp, _, text = stamped.partition(" ")
    assert text == "oops\n" and stamp[:2] == "20" and "T" in stamp


def test_logs_follow_until_the_container_exits(cluster):
    pod = cluster.pod("ticker", ["main"])
    cid = cluster.container(pod, "main", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done")
    follower = subprocess.Popen([str(KUBELING), "logs", "-n", cluster.namespace, "-f", "--tail", "1",
                                 "ticker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env)
    try:
        seen = []
        deadline = time.monotonic() + 15
        while len(seen) < 10 and time.monotonic() < deadline:
            line = follower.stdout.readline().decode()
            if not line:
                break
            seen.append(line.strip())
        numbers = [int(s.removeprefix("tick-")) for s in seen]
        assert len(numbers) == 10, (seen, follower.stderr.read() if follower.poll() is not None else "")
        assert numbers == list(range(numbers[0], numbers[0] + 10)), "lines are in order, none lost"
        # The container exits: the follower prints what is left and ends by itself.
        cluster.cri.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))
        out, err = follower.communicate(timeout=15)
        assert follower.returncode == 0, err.decode()
        rest = [int(s.removeprefix("tick-")) for s in out.decode().split()]
        assert rest == list(range(numbers[-1] + 1, numbers[-1] + 1 + len(rest)))
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def open_files_of_this_process() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return found


def test_a_follower_that_leaves_ends_the_stream_on_the_node(cluster):
    pod = cluster.pod("chatty", ["main"])
    cid = cluster.container(pod, "main", "while true; do echo chat; sleep 0.1; done")
    log_path = cluster.cri.status(cid).status.log_path
    follower = subprocess.Popen([str(KUBELING), "logs", "-n", cluster.namespace, "-f", "chatty"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env)
    try:
        assert follower.stdout.readline() == b"chat\n"
        # The Node service runs in this process: it holds the log file open while it follows.
        wait_until(lambda: log_path in open_files_of_this_process(), what="the node to open the log")
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
        wait_until(lambda: log_path not in open_files_of_this_process(), what="the node to close the log")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_logs_previous_instance(cluster):
    pod = cluster.pod("restarter", ["app"])
    first = cluster.container(pod, "app", "echo first-run; exit 1")
    cluster.cri.wait_exited(first)
    err = cluster.logs("restarter", "--previous", ok=False)
    assert 'previous terminated container "app"' in err and "not found" in err
    cluster.container(pod, "app", "echo second-run; exec sleep 1000", attempt=1)
    assert wait_until(lambda: cluster.logs("restarter") == "second-run\n", what="the new instance's log")
    assert cluster.logs("restarter", "-p") == "first-run\n"
    assert cluster.logs("restarter", "--previous", "-f") == "first-run\n"  # an exited one: no following


def test_logs_of_several_containers_and_bad_requests(cluster):
    pod = cluster.pod("pair", ["web", "sidecar"])
    cluster.container(pod, "web", "echo from-web; exec sleep 1000")
    cluster.container(pod, "sidecar", "echo from-sidecar; exec sleep 1000")
    wait_until(lambda: cluster.logs("pair", "-c", "sidecar") == "from-sidecar\n", what="sidecar's log")
    proc = cluster.kubeling("logs", "-n", cluster.namespace, "pair")
    assert proc.stdout.decode() == "from-web\n"
    assert 'Defaulted container "web" out of: web, sidecar' in proc.stderr.decode()
    assert cluster.logs("pair", "sidecar") == "from-sidecar\n"  # kubectl's inline container name

    assert "container nope is not valid for pod pair" in cluster.logs("pair", "-c", "nope", ok=False)
    assert 'pods "missing" not found' in cluster.logs("missing", ok=False)
    cluster.pod("unbound", ["main"], node="")
    assert "does not have a host assigned" in cluster.logs("unbound", ok=False)

    pending = cluster.pod("not-started", ["main"])
    err = cluster.logs("not-started", ok=False)
    assert "Error from server (NotFound)" in err and "has not been created" in err, err
    # Once the node agent reports why, the user sees that reason.
    pending.status.container_statuses.add(name="main").state.waiting.reason = "ContainerCreating"
    cluster._api(lambda client: client.update_status(pending))
    err = cluster.logs("not-started", ok=False)
    assert 'container "main" in pod "not-started" is waiting to start: ContainerCreating' in err, err


def test_logs_and_exec_when_the_node_cannot_be_reached(cluster):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    gone = f"{cluster.node}-gone"
    cluster.extra_nodes = [gone]
    cluster.add_node(gone, closed_port)
    cluster.pod("stranded", ["main"], node=gone)
    err = cluster.logs("stranded", ok=False)
    assert f'Error from server (ServiceUnavailable): node "{gone}"' in err, err
    proc = cluster.exec("stranded", "--", "true")
    assert proc.returncode == 1 and b"ServiceUnavailable" in proc.stderr


# -- exec -----------------------------------------------------------------------------------


def test_exec_output_and_exit_code(cluster):
    pod = cluster.pod("shell", ["main"])
    cluster.container(pod, "main", "exec sleep 1000")
    wait_until(lambda: cluster.exec("shell", "--", "true").returncode == 0, what="exec to work")

    proc = cluster.exec("shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\ncommand terminated with exit code 3\n"

    proc = cluster.exec("shell", "-c", "main", "--", "hostname")
    assert (proc.returncode, proc.stdout) == (0, b"shell\n")
    proc = cluster.exec("pod/shell", "--", "sh", "-c", 'printf "%s|" "$@"', "sh", "a b", "--", "-c")
    assert proc.stdout == b"a b|--|-c|"
    binary = cluster.exec("shell", "--", "sh", "-c", r"printf '\000\377'")
    assert binary.stdout == b"\x00\xff"

    proc = cluster.exec("shell", "--", "no-such-command")
    assert proc.returncode == 127, proc.stderr
    proc = cluster.exec("shell", "-it", "--", "sh")
    assert proc.returncode == 1 and b"interactive sessions" in proc.stderr
    proc = cluster.exec("shell")
    assert proc.returncode == 1 and b"at least one command" in proc.stderr


def test_exec_in_a_container_that_is_not_running(cluster):
    pod = cluster.pod("done", ["main"])
    cid = cluster.container(pod, "main", "exit 0")
    cluster.cri.wait_exited(cid)
    proc = cluster.exec("done", "--", "true")
    assert proc.returncode == 1
    assert b'container "main" in pod "' in proc.stderr and b"is not running" in proc.stderr
