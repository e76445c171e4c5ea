"""Node lifecycle: lease expiry with an injected clock, taints that follow
the Ready condition, toleration matching and eviction deadlines (pure), and
reconcile against a fake API (what it writes, and when)."""

from __future__ import annotations

import pytest

from kubeling.api.v1 import coordination_pb2, core_pb2
from kubeling.client.errors import NotFoundError
from kubeling.client.events import NODE_NOT_READY, NODE_READY, TAINT_MANAGER_EVICTION
from kubeling.client.informer import SharedInformerFactory
from kubeling.objects import copy, key_of
from services.controllers.node_lifecycle import (
    MESSAGE_STATUS_UNKNOWN, NO_EXECUTE, NO_SCHEDULE, REASON_NEVER_UPDATED, REASON_STATUS_UNKNOWN,
    TAINT_NOT_READY, TAINT_UNREACHABLE, NodeHealth, NodeLifecycleController, desired_taints,
    eviction_deadline, is_expired, mark_unknown, observe_health, timestamp, tolerates)

T0 = 1_700_000_000.0  # an arbitrary wall-clock second
GRACE = 4.0

# ------------------------------------------------------------------ builders


def make_node(name="node-1", ready="True", heartbeat=None, created=T0 - 100, taints=()):
    node = core_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.uid = f"uid-{name}"
    node.metadata.resource_version = "1"
    node.metadata.creation_timestamp.CopyFrom(timestamp(created))
    if ready is not None:
        c = node.status.conditions.add(type="Ready", status=ready, reason="KubeletReady")
        c.last_heartbeat_time.CopyFrom(timestamp(heartbeat if heartbeat is not None else created))
    for key, effect, *added in taints:
        t = node.spec.taints.add(key=key, effect=effect)
        if added:
            t.time_added.CopyFrom(timestamp(added[0]))
    return node


def make_lease(name="node-1", renewed=T0):
    lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    lease.metadata.name, lease.metadata.namespace = name, "kube-node-lease"
    lease.spec.holder_identity = name
    lease.spec.lease_duration_seconds = 40
    lease.spec.renew_time.CopyFrom(timestamp(renewed))
    return lease


def make_pod(name, node="node-1", tolerations=(), created=T0 - 50, ready=True, grace=None,
             terminating_at=None, namespace="default"):
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.creation_timestamp.CopyFrom(timestamp(created))
    pod.spec.node_name = node
    pod.spec.containers.add(name="main", image="localhost/kubeling/shell:1")
    if grace is not None:
        pod.spec.termination_grace_period_seconds = grace
    for tol in tolerations:
        t = pod.spec.tolerations.add(**{k: v for k, v in tol.items() if k != "seconds"})
        if "seconds" in tol:
            t.toleration_seconds = tol["seconds"]
    if terminating_at is not None:
        pod.metadata.deletion_timestamp.CopyFrom(timestamp(terminating_at))
        pod.metadata.deletion_grace_period_seconds = grace if grace is not None else 30
    pod.status.phase = "Running"
    pod.status.pod_ip = "10.244.0.5"
    pod.status.conditions.add(type="Ready", status="True" if ready else "False")
    return pod


def taint(key=TAINT_UNREACHABLE, effect=NO_EXECUTE, value=""):
    return core_pb2.Taint(key=key, effect=effect, value=value)


def toleration(key="", operator="", value="", effect="", seconds=None):
    t = core_pb2.Toleration(key=key, operator=operator, value=value, effect=effect)
    if seconds is not None:
        t.toleration_seconds = seconds
    return t


# --------------------------------------------------------------- lease expiry


@pytest.mark.parametrize("node, lease, now, expired", [
    (make_node(), make_lease(renewed=T0 - 1), T0, False),
    (make_node(), make_lease(renewed=T0 - 5), T0, True),
    (make_node(heartbeat=T0 - 3), None, T0, False),
    (make_node(heartbeat=T0 - 10), None, T0, True),
    (make_node(ready=None, created=T0 - 2), None, T0, False),
    (make_node(ready=None, created=T0 - 60), None, T0, True),
    (make_node(heartbeat=T0 - 60), make_lease(renewed=T0 - 1), T0, False),
    (make_node(), make_lease(renewed=T0 + 30), T0, False),
], ids=["fresh-lease", "stale-lease", "no-lease-fresh-heartbeat", "no-lease-stale-heartbeat",
        "never-posted-new-node", "never-posted-old-node", "lease-wins-over-old-heartbeat",
        "lease-from-a-clock-ahead"])
def test_first_observation_takes_the_newest_heartbeat_at_face_value(node, lease, now, expired):
    health = observe_health(None, node, lease, now)
    assert is_expired(health, now, GRACE) is expired


def test_lease_expires_grace_period_after_the_last_renewal_seen():
    node = make_node()
    health = observe_health(None, node, make_lease(renewed=T0), T0)
    for t in (T0 + 1, T0 + 2, T0 + 4):
        health = observe_health(health, node, make_lease(renewed=T0), t)
        assert not is_expired(health, t, GRACE)
    assert is_expired(observe_health(health, node, make_lease(renewed=T0), T0 + 4.1), T0 + 4.1, GRACE)


def test_renewal_counts_when_seen_whatever_its_timestamp_says():
    # The node's clock is 100 s behind ours: each renewal still proves life.
    node = make_node()
    health = observe_health(None, node, make_lease(renewed=T0 - 100), T0)
    assert is_expired(health, T0, GRACE)
    health = observe_health(health, node, make_lease(renewed=T0 - 99), T0 + 1)
    assert not is_expired(health, T0 + 1, GRACE)
    assert health == NodeHealth(T0 + 1, T0 - 99, T0 - 100)


def test_heartbeat_change_counts_as_life_without_a_lease():
    health = observe_health(None, make_node(heartbeat=T0 - 10), None, T0)
    assert is_expired(health, T0, GRACE)
    health = observe_health(health, make_node(heartbeat=T0 - 9), None, T0 + 1)
    assert not is_expired(health, T0 + 4, GRACE)


def test_deleted_lease_keeps_the_last_renewal_seen():
    node = make_node()
    health = observe_health(None, node, make_lease(renewed=T0), T0)
    health = observe_health(health, node, None, T0 + 3)
    assert health.lease_renew == T0 and health.probe_time == T0
    assert is_expired(health, T0 + 5, GRACE)


# ------------------------------------------------------------- node conditions


def test_mark_unknown_sets_monitored_conditions_and_keeps_heartbeats():
    node = make_node(heartbeat=T0 - 10)
    node.status.conditions.add(type="MemoryPressure", status="False")
    node.status.conditions.add(type="NetworkUnavailable", status="False")
    new = mark_unknown(node, T0)
    conds = {c.type: c for c in new.status.conditions}
    ready = conds["Ready"]
    assert (ready.status, ready.reason, ready.message) == ("Unknown", REASON_STATUS_UNKNOWN, MESSAGE_STATUS_UNKNOWN)
    assert ready.last_heartbeat_time.seconds == int(T0 - 10)
    assert ready.last_transition_time.seconds == int(T0)
    assert conds["MemoryPressure"].status == "Unknown"
    assert conds["DiskPressure"].reason == REASON_NEVER_UPDATED  # added, never posted
    assert conds["NetworkUnavailable"].status == "False"         # not ours to judge
    assert node.status.conditions[0].status == "True"             # the original is untouched
    assert mark_unknown(new, T0 + 1) is None                      # idempotent


# --------------------------------------------------------------------- taints


def _pairs(taints):
    return [(t.key, t.effect) for t in taints]


@pytest.mark.parametrize("existing, ready, no_execute, expected", [
    ([], "Unknown", True, [(TAINT_UNREACHABLE, NO_EXECUTE), (TAINT_UNREACHABLE, NO_SCHEDULE)]),
    ([], "False", True, [(TAINT_NOT_READY, NO_EXECUTE), (TAINT_NOT_READY, NO_SCHEDULE)]),
    ([], "True", True, []),
    ([taint(TAINT_UNREACHABLE), taint(TAINT_UNREACHABLE, NO_SCHEDULE)], "True", True, []),
    ([taint(TAINT_NOT_READY), taint(TAINT_NOT_READY, NO_SCHEDULE)], "Unknown", True,
     [(TAINT_UNREACHABLE, NO_EXECUTE), (TAINT_UNREACHABLE, NO_SCHEDULE)]),
    ([taint("dedicated", NO_SCHEDULE, "gpu")], "Unknown", True,
     [("dedicated", NO_SCHEDULE), (TAINT_UNREACHABLE, NO_EXECUTE), (TAINT_UNREACHABLE, NO_SCHEDULE)]),
    ([taint("dedicated", NO_EXECUTE)], "True", True, [("dedicated", NO_EXECUTE)]),
    ([taint(TAINT_UNREACHABLE)], None, True, [(TAINT_UNREACHABLE, NO_EXECUTE)]),
    ([taint(TAINT_UNREACHABLE)], "Unknown", False, [(TAINT_UNREACHABLE, NO_SCHEDULE)]),
], ids=["unknown-unreachable", "false-not-ready", "ready-none", "ready-removes", "swap-to-unreachable",
        "keeps-user-taints", "keeps-user-no-execute", "no-ready-condition-no-change",
        "full-disruption-no-noexecute"])
def test_desired_taints_follow_ready(existing, ready, no_execute, expected):
    assert _pairs(desired_taints(existing, ready, T0, no_execute)) == expected


def test_existing_taint_keeps_its_time_added_and_new_ones_get_now():
    old = taint()
    old.time_added.CopyFrom(timestamp(T0 - 30))
    (kept, added) = desired_taints([old], "Unknown", T0)
    assert kept.time_added.seconds == int(T0 - 30)
    assert added.effect == NO_SCHEDULE and not added.HasField("time_added")
    (fresh, _) = desired_taints([], "Unknown", T0)
    assert fresh.time_added.seconds == int(T0)


# ---------------------------------------------------------------- tolerations


@pytest.mark.parametrize("tol, t, expected", [
    (toleration(key=TAINT_UNREACHABLE, operator="Exists", effect=NO_EXECUTE), taint(), True),
    (toleration(key=TAINT_UNREACHABLE, operator="Exists"), taint(), True),
    (toleration(operator="Exists"), taint(), True),
    (toleration(key=TAINT_NOT_READY, operator="Exists"), taint(), False),
    (toleration(key=TAINT_UNREACHABLE, operator="Exists", effect=NO_SCHEDULE), taint(), False),
    (toleration(key="k", value="v"), taint("k", NO_EXECUTE, "v"), True),
    (toleration(key="k", operator="Equal", value="v"), taint("k", NO_EXECUTE, "w"), False),
    (toleration(key="k", operator="Exists"), taint("k", NO_EXECUTE, "anything"), True),
    (toleration(key="k", operator="Bogus"), taint("k"), False),
], ids=["exact", "any-effect", "wildcard", "other-key", "other-effect", "equal-value", "unequal-value",
        "exists-any-value", "unknown-operator"])
def test_tolerates(tol, t, expected):
    assert tolerates(tol, t) is expected


UNREACHABLE_AT_T0 = [(taint(), T0)]


@pytest.mark.parametrize("pod, taints, expected", [
    (make_pod("a"), UNREACHABLE_AT_T0, T0 + 3),
    (make_pod("a", tolerations=[{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE,
                                 "seconds": 60}]), UNREACHABLE_AT_T0, T0 + 60),
    (make_pod("a", tolerations=[{"key": TAINT_UNREACHABLE, "operator": "Exists"}]), UNREACHABLE_AT_T0, None),
    (make_pod("a", tolerations=[{"operator": "Exists"}]), UNREACHABLE_AT_T0, None),
    (make_pod("a", tolerations=[{"key": TAINT_UNREACHABLE, "operator": "Exists", "seconds": 60},
                                {"key": TAINT_UNREACHABLE, "operator": "Exists", "seconds": 10}]),
     UNREACHABLE_AT_T0, T0 + 10),
    (make_pod("a", tolerations=[{"key": TAINT_UNREACHABLE, "operator": "Exists", "seconds": -5}]),
     UNREACHABLE_AT_T0, T0),
    (make_pod("a"), [(taint("dedicated", NO_EXECUTE, "x"), T0)], T0),
    (make_pod("a", tolerations=[{"key": "dedicated", "operator": "Exists"}]),
     [(taint("dedicated", NO_EXECUTE), T0), (taint(), T0 + 1)], T0 + 4),
    (make_pod("a"), [(taint(effect=NO_SCHEDULE), T0)], None),
    (make_pod("a", created=T0 + 20), UNREACHABLE_AT_T0, T0 + 23),
    (make_pod("a"), [], None),
    (make_pod("a"), [(taint(TAINT_NOT_READY), T0)], T0 + 300),
    (make_pod("a", tolerations=[{"key": TAINT_NOT_READY, "operator": "Exists", "seconds": 5}]),
     [(taint(TAINT_NOT_READY), T0)], T0 + 5),
], ids=["default-timeout", "toleration-seconds", "tolerates-forever", "wildcard-forever",
        "shortest-of-several", "negative-seconds-evicts-now", "untolerated-user-taint-evicts-now",
        "second-taint-untolerated", "no-schedule-ignored", "clock-starts-at-pod-creation", "no-taints",
        "not-ready-kubernetes-default", "not-ready-toleration-seconds"])
def test_eviction_deadline(pod, taints, expected):
    assert eviction_deadline(pod, taints, default_toleration_seconds=3.0) == expected


# --------------------------------------------------------- reconcile (fake API)


class FakeClient:
    """Applies writes to the controller's caches, as the informers would."""

    def __init__(self):
        self.controller: NodeLifecycleController | None = None
        self.calls: list[tuple] = []
        self.rv = 100

    def _store(self, obj):
        c = self.controller
        informer = {"Node": c.nodes, "Pod": c.pods}[obj.kind]
        self.rv += 1
        obj = copy(obj)
        obj.metadata.resource_version = str(self.rv)
        informer.store._put(obj)
        return obj

    async def update_status(self, obj):
        self.calls.append(("update_status", obj.kind, obj.metadata.name))
        return self._store(obj)

    async def update(self, obj):
        self.calls.append(("update", obj.kind, obj.metadata.name))
        return self._store(obj)

    async def delete(self, resource, name, namespace="default", grace_period_seconds=None, uid=""):
        self.calls.append(("delete", f"{namespace}/{name}", grace_period_seconds))
        store = self.controller.pods.store
        pod = store.get(f"{namespace}/{name}")
        if pod is None:
            raise NotFoundError(name)
        if grace_period_seconds == 0:
            store._remove(key_of(pod))
        else:
            pod = copy(pod)
            pod.metadata.deletion_timestamp.CopyFrom(timestamp(self.controller.clock() + 30))
            pod.metadata.deletion_grace_period_seconds = 30
            store._put(pod)

    async def get(self, resource, name, namespace="default"):
        raise NotFoundError(name)


class FakeRecorder:
    def __init__(self):
        self.events = []

    async def event(self, obj, type_, reason, message):
        self.events.append((obj.kind, obj.metadata.name, reason))


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def lifecycle():
    client = FakeClient()
    c = NodeLifecycleController(client, SharedInformerFactory(client), FakeRecorder(),
                                node_monitor_grace_period=GRACE, pod_eviction_timeout=3.0)
    client.controller = c
    c.clock = Clock()
    return c


def put(informer, *objs):
    for o in objs:
        informer.store._put(o)


async def test_healthy_node_is_left_alone_and_looked_at_again_soon(lifecycle):
    c = lifecycle
    put(c.nodes, make_node(heartbeat=T0), make_node("node-2", heartbeat=T0))
    put(c.leases, make_lease(renewed=T0 - 1))
    put(c.pods, make_pod("a"))
    delay = await c.reconcile("node-1")
    assert c.client.calls == []
    assert 0 < delay <= 1.0


async def test_silent_node_becomes_unknown_tainted_and_its_pods_evicted(lifecycle):
    c = lifecycle
    put(c.nodes, make_node(), make_node("node-2", heartbeat=T0))
    put(c.leases, make_lease(renewed=T0), make_lease("node-2", renewed=T0))
    put(c.pods, make_pod("a"), make_pod("tolerant", tolerations=[{"key": TAINT_UNREACHABLE,
                                                                   "operator": "Exists"}]),
        make_pod("b", node="node-2"))
    await c.reconcile("node-1")
    await c.reconcile("node-2")
    assert c.client.calls == []

    # node-2 keeps renewing; node-1 goes silent.
    c.clock.now = T0 + 4.5
    put(c.leases, make_lease("node-2", renewed=T0 + 4))
    await c.reconcile("node-2")
    await c.reconcile("node-1")
    node = c.nodes.store.get("node-1")
    ready = [x for x in node.status.conditions if x.type == "Ready"][0]
    assert (ready.status, ready.reason) == ("Unknown", REASON_STATUS_UNKNOWN)
    assert _pairs(node.spec.taints) == [(TAINT_UNREACHABLE, NO_EXECUTE), (TAINT_UNREACHABLE, NO_SCHEDULE)]
    assert node.spec.taints[0].time_added.seconds == int(T0 + 4.5)
    assert ("Node", "node-1", NODE_NOT_READY) in c.recorder.events
    # Its pods are no longer Ready (Services drop them) but not evicted yet.
    assert ("update_status", "Pod", "a") in c.client.calls
    assert not any(call[0] == "delete" for call in c.client.calls)
    assert not [x for x in c.pods.store.get("default/a").status.conditions if x.status == "True"]

    # After the eviction timeout: evicted gracefully, with an Event; the tolerant pod stays.
    c.clock.now = T0 + 7.6
    await c.reconcile("node-1")
    assert ("delete", "default/a", None) in c.client.calls
    assert ("Pod", "a", TAINT_MANAGER_EVICTION) in c.recorder.events
    assert not any(call[:2] == ("delete", "default/tolerant") for call in c.client.calls)
    assert c.pods.store.get("default/b") is not None

    # The unreachable node cannot confirm: after timeout + grace, forced.
    c.clock.now = T0 + 4 + 3 + 30 + 1
    await c.reconcile("node-1")
    assert ("delete", "default/a", 0) in c.client.calls
    assert c.pods.store.get("default/a") is None


async def test_node_back_and_ready_loses_its_taints(lifecycle):
    c = lifecycle
    put(c.nodes, make_node(), make_node("node-2", heartbeat=T0))
    put(c.leases, make_lease(renewed=T0), make_lease("node-2", renewed=T0))
    await c.reconcile("node-1")
    c.clock.now = T0 + 5
    await c.reconcile("node-1")
    assert c.nodes.store.get("node-1").spec.taints

    # Lease renewed but Ready still Unknown: tainted still (the agent has not said it is ready).
    c.clock.now = T0 + 6
    put(c.leases, make_lease(renewed=T0 + 6))
    await c.reconcile("node-1")
    assert c.nodes.store.get("node-1").spec.taints

    # The agent posts Ready=True: taints go, NodeReady is recorded.
    node = copy(c.nodes.store.get("node-1"))
    ready = [x for x in node.status.conditions if x.type == "Ready"][0]
    ready.status, ready.reason = "True", "KubeletReady"
    ready.last_heartbeat_time.CopyFrom(timestamp(T0 + 6.5))
    put(c.nodes, node)
    c.clock.now = T0 + 7
    await c.reconcile("node-1")
    assert list(c.nodes.store.get("node-1").spec.taints) == []
    assert ("Node", "node-1", NODE_READY) in c.recorder.events


async def test_when_every_node_is_silent_nothing_is_evicted(lifecycle):
    c = lifecycle
    put(c.nodes, make_node(), make_node("node-2"))
    put(c.leases, make_lease(renewed=T0), make_lease("node-2", renewed=T0))
    put(c.pods, make_pod("a"), make_pod("b", node="node-2"))
    c.clock.now = T0 + 5
    await c.reconcile("node-1")
    await c.reconcile("node-2")
    await c.reconcile("node-1")
    c.clock.now = T0 + 20
    await c.reconcile("node-1")
    await c.reconcile("node-2")
    for name in ("node-1", "node-2"):
        node = c.nodes.store.get(name)
        assert [x.status for x in node.status.conditions if x.type == "Ready"] == ["Unknown"]
        assert _pairs(node.spec.taints) == [(TAINT_UNREACHABLE, NO_SCHEDULE)]
    assert not any(call[0] == "delete" for call in c.client.calls)


async def test_pods_of_a_deleted_node_are_force_deleted_after_quarantine(lifecycle):
    c = lifecycle
    put(c.pods, make_pod("orphan", node="gone"))
    delay = await c.reconcile("gone")
    assert c.client.calls == [] and delay > 30
    c.clock.now = T0 + 41
    assert await c.reconcile("gone") is None
    assert c.client.calls == [("delete", "default/orphan", 0)]


async def test_pod_is_not_evicted_twice_while_the_cache_lags(lifecycle):
    c = lifecycle
    put(c.nodes, make_node(ready="Unknown", taints=[(TAINT_UNREACHABLE, NO_EXECUTE, T0)]),
        make_node("node-2", heartbeat=T0))
    put(c.leases, make_lease(renewed=T0), make_lease("node-2", renewed=T0))
    stale = make_pod("a")
    put(c.pods, stale)
    c.clock.now = T0 + 3.5
    await c.reconcile("node-1")
    assert [call for call in c.client.calls if call[0] == "delete"] == [("delete", "default/a", None)]
    put(c.pods, stale)  # the informer has not delivered the deletion yet
    await c.reconcile("node-1")
    assert [call for call in c.client.calls if call[0] == "delete"] == [("delete", "default/a", None)]
    assert [e for e in c.recorder.events if e[2] == TAINT_MANAGER_EVICTION] == [("Pod", "a", TAINT_MANAGER_EVICTION)]
