"""Small builders for scheduler unit tests, as the scheduler framework's
st.MakePod() / st.MakeNode():

    make_pod("web").requests(cpu="500m", memory="1Gi").toleration("k", effect="NoSchedule")
    make_node("n1").allocatable(cpu="2", memory="4Gi").taint("k", "v").info(pod_a, pod_b)

`.build()` gives the protobuf message (as the API server would store it:
quantities as strings), `.info()` the PodInfo / NodeInfo plugins take.
"""

from __future__ import annotations

import uuid

from kubeling.api.v1 import core_pb2

from services.scheduler.node_info import NodeInfo, PodInfo


class PodBuilder:
    def __init__(self, name: str = "pod", namespace: str = "default"):
        pod = core_pb2.Pod(api_version="v1", kind="Pod")
        pod.metadata.name = name
        pod.metadata.namespace = namespace
        pod.metadata.uid = uuid.uuid4().hex
        pod.metadata.resource_version = "1"
        pod.spec.scheduler_name = "default-scheduler"
        pod.spec.containers.add(name="c", image="img")
        pod.status.phase = "Pending"
        self.pod = pod

    @staticmethod
    def _set(resources, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            if value is not None:
                resources[name].string_value = str(value)

    def requests(self, cpu: str | None = None, memory: str | None = None,
                 other: dict[str, str] | None = None) -> "PodBuilder":
        """Requests of the first container."""
        self._set(self.pod.spec.containers[0].resources.requests,
                  {"cpu": cpu, "memory": memory, **(other or {})})
        return self

    def container(self, cpu: str | None = None, memory: str | None = None) -> "PodBuilder":
        c = self.pod.spec.containers.add(name=f"c{len(self.pod.spec.containers)}", image="img")
        self._set(c.resources.requests, {"cpu": cpu, "memory": memory})
        return self

    def init_container(self, cpu: str | None = None, memory: str | None = None) -> "PodBuilder":
        c = self.pod.spec.init_containers.add(name=f"init{len(self.pod.spec.init_containers)}",
                                              image="img")
        self._set(c.resources.requests, {"cpu": cpu, "memory": memory})
        return self

    def host_port(self, port: int, protocol: str = "TCP", host_ip: str = "") -> "PodBuilder":
        self.pod.spec.containers[0].ports.add(container_port=port, host_port=port,
                                              protocol=protocol, host_ip=host_ip)
        return self

    def node_selector(self, **labels: str) -> "PodBuilder":
        self.pod.spec.node_selector.update(labels)
        return self

    def node_affinity_term(self, expressions=(), fields=()) -> "PodBuilder":
        """One required term (ORed with others): (key, operator, [values]) tuples."""
        na = self.pod.spec.affinity.node_affinity
        term = na.required_during_scheduling_ignored_during_execution.node_selector_terms.add()
        for key, op, values in expressions:
            term.match_expressions.add(key=key, operator=op, values=values)
        for key, op, values in fields:
            term.match_fields.add(key=key, operator=op, values=values)
        return self

    def toleration(self, key: str = "", operator: str = "", value: str = "",
                   effect: str = "") -> "PodBuilder":
        self.pod.spec.tolerations.add(key=key, operator=operator, value=value, effect=effect)
        return self

    def owner(self, uid: str, kind: str = "ReplicaSet", name: str = "rs") -> "PodBuilder":
        self.pod.metadata.owner_references.add(api_version="apps/v1", kind=kind, name=name,
                                               uid=uid, controller=True)
        return self

    def labels(self, **labels: str) -> "PodBuilder":
        self.pod.metadata.labels.update(labels)
        return self

    def node(self, name: str) -> "PodBuilder":
        self.pod.spec.node_name = name
        return self

    def phase(self, phase: str) -> "PodBuilder":
        self.pod.status.phase = phase
        return self

    def scheduler_name(self, name: str) -> "PodBuilder":
        self.pod.spec.scheduler_name = name
        return self

    def priority(self, value: int) -> "PodBuilder":
        self.pod.spec.priority = value
        return self

    def resource_version(self, rv: str) -> "PodBuilder":
        self.pod.metadata.resource_version = rv
        return self

    def build(self) -> core_pb2.Pod:
        out = core_pb2.Pod()
        out.CopyFrom(self.pod)
        return out

    def info(self) -> PodInfo:
        return PodInfo(self.build())


class NodeBuilder:
    def __init__(self, name: str):
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = name
        node.metadata.uid = uuid.uuid4().hex
        node.metadata.resource_version = "1"
        node.metadata.labels["kubernetes.io/hostname"] = name
        node.status.allocatable.update({"cpu": "4", "memory": "8Gi", "pods": "110"})
        node.status.capacity.update(node.status.allocatable)
        node.status.conditions.add(type="Ready", status="True")
        self.node = node

    def allocatable(self, cpu: str | None = None, memory: str | None = None,
                    pods: int | None = None, other: dict[str, str] | None = None) -> "NodeBuilder":
        values = {"cpu": cpu, "memory": memory, "pods": None if pods is None else str(pods),
                  **(other or {})}
        for k, v in values.items():
            if v is not None:
                self.node.status.allocatable[k] = v
                self.node.status.capacity[k] = v
        return self

    def labels(self, **labels: str) -> "NodeBuilder":
        self.node.metadata.labels.update(labels)
        return self

    def label(self, key: str, value: str) -> "NodeBuilder":
        self.node.metadata.labels[key] = value
        return self

    def taint(self, key: str, value: str = "", effect: str = "NoSchedule") -> "NodeBuilder":
        self.node.spec.taints.add(key=key, value=value, effect=effect)
        return self

    def ready(self, status: str = "True") -> "NodeBuilder":
        for cond in self.node.status.conditions:
            if cond.type == "Ready":
                cond.status = status
        return self

    def no_conditions(self) -> "NodeBuilder":
        del self.node.status.conditions[:]
        return self

    def unschedulable(self, value: bool = True) -> "NodeBuilder":
        self.node.spec.unschedulable = value
        return self

    def build(self) -> core_pb2.Node:
        out = core_pb2.Node()
        out.CopyFrom(self.node)
        return out

    def info(self, *pods: PodBuilder | PodInfo) -> NodeInfo:
        """The NodeInfo with `pods` already assigned to it."""
        info = NodeInfo(self.node.metadata.name, self.build())
        for p in pods:
            info.add_pod(p.info() if isinstance(p, PodBuilder) else p)
        return info


def make_pod(name: str = "pod", namespace: str = "default") -> PodBuilder:
    return PodBuilder(name, namespace)


def make_node(name: str = "node-1") -> NodeBuilder:
    return NodeBuilder(name)


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
