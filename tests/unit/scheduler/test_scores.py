"""Score plugins called directly, and normalising."""

from __future__ import annotations

import pytest

from services.scheduler.framework import PLUGINS, load_plugins

from .builders import make_node, make_pod

load_plugins()


LEAST_ALLOCATED_CASES = [
    # (cpu: 4000m alloc) (memory: 8Gi alloc); the pod's own request counts.
    ("empty_node_small_pod", make_pod().requests(cpu="1", memory="2Gi"), make_node().info(),
     (75 + 75) // 2),
    ("half_used", make_pod().requests(cpu="1", memory="2Gi"),
     make_node().info(make_pod("a").requests(cpu="1", memory="2Gi")), (50 + 50) // 2),
    ("no_requests_count_as_100m_200mi", make_pod(), make_node().allocatable(cpu="1", memory="2000Mi").info(),
     (90 + 90) // 2),
    ("overcommitted_resource_scores_zero", make_pod().requests(cpu="8", memory="2Gi"),
     make_node().info(), (0 + 75) // 2),
    ("no_allocatable_scores_zero", make_pod().requests(cpu="1"),
     make_node().allocatable(cpu="0", memory="0").info(), 0),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in LEAST_ALLOCATED_CASES],
                         ids=[c[0] for c in LEAST_ALLOCATED_CASES])
def test_least_allocated(pod, node, want):
    assert PLUGINS["NodeResourcesLeastAllocated"]().score(pod.info(), node, None) == want


def test_least_allocated_prefers_emptier_node():
    plugin = PLUGINS["NodeResourcesLeastAllocated"]()
    pod = make_pod().requests(cpu="100m", memory="100Mi").info()
    busy = make_node("busy").info(make_pod("a").requests(cpu="2", memory="4Gi"))
    idle = make_node("idle").info()
    assert plugin.score(pod, idle, None) > plugin.score(pod, busy, None)


def spread_scores(pod, nodes):
    plugin = PLUGINS["SelectorSpread"]()
    pi = pod.info()
    if not plugin.needs_score(pi):
        return None
    scores = [plugin.score(pi, n, None) for n in nodes]
    plugin.normalize(pi, scores)
    return scores


SPREAD_CASES = [
    ("no_owner_not_scored", make_pod(), [make_node("a").info()], None),
    ("nothing_placed_yet_all_best", make_pod().owner("rs1"),
     [make_node("a").info(), make_node("b").info()], [100, 100]),
    ("fewer_same_owner_scores_higher", make_pod().owner("rs1"),
     [make_node("a").info(make_pod("p1").owner("rs1"), make_pod("p2").owner("rs1")),
      make_node("b").info(make_pod("p3").owner("rs1")),
      make_node("c").info()],
     [0, 50, 100]),
    ("other_owners_do_not_count", make_pod().owner("rs1"),
     [make_node("a").info(make_pod("p1").owner("rs2"), make_pod("p2").owner("rs2")),
      make_node("b").info(make_pod("p3").owner("rs1"))],
     [100, 0]),
]


@pytest.mark.parametrize("pod, nodes, want", [c[1:] for c in SPREAD_CASES],
                         ids=[c[0] for c in SPREAD_CASES])
def test_selector_spread(pod, nodes, want):
    assert spread_scores(pod, nodes) == want


def test_default_weights_put_spreading_first():
    assert PLUGINS["SelectorSpread"]().weight == 2
    assert PLUGINS["NodeResourcesLeastAllocated"]().weight == 1
