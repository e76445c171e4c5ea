"""Filter: every host port the pod asks for is free on the node. Two uses
of one protocol and port conflict when their host IPs are equal or either
is 0.0.0.0 (all addresses), as in kube-scheduler's NodePorts."""

from __future__ import annotations

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import NodeInfo, PodInfo

NAME = "NodePorts"
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"
ALL_ADDRESSES = "0.0.0.0"

_CONFLICT = Status.unschedulable(ERR_REASON, plugin=NAME)


@register
class NodePorts(Plugin):
    name = NAME

    def needs_filter(self, pod: PodInfo) -> bool:
        return bool(pod.host_ports)

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        used = node.used_ports
        if not used:
            return SUCCESS
        for ip, protocol, port in pod.host_ports:
            ips = used.get((protocol, port))
            if ips and (ip == ALL_ADDRESSES or ALL_ADDRESSES in ips or ip in ips):
                return _CONFLICT
        return SUCCESS
