"""The ReplicaSet controller's logic on in-memory objects: which pods go
first on scale-down, slow-start batches, expectations, status, and one
reconcile against a fake API whose cache the test advances by hand."""

from __future__ import annotations

import itertools

import pytest

from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.client.errors import ConflictError, InvalidError, NotFoundError
from kubeling.client.informer import SharedInformerFactory
from kubeling.objects import copy, key_of
from services.controllers.replicaset import (BURST_REPLICAS, Expectations, ReplicaSetController,
                                             calculate_status, next_available_in, pod_from_template,
                                             pods_to_delete, slow_start_batch, slow_start_batches)

NOW = 1_700_000_000.0


# ---------------------------------------------------------------- builders


def make_rs(name="web", replicas=3, min_ready=0, uid="rs-uid", ns="default") -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace, rs.metadata.uid = name, ns, uid
    rs.metadata.generation = 1
    rs.metadata.resource_version = "1"
    rs.spec.replicas = replicas
    rs.spec.min_ready_seconds = min_ready
    rs.spec.selector.match_labels["app"] = name
    rs.spec.template.metadata.labels.update({"app": name, "tier": "front"})
    rs.spec.template.metadata.annotations["note"] = "kept"
    rs.spec.template.spec.containers.add(name="web", image="img:1")
    return rs


class PodBuilder:
    _names = itertools.count()

    def __init__(self, name: str | None = None):
        self.pod = core_pb2.Pod(api_version="v1", kind="Pod")
        self.pod.metadata.name = name or f"p{next(self._names)}"
        self.pod.metadata.namespace = "default"
        self.pod.metadata.uid = f"uid-{self.pod.metadata.name}"
        self.pod.metadata.labels.update({"app": "web", "tier": "front"})
        self.pod.metadata.creation_timestamp.seconds = int(NOW) - 1000
        self.pod.status.phase = "Pending"

    def node(self, name: str) -> "PodBuilder":
        self.pod.spec.node_name = name
        return self

    def phase(self, phase: str) -> "PodBuilder":
        self.pod.status.phase = phase
        return self

    def ready(self, since: float = NOW - 100) -> "PodBuilder":
        self.pod.status.phase = "Running"
        c = self.pod.status.conditions.add(type="Ready", status="True")
        c.last_transition_time.seconds = int(since)
        return self

    def created(self, at: float) -> "PodBuilder":
        self.pod.metadata.creation_timestamp.seconds = int(at)
        return self

    def cost(self, value: int) -> "PodBuilder":
        self.pod.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"] = str(value)
        return self

    def restarts(self, n: int) -> "PodBuilder":
        self.pod.status.container_statuses.add(name="web", restart_count=n)
        return self

    def owned_by(self, rs: apps_pb2.ReplicaSet) -> "PodBuilder":
        self.pod.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet",
                                               name=rs.metadata.name, uid=rs.metadata.uid,
                                               controller=True)
        return self

    def labels(self, **labels) -> "PodBuilder":
        self.pod.metadata.labels.clear()
        self.pod.metadata.labels.update(labels)
        return self

    def build(self) -> core_pb2.Pod:
        return self.pod


def pod(name=None) -> PodBuilder:
    return PodBuilder(name)


# ---------------------------------------------------------------- deletion ranking


@pytest.mark.parametrize("first,second", [
    (pod("a"), pod("b").node("n1")),
    (pod("a").node("n1").phase("Pending"), pod("b").node("n1").phase("Running")),
    (pod("a").node("n1").phase("Unknown"), pod("b").node("n1").phase("Running")),
    (pod("a").node("n1").phase("Running"), pod("b").node("n1").ready()),
    (pod("a").node("n1").ready().cost(-5), pod("b").node("n1").ready()),
    (pod("a").node("n1").ready(since=NOW - 10), pod("b").node("n1").ready(since=NOW - 500)),
    (pod("a").node("n1").ready().restarts(3), pod("b").node("n1").ready().restarts(1)),
    (pod("a").node("n1").ready().created(NOW - 5), pod("b").node("n1").ready().created(NOW - 50)),
], ids=["unscheduled-before-scheduled", "pending-before-running", "unknown-before-running",
        "not-ready-before-ready", "lower-deletion-cost-first", "ready-for-less-time-first",
        "more-restarts-first", "newer-first"])
def test_scales_down_the_least_valuable_pod_first(first, second):
    a, b = first.build(), second.build()
    assert [p.metadata.name for p in pods_to_delete([b, a], 1)] == ["a"]
    assert [p.metadata.name for p in pods_to_delete([a, b], 1)] == ["a"]


def test_scales_down_pods_doubled_up_on_a_node_first():
    crowded = pod("crowded").node("n1").ready().build()
    alone = pod("alone").node("n2").ready().build()
    sibling = pod("sibling").node("n1").ready().build()  # another RS of the same Deployment
    assert pods_to_delete([alone, crowded], 1, related=[crowded, alone, sibling])[0].metadata.name == "crowded"


def test_deleting_every_pod_skips_ranking():
    pods = [pod().ready().build() for _ in range(3)]
    assert pods_to_delete(pods, 5) == pods


# ---------------------------------------------------------------- slow start


@pytest.mark.parametrize("count,batches", [
    (0, []), (1, [1]), (3, [1, 2]), (11, [1, 2, 4, 4]), (15, [1, 2, 4, 8]),
    (BURST_REPLICAS, [1, 2, 4, 8, 16, 32, 64, 128, 245]),
], ids=["none", "one", "three", "eleven", "fifteen", "burst"])
def test_creates_in_doubling_batches(count, batches):
    assert slow_start_batches(count) == batches
    assert sum(batches) == count


async def test_slow_start_stops_after_the_first_failing_batch():
    calls = 0

    async def create():
        nonlocal calls
        calls += 1
        if calls == 5:  # in the third batch (4 calls: 4..7)
            raise InvalidError("bad template")

    successes, error = await slow_start_batch(20, create)
    assert calls == 7  # batches 1, 2, 4; the 8-batch never starts
    assert successes == 6
    assert isinstance(error, InvalidError)


# ---------------------------------------------------------------- expectations


def test_expectations_hold_syncs_until_creates_are_observed():
    e = Expectations()
    e.expect_creations("ns/rs", 2)
    assert not e.satisfied("ns/rs")
    e.creation_observed("ns/rs")
    assert not e.satisfied("ns/rs")
    e.creation_observed("ns/rs")
    assert e.satisfied("ns/rs")


def test_expectations_count_each_deleted_pod_once():
    e = Expectations()
    e.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    e.deletion_observed("ns/rs", "ns/a")  # deletionTimestamp set
    e.deletion_observed("ns/rs", "ns/a")  # then really deleted
    e.deletion_observed("ns/rs", "ns/other")  # not one we deleted
    assert e.pending("ns/rs") == (0, 1)
    assert not e.satisfied("ns/rs")
    e.deletion_observed("ns/rs", "ns/b")
    assert e.satisfied("ns/rs")


def test_expectations_expire_so_a_lost_event_cannot_block_forever():
    now = [0.0]
    e = Expectations(ttl=300, clock=lambda: now[0])
    e.expect_creations("ns/rs", 1)
    now[0] = 299
    assert not e.satisfied("ns/rs")
    now[0] = 301
    assert e.satisfied("ns/rs")


# ---------------------------------------------------------------- pods and status


def test_pod_from_template_is_owned_and_labelled():
    rs = make_rs()
    p = pod_from_template(rs)
    assert p.metadata.generate_name == "web-"
    assert p.metadata.name == ""
    assert dict(p.metadata.labels) == {"app": "web", "tier": "front"}
    assert dict(p.metadata.annotations) == {"note": "kept"}
    (ref,) = p.metadata.owner_references
    assert (ref.api_version, ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == \
        ("apps/v1", "ReplicaSet", "web", "rs-uid", True, True)
    assert p.spec == rs.spec.template.spec


@pytest.mark.parametrize("min_ready,expected", [
    (0, (4, 3, 3, 3)),
    (60, (4, 3, 3, 2)),
], ids=["available-when-ready", "available-after-min-ready-seconds"])
def test_status_counts_labelled_ready_and_available_pods(min_ready, expected):
    rs = make_rs(min_ready=min_ready)
    pods = [
        pod().ready(since=NOW - 100).build(),
        pod().ready(since=NOW - 10).build(),
        pod().ready(since=NOW - 100).labels(app="web").build(),  # missing a template label
        pod().phase("Running").build(),
    ]
    s = calculate_status(rs, pods, NOW)
    assert (s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas) == \
        (expected[0], expected[1], 3, expected[3])
    assert s.observed_generation == 1


def test_status_reports_and_clears_replica_failure():
    rs = make_rs()
    failed = calculate_status(rs, [], NOW, InvalidError("pods are invalid"), "FailedCreate")
    (cond,) = failed.conditions
    assert (cond.type, cond.status, cond.reason, cond.message) == \
        ("ReplicaFailure", "True", "FailedCreate", "pods are invalid")
    rs.status.CopyFrom(failed)
    assert list(calculate_status(rs, [], NOW).conditions) == []


def test_requeues_when_the_next_pod_becomes_available():
    rs = make_rs(min_ready=30)
    pods = [pod().ready(since=NOW - 10).build(), pod().ready(since=NOW - 25).build(),
            pod().ready(since=NOW - 100).build(), pod().build()]
    assert next_available_in(rs, pods, NOW) == pytest.approx(5)
    assert next_available_in(make_rs(min_ready=0), pods, NOW) is None


# ---------------------------------------------------------------- one reconcile


class FakeApi:
    """Just enough of ApiClient: objects in a dict, optimistic concurrency,
    generateName, and a log of writes."""

    def __init__(self):
        self.objects: dict[tuple[str, str], object] = {}
        self.writes: list[tuple[str, str]] = []
        self.fail_creates = 0
        self._rv = itertools.count(100)
        self._names = itertools.count()

    async def create(self, obj):
        if self.fail_creates:
            self.fail_creates -= 1
            raise InvalidError("spec.containers[0].image: Required value")
        obj = copy(obj)
        if not obj.metadata.name:
            obj.metadata.name = f"{obj.metadata.generate_name}{next(self._names):05d}"
        obj.metadata.uid = f"uid-{obj.metadata.name}"
        obj.metadata.resource_version = str(next(self._rv))
        obj.metadata.creation_timestamp.seconds = int(NOW)
        self.objects[(obj.kind, key_of(obj))] = obj
        self.writes.append(("create", obj.metadata.name))
        return copy(obj)

    async def update(self, obj, status=False):
        key = (obj.kind, key_of(obj))
        old = self.objects.get(key)
        if old is None:
            raise NotFoundError(obj.metadata.name)
        if obj.metadata.resource_version and obj.metadata.resource_version != old.metadata.resource_version:
            raise ConflictError(obj.metadata.name)
        new = copy(obj)
        new.metadata.resource_version = str(next(self._rv))
        self.objects[key] = new
        self.writes.append(("update_status" if status else "update", obj.metadata.name))
        return copy(new)

    async def update_status(self, obj):
        return await self.update(obj, status=True)

    async def delete(self, resource, name, namespace="default", uid="", **_):
        key = ("Pod", f"{namespace}/{name}")
        if key not in self.objects:
            raise NotFoundError(name)
        self.writes.append(("delete", name))
        return self.objects.pop(key), False


class FakeRecorder:
    def __init__(self):
        self.events: list[tuple[str, str]] = []

    async def event(self, obj, type_, reason, message):
        self.events.append((reason, message))


@pytest.fixture
async def rig():
    api, recorder = FakeApi(), FakeRecorder()
    ctl = ReplicaSetController(api, SharedInformerFactory(api), recorder)
    ctl.clock = lambda: NOW
    yield ctl, api, recorder
    for task in list(ctl._background):
        await task


def cache(ctl, obj, observe=True):
    """What the informer would do: store the object and call the pod handlers."""
    if obj.kind == "ReplicaSet":
        ctl.replicasets.store._put(obj)
    else:
        old = ctl.pods.store._put(obj)
        if observe:
            ctl._pod_added(obj) if old is None else ctl._pod_updated(old, obj)


async def test_reconcile_creates_missing_pods_once_until_the_cache_catches_up(rig):
    ctl, api, recorder = rig
    rs = make_rs(replicas=3)
    api.objects[("ReplicaSet", "default/web")] = rs
    cache(ctl, rs)

    await ctl.reconcile("default/web")
    created = [name for verb, name in api.writes if verb == "create"]
    assert len(created) == 3
    # The informer has not delivered the pods yet: a second sync must not create more.
    await ctl.reconcile("default/web")
    assert len([w for w in api.writes if w[0] == "create"]) == 3
    for name in created:
        cache(ctl, api.objects[("Pod", f"default/{name}")])
    assert ctl.expectations.satisfied("default/web")
    await ctl.reconcile("default/web")
    assert len([w for w in api.writes if w[0] == "create"]) == 3
    for task in list(ctl._background):
        await task
    assert [r for r, _ in recorder.events] == ["SuccessfulCreate"] * 3


async def test_reconcile_deletes_surplus_unready_pods_and_writes_status(rig):
    ctl, api, recorder = rig
    rs = make_rs(replicas=2)
    api.objects[("ReplicaSet", "default/web")] = rs
    cache(ctl, rs)
    ready = [pod(f"ready{i}").node("n1").ready().owned_by(rs).build() for i in range(2)]
    unready = pod("unready").node("n1").phase("Running").owned_by(rs).build()
    for p in (*ready, unready):
        api.objects[("Pod", key_of(p))] = p
        cache(ctl, p, observe=False)

    await ctl.reconcile("default/web")
    assert ("delete", "unready") in api.writes
    assert not any(verb == "delete" and name.startswith("ready") for verb, name in api.writes)
    status = api.objects[("ReplicaSet", "default/web")].status
    # Status is computed from the pods before the delete is observed, as in Kubernetes.
    assert (status.replicas, status.ready_replicas, status.observed_generation) == (3, 2, 1)


async def test_reconcile_adopts_matching_orphans_instead_of_creating(rig):
    ctl, api, _ = rig
    rs = make_rs(replicas=1)
    api.objects[("ReplicaSet", "default/web")] = rs
    cache(ctl, rs)
    orphan = pod("orphan").ready().build()
    api.objects[("Pod", key_of(orphan))] = orphan
    cache(ctl, orphan, observe=False)

    await ctl.reconcile("default/web")
    adopted = api.objects[("Pod", "default/orphan")]
    assert [r.uid for r in adopted.metadata.owner_references] == ["rs-uid"]
    assert not any(verb == "create" for verb, _ in api.writes)


async def test_failed_create_is_an_event_a_condition_and_a_retry(rig):
    ctl, api, recorder = rig
    rs = make_rs(replicas=4)
    api.objects[("ReplicaSet", "default/web")] = rs
    cache(ctl, rs)
    api.fail_creates = 1
    with pytest.raises(InvalidError):
        await ctl.reconcile("default/web")
    assert not any(verb == "create" for verb, _ in api.writes)  # the first batch of 1 failed: stop
    assert ctl.expectations.satisfied("default/web")  # nothing is expected that will not come
    cond = api.objects[("ReplicaSet", "default/web")].status.conditions[0]
    assert (cond.type, cond.reason) == ("ReplicaFailure", "FailedCreate")
    for task in list(ctl._background):
        await task
    assert recorder.events[0][0] == "FailedCreate"
