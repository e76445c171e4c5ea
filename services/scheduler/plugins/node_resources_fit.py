"""Filter: the pod's requests fit what the node has left.

Requested = the sum over the pods assigned (or assumed) to the node. A pod
fits when the node has room for one more pod and, for every resource the pod
requests a non-zero amount of, allocatable - requested covers it. Each
shortfall is its own reason, as kube-scheduler's NodeResourcesFit:
`Too many pods`, `Insufficient cpu`, `Insufficient memory`,
`Insufficient <resource>`.
"""

from __future__ import annotations

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import NodeInfo, PodInfo

NAME = "NodeResourcesFit"
TOO_MANY_PODS = "Too many pods"


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


@register
class NodeResourcesFit(Plugin):
    name = NAME

    def __init__(self, weight: int | None = None):
        super().__init__(weight)
        self._statuses: dict[tuple[str, ...], Status] = {}

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        # The common case in one expression: room for everything.
        if (pod.cpu <= node.free_cpu and pod.memory <= node.free_memory
                and node.pod_count < node.alloc_pods and not pod.scalar):
            return SUCCESS
        reasons = []
        if node.pod_count + 1 > node.alloc_pods:
            reasons.append(TOO_MANY_PODS)
        if pod.cpu > 0 and pod.cpu > node.free_cpu:
            reasons.append(insufficient("cpu"))
        if pod.memory > 0 and pod.memory > node.free_memory:
            reasons.append(insufficient("memory"))
        for name, amount in sorted(pod.scalar.items()):
            if amount > 0 and amount > node.alloc_scalar.get(name, 0) - node.req_scalar.get(name, 0):
                reasons.append(insufficient(name))
        if not reasons:
            return SUCCESS
        key = tuple(reasons)
        status = self._statuses.get(key)
        if status is None:
            if len(self._statuses) > 1000:
                self._statuses.clear()
            status = self._statuses[key] = self.unschedulable(*reasons)
        return status

    def filter_nodes(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status]:
        """filter() for many nodes, with the common case inlined."""
        if pod.scalar:
            return [self.filter(pod, n) for n in nodes]
        cpu, memory, slow = pod.cpu, pod.memory, self.filter
        return [SUCCESS if cpu <= n.free_cpu and memory <= n.free_memory and n.pod_count < n.alloc_pods
                else slow(pod, n) for n in nodes]
