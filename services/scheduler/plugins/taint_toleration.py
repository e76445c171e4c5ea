"""Filter: every NoSchedule and NoExecute taint of the node is tolerated by
the pod (PreferNoSchedule only matters for scoring). The reason names the
first untolerated taint, as kube-scheduler's TaintToleration:
`node(s) had untolerated taint {key: value}`."""

from __future__ import annotations

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import NodeInfo, PodInfo

NAME = "TaintToleration"


def untolerated_message(key: str, value: str) -> str:
    return f"node(s) had untolerated taint {{{key}: {value}}}"


@register
class TaintToleration(Plugin):
    name = NAME

    def __init__(self, weight: int | None = None):
        super().__init__(weight)
        self._statuses: dict[tuple[str, str], Status] = {}

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        if not node.filter_taints:
            return SUCCESS
        tolerations = pod.tolerations
        for key, value, effect in node.filter_taints:
            if not any(t.tolerates(key, value, effect) for t in tolerations):
                status = self._statuses.get((key, value))
                if status is None:
                    if len(self._statuses) > 1000:
                        self._statuses.clear()
                    status = self._statuses[(key, value)] = self.unschedulable(
                        untolerated_message(key, value))
                return status
        return SUCCESS

    def filter_nodes(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status]:
        """filter() for many nodes, with the common case inlined."""
        slow = self.filter
        return [slow(pod, n) if n.filter_taints else SUCCESS for n in nodes]
