"""The service proxy for real: a throwaway "node" network namespace with two
"pod" namespaces on a bridge and a "client" namespace on a veth (its LAN),
the real API server, and `python -m node_agent.proxy --netns <node>`
programming nftables in the node's namespace.

    client (10.77.0.2) ---- lan0 (10.77.0.1) [node] kbr0 (10.244.7.1) ---+--- pod-a (10.244.7.2)
                                                                          +--- pod-b (10.244.7.3)

Each pod runs a tiny TCP and UDP server answering "<pod> <peer address>".
Services and Endpoints are created by hand (Services without a selector),
with explicit clusterIPs and nodePorts. Needs root, iproute2 and nftables;
every namespace (and with it every link, address and nftables table made
here) is removed at teardown, even when a test fails. No packet leaves
these namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
    pytest.mark.skipif(not shutil.which("ip") or not shutil.which("nft"),
                       reason="needs iproute2 and nftables"),
]

NODE_LAN_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
BRIDGE_IP = "10.244.7.1"
POD_IPS = {"pod-a": "10.244.7.2", "pod-b": "10.244.7.3"}
TCP_PORT, UDP_PORT = 8080, 5353


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


# --- the topology ----------------------------------------------------------------

SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", %(tcp)d)); s.listen(128)
    while True:
        c, peer = s.accept()
        try:
            c.sendall(f"{name} {peer[0]}".encode())
        finally:
            c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", %(udp)d))
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(f"{name} {peer[0]}".encode(), peer)
threading.Thread(target=udp, daemon=True).start()
print("serving", flush=True)
tcp()
""" % {"tcp": TCP_PORT, "udp": UDP_PORT}

CLIENT = r"""
import json, socket, sys, time
host, port, count, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = []
for _ in range(count):
    start = time.monotonic()
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                data = b""
                while chunk := s.recv(512):
                    data += chunk
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1)
                s.sendto(b"hi", (host, port))
                data = s.recv(512)
        out.append([data.decode(), time.monotonic() - start])
    except OSError as e:
        out.append(["error:" + type(e).__name__, time.monotonic() - start])
print(json.dumps(out))
"""


class Topology:
    """The namespaces, links and pod servers; `cleanup` removes them all."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.node = f"kpx-{run}-node"
        self.client = f"kpx-{run}-client"
        self.pods = {name: f"kpx-{run}-{name}" for name in POD_IPS}
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen] = []

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def build(self) -> "Topology":
        for name in (self.node, self.client, *self.pods.values()):
            self._netns(name)
        n = ["ip", "-n", self.node]
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The LAN: the node and a client host.
        sh(*n, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        sh(*n, "addr", "add", f"{NODE_LAN_IP}/24", "dev", "lan0")
        sh(*n, "link", "set", "lan0", "up")
        sh("ip", "-n", self.client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        sh("ip", "-n", self.client, "link", "set", "eth0", "up")
        # The node's default route, as on a real host: clusterIPs are routable.
        sh(*n, "route", "add", "default", "via", CLIENT_IP)
        # The pod network: a bridge with a veth per pod.
        sh(*n, "link", "add", "kbr0", "type", "bridge")
        sh(*n, "addr", "add", f"{BRIDGE_IP}/24", "dev", "kbr0")
        sh(*n, "link", "set", "kbr0", "up")
        for i, (name, ns) in enumerate(self.pods.items()):
            host_if = f"vpod{i}"
            sh(*n, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(*n, "link", "set", host_if, "master", "kbr0")
            # As the CNI bridge plugin's hairpinMode: with br_netfilter, a
            # pod's packet DNATed back to that same pod leaves by the port
            # it came in on, which a bridge allows only in hairpin mode.
            sh(*n, "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
            sh(*n, "link", "set", host_if, "up")
            sh("ip", "-n", ns, "addr", "add", f"{POD_IPS[name]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", BRIDGE_IP)
        for name, ns in self.pods.items():
            proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, name],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            self.servers.append(proc)
            assert proc.stdout.readline().strip() == "serving", f"server in {name} did not start"
        return self

    def cleanup(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()

    # --- probes ---

    def connect(self, ns: str, host: str, port: int, count: int = 1, proto: str = "tcp") -> list:
        """[answer or "error:<exception>", seconds] for each of `count` tries from `ns`."""
        out = sh("ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, host, str(port),
                 str(count), proto, timeout=60).stdout
        return json.loads(out)

    def answers(self, ns: str, host: str, port: int, count: int = 1, proto: str = "tcp") -> list[str]:
        return [a for a, _ in self.connect(ns, host, port, count, proto)]

    def table(self) -> str | None:
        """`nft list table ip kubeling` in the node, or None when there is none."""
        proc = sh("ip", "netns", "exec", self.node, "nft", "list", "table", "ip", "kubeling",
                  check=False)
        return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def topology():
    topo = Topology()
    try:
        yield topo.build()
    finally:
        topo.cleanup()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    from tests.integration.conftest import start_api_server
    server = start_api_server(tmp_path_factory, "proxy-apiserver")
    try:
        yield server
    finally:
        server.shutdown()


class Proxy:
    """`python -m node_agent.proxy` for the node namespace."""

    def __init__(self, server: str, netns: str, log_path: Path):
        self.server, self.netns, self.log_path = server, netns, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node_agent.proxy", "--server", self.server,
                 "--node-name", "node-1", "--netns", self.netns, "--min-sync-interval", "0.1",
                 "--cluster-cidr", "10.244.0.0/16"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: b"proxy started" in self.log_path.read_bytes()[offset:] or self.proc.poll(),
                 20, "proxy start")
        assert self.proc.poll() is None, self.log_tail()
        return self

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode if self.proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def proxy(api_server, topology, tmp_path_factory):
    p = Proxy(api_server.address, topology.node, tmp_path_factory.mktemp("proxy") / "proxy.log")
    try:
        yield p.start()
    finally:
        p.stop()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- objects -----------------------------------------------------------------------

def make_service(name: str, cluster_ip: str, node_port: int = 0, affinity: bool = False,
                 udp: bool = False) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, "default"
    svc.spec.cluster_ip = cluster_ip
    svc.spec.cluster_ips.append(cluster_ip)
    svc.spec.type = "NodePort" if node_port else "ClusterIP"
    port = svc.spec.ports.add(name="http", port=80, protocol="TCP", node_port=node_port)
    port.target_port.string_value = "web"  # resolved through the Endpoints' port names
    if udp:
        port = svc.spec.ports.add(name="dns", port=53, protocol="UDP")
        port.target_port.number_value = UDP_PORT
    if affinity:
        svc.spec.session_affinity = "ClientIP"
        svc.spec.session_affinity_config.client_ip.timeout_seconds = 60
    return svc


def make_endpoints(name: str, pods: list[str], udp: bool = False) -> core_pb2.Endpoints:
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, "default"
    if pods:
        subset = ep.subsets.add()
        for pod in pods:
            subset.addresses.add(ip=POD_IPS[pod], node_name="node-1")
        subset.ports.add(name="http", port=TCP_PORT, protocol="TCP")
        if udp:
            subset.ports.add(name="dns", port=UDP_PORT, protocol="UDP")
    return ep


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def service(client):
    """Create a Service and its Endpoints; both deleted after the test."""
    made: list[str] = []

    async def create(name: str, cluster_ip: str, pods: list[str], **kwargs) -> None:
        await client.create(make_service(name, cluster_ip, **kwargs))
        made.append(name)
        await client.create(make_endpoints(name, pods, udp=kwargs.get("udp", False)))

    yield create
    for name in made:
        for kind in ("endpoints", "services"):
            try:
                await client.delete(kind, name, "default")
            except Exception:
                pass


async def set_endpoints(client: ApiClient, name: str, pods: list[str], udp: bool = False) -> None:
    current = await client.get("endpoints", name, "default")
    new = make_endpoints(name, pods, udp=udp)
    new.metadata.resource_version = current.metadata.resource_version
    await client.update(new)


def until_answers(topology: Topology, ns: str, host: str, port: int, want: set[str],
                  proto: str = "tcp", timeout: float = 10) -> list[str]:
    """Connect (20 at a time) until the set of pods answering is `want`."""
    def check():
        got = topology.answers(ns, host, port, 20, proto)
        names = {a.split()[0] for a in got}
        return got if names == want else None
    return wait_for(check, timeout, f"{host}:{port}/{proto} answered by {sorted(want)}")


# --- tests --------------------------------------------------------------------------

async def test_cluster_ip_balances_over_every_ready_endpoint(topology, proxy, service, client):
    await service("web", "10.96.77.10", ["pod-a", "pod-b"], udp=True)
    until_answers(topology, topology.node, "10.96.77.10", 80, {"pod-a", "pod-b"})
    got = topology.answers(topology.node, "10.96.77.10", 80, 60)
    assert {a.split()[0] for a in got} == {"pod-a", "pod-b"}
    assert 10 <= sum(a.startswith("pod-a") for a in got) <= 50  # random, roughly even
    until_answers(topology, topology.node, "10.96.77.10", 53, {"pod-a", "pod-b"}, proto="udp")

    # From a pod: both pods, and a pod reaching itself through its own
    # Service is masqueraded (it sees the node's address, so replies return).
    got = until_answers(topology, topology.pods["pod-a"], "10.96.77.10", 80, {"pod-a", "pod-b"})
    assert {a for a in got if a.startswith("pod-a")} == {f"pod-a {BRIDGE_IP}"}
    assert {a for a in got if a.startswith("pod-b")} == {f"pod-b {POD_IPS['pod-a']}"}

    # The set of endpoints follows the Endpoints object.
    await set_endpoints(client, "web", ["pod-b"], udp=True)
    until_answers(topology, topology.node, "10.96.77.10", 80, {"pod-b"})
    await set_endpoints(client, "web", ["pod-a", "pod-b"], udp=True)
    until_answers(topology, topology.node, "10.96.77.10", 80, {"pod-a", "pod-b"})


async def test_node_port_answers_on_the_node_address(topology, proxy, service):
    await service("web-np", "10.96.77.11", ["pod-a", "pod-b"], node_port=30080)
    # From another host on the LAN: masqueraded, so the pod sees the node.
    got = until_answers(topology, topology.client, NODE_LAN_IP, 30080, {"pod-a", "pod-b"})
    assert {a.split()[1] for a in got} == {BRIDGE_IP}
    # From the node itself, and on its other address.
    until_answers(topology, topology.node, NODE_LAN_IP, 30080, {"pod-a", "pod-b"})
    until_answers(topology, topology.node, BRIDGE_IP, 30080, {"pod-a", "pod-b"})
    # The clusterIP of the same Service too.
    until_answers(topology, topology.node, "10.96.77.11", 80, {"pod-a", "pod-b"})


async def test_no_ready_endpoints_is_refused_at_once(topology, proxy, service, client):
    await service("web-empty", "10.96.77.12", [], node_port=30081)
    wait_for(lambda: "10.96.77.12 . tcp . 80 : goto reject-chain" in (topology.table() or ""),
             10, "the reject rule")
    for ns, host, port in ((topology.node, "10.96.77.12", 80),
                           (topology.pods["pod-a"], "10.96.77.12", 80),
                           (topology.client, NODE_LAN_IP, 30081)):
        (answer, seconds), = topology.connect(ns, host, port)
        assert answer == "error:ConnectionRefusedError", (ns, host, port, answer)
        assert seconds < 0.5

    # An endpoint appears: traffic flows; it goes: refused again.
    await set_endpoints(client, "web-empty", ["pod-a"])
    until_answers(topology, topology.node, "10.96.77.12", 80, {"pod-a"})
    until_answers(topology, topology.client, NODE_LAN_IP, 30081, {"pod-a"})
    await set_endpoints(client, "web-empty", [])
    wait_for(lambda: topology.answers(topology.node, "10.96.77.12", 80)
             == ["error:ConnectionRefusedError"], 10, "refusal")


async def test_client_ip_affinity_sticks_each_client_to_one_pod(topology, proxy, service):
    await service("web-sticky", "10.96.77.13", ["pod-a", "pod-b"], affinity=True)
    wait_for(lambda: topology.answers(topology.node, "10.96.77.13", 80)[0].startswith("pod-"),
             10, "the sticky service")
    for ns in (topology.node, topology.pods["pod-a"], topology.pods["pod-b"]):
        got = topology.answers(ns, "10.96.77.13", 80, 30)
        assert len({a.split()[0] for a in got}) == 1, (ns, got)
    table = topology.table()
    assert POD_IPS["pod-a"] in table and "timeout 1m" in table  # clients remembered, 60 s


async def test_deleted_service_loses_its_rules(topology, proxy, service, client):
    await service("web-gone", "10.96.77.14", ["pod-a"])
    until_answers(topology, topology.node, "10.96.77.14", 80, {"pod-a"})
    await client.delete("services", "web-gone", "default")
    await client.delete("endpoints", "web-gone", "default")
    wait_for(lambda: "10.96.77.14" not in (topology.table() or "x"), 10, "rules removed")
    assert "web-gone" not in topology.table()


@pytest.fixture
def bare_node():
    """A network namespace of its own, for a proxy that must be alone in it."""
    name = f"kpx-{uuid.uuid4().hex[:6]}-bare"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def table_in(netns: str) -> str | None:
    proc = sh("ip", "netns", "exec", netns, "nft", "list", "table", "ip", "kubeling", check=False)
    return proc.stdout if proc.returncode == 0 else None


async def test_stopping_the_proxy_removes_its_table(api_server, bare_node, tmp_path, service):
    await service("web-stop", "10.96.77.15", ["pod-a"])
    p = Proxy(api_server.address, bare_node, tmp_path / "proxy.log").start()
    try:
        wait_for(lambda: "10.96.77.15" in (table_in(bare_node) or ""), 10, "rules")
    finally:
        assert p.stop() == 0, p.log_tail()
    assert table_in(bare_node) is None, p.log_tail()


def test_cleanup_flag_deletes_the_table(bare_node):
    sh("ip", "netns", "exec", bare_node, "nft", "add", "table", "ip", "kubeling")
    assert table_in(bare_node) is not None
    sh(sys.executable, "-m", "node_agent.proxy", "--cleanup", "--netns", bare_node)
    assert table_in(bare_node) is None
    # Idempotent: nothing to delete is no error.
    sh(sys.executable, "-m", "node_agent.proxy", "--cleanup", "--netns", bare_node)
