"""The runtime's logic: sandboxes and containers over conmon, runc and the image store.

Everything here is synchronous and may block (runc, mounts, waits); the gRPC
layer runs each call in a worker thread. Each sandbox and container has a
record on disk (`<state>/sandboxes/<id>.json`, `<state>/containers/<id>.json`)
written atomically; what a running container is doing is never cached but
read from conmon's exit file, so a restarted service sees exits that happened
while it was down. Calls on one object are serialised by a per-id lock.

State directory layout:

    images/                 the image store (see images.py)
    sandboxes/<id>.json     sandbox records; sandboxes/<id>/ its hosts,
                            hostname and resolv.conf files
    netns/<id>              pinned network namespaces
    containers/<id>.json    container records; containers/<id>/ the bundle
                            (config.json, rootfs, upper, work, conmon files)
    exits/<id>              exit codes written by conmon
    logs/<sandbox id>/      container logs when the sandbox names no log dir
    runc/                   runc's own state (--root)
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubeling.cri.v1 import api_pb2
from node_agent.runtime import linux, oci_spec
from node_agent.runtime.errors import (AlreadyExists, DeadlineExceeded, FailedPrecondition,
                                       Internal, InvalidArgument, NotFound, Unavailable)
from node_agent.runtime.images import ImageStore
from node_agent.runtime.network import LoopbackNetwork, NetworkSetupError, PodNetwork
from node_agent.runtime.oci_runtime import (Runc, launch_conmon, pid_alive, wait_pid_gone,
                                            SIGNALS)
from node_agent.runtime.state_files import read_json, write_json

RUNTIME_NAME = "kubeling"
RUNTIME_VERSION = "0.1.0"

# Container states in records; "creating" marks a create a crash interrupted.
CREATING, CREATED, RUNNING, EXITED, UNKNOWN = "creating", "created", "running", "exited", "unknown"
STATE_TO_CRI = {CREATED: api_pb2.CONTAINER_CREATED, RUNNING: api_pb2.CONTAINER_RUNNING,
                EXITED: api_pb2.CONTAINER_EXITED, UNKNOWN: api_pb2.CONTAINER_UNKNOWN,
                CREATING: api_pb2.CONTAINER_UNKNOWN}
REASON_COMPLETED, REASON_ERROR, REASON_OOM = "Completed", "Error", "OOMKilled"


def _b64(msg) -> str:
    return base64.b64encode(msg.SerializeToString()).decode()


def _unb64(cls, text: str):
    msg = cls()
    msg.ParseFromString(base64.b64decode(text))
    return msg


@dataclass
class SandboxRecord:
    id: str
    config: str  # base64 PodSandboxConfig
    state: str  # "ready" | "notready"
    created_at: int
    netns: str
    cgroup_parent: str
    log_directory: str
    runtime_handler: str = ""
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)

    def pb_config(self) -> api_pb2.PodSandboxConfig:
        return _unb64(api_pb2.PodSandboxConfig, self.config)


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    config: str  # base64 ContainerConfig
    image_id: str
    image_ref: str
    state: str
    created_at: int
    log_path: str
    cgroup_path: str
    uid: int = 0
    gid: int = 0
    stop_signal: int = signal.SIGTERM
    resources: str = ""  # base64 LinuxContainerResources, the current limits
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    conmon_pid: int = 0

    def pb_config(self) -> api_pb2.ContainerConfig:
        return _unb64(api_pb2.ContainerConfig, self.config)


class Runtime:
    """Sandboxes and containers on this node."""

    def __init__(self, state_dir: Path, *, runc_binary: str = "runc", conmon_binary: str = "conmon",
                 cgroup_root: str = "/kubeling", network: PodNetwork | None = None,
                 insecure_registries: tuple[str, ...] = ()):
        self.state_dir = Path(state_dir).resolve()
        self.cgroup_root = "/" + cgroup_root.strip("/")
        self.conmon = shutil.which(conmon_binary) or conmon_binary
        self.network = network or LoopbackNetwork()
        d = self.state_dir
        self.sandbox_dir, self.container_dir = d / "sandboxes", d / "containers"
        self.netns_dir, self.exit_dir, self.log_dir = d / "netns", d / "exits", d / "logs"
        self.socket_dir = d / "attach"
        for path in (self.sandbox_dir, self.container_dir, self.netns_dir, self.exit_dir,
                     self.log_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.runc = Runc(d / "runc", shutil.which(runc_binary) or runc_binary)
        self.images = ImageStore(d / "images", insecure_registries)
        self._lock = threading.RLock()
        self._object_locks: dict[str, threading.Lock] = {}
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self._swap_controller = (linux.CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()
        self._load()

    # ---- records and locks ----------------------------------------------------------------

    def _object_lock(self, oid: str) -> threading.Lock:
        with self._lock:
            return self._object_locks.setdefault(oid, threading.Lock())

    def _save_sandbox(self, s: SandboxRecord) -> None:
        write_json(self.sandbox_dir / f"{s.id}.json", asdict(s))

    def _save_container(self, c: ContainerRecord) -> None:
        write_json(self.container_dir / f"{c.id}.json", asdict(c))

    def _load(self) -> None:
        """Reads the records and reconciles them with what survived (see module docstring)."""
        for path in self.sandbox_dir.glob("*.json"):
            data = read_json(path)
            if data:
                s = SandboxRecord(**data)
                self.sandboxes[s.id] = s
                if s.state == "ready" and not linux.mounts_under(Path(s.netns)):
                    # The namespace is gone (a reboot): the sandbox cannot be used.
                    s.state = "notready"
                    self._save_sandbox(s)
        for path in self.container_dir.glob("*.json"):
            data = read_json(path)
            if not data:
                continue
            c = ContainerRecord(**data)
            self.containers[c.id] = c
            if c.state == CREATING:
                # A create that a crash interrupted: undo it.
                self._destroy_container_files(c)
                del self.containers[c.id]
                continue
            self._refresh(c)
            if c.state in (CREATED, RUNNING) and self.runc.state(c.id) is None:
                c.state, c.reason = EXITED, REASON_ERROR
                c.message = "container was lost while the runtime was down (no runc state)"
                c.exit_code = c.exit_code or 255
                c.finished_at = c.finished_at or time.time_ns()
                self._save_container(c)

    def _find(self, table: dict, oid: str, kind: str):
        with self._lock:
            if oid in table:
                return table[oid]
            if len(oid) >= 6:
                hits = [v for k, v in table.items() if k.startswith(oid)]
                if len(hits) == 1:
                    return hits[0]
        if not oid:
            raise InvalidArgument(f"{kind} id is required")
        raise NotFound(f"{kind} {oid!r} not found")

    def _sandbox(self, sid: str) -> SandboxRecord:
        return self._find(self.sandboxes, sid, "pod sandbox")

    def _container(self, cid: str) -> ContainerRecord:
        return self._find(self.containers, cid, "container")

    # ---- status helpers -------------------------------------------------------------------

    def _refresh(self, c: ContainerRecord) -> ContainerRecord:
        """Moves a created or running container to exited when conmon has recorded its exit."""
        if c.state not in (CREATED, RUNNING):
            return c
        exit_file = self.exit_dir / c.id
        try:
            text = exit_file.read_text().strip()
            finished = exit_file.stat().st_mtime_ns
        except FileNotFoundError:
            return c
        try:
            code = int(text)
        except ValueError:
            code = 255
        c.exit_code = code
        # File times are coarser than the clock; never report an exit before the start.
        c.finished_at = max(finished, c.started_at)
        c.state = EXITED
        bundle = self._bundle(c.id)
        oom = (bundle / "conmon" / "oom").exists() or (bundle / "oom").exists() or \
            linux.cgroup_stats(c.cgroup_path).get("oom_kills", 0) > 0
        if oom:
            c.reason = REASON_OOM
        elif code == 0:
            c.reason = REASON_COMPLETED
        else:
            c.reason = REASON_ERROR
        if not c.started_at:
            c.message = c.message or "container exited before it was started"
        self._save_container(c)
        return c

    def _bundle(self, cid: str) -> Path:
        return self.container_dir / cid

    # ---- runtime ----------------------------------------------------------------------------

    def version(self) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                                       runtime_version=RUNTIME_VERSION, runtime_api_version="v1")

    def status(self, verbose: bool) -> api_pb2.StatusResponse:
        conditions = [api_pb2.RuntimeCondition(type="RuntimeReady", status=True)]
        ready, reason, message = self.network.ready()
        conditions.append(api_pb2.RuntimeCondition(type="NetworkReady", status=ready,
                                                   reason=reason, message=message))
        info = {}
        if verbose:
            info = {"stateDir": str(self.state_dir), "runcRoot": str(self.runc.root),
                    "cgroupRoot": self.cgroup_root, "cgroupVersion": "2" if linux.cgroup_v2() else "1"}
        return api_pb2.StatusResponse(status=api_pb2.RuntimeStatus(conditions=conditions), info=info)

    # ---- sandboxes ---------------------------------------------------------------------------

    def run_pod_sandbox(self, config: api_pb2.PodSandboxConfig, runtime_handler: str) -> str:
        md = config.metadata
        for name in ("name", "namespace", "uid"):
            if not getattr(md, name):
                raise InvalidArgument(f"config.metadata.{name} is required")
        if runtime_handler not in ("", "runc"):
            raise InvalidArgument(f"runtime_handler {runtime_handler!r}: only runc is available")
        sec = config.linux.security_context
        if sec.privileged:
            raise InvalidArgument("config.linux.security_context.privileged: privileged pods are not supported")
        if sec.namespace_options.network not in (api_pb2.POD,):
            raise InvalidArgument("config.linux.security_context.namespace_options.network: "
                                  "only POD network namespaces are supported")
        for key in config.linux.sysctls:
            if not key.startswith("net."):
                raise InvalidArgument(f"config.linux.sysctls: {key!r} is not a namespaced net.* sysctl")
        hostname = config.hostname or md.name
        if len(hostname) > 64:
            raise InvalidArgument(f"config.hostname: {hostname!r} is longer than 64 characters")
        if config.log_directory and not config.log_directory.startswith("/"):
            raise InvalidArgument(f"config.log_directory: {config.log_directory!r} is not absolute")
        cgroup_parent = config.linux.cgroup_parent
        if cgroup_parent and (not cgroup_parent.startswith("/") or ".." in cgroup_parent.split("/")):
            raise InvalidArgument(f"config.linux.cgroup_parent: {cgroup_parent!r} must be an absolute cgroup path")
        with self._lock:
            for s in self.sandboxes.values():
                smd = s.pb_config().metadata
                if (smd.name, smd.namespace, smd.uid, smd.attempt) == (md.name, md.namespace, md.uid, md.attempt):
                    raise AlreadyExists(f"pod sandbox for {md.namespace}/{md.name} attempt "
                                        f"{md.attempt} already exists: {s.id}")
            sid = secrets.token_hex(32)
            self._object_locks[sid] = threading.Lock()
        with self._object_lock(sid):
            s = SandboxRecord(
                id=sid, config=_b64(config), state="ready", created_at=time.time_ns(),
                netns=str(self.netns_dir / sid),
                cgroup_parent=cgroup_parent or f"{self.cgroup_root}/pod-{sid[:16]}",
                log_directory=config.log_directory or str(self.log_dir / sid),
                runtime_handler=runtime_handler)
            files = self.sandbox_dir / sid
            try:
                files.mkdir(parents=True)
                Path(s.log_directory).mkdir(parents=True, exist_ok=True)
                linux.create_netns(Path(s.netns))
                for key, value in config.linux.sysctls.items():
                    try:
                        linux.set_netns_sysctl(Path(s.netns), key, value)
                    except ValueError as e:
                        raise InvalidArgument(f"config.linux.sysctls: {e}") from None
                try:
                    result = self.network.setup(sid, s.netns, md.namespace, md.name, md.uid,
                                                [{"protocol": api_pb2.Protocol.Name(p.protocol),
                                                  "container_port": p.container_port,
                                                  "host_port": p.host_port, "host_ip": p.host_ip}
                                                 for p in config.port_mappings])
                except NetworkSetupError as e:
                    raise Unavailable(str(e)) from None
                s.ip, s.additional_ips = result.ip, list(result.additional_ips)
                self._write_pod_files(files, hostname, s.ip, config.dns_config)
                self._save_sandbox(s)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.network.teardown(sid, s.netns)
                linux.remove_netns(Path(s.netns))
                shutil.rmtree(files, ignore_errors=True)
                if not config.log_directory:
                    shutil.rmtree(s.log_directory, ignore_errors=True)
                raise
            with self._lock:
                self.sandboxes[sid] = s
        return sid

    @staticmethod
    def _write_pod_files(files: Path, hostname: str, ip: str, dns: api_pb2.DNSConfig) -> None:
        (files / "hostname").write_text(hostname + "\n")
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"{ip or '127.0.1.1'}\t{hostname}\n"
        (files / "hosts").write_text(hosts)
        if dns.servers or dns.searches or dns.options:
            lines = [f"nameserver {s}" for s in dns.servers]
            if dns.searches:
                lines.append("search " + " ".join(dns.searches))
            if dns.options:
                lines.append("options " + " ".join(dns.options))
            (files / "resolv.conf").write_text("\n".join(lines) + "\n")
        else:
            try:
                shutil.copyfile("/etc/resolv.conf", files / "resolv.conf")
            except OSError:
                (files / "resolv.conf").write_text("")

    def stop_pod_sandbox(self, sid: str) -> None:
        try:
            s = self._sandbox(sid)
        except NotFound:
            return
        for c in self._containers_of(s.id):
            self.stop_container(c.id, 0)
        with self._object_lock(s.id):
            if s.state == "ready" or linux.mounts_under(Path(s.netns)):
                try:
                    self.network.teardown(s.id, s.netns)
                except NetworkSetupError as e:
                    # The sandbox stays ready so that a retried stop tears the network down.
                    raise Unavailable(str(e)) from None
                linux.remove_netns(Path(s.netns))
                s.state = "notready"
                self._save_sandbox(s)

    def remove_pod_sandbox(self, sid: str) -> None:
        try:
            s = self._sandbox(sid)
        except NotFound:
            return
        for c in self._containers_of(s.id):
            self.remove_container(c.id)
        self.stop_pod_sandbox(s.id)
        with self._object_lock(s.id):
            left = linux.remove_cgroup(s.cgroup_parent)
            if left:
                raise Internal(f"removing pod cgroup: {'; '.join(left)}")
            shutil.rmtree(self.sandbox_dir / s.id, ignore_errors=True)
            if not s.pb_config().log_directory:
                shutil.rmtree(s.log_directory, ignore_errors=True)
            (self.sandbox_dir / f"{s.id}.json").unlink(missing_ok=True)
            with self._lock:
                self.sandboxes.pop(s.id, None)
        with self._lock:
            self._object_locks.pop(s.id, None)

    def _containers_of(self, sid: str) -> list[ContainerRecord]:
        with self._lock:
            return [c for c in self.containers.values() if c.sandbox_id == sid]

    def _pb_sandbox_state(self, s: SandboxRecord) -> int:
        return api_pb2.SANDBOX_READY if s.state == "ready" else api_pb2.SANDBOX_NOTREADY

    def pod_sandbox_status(self, sid: str, verbose: bool) -> api_pb2.PodSandboxStatusResponse:
        s = self._sandbox(sid)
        cfg = s.pb_config()
        status = api_pb2.PodSandboxStatus(
            id=s.id, metadata=cfg.metadata, state=self._pb_sandbox_state(s), created_at=s.created_at,
            network=api_pb2.PodSandboxNetworkStatus(
                ip=s.ip, additional_ips=[api_pb2.PodIP(ip=i) for i in s.additional_ips]),
            linux=api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(
                options=cfg.linux.security_context.namespace_options)),
            labels=cfg.labels, annotations=cfg.annotations, runtime_handler=s.runtime_handler)
        info = {}
        if verbose:
            info = {"netns": s.netns, "cgroupParent": s.cgroup_parent, "logDirectory": s.log_directory}
        return api_pb2.PodSandboxStatusResponse(
            status=status, info=info, timestamp=time.time_ns(),
            containers_statuses=[self.container_status(c.id, False).status
                                 for c in self._containers_of(s.id)])

    def list_pod_sandbox(self, f: api_pb2.PodSandboxFilter | None) -> list[api_pb2.PodSandbox]:
        with self._lock:
            sandboxes = list(self.sandboxes.values())
        out = []
        for s in sorted(sandboxes, key=lambda s: s.created_at):
            cfg = s.pb_config()
            state = self._pb_sandbox_state(s)
            if f is not None:
                if f.id and not s.id.startswith(f.id):
                    continue
                if f.HasField("state") and f.state.state != state:
                    continue
                if any(cfg.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(api_pb2.PodSandbox(id=s.id, metadata=cfg.metadata, state=state,
                                          created_at=s.created_at, labels=cfg.labels,
                                          annotations=cfg.annotations,
                                          runtime_handler=s.runtime_handler))
        return out

    # ---- containers --------------------------------------------------------------------------

    def create_container(self, sid: str, config: api_pb2.ContainerConfig,
                         sandbox_config: api_pb2.PodSandboxConfig | None) -> str:
        s = self._sandbox(sid)
        if s.state != "ready":
            raise FailedPrecondition(f"pod sandbox {s.id} is not ready")
        md = config.metadata
        if not md.name:
            raise InvalidArgument("config.metadata.name is required")
        if not config.image.image:
            raise InvalidArgument("config.image.image is required")
        if config.tty or config.stdin:
            raise InvalidArgument("config.tty/config.stdin: interactive containers are not supported")
        if config.devices:
            raise InvalidArgument("config.devices: devices are not supported")
        sec = config.linux.security_context
        if sec.privileged:
            raise InvalidArgument("config.linux.security_context.privileged: privileged containers are not supported")
        if sec.namespace_options.network == api_pb2.NODE:
            raise InvalidArgument("config.linux.security_context.namespace_options.network: host network is not supported")
        image = self.images.get(config.image.image)
        resources = config.linux.resources if config.linux.HasField("resources") else None
        if resources is not None:
            oci_spec.validate_resources(resources)
        caps = oci_spec.capabilities(sec.capabilities if sec.HasField("capabilities") else None)
        seccomp_profile = oci_spec.seccomp_for(sec.seccomp if sec.HasField("seccomp") else None)
        user_mounts = oci_spec.user_mounts(config.mounts)
        sandbox_files = self.sandbox_dir / s.id
        taken = {m["destination"] for m in user_mounts}
        for name in ("hosts", "hostname", "resolv.conf"):
            if f"/etc/{name}" not in taken:
                user_mounts.append({"destination": f"/etc/{name}", "type": "bind",
                                    "source": str(sandbox_files / name),
                                    "options": ["rbind", "rprivate", "ro" if sec.readonly_rootfs else "rw"]})
        stop_signal = signal.SIGTERM
        if config.stop_signal:
            stop_signal = SIGNALS[api_pb2.Signal.Name(config.stop_signal).removeprefix("SIGNAL_")]
        elif image.config.get("StopSignal"):
            name = str(image.config["StopSignal"]).upper()
            stop_signal = int(name) if name.isdigit() else SIGNALS.get(
                name if name.startswith("SIG") else f"SIG{name}", signal.SIGTERM)
        log_rel = config.log_path or f"{md.name}_{md.attempt}.log"
        log_path = Path(os.path.normpath(os.path.join(s.log_directory, log_rel)))
        if not str(log_path).startswith(s.log_directory.rstrip("/") + "/"):
            raise InvalidArgument(f"config.log_path: {config.log_path!r} leaves the sandbox's log directory")
        with self._lock:
            for c in self.containers.values():
                cmd = c.pb_config().metadata
                if c.sandbox_id == s.id and (cmd.name, cmd.attempt) == (md.name, md.attempt):
                    raise AlreadyExists(f"container {md.name} attempt {md.attempt} already exists "
                                        f"in pod sandbox {s.id}: {c.id}")
            cid = secrets.token_hex(32)
            c = ContainerRecord(
                id=cid, sandbox_id=s.id, config=_b64(config), image_id=image.id,
                image_ref=image.repo_digests[0] if image.repo_digests else image.id,
                state=CREATING, created_at=time.time_ns(), log_path=str(log_path),
                cgroup_path=f"{s.cgroup_parent}/{cid[:16]}", stop_signal=int(stop_signal),
                resources=_b64(resources) if resources is not None else "")
            # Recorded before anything is made, so a crash half-way is undone at startup.
            self._save_container(c)
            self.containers[cid] = c
            self._object_locks[cid] = threading.Lock()
        with self._object_lock(cid):
            try:
                self._create(c, s, config, image, user_mounts, caps, seccomp_profile, resources)
            except BaseException:
                self._destroy_container_files(c)
                with self._lock:
                    self.containers.pop(cid, None)
                    self._object_locks.pop(cid, None)
                raise
        return cid

    def _create(self, c: ContainerRecord, s: SandboxRecord, config: api_pb2.ContainerConfig, image,
                mounts: list[dict], caps: list[str], seccomp_profile, resources) -> None:
        bundle = self._bundle(c.id)
        rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
        for d in (rootfs, upper, work):
            d.mkdir(parents=True, exist_ok=True)
        try:
            linux.mount_overlay(self.images.layer_paths(image), upper, work, rootfs)
        except OSError as e:
            raise Internal(f"mounting the container's root filesystem: {e}") from None
        sec = config.linux.security_context
        user = oci_spec.resolve_user(
            rootfs, image.config.get("User", ""),
            sec.run_as_user.value if sec.HasField("run_as_user") else None,
            sec.run_as_group.value if sec.HasField("run_as_group") else None,
            sec.run_as_username, list(sec.supplemental_groups))
        hostname = (self.sandbox_dir / s.id / "hostname").read_text().strip()
        spec = oci_spec.build(
            args=oci_spec.process_args(image.config, list(config.command), list(config.args)),
            env=oci_spec.environment(image.config, config.envs, hostname),
            cwd=config.working_dir or image.config.get("WorkingDir") or "/",
            user=user, hostname=hostname, rootfs=rootfs, readonly_rootfs=sec.readonly_rootfs,
            mounts=mounts, netns_path=s.netns, cgroups_path=c.cgroup_path,
            linux_resources=oci_spec.resources(resources, self._swap_controller),
            caps=caps, oom_score_adj=resources.oom_score_adj if resources is not None else 0,
            masked_paths=list(sec.masked_paths) or list(oci_spec.MASKED_PATHS),
            readonly_paths=list(sec.readonly_paths) or list(oci_spec.READONLY_PATHS),
            seccomp_profile=seccomp_profile)
        if not spec["process"]["cwd"].startswith("/"):
            raise InvalidArgument(f"config.working_dir: {spec['process']['cwd']!r} is not absolute")
        write_json(bundle / "config.json", spec)
        Path(c.log_path).parent.mkdir(parents=True, exist_ok=True)
        c.uid, c.gid = user.uid, user.gid
        c.pid = launch_conmon(conmon=self.conmon, runc=self.runc, cid=c.id, name=c.id[:12],
                              bundle=bundle, log_path=Path(c.log_path), exit_dir=self.exit_dir,
                              persist_dir=bundle / "conmon", socket_dir=self.socket_dir)
        try:
            c.conmon_pid = int((bundle / "conmon.pid").read_text().strip())
        except (OSError, ValueError):
            c.conmon_pid = 0
        if c.conmon_pid:
            # Out of the service's own cgroup, so a service manager that stops the
            # service by killing its cgroup does not take the containers' conmons along.
            linux.move_to_cgroup(c.conmon_pid, s.cgroup_parent)
        c.state = CREATED
        self._save_container(c)

    def _destroy_container_files(self, c: ContainerRecord) -> None:
        """Deletes the runc container, unmounts and removes the bundle, exit file and record."""
        with contextlib.suppress(Exception):
            self.runc.delete(c.id)
        if c.conmon_pid:
            wait_pid_gone(c.conmon_pid, 5)
        bundle = self._bundle(c.id)
        for point in linux.mounts_under(bundle):
            with contextlib.suppress(OSError):
                linux.unmount(point)
        shutil.rmtree(bundle, ignore_errors=True)
        (self.exit_dir / c.id).unlink(missing_ok=True)
        (self.socket_dir / c.id).unlink(missing_ok=True)  # conmon's link to the bundle
        linux.remove_cgroup(c.cgroup_path)
        (self.container_dir / f"{c.id}.json").unlink(missing_ok=True)

    def start_container(self, cid: str) -> None:
        c = self._container(cid)
        with self._object_lock(c.id):
            self._refresh(c)
            if c.state != CREATED:
                raise FailedPrecondition(f"container {c.id} is {c.state}, not created")
            # Taken before the process can run, so a fast exit never precedes its start.
            started = time.time_ns()
            self.runc.start(c.id)
            c.started_at = started
            c.state = RUNNING
            self._save_container(c)
            self._refresh(c)

    def stop_container(self, cid: str, timeout: int) -> None:
        try:
            c = self._container(cid)
        except NotFound:
            return
        with self._object_lock(c.id):
            self._refresh(c)
            if c.state not in (CREATED, RUNNING):
                return
            if timeout > 0 and c.state == RUNNING and c.stop_signal != signal.SIGKILL:
                if self.runc.kill(c.id, c.stop_signal) and self._wait_exit(c, timeout):
                    return
            self.runc.kill(c.id, signal.SIGKILL, all_processes=False)
            if not self._wait_exit(c, 30):
                raise DeadlineExceeded(f"container {c.id} did not exit after SIGKILL")

    def _wait_exit(self, c: ContainerRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._refresh(c)
            if c.state == EXITED:
                return True
            if c.conmon_pid and not pid_alive(c.conmon_pid):
                # conmon is gone without an exit file (it was killed): trust runc.
                state = self.runc.state(c.id)
                if state is None or state.get("status") == "stopped":
                    c.state, c.reason, c.exit_code = EXITED, REASON_ERROR, 255
                    c.message = "conmon exited without recording the exit code"
                    c.finished_at = time.time_ns()
                    self._save_container(c)
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def remove_container(self, cid: str) -> None:
        try:
            c = self._container(cid)
        except NotFound:
            return
        self.stop_container(c.id, 0)
        with self._object_lock(c.id):
            self._destroy_container_files(c)
            with self._lock:
                self.containers.pop(c.id, None)
        with self._lock:
            self._object_locks.pop(c.id, None)

    def _pb_container(self, c: ContainerRecord) -> api_pb2.Container:
        cfg = c.pb_config()
        return api_pb2.Container(
            id=c.id, pod_sandbox_id=c.sandbox_id, metadata=cfg.metadata, image=cfg.image,
            image_ref=c.image_ref, state=STATE_TO_CRI[c.state], created_at=c.created_at,
            labels=cfg.labels, annotations=cfg.annotations, image_id=c.image_id)

    def list_containers(self, f: api_pb2.ContainerFilter | None) -> list[api_pb2.Container]:
        with self._lock:
            containers = [c for c in self.containers.values() if c.state != CREATING]
        out = []
        for c in sorted(containers, key=lambda c: c.created_at):
            self._refresh(c)
            if f is not None:
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not c.sandbox_id.startswith(f.pod_sandbox_id):
                    continue
                if f.HasField("state") and f.state.state != STATE_TO_CRI[c.state]:
                    continue
                labels = c.pb_config().labels
                if any(labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(self._pb_container(c))
        return out

    def container_status(self, cid: str, verbose: bool) -> api_pb2.ContainerStatusResponse:
        c = self._container(cid)
        self._refresh(c)
        cfg = c.pb_config()
        res = api_pb2.LinuxContainerResources()
        if c.resources:
            res = _unb64(api_pb2.LinuxContainerResources, c.resources)
        status = api_pb2.ContainerStatus(
            id=c.id, metadata=cfg.metadata, state=STATE_TO_CRI[c.state], created_at=c.created_at,
            started_at=c.started_at, finished_at=c.finished_at, exit_code=c.exit_code,
            image=cfg.image, image_ref=c.image_ref, reason=c.reason, message=c.message,
            labels=cfg.labels, annotations=cfg.annotations, mounts=cfg.mounts, log_path=c.log_path,
            resources=api_pb2.ContainerResources(linux=res), image_id=c.image_id,
            user=api_pb2.ContainerUser(linux=api_pb2.LinuxContainerUser(uid=c.uid, gid=c.gid)),
            stop_signal=cfg.stop_signal)
        info = {}
        if verbose:
            info = {"pid": str(c.pid), "conmonPid": str(c.conmon_pid), "bundle": str(self._bundle(c.id)),
                    "cgroupPath": c.cgroup_path, "sandboxId": c.sandbox_id}
        return api_pb2.ContainerStatusResponse(status=status, info=info)

    def update_container_resources(self, cid: str, r: api_pb2.LinuxContainerResources) -> None:
        c = self._container(cid)
        with self._object_lock(c.id):
            self._refresh(c)
            if c.state not in (CREATED, RUNNING):
                raise FailedPrecondition(f"container {c.id} is {c.state}")
            oci_spec.validate_resources(r)
            current = _unb64(api_pb2.LinuxContainerResources, c.resources) if c.resources \
                else api_pb2.LinuxContainerResources()
            # Fields the request sets replace the current ones; zero ones leave them.
            for name in ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes",
                         "oom_score_adj", "cpuset_cpus", "cpuset_mems", "memory_swap_limit_in_bytes"):
                if getattr(r, name):
                    setattr(current, name, getattr(r, name))
            oci_spec.validate_resources(current)
            oci = oci_spec.resources(current, self._swap_controller)
            oci.pop("devices", None)
            self.runc.update(c.id, oci)
            c.resources = _b64(current)
            self._save_container(c)

    def reopen_container_log(self, cid: str) -> None:
        c = self._container(cid)
        self._refresh(c)
        if c.state != RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running")
        ctl = self._bundle(c.id) / "ctl"
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise FailedPrecondition(f"container {c.id}: its log writer is not listening: {e}") from None
        try:
            os.write(fd, b"2 0 0\n")  # conmon's "reopen log" control message
        finally:
            os.close(fd)

    def exec_sync(self, cid: str, cmd: list[str], timeout: int) -> api_pb2.ExecSyncResponse:
        import subprocess
        c = self._container(cid)
        if not cmd:
            raise InvalidArgument("cmd is required")
        self._refresh(c)
        if c.state != RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running")
        pid_file = self._bundle(c.id) / f"exec-{secrets.token_hex(6)}.pid"
        proc = subprocess.Popen(self.runc.exec_command(c.id, cmd, pid_file),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout if timeout > 0 else None)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            proc.kill()
            proc.communicate()
            raise DeadlineExceeded(f"command {cmd!r} timed out after {timeout}s") from None
        finally:
            pid_file.unlink(missing_ok=True)
        code = proc.returncode
        if code == 255 and b"exec failed" in err:
            # runc could not start the command: report it as a shell would.
            code = 127 if b"not found" in err or b"no such file" in err else 126
        return api_pb2.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    def container_stats(self, cid: str) -> api_pb2.ContainerStats:
        c = self._container(cid)
        return self._stats(c)

    def _stats(self, c: ContainerRecord) -> api_pb2.ContainerStats:
        cfg = c.pb_config()
        now = time.time_ns()
        raw = linux.cgroup_stats(c.cgroup_path)
        u64 = api_pb2.UInt64Value
        cpu = api_pb2.CpuUsage(timestamp=now)
        if "cpu_ns" in raw:
            cpu.usage_core_nano_seconds.CopyFrom(u64(value=raw["cpu_ns"]))
        mem = api_pb2.MemoryUsage(timestamp=now)
        if "usage" in raw:
            mem.usage_bytes.CopyFrom(u64(value=raw["usage"]))
            mem.working_set_bytes.CopyFrom(u64(value=raw["working_set"]))
            mem.rss_bytes.CopyFrom(u64(value=raw["rss"]))
            mem.page_faults.CopyFrom(u64(value=raw["page_faults"]))
            mem.major_page_faults.CopyFrom(u64(value=raw["major_page_faults"]))
            if "limit" in raw:
                mem.available_bytes.CopyFrom(u64(value=max(0, raw["limit"] - raw["working_set"])))
        used = inodes = 0
        for dirpath, dirnames, filenames in os.walk(self._bundle(c.id) / "upper"):
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                    inodes += 1
        layer = api_pb2.FilesystemUsage(
            timestamp=now, fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.container_dir)),
            used_bytes=u64(value=used), inodes_used=u64(value=inodes))
        return api_pb2.ContainerStats(
            attributes=api_pb2.ContainerAttributes(id=c.id, metadata=cfg.metadata, labels=cfg.labels,
                                                   annotations=cfg.annotations),
            cpu=cpu, memory=mem, writable_layer=layer)

    def list_container_stats(self, f: api_pb2.ContainerStatsFilter | None) -> list[api_pb2.ContainerStats]:
        with self._lock:
            containers = [c for c in self.containers.values() if c.state != CREATING]
        out = []
        for c in containers:
            self._refresh(c)
            if c.state != RUNNING:
                continue
            if f is not None:
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not c.sandbox_id.startswith(f.pod_sandbox_id):
                    continue
                labels = c.pb_config().labels
                if any(labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(self._stats(c))
        return out

    # ---- images --------------------------------------------------------------------------

    def remove_image(self, text: str) -> None:
        image = self.images.find(text)
        if image is None:
            return

        def in_use(image_id: str) -> bool:
            with self._lock:
                return any(c.image_id == image_id for c in self.containers.values())

        self.images.remove(image, in_use)

    def image_fs_info(self) -> api_pb2.ImageFsInfoResponse:
        now = time.time_ns()
        used, inodes = self.images.usage()
        u64 = api_pb2.UInt64Value
        images = api_pb2.FilesystemUsage(
            timestamp=now, fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.images.root)),
            used_bytes=u64(value=used), inodes_used=u64(value=inodes))
        cused = cinodes = 0
        with self._lock:
            ids = list(self.containers)
        for cid in ids:
            for dirpath, dirnames, filenames in os.walk(self._bundle(cid) / "upper"):
                for name in dirnames + filenames:
                    with contextlib.suppress(OSError):
                        cused += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                        cinodes += 1
        containers = api_pb2.FilesystemUsage(
            timestamp=now, fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.container_dir)),
            used_bytes=u64(value=cused), inodes_used=u64(value=cinodes))
        return api_pb2.ImageFsInfoResponse(image_filesystems=[images], container_filesystems=[containers])
