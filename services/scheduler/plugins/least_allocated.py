"""Score: prefer the node with the most CPU and memory left after placing
the pod, as kube-scheduler's NodeResourcesFit LeastAllocated strategy.

Per resource: (allocatable - requested) * 100 / allocatable, where requested
includes the pod and counts containers without requests as 100m CPU and
200Mi memory (so empty pods spread too); 0 when the node has none of it or
would be over-committed. The node's score is the mean of cpu and memory.
"""

from __future__ import annotations

from ..framework import MAX_NODE_SCORE, Plugin, register
from ..node_info import NodeInfo, PodInfo

NAME = "NodeResourcesLeastAllocated"


@register
class NodeResourcesLeastAllocated(Plugin):
    name = NAME
    weight = 1

    def score(self, pod: PodInfo, node: NodeInfo, snapshot=None) -> int:
        cpu_cap = node.alloc_cpu
        mem_cap = node.alloc_memory
        cpu = node.nonzero_cpu + pod.nonzero_cpu
        mem = node.nonzero_memory + pod.nonzero_memory
        cpu_score = (cpu_cap - cpu) * MAX_NODE_SCORE // cpu_cap if 0 < cpu_cap and cpu <= cpu_cap else 0
        mem_score = (mem_cap - mem) * MAX_NODE_SCORE // mem_cap if 0 < mem_cap and mem <= mem_cap else 0
        return (cpu_score + mem_score) // 2
