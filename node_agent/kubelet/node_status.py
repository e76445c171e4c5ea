"""The node's registration and status, as the kubelet reports them.

- Capacity from the machine: cpu (os.cpu_count()), memory (MemTotal of
  /proc/meminfo), ephemeral-storage (the filesystem of the state dir) and
  pods (110, Kubernetes' default).
- Allocatable: capacity minus `--system-reserved` (`cpu=100m,memory=256Mi`),
  never below zero.
- Addresses: InternalIP (`--node-ip`) and Hostname (the node name).
- Labels: kubernetes.io/hostname=<node name>, kubernetes.io/os,
  kubernetes.io/arch, plus `--node-labels`.
- Conditions: Ready (True while the runtime answers and reports
  RuntimeReady and NetworkReady, and the network service can attach pods;
  else False with the reason), MemoryPressure / DiskPressure / PIDPressure
  (False). Each heartbeat renews lastHeartbeatTime; lastTransitionTime
  moves only when a status changes.
- nodeInfo: machine id, boot id, kernel, OS image, runtime and agent versions.

`register` creates the Node or takes over an existing one of that name (a
restart): labels are merged, status replaced. `post` writes a fresh status;
the node agent owns its Node's status, so it writes without a
resourceVersion, and a deleted Node is registered again.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import AlreadyExistsError, NotFoundError, retry_on_conflict
from kubeling.quantity import QuantityError, parse_quantity

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
DEFAULT_MAX_PODS = 110
KUBELET_VERSION = "kubeling/0.1.0"
RESERVABLE = ("cpu", "memory", "ephemeral-storage", "pods")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


class ConfigError(ValueError):
    """A bad flag value; the message names it."""


def parse_key_values(text: str, flag: str) -> dict[str, str]:
    """`a=1,b=2` -> {"a": "1", "b": "2"}; ConfigError for anything else."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag}: {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def parse_reservations(text: str) -> dict[str, str]:
    """`--system-reserved cpu=100m,memory=256Mi`, checked."""
    out = parse_key_values(text, "--system-reserved")
    for name, value in out.items():
        if name not in RESERVABLE:
            raise ConfigError(f"--system-reserved: unknown resource {name!r} (use {', '.join(RESERVABLE)})")
        try:
            if parse_quantity(value).nanos < 0:
                raise ConfigError(f"--system-reserved: {name}={value} is negative")
        except QuantityError as e:
            raise ConfigError(f"--system-reserved: {name}: {e}") from None
    return out


def arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def memory_total_bytes(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no MemTotal in {meminfo}")


def machine_capacity(state_dir: str, max_pods: int = DEFAULT_MAX_PODS) -> dict[str, str]:
    capacity = {"cpu": str(os.cpu_count() or 1),
                "memory": f"{memory_total_bytes() // 1024}Ki",
                "pods": str(max_pods)}
    try:
        st = os.statvfs(state_dir)
        capacity["ephemeral-storage"] = f"{st.f_blocks * st.f_frsize // 1024}Ki"
    except OSError:
        pass
    return capacity


def allocatable(capacity: dict[str, str], reserved: dict[str, str]) -> dict[str, str]:
    """capacity - reserved, per resource, floored at zero. Pure."""
    out = {}
    for name, value in capacity.items():
        q = parse_quantity(value)
        if name in reserved:
            q = q - parse_quantity(reserved[name])
            if q.nanos < 0:
                q = parse_quantity("0")
        out[name] = q.format()
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def node_info(runtime_version: str) -> core_pb2.NodeSystemInfo:
    machine_id = _read("/etc/machine-id")
    return core_pb2.NodeSystemInfo(
        machine_id=machine_id, system_uuid=_read("/sys/class/dmi/id/product_uuid") or machine_id,
        boot_id=_read("/proc/sys/kernel/random/boot_id"), kernel_version=platform.release(),
        os_image=os_image(), container_runtime_version=runtime_version,
        kubelet_version=KUBELET_VERSION, kube_proxy_version=KUBELET_VERSION,
        operating_system="linux", architecture=arch())


@dataclass
class NodeConfig:
    name: str
    ip: str
    capacity: dict[str, str]
    allocatable: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    port: int = 10250

    def all_labels(self) -> dict[str, str]:
        labels = {LABEL_HOSTNAME: self.name, LABEL_OS: "linux", LABEL_ARCH: arch()}
        labels.update(self.labels)
        return labels


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    ts.nanos = 0
    return ts


def node_status(cfg: NodeConfig, ready: bool, not_ready_message: str, runtime_version: str,
                old: Message | None = None) -> core_pb2.NodeStatus:
    """A fresh status: heartbeats now, transition times kept while statuses hold."""
    status = core_pb2.NodeStatus()
    status.capacity.update(cfg.capacity)
    status.allocatable.update(cfg.allocatable)
    status.addresses.add(type="InternalIP", address=cfg.ip)
    status.addresses.add(type="Hostname", address=cfg.name)
    status.daemon_endpoints.kubelet_endpoint.port = cfg.port
    status.node_info.CopyFrom(node_info(runtime_version))
    now = _now()
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status") if ready else
        ("Ready", "False", "KubeletNotReady", not_ready_message),
    ]
    previous = {c.type: c for c in old.conditions} if old is not None else {}
    for type_, value, reason, message in wanted:
        cond = status.conditions.add(type=type_, status=value, reason=reason, message=message)
        cond.last_heartbeat_time.CopyFrom(now)
        prev = previous.get(type_)
        if prev is not None and prev.status == value and prev.HasField("last_transition_time"):
            cond.last_transition_time.CopyFrom(prev.last_transition_time)
        else:
            cond.last_transition_time.CopyFrom(now)
    return status


class NodeRegistrar:
    """Registers the Node and posts its status."""

    def __init__(self, client: ApiClient, cfg: NodeConfig):
        self.client = client
        self.cfg = cfg
        self.uid = ""
        self.pod_cidr = ""

    def node_object(self, status: core_pb2.NodeStatus) -> core_pb2.Node:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = self.cfg.name
        node.metadata.labels.update(self.cfg.all_labels())
        node.status.CopyFrom(status)
        return node

    async def register(self, ready: bool, message: str, runtime_version: str) -> Message:
        """Create the Node, or adopt the existing one. Raises ApiError (callers retry)."""
        try:
            node = await self.client.create(self.node_object(node_status(self.cfg, ready, message,
                                                                         runtime_version)))
            self._adopt(node)
            return node
        except AlreadyExistsError:
            pass

        async def relabel() -> Message:
            existing = await self.client.get("nodes", self.cfg.name, "")
            wanted = self.cfg.all_labels()
            if all(existing.metadata.labels.get(k) == v for k, v in wanted.items()):
                return existing
            existing.metadata.labels.update(wanted)
            return await self.client.update(existing)
        node = await retry_on_conflict(relabel)
        self._adopt(node)
        return await self.post(ready, message, runtime_version, node)

    def _adopt(self, node: Message) -> None:
        self.uid = node.metadata.uid
        self.pod_cidr = node.spec.pod_cidr

    async def post(self, ready: bool, message: str, runtime_version: str,
                   current: Message | None = None) -> Message:
        """Write a fresh status (a heartbeat). Registers the Node again if it was deleted."""
        if current is None:
            try:
                current = await self.client.get("nodes", self.cfg.name, "")
            except NotFoundError:
                current = None
        if current is None:
            return await self.register(ready, message, runtime_version)
        obj = core_pb2.Node(api_version="v1", kind="Node")
        obj.metadata.name = self.cfg.name
        obj.status.CopyFrom(node_status(self.cfg, ready, message, runtime_version, current.status))
        try:
            node = await self.client.update_status(obj)
        except NotFoundError:
            return await self.register(ready, message, runtime_version)
        self._adopt(node)
        return node
