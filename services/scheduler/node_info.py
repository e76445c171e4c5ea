"""What the scheduler knows about one pod and one node, precomputed for speed.

`PodInfo` is a pod read once: summed resource requests (init containers
max'd, as kube-scheduler's computePodResourceRequest), host ports, owner,
node selector, affinity terms and tolerations. It is built when a pod enters
the queue or the cache and never changes afterwards (a changed pod gets a new
PodInfo), so filter plugins read plain attributes instead of walking the
protobuf message for every node.

`NodeInfo` is a node plus the aggregates of the pods assigned to it
(requested CPU / memory / scalar resources, pod count, used host ports,
pods per controller owner), maintained incrementally as pods are added and
removed: nothing is recomputed per scheduling cycle.

Both are plain mutable objects owned by the scheduler's event loop; plugins
must treat them as read-only.
"""

from __future__ import annotations

import functools
from typing import Iterable

from google.protobuf.message import Message

from kubeling.quantity import QuantityError, parse_quantity

CPU = "cpu"
MEMORY = "memory"
PODS = "pods"

# kube-scheduler counts a container that requests nothing as using this much
# when it scores (not when it filters), so empty pods still spread out.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"

TERMINAL_PHASES = ("Succeeded", "Failed")


@functools.lru_cache(maxsize=4096)
def _milli(text: str) -> int:
    return parse_quantity(text).milli_value()


@functools.lru_cache(maxsize=4096)
def _units(text: str) -> int:
    return parse_quantity(text).value()


def _quantity_text(value) -> str:
    """A quantity from a google.protobuf.Value (normally a string after the
    API server's defaulting) or a plain string."""
    if isinstance(value, str):
        return value
    which = value.WhichOneof("kind")
    if which == "string_value":
        return value.string_value
    if which == "number_value":
        n = value.number_value
        return str(int(n)) if n.is_integer() else repr(n)
    return "0"


def resource_amount(name: str, value) -> int:
    """A request or allocatable amount as an int: millicores for cpu, units
    (bytes, pods, devices) for everything else. A malformed quantity counts
    as 0 (the API server rejects them; this only guards a scheduler crash)."""
    text = _quantity_text(value)
    try:
        return _milli(text) if name == CPU else _units(text)
    except QuantityError:
        return 0


class Toleration:
    """A pod's toleration, as plain attributes."""

    __slots__ = ("key", "operator", "value", "effect")

    def __init__(self, key: str = "", operator: str = "", value: str = "", effect: str = ""):
        self.key = key
        self.operator = operator or "Equal"
        self.value = value
        self.effect = effect

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        """Kubernetes' Toleration.ToleratesTaint: an empty effect matches every
        effect; an empty key with Exists matches every taint."""
        if self.effect and self.effect != effect:
            return False
        if self.key and self.key != key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator == "Equal":
            return self.value == value
        return False


def tolerations_tolerate(tolerations: Iterable[Toleration], key: str, value: str, effect: str) -> bool:
    return any(t.tolerates(key, value, effect) for t in tolerations)


class PodInfo:
    """One pod, read once for scheduling (see the module doc)."""

    __slots__ = ("pod", "key", "uid", "namespace", "name", "node_name",
                 "cpu", "memory", "scalar", "nonzero_cpu", "nonzero_memory",
                 "host_ports", "owner_uid", "node_selector", "required_terms",
                 "tolerations", "priority")

    def __init__(self, pod: Message):
        meta = pod.metadata
        spec = pod.spec
        self.pod = pod
        self.namespace = meta.namespace
        self.name = meta.name
        self.key = f"{meta.namespace}/{meta.name}"
        self.uid = meta.uid
        self.node_name = spec.node_name
        self.priority = spec.priority if spec.HasField("priority") else 0

        cpu = memory = nz_cpu = nz_memory = 0
        scalar: dict[str, int] = {}
        ports: list[tuple[str, str, int]] = []
        for c in spec.containers:
            c_cpu, c_mem, c_nz_cpu, c_nz_mem = _container_requests(c, scalar)
            cpu += c_cpu
            memory += c_mem
            nz_cpu += c_nz_cpu
            nz_memory += c_nz_mem
            for p in c.ports:
                if p.host_port > 0:
                    ports.append((p.host_ip or "0.0.0.0", p.protocol or "TCP", p.host_port))
        # An init container runs alone, before the app containers: the pod
        # needs the largest of them or the sum of the app containers.
        for c in spec.init_containers:
            init_scalar: dict[str, int] = {}
            c_cpu, c_mem, c_nz_cpu, c_nz_mem = _container_requests(c, init_scalar)
            cpu = max(cpu, c_cpu)
            memory = max(memory, c_mem)
            nz_cpu = max(nz_cpu, c_nz_cpu)
            nz_memory = max(nz_memory, c_nz_mem)
            for name, amount in init_scalar.items():
                scalar[name] = max(scalar.get(name, 0), amount)
            for p in c.ports:
                if p.host_port > 0:
                    ports.append((p.host_ip or "0.0.0.0", p.protocol or "TCP", p.host_port))
        self.cpu = cpu
        self.memory = memory
        self.scalar = scalar
        self.nonzero_cpu = nz_cpu
        self.nonzero_memory = nz_memory
        self.host_ports = tuple(ports)

        self.owner_uid = ""
        for ref in meta.owner_references:
            if ref.controller:
                self.owner_uid = ref.uid
                break

        self.node_selector = dict(spec.node_selector)
        self.required_terms = None
        if spec.HasField("affinity") and spec.affinity.HasField("node_affinity"):
            na = spec.affinity.node_affinity
            if na.HasField("required_during_scheduling_ignored_during_execution"):
                self.required_terms = tuple(
                    na.required_during_scheduling_ignored_during_execution.node_selector_terms)
        self.tolerations = tuple(Toleration(t.key, t.operator, t.value, t.effect)
                                 for t in spec.tolerations)

    def __repr__(self) -> str:
        return f"<PodInfo {self.key} cpu={self.cpu}m memory={self.memory}>"


def _container_requests(c: Message, scalar: dict[str, int]) -> tuple[int, int, int, int]:
    """(cpu, memory, non-zero cpu, non-zero memory) of one container; other
    resources are added into `scalar`."""
    cpu = memory = 0
    has_cpu = has_memory = False
    for name, value in c.resources.requests.items():
        amount = resource_amount(name, value)
        if name == CPU:
            cpu, has_cpu = amount, True
        elif name == MEMORY:
            memory, has_memory = amount, True
        else:
            scalar[name] = scalar.get(name, 0) + amount
    return (cpu, memory,
            cpu if has_cpu else DEFAULT_MILLI_CPU_REQUEST,
            memory if has_memory else DEFAULT_MEMORY_REQUEST)


def pod_is_terminal(pod: Message) -> bool:
    return pod.status.phase in TERMINAL_PHASES


class NodeInfo:
    """One node and the aggregates of the pods assigned to it (see the module doc).

    `node` is None for a "ghost": a node deleted while pods still point at
    it, kept until those pods go so the aggregates stay right if it returns.
    """

    __slots__ = ("name", "node", "labels", "ready_status", "unschedulable", "accepts_pods",
                 "taints", "filter_taints", "alloc_cpu", "alloc_memory", "alloc_pods",
                 "alloc_scalar", "req_cpu", "req_memory", "req_scalar", "free_cpu", "free_memory",
                 "nonzero_cpu", "nonzero_memory", "pod_count", "pods", "used_ports",
                 "owner_counts")

    def __init__(self, name: str, node: Message | None = None):
        self.name = name
        self.node: Message | None = None
        self.labels: dict[str, str] = {}
        self.ready_status = "Unknown"
        self.unschedulable = False
        self.accepts_pods = False  # Ready=True and not unschedulable
        self.taints: tuple[tuple[str, str, str], ...] = ()
        self.filter_taints: tuple[tuple[str, str, str], ...] = ()
        self.alloc_cpu = self.alloc_memory = self.alloc_pods = 0
        self.alloc_scalar: dict[str, int] = {}
        self.req_cpu = self.req_memory = 0
        self.req_scalar: dict[str, int] = {}
        self.free_cpu = self.free_memory = 0  # allocatable - requested
        self.nonzero_cpu = self.nonzero_memory = 0
        self.pod_count = 0
        self.pods: dict[str, PodInfo] = {}
        # (protocol, port) -> {host ip: number of pods using it}
        self.used_ports: dict[tuple[str, int], dict[str, int]] = {}
        self.owner_counts: dict[str, int] = {}
        if node is not None:
            self.set_node(node)

    def __repr__(self) -> str:
        return (f"<NodeInfo {self.name} cpu {self.req_cpu}/{self.alloc_cpu}m "
                f"memory {self.req_memory}/{self.alloc_memory} pods {len(self.pods)}/{self.alloc_pods}>")

    @property
    def ready(self) -> bool:
        return self.ready_status == "True"

    def set_node(self, node: Message) -> None:
        """Take the node's labels, readiness, taints and allocatable."""
        self.node = node
        self.labels = dict(node.metadata.labels)
        self.unschedulable = node.spec.unschedulable
        self.ready_status = "Unknown"  # no Ready condition: never heard from, as Kubernetes
        for cond in node.status.conditions:
            if cond.type == "Ready":
                self.ready_status = cond.status or "Unknown"
                break
        self.accepts_pods = self.ready_status == "True" and not self.unschedulable
        self.taints = tuple((t.key, t.value, t.effect) for t in node.spec.taints)
        self.filter_taints = tuple(t for t in self.taints if t[2] in (NO_SCHEDULE, NO_EXECUTE))
        alloc = node.status.allocatable
        self.alloc_cpu = self.alloc_memory = self.alloc_pods = 0
        self.alloc_scalar = {}
        for name, value in alloc.items():
            amount = resource_amount(name, value)
            if name == CPU:
                self.alloc_cpu = amount
            elif name == MEMORY:
                self.alloc_memory = amount
            elif name == PODS:
                self.alloc_pods = amount
            else:
                self.alloc_scalar[name] = amount
        self.free_cpu = self.alloc_cpu - self.req_cpu
        self.free_memory = self.alloc_memory - self.req_memory

    def add_pod(self, pi: PodInfo) -> None:
        """Count `pi` on this node (replacing an older entry with its key)."""
        if pi.key in self.pods:
            self.remove_pod(pi.key)
        self.pods[pi.key] = pi
        self.pod_count += 1
        self.req_cpu += pi.cpu
        self.req_memory += pi.memory
        self.free_cpu -= pi.cpu
        self.free_memory -= pi.memory
        self.nonzero_cpu += pi.nonzero_cpu
        self.nonzero_memory += pi.nonzero_memory
        for name, amount in pi.scalar.items():
            self.req_scalar[name] = self.req_scalar.get(name, 0) + amount
        for ip, protocol, port in pi.host_ports:
            ips = self.used_ports.setdefault((protocol, port), {})
            ips[ip] = ips.get(ip, 0) + 1
        if pi.owner_uid:
            self.owner_counts[pi.owner_uid] = self.owner_counts.get(pi.owner_uid, 0) + 1

    def remove_pod(self, key: str) -> PodInfo | None:
        """Stop counting the pod with `key`; returns its PodInfo, or None."""
        pi = self.pods.pop(key, None)
        if pi is None:
            return None
        self.pod_count -= 1
        self.req_cpu -= pi.cpu
        self.req_memory -= pi.memory
        self.free_cpu += pi.cpu
        self.free_memory += pi.memory
        self.nonzero_cpu -= pi.nonzero_cpu
        self.nonzero_memory -= pi.nonzero_memory
        for name, amount in pi.scalar.items():
            left = self.req_scalar.get(name, 0) - amount
            if left:
                self.req_scalar[name] = left
            else:
                self.req_scalar.pop(name, None)
        for ip, protocol, port in pi.host_ports:
            ips = self.used_ports.get((protocol, port))
            if ips is not None and ip in ips:
                ips[ip] -= 1
                if not ips[ip]:
                    del ips[ip]
                if not ips:
                    del self.used_ports[(protocol, port)]
        if pi.owner_uid:
            left = self.owner_counts.get(pi.owner_uid, 0) - 1
            if left > 0:
                self.owner_counts[pi.owner_uid] = left
            else:
                self.owner_counts.pop(pi.owner_uid, None)
        return pi
