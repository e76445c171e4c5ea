"""Filter: the node's labels include every key=value of the pod's
spec.nodeSelector. The reason is kube-scheduler's (its NodeAffinity plugin
checks nodeSelector and required node affinity under one message)."""

from __future__ import annotations

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import NodeInfo, PodInfo

NAME = "NodeSelector"
ERR_REASON = "node(s) didn't match Pod's node affinity/selector"

_MISMATCH = Status.unschedulable(ERR_REASON, plugin=NAME)


@register
class NodeSelector(Plugin):
    name = NAME

    def needs_filter(self, pod: PodInfo) -> bool:
        return bool(pod.node_selector)

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        labels = node.labels
        for key, value in pod.node_selector.items():
            if labels.get(key) != value:
                return _MISMATCH
        return SUCCESS
