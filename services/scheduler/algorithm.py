"""One scheduling decision: filter nodes, score the feasible ones, pick one.

Pure over (framework, snapshot): no I/O, no awaiting, so it is tested
directly and a cycle always sees one consistent snapshot.

As kube-scheduler, it does not look at every node of a large cluster: it
filters nodes until it has found `num_feasible_nodes_to_find` feasible ones
(percentageOfNodesToScore; by default adaptive, 50% minus 1% per 125 nodes,
never below 5% nor below 100 nodes), starting where the previous cycle
stopped so every node gets its turn, and scores only those. Ties between
the best scores are broken at random.
"""

from __future__ import annotations

import random
from itertools import repeat
from dataclasses import dataclass

from .framework import SUCCESS, FitError, Framework, Status
from .node_info import NodeInfo, PodInfo
from .snapshot import Snapshot

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
ADAPTIVE_BASE_PERCENTAGE = 50


def num_feasible_nodes_to_find(num_all_nodes: int, percentage_of_nodes_to_score: int = 0) -> int:
    """How many feasible nodes to find before scoring (kube-scheduler's
    numFeasibleNodesToFind). `percentage_of_nodes_to_score` 0 means adaptive."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage_of_nodes_to_score >= 100:
        return num_all_nodes
    percentage = percentage_of_nodes_to_score
    if percentage <= 0:
        percentage = ADAPTIVE_BASE_PERCENTAGE - num_all_nodes // 125
        percentage = max(percentage, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    num = num_all_nodes * percentage // 100
    return max(num, MIN_FEASIBLE_NODES_TO_FIND)


def _batch_filter(plugin):
    """plugin.filter_nodes(pod, nodes) if it has one, else filter() per node."""
    batch = getattr(plugin, "filter_nodes", None)
    if batch is not None:
        return batch
    one = plugin.filter
    return lambda pod, nodes: list(map(one, repeat(pod, len(nodes)), nodes))


@dataclass
class ScheduleResult:
    node_name: str
    evaluated_nodes: int  # nodes filtered
    feasible_nodes: int   # nodes that passed (and were scored)


class ScheduleAlgorithm:
    def __init__(self, framework: Framework, snapshot: Snapshot,
                 percentage_of_nodes_to_score: int = 0, rng: random.Random | None = None):
        self.framework = framework
        self.snapshot = snapshot
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.rng = rng or random.Random()
        self.next_start_node_index = 0

    def schedule(self, pod: PodInfo) -> ScheduleResult:
        """The node for `pod`. Raises FitError when no node fits."""
        feasible, statuses, evaluated = self.find_nodes_that_fit(pod)
        if not feasible:
            raise FitError(pod, len(self.snapshot.node_list), statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self.score(pod, feasible)
        return ScheduleResult(self.select_host(feasible, totals), evaluated, len(feasible))

    def find_nodes_that_fit(self, pod: PodInfo) -> tuple[list[NodeInfo], dict[str, Status], int]:
        """(feasible nodes, status of each rejected node, nodes evaluated)."""
        nodes = self.snapshot.node_list
        n = len(nodes)
        if n == 0:
            return [], {}, 0
        to_find = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score)
        filters = [_batch_filter(p) for p in self.framework.filters_for(pod)]
        start = self.next_start_node_index % n
        order = nodes[start:] + nodes[:start] if start else nodes
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        processed = 0
        # Take exactly as many nodes as feasible ones are still missing and
        # run each filter over the survivors with map(): the same nodes are
        # evaluated as one node at a time would, with far less Python loop
        # overhead per (node, filter).
        while len(feasible) < to_find and processed < n:
            chunk = order[processed:processed + to_find - len(feasible)]
            processed += len(chunk)
            for f in filters:
                results = f(pod, chunk)
                # count() compares by identity first: all-SUCCESS is one C call.
                if results.count(SUCCESS) != len(results):
                    survivors = []
                    for node, st in zip(chunk, results):
                        if st.code:
                            statuses[node.name] = st
                        else:
                            survivors.append(node)
                    chunk = survivors
                    if not chunk:
                        break
            feasible.extend(chunk)
        self.next_start_node_index = (start + processed) % n
        return feasible, statuses, processed

    def score(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """Weighted sum of every applicable score plugin, per node."""
        totals: list[int] | None = None
        snapshot = self.snapshot
        count = len(nodes)
        for plugin in self.framework.scorers_for(pod):
            batch = getattr(plugin, "score_nodes", None)
            if batch is not None:
                scores = batch(pod, nodes, snapshot)
            else:
                scores = list(map(plugin.score, repeat(pod, count), nodes, repeat(snapshot, count)))
            normalize = getattr(plugin, "normalize", None)
            if normalize is not None:
                normalize(pod, scores)
            w = plugin.weight
            if totals is None:
                totals = [s * w for s in scores] if w != 1 else scores
            else:
                totals = [t + s * w for t, s in zip(totals, scores)]
        return totals if totals is not None else [0] * len(nodes)

    def select_host(self, nodes: list[NodeInfo], totals: list[int]) -> str:
        """The best-scoring node; ties broken uniformly at random."""
        best = max(totals)
        ties = [i for i, t in enumerate(totals) if t == best]
        i = ties[0] if len(ties) == 1 else ties[self.rng.randrange(len(ties))]
        return nodes[i].name
