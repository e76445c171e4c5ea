"""The snapshot's incremental aggregates and the assume cache."""

from __future__ import annotations

from services.scheduler.snapshot import Snapshot

from .builders import FakeClock, make_node, make_pod


def test_assigned_pods_count_on_their_node_and_leave_when_removed():
    snap = Snapshot()
    snap.add_node(make_node("n1").build())
    pod = make_pod("a").node("n1").requests(cpu="500m", memory="1Gi").owner("rs1")
    snap.add_pod(pod.build())
    info = snap.get("n1")
    assert (info.req_cpu, info.req_memory, info.pod_count, info.owner_counts) == \
        (500, 1024 ** 3, 1, {"rs1": 1})
    snap.update_pod(pod.build(), pod.resource_version("2").phase("Running").build())
    assert info.req_cpu == 500 and info.pod_count == 1
    snap.remove_pod(pod.build())
    assert (info.req_cpu, info.req_memory, info.pod_count, info.owner_counts) == (0, 0, 0, {})


def test_assumed_pod_counts_until_confirmed_by_the_watch():
    snap = Snapshot()
    snap.add_node(make_node("n1").build())
    pod = make_pod("a").requests(cpu="1")
    snap.assume_pod(pod.info(), "n1")
    assert snap.get("n1").req_cpu == 1000 and snap.is_assumed("default/a")
    snap.finish_binding("default/a")
    snap.add_pod(pod.node("n1").build())  # the informer sees it bound
    assert not snap.is_assumed("default/a")
    assert snap.get("n1").req_cpu == 1000 and snap.get("n1").pod_count == 1


def test_forgetting_an_assumed_pod_frees_the_node():
    snap = Snapshot()
    snap.add_node(make_node("n1").build())
    snap.assume_pod(make_pod("a").requests(cpu="1").info(), "n1")
    snap.forget_pod("default/a")
    assert snap.get("n1").req_cpu == 0 and snap.node_of("default/a") is None


def test_bound_elsewhere_moves_the_pod():
    snap = Snapshot()
    snap.add_node(make_node("n1").build())
    snap.add_node(make_node("n2").build())
    pod = make_pod("a").requests(cpu="1")
    snap.assume_pod(pod.info(), "n1")
    snap.add_pod(pod.node("n2").build())
    assert snap.get("n1").req_cpu == 0 and snap.get("n2").req_cpu == 1000


def test_assumption_never_confirmed_expires_after_ttl():
    clock = FakeClock()
    snap = Snapshot(clock=clock, assumed_ttl=30)
    snap.add_node(make_node("n1").build())
    snap.assume_pod(make_pod("a").requests(cpu="1").info(), "n1")
    clock.advance(100)
    assert snap.cleanup_expired() == 0  # bind still in flight: never expires
    snap.finish_binding("default/a")
    clock.advance(29)
    assert snap.cleanup_expired() == 0
    clock.advance(2)
    assert snap.cleanup_expired() == 1 and snap.get("n1").req_cpu == 0


def test_node_deleted_with_pods_keeps_them_until_they_go():
    snap = Snapshot()
    snap.add_node(make_node("n1").build())
    pod = make_pod("a").node("n1").requests(cpu="1")
    snap.add_pod(pod.build())
    snap.remove_node("n1")
    assert snap.get("n1") is None and len(snap) == 0
    snap.add_node(make_node("n1").build())  # comes back: its pod still counts
    assert snap.get("n1").req_cpu == 1000
    snap.remove_node("n1")
    snap.remove_pod(pod.build())
    snap.add_node(make_node("n1").build())
    assert snap.get("n1").req_cpu == 0


def test_node_list_is_name_ordered_and_follows_adds_and_removes():
    snap = Snapshot()
    for name in ("c", "a", "b"):
        snap.add_node(make_node(name).build())
    assert [n.name for n in snap.node_list] == ["a", "b", "c"]
    snap.remove_node("b")
    assert [n.name for n in snap.node_list] == ["a", "c"]


def test_pod_on_unknown_node_is_counted_when_the_node_appears():
    snap = Snapshot()
    snap.add_pod(make_pod("a").node("late").requests(cpu="1").build())
    assert snap.get("late") is None
    snap.add_node(make_node("late").build())
    assert snap.get("late").req_cpu == 1000
