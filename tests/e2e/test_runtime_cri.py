"""The runtime service end to end: the real service on a real unix socket,
real runc, conmon, overlayfs, cgroups and network namespaces (needs root).

Every test gets its own state directory and cgroup root; the `cri` fixture's
finalizer removes every sandbox through the API and then checks, even when
the test failed, that nothing is left: no runc container, mount under the
state dir, cgroup, pinned namespace or conmon process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from deploy.images.build import build_all
from kubeling.cri.v1 import api_pb2 as pb
from kubeling.cri.v1 import api_pb2_grpc, images_pb2, images_pb2_grpc
from node_agent.runtime import linux

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (shutil.which("runc") and shutil.which("conmon")), reason="needs runc and conmon"),
]

SHELL = "localhost/kubeling/shell:1"
HTTP = "localhost/kubeling/http:1"
CRI_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$")


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def test_images(tmp_path_factory):
    """The project's test images, built once, as OCI layout tars."""
    return build_all(tmp_path_factory.mktemp("images"), tar=True)


class RuntimeProcess:
    """The runtime service as a child process, and stubs for its socket."""

    def __init__(self, base: Path, extra_args: tuple[str, ...] = ()):
        self.base = base
        self.extra_args = list(extra_args)
        self.state_dir = base / "state"
        self.socket = base / "rt.sock"
        self.cgroup_root = f"/kubeling-test-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> None:
        log = open(self.base / "runtime.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node_agent.runtime", "--listen", f"unix://{self.socket}",
             "--state-dir", str(self.state_dir), "--cgroup-root", self.cgroup_root, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
        log.close()
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)
        self.imports = images_pb2_grpc.ImageImportServiceStub(self.channel)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.rt.Version(pb.VersionRequest(), timeout=1)
                return
            except grpc.RpcError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("runtime service did not start:\n" + self.log())
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.channel.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.channel:
            self.channel.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            return (self.base / "runtime.log").read_text()[-4000:]
        except OSError:
            return ""

    # -- helpers tests use --

    def import_images(self, images: dict) -> None:
        for path in images.values():
            self.imports.ImportImage(images_pb2.ImportImageRequest(path=str(path)))

    def sandbox(self, name: str = "pod", **kw) -> tuple[str, pb.PodSandboxConfig]:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="default", uid=uuid.uuid4().hex),
            hostname=name, **kw)
        sid = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
        return sid, config

    def container(self, sid: str, sconfig: pb.PodSandboxConfig, name: str, command=None,
                  image: str = SHELL, start: bool = True, **kw) -> str:
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                    image=pb.ImageSpec(image=image), command=command or [], **kw)
        cid = self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sconfig)).container_id
        if start:
            self.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    def status(self, cid: str, verbose: bool = False) -> pb.ContainerStatusResponse:
        return self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=verbose))

    def wait_exited(self, cid: str, timeout: float = 10) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(cid).status
            if st.state == pb.CONTAINER_EXITED:
                return st
            assert time.monotonic() < deadline, f"container {cid} still {st.state}"
            time.sleep(0.05)

    def wait_log(self, cid: str, text: str, timeout: float = 10) -> str:
        path = self.status(cid).status.log_path
        deadline = time.monotonic() + timeout
        while True:
            content = Path(path).read_text() if os.path.exists(path) else ""
            if text in content:
                return content
            assert time.monotonic() < deadline, f"{text!r} not in log of {cid}:\n{content}"
            time.sleep(0.05)

    # -- leftovers --

    def leftovers(self) -> list[str]:
        found = []
        runc_root = self.state_dir / "runc"
        if runc_root.exists():
            out = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                 capture_output=True, text=True).stdout.split()
            found += [f"runc container {c}" for c in out]
        found += [f"mount {m}" for m in linux.mounts_under(self.state_dir)]
        netns = self.state_dir / "netns"
        if netns.exists():
            found += [f"netns pin {p}" for p in netns.iterdir()]
        for d in linux.cgroup_dirs(self.cgroup_root):
            if d.exists():
                found += [f"cgroup {sub}" for sub in d.iterdir() if sub.is_dir()]
        found += [f"conmon process {pid}" for pid in conmon_pids(self.state_dir)]
        for sub in ("containers", "sandboxes", "exits", "attach", "logs"):
            d = self.state_dir / sub
            if d.exists():
                found += [f"file {p}" for p in d.iterdir()]
        return found

    def force_clean(self) -> None:
        for pid in conmon_pids(self.state_dir):
            os.kill(pid, signal.SIGKILL)
        runc_root = self.state_dir / "runc"
        if runc_root.exists():
            for cid in subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                      capture_output=True, text=True).stdout.split():
                subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid])
        for m in linux.mounts_under(self.state_dir):
            linux.unmount(m)
        linux.remove_cgroup(self.cgroup_root)


def conmon_pids(state_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"conmon") and str(state_dir).encode() in b" ".join(cmdline):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def image_store_template(tmp_path_factory, test_images):
    """An image store with the test images imported, copied into each test's state dir
    (importing through the service is tested on its own; this keeps the suite fast)."""
    from node_agent.runtime.images import ImageStore
    root = tmp_path_factory.mktemp("store") / "images"
    store = ImageStore(root)
    for path in test_images.values():
        store.import_archive(str(path))
    return root


@pytest.fixture
def runtime_args():
    """Extra command-line flags for the runtime service; tests override this fixture."""
    return ()


@pytest.fixture
def cri(tmp_path, image_store_template, runtime_args):
    """A running runtime service in a fresh state dir, with the test images present."""
    service = RuntimeProcess(tmp_path, runtime_args)
    try:
        shutil.copytree(image_store_template, service.state_dir / "images", symlinks=True)
        service.start()
        yield service
    finally:
        problems = []
        try:
            if service.proc.poll() is not None:
                service.start()
            for s in service.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                service.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=s.id), timeout=60)
            left = service.rt.ListContainers(pb.ListContainersRequest()).containers
            problems += [f"container {c.id} outside any sandbox" for c in left]
        except Exception as e:  # the checks below still run
            problems.append(f"cleanup through the API failed: {e}")
        service.stop()
        problems += service.leftovers()
        service.force_clean()
        linux.remove_cgroup(service.cgroup_root)
        if problems:
            pytest.fail("left behind: " + "; ".join(problems) + "\n" + service.log(), pytrace=False)


def cri_log_messages(path: Path) -> list[str]:
    """The lines a container wrote, with partial (P) records joined as CRI readers do."""
    messages, partial = [], ""
    for line in path.read_text().splitlines():
        m = CRI_LOG_LINE.match(line)
        assert m, line
        partial += m.group(4)
        if m.group(3) == "F":
            messages.append(partial)
            partial = ""
    return messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the runtime ----------------------------------------------------------------------------


def test_version_status_and_unimplemented_rpcs(cri):
    v = cri.rt.Version(pb.VersionRequest())
    assert (v.runtime_name, v.runtime_api_version) == ("kubeling", "v1")
    conditions = {c.type: c.status for c in cri.rt.Status(pb.StatusRequest()).status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.Exec(pb.ExecRequest(container_id="x", cmd=["sh"]))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_two_containers_reach_each_other_over_the_pod_loopback(cri):
    sid, sc = cri.sandbox("talk")
    # nc's stdin stays open (the sleep) so it reads the network instead of quitting at stdin's EOF.
    server = cri.container(sid, sc, "server", ["sh", "-c", "sleep 3 | nc -l -p 9000; echo server-done"])
    time.sleep(0.3)
    client = cri.container(sid, sc, "client",
                           ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo hello-from-client | "
                                        "nc 127.0.0.1 9000 && exit 0; sleep 0.3; done; exit 1"])
    assert cri.wait_exited(client).exit_code == 0
    log = cri.wait_log(server, "server-done")
    assert "hello-from-client" in log
    assert cri.wait_exited(server).reason == "Completed"
    # Both see the pod's hostname and files.
    out = subprocess.run(["cat", cri.status(server).status.log_path], capture_output=True, text=True).stdout
    assert out
    statuses = cri.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True))
    assert statuses.status.state == pb.SANDBOX_READY
    assert {c.metadata.name for c in statuses.containers_statuses} == {"server", "client"}
    netns = Path(statuses.info["netns"])
    assert linux.mounts_under(netns), "the sandbox's network namespace is pinned"
    cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    assert not netns.exists()


def test_logs_are_in_cri_format_with_exit_codes_and_reasons(cri):
    sid, sc = cri.sandbox("logs")
    ok = cri.container(sid, sc, "ok", ["sh", "-c", "echo out-line; echo err-line >&2; hostname; "
                                                   "cat /etc/hostname"])
    bad = cri.container(sid, sc, "bad", ["sh", "-c", "exit 3"])
    st = cri.wait_exited(ok)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert st.started_at >= st.created_at > 0 and st.finished_at >= st.started_at
    st = cri.wait_exited(bad)
    assert (st.exit_code, st.reason) == (3, "Error")
    lines = cri.wait_log(ok, "err-line").splitlines()
    parsed = [CRI_LOG_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(2), m.group(4)) for m in parsed][:2] == [("stdout", "out-line"), ("stderr", "err-line")] or \
        {("stdout", "out-line"), ("stderr", "err-line")} <= {(m.group(2), m.group(4)) for m in parsed}
    assert [m.group(4) for m in parsed].count("logs") == 2  # hostname and /etc/hostname


def test_containers_are_hardened_by_default(cri):
    sid, sc = cri.sandbox("hard")
    c = cri.container(sid, sc, "c", ["sleep", "100"])
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["cat", "/proc/self/status"], timeout=5))
    status = dict(line.split(":\t", 1) for line in r.stdout.decode().splitlines() if ":\t" in line)
    assert status["Seccomp"].strip() == "2"  # filter mode
    assert status["NoNewPrivs"].strip() == "1"
    # runc's default set: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE.
    assert int(status["CapEff"], 16) == (1 << 29) | (1 << 5) | (1 << 10)
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["cat", "/proc/kcore"], timeout=5))
    assert r.exit_code != 0 or r.stdout == b""
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, timeout=5,
                                           cmd=["sh", "-c", "echo 1 > /proc/sys/kernel/panic"]))
    assert r.exit_code != 0  # /proc/sys is read-only
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["cat", "/proc/1/cmdline"], timeout=5))
    assert r.stdout == b"sleep\x00100\x00"  # its own PID namespace


def test_http_image_answers_its_hostname_and_healthz(cri):
    sid, sc = cri.sandbox("web-1")
    web = cri.container(sid, sc, "web", image=HTTP)
    deadline = time.monotonic() + 5
    while True:
        r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=web, timeout=5,
                                               cmd=["wget", "-qO-", "http://127.0.0.1:8080/"]))
        if r.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.stdout.decode().strip() == "web-1"
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=web, timeout=5,
                                           cmd=["wget", "-S", "-qO-", "http://127.0.0.1:8080/healthz"]))
    assert r.exit_code == 0 and b"200 OK" in r.stderr
    # The image's shell turns SIGTERM into a clean exit.
    t = time.monotonic()
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=web, timeout=10))
    assert time.monotonic() - t < 5
    assert cri.status(web).status.exit_code == 0


def test_exec_sync_output_exit_code_and_timeout(cri):
    sid, sc = cri.sandbox("exec")
    c = cri.container(sid, sc, "sleeper", ["sleep", "1000"], envs=[pb.KeyValue(key="GREETING", value="hi")])
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["sh", "-c", "echo $GREETING; echo e >&2; exit 5"],
                                           timeout=5))
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi\n", b"e\n", 5)
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["no-such-command"], timeout=5))
    assert r.exit_code == 127
    t = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["sleep", "30"], timeout=1))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t < 5
    # The timed-out command was killed, not left running in the container.
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["ps"], timeout=5))
    assert b"sleep 30" not in r.stdout
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=0))
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["true"]))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_memory_limit_gets_the_container_oom_killed(cri):
    sid, sc = cri.sandbox("oom")
    limit = 16 * 1024 * 1024
    c = cri.container(sid, sc, "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                      linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
                          memory_limit_in_bytes=limit)))
    st = cri.wait_exited(c)
    assert st.reason == "OOMKilled"
    assert st.exit_code == 137
    assert st.resources.linux.memory_limit_in_bytes == limit


def test_stop_honours_the_grace_period_when_the_process_exits_on_sigterm(cri):
    sid, sc = cri.sandbox("grace")
    c = cri.container(sid, sc, "polite", ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; "
                                                      "while :; do sleep 0.1; done"])
    cri.wait_log(c, "ready")
    t = time.monotonic()
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=10))
    assert time.monotonic() - t < 3
    st = cri.status(c).status
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 0, "Completed")
    cri.wait_log(c, "bye")


def test_stop_kills_after_the_grace_period_when_sigterm_is_ignored(cri):
    sid, sc = cri.sandbox("stubborn")
    c = cri.container(sid, sc, "stubborn", ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"])
    cri.wait_log(c, "ready")
    t = time.monotonic()
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=2))
    took = time.monotonic() - t
    assert 2 <= took < 6
    st = cri.status(c).status
    assert (st.exit_code, st.reason) == (137, "Error")
    # Stopping and removing again are harmless, as are unknown ids.
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=2))
    cri.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c))
    cri.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c))
    cri.rt.StopContainer(pb.StopContainerRequest(container_id="f" * 64))
    cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    with pytest.raises(grpc.RpcError) as e:
        cri.status(c)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_sigkill_of_the_service_loses_nothing(cri):
    sid, sc = cri.sandbox("survivor")
    ticker = cri.container(sid, sc, "ticker", ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.1; done"])
    quitter = cri.container(sid, sc, "quitter", ["sh", "-c", "sleep 1; exit 7"])
    cri.wait_log(ticker, "tick-2")
    pid = cri.status(ticker, verbose=True).info["pid"]
    cri.kill()
    time.sleep(1.8)  # the quitter exits while the service is down
    assert os.path.exists(f"/proc/{pid}")
    cri.start()
    st = cri.status(ticker, verbose=True)
    assert st.status.state == pb.CONTAINER_RUNNING
    assert st.info["pid"] == pid
    st = cri.status(quitter).status
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 7, "Error")
    # Logs kept flowing throughout.
    count = len(Path(cri.status(ticker).status.log_path).read_text().splitlines())
    time.sleep(0.5)
    assert len(Path(cri.status(ticker).status.log_path).read_text().splitlines()) > count
    r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=ticker, cmd=["echo", "still-here"], timeout=5))
    assert r.stdout == b"still-here\n"


def test_stats_update_resources_and_reopen_log(cri):
    sid, sc = cri.sandbox("stats")
    c = cri.container(sid, sc, "busy", ["sh", "-c", "echo started; while :; do :; done"],
                      linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
                          cpu_quota=50000, cpu_period=100000, cpu_shares=512,
                          memory_limit_in_bytes=64 << 20)))
    cri.wait_log(c, "started")
    time.sleep(0.3)
    stats = cri.rt.ContainerStats(pb.ContainerStatsRequest(container_id=c)).stats
    assert stats.attributes.id == c
    assert stats.cpu.usage_core_nano_seconds.value > 0
    assert 0 < stats.memory.working_set_bytes.value < 64 << 20
    listed = cri.rt.ListContainerStats(pb.ListContainerStatsRequest()).stats
    assert [s.attributes.id for s in listed] == [c]
    info = cri.status(c, verbose=True).info
    mem_dir = Path("/sys/fs/cgroup/memory") / info["cgroupPath"].strip("/")
    if mem_dir.exists():  # cgroup v1
        assert int((mem_dir / "memory.limit_in_bytes").read_text()) == 64 << 20
        cri.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
            container_id=c, linux=pb.LinuxContainerResources(memory_limit_in_bytes=128 << 20)))
        assert int((mem_dir / "memory.limit_in_bytes").read_text()) == 128 << 20
        cpu_dir = Path("/sys/fs/cgroup/cpu") / info["cgroupPath"].strip("/")
        assert int((cpu_dir / "cpu.cfs_quota_us").read_text()) == 50000
        assert int((cpu_dir / "cpu.shares").read_text()) == 512
    log = Path(cri.status(c).status.log_path)
    log.rename(log.with_suffix(".1"))
    cri.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=c))
    deadline = time.monotonic() + 5
    while not log.exists():
        assert time.monotonic() < deadline, "conmon did not reopen the log"
        time.sleep(0.05)


def test_list_filters_and_duplicate_names(cri):
    sid, sc = cri.sandbox("lists", labels={"app": "x"})
    other, _ = cri.sandbox("other")
    c = cri.container(sid, sc, "one", ["sleep", "100"], start=False, labels={"tier": "a"})
    items = cri.rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
        label_selector={"app": "x"}))).items
    assert [s.id for s in items] == [sid]
    got = cri.rt.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=sid, state=pb.ContainerStateValue(state=pb.CONTAINER_CREATED)))).containers
    assert [x.id for x in got] == [c]
    assert cri.rt.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=other))).containers == []
    with pytest.raises(grpc.RpcError) as e:
        cri.container(sid, sc, "one", ["sleep", "100"], start=False)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=sc))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # A created container that is never started can be stopped and removed.
    cri.rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=5))
    assert cri.status(c).status.state == pb.CONTAINER_EXITED
    cri.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c))


@pytest.mark.parametrize("make_config, code, words", [
    (lambda tmp: dict(image="localhost/kubeling/missing:1"), grpc.StatusCode.NOT_FOUND, "not found"),
    (lambda tmp: dict(image="Not A Reference!"), grpc.StatusCode.INVALID_ARGUMENT, "invalid reference"),
    (lambda tmp: dict(command=["/no/such/binary"]), grpc.StatusCode.INVALID_ARGUMENT, "no such file"),
    (lambda tmp: dict(command=["no-such-command"]), grpc.StatusCode.INVALID_ARGUMENT, "not found"),
    (lambda tmp: dict(mounts=[pb.Mount(container_path="/data", host_path=str(tmp / "absent"), readonly=True)]),
     grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
    (lambda tmp: dict(mounts=[pb.Mount(container_path="relative", host_path=str(tmp))]),
     grpc.StatusCode.INVALID_ARGUMENT, "not absolute"),
    (lambda tmp: dict(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
        memory_limit_in_bytes=-5))), grpc.StatusCode.INVALID_ARGUMENT, "memory_limit_in_bytes"),
    (lambda tmp: dict(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
        cpu_shares=1))), grpc.StatusCode.INVALID_ARGUMENT, "cpu_shares"),
    (lambda tmp: dict(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
        cpuset_cpus="zero"))), grpc.StatusCode.INVALID_ARGUMENT, "cpuset_cpus"),
    (lambda tmp: dict(linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        run_as_username="nobody-here"))), grpc.StatusCode.INVALID_ARGUMENT, "not found in the image"),
    (lambda tmp: dict(linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["CAP_MAGIC"])))), grpc.StatusCode.INVALID_ARGUMENT,
     "unknown capability"),
], ids=["missing-image", "malformed-reference", "missing-binary", "command-not-in-path",
        "ro-mount-missing-host-path", "relative-mount", "negative-memory", "tiny-cpu-shares",
        "bad-cpuset", "unknown-user", "unknown-capability"])
def test_bad_container_config_is_refused_and_leaves_nothing(cri, tmp_path, make_config, code, words):
    sid, sc = cri.sandbox("bad")
    kw = {"command": ["sleep", "10"], "image": SHELL, **make_config(tmp_path)}
    with pytest.raises(grpc.RpcError) as e:
        cri.container(sid, sc, "bad", **kw)
    assert e.value.code() == code, e.value.details()
    assert words in e.value.details()
    assert cri.rt.ListContainers(pb.ListContainersRequest()).containers == []
    assert not list((cri.state_dir / "containers").iterdir())
    assert not linux.mounts_under(cri.state_dir / "containers")
    assert not any(d.exists() and any(p.is_dir() for p in d.iterdir())
                   for d in linux.cgroup_dirs(f"{cri.cgroup_root}/pod-{sid[:16]}"))


def test_bad_sandbox_and_container_requests(cri):
    cases = [
        (lambda: cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig())),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="a", namespace="b", uid="c"),
            linux=pb.LinuxPodSandboxConfig(sysctls={"kernel.shmmax": "1"})))), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: cri.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="nope-nope")),
         grpc.StatusCode.NOT_FOUND),
        (lambda: cri.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id="nope-nope", config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="x"), image=pb.ImageSpec(image=SHELL)))), grpc.StatusCode.NOT_FOUND),
        (lambda: cri.rt.StartContainer(pb.StartContainerRequest(container_id="nope-nope")), grpc.StatusCode.NOT_FOUND),
        (lambda: cri.rt.ContainerStatus(pb.ContainerStatusRequest(container_id="")), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code, e.value.details()
    assert cri.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    # A sandbox with a net.* sysctl gets it inside its own namespace.
    sid, sc = cri.sandbox("sysctl", linux=pb.LinuxPodSandboxConfig(
        sysctls={"net.ipv4.ip_unprivileged_port_start": "80"}))
    c = cri.container(sid, sc, "c", ["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"])
    assert "80" in cri.wait_log(c, "80")
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.StartContainer(pb.StartContainerRequest(container_id=c))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_pods_started_in_parallel_all_run(cri):
    from concurrent.futures import ThreadPoolExecutor

    def pod(i: int) -> str:
        sid, sc = cri.sandbox(f"par-{i}")
        return cri.container(sid, sc, "c", ["sh", "-c", f"echo pod-{i}; sleep 100"])

    with ThreadPoolExecutor(6) as pool:
        cids = list(pool.map(pod, range(6)))
    for i, cid in enumerate(cids):
        cri.wait_log(cid, f"pod-{i}")
        assert cri.status(cid).status.state == pb.CONTAINER_RUNNING
    sandboxes = [s.id for s in cri.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda sid: cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid)),
                      sandboxes))
    assert cri.rt.ListContainers(pb.ListContainersRequest()).containers == []


# -- images -----------------------------------------------------------------------------


def test_image_import_status_list_remove_and_fs_info(cri, test_images, tmp_path):
    shell = cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=SHELL), verbose=True))
    assert shell.image.repo_tags == [SHELL]
    assert shell.image.id.startswith("sha256:") and shell.image.size > 0
    assert '"Cmd": ["sh"]' in shell.info["info"]
    # By id, and an absent image is an empty answer.
    assert cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=shell.image.id))).image.id == shell.image.id
    assert not cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="localhost/x:1"))).HasField("image")
    tags = sorted(t for i in cri.img.ListImages(pb.ListImagesRequest()).images for t in i.repo_tags)
    assert tags == [HTTP, SHELL]
    # Re-importing (from the layout directory this time) changes nothing.
    layout = Path(str(test_images[SHELL]).removesuffix(".tar"))
    again = cri.imports.ImportImage(images_pb2.ImportImageRequest(path=str(layout)))
    assert [i.id for i in again.images] == [shell.image.id]
    # Importing under another name.
    cri.imports.ImportImage(images_pb2.ImportImageRequest(path=str(layout), name="example.com/me/sh:2"))
    st = cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="example.com/me/sh:2")))
    assert st.image.id == shell.image.id
    fs = cri.img.ImageFsInfo(pb.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value > 1_000_000
    # In use: refused; after the container is gone: removed, and removing again is fine.
    sid, sc = cri.sandbox("img")
    c = cri.container(sid, sc, "c", ["true"])
    with pytest.raises(grpc.RpcError) as e:
        cri.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=SHELL)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cri.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c))
    cri.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=SHELL)))
    cri.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=SHELL)))
    assert [i.repo_tags for i in cri.img.ListImages(pb.ListImagesRequest()).images] == [[HTTP]]


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    (b"not a tar at all", "not a tar archive"),
    ("empty-tar", "neither an OCI layout"),
], ids=["missing", "garbage", "not-an-image"])
def test_bad_import_files_are_refused(cri, tmp_path, content, words):
    path = tmp_path / "bad.tar"
    if content == "empty-tar":
        import tarfile
        with tarfile.open(path, "w"):
            pass
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(grpc.RpcError) as e:
        cri.imports.ImportImage(images_pb2.ImportImageRequest(path=str(path)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in e.value.details()


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on a free loopback port, storing in tmp_path."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.path.exists(binary):
        pytest.skip("docker-registry is not installed")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'registry'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "registry did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_push_to_a_registry_and_pull_back(cri, registry, test_images):
    layout = str(test_images[HTTP]).removesuffix(".tar")
    target = f"{registry}/kubeling/http:1"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{layout}", f"docker://{target}"], check=True, capture_output=True)
    ref = cri.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=target))).image_ref
    st = cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=target))).image
    assert st.id == ref
    # The same image as the imported one, now known by its registry name too.
    assert target in st.repo_tags and HTTP in st.repo_tags
    pulled_digest = [d for d in st.repo_digests if d.startswith(f"{registry}/kubeling/http@sha256:")]
    assert pulled_digest
    # Pulling by digest finds the same image.
    by_digest = cri.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=pulled_digest[0]))).image_ref
    assert by_digest == ref
    sid, sc = cri.sandbox("pulled")
    c = cri.container(sid, sc, "web", image=target)
    deadline = time.monotonic() + 5
    while True:
        r = cri.rt.ExecSync(pb.ExecSyncRequest(container_id=c, timeout=5, cmd=["wget", "-qO-", "http://127.0.0.1:8080/"]))
        if r.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.stdout == b"pulled\n"
    for image, code in [(f"{registry}/kubeling/absent:1", grpc.StatusCode.NOT_FOUND),
                        (f"127.0.0.1:{free_port()}/kubeling/http:1", grpc.StatusCode.UNAVAILABLE),
                        ("UPPER/case", grpc.StatusCode.INVALID_ARGUMENT)]:
        with pytest.raises(grpc.RpcError) as e:
            cri.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
        assert e.value.code() == code, (image, e.value.details())
    assert not list((cri.state_dir / "images" / "tmp").iterdir())


def test_docker_archive_import_and_the_images_cli(cri, test_images, tmp_path, capsys):
    import argparse
    import asyncio

    from kubeling.cli import images as images_cli
    from kubeling.cli.common import CliError

    layout = str(test_images[SHELL]).removesuffix(".tar")
    archive = tmp_path / "shell-docker.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}",
                    f"docker-archive:{archive}:example.com/team/shell:7"], check=True, capture_output=True)

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="kubeling")
        images_cli.register(parser.add_subparsers(dest="verb"), [])
        args = parser.parse_args(["images", "--runtime-endpoint", str(cri.socket), *argv])
        return asyncio.run(args.run(args))

    assert cli("import", str(archive)) == 0
    assert "example.com/team/shell:7" in capsys.readouterr().out
    st = cri.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="example.com/team/shell:7"))).image
    assert st.HasField("uid") or st.username == ""
    sid, sc = cri.sandbox("from-archive")
    c = cri.container(sid, sc, "c", ["echo", "from-docker-archive"], image="example.com/team/shell:7")
    cri.wait_log(c, "from-docker-archive")
    assert cli("ls") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert any(line.split()[:2] == ["example.com/team/shell", "7"] for line in out)
    with pytest.raises(CliError, match="not a tar archive"):
        cli("import", "/etc/hostname")


def test_volumes_read_only_root_and_user(cri, tmp_path):
    data = tmp_path / "volume"
    data.mkdir()
    (data / "in.txt").write_text("from-host")
    config = tmp_path / "config"
    config.mkdir()
    (config / "key").write_text("value")
    sid, sc = cri.sandbox("vols")
    c = cri.container(
        sid, sc, "c",
        ["sh", "-c", "cat /data/in.txt; echo; cat /config/key; echo; echo out > /data/out.txt; "
                     "touch /rootfs-write 2>/dev/null && echo root-writable || echo root-read-only; "
                     "touch /config/x 2>/dev/null && echo config-writable || echo config-read-only; id -u"],
        mounts=[pb.Mount(container_path="/data", host_path=str(data)),
                pb.Mount(container_path="/config", host_path=str(config), readonly=True)],
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            readonly_rootfs=True, run_as_user=pb.Int64Value(value=0))))
    st = cri.wait_exited(c)
    log = cri_log_messages(Path(st.log_path))
    assert log == ["from-host", "value", "root-read-only", "config-read-only", "0"], log
    assert (data / "out.txt").read_text() == "out\n"
    assert [m.container_path for m in st.mounts] == ["/data", "/config"]


def test_a_create_interrupted_by_a_crash_is_undone_at_startup(cri):
    """A record still marked "creating" means the service died half-way: the next start removes
    whatever the create had made (runc container, conmon, overlay mount, bundle)."""
    import json
    sid, sc = cri.sandbox("crash")
    c = cri.container(sid, sc, "half", ["sleep", "100"], start=False)
    cri.kill()
    record = cri.state_dir / "containers" / f"{c}.json"
    data = json.loads(record.read_text())
    data["state"] = "creating"
    record.write_text(json.dumps(data))
    assert linux.mounts_under(cri.state_dir / "containers" / c)
    cri.start()
    assert cri.rt.ListContainers(pb.ListContainersRequest()).containers == []
    assert not (cri.state_dir / "containers" / c).exists()
    assert not linux.mounts_under(cri.state_dir / "containers")
    assert conmon_pids(cri.state_dir) == []


# -- the network hand-off ---------------------------------------------------------------------


from kubeling.cni.v1 import cni_pb2_grpc  # noqa: E402


class FakeNetworkService(cni_pb2_grpc.NetworkServicer):
    """A kubeling.cni.v1.Network server that records calls and hands out one address."""

    def __init__(self):
        self.calls: list[tuple[str, str, str, bool]] = []

    def Add(self, request, context):
        from kubeling.cni.v1 import cni_pb2
        self.calls.append(("add", request.container_id, request.netns, os.path.exists(request.netns)))
        if request.args.name == "no-net":
            return cni_pb2.AddResponse(error=cni_pb2.Error(code=11, msg="pod CIDR exhausted"))
        return cni_pb2.AddResponse(result=cni_pb2.Result(
            cni_version="1.0.0", ips=[cni_pb2.IPConfig(address="10.244.0.5/24", gateway="10.244.0.1"),
                                      cni_pb2.IPConfig(address="fd00::5/64")]))

    def Del(self, request, context):
        from kubeling.cni.v1 import cni_pb2
        self.calls.append(("del", request.container_id, request.netns, os.path.exists(request.netns)))
        return cni_pb2.DelResponse()

    def Status(self, request, context):
        from kubeling.cni.v1 import cni_pb2
        return cni_pb2.StatusResponse(pod_cidr="10.244.0.0/24")


@pytest.fixture
def fake_network(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    service = FakeNetworkService()
    server = grpc.server(ThreadPoolExecutor(4))
    cni_pb2_grpc.add_NetworkServicer_to_server(service, server)
    service.socket = tmp_path / "net.sock"
    server.add_insecure_port(f"unix://{service.socket}")
    server.start()
    yield service
    server.stop(0)


class TestNetworkService:
    """The runtime started with --network-endpoint pointing at a fake network service."""

    @pytest.fixture
    def runtime_args(self, fake_network):
        return ("--network-endpoint", f"unix://{fake_network.socket}")

    def test_sandboxes_hand_their_namespace_to_the_network_service(self, cri, fake_network):
        _network_hand_off(cri, fake_network)


def _network_hand_off(cri, fake_network):
    sid, sc = cri.sandbox("netpod")
    status = cri.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True))
    assert status.status.network.ip == "10.244.0.5"
    assert [i.ip for i in status.status.network.additional_ips] == ["fd00::5"]
    netns = status.info["netns"]
    assert fake_network.calls == [("add", sid, netns, True)]
    c = cri.container(sid, sc, "c", ["cat", "/etc/hosts"])
    assert "10.244.0.5\tnetpod" in cri.wait_log(c, "netpod")
    cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    # Del comes while the namespace still exists, so the service can clean inside it.
    assert fake_network.calls[-1] == ("del", sid, netns, True)
    assert not os.path.exists(netns)
    # A failed Add leaves no sandbox and no namespace behind.
    with pytest.raises(grpc.RpcError) as e:
        cri.sandbox("no-net")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "pod CIDR exhausted" in e.value.details()
    assert [s.id for s in cri.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [sid]
    assert not list((cri.state_dir / "netns").iterdir())
