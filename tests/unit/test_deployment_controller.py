"""The Deployment controller's arithmetic and bookkeeping on in-memory
objects: rolling-update scale-up and scale-down amounts, proportional
scaling, the pod-template hash, revisions, conditions, history pruning,
and the rollback the CLI performs."""

from __future__ import annotations

import pytest

from kubeling.api.v1 import apps_pb2
from kubeling.cli.rollout import apply_rollback, rollback_target, status_message
from kubeling.cli.common import CliError
from kubeling.objects import copy
from services.controllers.deployment import (
    DESIRED_REPLICAS, MAX_REPLICAS, REVISION, REVISION_HISTORY, calculate_status,
    find_active_or_latest, find_new_replica_set, get_condition, is_scaling_event, max_surge,
    max_unavailable, new_condition, new_replica_set, new_rs_new_replicas,
    old_replica_sets_scale_down, recheck_progress_in, replica_sets_to_prune, scale_plan,
    set_new_replica_set_annotations, update_progress)
from services.controllers.pod_template import compute_hash, equal_ignore_hash, safe_encode

NOW = 1_700_000_000.0


# ---------------------------------------------------------------- builders


def make_deployment(replicas=10, surge: int | str = 3, unavailable: int | str = 2, image="img:2",
                    strategy="RollingUpdate", generation=1) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace, d.metadata.uid = "web", "default", "d-uid"
    d.metadata.generation = generation
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="web", image=image)
    d.spec.strategy.type = strategy
    if strategy == "RollingUpdate":
        for field, value in (("max_surge", surge), ("max_unavailable", unavailable)):
            v = getattr(d.spec.strategy.rolling_update, field)
            if isinstance(value, str):
                v.string_value = value
            else:
                v.number_value = value
    d.spec.revision_history_limit = 10
    d.spec.progress_deadline_seconds = 600
    return d


def make_rs(name: str, replicas: int, available: int | None = None, image="img:1", created=0,
            revision: int | None = None, desired: int | None = None, max_replicas: int | None = None,
            pods: int | None = None) -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace, rs.metadata.uid = name, "default", f"uid-{name}"
    rs.metadata.creation_timestamp.seconds = int(NOW) - 1000 + created
    rs.metadata.generation = 1
    rs.spec.replicas = replicas
    rs.spec.template.metadata.labels.update({"app": "web", "pod-template-hash": name})
    rs.spec.template.spec.containers.add(name="web", image=image)
    rs.status.replicas = replicas if pods is None else pods
    rs.status.ready_replicas = rs.status.available_replicas = replicas if available is None else available
    rs.status.observed_generation = 1
    if revision is not None:
        rs.metadata.annotations[REVISION] = str(revision)
    if desired is not None:
        rs.metadata.annotations[DESIRED_REPLICAS] = str(desired)
    if max_replicas is not None:
        rs.metadata.annotations[MAX_REPLICAS] = str(max_replicas)
    return rs


# ---------------------------------------------------------------- fenceposts


@pytest.mark.parametrize("replicas,surge,unavailable,expected", [
    (10, "25%", "25%", (3, 2)),
    (4, "25%", "25%", (1, 1)),
    (3, "25%", "25%", (1, 0)),
    (1, 0, "10%", (0, 1)),  # both 0 after rounding: one may be unavailable so the rollout moves
    (5, 2, 9, (2, 5)),      # never more unavailable than replicas
    (0, "25%", "25%", (0, 0)),
], ids=["percent-of-10", "percent-of-4", "percent-of-3", "zero-zero-becomes-one-unavailable",
        "unavailable-capped-at-replicas", "zero-replicas"])
def test_surge_rounds_up_and_unavailability_rounds_down(replicas, surge, unavailable, expected):
    d = make_deployment(replicas=replicas, surge=surge, unavailable=unavailable)
    assert (max_surge(d), max_unavailable(d)) == expected


def test_recreate_allows_no_surge_and_no_unavailability_budget():
    d = make_deployment(strategy="Recreate")
    assert (max_surge(d), max_unavailable(d)) == (0, 0)


# ---------------------------------------------------------------- scaling up the new RS


@pytest.mark.parametrize("old,new,expected", [
    ([10], 0, 3),       # room for maxSurge pods
    ([10], 3, 3),       # at replicas + maxSurge already
    ([8], 3, 5),        # old scaled down by 2: 2 more new
    ([2], 7, 10),       # never beyond replicas
    ([0], 12, 12),      # above replicas: left alone here (reconcile scales it down)
    ([5, 5], 0, 3),     # every old RS counts
], ids=["first-surge", "at-the-limit", "after-old-scale-down", "capped-at-replicas",
        "above-replicas-unchanged", "several-old-replica-sets"])
def test_new_replica_set_scales_up_within_max_surge(old, new, expected):
    d = make_deployment(replicas=10, surge=3, unavailable=2)
    olds = [make_rs(f"old{i}", n) for i, n in enumerate(old)]
    new_rs = make_rs("new", new, image="img:2")
    assert new_rs_new_replicas(d, olds + [new_rs], new_rs) == expected


def test_new_replica_set_waits_for_old_pods_still_being_deleted():
    # The old RS was scaled to 8 but its controller still reports 10 pods.
    d = make_deployment(replicas=10, surge=3, unavailable=2)
    old, new = make_rs("old", 8, pods=10), make_rs("new", 3, available=0)
    assert new_rs_new_replicas(d, [old, new], new) == 3


def test_recreate_new_replica_set_gets_every_replica_at_once():
    d = make_deployment(replicas=6, strategy="Recreate")
    new = make_rs("new", 0)
    assert new_rs_new_replicas(d, [make_rs("old", 0), new], new) == 6


# ---------------------------------------------------------------- scaling down old RSs


@pytest.mark.parametrize("olds,new,expected", [
    ([("old", 10, 10)], (3, 0), {"old": 8}),                  # down to minAvailable 8
    ([("old", 8, 8)], (5, 0), {}),                            # new pods not available: wait
    ([("old", 8, 8)], (5, 3), {"old": 5}),                    # 3 new available: 3 old may go
    ([("old", 10, 6)], (3, 0), {"old": 8}),                   # unhealthy first, within the budget of 2
    ([("old", 8, 5)], (5, 5), {"old": 3}),                    # unhealthy 3, then available 2
    ([("a", 4, 4), ("b", 6, 6)], (3, 0), {"a": 2}),           # oldest RS first
    ([("a", 1, 1), ("b", 6, 6)], (6, 6), {"a": 0, "b": 2}),   # spill into the next RS
    ([("old", 0, 0)], (10, 10), {}),                          # nothing left to scale down
], ids=["first-step", "blocked-by-unavailable-new-pods", "follows-new-availability",
        "unhealthy-first", "unhealthy-then-available", "oldest-first", "spills-over",
        "nothing-old"])
def test_old_replica_sets_scale_down_keeping_min_available(olds, new, expected):
    d = make_deployment(replicas=10, surge=3, unavailable=2)
    old_rss = [make_rs(name, n, available=a, created=i) for i, (name, n, a) in enumerate(olds)]
    new_rs = make_rs("new", new[0], available=new[1], image="img:2", created=100)
    assert old_replica_sets_scale_down(old_rss + [new_rs], old_rss, new_rs, d) == expected


def test_scale_down_does_not_count_availability_of_pods_already_asked_to_go():
    # spec 8 but status still says 10 available: only 8 of them will remain.
    d = make_deployment(replicas=10, surge=3, unavailable=2)
    old = make_rs("old", 8, available=10, pods=10)
    new = make_rs("new", 5, available=1, image="img:2", created=100)
    assert old_replica_sets_scale_down([old, new], [old], new, d) == {"old": 7}


# ---------------------------------------------------------------- proportional scaling


@pytest.mark.parametrize("replicas,sizes,expected", [
    (15, {"old": 8, "new": 5}, {"old": 11, "new": 7}),   # the Kubernetes documentation's example
    (20, {"old": 8, "new": 5}, {"old": 14, "new": 9}),
    (5, {"old": 8, "new": 5}, {"old": 5, "new": 3}),
    (0, {"old": 8, "new": 5}, {"old": 0, "new": 0}),
    (11, {"old": 5, "new": 5}, {"old": 5, "new": 9}),    # fractions round to 0: leftovers to the newest
    (5, {"old": 5, "new": 5}, {"old": 3, "new": 5}),     # removing from equals: the oldest first
], ids=["docs-example-up", "up", "down", "to-zero", "tie-up-newest-first", "tie-down"])
def test_scaling_mid_rollout_is_proportional(replicas, sizes, expected):
    d = make_deployment(replicas=replicas, surge=3, unavailable=2)
    old = make_rs("old", sizes["old"], available=sizes["old"], desired=10, max_replicas=13)
    new = make_rs("new", sizes["new"], available=0, image="img:2", created=10, desired=10,
                  max_replicas=13)
    plan = {rs.metadata.name: n for rs, n in scale_plan(d, new, [old])}
    assert plan == expected
    assert sum(plan.values()) == (replicas + 3 if replicas else 0)


def test_scaling_one_active_replica_set_gives_it_everything():
    d = make_deployment(replicas=7)
    old, new = make_rs("old", 0), make_rs("new", 4, created=10)
    assert [(rs.metadata.name, n) for rs, n in scale_plan(d, new, [old])] == [("new", 7)]


def test_scaling_with_a_saturated_new_replica_set_empties_old_ones():
    d = make_deployment(replicas=5)
    old = make_rs("old", 2)
    new = make_rs("new", 5, available=5, created=10, desired=5)
    assert [(rs.metadata.name, n) for rs, n in scale_plan(d, new, [old])] == [("old", 0)]


def test_active_or_latest_is_the_newest_when_none_is_active():
    older, newer = make_rs("older", 0, created=0), make_rs("newer", 0, created=5)
    assert find_active_or_latest(None, [older, newer]) is newer
    assert find_active_or_latest(None, [older, make_rs("x", 1)]).metadata.name == "x"
    assert find_active_or_latest(make_rs("n", 1), [make_rs("x", 1)]) is None


@pytest.mark.parametrize("desired,expected", [(10, False), (12, True), (None, False)],
                         ids=["same-size", "replicas-changed", "no-annotation"])
def test_scaling_event_is_a_desired_replicas_mismatch(desired, expected):
    d = make_deployment(replicas=10)
    assert is_scaling_event(d, make_rs("new", 3, desired=desired), [make_rs("old", 0, desired=4)]) is expected


# ---------------------------------------------------------------- hash


def test_template_hash_is_stable_and_depends_on_the_template():
    d = make_deployment()
    same = copy(d.spec.template)
    assert compute_hash(d.spec.template) == compute_hash(same)
    assert compute_hash(d.spec.template) == "5ffcff8bb5"  # pinned: must not change between releases
    same.spec.containers[0].image = "img:3"
    assert compute_hash(same) != compute_hash(d.spec.template)


def test_template_hash_ignores_label_insertion_order():
    a, b = make_deployment().spec.template, make_deployment().spec.template
    a.metadata.labels.update({"x": "1", "y": "2"})
    b.metadata.labels.update({"y": "2", "x": "1"})
    assert compute_hash(a) == compute_hash(b)


def test_collision_count_gives_a_new_hash():
    t = make_deployment().spec.template
    hashes = {compute_hash(t), compute_hash(t, 0), compute_hash(t, 1), compute_hash(t, 2)}
    assert len(hashes) == 4


def test_hash_uses_the_safe_alphabet():
    assert safe_encode("0123456789") == "456789bcdf"
    assert set(compute_hash(make_deployment().spec.template)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_new_replica_set_carries_the_hash_everywhere():
    d = make_deployment(replicas=4)
    rs = new_replica_set(d, [], revision=1)
    h = compute_hash(d.spec.template)
    assert rs.metadata.name == f"web-{h}"
    assert rs.metadata.labels["pod-template-hash"] == h
    assert rs.spec.selector.match_labels["pod-template-hash"] == h
    assert rs.spec.template.metadata.labels["pod-template-hash"] == h
    assert equal_ignore_hash(rs.spec.template, d.spec.template)
    assert (rs.spec.replicas, rs.metadata.owner_references[0].uid) == (4, "d-uid")
    assert rs.metadata.annotations[REVISION] == "1"
    assert (rs.metadata.annotations[DESIRED_REPLICAS], rs.metadata.annotations[MAX_REPLICAS]) == ("4", "7")


def test_new_replica_set_is_the_oldest_with_an_equal_template():
    d = make_deployment(image="img:2")
    first = make_rs("first", 1, image="img:2", created=0)
    again = make_rs("again", 1, image="img:2", created=5)
    other = make_rs("other", 1, image="img:1", created=-5)
    assert find_new_replica_set(d, [again, other, first]) is first
    assert find_new_replica_set(make_deployment(image="img:9"), [first, other]) is None


# ---------------------------------------------------------------- revisions


def test_a_new_replica_set_gets_the_next_revision_and_the_deployment_annotations():
    d = make_deployment()
    d.metadata.annotations.update({"team": "a", REVISION: "7",
                                   "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    rs = make_rs("new", 0)
    assert set_new_replica_set_annotations(d, rs, 3, exists=False)
    assert rs.metadata.annotations[REVISION] == "3"
    assert rs.metadata.annotations["team"] == "a"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in rs.metadata.annotations
    assert REVISION_HISTORY not in rs.metadata.annotations


def test_rolling_back_to_an_old_replica_set_renumbers_it_and_keeps_its_history():
    d = make_deployment()
    rs = make_rs("first", 0, revision=1)
    rs.metadata.annotations[REVISION_HISTORY] = "0"
    assert set_new_replica_set_annotations(d, rs, 4, exists=True)
    assert (rs.metadata.annotations[REVISION], rs.metadata.annotations[REVISION_HISTORY]) == ("4", "0,1")
    assert DESIRED_REPLICAS not in rs.metadata.annotations  # existing RSs get them when scaled
    assert not set_new_replica_set_annotations(d, rs, 4, exists=True)  # idempotent


@pytest.mark.parametrize("limit,old,expected", [
    (10, [(1, 0), (2, 0)], []),
    (1, [(1, 0), (2, 0), (3, 0)], ["r1", "r2"]),
    (0, [(3, 0), (1, 0)], ["r1", "r3"]),
    (1, [(1, 2), (2, 0), (3, 0)], ["r2"]),  # an RS that still has pods is kept
], ids=["within-limit", "oldest-revisions-go", "limit-zero", "keeps-replica-sets-with-pods"])
def test_revision_history_limit_prunes_the_oldest_empty_replica_sets(limit, old, expected):
    d = make_deployment()
    d.spec.revision_history_limit = limit
    rss = [make_rs(f"r{rev}", n, revision=rev, created=rev) for rev, n in old]
    assert sorted(rs.metadata.name for rs in replica_sets_to_prune(rss, d)) == expected


def test_history_pruning_waits_for_the_replica_set_status_to_be_current():
    d = make_deployment()
    d.spec.revision_history_limit = 0
    rs = make_rs("r1", 0, revision=1)
    rs.metadata.generation = 2  # just scaled to 0; its controller has not reported yet
    assert replica_sets_to_prune([rs], d) == []


# ---------------------------------------------------------------- status and conditions


def test_status_sums_replica_sets_and_reports_minimum_availability():
    d = make_deployment(replicas=10, surge=3, unavailable=2, generation=4)
    old, new = make_rs("old", 8, available=8), make_rs("new", 5, available=1, created=10)
    s = calculate_status([old, new], new, d, NOW)
    assert (s.replicas, s.updated_replicas, s.available_replicas, s.unavailable_replicas,
            s.observed_generation) == (13, 5, 9, 4, 4)
    assert get_condition(s, "Available").reason == "MinimumReplicasAvailable"
    old.status.available_replicas = 6
    s = calculate_status([old, new], new, d, NOW)
    assert (get_condition(s, "Available").status, get_condition(s, "Available").reason) == \
        ("False", "MinimumReplicasUnavailable")


def _rolled(d, rss, new, now):
    s = calculate_status(rss, new, d, now)
    update_progress(d, s, new, rss, now)
    return s


def test_progress_condition_moves_while_the_rollout_progresses_and_completes():
    d = make_deployment(replicas=2, surge=1, unavailable=0)
    d.status.conditions.append(new_condition("Progressing", "True", "NewReplicaSetCreated",
                                             'Created new replica set "new"', NOW - 100))
    old, new = make_rs("old", 2), make_rs("new", 1, available=0, created=10)
    s = _rolled(d, [old, new], new, NOW)
    cond = get_condition(s, "Progressing")
    assert (cond.reason, cond.last_update_time.seconds, cond.last_transition_time.seconds) == \
        ("ReplicaSetUpdated", int(NOW), int(NOW - 100))
    d.status.CopyFrom(s)
    old, new = make_rs("old", 0), make_rs("new", 2, created=10)
    s = _rolled(d, [old, new], new, NOW + 5)
    cond = get_condition(s, "Progressing")
    assert (cond.status, cond.reason, cond.message) == \
        ("True", "NewReplicaSetAvailable", 'ReplicaSet "new" has successfully progressed.')
    assert recheck_progress_in(d, s, NOW + 5) is None


def test_no_progress_for_the_deadline_is_progress_deadline_exceeded():
    d = make_deployment(replicas=2, surge=1, unavailable=0)
    d.spec.progress_deadline_seconds = 30
    old, new = make_rs("old", 2), make_rs("new", 1, available=0, created=10)
    d.status.CopyFrom(calculate_status([old, new], new, d, NOW))
    d.status.conditions.append(new_condition("Progressing", "True", "ReplicaSetUpdated", "", NOW))
    s = _rolled(d, [old, new], new, NOW + 10)
    assert get_condition(s, "Progressing").reason == "ReplicaSetUpdated"
    assert recheck_progress_in(d, s, NOW + 10) == pytest.approx(20.1)
    s = _rolled(d, [old, new], new, NOW + 31)
    cond = get_condition(s, "Progressing")
    assert (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")
    assert recheck_progress_in(d, s, NOW + 31) is None


def test_replica_failure_of_the_new_replica_set_is_surfaced():
    d = make_deployment(replicas=2)
    new = make_rs("new", 2, available=0)
    new.status.conditions.add(type="ReplicaFailure", status="True", reason="FailedCreate", message="quota")
    s = _rolled(d, [new], new, NOW)
    cond = get_condition(s, "ReplicaFailure")
    assert (cond.reason, cond.message) == ("FailedCreate", "quota")
    new.status.ClearField("conditions")
    d.status.CopyFrom(s)
    assert get_condition(_rolled(d, [new], new, NOW), "ReplicaFailure") is None


# ---------------------------------------------------------------- the CLI's rollback and status


def test_undo_picks_the_previous_revision_and_strips_the_hash_label():
    d = make_deployment(image="img:3")
    d.metadata.annotations.update({REVISION: "3", "team": "old"})
    rss = [make_rs("r1", 0, image="img:1", revision=1), make_rs("r2", 0, image="img:2", revision=2),
           make_rs("r3", 2, image="img:3", revision=3)]
    rss[1].metadata.annotations["team"] = "new"
    target = rollback_target(d, rss, 0)
    assert target.metadata.name == "r2"
    assert apply_rollback(d, target)
    assert d.spec.template.spec.containers[0].image == "img:2"
    assert "pod-template-hash" not in d.spec.template.metadata.labels
    assert dict(d.metadata.annotations) == {REVISION: "3", "team": "new"}
    assert not apply_rollback(d, target)  # already there: skipped
    assert rollback_target(d, rss, 1).metadata.name == "r1"
    with pytest.raises(CliError, match="unable to find specified revision 7"):
        rollback_target(d, rss, 7)
    with pytest.raises(CliError, match="no rollout history"):
        rollback_target(d, rss[2:], 0)


@pytest.mark.parametrize("status,expected", [
    (dict(observed_generation=1), ("Waiting for deployment spec update to be observed...", False)),
    (dict(observed_generation=2, updated_replicas=1, replicas=3),
     ('Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...', False)),
    (dict(observed_generation=2, updated_replicas=3, replicas=4),
     ('Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...', False)),
    (dict(observed_generation=2, updated_replicas=3, replicas=3, available_replicas=2),
     ('Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...', False)),
    (dict(observed_generation=2, updated_replicas=3, replicas=3, available_replicas=3),
     ('deployment "web" successfully rolled out', True)),
], ids=["spec-not-observed", "updating", "old-pending-termination", "waiting-for-available", "done"])
def test_rollout_status_messages(status, expected):
    d = make_deployment(replicas=3, generation=2)
    for k, v in status.items():
        setattr(d.status, k, v)
    assert status_message(d) == expected


def test_rollout_status_fails_once_the_deadline_passed():
    d = make_deployment(replicas=3)
    d.status.observed_generation = 1
    d.status.conditions.append(new_condition("Progressing", "False", "ProgressDeadlineExceeded", "", NOW))
    with pytest.raises(CliError, match='deployment "web" exceeded its progress deadline'):
        status_message(d)
