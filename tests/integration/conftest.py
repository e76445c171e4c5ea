"""Fixtures for integration tests: a real etcd and a real API server process.

The API server runs as its own process (`python -m services.apiserver`) on a
real loopback socket, exactly as `kubeling up` runs it, so tests exercise the
same gRPC surface as any client. One server serves the whole session; tests
isolate themselves with namespaces of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from kubeling.local.etcd_server import EtcdServer, find_free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiServerProcess:
    """A running `python -m services.apiserver` with its own etcd."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.etcd = EtcdServer(str(tmp / "etcd"), log_path=str(tmp / "etcd.log"))
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.log_path = tmp / "apiserver.log"

    def start(self) -> None:
        if not self.etcd.pid:
            self.etcd.start()
        port = find_free_port()
        self.address = f"127.0.0.1:{port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.apiserver", "--etcd-servers", self.etcd.endpoint,
                 "--bind", self.address],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited: {self.log_tail()}")
            try:
                channel = grpc.insecure_channel(self.address)
                grpc.channel_ready_future(channel).result(timeout=0.5)
                channel.close()
                if b"listening" in self.log_path.read_bytes():
                    return
            except grpc.FutureTimeoutError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"apiserver did not start: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
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

    def shutdown(self) -> None:
        try:
            self.stop()
        finally:
            self.etcd.stop()

    def compact(self) -> int:
        """Compact etcd's history at its current revision; returns that revision."""
        env = dict(os.environ, ETCDCTL_API="3")
        out = subprocess.run(["etcdctl", f"--endpoints={self.etcd.endpoint}", "endpoint", "status",
                              "-w", "json"], env=env, check=True, capture_output=True, text=True).stdout
        import json
        revision = json.loads(out)[0]["Status"]["header"]["revision"]
        subprocess.run(["etcdctl", f"--endpoints={self.etcd.endpoint}", "compact", str(revision)],
                       env=env, check=True, capture_output=True)
        return revision

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_api_server(tmp_path_factory, name: str = "apiserver") -> ApiServerProcess:
    """A started ApiServerProcess in a fresh temp dir; a loaded machine can
    lose etcd's port race once, so one failed start is retried."""
    for attempt in range(2):
        server = ApiServerProcess(tmp_path_factory.mktemp(name))
        try:
            server.start()
            return server
        except Exception:
            server.shutdown()
            if attempt:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    server = start_api_server(tmp_path_factory)
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture
def namespace_name() -> str:
    """A fresh namespace name for one test (the test creates it)."""
    return f"t-{uuid.uuid4().hex[:10]}"


class Component:
    """Any kubeling process started for a test: `python -m MODULE ARGS...`,
    in its own process group, logging to a file, stopped at teardown."""

    def __init__(self, module: str, args: list[str], log_path: Path):
        self.module = module
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Component":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the process group at once (a crash, not a clean stop)."""
        if self.running:
            os.killpg(self.proc.pid, sig)
            self.proc.wait()

    def stop(self, timeout: float = 10) -> None:
        if self.running:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def components(api_server, tmp_path):
    """Start control-plane components against the session's API server:
    `components("services.scheduler", "--leader-elect=false")`. The API
    server address is passed as `--server`. All are stopped at teardown."""
    started: list[Component] = []

    def start(module: str, *args: str, name: str | None = None) -> Component:
        log_path = tmp_path / f"{name or module.rsplit('.', 1)[-1]}-{len(started)}.log"
        comp = Component(module, ["--server", api_server.address, *args], log_path)
        started.append(comp.start())
        return comp

    try:
        yield start
    finally:
        for comp in reversed(started):
            comp.stop()
