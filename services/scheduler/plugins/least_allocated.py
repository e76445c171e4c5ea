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
        return self.score_nodes(pod, [node], snapshot)[0]

    def score_nodes(self, pod: PodInfo, nodes: list[NodeInfo], snapshot=None) -> list[int]:
        """score() for many nodes in one call (the scheduling loop's hot path)."""
        cpu = pod.nonzero_cpu
        mem = pod.nonzero_memory
        top = MAX_NODE_SCORE
        return [
            (((n.alloc_cpu - n.nonzero_cpu - cpu) * top // n.alloc_cpu
              if 0 < n.alloc_cpu and n.nonzero_cpu + cpu <= n.alloc_cpu else 0)
             + ((n.alloc_memory - n.nonzero_memory - mem) * top // n.alloc_memory
                if 0 < n.alloc_memory and n.nonzero_memory + mem <= n.alloc_memory else 0)) // 2
            for n in nodes]
