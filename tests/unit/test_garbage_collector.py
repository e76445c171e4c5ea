"""The garbage collector's decisions over a graph built by hand: which
owners count as live, which dependents are orphaned or kept, which block a
foreground deletion, and how the graph follows changes."""

from __future__ import annotations

import pytest

from kubeling import kinds
from kubeling.api.v1 import core_pb2
from services.controllers.garbage_collector import (
    BACKGROUND,
    FINALIZER_FOREGROUND,
    FINALIZER_ORPHAN,
    FOREGROUND,
    GraphNode,
    OwnerGraph,
    OwnerRef,
    Verdict,
    blocking_dependents,
    classify_owners,
    deletion_changed,
    dependent_verdict,
    node_of,
    owners_changed,
)

POD = kinds.by_kind("Pod")
RS = kinds.by_kind("ReplicaSet")


def ref(uid: str, block: bool = False) -> OwnerRef:
    return OwnerRef(uid=uid, kind="ReplicaSet", name=f"rs-{uid}", api_version="apps/v1",
                    block_owner_deletion=block)


def make_node(uid: str, *owners: OwnerRef, kind=POD, finalizers=(), deleting=False) -> GraphNode:
    return GraphNode(uid=uid, kind=kind, namespace="ns", name=f"obj-{uid}", owners=tuple(owners),
                     deleting=deleting, finalizers=frozenset(finalizers))


def graph_of(*nodes: GraphNode) -> OwnerGraph:
    g = OwnerGraph()
    for n in nodes:
        g.upsert(n)
    return g


LIVE = make_node("live", kind=RS)
FOREGROUND_OWNER = make_node("fg", kind=RS, deleting=True, finalizers=[FINALIZER_FOREGROUND])
ORPHANING_OWNER = make_node("orph", kind=RS, deleting=True, finalizers=[FINALIZER_ORPHAN])
# Deleted with a grace period or other finalizers: still there, still an owner.
BACKGROUND_PENDING_OWNER = make_node("bg", kind=RS, deleting=True, finalizers=["example.com/hold"])


@pytest.mark.parametrize("owners, solid, waiting, missing", [
    ((ref("live"),), ["live"], [], []),
    ((ref("gone"),), [], [], ["gone"]),
    ((ref("fg"),), [], ["fg"], []),
    ((ref("orph"),), ["orph"], [], []),
    ((ref("bg"),), ["bg"], [], []),
    ((ref("live"), ref("gone"), ref("fg")), ["live"], ["fg"], ["gone"]),
], ids=["live-owner-is-solid", "absent-owner-is-missing", "foreground-owner-is-waiting",
        "orphaning-owner-is-solid", "owner-pending-deletion-is-solid", "mixed"])
def test_classifies_owners_by_their_state(owners, solid, waiting, missing):
    g = graph_of(LIVE, FOREGROUND_OWNER, ORPHANING_OWNER, BACKGROUND_PENDING_OWNER)
    dep = make_node("dep", *owners)
    g.upsert(dep)
    states = classify_owners(dep, g)
    assert [r.uid for r in states.solid] == solid
    assert [r.uid for r in states.waiting] == waiting
    assert [r.uid for r in states.missing] == missing


@pytest.mark.parametrize("solid, waiting, dangling, has_dependents, expected", [
    (["a"], [], [], False, Verdict("keep")),
    (["a", "b"], [], [], True, Verdict("keep")),
    ([], [], ["a"], False, Verdict("delete", policy=BACKGROUND)),
    ([], [], ["a", "b"], True, Verdict("delete", policy=BACKGROUND)),
    (["a"], [], ["b"], False, Verdict("remove_refs", ("b",))),
    (["a"], ["w"], [], False, Verdict("remove_refs", ("w",))),
    (["a"], ["w"], ["b"], False, Verdict("remove_refs", ("b", "w"))),
    ([], ["w"], [], False, Verdict("delete", policy=BACKGROUND)),
    ([], ["w"], [], True, Verdict("delete", policy=FOREGROUND)),
    ([], ["w"], ["b"], True, Verdict("delete", policy=FOREGROUND)),
], ids=["one-live-owner-keeps", "all-live-keeps", "sole-owner-gone-deletes",
        "all-owners-gone-deletes-background-even-with-dependents",
        "live-owner-keeps-and-drops-dangling-ref", "live-owner-keeps-and-drops-ref-to-foreground-owner",
        "live-owner-keeps-and-drops-both", "foreground-owner-leaf-deletes-background",
        "foreground-owner-with-subtree-deletes-foreground", "foreground-and-gone-owners-with-subtree"])
def test_dependent_verdict(solid, waiting, dangling, has_dependents, expected):
    verdict = dependent_verdict([ref(u) for u in solid], [ref(u) for u in waiting],
                                [ref(u) for u in dangling], has_dependents)
    assert verdict == expected


@pytest.mark.parametrize("dependents, blocking", [
    ([], []),
    ([("p1", True), ("p2", True)], ["p1", "p2"]),
    ([("p1", True), ("p2", False)], ["p1"]),
    ([("p1", False)], []),
], ids=["no-dependents", "all-block", "only-blocking-ones-count", "non-blocking-never-wait"])
def test_blocking_dependents(dependents, blocking):
    g = graph_of(FOREGROUND_OWNER, *(make_node(uid, ref("fg", block)) for uid, block in dependents))
    assert [n.uid for n in blocking_dependents("fg", g)] == blocking


def test_block_flag_counts_per_owner():
    """A dependent blocks only the owner whose reference says so."""
    g = graph_of(FOREGROUND_OWNER, LIVE, make_node("p", ref("fg", False), ref("live", True)))
    assert blocking_dependents("fg", g) == []
    assert [n.uid for n in blocking_dependents("live", g)] == ["p"]


def test_graph_follows_owner_reference_changes():
    g = graph_of(LIVE, make_node("p", ref("live")))
    assert [n.uid for n in g.dependents("live")] == ["p"]
    g.upsert(make_node("p", ref("other")))
    assert g.dependents("live") == [] and [n.uid for n in g.dependents("other")] == ["p"]
    g.remove("p")
    assert g.dependents("other") == [] and not g.has_dependents("other")


def test_dependents_are_known_before_and_after_the_owner():
    """Edges are by uid: a dependent seen before its owner, or after its
    owner was removed, is still found."""
    g = graph_of(make_node("p", ref("rs1")))
    assert g.get("rs1") is None and g.dependent_uids("rs1") == ["p"]
    g.upsert(make_node("rs1", kind=RS))
    assert [n.uid for n in g.dependents("rs1")] == ["p"]
    g.remove("rs1")
    assert g.dependent_uids("rs1") == ["p"]


def test_node_of_reads_references_and_deletion_state():
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web-1", "ns", "u1"
    r = pod.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name="web", uid="rs")
    r.block_owner_deletion = True
    pod.metadata.finalizers.append(FINALIZER_FOREGROUND)
    node = node_of(POD, pod)
    assert node.owners == (OwnerRef("rs", "ReplicaSet", "web", "apps/v1", True),)
    assert not node.deleting and not node.waiting_for_dependents
    pod.metadata.deletion_timestamp.GetCurrentTime()
    assert node_of(POD, pod).waiting_for_dependents


@pytest.mark.parametrize("old, new, owners, deletion", [
    (None, make_node("p"), True, True),
    (make_node("p", ref("a")), make_node("p", ref("a")), False, False),
    (make_node("p", ref("a")), make_node("p", ref("a", True)), True, False),
    (make_node("p"), make_node("p", deleting=True), False, True),
    (make_node("p", deleting=True), make_node("p", deleting=True, finalizers=[FINALIZER_ORPHAN]), False, True),
], ids=["new", "status-only-change", "block-flag-change", "deletion-started", "finalizer-added"])
def test_which_updates_need_a_look(old, new, owners, deletion):
    assert owners_changed(old, new) is owners
    assert deletion_changed(old, new) is deletion
