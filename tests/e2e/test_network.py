"""The network service on one node, for real: network namespaces made by the
test, the service as its own process on a unix socket, driven over gRPC.

Needs root, iproute2, nftables and busybox. Every namespace is made with a
unique name and removed in a finalizer, even when a test fails; everything
the service makes lives inside those namespaces. The helpers here are also
used by test_network_cluster.py and test_network_plugin.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from kubeling.cni.v1 import cni_pb2, cni_pb2_grpc
from node_agent.network import netns as netns_mod

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not shutil.which("ip") or not shutil.which("nft") or not shutil.which("busybox"),
                       reason="needs iproute2, nftables and busybox"),
]


# --- namespaces ------------------------------------------------------------------

def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


class Namespaces:
    """Throwaway network namespaces `ktn-<run>-<role>`; `cleanup` removes them all."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    def add(self, role: str) -> str:
        name = f"ktn-{self.run}-{role}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def remove(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def cleanup(self) -> None:
        for name in reversed(list(self.names)):
            self.remove(name)


@pytest.fixture
def namespaces():
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


def path_of(name: str) -> str:
    return f"/run/netns/{name}"


# --- the service process -----------------------------------------------------------

class NetworkService:
    """`python -m node_agent.network` for one node, stopped at teardown."""

    def __init__(self, tmp: Path, node_name: str, node_ns: str, *extra: str):
        self.tmp = tmp
        self.node_name = node_name
        self.node_ns = node_ns
        self.extra = list(extra)
        self.socket = str(tmp / f"{node_name}.sock")
        self.state_dir = str(tmp / f"{node_name}-state")
        self.log_path = tmp / f"{node_name}.log"
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.stub: cni_pb2_grpc.NetworkStub | None = None

    def start(self) -> "NetworkService":
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node_agent.network", "--listen", f"unix://{self.socket}",
                 "--node-name", self.node_name, "--state-dir", self.state_dir, "--netns", self.node_ns,
                 *self.extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"network service exited:\n{self.log_tail()}")
            if b"listening on" in self.log_path.read_bytes()[offset:]:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"network service did not start:\n{self.log_tail()}")
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.stub = cni_pb2_grpc.NetworkStub(self.channel)
        return self

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- calls ---

    def add(self, cid: str, pod_ns: str, ifname: str = "eth0", *, ports=(), config: str = "",
            netns: str | None = None) -> cni_pb2.AddResponse:
        req = cni_pb2.AddRequest(container_id=cid, netns=path_of(pod_ns) if netns is None else netns,
                                 ifname=ifname, config=config,
                                 args=cni_pb2.PodArgs(name=f"pod-{cid}", namespace="default", uid=cid))
        for host_port, container_port in ports:
            req.port_mappings.add(host_port=host_port, container_port=container_port, protocol="tcp")
        return self.stub.Add(req, timeout=30)

    def add_ok(self, cid: str, pod_ns: str, **kw) -> cni_pb2.Result:
        resp = self.add(cid, pod_ns, **kw)
        assert not resp.HasField("error"), resp.error
        return resp.result

    def delete(self, cid: str, pod_ns: str | None, ifname: str = "eth0") -> cni_pb2.DelResponse:
        return self.stub.Del(cni_pb2.DelRequest(container_id=cid, netns=path_of(pod_ns) if pod_ns else "",
                                                ifname=ifname), timeout=30)

    def check(self, cid: str, pod_ns: str, ifname: str = "eth0", prev: cni_pb2.Result | None = None):
        req = cni_pb2.CheckRequest(container_id=cid, netns=path_of(pod_ns), ifname=ifname)
        if prev is not None:
            req.prev_result.CopyFrom(prev)
        return self.stub.Check(req, timeout=30)

    def status(self) -> cni_pb2.StatusResponse:
        return self.stub.Status(cni_pb2.StatusRequest(), timeout=30)

    def ipam_files(self) -> list[str]:
        """Address files and attachment links in the state directory."""
        out = []
        for dirpath, _dirs, files in os.walk(self.state_dir):
            for f in files:
                if f not in ("lock", "last_reserved_ip"):
                    out.append(os.path.relpath(os.path.join(dirpath, f), self.state_dir))
        return sorted(out)


@pytest.fixture
def services(tmp_path):
    """Start network services: services(node_name, node_ns, *flags). Stopped at teardown."""
    started: list[NetworkService] = []

    def start(node_name: str, node_ns: str, *flags: str) -> NetworkService:
        svc = NetworkService(tmp_path, node_name, node_ns, *flags)
        started.append(svc)
        return svc.start()

    try:
        yield start
    finally:
        for svc in reversed(started):
            svc.stop()


# --- looking at and using namespaces ---------------------------------------------------

def links(ns: str) -> dict[str, dict]:
    return {l["ifname"]: l for l in json.loads(sh("ip", "-j", "-n", ns, "-d", "link", "show").stdout)}


def addresses(ns: str) -> set[str]:
    out = set()
    for link in json.loads(sh("ip", "-j", "-n", ns, "-4", "addr", "show").stdout):
        for a in link.get("addr_info", []):
            out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def routes(ns: str) -> list[dict]:
    return json.loads(sh("ip", "-j", "-n", ns, "-4", "route", "show").stdout)


def route_keys(ns: str) -> set[tuple]:
    return {(r.get("dst"), r.get("gateway"), r.get("dev")) for r in routes(ns)}


def nft_tables(ns: str) -> list[str]:
    return [line.split()[-1] for line in sh("ip", "netns", "exec", ns, "nft", "list", "tables").stdout.splitlines()]


def ping(ns: str, address: str, count: int = 1) -> bool:
    r = sh("ip", "netns", "exec", ns, "busybox", "ping", "-c", str(count), "-W", "2", address, check=False)
    return r.returncode == 0


class TcpServer:
    """A TCP server inside namespace `ns`: answers each connection with
    "hello from <ns> to <peer address>" and closes it."""

    def __init__(self, ns: str, port: int, address: str = "0.0.0.0"):
        self.fd = os.open(path_of(ns), os.O_RDONLY)

        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(16)
            return s

        self.sock = netns_mod.run_in_netns(self.fd, make)
        self.sock.settimeout(0.2)
        self.ns = ns
        self.peers: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.sendall(f"hello from {self.ns} to {peer[0]}".encode())

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        os.close(self.fd)


def tcp_get(ns: str, address: str, port: int, timeout: float = 3.0) -> str:
    """Connect from inside namespace `ns`; what the server said."""
    fd = os.open(path_of(ns), os.O_RDONLY)
    try:
        s = netns_mod.run_in_netns(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    finally:
        os.close(fd)
    with s:
        s.settimeout(timeout)
        s.connect((address, port))
        chunks = []
        while True:
            data = s.recv(4096)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode()


@pytest.fixture
def tcp_servers():
    made: list[TcpServer] = []

    def start(ns: str, port: int, address: str = "0.0.0.0") -> TcpServer:
        srv = TcpServer(ns, port, address)
        made.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in made:
            srv.close()


def pod_ip(result: cni_pb2.Result) -> str:
    return result.ips[0].address.split("/")[0]


# === the tests ==========================================================================

POD_CIDR = "10.244.1.0/24"


@pytest.fixture
def node(namespaces, services):
    """One node namespace with a service serving 10.244.1.0/24 (no API server)."""
    node_ns = namespaces.add("node")
    return services("node-1", node_ns, "--pod-cidr", POD_CIDR)


def test_add_check_del_round_trip(namespaces, node):
    pod = namespaces.add("pod")
    result = node.add_ok("c1", pod)

    # The CNI 1.0 result: bridge, host veth, pod interface in its sandbox.
    assert result.cni_version == "1.0.0"
    assert [i.name for i in result.interfaces][0] == "kubeling0"
    assert result.interfaces[2].name == "eth0" and result.interfaces[2].sandbox == path_of(pod)
    assert result.ips[0].address == "10.244.1.2/24" and result.ips[0].gateway == "10.244.1.1"
    assert result.ips[0].interface == 2
    assert [(r.dst, r.gw) for r in result.routes] == [("0.0.0.0/0", "10.244.1.1")]

    # What the pod sees.
    pod_links = links(pod)
    assert pod_links["eth0"]["address"] == result.interfaces[2].mac
    assert pod_links["eth0"]["mtu"] == 1500 and "UP" in pod_links["eth0"]["flags"]
    assert "UP" in pod_links["lo"]["flags"]
    assert "10.244.1.2/24" in addresses(pod)
    assert any(r["dst"] == "default" and r.get("gateway") == "10.244.1.1" for r in routes(pod))
    # What the node sees: the bridge with the gateway, the host end on it, forwarding on.
    node_links = links(node.node_ns)
    host = result.interfaces[1].name
    assert node_links[host]["master"] == "kubeling0" and node_links[host]["linkinfo"]["info_kind"] == "veth"
    assert node_links["kubeling0"]["linkinfo"]["info_kind"] == "bridge"
    assert "10.244.1.1/24" in addresses(node.node_ns)
    assert sh("ip", "netns", "exec", node.node_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert "kubeling_masq" in nft_tables(node.node_ns)
    assert ping(pod, "10.244.1.1")

    assert not node.check("c1", pod).HasField("error")
    assert not node.check("c1", pod, prev=result).HasField("error")

    assert not node.delete("c1", pod).HasField("error")
    assert host not in links(node.node_ns) and "eth0" not in links(pod)
    assert node.ipam_files() == []
    # Del is idempotent, and Check now reports the attachment gone.
    assert not node.delete("c1", pod).HasField("error")
    assert node.check("c1", pod).error.code == 100


def test_check_reports_what_drifted(namespaces, node):
    pod = namespaces.add("pod")
    result = node.add_ok("c1", pod)
    sh("ip", "-n", pod, "route", "del", "default")
    resp = node.check("c1", pod)
    assert resp.error.code == 100 and "default route" in resp.error.msg
    sh("ip", "-n", node.node_ns, "link", "set", result.interfaces[1].name, "down")
    assert "is down" in node.check("c1", pod).error.details
    other = cni_pb2.Result()
    other.CopyFrom(result)
    other.interfaces[2].mac = "02:00:00:00:00:01"
    assert "MAC" in node.check("c1", pod, prev=other).error.details


def test_pods_on_one_node_reach_each_other(namespaces, node, tcp_servers):
    a, b = namespaces.add("pa"), namespaces.add("pb")
    ip_a, ip_b = pod_ip(node.add_ok("ca", a)), pod_ip(node.add_ok("cb", b))
    assert ip_a != ip_b
    assert ping(a, ip_b) and ping(b, ip_a)
    tcp_servers(b, 7000)
    assert tcp_get(a, ip_b, 7000) == f"hello from {b} to {ip_a}"


def test_del_works_when_the_namespace_is_gone(namespaces, node):
    pod = namespaces.add("pod")
    result = node.add_ok("c1", pod)
    namespaces.remove(pod)
    assert not node.delete("c1", pod).HasField("error")
    assert result.interfaces[1].name not in links(node.node_ns)
    assert node.ipam_files() == []
    assert not node.delete("c1", None).HasField("error")  # and with no CNI_NETNS at all


def test_state_survives_a_service_restart(namespaces, node):
    p1, p2 = namespaces.add("p1"), namespaces.add("p2")
    first = node.add_ok("c1", p1)
    node.restart()
    # The address held before the restart is neither lost nor handed out again.
    second = node.add_ok("c2", p2)
    assert pod_ip(second) != pod_ip(first)
    assert not node.check("c1", p1).HasField("error")
    assert node.add("c1", p1).error.code == 4
    assert node.status().allocated == 2
    assert not node.delete("c1", p1).HasField("error")
    assert not node.delete("c2", p2).HasField("error")
    assert node.ipam_files() == []


def test_hostport_maps_node_port_to_pod(namespaces, node, tcp_servers):
    pod, client = namespaces.add("pod"), namespaces.add("client")
    # The node's LAN: a veth to a client namespace, 192.168.77.0/24.
    sh("ip", "link", "add", "ktlan0", "netns", node.node_ns, "type", "veth", "peer", "name", "eth0",
       "netns", client)
    sh("ip", "-n", node.node_ns, "addr", "add", "192.168.77.1/24", "dev", "ktlan0")
    sh("ip", "-n", node.node_ns, "link", "set", "ktlan0", "up")
    sh("ip", "-n", client, "addr", "add", "192.168.77.9/24", "dev", "eth0")
    sh("ip", "-n", client, "link", "set", "eth0", "up")

    result = node.add_ok("web", pod, ports=[(8080, 80)])
    tcp_servers(pod, 80)
    assert tcp_get(client, "192.168.77.1", 8080).startswith(f"hello from {pod}")
    assert not node.check("web", pod).HasField("error")

    sh("ip", "netns", "exec", node.node_ns, "nft", "delete", "table", "ip", "kubeling_hostport")
    assert "kubeling_hostport" in node.check("web", pod).error.msg
    node.restart()  # rebuilds the table from the IPAM records
    assert not node.check("web", pod).HasField("error")
    assert tcp_get(client, "192.168.77.1", 8080).startswith(f"hello from {pod}")

    assert not node.delete("web", pod).HasField("error")
    assert "kubeling_hostport" not in nft_tables(node.node_ns)
    assert result.interfaces[1].name not in links(node.node_ns)


# --- bad input ---------------------------------------------------------------------------

def assert_nothing_left(node: NetworkService, pod: str | None = None, keep: int = 0) -> None:
    """No veth on the node (beyond `keep`), no interface in `pod`, no IPAM record beyond `keep`."""
    veths = [n for n, l in links(node.node_ns).items() if l.get("linkinfo", {}).get("info_kind") == "veth"
             and l.get("master") == "kubeling0"]
    assert len(veths) == keep, veths
    if pod is not None:
        assert set(links(pod)) == {"lo"}
    assert len([f for f in node.ipam_files() if "by-attachment" not in f]) == keep


def test_missing_netns_is_unknown_container(node):
    resp = node.add("c1", "", netns="/run/netns/ktn-does-not-exist")
    assert resp.error.code == 3 and "does not exist" in resp.error.msg
    assert node.add("c1", "", netns="").error.code == 4
    assert node.add("c1", "", netns="/etc/hostname").error.code == 4  # not a namespace
    assert_nothing_left(node)


def test_duplicate_add_is_refused_and_keeps_the_first(namespaces, node):
    pod = namespaces.add("pod")
    first = node.add_ok("c1", pod)
    resp = node.add("c1", pod)
    assert resp.error.code == 4 and "already" in resp.error.msg
    assert not node.check("c1", pod, prev=first).HasField("error")
    assert ping(pod, "10.244.1.1")
    assert_nothing_left(node, keep=1)


def test_interface_name_taken_in_the_pod(namespaces, node):
    pod = namespaces.add("pod")
    sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    resp = node.add("c1", pod)
    assert resp.error.code == 4 and "already exists" in resp.error.msg
    assert_nothing_left(node)
    assert set(links(pod)) == {"lo", "eth0", "other0"}  # not ours: untouched


@pytest.mark.parametrize("config,code", [
    ("{not json", 6),
    ('["a list"]', 6),
    ('{"cniVersion": "0.1.0", "name": "kubeling"}', 1),
    ('{"cniVersion": "1.0.0", "name": "bad/name"}', 7),
    ('{"cniVersion": "1.0.0", "name": "kubeling", "mtu": "big"}', 7),
    ('{"cniVersion": "1.0.0", "name": "kubeling", "ipam": {"subnet": "10.9.0.0/24"}}', 7),
], ids=["truncated", "not-object", "old-version", "bad-name", "bad-mtu", "foreign-subnet"])
def test_malformed_config(namespaces, node, config, code):
    pod = namespaces.add("pod")
    resp = node.add("c1", pod, config=config)
    assert resp.error.code == code, resp.error
    assert_nothing_left(node, pod)


@pytest.mark.parametrize("cid,ifname", [("", "eth0"), ("-x", "eth0"), ("c1", ""), ("c1", "x" * 16)],
                         ids=["no-container-id", "bad-container-id", "no-ifname", "ifname-too-long"])
def test_bad_parameters(namespaces, node, cid, ifname):
    pod = namespaces.add("pod")
    assert node.add(cid, pod, ifname=ifname).error.code == 4
    assert node.delete(cid, pod, ifname=ifname).error.code == 4
    assert_nothing_left(node, pod)


def test_exhausted_pod_cidr(namespaces, services):
    node_ns = namespaces.add("node")
    node = services("node-small", node_ns, "--pod-cidr", "10.244.9.0/29")  # 5 pod addresses
    pods = [namespaces.add(f"p{i}") for i in range(6)]
    for i in range(5):
        node.add_ok(f"c{i}", pods[i])
    assert node.status().error.code == 50
    resp = node.add("c5", pods[5])
    assert resp.error.code == 11 and "exhausted" in resp.error.msg
    assert_nothing_left(node, pods[5], keep=5)
    assert not node.delete("c0", pods[0]).HasField("error")
    assert not node.status().HasField("error")
    assert pod_ip(node.add_ok("c5", pods[5])) == "10.244.9.2"  # the freed one, after wrapping


def test_status_and_version(namespaces, services, node):
    st = node.status()
    assert not st.HasField("error")
    assert (st.pod_cidr, st.gateway, st.bridge, st.mode, st.capacity) == (POD_CIDR, "10.244.1.1", "kubeling0",
                                                                          "host-gw", 253)
    v = node.stub.Version(cni_pb2.VersionRequest(cni_version="1.0.0"))
    assert "1.0.0" in v.supported_versions
    # A service with no pod CIDR yet (its API server unreachable) is not ready.
    waiting = services("node-wait", namespaces.add("wait"), "--server", "127.0.0.1:9")
    assert waiting.status().error.code == 50
    pod = namespaces.add("pod")
    assert waiting.add("c1", pod).error.code == 11


def test_200_add_del_cycles_leave_nothing(namespaces, node):
    pod = namespaces.add("pod")
    before_links = set(links(node.node_ns))
    node.add_ok("warm", pod)
    node.delete("warm", pod)
    before_links = set(links(node.node_ns))
    before_routes = route_keys(node.node_ns)
    for i in range(200):
        node.add_ok(f"cycle{i}", pod)
        resp = node.delete(f"cycle{i}", pod)
        assert not resp.HasField("error"), resp.error
    assert set(links(node.node_ns)) == before_links
    assert set(links(pod)) == {"lo"} and addresses(pod) == {"127.0.0.1/8"}
    assert addresses(node.node_ns) == {"10.244.1.1/24", "127.0.0.1/8"}
    # Compared without flags: the bridge route's "linkdown" follows carrier, which lags.
    assert route_keys(node.node_ns) == before_routes and routes(pod) == []
    assert node.ipam_files() == []
    assert "kubeling_hostport" not in nft_tables(node.node_ns)


# --- a failure half-way through Add ---------------------------------------------------------

def test_failed_add_releases_what_it_took(namespaces, tmp_path, monkeypatch):
    """The pod side fails after the veth pair exists: the pair and the address are given back."""
    from pyroute2.netlink.exceptions import NetlinkError

    from node_agent.network import network as network_mod
    from node_agent.network.config import NetworkConfig, port_mapping
    from node_agent.network.network import Attachment, PodNetwork

    node_ns, pod = namespaces.add("node"), namespaces.add("pod")

    async def broken(*args, **kwargs):
        raise NetlinkError(22, "Invalid argument (injected)")

    async def scenario():
        cfg = NetworkConfig(state_dir=str(tmp_path / "state")).with_subnet(POD_CIDR)
        async with PodNetwork(cfg, node_ns) as net:
            monkeypatch.setattr(network_mod, "configure_pod_side", broken)
            att = Attachment("c1", path_of(pod), "eth0", port_mappings=(port_mapping(8080, 80),))
            with pytest.raises(Exception) as e:
                await net.add(att)
            assert getattr(e.value, "code", None) == 100
            assert net.store(cfg).list() == []
            monkeypatch.undo()
            result = await net.add(att)  # and the same attachment works afterwards
            assert result["ips"][0]["address"] == "10.244.1.3/24"  # next after the one given back
            await net.delete(att)

    asyncio.run(scenario())
    veths = [n for n, l in links(node_ns).items() if l.get("linkinfo", {}).get("info_kind") == "veth"]
    assert veths == [] and set(links(pod)) == {"lo"}
    assert "kubeling_hostport" not in nft_tables(node_ns)


def test_concurrent_adds_get_distinct_addresses(namespaces, node):
    from concurrent.futures import ThreadPoolExecutor

    pods = [namespaces.add(f"cc{i}") for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: node.add(f"cc{i}", pods[i]), range(12)))
    assert all(not r.HasField("error") for r in results), [r.error for r in results if r.HasField("error")]
    ips = {pod_ip(r.result) for r in results}
    assert len(ips) == 12
    assert ping(pods[0], pod_ip(results[11].result))
    with ThreadPoolExecutor(12) as pool:
        dels = list(pool.map(lambda i: node.delete(f"cc{i}", pods[i]), range(12)))
    assert all(not d.HasField("error") for d in dels)
    assert_nothing_left(node)
