"""The scheduler's view of the cluster: every node with the pods on it.

Fed by the Node and Pod informers (pods with spec.nodeName set and not
terminal), and by the scheduler itself through the assume cache, as
kube-scheduler's:

- `assume_pod` counts a pod on the node just chosen for it, before the Bind
  RPC returns, so the next scheduling cycle already sees the node's new
  usage even while many binds are in flight;
- when the informer then reports the pod bound (`add_pod`), the assumption
  is confirmed and becomes an ordinary entry;
- `forget_pod` undoes an assumption whose bind failed;
- `finish_binding` starts an expiry clock on a successful bind, so that an
  assumption the watch never confirms is dropped after `assumed_ttl` seconds
  by `cleanup_expired` (15 minutes, as kube-scheduler: a watch that lags
  behind a burst of binds must not make the node look emptier than it is;
  a pod deleted right after its bind arrives as a delete and is dropped then).

Everything is incremental: a pod or node event touches one NodeInfo. In one
asyncio loop a scheduling cycle runs without awaiting, so the snapshot is
consistent for the whole cycle without copying, unlike kube-scheduler's
per-cycle snapshot of its cache.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from google.protobuf.message import Message

from .node_info import NodeInfo, PodInfo

log = logging.getLogger(__name__)


class _Assumed:
    __slots__ = ("info", "node_name", "deadline")

    def __init__(self, info: PodInfo, node_name: str):
        self.info = info
        self.node_name = node_name
        self.deadline: float | None = None  # set once the bind has succeeded


class Snapshot:
    """Nodes and their pods (see the module doc). Not thread-safe; one loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, assumed_ttl: float = 900.0):
        self.clock = clock
        self.assumed_ttl = assumed_ttl
        self._infos: dict[str, NodeInfo] = {}   # real nodes and ghosts
        self._node_list: list[NodeInfo] | None = []  # real nodes, name order; None = rebuild
        self._pod_nodes: dict[str, str] = {}    # pod key -> node it is counted on
        self._assumed: dict[str, _Assumed] = {}

    # --------------------------------------------------------------- reading

    @property
    def node_list(self) -> list[NodeInfo]:
        """Every existing node, in a stable order (name). Do not mutate."""
        if self._node_list is None:
            self._node_list = sorted((i for i in self._infos.values() if i.node is not None),
                                     key=lambda i: i.name)
        return self._node_list

    def __len__(self) -> int:
        return len(self.node_list)

    def get(self, node_name: str) -> NodeInfo | None:
        """The NodeInfo of an existing node, or None."""
        info = self._infos.get(node_name)
        return info if info is not None and info.node is not None else None

    def node_of(self, pod_key: str) -> str | None:
        """The node a pod is counted on (assumed or confirmed), or None."""
        return self._pod_nodes.get(pod_key)

    def is_assumed(self, pod_key: str) -> bool:
        return pod_key in self._assumed

    @property
    def assumed_count(self) -> int:
        return len(self._assumed)

    # ----------------------------------------------------------------- nodes

    def add_node(self, node: Message) -> NodeInfo:
        """Add or update a node; pods already counted on it stay."""
        name = node.metadata.name
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = NodeInfo(name, node)
            self._node_list = None
        else:
            if info.node is None:
                self._node_list = None
            info.set_node(node)
        return info

    update_node = add_node

    def remove_node(self, name: str) -> None:
        """Forget a node. If pods still point at it, keep their aggregates
        as a ghost until they go (or the node comes back)."""
        info = self._infos.get(name)
        if info is None:
            return
        if info.pods:
            info.node = None
        else:
            del self._infos[name]
        self._node_list = None

    # ------------------------------------------------------------------ pods

    def _info_for(self, node_name: str) -> NodeInfo:
        info = self._infos.get(node_name)
        if info is None:  # a pod bound to a node not seen (yet): a ghost
            info = self._infos[node_name] = NodeInfo(node_name)
        return info

    def _drop(self, key: str) -> PodInfo | None:
        node_name = self._pod_nodes.pop(key, None)
        if node_name is None:
            return None
        info = self._infos.get(node_name)
        if info is None:
            return None
        removed = info.remove_pod(key)
        if info.node is None and not info.pods:
            del self._infos[node_name]
        return removed

    def add_pod(self, pod: Message) -> None:
        """A pod the informer reports assigned to a node (spec.nodeName set,
        not terminal); confirms an assumption of it."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        node_name = pod.spec.node_name
        assumed = self._assumed.pop(key, None)
        if assumed is not None and assumed.node_name == node_name \
                and assumed.info.uid == pod.metadata.uid:
            return  # already counted where the API server says it is
        current = self._pod_nodes.get(key)
        if current is not None:
            if assumed is None and current == node_name:
                return  # seen before (relist or update): requests cannot change once bound
            self._drop(key)
        self._info_for(node_name).add_pod(PodInfo(pod))
        self._pod_nodes[key] = node_name

    def update_pod(self, old: Message, new: Message) -> None:
        """An assigned pod changed (status, labels). Bound pods keep their
        requests and node, so only a move or a new uid is re-counted."""
        self.add_pod(new)

    def remove_pod(self, pod: Message) -> None:
        """A pod deleted, finished, or no longer assigned."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        self._assumed.pop(key, None)
        self._drop(key)

    # --------------------------------------------------------- assume cache

    def assume_pod(self, pod: PodInfo, node_name: str) -> None:
        """Count `pod` on `node_name` now, before its Bind returns."""
        key = pod.key
        if key in self._pod_nodes:
            self._drop(key)
        self._info_for(node_name).add_pod(pod)
        self._pod_nodes[key] = node_name
        self._assumed[key] = _Assumed(pod, node_name)

    def finish_binding(self, pod_key: str) -> None:
        """The bind succeeded: expire the assumption if the watch never confirms it."""
        assumed = self._assumed.get(pod_key)
        if assumed is not None:
            assumed.deadline = self.clock() + self.assumed_ttl

    def forget_pod(self, pod_key: str) -> None:
        """The bind failed: stop counting the pod where we assumed it."""
        if self._assumed.pop(pod_key, None) is not None:
            self._drop(pod_key)

    def cleanup_expired(self) -> int:
        """Drop assumptions whose bind finished more than assumed_ttl ago
        without the watch confirming them; returns how many."""
        now = self.clock()
        expired = [k for k, a in self._assumed.items() if a.deadline is not None and a.deadline <= now]
        for key in expired:
            log.warning("assumed pod %s expired (bound, but never seen bound)", key)
            self.forget_pod(key)
        return len(expired)
