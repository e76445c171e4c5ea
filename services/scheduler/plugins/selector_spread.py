"""Score: spread the pods of one controller (ReplicaSet, ...) across nodes.

The raw score is how many pods with the same controller owner the node
already has (assumed pods included); normalising turns it around so the node
with the fewest gets 100 and the one with the most gets 0, as
kube-scheduler's SelectorSpread: 100 * (max - count) / max. Pods without a
controller owner are not scored.
"""

from __future__ import annotations

from ..framework import MAX_NODE_SCORE, Plugin, register
from ..node_info import NodeInfo, PodInfo

NAME = "SelectorSpread"


@register
class SelectorSpread(Plugin):
    name = NAME
    weight = 2

    def needs_score(self, pod: PodInfo) -> bool:
        return bool(pod.owner_uid)

    def score(self, pod: PodInfo, node: NodeInfo, snapshot=None) -> int:
        return node.owner_counts.get(pod.owner_uid, 0)

    def score_nodes(self, pod: PodInfo, nodes: list[NodeInfo], snapshot=None) -> list[int]:
        owner = pod.owner_uid
        return [n.owner_counts.get(owner, 0) for n in nodes]

    def normalize(self, pod: PodInfo, scores: list[int]) -> None:
        top = max(scores, default=0)
        if top == 0:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
            return
        scores[:] = [MAX_NODE_SCORE * (top - s) // top for s in scores]
