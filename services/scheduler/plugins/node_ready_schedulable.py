"""Filter: the node is Ready and accepts new pods.

kube-scheduler expresses both through taints (`node.kubernetes.io/unschedulable`
for cordoned nodes, `not-ready` / `unreachable` for nodes whose Ready
condition is False / Unknown) that the node lifecycle controller adds. This
plugin does not wait for those taints: a node whose Ready condition is not
True is refused at once, unless the pod tolerates the corresponding
NoSchedule taint, and the reason is worded as the taint's would be, so users
see the same message before and after the controller taints the node.
"""

from __future__ import annotations

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import (NO_SCHEDULE, TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE,
                         NodeInfo, PodInfo, tolerations_tolerate)

NAME = "NodeReadySchedulable"
ERR_UNSCHEDULABLE = "node(s) were unschedulable"

_UNSCHEDULABLE = Status.unschedulable(ERR_UNSCHEDULABLE, plugin=NAME)
_NOT_READY = Status.unschedulable(f"node(s) had untolerated taint {{{TAINT_NOT_READY}: }}", plugin=NAME)
_UNREACHABLE = Status.unschedulable(f"node(s) had untolerated taint {{{TAINT_UNREACHABLE}: }}",
                                    plugin=NAME)


@register
class NodeReadySchedulable(Plugin):
    name = NAME

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        if node.accepts_pods:
            return SUCCESS
        if node.unschedulable and not tolerations_tolerate(
                pod.tolerations, TAINT_UNSCHEDULABLE, "", NO_SCHEDULE):
            return _UNSCHEDULABLE
        if node.ready_status != "True":
            if node.ready_status == "False":
                key, status = TAINT_NOT_READY, _NOT_READY
            else:
                key, status = TAINT_UNREACHABLE, _UNREACHABLE
            if not tolerations_tolerate(pod.tolerations, key, "", NO_SCHEDULE):
                return status
        return SUCCESS

    def filter_nodes(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status]:
        """filter() for many nodes, with the common case inlined."""
        slow = self.filter
        return [SUCCESS if n.accepts_pods else slow(pod, n) for n in nodes]
