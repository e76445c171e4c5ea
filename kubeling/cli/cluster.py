"""`kubeling up` and `kubeling down`: a local cluster on this machine.

`up` starts every entry of `COMPONENTS`, in order, each detached in a session
of its own (so it outlives the command), on free loopback ports, with its log
in `<state>/logs/<name>.log`. It waits until each one works, records the
processes in `<state>/cluster.json`, and writes the client configuration.
`down` stops them all, newest first (SIGTERM to the process group, SIGKILL
after a timeout), and removes the record.

To add a component (scheduler, controllers, node agents), append a
`Component` whose `command` builds its argv from the `Context` (which knows
the etcd endpoint and the API server address) and, if it needs one, a
`ready` check. Nothing else changes: `down` stops whatever `up` recorded.

Nodes (`up --nodes N`, default 2): each node `node-i` is a network namespace
`kubeling-node-i` with an `eth0` at 10.250.0.(10+i) on a bridge
`kubeling-lan` in the host namespace (10.250.0.1) that plays the LAN. The
control plane stays in the host namespace and serves on 10.250.0.1, so the
nodes reach it over the LAN and the client uses the same address. Each node
runs `node_components(i)` inside its namespace (the network service, the
runtime, which hands it each pod sandbox, the node agent, the proxy), with state under
`<state>/nodes/node-i/` and cgroups under /kubeling/node-i; the test images
from deploy/images/ are imported into every node's runtime. `down` stops the
node agents, removes every pod through each node's runtime, stops the rest,
then removes whatever a crash may have left (conmon and runc containers,
mounts, cgroups, processes in the node's namespace) and the namespaces and
the bridge: nothing stays behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError
from kubeling.config import config_path, load_config, save_config, ConfigError

from .common import CliError

STATE_ENV = "KUBELING_STATE_DIR"
DEFAULT_NODES = 2
RECORD = "cluster.json"
API_READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 25


def default_state_dir() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/kubeling")
    return Path.home() / ".kubeling" / "state"


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    up = sub.add_parser("up", parents=parents, help="start a local cluster on this machine",
                        description="Start a local cluster (etcd and the control plane) in the "
                                    "background and point the client configuration at it.")
    up.add_argument("--state-dir", default=None,
                    help=f"where data, logs and the process record live (default: ${STATE_ENV}, "
                         "/var/lib/kubeling as root, else ~/.kubeling/state)")
    up.add_argument("--timeout", type=float, default=API_READY_TIMEOUT,
                    help="seconds to wait for each component to become ready")
    up.add_argument("--nodes", type=int, default=DEFAULT_NODES, metavar="N",
                    help=f"run N real nodes node-1..node-N, each in a network namespace of its own "
                         f"(default {DEFAULT_NODES}; needs root; 0 for the control plane only)")
    up.add_argument("--hollow-nodes", type=int, default=0, metavar="N",
                    help="also run N simulated nodes (no containers) for trying the control plane")
    up.set_defaults(run=run_up)
    down = sub.add_parser("down", parents=parents, help="stop the local cluster",
                          description="Stop every process `kubeling up` started.")
    down.add_argument("--state-dir", default=None, help="the state directory `up` used")
    down.add_argument("--purge", action="store_true",
                      help="also delete the state directory (etcd data and logs)")
    down.set_defaults(run=run_down)


# ------------------------------------------------------------------ processes

@dataclass
class Context:
    """What components need to know about each other while starting."""

    state_dir: Path
    timeout: float
    python: str = sys.executable
    etcd_endpoint: str = ""
    api_address: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass
class Process:
    """A started process, as recorded in cluster.json."""

    name: str
    pid: int
    pgid: int
    start_ticks: int  # /proc/<pid>/stat starttime: tells our process from a reused pid
    log: str
    detail: str = ""  # shown by `up`: "127.0.0.1:2379"

    def to_json(self) -> dict:
        return {"name": self.name, "pid": self.pid, "pgid": self.pgid,
                "start_ticks": self.start_ticks, "log": self.log, "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict) -> "Process":
        return cls(str(d["name"]), int(d["pid"]), int(d.get("pgid", d["pid"])),
                   int(d.get("start_ticks", 0)), str(d.get("log", "")), str(d.get("detail", "")))

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        return ticks is not None and (not self.start_ticks or ticks == self.start_ticks)


@dataclass(frozen=True)
class Component:
    """One process of the local cluster.

    Either `start` (a custom starter returning the Process) or `command`
    (argv from the Context; the process is spawned detached with its output
    in `<state>/logs/<name>.log`). `prepare` runs first (pick ports, ...);
    `ready` is awaited after the start and raises StartError on failure.
    """

    name: str
    command: Callable[[Context], list[str]] | None = None
    start: Callable[[Context], Process] | None = None
    prepare: Callable[[Context], None] | None = None
    ready: Callable[[Context, Process], Awaitable[None]] | None = None
    describe: Callable[[Context], str] | None = None
    attempts: int = 3  # tries when it dies at once (a port taken since we picked it)
    enabled: Callable[[Context], bool] | None = None  # None: always started


class StartError(Exception):
    """A component did not start; the message includes its log tail."""


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return None
    if rest[0] == b"Z":
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def _log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def spawn(ctx: Context, name: str, argv: list[str]) -> tuple[subprocess.Popen, Process]:
    """Start argv detached (own session and process group), output to its log."""
    ctx.logs.mkdir(parents=True, exist_ok=True)
    log_path = ctx.log_path(name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"--- kubeling up: {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd=str(ctx.state_dir),
                                    env=env)
        except OSError as e:
            raise StartError(f"{name}: cannot run {argv[0]}: {e.strerror}") from None
    ticks = _start_ticks(proc.pid) or 0
    return proc, Process(name, proc.pid, proc.pid, ticks, str(log_path))


# ------------------------------------------------------------------ components

def _start_etcd(ctx: Context) -> Process:
    from kubeling.local.etcd_server import EtcdServer, EtcdStartError

    ctx.logs.mkdir(parents=True, exist_ok=True)
    server = EtcdServer(ctx.state_dir / "etcd", log_path=ctx.log_path("etcd"))
    try:
        server.start(detach=True)
    except EtcdStartError as e:
        raise StartError(f"etcd did not start: {e}") from None
    ctx.etcd_endpoint = server.endpoint
    pid = server.pid
    assert pid is not None
    return Process("etcd", pid, pid, _start_ticks(pid) or 0, str(server.log_path),
                   detail=f"{server.endpoint}, data in {server.data_dir}")


def _pick_api_port(ctx: Context) -> None:
    from kubeling.local.etcd_server import find_free_port

    # With nodes, the API server serves on the LAN bridge (nodes reach it there,
    # and so does this host), never on every interface of the machine.
    host = LAN_HOST_ADDRESS if ctx.values.get("nodes") else "127.0.0.1"
    ctx.api_address = f"{host}:{find_free_port(host)}"


def _apiserver_command(ctx: Context) -> list[str]:
    argv = [ctx.python, "-m", "services.apiserver", "--etcd-servers", ctx.etcd_endpoint,
            "--bind", ctx.api_address]
    if ctx.values.get("nodes"):
        argv += ["--advertise-address", LAN_HOST_ADDRESS]
    return argv


async def api_answers(address: str, timeout: float = 2.0) -> bool:
    """True when the API server at address answers a Get of namespace default."""
    client = ApiClient(address, timeout=timeout)
    try:
        await client.get("namespaces", "default")
        return True
    except ApiError:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _wait_api(ctx: Context, proc: Process) -> None:
    deadline = time.monotonic() + ctx.timeout
    while True:
        if not proc.alive():
            raise StartError(f"{proc.name} exited before it was ready")
        if await api_answers(ctx.api_address):
            return
        if time.monotonic() >= deadline:
            raise StartError(f"{proc.name} did not answer on {ctx.api_address} within {ctx.timeout:.0f}s")
        await asyncio.sleep(0.2)


def _scheduler_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.scheduler", "--server", ctx.api_address]


def _controllers_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.controllers", "--server", ctx.api_address]


def _hollow_nodes_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "node_agent.hollow", "--server", ctx.api_address,
            "--count", str(ctx.values["hollow_nodes"])]


async def _stays_up(ctx: Context, proc: Process) -> None:
    """A client of the API server is ready when it has not died at start."""
    await asyncio.sleep(0.5)
    if not proc.alive():
        raise StartError(f"{proc.name} exited at start")


# Started in this order, stopped in the reverse order.
def _dns_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.dns", "--server", ctx.api_address,
            "--listen", f"{LAN_HOST_ADDRESS}:53"]


async def _publish_dns(ctx: Context, proc: Process) -> None:
    """The `kube-dns` Service in kube-system (10.96.0.10, as in Kubernetes)
    with Endpoints at the DNS server on the LAN; pods get it as nameserver."""
    from kubeling import objects

    await _stays_up(ctx, proc)
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    service = objects.from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": CLUSTER_DNS_IP,
                 "ports": [dict(p, targetPort=53) for p in ports]}})
    endpoints = objects.from_dict({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "subsets": [{"addresses": [{"ip": LAN_HOST_ADDRESS}], "ports": ports}]})
    async with ApiClient(ctx.api_address) as client:
        for obj in (service, endpoints):
            try:
                await client.create(obj)
            except ApiError as e:
                if "already exists" not in str(e):
                    raise StartError(f"could not publish cluster DNS: {e}") from None


COMPONENTS: list[Component] = [
    Component("etcd", start=_start_etcd, attempts=1),
    Component("apiserver", prepare=_pick_api_port, command=_apiserver_command, ready=_wait_api,
              describe=lambda ctx: f"listening on {ctx.api_address}"),
    Component("dns", command=_dns_command, ready=_publish_dns, attempts=1,
              enabled=lambda ctx: bool(ctx.values.get("nodes")),
              describe=lambda ctx: f"{LAN_HOST_ADDRESS}:53, Service kube-dns {CLUSTER_DNS_IP}"),
    Component("controller-manager", command=_controllers_command, ready=_stays_up, attempts=1),
    Component("scheduler", command=_scheduler_command, ready=_stays_up, attempts=1),
    Component("hollow-nodes", command=_hollow_nodes_command, ready=_stays_up, attempts=1,
              enabled=lambda ctx: ctx.values.get("hollow_nodes", 0) > 0,
              describe=lambda ctx: f"{ctx.values['hollow_nodes']} simulated nodes"),
]


# ------------------------------------------------------------------ nodes

CLUSTER_DNS_IP = "10.96.0.10"  # the kube-dns Service, as in Kubernetes
LAN_BRIDGE = "kubeling-lan"
LAN_NETWORK = ipaddress.IPv4Network("10.250.0.0/24")
LAN_HOST_ADDRESS = "10.250.0.1"  # the host's (and so the control plane's) address on the LAN
NODE_ADDRESS_OFFSET = 10  # node-i is 10.250.0.(10 + i)
MAX_NODES = 200
NODE_NETNS_PREFIX = "kubeling-node-"
NODE_LINK_PREFIX = "kl-node-"  # the host end of a node's veth, on the bridge
NODE_CGROUP_ROOT = "/kubeling"
NODE_SERVICE_PORT = 10250  # the node agent's Node service (logs, exec), as the kubelet's port
NETNS_DIR = Path("/run/netns")
CGROUP_FS = Path("/sys/fs/cgroup")
IMAGES_SUBDIR = "images"  # <state>/images: the test images, built once
_UNIX_PATH_MAX = 107


@dataclass
class LocalNode:
    """One node of the local cluster: its names, address and directories."""

    index: int
    state_root: Path  # <state>/nodes

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def netns(self) -> str:
        return f"{NODE_NETNS_PREFIX}{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def ip(self) -> str:
        return str(LAN_NETWORK.network_address + NODE_ADDRESS_OFFSET + self.index)

    @property
    def host_link(self) -> str:
        return f"{NODE_LINK_PREFIX}{self.index}"

    @property
    def dir(self) -> Path:
        return self.state_root / self.name

    @property
    def runtime_dir(self) -> Path:
        return self.dir / "runtime"

    @property
    def network_dir(self) -> Path:
        return self.dir / "network"

    @property
    def kubelet_dir(self) -> Path:
        return self.dir / "kubelet"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are short; a deep state dir gets its sockets under /run.
        if len(str(self.dir / "network.sock")) <= _UNIX_PATH_MAX:
            return self.dir
        import hashlib
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path("/run/kubeling") / digest

    @property
    def runtime_endpoint(self) -> str:
        return f"unix://{self.socket_dir / 'runtime.sock'}"

    @property
    def network_endpoint(self) -> str:
        return f"unix://{self.socket_dir / 'network.sock'}"

    @property
    def cgroup_root(self) -> str:
        return f"{NODE_CGROUP_ROOT}/{self.name}"

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "netns": self.netns, "ip": self.ip,
                "dir": str(self.dir), "runtime_endpoint": self.runtime_endpoint,
                "cgroup_root": self.cgroup_root}

    @classmethod
    def from_json(cls, d: dict) -> "LocalNode":
        return cls(int(d["index"]), Path(d["dir"]).parent)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise StartError(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc


def _link_exists(name: str, netns: str | None = None) -> bool:
    args = (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return _ip(*args, check=False).returncode == 0


def check_node_prerequisites(count: int) -> None:
    """CliError naming what is missing for `count` real nodes."""
    if count < 0:
        raise CliError("--nodes must be 0 or more")
    if count > MAX_NODES:
        raise CliError(f"--nodes must be at most {MAX_NODES}")
    if count == 0:
        return
    if os.geteuid() != 0:
        raise CliError("--nodes needs root (network namespaces, runc, cgroups); "
                       "run as root, or use --nodes 0 for the control plane only")
    missing = [tool for tool in ("ip", "nsenter", "runc", "conmon", "nft") if not shutil.which(tool)]
    if missing:
        raise CliError(f"--nodes needs {', '.join(missing)} on this machine "
                       f"(see deploy/install-deps.sh), or use --nodes 0")


def create_lan(nodes: list[LocalNode]) -> None:
    """The bridge with the host's address, and each node's namespace wired to it.

    Idempotent: what exists and is right is kept. A namespace of a node name
    that this cluster does not own (another cluster's) is refused before
    anything is made.
    """
    for node in nodes:
        if node.netns_path.exists() and not _owned(node):
            raise StartError(f"network namespace {node.netns} already exists: another local cluster "
                             f"with nodes is running (stop it with `kubeling down`), or remove it "
                             f"with `ip netns delete {node.netns}`")
    if not _link_exists(LAN_BRIDGE):
        _ip("link", "add", LAN_BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{LAN_HOST_ADDRESS}/{LAN_NETWORK.prefixlen}", "dev", LAN_BRIDGE)
    _ip("link", "set", LAN_BRIDGE, "up")
    for node in nodes:
        node.dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "owner").write_text(f"{_netns_marker()}\n")
        if not node.netns_path.exists():
            _ip("netns", "add", node.netns)
        _ip("-n", node.netns, "link", "set", "lo", "up")
        if not _link_exists("eth0", node.netns):
            if _link_exists(node.host_link):
                _ip("link", "del", node.host_link)
            _ip("link", "add", node.host_link, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _ip("link", "set", node.host_link, "master", LAN_BRIDGE, "up")
        _ip("-n", node.netns, "addr", "replace", f"{node.ip}/{LAN_NETWORK.prefixlen}", "dev", "eth0")
        _ip("-n", node.netns, "link", "set", "eth0", "up")
        node.socket_dir.mkdir(parents=True, exist_ok=True)
        for sub in (node.runtime_dir, node.network_dir, node.kubelet_dir):
            sub.mkdir(parents=True, exist_ok=True)


def _netns_marker() -> str:
    return "kubeling local cluster"


def _owned(node: LocalNode) -> bool:
    """The node's namespace was made by this state dir (its owner file says so)."""
    try:
        return (node.dir / "owner").read_text().strip() == _netns_marker()
    except OSError:
        return False


def _in_node(node: LocalNode, ctx: Context, *argv: str) -> list[str]:
    """argv run inside the node's network namespace (only that: same mounts, same cgroups)."""
    return ["nsenter", f"--net={node.netns_path}", "--", ctx.python, *argv]


def _node(ctx: Context, index: int) -> LocalNode:
    return ctx.values["nodes"][index - 1]


def _runtime_command(index: int) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        node = _node(ctx, index)
        return _in_node(node, ctx, "-m", "node_agent.runtime", "--listen", node.runtime_endpoint,
                        "--state-dir", str(node.runtime_dir), "--cgroup-root", node.cgroup_root,
                        "--network-endpoint", node.network_endpoint)
    return command


def _network_command(index: int) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        node = _node(ctx, index)
        return _in_node(node, ctx, "-m", "node_agent.network", "--listen", node.network_endpoint,
                        "--node-name", node.name, "--state-dir", str(node.network_dir),
                        "--server", ctx.api_address, "--netns", node.netns)
    return command


def _kubelet_command(index: int) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        node = _node(ctx, index)
        return _in_node(node, ctx, "-m", "node_agent.kubelet", "--server", ctx.api_address,
                        "--node-name", node.name, "--node-ip", node.ip,
                        "--container-runtime-endpoint", node.runtime_endpoint,
                        "--network-endpoint", node.network_endpoint,
                        "--state-dir", str(node.kubelet_dir), "--cluster-dns", CLUSTER_DNS_IP)
    return command


def _proxy_command(index: int) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        node = _node(ctx, index)
        return _in_node(node, ctx, "-m", "node_agent.proxy", "--server", ctx.api_address,
                        "--node-name", node.name, "--netns", node.netns)
    return command


def _wait_runtime(index: int):
    async def ready(ctx: Context, proc: Process) -> None:
        node = _node(ctx, index)
        from kubeling.cri.v1 import api_pb2 as cri, api_pb2_grpc as cri_grpc

        deadline = time.monotonic() + ctx.timeout
        async with _grpc_channel(node.runtime_endpoint) as channel:
            stub = cri_grpc.RuntimeServiceStub(channel)
            while True:
                if not proc.alive():
                    raise StartError(f"{proc.name} exited before it was ready")
                try:
                    await stub.Version(cri.VersionRequest(), timeout=1)
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    if time.monotonic() >= deadline:
                        raise StartError(f"{proc.name} did not answer on {node.runtime_endpoint} "
                                         f"within {ctx.timeout:.0f}s") from None
                    await asyncio.sleep(0.1)
            await _import_images(ctx, node, channel)
    return ready


@contextlib.asynccontextmanager
async def _grpc_channel(endpoint: str):
    import grpc

    channel = grpc.aio.insecure_channel(endpoint)
    try:
        yield channel
    finally:
        await channel.close()


def build_test_images(ctx: Context) -> dict[str, Path]:
    """The test images (OCI layouts) from deploy/images/build.py, built once
    into <state>/images; {} when this is not a source checkout."""
    out = ctx.state_dir / IMAGES_SUBDIR
    built = {"localhost/kubeling/shell:1": out / "shell", "localhost/kubeling/http:1": out / "http",
             "localhost/kubeling/http:2": out / "http2"}
    if all((p / "index.json").exists() for p in built.values()):
        return built
    if "images" in ctx.values:
        return ctx.values["images"]
    script = Path(__file__).resolve().parents[2] / "deploy" / "images" / "build.py"
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not script.exists() or not os.path.exists(busybox):
        print("warning: the test images cannot be built here (no deploy/images/build.py or busybox); "
              "import images with `kubeling images import`", file=sys.stderr)
        ctx.values["images"] = {}
        return {}
    proc = subprocess.run([ctx.python, str(script), "--out", str(out), "--busybox", busybox],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise StartError(f"building the test images failed: {proc.stderr.strip()}")
    ctx.values["images"] = built
    return built


async def _import_images(ctx: Context, node: LocalNode, channel) -> None:
    from kubeling.cri.v1 import images_pb2, images_pb2_grpc

    images = await asyncio.to_thread(build_test_images, ctx)
    stub = images_pb2_grpc.ImageImportServiceStub(channel)
    for name, layout in images.items():
        try:
            await stub.ImportImage(images_pb2.ImportImageRequest(path=str(layout), name=name),
                                   timeout=max(ctx.timeout, 60))
        except Exception as e:  # noqa: BLE001 - reported with the image's name
            details = e.details() if hasattr(e, "details") else str(e)
            raise StartError(f"importing {name} into {node.name} failed: {details}") from None


async def _wait_socket(ctx: Context, proc: Process, endpoint: str) -> None:
    path = endpoint.removeprefix("unix://")
    deadline = time.monotonic() + ctx.timeout
    while not os.path.exists(path):
        if not proc.alive():
            raise StartError(f"{proc.name} exited before it was ready")
        if time.monotonic() >= deadline:
            raise StartError(f"{proc.name} did not listen on {endpoint} within {ctx.timeout:.0f}s")
        await asyncio.sleep(0.1)


def _wait_network(index: int):
    async def ready(ctx: Context, proc: Process) -> None:
        await _wait_socket(ctx, proc, _node(ctx, index).network_endpoint)
    return ready


def _wait_node_ready(index: int):
    """The node agent registered its Node and reports it Ready."""
    async def ready(ctx: Context, proc: Process) -> None:
        node = _node(ctx, index)
        deadline = time.monotonic() + max(ctx.timeout, 60)
        last = "not registered"
        async with ApiClient(ctx.api_address, timeout=5) as client:
            while True:
                if not proc.alive():
                    raise StartError(f"{proc.name} exited before its node was Ready")
                try:
                    obj = await client.get("nodes", node.name, namespace="")
                    cond = next((c for c in obj.status.conditions if c.type == "Ready"), None)
                    if cond is not None and cond.status == "True":
                        await _route_pod_cidr(client, node)
                        return
                    last = f"Ready={cond.status} ({cond.reason}: {cond.message})" if cond else "no Ready condition"
                except ApiError as e:
                    last = str(e)
                if time.monotonic() >= deadline:
                    raise StartError(f"node {node.name} did not become Ready: {last}")
                await asyncio.sleep(0.2)
    return ready


async def _route_pod_cidr(client: ApiClient, node: LocalNode, wait: float = 5.0) -> None:
    """Route the node's pod CIDR from the host to the node, as the nodes route
    to each other: pods are reachable from this machine, and traffic to them
    never follows the default route off it. The route goes with the bridge."""
    deadline = time.monotonic() + wait
    while True:
        obj = await client.get("nodes", node.name, namespace="")
        cidr = obj.spec.pod_cidr
        if cidr:
            _ip("route", "replace", cidr, "via", node.ip, "dev", LAN_BRIDGE, check=False)
            return
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.2)


def node_components(index: int) -> list[Component]:
    """The processes of node `index`, in start order."""
    def describe(ctx: Context) -> str:
        node = _node(ctx, index)
        return f"{node.name} at {node.ip} in network namespace {node.netns}"

    name = f"node-{index}"
    return [
        Component(f"network-{name}", command=_network_command(index), ready=_wait_network(index),
                  attempts=1),
        Component(f"runtime-{name}", command=_runtime_command(index), ready=_wait_runtime(index),
                  attempts=1),
        Component(f"kubelet-{name}", command=_kubelet_command(index), ready=_wait_node_ready(index),
                  attempts=1, describe=describe),
        Component(f"proxy-{name}", command=_proxy_command(index), ready=_stays_up, attempts=1),
    ]


# The node agents and proxies stop first (nothing recreates pods), then every
# pod is removed through its node's runtime, then the rest stop.
_NODE_AGENT_PREFIXES = ("kubelet-node-", "proxy-node-")


def _remove_pods(node: LocalNode, report: bool) -> None:
    """Every sandbox and container on the node, removed through its runtime."""
    import grpc

    from kubeling.cri.v1 import api_pb2 as cri, api_pb2_grpc as cri_grpc

    if not os.path.exists(node.runtime_endpoint.removeprefix("unix://")):
        return
    removed = 0
    with grpc.insecure_channel(node.runtime_endpoint) as channel:
        rt = cri_grpc.RuntimeServiceStub(channel)
        try:
            for sandbox in rt.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10).items:
                with contextlib.suppress(grpc.RpcError):
                    rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
                rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
                removed += 1
            for c in rt.ListContainers(cri.ListContainersRequest(), timeout=10).containers:
                rt.RemoveContainer(cri.RemoveContainerRequest(container_id=c.id), timeout=60)
        except grpc.RpcError as e:
            if report:
                print(f"{node.name}: removing pods through the runtime failed ({e.details()}); "
                      f"cleaning up directly", file=sys.stderr)
    if report and removed:
        print(f"{node.name}: removed {removed} pod sandbox{'es' if removed != 1 else ''}", flush=True)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _pids_in_netns(path: Path) -> list[int]:
    try:
        target = os.stat(path)
    except OSError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry.name}/ns/net")
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                pids.append(int(entry.name))
    return pids


def _conmon_pids(runtime_dir: Path) -> list[int]:
    needle = str(runtime_dir).encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if argv and argv[0].endswith(b"conmon") and any(needle in a for a in argv):
                pids.append(int(entry.name))
    return pids


def _cgroup_dirs(path: str) -> list[Path]:
    rel = path.strip("/")
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS / rel]
    return [h / rel for h in sorted(CGROUP_FS.iterdir()) if h.is_dir() and not h.is_symlink()]


def _remove_cgroup(path: str) -> list[str]:
    left = []
    for top in _cgroup_dirs(path):
        if not top.exists():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                left.append(f"{dirpath}: {e.strerror}")
    return left


def _clean_node(node: LocalNode, report: bool) -> list[str]:
    """Remove whatever the node's processes left: containers, mounts, cgroups,
    processes in its namespace, the namespace itself. Returns what could not go."""
    problems = []
    owned = _owned(node)  # a namespace of this name that another cluster made is left alone
    in_netns = _pids_in_netns(node.netns_path) if owned else []
    for pid in _conmon_pids(node.runtime_dir) + in_netns:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runc_root = node.runtime_dir / "runc"
    if runc_root.exists() and shutil.which("runc"):
        ids = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True,
                             text=True).stdout.split()
        for cid in ids:
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid],
                           capture_output=True)
    for point in _mounts_under(node.dir):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if not owned:
        return problems
    # Processes just killed leave their cgroups a moment later.
    deadline = time.monotonic() + 5
    while True:
        left = _remove_cgroup(node.cgroup_root)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    problems += [f"cgroup {p}" for p in left]
    if node.netns_path.exists():
        proc = _ip("netns", "delete", node.netns, check=False)
        if proc.returncode != 0:
            problems.append(f"network namespace {node.netns}: {proc.stderr.strip()}")
        elif report:
            print(f"{node.name}: removed network namespace {node.netns}", flush=True)
    if _link_exists(node.host_link):
        _ip("link", "del", node.host_link, check=False)
    # IP allocations are for pods that no longer exist.
    shutil.rmtree(node.network_dir, ignore_errors=True)
    if node.socket_dir != node.dir:
        shutil.rmtree(node.socket_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        (node.dir / "owner").unlink()
    return problems


def _remove_lan(report: bool) -> None:
    """The bridge, unless nodes of another cluster still use it."""
    if any(p.name.startswith(NODE_NETNS_PREFIX) for p in NETNS_DIR.glob("*")):
        return
    if _link_exists(LAN_BRIDGE):
        _ip("link", "del", LAN_BRIDGE, check=False)
        if report:
            print(f"removed bridge {LAN_BRIDGE}", flush=True)
    # The parent of the nodes' cgroups, once no node uses it.
    for top in _cgroup_dirs(NODE_CGROUP_ROOT):
        with contextlib.suppress(OSError):
            top.rmdir()


def tear_down(record: dict, report: bool) -> None:
    """Stop everything `up` recorded and remove the nodes: the order that leaves nothing."""
    processes = [Process.from_json(p) for p in record.get("processes", [])]
    nodes = [LocalNode.from_json(n) for n in record.get("nodes", [])]
    agents = [p for p in processes if p.name.startswith(_NODE_AGENT_PREFIXES)]
    _stop_all(agents, report)
    for node in nodes:
        _remove_pods(node, report)
    _stop_all([p for p in processes if p not in agents], report)
    problems = []
    for node in nodes:
        problems += _clean_node(node, report)
    if nodes or record.get("lan"):
        _remove_lan(report)
    for problem in problems:
        print(f"warning: could not remove {problem}", file=sys.stderr)


# ------------------------------------------------------------------ state

@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another kubeling up/down on {state_dir} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_record(state_dir: Path) -> dict | None:
    path = state_dir / RECORD
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CliError(f"{path} is unreadable ({e}); remove it after checking no cluster "
                       f"processes are left running") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise CliError(f"{path} is not a kubeling cluster record")
    return data


def _write_record(state_dir: Path, record: dict) -> None:
    path = state_dir / RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _state_dir(args: argparse.Namespace) -> Path:
    return (Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()).absolute()


# ------------------------------------------------------------------ stopping

def stop_process(p: Process, timeout: float = STOP_TIMEOUT) -> str:
    """SIGTERM the process group, SIGKILL after `timeout`. Returns what happened."""
    if not p.alive():
        return "was not running"
    group = p.pgid if p.pgid > 1 and _pgid(p.pid) == p.pgid else None

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group is not None:
                os.killpg(group, sig)
            else:
                os.kill(p.pid, sig)

    send(signal.SIGTERM)
    if _wait_gone(p, group, timeout):
        return "stopped"
    send(signal.SIGKILL)
    _wait_gone(p, group, 5.0)
    return "killed (it did not stop within %ds of SIGTERM)" % timeout


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _group_alive(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if rest[0] != b"Z" and int(rest[2]) == pgid:
            return True
    return False


def _wait_gone(p: Process, group: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)
        if not p.alive() and (group is None or not _group_alive(group)):
            return True
        time.sleep(0.05)
    return False


def _stop_all(processes: list[Process], report: bool) -> None:
    for p in reversed(processes):
        outcome = stop_process(p)
        if report:
            print(f"{p.name} (pid {p.pid}) {outcome}", flush=True)


# ------------------------------------------------------------------ up

async def run_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    config_file = config_path(args.config)
    with _locked(state_dir):
        record = _read_record(state_dir)
        if record is not None:
            processes = [Process.from_json(p) for p in record["processes"]]
            server = record.get("server", "")
            if (processes and all(p.alive() for p in processes) and server
                    and await api_answers(server)):
                save_config(server=server, path=config_file)
                print(f"a local cluster from {state_dir} is already running; "
                      f"API server at {server}")
                print(f"client configuration: {config_file}")
                return 0
            print(f"found a local cluster in {state_dir} that is not working; restarting it",
                  file=sys.stderr)
            tear_down(record, report=False)
            (state_dir / RECORD).unlink(missing_ok=True)

        ctx = Context(state_dir=state_dir, timeout=args.timeout)
        if args.hollow_nodes < 0:
            raise CliError("--hollow-nodes must be 0 or more")
        check_node_prerequisites(args.nodes)
        ctx.values["hollow_nodes"] = args.hollow_nodes
        nodes = [LocalNode(i, state_dir / "nodes") for i in range(1, args.nodes + 1)]
        ctx.values["nodes"] = nodes
        ctx.logs.mkdir(parents=True, exist_ok=True)
        record = {"state_dir": str(state_dir), "server": "", "config": str(config_file),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "processes": [],
                  "nodes": [n.to_json() for n in nodes], "lan": LAN_BRIDGE if nodes else ""}
        components = COMPONENTS + [c for n in nodes for c in node_components(n.index)]
        started: list[Process] = []
        try:
            if nodes:
                _write_record(state_dir, record)  # first, so that `down` can undo a half-made LAN
                create_lan(nodes)
                print(f"LAN {LAN_NETWORK} on bridge {LAN_BRIDGE}: "
                      + ", ".join(f"{n.name} {n.ip}" for n in nodes), flush=True)
            for component in components:
                if component.enabled is not None and not component.enabled(ctx):
                    continue
                proc = await _start_component(ctx, component)
                started.append(proc)
                record["processes"] = [p.to_json() for p in started]
                record["server"] = ctx.api_address
                record["etcd"] = ctx.etcd_endpoint
                _write_record(state_dir, record)
                detail = component.describe(ctx) if component.describe else proc.detail
                print(f"{component.name} started (pid {proc.pid}{', ' + detail if detail else ''})",
                      flush=True)
        except BaseException as e:
            record["processes"] = [p.to_json() for p in started]
            tear_down(record, report=False)
            (state_dir / RECORD).unlink(missing_ok=True)
            if isinstance(e, StartError):
                raise CliError(f"{e}\n(nothing is left running; logs are in {ctx.logs})") from None
            raise
        path = save_config(server=ctx.api_address, path=config_file)
    print()
    print(f"kubeling is running: API server at {ctx.api_address}")
    if nodes:
        print(f"  nodes:                    {', '.join(n.name for n in nodes)} "
              f"(network namespaces {NODE_NETNS_PREFIX}1..{len(nodes)}, bridge {LAN_BRIDGE})")
    print(f"  state (etcd data, logs):  {state_dir}")
    print(f"  client configuration:     {path}")
    print()
    print("Try:")
    print("  kubeling get nodes")
    print("  kubeling apply -f app.yaml")
    print("  kubeling down            # stop it (add --purge to delete its data)")
    return 0


async def _start_component(ctx: Context, component: Component) -> Process:
    last_error = None
    for attempt in range(max(1, component.attempts)):
        if component.prepare is not None:
            component.prepare(ctx)
        if component.start is not None:
            proc = await asyncio.to_thread(component.start, ctx)
            popen = None
        else:
            assert component.command is not None
            popen, proc = spawn(ctx, component.name, component.command(ctx))
        try:
            if component.ready is not None:
                await component.ready(ctx, proc)
            return proc
        except StartError as e:
            stop_process(proc, timeout=3.0)
            if popen is not None:
                with contextlib.suppress(Exception):
                    popen.wait(1)
            tail = _log_tail(proc.log)
            last_error = StartError(f"{e}\n--- tail of {proc.log}:\n{tail}")
            if "address already in use" not in tail.lower() and "failed to bind" not in tail.lower():
                break
        except BaseException:
            stop_process(proc, timeout=3.0)
            raise
    assert last_error is not None
    raise last_error


# ------------------------------------------------------------------ restart

async def restart_components(state_dir: Path, names: list[str],
                             timeout: float = API_READY_TIMEOUT) -> list[Process]:
    """Start again components of a running local cluster that have stopped
    (killed, crashed), with the commands `up` gave them: the API server on
    its recorded address, a node's processes in its namespace. Each is
    waited for as at `up` (a node agent until its Node is Ready), in `up`'s
    order, and the record is updated; one still running is left alone.
    etcd is not restarted here. Returns the processes started."""
    with _locked(state_dir):
        record = _read_record(state_dir)
        if record is None:
            raise CliError(f"no local cluster is running (state dir {state_dir})")
        nodes = [LocalNode.from_json(n) for n in record.get("nodes", [])]
        ctx = Context(state_dir=state_dir, timeout=timeout, api_address=record.get("server", ""),
                      etcd_endpoint=record.get("etcd", ""))
        ctx.values["nodes"] = nodes
        if not ctx.etcd_endpoint:  # a record from before the endpoint was kept
            etcd = next((p for p in record["processes"] if p.get("name") == "etcd"), {})
            ctx.etcd_endpoint = str(etcd.get("detail", "")).split(",")[0]
        components = {c.name: c for c in COMPONENTS + [c for n in nodes for c in node_components(n.index)]}
        unknown = [n for n in names if n not in components or components[n].command is None
                   or n == "hollow-nodes"]
        if unknown:
            raise CliError(f"cannot restart {', '.join(unknown)}: not a restartable component "
                           f"of this cluster")
        processes = [Process.from_json(p) for p in record["processes"]]
        started = []
        for name, component in components.items():
            if name not in names:
                continue
            old = next((p for p in processes if p.name == name), None)
            if old is not None and old.alive():
                continue
            _, proc = spawn(ctx, name, component.command(ctx))
            try:
                if component.ready is not None:
                    await component.ready(ctx, proc)
            except BaseException:
                stop_process(proc, timeout=3.0)
                raise
            started.append(proc)
            processes = [proc if p.name == name else p for p in processes]
            if old is None:
                processes.append(proc)
            record["processes"] = [p.to_json() for p in processes]
            _write_record(state_dir, record)
        return started


# ------------------------------------------------------------------ down

async def run_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if not state_dir.exists():
        print(f"no local cluster is running (no state in {state_dir})")
        return 0
    with _locked(state_dir):
        record = _read_record(state_dir)
        if record is None:
            print(f"no local cluster is running (state dir {state_dir})")
        else:
            tear_down(record, report=True)
            (state_dir / RECORD).unlink(missing_ok=True)
            _forget_config(record)
        if args.purge:
            shutil.rmtree(state_dir, ignore_errors=True)
            print(f"deleted {state_dir}")
        elif record is not None:
            print(f"data kept in {state_dir} (use --purge to delete it)")
    return 0


def _forget_config(record: dict) -> None:
    """Remove the client configuration `up` wrote, if it still names this cluster."""
    path = record.get("config")
    server = record.get("server")
    if not path or not server:
        return
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    if cfg.server == server:
        with contextlib.suppress(OSError):
            Path(path).unlink()
            print(f"removed client configuration {path}")
