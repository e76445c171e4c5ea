"""The scheduling decision: how many nodes are looked at, rotation, scoring,
tie-breaking, and the FailedScheduling message."""

from __future__ import annotations

import random

import pytest

from services.scheduler.algorithm import ScheduleAlgorithm, num_feasible_nodes_to_find
from services.scheduler.framework import FitError, Framework, Status, fit_error_message
from services.scheduler.snapshot import Snapshot

from .builders import make_node, make_pod


@pytest.mark.parametrize("nodes, percentage, want", [
    (0, 0, 0),
    (5, 0, 5),
    (99, 0, 99),
    (100, 0, 100),        # adaptive 50% of 100 = 50 -> at least 100
    (1000, 0, 420),       # 50 - 1000/125 = 42%
    (5000, 0, 500),       # 50 - 40 = 10%
    (6000, 0, 300),       # 50 - 48 = 2% -> at least 5%
    (1000, 10, 100),      # 10% of 1000 = 100
    (1000, 5, 100),       # 50 -> at least 100 nodes
    (1000, 100, 1000),
    (150, 30, 100),
], ids=lambda v: str(v))
def test_num_feasible_nodes_to_find(nodes, percentage, want):
    assert num_feasible_nodes_to_find(nodes, percentage) == want


def snapshot_with(*nodes, pods=()):
    snap = Snapshot()
    for n in nodes:
        snap.add_node(n.build())
    for p in pods:
        snap.add_pod(p.build())
    return snap


def test_picks_the_only_feasible_node():
    snap = snapshot_with(make_node("small").allocatable(cpu="1"), make_node("big").allocatable(cpu="8"))
    algo = ScheduleAlgorithm(Framework(), snap)
    result = algo.schedule(make_pod().requests(cpu="4").info())
    assert (result.node_name, result.evaluated_nodes, result.feasible_nodes) == ("big", 2, 1)


def test_prefers_least_allocated_node():
    snap = snapshot_with(make_node("a"), make_node("b"),
                         pods=[make_pod("x").node("a").requests(cpu="2", memory="4Gi")])
    algo = ScheduleAlgorithm(Framework(), snap)
    assert algo.schedule(make_pod().requests(cpu="100m").info()).node_name == "b"


def test_ties_are_broken_at_random_across_all_best_nodes():
    snap = snapshot_with(*(make_node(f"n{i}") for i in range(4)))
    algo = ScheduleAlgorithm(Framework(), snap, rng=random.Random(7))
    pod = make_pod().info()
    chosen = {algo.schedule(pod).node_name for _ in range(200)}
    assert chosen == {"n0", "n1", "n2", "n3"}


def test_stops_filtering_once_enough_feasible_nodes_are_found_and_rotates():
    snap = snapshot_with(*(make_node(f"n{i:04d}") for i in range(1000)))
    algo = ScheduleAlgorithm(Framework(), snap)
    pod = make_pod().info()
    first = algo.find_nodes_that_fit(pod)
    assert (len(first[0]), first[2]) == (420, 420)
    assert algo.next_start_node_index == 420
    second = algo.find_nodes_that_fit(pod)
    assert second[0][0].name == "n0420"
    third = algo.find_nodes_that_fit(pod)
    # wraps around: 840..999 then 0..259
    assert third[0][0].name == "n0840" and third[0][-1].name == "n0259"
    assert algo.next_start_node_index == 260


def test_explicit_percentage_of_nodes_to_score():
    snap = snapshot_with(*(make_node(f"n{i:04d}") for i in range(1000)))
    algo = ScheduleAlgorithm(Framework(), snap, percentage_of_nodes_to_score=20)
    assert len(algo.find_nodes_that_fit(make_pod().info())[0]) == 200


def test_infeasible_nodes_do_not_count_towards_the_sample():
    nodes = [make_node(f"n{i:03d}").allocatable(cpu="1" if i % 2 else "8") for i in range(300)]
    algo = ScheduleAlgorithm(Framework(), snapshot_with(*nodes))
    feasible, statuses, evaluated = algo.find_nodes_that_fit(make_pod().requests(cpu="2").info())
    # 300 nodes: 48% -> find 144 feasible; every other node is, the 144th is n286.
    assert len(feasible) == 144
    assert (evaluated, len(statuses), feasible[-1].name) == (287, 143, "n286")


def test_spreads_pods_of_one_owner_evenly():
    snap = snapshot_with(*(make_node(f"n{i}") for i in range(5)))
    algo = ScheduleAlgorithm(Framework(), snap, rng=random.Random(1))
    for i in range(30):
        pod = make_pod(f"p{i}").owner("rs1").requests(cpu="10m").info()
        snap.assume_pod(pod, algo.schedule(pod).node_name)
    assert sorted(len(n.pods) for n in snap.node_list) == [6, 6, 6, 6, 6]


def test_no_fit_raises_fit_error_with_every_node_counted():
    snap = snapshot_with(
        make_node("a").allocatable(cpu="1"), make_node("b").allocatable(cpu="1"),
        make_node("c").ready("Unknown").taint("node.kubernetes.io/unreachable", effect="NoExecute"))
    algo = ScheduleAlgorithm(Framework(), snap)
    with pytest.raises(FitError) as e:
        algo.schedule(make_pod().requests(cpu="2").info())
    assert str(e.value) == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                            "{node.kubernetes.io/unreachable: }, 2 Insufficient cpu.")
    assert e.value.plugins == {"NodeReadySchedulable", "NodeResourcesFit"}


def test_no_nodes_at_all():
    with pytest.raises(FitError, match="no nodes available to schedule pods"):
        ScheduleAlgorithm(Framework(), Snapshot()).schedule(make_pod().info())


MESSAGE_CASES = [
    ("one_reason", 3, [["Insufficient cpu"]] * 3, "0/3 nodes are available: 3 Insufficient cpu."),
    ("a_node_with_two_reasons_counts_both", 2,
     [["Insufficient cpu", "Insufficient memory"], ["Insufficient cpu"]],
     "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."),
    ("sorted_as_strings_like_kube_scheduler", 12,
     [["Insufficient cpu"]] * 10 + [["node(s) were unschedulable"]] * 2,
     "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable."),
    ("mixed", 4, [["Too many pods"], ["node(s) had untolerated taint {a: b}"],
                  ["node(s) didn't match Pod's node affinity/selector"], ["Too many pods"]],
     "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
     "1 node(s) had untolerated taint {a: b}, 2 Too many pods."),
    ("no_nodes", 0, [], "no nodes available to schedule pods"),
]


@pytest.mark.parametrize("num_nodes, reasons, want", [c[1:] for c in MESSAGE_CASES],
                         ids=[c[0] for c in MESSAGE_CASES])
def test_fit_error_message(num_nodes, reasons, want):
    statuses = [Status.unschedulable(*r) for r in reasons]
    assert fit_error_message(num_nodes, statuses) == want
