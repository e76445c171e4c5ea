"""Fixtures shared by the node end-to-end tests.

`LocalNode` is one real node on this machine, made of real processes, each
with its own temporary state: a network namespace for the node (its pod
bridge lives there), the network service (`--netns`, `--pod-cidr`, so no
IPAM controller is needed), the runtime service (runc, conmon; its own
cgroup root and runc root; the test images copied in), and the node agent
(`python -m node_agent.kubelet`) against an API server. The node agent runs
in the host's namespace, as a node agent whose node is a namespace of its
own does; it reaches pods through the sandboxes' namespaces.

`LocalNode.stop` removes everything through CRI and then checks, even when
a test failed, that nothing is left: no runc container, mount, pinned
namespace, cgroup or conmon process; anything found is force-removed and
reported.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from kubeling.cri.v1 import api_pb2 as cri
from kubeling.cri.v1 import api_pb2_grpc as cri_grpc
from tests.integration.conftest import ApiServerProcess, Component

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def node_api_server(tmp_path_factory):
    """A real etcd and API server process for the node tests of the session."""
    server = ApiServerProcess(tmp_path_factory.mktemp("node-apiserver"))
    try:
        server.start()
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def node_image_store(tmp_path_factory):
    """An image store holding the test images (localhost/kubeling/shell:1 and
    http:1), built once and copied into each node's runtime state."""
    from deploy.images.build import build_all
    from node_agent.runtime.images import ImageStore
    images = build_all(tmp_path_factory.mktemp("node-images"), tar=True)
    root = tmp_path_factory.mktemp("node-store") / "images"
    store = ImageStore(root)
    for path in images.values():
        store.import_archive(str(path))
    return root


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


class Process(Component):
    """One `python -m MODULE` child in its own process group, logging to a
    file, that can wait for a line saying it is ready."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        super().__init__(argv[0], list(argv[1:]), log_path)
        self.name = name
        self.argv = argv
        self._offset = 0

    def start(self, ready_text: str | None = None, timeout: float = 30) -> "Process":
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()
        if ready_text:
            deadline = time.monotonic() + timeout
            while ready_text.encode() not in self.log_path.read_bytes()[self._offset:]:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not log {ready_text!r}:\n{self.log_tail()}")
                time.sleep(0.05)
        return self

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)

    def log_tail(self, lines: int = 60) -> str:
        return super().log_tail(lines)


class LocalNode:
    """A node of real processes (see the module docstring)."""

    def __init__(self, base: Path, api_address: str, image_store: Path, *kubelet_flags: str):
        run = uuid.uuid4().hex[:6]
        self.name = f"kn-{run}"
        self.base = base
        self.api_address = api_address
        self.image_store = image_store
        self.kubelet_flags = list(kubelet_flags)
        self.netns = f"kn-{run}"
        self.pod_cidr = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
        self.ip = "127.0.0.1"
        self.cgroup_root = f"/kubeling-kn-{run}"
        self.runtime_state = base / "runtime"
        self.network_state = base / "network"
        self.kubelet_state = base / "kubelet"
        self.runtime_socket = base / "runtime.sock"
        self.network_socket = base / "network.sock"
        self.runtime = Process("runtime", [
            "node_agent.runtime", "--listen", f"unix://{self.runtime_socket}", "--state-dir",
            str(self.runtime_state), "--cgroup-root", self.cgroup_root], base / "runtime.log")
        self.network = Process("network", [
            "node_agent.network", "--listen", f"unix://{self.network_socket}", "--node-name", self.name,
            "--state-dir", str(self.network_state), "--netns", self.netns, "--pod-cidr", self.pod_cidr],
            base / "network.log")
        self.kubelet = Process("kubelet", [
            "node_agent.kubelet", "--server", api_address, "--node-name", self.name, "--node-ip", self.ip,
            "--container-runtime-endpoint", f"unix://{self.runtime_socket}",
            "--network-endpoint", f"unix://{self.network_socket}", "--state-dir", str(self.kubelet_state),
            "--port", "0", "--address", "127.0.0.1", *self.kubelet_flags], base / "kubelet.log")
        self._channel: grpc.Channel | None = None
        self.cri: cri_grpc.RuntimeServiceStub | None = None

    # --- life ---

    def start(self) -> "LocalNode":
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        shutil.copytree(self.image_store, self.runtime_state / "images", symlinks=True)
        self.network.start("listening on")
        self.runtime.start()
        self._channel = grpc.insecure_channel(f"unix://{self.runtime_socket}")
        self.cri = cri_grpc.RuntimeServiceStub(self._channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.cri.Version(cri.VersionRequest(), timeout=1)
                break
            except grpc.RpcError:
                if not self.runtime.running or time.monotonic() > deadline:
                    raise RuntimeError(f"runtime did not start:\n{self.runtime.log_tail()}")
                time.sleep(0.05)
        self.start_kubelet()
        return self

    def start_kubelet(self) -> None:
        self.kubelet.start("node agent ready", timeout=60)

    def kill_kubelet(self) -> None:
        """SIGKILL, as a crash would."""
        self.kubelet.kill(signal.SIGKILL)

    def stop(self) -> list[str]:
        """Stop everything; returns what was left behind (and force-removes it)."""
        problems: list[str] = []
        self.kubelet.stop()
        try:
            if not self.runtime.running:
                self.runtime.start()
                time.sleep(1)
            for s in self.cri.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=30).items:
                self.cri.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=s.id), timeout=120)
            for c in self.cri.ListContainers(cri.ListContainersRequest(), timeout=30).containers:
                problems.append(f"container {c.id[:12]} outside any sandbox")
                self.cri.RemoveContainer(cri.RemoveContainerRequest(container_id=c.id), timeout=60)
        except Exception as e:  # noqa: BLE001 - the checks below still run
            problems.append(f"cleanup through CRI failed: {e}")
        if self._channel is not None:
            self._channel.close()
        self.runtime.stop()
        self.network.stop()
        problems += self.leftovers()
        self.force_clean()
        _sh("ip", "netns", "del", self.netns, check=False)
        return problems

    # --- looking at the node ---

    def sandboxes(self, **labels: str) -> list[cri.PodSandbox]:
        req = cri.ListPodSandboxRequest()
        req.filter.label_selector.update(labels)
        return list(self.cri.ListPodSandbox(req, timeout=10).items)

    def containers(self, **labels: str) -> list[cri.Container]:
        req = cri.ListContainersRequest()
        req.filter.label_selector.update(labels)
        return list(self.cri.ListContainers(req, timeout=10).containers)

    def exec(self, container_id: str, *cmd: str, timeout: int = 10) -> cri.ExecSyncResponse:
        return self.cri.ExecSync(cri.ExecSyncRequest(container_id=container_id, cmd=list(cmd),
                                                     timeout=timeout), timeout=timeout + 10)

    def leftovers(self) -> list[str]:
        from node_agent.runtime import linux
        found = []
        runc_root = self.runtime_state / "runc"
        if runc_root.exists():
            out = _sh("runc", "--root", str(runc_root), "list", "-q", check=False).stdout.split()
            found += [f"runc container {c}" for c in out]
        for state in (self.runtime_state, self.kubelet_state):
            found += [f"mount {m}" for m in linux.mounts_under(state)]
        netns_dir = self.runtime_state / "netns"
        if netns_dir.exists():
            found += [f"netns pin {p.name}" for p in netns_dir.iterdir()]
        for d in linux.cgroup_dirs(self.cgroup_root):
            if d.exists():
                found += [f"cgroup {sub}" for sub in d.iterdir() if sub.is_dir()]
        found += [f"conmon process {pid}" for pid in self.conmon_pids()]
        pods = self.kubelet_state / "pods"
        if pods.exists():
            found += [f"pod directory {p.name}" for p in pods.iterdir()]
        return found

    def conmon_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"conmon") and str(self.runtime_state).encode() in b" ".join(cmdline):
                pids.append(int(entry.name))
        return pids

    def force_clean(self) -> None:
        from node_agent.runtime import linux
        for pid in self.conmon_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        runc_root = self.runtime_state / "runc"
        if runc_root.exists():
            for cid in _sh("runc", "--root", str(runc_root), "list", "-q", check=False).stdout.split():
                _sh("runc", "--root", str(runc_root), "delete", "--force", cid, check=False)
        for state in (self.runtime_state, self.kubelet_state):
            for m in linux.mounts_under(state):
                linux.unmount(m)
        linux.remove_cgroup(self.cgroup_root)


@pytest.fixture(scope="module")
def local_node(node_api_server, node_image_store, tmp_path_factory, request):
    """One node for the module; kubelet flags from the module's KUBELET_FLAGS."""
    flags = getattr(request.module, "KUBELET_FLAGS", ())
    node = LocalNode(tmp_path_factory.mktemp("node"), node_api_server.address, node_image_store, *flags)
    try:
        node.start()
        yield node
    finally:
        problems = node.stop()
        if problems:
            pytest.fail("node left behind: " + "; ".join(problems) + "\n--- kubelet log ---\n" +
                        node.kubelet.log_tail(), pytrace=False)
