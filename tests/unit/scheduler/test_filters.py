"""Each filter plugin called directly on (PodInfo, NodeInfo), table-driven."""

from __future__ import annotations

import pytest

from services.scheduler.framework import PLUGINS, Code, load_plugins

from .builders import make_node, make_pod

load_plugins()


def run_filter(plugin_name, pod, node):
    plugin = PLUGINS[plugin_name]()
    pi = pod.info()
    if not plugin.needs_filter(pi):
        return Code.SUCCESS, ()
    status = plugin.filter(pi, node)
    return status.code, status.reasons


OK = (Code.SUCCESS, ())


def unschedulable(*reasons):
    return (Code.UNSCHEDULABLE, reasons)


# ------------------------------------------------------------------ NodeResourcesFit

FIT_CASES = [
    ("no_requests_fit_anywhere", make_pod(), make_node().allocatable(cpu="1").info(), OK),
    ("cpu_fits_exactly", make_pod().requests(cpu="2"), make_node().allocatable(cpu="2").info(), OK),
    ("cpu_over_by_one_milli", make_pod().requests(cpu="2001m"),
     make_node().allocatable(cpu="2").info(), unschedulable("Insufficient cpu")),
    ("cpu_counts_assigned_pods", make_pod().requests(cpu="600m"),
     make_node().allocatable(cpu="1").info(make_pod("a").requests(cpu="500m")),
     unschedulable("Insufficient cpu")),
    ("memory_binary_units", make_pod().requests(memory="1Gi"),
     make_node().allocatable(memory="1024Mi").info(), OK),
    ("memory_short", make_pod().requests(memory="2Gi"),
     make_node().allocatable(memory="1Gi").info(), unschedulable("Insufficient memory")),
    ("cpu_and_memory_short_both_reported", make_pod().requests(cpu="8", memory="64Gi"),
     make_node().info(), unschedulable("Insufficient cpu", "Insufficient memory")),
    ("too_many_pods", make_pod(), make_node().allocatable(pods=1).info(make_pod("a")),
     unschedulable("Too many pods")),
    ("containers_are_summed", make_pod().requests(cpu="600m").container(cpu="600m"),
     make_node().allocatable(cpu="1").info(), unschedulable("Insufficient cpu")),
    ("init_container_max_not_sum", make_pod().requests(cpu="500m").init_container(cpu="900m"),
     make_node().allocatable(cpu="1").info(), OK),
    ("big_init_container_counts", make_pod().requests(cpu="100m").init_container(cpu="1500m"),
     make_node().allocatable(cpu="1").info(), unschedulable("Insufficient cpu")),
    ("extended_resource_missing_on_node", make_pod().requests(other={"example.com/gpu": "1"}),
     make_node().info(), unschedulable("Insufficient example.com/gpu")),
    ("extended_resource_available",
     make_pod().requests(other={"example.com/gpu": "1"}),
     make_node().allocatable(other={"example.com/gpu": "2"}).info(), OK),
    ("overcommitted_node_still_takes_zero_request_pod", make_pod(),
     make_node().allocatable(cpu="100m").info(make_pod("a").requests(cpu="1")), OK),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_node_resources_fit(pod, node, want):
    assert run_filter("NodeResourcesFit", pod, node) == want


# ------------------------------------------------------------ NodeReadySchedulable

READY_CASES = [
    ("ready_node", make_pod(), make_node().info(), OK),
    ("not_ready_is_untolerated_not_ready_taint", make_pod(), make_node().ready("False").info(),
     unschedulable("node(s) had untolerated taint {node.kubernetes.io/not-ready: }")),
    ("unknown_is_untolerated_unreachable_taint", make_pod(), make_node().ready("Unknown").info(),
     unschedulable("node(s) had untolerated taint {node.kubernetes.io/unreachable: }")),
    ("no_ready_condition_counts_as_unreachable", make_pod(), make_node().no_conditions().info(),
     unschedulable("node(s) had untolerated taint {node.kubernetes.io/unreachable: }")),
    ("cordoned", make_pod(), make_node().unschedulable().info(),
     unschedulable("node(s) were unschedulable")),
    ("cordoned_but_tolerated",
     make_pod().toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),
     make_node().unschedulable().info(), OK),
    ("not_ready_tolerated_with_no_schedule",
     make_pod().toleration("node.kubernetes.io/not-ready", "Exists", effect="NoSchedule"),
     make_node().ready("False").info(), OK),
    ("default_no_execute_toleration_is_not_enough",
     make_pod().toleration("node.kubernetes.io/unreachable", "Exists", effect="NoExecute"),
     make_node().ready("Unknown").info(),
     unschedulable("node(s) had untolerated taint {node.kubernetes.io/unreachable: }")),
    ("tolerate_everything", make_pod().toleration(operator="Exists"),
     make_node().ready("Unknown").info(), OK),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in READY_CASES],
                         ids=[c[0] for c in READY_CASES])
def test_node_ready_schedulable(pod, node, want):
    assert run_filter("NodeReadySchedulable", pod, node) == want


# ----------------------------------------------------------------- TaintToleration

TAINT_CASES = [
    ("no_taints", make_pod(), make_node().info(), OK),
    ("untolerated_no_schedule", make_pod(), make_node().taint("dedicated", "gpu").info(),
     unschedulable("node(s) had untolerated taint {dedicated: gpu}")),
    ("untolerated_no_execute_unreachable", make_pod(),
     make_node().taint("node.kubernetes.io/unreachable", effect="NoExecute").info(),
     unschedulable("node(s) had untolerated taint {node.kubernetes.io/unreachable: }")),
    ("prefer_no_schedule_is_ignored", make_pod(),
     make_node().taint("dedicated", "gpu", "PreferNoSchedule").info(), OK),
    ("equal_toleration", make_pod().toleration("dedicated", "Equal", "gpu", "NoSchedule"),
     make_node().taint("dedicated", "gpu").info(), OK),
    ("default_operator_is_equal", make_pod().toleration("dedicated", "", "gpu"),
     make_node().taint("dedicated", "gpu").info(), OK),
    ("equal_with_other_value", make_pod().toleration("dedicated", "Equal", "cpu"),
     make_node().taint("dedicated", "gpu").info(),
     unschedulable("node(s) had untolerated taint {dedicated: gpu}")),
    ("exists_any_value", make_pod().toleration("dedicated", "Exists"),
     make_node().taint("dedicated", "gpu").info(), OK),
    ("wrong_effect", make_pod().toleration("dedicated", "Exists", effect="NoExecute"),
     make_node().taint("dedicated", "gpu", "NoSchedule").info(),
     unschedulable("node(s) had untolerated taint {dedicated: gpu}")),
    ("first_untolerated_named", make_pod().toleration("a", "Exists"),
     make_node().taint("a", "1").taint("b", "2").info(),
     unschedulable("node(s) had untolerated taint {b: 2}")),
    ("empty_key_exists_tolerates_all", make_pod().toleration(operator="Exists"),
     make_node().taint("a", "1").taint("b", "2", "NoExecute").info(), OK),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in TAINT_CASES],
                         ids=[c[0] for c in TAINT_CASES])
def test_taint_toleration(pod, node, want):
    assert run_filter("TaintToleration", pod, node) == want


# -------------------------------------------------------------------- NodeSelector

MISMATCH = unschedulable("node(s) didn't match Pod's node affinity/selector")

SELECTOR_CASES = [
    ("no_selector", make_pod(), make_node().info(), OK),
    ("matching_label", make_pod().node_selector(disk="ssd"),
     make_node().labels(disk="ssd", zone="a").info(), OK),
    ("wrong_value", make_pod().node_selector(disk="ssd"), make_node().labels(disk="hdd").info(),
     MISMATCH),
    ("missing_label", make_pod().node_selector(disk="ssd"), make_node().info(), MISMATCH),
    ("all_labels_needed", make_pod().node_selector(disk="ssd", zone="b"),
     make_node().labels(disk="ssd", zone="a").info(), MISMATCH),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in SELECTOR_CASES],
                         ids=[c[0] for c in SELECTOR_CASES])
def test_node_selector(pod, node, want):
    assert run_filter("NodeSelector", pod, node) == want


# -------------------------------------------------------------------- NodeAffinity

AFFINITY_CASES = [
    ("no_affinity", make_pod(), make_node().info(), OK),
    ("in", make_pod().node_affinity_term([("zone", "In", ["a", "b"])]),
     make_node().labels(zone="b").info(), OK),
    ("in_no_match", make_pod().node_affinity_term([("zone", "In", ["a", "b"])]),
     make_node().labels(zone="c").info(), MISMATCH),
    ("not_in", make_pod().node_affinity_term([("zone", "NotIn", ["a"])]),
     make_node().labels(zone="b").info(), OK),
    ("not_in_missing_label_matches", make_pod().node_affinity_term([("zone", "NotIn", ["a"])]),
     make_node().info(), OK),
    ("exists", make_pod().node_affinity_term([("gpu", "Exists", [])]),
     make_node().labels(gpu="yes").info(), OK),
    ("exists_missing", make_pod().node_affinity_term([("gpu", "Exists", [])]),
     make_node().info(), MISMATCH),
    ("does_not_exist", make_pod().node_affinity_term([("gpu", "DoesNotExist", [])]),
     make_node().info(), OK),
    ("gt", make_pod().node_affinity_term([("cores", "Gt", ["8"])]),
     make_node().labels(cores="16").info(), OK),
    ("gt_equal_fails", make_pod().node_affinity_term([("cores", "Gt", ["8"])]),
     make_node().labels(cores="8").info(), MISMATCH),
    ("lt", make_pod().node_affinity_term([("cores", "Lt", ["8"])]),
     make_node().labels(cores="4").info(), OK),
    ("lt_not_a_number", make_pod().node_affinity_term([("cores", "Lt", ["8"])]),
     make_node().labels(cores="many").info(), MISMATCH),
    ("expressions_in_a_term_are_anded",
     make_pod().node_affinity_term([("zone", "In", ["a"]), ("disk", "In", ["ssd"])]),
     make_node().labels(zone="a", disk="hdd").info(), MISMATCH),
    ("terms_are_ored",
     make_pod().node_affinity_term([("zone", "In", ["x"])]).node_affinity_term([("disk", "In", ["ssd"])]),
     make_node().labels(zone="a", disk="ssd").info(), OK),
    ("match_fields_name_in", make_pod().node_affinity_term(fields=[("metadata.name", "In", ["n1"])]),
     make_node("n1").info(), OK),
    ("match_fields_name_not_in",
     make_pod().node_affinity_term(fields=[("metadata.name", "NotIn", ["n1"])]),
     make_node("n1").info(), MISMATCH),
    ("match_fields_other_field_matches_nothing",
     make_pod().node_affinity_term(fields=[("metadata.uid", "In", ["n1"])]),
     make_node("n1").info(), MISMATCH),
    ("unknown_operator_matches_nothing", make_pod().node_affinity_term([("zone", "Near", ["a"])]),
     make_node().labels(zone="a").info(), MISMATCH),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in AFFINITY_CASES],
                         ids=[c[0] for c in AFFINITY_CASES])
def test_node_affinity(pod, node, want):
    assert run_filter("NodeAffinity", pod, node) == want


# ----------------------------------------------------------------------- NodePorts

PORTS_BUSY = unschedulable("node(s) didn't have free ports for the requested pod ports")

PORT_CASES = [
    ("no_ports", make_pod(), make_node().info(make_pod("a").host_port(80)), OK),
    ("free_port", make_pod().host_port(8080), make_node().info(make_pod("a").host_port(80)), OK),
    ("same_port", make_pod().host_port(80), make_node().info(make_pod("a").host_port(80)), PORTS_BUSY),
    ("other_protocol", make_pod().host_port(53, "UDP"),
     make_node().info(make_pod("a").host_port(53, "TCP")), OK),
    ("different_ips", make_pod().host_port(80, host_ip="10.0.0.1"),
     make_node().info(make_pod("a").host_port(80, host_ip="10.0.0.2")), OK),
    ("all_addresses_conflicts_with_one", make_pod().host_port(80),
     make_node().info(make_pod("a").host_port(80, host_ip="10.0.0.2")), PORTS_BUSY),
    ("one_conflicts_with_all_addresses", make_pod().host_port(80, host_ip="10.0.0.1"),
     make_node().info(make_pod("a").host_port(80)), PORTS_BUSY),
]


@pytest.mark.parametrize("pod, node, want", [c[1:] for c in PORT_CASES], ids=[c[0] for c in PORT_CASES])
def test_node_ports(pod, node, want):
    assert run_filter("NodePorts", pod, node) == want


def test_removing_a_pod_frees_its_port_and_resources():
    holder = make_pod("a").host_port(80).requests(cpu="1").info()
    node = make_node().allocatable(cpu="1").info(holder)
    pod = make_pod().host_port(80).requests(cpu="1")
    assert run_filter("NodePorts", pod, node) == PORTS_BUSY
    assert run_filter("NodeResourcesFit", pod, node) == unschedulable("Insufficient cpu")
    node.remove_pod(holder.key)
    assert run_filter("NodePorts", pod, node) == OK
    assert run_filter("NodeResourcesFit", pod, node) == OK


# ------------------------------------------- batch filtering agrees with filter()

ALL_CASES = [(name, c) for name, cases in (
    ("NodeResourcesFit", FIT_CASES), ("NodeReadySchedulable", READY_CASES),
    ("TaintToleration", TAINT_CASES), ("NodeSelector", SELECTOR_CASES),
    ("NodeAffinity", AFFINITY_CASES), ("NodePorts", PORT_CASES))
    for c in cases if hasattr(PLUGINS[name], "filter_nodes")]


@pytest.mark.parametrize("plugin_name, case", ALL_CASES, ids=[f"{p}-{c[0]}" for p, c in ALL_CASES])
def test_filter_nodes_gives_the_same_verdicts_as_filter(plugin_name, case):
    _, pod, node, _ = case
    plugin = PLUGINS[plugin_name]()
    batch = plugin.filter_nodes
    pi = pod.info()
    other = make_node("other").info()
    assert [(s.code, s.reasons) for s in batch(pi, [node, other, node])] == \
        [(s.code, s.reasons) for s in (plugin.filter(pi, node), plugin.filter(pi, other),
                                       plugin.filter(pi, node))]
