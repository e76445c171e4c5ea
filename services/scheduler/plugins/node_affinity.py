"""Filter: the node satisfies the pod's required node affinity
(requiredDuringSchedulingIgnoredDuringExecution).

The terms are ORed; within a term every matchExpressions requirement (on
node labels: In, NotIn, Exists, DoesNotExist, Gt, Lt) and every matchFields
requirement (only `metadata.name`, with In / NotIn) must hold. A term with
neither, or with an invalid requirement, matches no node, as in Kubernetes.
"""

from __future__ import annotations

from kubeling.labels import Operator, Requirement, SelectorError, new_requirement

from ..framework import SUCCESS, Plugin, Status, register
from ..node_info import NodeInfo, PodInfo

NAME = "NodeAffinity"
ERR_REASON = "node(s) didn't match Pod's node affinity/selector"

_MISMATCH = Status.unschedulable(ERR_REASON, plugin=NAME)

_OPERATORS = {"In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
              "DoesNotExist": Operator.DOES_NOT_EXIST, "Gt": Operator.GREATER_THAN,
              "Lt": Operator.LESS_THAN}
_FIELD_OPERATORS = ("In", "NotIn")
_METADATA_NAME = "metadata.name"

Term = tuple[tuple[Requirement, ...], tuple[Requirement, ...]]


def _requirement(key: str, operator: str, values, fields: bool) -> Requirement | None:
    if fields and (key != _METADATA_NAME or operator not in _FIELD_OPERATORS):
        return None
    op = _OPERATORS.get(operator)
    if op is None:
        return None
    try:
        if fields:  # node names need not be valid label values
            return Requirement(key, op, tuple(sorted(values)))
        return new_requirement(key, op, values)
    except SelectorError:
        return None


def compile_terms(terms) -> tuple[Term, ...]:
    """NodeSelectorTerm messages -> (label requirements, field requirements)
    per term, leaving out terms that can match nothing."""
    compiled = []
    for term in terms:
        if not term.match_expressions and not term.match_fields:
            continue
        labels = [_requirement(r.key, r.operator, r.values, False) for r in term.match_expressions]
        fields = [_requirement(r.key, r.operator, r.values, True) for r in term.match_fields]
        if None in labels or None in fields:
            continue
        compiled.append((tuple(labels), tuple(fields)))
    return tuple(compiled)


def node_matches(terms: tuple[Term, ...], node: NodeInfo) -> bool:
    fields = None
    for label_reqs, field_reqs in terms:
        if not all(r.matches(node.labels) for r in label_reqs):
            continue
        if field_reqs:
            if fields is None:
                fields = {_METADATA_NAME: node.name}
            if not all(r.matches(fields) for r in field_reqs):
                continue
        return True
    return False


@register
class NodeAffinity(Plugin):
    name = NAME

    def __init__(self, weight: int | None = None):
        super().__init__(weight)
        # PodInfo is immutable per pod version: compile its terms once.
        self._compiled: dict[int, tuple[PodInfo, tuple[Term, ...]]] = {}

    def needs_filter(self, pod: PodInfo) -> bool:
        return pod.required_terms is not None

    def _terms(self, pod: PodInfo) -> tuple[Term, ...]:
        entry = self._compiled.get(id(pod))
        if entry is None or entry[0] is not pod:
            if len(self._compiled) > 1000:
                self._compiled.clear()
            entry = self._compiled[id(pod)] = (pod, compile_terms(pod.required_terms))
        return entry[1]

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status:
        return SUCCESS if node_matches(self._terms(pod), node) else _MISMATCH
