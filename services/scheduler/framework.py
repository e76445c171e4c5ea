"""The scheduling framework: statuses, plugin shapes, the plugin registry.

As in kube-scheduler's framework, every check is a plugin, one module each
under `plugins/`:

- a filter plugin has `filter(pod, node_info) -> Status`: SUCCESS when the
  pod may run on the node, or UNSCHEDULABLE with the reasons why not
  ("Insufficient cpu"). Filters are pure functions of (PodInfo, NodeInfo).
  A filter plugin may also define `filter_nodes(pod, nodes) -> [Status]`,
  the same verdicts for many nodes in one call, which the scheduling loop
  prefers (it saves a Python call per node in the hot loop).
- a score plugin has `score(pod, node_info, snapshot) -> int` and a
  `weight`; it may define `normalize(pod, scores)` to rescale the raw
  scores of all feasible nodes in place (kube-scheduler's ScoreExtensions).
  After normalising, every score is in 0..100 (MAX_NODE_SCORE). A score
  plugin may also define `score_nodes(pod, nodes, snapshot) -> list[int]`,
  the same scores for many nodes in one call, which the scheduling loop
  prefers (one call per pod instead of one per node).
- `needs_filter(pod)` / `needs_score(pod)` return False when a plugin has
  nothing to say about a pod (kube-scheduler's PreFilter / PreScore "Skip"),
  so the per-node loop runs only the plugins that matter.

Plugins register themselves by name with `@register`; a profile names which
filters run (in order) and which scores count with what weight.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

from .node_info import NodeInfo, PodInfo

MAX_NODE_SCORE = 100


class Code(enum.IntEnum):
    SUCCESS = 0
    UNSCHEDULABLE = 1  # the pod does not fit this node; another node may do
    ERROR = 2          # the plugin failed; retry the pod with backoff


class Status:
    """A plugin's verdict: a code, the reasons (each counted per node in the
    FailedScheduling message) and the plugin that gave it."""

    __slots__ = ("code", "reasons", "plugin")

    def __init__(self, code: Code = Code.SUCCESS, reasons: Sequence[str] = (), plugin: str = ""):
        self.code = code
        self.reasons = tuple(reasons)
        self.plugin = plugin

    @classmethod
    def unschedulable(cls, *reasons: str, plugin: str = "") -> "Status":
        return cls(Code.UNSCHEDULABLE, reasons, plugin)

    @classmethod
    def error(cls, reason: str, plugin: str = "") -> "Status":
        return cls(Code.ERROR, (reason,), plugin)

    @property
    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Status) and self.code == other.code
                and self.reasons == other.reasons)

    def __hash__(self) -> int:
        return hash((self.code, self.reasons))

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {list(self.reasons)!r}, plugin={self.plugin!r})"


# Shared, never mutated: a filter returns this singleton for "fits", so the
# hot loop allocates nothing for nodes that pass.
SUCCESS = Status()


# ---------------------------------------------------------------- plugin shapes

@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def needs_filter(self, pod: PodInfo) -> bool: ...

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str
    weight: int

    def needs_score(self, pod: PodInfo) -> bool: ...

    def score(self, pod: PodInfo, node: NodeInfo, snapshot) -> int: ...


class Plugin:
    """Convenience base: every hook defaults to "applies to every pod"."""

    name = ""
    weight = 1

    def __init__(self, weight: int | None = None):
        if weight is not None:
            self.weight = weight

    def needs_filter(self, pod: PodInfo) -> bool:
        return True

    def needs_score(self, pod: PodInfo) -> bool:
        return True

    def unschedulable(self, *reasons: str) -> Status:
        return Status(Code.UNSCHEDULABLE, reasons, self.name)


# ---------------------------------------------------------------- the registry

# plugin name -> factory(weight=None) -> plugin; filled by @register.
PLUGINS: dict[str, Callable[..., Plugin]] = {}


def register(cls):
    """Class decorator: make the plugin available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    PLUGINS[cls.name] = cls
    return cls


def load_plugins() -> None:
    """Import every module under plugins/ so each registers itself."""
    import importlib
    import pkgutil

    from . import plugins as package
    for mod in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{mod.name}")


# kube-scheduler's default order: cheap, often-failing checks first.
DEFAULT_FILTERS = ("NodeReadySchedulable", "TaintToleration", "NodeSelector", "NodeAffinity",
                   "NodePorts", "NodeResourcesFit")
# name -> weight (kube-scheduler: NodeResourcesFit 1, PodTopologySpread 2)
DEFAULT_SCORES = {"NodeResourcesLeastAllocated": 1, "SelectorSpread": 2}


class Framework:
    """The plugins of one scheduler profile, instantiated from the registry."""

    def __init__(self, filters: Iterable[str] = DEFAULT_FILTERS,
                 scores: dict[str, int] | None = None):
        load_plugins()
        scores = DEFAULT_SCORES if scores is None else scores
        unknown = [n for n in (*filters, *scores) if n not in PLUGINS]
        if unknown:
            raise ValueError(f"unknown scheduler plugins: {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(PLUGINS))}")
        self.filter_plugins: list[Plugin] = [PLUGINS[n]() for n in filters]
        self.score_plugins: list[Plugin] = [PLUGINS[n](weight=w) for n, w in scores.items()]

    def filters_for(self, pod: PodInfo) -> list[Plugin]:
        return [p for p in self.filter_plugins if p.needs_filter(pod)]

    def scorers_for(self, pod: PodInfo) -> list[Plugin]:
        return [p for p in self.score_plugins if p.needs_score(pod) and p.weight]

    def run_filters(self, pod: PodInfo, node: NodeInfo) -> Status:
        """Every applicable filter in order; the first failure wins."""
        for p in self.filters_for(pod):
            status = p.filter(pod, node)
            if status.code:
                return status
        return SUCCESS


# ---------------------------------------------------------------- no fit

NO_NODES_AVAILABLE = "no nodes available to schedule pods"


def fit_error_message(num_all_nodes: int, statuses: Iterable[Status]) -> str:
    """kube-scheduler's FitError text: each reason counted over the nodes
    that gave it, then "count reason" strings sorted as strings, e.g.
    `0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu.`"""
    if num_all_nodes == 0:
        return NO_NODES_AVAILABLE
    counts: Counter[str] = Counter()
    for status in statuses:
        counts.update(status.reasons)
    parts = sorted(f"{n} {reason}" for reason, n in counts.items())
    message = f"0/{num_all_nodes} nodes are available"
    return f"{message}: {', '.join(parts)}." if parts else f"{message}."


class FitError(Exception):
    """No node fits the pod. `statuses` maps each node that was tried to the
    status that rejected it."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, statuses: dict[str, Status]):
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.statuses = statuses
        super().__init__(fit_error_message(num_all_nodes, statuses.values()))

    @property
    def message(self) -> str:
        return str(self)

    @property
    def plugins(self) -> set[str]:
        """The plugins that rejected some node (kube-scheduler's UnschedulablePlugins)."""
        return {s.plugin for s in self.statuses.values() if s.plugin}
