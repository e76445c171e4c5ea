"""The cluster of one `make e2e` run, reached as its users reach it.

- `Cluster.kubeling(...)`: the CLI, `.venv/bin/kubeling`, against the run's
  own state directory and client configuration (nothing of the machine's
  own cluster is touched).
- `Cluster.api`: the public gRPC API through `kubeling.client.api_client`,
  from a background event loop, for watching figures closely.
- What an operator does on the machine: kill a container's process
  (`kill_container_process`), a whole node (`kill_node`: its agent,
  runtime, network service and proxy, and every container it runs), the
  control plane (`kill_processes`), and start them again as `kubeling up`
  started them (`restart`).
- `leftovers`: whatever of the cluster is still on the machine after
  `kubeling down`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError, NotFoundError

ROOT = Path(__file__).resolve().parents[3]
KUBELING = ROOT / ".venv" / "bin" / "kubeling"
if not KUBELING.exists():
    KUBELING = Path(sys.executable).parent / "kubeling"

NODE_NETNS_PREFIX = "kubeling-node-"
LAN_BRIDGE = "kubeling-lan"
NODE_LINK_PREFIX = "kl-node-"
NODE_COMPONENTS = ("network", "runtime", "kubelet", "proxy")  # `up`'s start order


# ------------------------------------------------------------------ reporting

def report(config: pytest.Config | None, line: str) -> None:
    """Print a line now, on the terminal, whether or not pytest captures output."""
    capman = config.pluginmanager.getplugin("capturemanager") if config else None
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(line, flush=True)
    else:
        print(line, flush=True)


# ------------------------------------------------------------------ waiting

def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             details: Callable[[], str] = lambda: "", interval: float = 0.25) -> Any:
    """The first truthy value of predicate(); AssertionError naming `what` after `timeout`.
    An ApiError from the predicate (the API server restarting) counts as not yet."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ApiError as e:
            last_error = f" (last error: {e})"
        if time.monotonic() >= deadline:
            extra = ""
            with contextlib.suppress(Exception):
                extra = details()
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{last_error}\n{extra}")
        time.sleep(interval)


# ------------------------------------------------------------------ objects

def pod_ready(pod) -> bool:
    return (pod.status.phase == "Running" and not pod.metadata.HasField("deletion_timestamp")
            and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions))


def terminating(obj) -> bool:
    return obj.metadata.HasField("deletion_timestamp")


def node_ready(node) -> str:
    """The status of the Node's Ready condition: True, False, Unknown or ''."""
    return next((c.status for c in node.status.conditions if c.type == "Ready"), "")


def endpoint_ips(endpoints) -> set[str]:
    return {a.ip for s in endpoints.subsets for a in s.addresses}


def container_id(pod, name: str = "") -> str:
    """The runtime id of the pod's container (its first, or `name`), without the `kubeling://`."""
    for c in pod.status.container_statuses:
        if not name or c.name == name:
            return c.container_id.split("://", 1)[-1]
    return ""


def restart_count(pod) -> int:
    return sum(c.restart_count for c in pod.status.container_statuses)


# ------------------------------------------------------------------ the API

class Api:
    """The cluster's gRPC API from a background event loop, called synchronously."""

    def __init__(self, config: Path):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-api", daemon=True)
        self._thread.start()
        self._client: ApiClient = self._run(self._connect(str(config)))

    @staticmethod
    async def _connect(config: str) -> ApiClient:
        return ApiClient.from_config(config, timeout=10)

    def _run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def list(self, resource: str, namespace: str = "", selector: str = "") -> list:
        return self._run(self._client.list_all(resource, namespace=namespace, label_selector=selector)).items

    def get(self, resource: str, name: str, namespace: str = "default"):
        """The object, or None when there is none."""
        try:
            return self._run(self._client.get(resource, name, namespace=namespace))
        except NotFoundError:
            return None

    def when_added(self, resource: str, namespace: str, selector: str,
                   action: Callable[[], None]) -> "concurrent.futures.Future":
        """Call `action` (on the API's loop thread) the moment a new object
        matching `selector` is created; the future gives that object."""
        rv = self._run(self._client.list(resource, namespace=namespace,
                                         label_selector=selector)).resource_version

        async def follow():
            stream = self._client.watch(resource, namespace, selector, resource_version=rv)
            try:
                async for event in stream:
                    if event.type == "ADDED":
                        action()
                        return event.object
            finally:
                stream.cancel()
        return asyncio.run_coroutine_threadsafe(follow(), self._loop)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._client.close(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- views the scenarios share

    def pods(self, namespace: str, selector: str = "") -> list:
        return self.list("pods", namespace, selector)

    def ready_pods(self, namespace: str, selector: str) -> list:
        return [p for p in self.pods(namespace, selector) if pod_ready(p)]

    def endpoint_ips(self, namespace: str, name: str) -> set[str]:
        ep = self.get("endpoints", name, namespace)
        return endpoint_ips(ep) if ep is not None else set()

    def nodes(self) -> dict[str, Any]:
        return {n.metadata.name: n for n in self.list("nodes")}


# ------------------------------------------------------------------ the cluster

class Cluster:
    """One local cluster in a temporary directory of its own."""

    def __init__(self, tmp: Path, nodes: int = 3):
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "config"
        self.node_count = nodes
        self.env = dict(os.environ, KUBELING_CONFIG=str(self.config), KUBELING_STATE_DIR=str(self.state))
        self.api: Api | None = None
        self.record: dict = {}
        self.tables_before: set[str] = set()  # the host's kubeling* nftables tables before `up`

    # --- the CLI

    def kubeling(self, *args: str, ok: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        _wait_for_cli()
        proc = subprocess.run([str(KUBELING), *args], capture_output=True, text=True, env=self.env,
                              cwd=self.tmp, timeout=timeout, input=input)
        assert "Traceback" not in proc.stderr, f"kubeling {' '.join(args)}:\n{proc.stderr}"
        if ok:
            assert proc.returncode == 0, (f"kubeling {' '.join(args)} exited {proc.returncode}:\n"
                                          f"{proc.stdout}\n{proc.stderr}")
        return proc

    def kubeling_bg(self, *args: str) -> subprocess.Popen:
        _wait_for_cli()
        return subprocess.Popen([str(KUBELING), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env, cwd=self.tmp)

    def apply(self, manifest: str) -> str:
        return self.kubeling("apply", "-f", "-", input=manifest).stdout

    def exec(self, pod: str, namespace: str, *command: str, ok: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return self.kubeling("exec", pod, "-n", namespace, "--", *command, ok=ok, timeout=timeout)

    # --- life

    def other_cluster(self) -> str:
        """What of another local cluster with nodes is on this machine (its
        namespaces and bridge have the same names as ours), or ''."""
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found = [line.split()[0] for line in netns.splitlines() if line.startswith(NODE_NETNS_PREFIX)]
        if Path(f"/sys/class/net/{LAN_BRIDGE}").exists():
            found.append(LAN_BRIDGE)
        return ", ".join(found)

    def up(self) -> str:
        out = self.kubeling("up", "--nodes", str(self.node_count), timeout=600).stdout
        self.record = self.read_record()
        self.api = Api(self.config)
        return out

    def down(self) -> subprocess.CompletedProcess:
        """`kubeling down`; should the CLI be gone (a virtual environment being
        rebuilt under us), the same teardown in this process, from the record."""
        if self.api is not None:
            self.api.close()
            self.api = None
        try:
            return self.kubeling("down", ok=False, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            from kubeling.cli.cluster import tear_down

            tear_down(self.record, report=True)
            with contextlib.suppress(OSError):
                (self.state / "cluster.json").unlink()
            return subprocess.CompletedProcess(["kubeling", "down"], 1, "",
                                               f"kubeling down could not run ({e}); tore down in-process")

    def purge(self) -> None:
        """`kubeling down --purge` (nothing runs any more), and the run's directory."""
        with contextlib.suppress(OSError, subprocess.SubprocessError, AssertionError):
            self.kubeling("down", "--purge", ok=False, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def read_record(self) -> dict:
        record = json.loads((self.state / "cluster.json").read_text())
        self.record = record  # the latest, for a teardown without the file
        return record

    def process(self, name: str) -> dict:
        rec = self.read_record()
        found = next((p for p in rec["processes"] if p["name"] == name), None)
        assert found is not None, f"no process {name} in {self.state / 'cluster.json'}"
        return found

    def node_dir(self, node: str) -> Path:
        return self.state / "nodes" / node

    def logs_tail(self, names: Iterable[str] = (), lines: int = 20) -> str:
        out = []
        for log in sorted((self.state / "logs").glob("*.log")):
            if names and log.stem not in names:
                continue
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- what an operator does on the machine

    def killer(self, names: Iterable[str]) -> Callable[[], None]:
        """A function that SIGKILLs each recorded component's process group at
        once, as a crash does, and waits until they are gone."""
        processes = [self.process(name) for name in names]

        def kill() -> None:
            for p in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p["pgid"], signal.SIGKILL)
            for p in processes:
                wait_for(lambda: not _alive(p["pid"], p.get("start_ticks", 0)), 15, f"{p['name']} to die",
                         interval=0.02)
        return kill

    def kill_processes(self, names: Iterable[str]) -> None:
        self.killer(names)()

    def kill_node(self, node: str) -> int:
        """Stop a whole node at once, as a power loss would: SIGKILL to its
        node agent, proxy, runtime and network service, then to every conmon
        of its runtime and every process in its cgroup (its containers).
        Returns how many container-side processes were killed."""
        self.kill_processes([f"{c}-{node}" for c in ("kubelet", "proxy", "runtime", "network")])
        runtime_dir = str(self.node_dir(node) / "runtime").encode()
        cgroup = f"/kubeling/{node}/"
        killed: set[int] = set()
        for _ in range(3):  # until nothing is left (a dying conmon may still have forked)
            found = 0
            for pid in _pids():
                argv = _cmdline(pid)
                if (argv and argv[0].endswith(b"conmon") and any(runtime_dir in a for a in argv)) \
                        or any(cgroup in line for line in _cgroups(pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        if pid not in killed:
                            found += 1
                        killed.add(pid)
            if not found:
                break
            time.sleep(0.2)
        return len(killed)

    def container_processes(self, node: str, cid: str) -> list[tuple[int, str]]:
        """(host pid, command name) of every process of the container `cid`
        on `node`, found through its cgroup, as an operator finds them."""
        found = []
        suffix = f"/{cid[:16]}"
        prefix = f"/kubeling/{node}/"
        for pid in _pids():
            for line in _cgroups(pid):
                path = line.split(":", 2)[-1]
                if path.startswith(prefix) and path.endswith(suffix):
                    with contextlib.suppress(OSError):
                        found.append((pid, Path(f"/proc/{pid}/comm").read_text().strip()))
                    break
        return found

    def runc_containers(self, node: str) -> set[str]:
        """The ids of the containers runc knows on `node`, as `runc list` shows them there."""
        root = self.node_dir(node) / "runtime" / "runc"
        out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True,
                             timeout=30)
        return set(out.stdout.split())

    def restart(self, names: list[str], timeout: float = 120) -> None:
        """Start components again with the commands `kubeling up` gave them,
        each waited for as `up` waits (the API server answering on its
        recorded address; a node agent's Node Ready)."""
        from kubeling.cli.cluster import restart_components

        _wait_for_cli()
        try:
            started = asyncio.run(restart_components(self.state, names, timeout=timeout))
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.read_record()
        assert sorted(p.name for p in started) == sorted(names), [p.name for p in started]


def _wait_for_cli(timeout: float = 300) -> None:
    """The CLI and its Python, waiting while a concurrent `make install`
    rebuilds the virtual environment."""
    deadline = time.monotonic() + timeout
    while not (KUBELING.exists() and os.path.exists(sys.executable)):
        if time.monotonic() >= deadline:
            raise FileNotFoundError(f"{KUBELING} (or {sys.executable}) is missing")
        time.sleep(1)


# ------------------------------------------------------------------ /proc

def _pids() -> list[int]:
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me]


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _cgroups(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, start_ticks: int = 0) -> bool:
    st = _stat(pid)
    if st is None or st[0] == "Z":
        return False
    return not start_ticks or int(st[19]) == start_ticks


# ------------------------------------------------------------------ leftovers

def nft_tables() -> set[str]:
    """This (the host's) network namespace's nftables tables named kubeling*."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if "kubeling" in line}


def leftovers(state: Path, record: dict, nodes: int, tables_before: set[str] = frozenset()) -> list[str]:
    """What of the cluster is still on this machine: network namespaces
    (and with them the nodes' nftables tables), links, routes, host nftables
    tables made since `tables_before`, mounts, cgroups, runc containers,
    processes."""
    found = [f"nftables {t}" for t in sorted(nft_tables() - set(tables_before))]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {f"{NODE_NETNS_PREFIX}{i}" for i in range(1, nodes + 1)}
    found += [f"network namespace {line.split()[0]}" for line in netns.splitlines()
              if line.split() and line.split()[0] in names]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == LAN_BRIDGE or name.startswith(NODE_LINK_PREFIX):
            found.append(f"link {name}")
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    found += [f"route {line}" for line in routes.splitlines() if LAN_BRIDGE in line]
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if str(state) in line.split()[4]]
    cgroup_fs = Path("/sys/fs/cgroup")
    for hierarchy in sorted(cgroup_fs.iterdir()):
        for i in range(1, nodes + 1):
            if (hierarchy / "kubeling" / f"node-{i}").exists():
                found.append(f"cgroup {hierarchy}/kubeling/node-{i}")
    if shutil.which("runc"):
        for i in range(1, nodes + 1):
            root = state / "nodes" / f"node-{i}" / "runtime" / "runc"
            if root.exists():
                ids = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True,
                                     text=True).stdout.split()
                found += [f"runc container {cid[:12]} of node-{i}" for cid in ids]
    recorded = {(p["pid"], p.get("start_ticks", 0)): p["name"] for p in record.get("processes", [])}
    for (pid, ticks), name in recorded.items():
        if _alive(pid, ticks):
            found.append(f"process {name} (pid {pid})")
    needle = str(state).encode()
    for pid in _pids():
        argv = _cmdline(pid)
        if any(needle in a for a in argv) and _alive(pid):
            found.append(f"process {pid}: {b' '.join(argv)[:150].decode(errors='replace')}")
    for pid in _pids():  # containers of the nodes, by cgroup
        if any(f"/kubeling/node-{i}/" in line for line in _cgroups(pid) for i in range(1, nodes + 1)) \
                and _alive(pid):
            found.append(f"container process {pid}: {b' '.join(_cmdline(pid))[:80].decode(errors='replace')}")
    return sorted(set(found))
