"""Node lifecycle: notice dead nodes, taint them, and evict their pods, as
kube-controller-manager's node lifecycle controller with its taint-based
eviction (and the part of pod GC that cleans up after unreachable nodes).

Health. Node agents (and hollow nodes) renew a Lease named after their node
in `kube-node-lease` every few seconds, and post the Ready condition in the
Node's status. Like Kubernetes, the controller judges freshness by its own
clock: it remembers when it last *saw* the lease's renewTime (or, with no
lease, the Ready condition's lastHeartbeatTime) change. On first sight (at
startup or after a leader change) it takes the age of the newest of those
timestamps (or of the Node's creation) as read, so a node that died while no
controller was watching is still noticed within the grace period.

A node silent for longer than `node_monitor_grace_period` (default 4 s) gets
its Ready, MemoryPressure, DiskPressure and PIDPressure conditions set to
Unknown ("Kubelet stopped posting node status."), a NodeNotReady Event, and
its pods' Ready condition set to False (so Services stop sending them
traffic at once).

Taints follow the Ready condition: Unknown -> `node.kubernetes.io/unreachable`,
False -> `node.kubernetes.io/not-ready`, each with effect NoExecute (with
timeAdded) and NoSchedule; True -> neither. So a node that renews its lease
again stays tainted until its agent also reports Ready=True.

Eviction. A pod on a node with NoExecute taints is deleted (gracefully, with
a TaintManagerEviction Event) when the first taint it does not tolerate for
long enough runs out:
- a matching toleration without tolerationSeconds tolerates it forever;
  with tolerationSeconds, that long (the shortest of several; <= 0: not at all);
- with no matching toleration, the unreachable taint is tolerated for
  `pod_eviction_timeout` (default 3 s: Kubernetes' default toleration of
  300 s, sized down to the promised recovery time); the not-ready taint for
  Kubernetes' 300 s, because a node whose agent reports Ready=False is alive
  (its runtime may be restarting) and its containers should outlive a
  short hiccup; any other NoExecute taint not at all;
- the clock starts when the taint was added, or when the pod was created if
  that was later.

A node that cannot be reached cannot confirm a graceful deletion, so pods
that are terminating on a node whose lease has been expired for longer than
`pod_eviction_timeout` plus their grace period are force-deleted (grace 0),
as pod GC does. Pods bound to a Node that no longer exists are force-deleted
after a quarantine of ORPHAN_QUARANTINE_SECONDS.

When every node is unhealthy at once, the fault is more likely ours (or the
API server's) than the nodes': as Kubernetes' "full disruption" mode, the
controller then adds no NoExecute taints (and removes its own) and evicts
nothing, while still reporting the conditions.

Defaults meet the promise of the seed documents: a dead node is noticed
within about 4-5 s, and its pods are deleted about 3 s later, in time for the
ReplicaSet controller and scheduler to have replacements bound within ~10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kubeling.api.v1 import core_pb2
from kubeling.client.errors import ApiError, ConflictError, NotFoundError
from kubeling.client.events import (NODE_NOT_READY, NODE_READY, NORMAL, TAINT_MANAGER_EVICTION,
                                    WARNING)
from kubeling.objects import copy

from .controller import Controller
from .manager import register

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"

TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
NO_EXECUTE = "NoExecute"
NO_SCHEDULE = "NoSchedule"

# The taints this controller owns, by (key, effect).
_MANAGED_TAINTS = frozenset((key, effect) for key in (TAINT_UNREACHABLE, TAINT_NOT_READY)
                            for effect in (NO_EXECUTE, NO_SCHEDULE))

# Conditions set to Unknown when the node agent goes silent (not NetworkUnavailable,
# which the network plugin owns).
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
REASON_STATUS_UNKNOWN = "NodeStatusUnknown"
MESSAGE_STATUS_UNKNOWN = "Kubelet stopped posting node status."
REASON_NEVER_UPDATED = "NodeStatusNeverUpdated"
MESSAGE_NEVER_UPDATED = "Kubelet never posted node status."

# How often each node is looked at even when nothing changes (Kubernetes'
# node-monitor-period is 5 s; ours is short so that expiry is noticed fast).
NODE_MONITOR_PERIOD = 1.0
# Pods bound to a Node that does not exist are deleted after this long (pod GC's quarantine).
ORPHAN_QUARANTINE_SECONDS = 40.0
# How long pods tolerate the not-ready taint by default (Kubernetes' DefaultTolerationSeconds).
NOT_READY_TOLERATION_SECONDS = 300.0
# Kubernetes' default pod grace period, for pods that do not say.
DEFAULT_GRACE_PERIOD_SECONDS = 30
# Concurrent API calls for the pods of one node.
POD_CALL_CONCURRENCY = 16
# An evicted pod is not evicted again for this long while our cache has yet to show its deletion.
EVICTION_MEMORY_SECONDS = 10.0


# ------------------------------------------------------------ time helpers


def seconds(ts: Timestamp) -> float | None:
    """A Timestamp as Unix seconds; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def timestamp(at: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


# ------------------------------------------------------------------ health


def node_condition(node: Message, type_: str) -> Message | None:
    for c in node.status.conditions:
        if c.type == type_:
            return c
    return None


def ready_status(node: Message) -> str | None:
    """"True", "False" or "Unknown"; None when the node has no Ready condition."""
    c = node_condition(node, "Ready")
    return c.status if c is not None else None


@dataclass
class NodeHealth:
    """What the controller last saw of a node's heartbeats.

    `probe_time` is the controller's clock reading when the node last showed
    life; `lease_renew` and `heartbeat` the timestamps it last read (in the
    lease and the Ready condition), to notice when they change.
    """

    probe_time: float
    lease_renew: float | None = None
    heartbeat: float | None = None


def observe_health(previous: NodeHealth | None, node: Message, lease: Message | None,
                   now: float) -> NodeHealth:
    """Fold the node's current lease and Ready heartbeat into its health record.

    Any change of the lease's renewTime or of the Ready condition's
    lastHeartbeatTime is a sign of life seen `now`. Without a previous record,
    the newest of renewTime, lastHeartbeatTime and the Node's creation time is
    taken at face value (never later than `now`).
    """
    renew = seconds(lease.spec.renew_time) if lease is not None else None
    ready = node_condition(node, "Ready")
    heartbeat = seconds(ready.last_heartbeat_time) if ready is not None else None
    if previous is None:
        seen = [t for t in (renew, heartbeat, seconds(node.metadata.creation_timestamp)) if t is not None]
        return NodeHealth(min(now, max(seen)) if seen else now, renew, heartbeat)
    probe = previous.probe_time
    if renew is not None and renew != previous.lease_renew:
        probe = now
    if heartbeat is not None and heartbeat != previous.heartbeat:
        probe = now
    return NodeHealth(probe, renew if renew is not None else previous.lease_renew, heartbeat)


def is_expired(health: NodeHealth, now: float, grace_period: float) -> bool:
    """Whether the node has shown no life for longer than `grace_period` seconds."""
    return now - health.probe_time > grace_period


def mark_unknown(node: Message, now: float) -> Message | None:
    """A copy of `node` with its monitored conditions Unknown (missing ones
    added as never updated), or None when they already all are. Heartbeat
    times are kept: they say when the agent last spoke."""
    new = copy(node)
    changed = False
    now_ts = timestamp(now)
    for type_ in MONITORED_CONDITIONS:
        c = node_condition(new, type_)
        if c is None:
            c = new.status.conditions.add(type=type_, status="Unknown", reason=REASON_NEVER_UPDATED,
                                          message=MESSAGE_NEVER_UPDATED)
            c.last_heartbeat_time.CopyFrom(node.metadata.creation_timestamp)
            c.last_transition_time.CopyFrom(now_ts)
            changed = True
        elif c.status != "Unknown":
            c.status = "Unknown"
            c.reason = REASON_STATUS_UNKNOWN
            c.message = MESSAGE_STATUS_UNKNOWN
            c.last_transition_time.CopyFrom(now_ts)
            changed = True
    return new if changed else None


# ------------------------------------------------------------------ taints


def desired_taints(taints: Sequence[Message], ready: str | None, now: float,
                   no_execute: bool = True) -> list[Message]:
    """The node's taints with the controller's own ones matching `ready`.

    Other taints are kept as they are, in order; an existing managed taint
    keeps its timeAdded. `ready` None (no Ready condition yet) changes
    nothing. `no_execute` False leaves out the NoExecute ones (full disruption).
    """
    if ready is None:
        return list(taints)
    key = {"Unknown": TAINT_UNREACHABLE, "False": TAINT_NOT_READY}.get(ready)
    want = set()
    if key is not None:
        want.add((key, NO_SCHEDULE))
        if no_execute:
            want.add((key, NO_EXECUTE))
    result = [t for t in taints if (t.key, t.effect) not in _MANAGED_TAINTS or (t.key, t.effect) in want]
    have = {(t.key, t.effect) for t in result}
    for k, effect in sorted(want - have, key=lambda ke: ke[1] != NO_EXECUTE):
        taint = core_pb2.Taint(key=k, effect=effect)
        if effect == NO_EXECUTE:
            taint.time_added.CopyFrom(timestamp(now))
        result.append(taint)
    return result


def tolerates(toleration: Message, taint: Message) -> bool:
    """Kubernetes' Toleration.ToleratesTaint: effects match (an empty one
    matches all), keys match (an empty one matches all), and with operator
    Equal (or empty) the values are equal; Exists matches any value."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return toleration.operator == "Exists"


def eviction_deadline(pod: Message, taints: Iterable[tuple[Message, float]],
                      default_toleration_seconds: float,
                      not_ready_toleration_seconds: float = NOT_READY_TOLERATION_SECONDS) -> float | None:
    """When `pod` must be evicted for the NoExecute `taints` (each with the
    time it was added), as Unix seconds; None when it tolerates them forever.
    Without a matching toleration, the unreachable taint is tolerated for
    `default_toleration_seconds` and the not-ready one for
    `not_ready_toleration_seconds`. See the module docstring for the rules."""
    created = seconds(pod.metadata.creation_timestamp) or 0.0
    deadline = None
    for taint, added in taints:
        if taint.effect != NO_EXECUTE:
            continue
        matching = [t for t in pod.spec.tolerations if tolerates(t, taint)]
        if matching:
            limits = [t.toleration_seconds for t in matching if t.HasField("toleration_seconds")]
            if not limits:
                continue  # tolerated forever
            allowed = float(max(0, min(limits)))
        elif taint.key == TAINT_UNREACHABLE:
            allowed = default_toleration_seconds
        elif taint.key == TAINT_NOT_READY:
            allowed = not_ready_toleration_seconds
        else:
            allowed = 0.0
        at = max(added, created) + allowed
        deadline = at if deadline is None else min(deadline, at)
    return deadline


def is_pod_ready(pod: Message) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def pod_grace_period(pod: Message) -> int:
    """The grace period the pod's deletion was (or would be) given."""
    if pod.metadata.HasField("deletion_grace_period_seconds"):
        return pod.metadata.deletion_grace_period_seconds
    if pod.spec.HasField("termination_grace_period_seconds"):
        return pod.spec.termination_grace_period_seconds
    return DEFAULT_GRACE_PERIOD_SECONDS


# -------------------------------------------------------------- controller


@register("nodelifecycle")
class NodeLifecycleController(Controller):
    """Watches node heartbeats, taints silent nodes and evicts their pods; one key per Node."""

    name = "nodelifecycle"
    workers = 4
    _POD_INDEX = "nodelifecycle/node"

    def setup(self) -> None:
        self.clock = time.time  # Unix seconds; tests replace it
        self.grace_period = float(self.options.get("node_monitor_grace_period", 4.0))
        self.eviction_timeout = float(self.options.get("pod_eviction_timeout", 3.0))
        self.monitor_period = min(NODE_MONITOR_PERIOD, self.grace_period / 2)
        self.nodes = self.informers.informer("nodes")
        self.leases = self.informers.informer("leases", namespace=NODE_LEASE_NAMESPACE)
        self.pods = self.informers.informer("pods")
        self.pods.store.add_index(self._POD_INDEX,
                                  lambda p: [p.spec.node_name] if p.spec.node_name else [])
        self.watch(self.nodes)
        self.watch(self.leases, lambda lease: [lease.metadata.name])
        self.watch(self.pods, lambda pod: [pod.spec.node_name])

        self._health: dict[str, NodeHealth] = {}
        self._ready_seen: dict[str, str | None] = {}     # for NodeNotReady / NodeReady Events
        self._unhealthy: set[str] = set()                 # expired or not Ready, among existing nodes
        self._taint_seen: dict[str, dict[tuple, float]] = {}  # NoExecute taints without timeAdded
        self._orphans_seen: dict[str, float] = {}          # node name -> first seen missing
        self._evicted: dict[str, float] = {}               # pod uid -> when we deleted it
        self._pod_calls = asyncio.Semaphore(POD_CALL_CONCURRENCY)

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, name: str) -> float | None:
        now = self.clock()
        node = self.nodes.store.get(name)
        pods = self.pods.store.by_index(self._POD_INDEX, name)
        if node is None:
            for state in (self._health, self._ready_seen, self._taint_seen):
                state.pop(name, None)
            self._unhealthy.discard(name)
            return await self._collect_orphans(name, pods, now)
        self._orphans_seen.pop(name, None)

        lease = self.leases.store.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        health = observe_health(self._health.get(name), node, lease, now)
        self._health[name] = health
        expired = is_expired(health, now, self.grace_period)
        await self._note_ready(node, ready_status(node))
        if expired:
            updated = mark_unknown(node, now)
            if updated is not None:
                node = await self.client.update_status(updated)
                ready = node_condition(node, "Ready")
                health.heartbeat = seconds(ready.last_heartbeat_time)  # our write is no sign of life
                log.info("node %s: no heartbeat for %.1f s; status Unknown", name, now - health.probe_time)
        ready = ready_status(node)
        await self._note_ready(node, ready)
        if expired or ready != "True":
            self._unhealthy.add(name)
        else:
            self._unhealthy.discard(name)
        disrupted = self.full_disruption()

        taints = desired_taints(node.spec.taints, ready, now, no_execute=not disrupted)
        if taints != list(node.spec.taints):
            new = copy(node)
            del new.spec.taints[:]
            new.spec.taints.extend(taints)
            node = await self.client.update(new)
            log.info("node %s: taints now %s", name,
                     ", ".join(f"{t.key}:{t.effect}" for t in node.spec.taints) or "none")

        due = await self._handle_pods(node, pods, now, ready, expired, health, disrupted)
        delay = self.monitor_period
        if not expired:
            delay = min(delay, health.probe_time + self.grace_period - now + 0.01)
        if due is not None:
            delay = min(delay, due - now + 0.01)
        return max(0.05, delay)

    def full_disruption(self) -> bool:
        """Whether every node is unhealthy (see the module docstring)."""
        total = len(self.nodes.store)
        return total > 0 and len(self._unhealthy) >= total

    async def _note_ready(self, node: Message, ready: str | None) -> None:
        name = node.metadata.name
        previous = self._ready_seen.get(name)
        self._ready_seen[name] = ready
        if previous == "True" and ready != "True":
            await self.recorder.event(node, NORMAL, NODE_NOT_READY,
                                      f"Node {name} status is now: {NODE_NOT_READY}")
        elif previous is not None and previous != "True" and ready == "True":
            await self.recorder.event(node, NORMAL, NODE_READY, f"Node {name} status is now: {NODE_READY}")

    # ----------------------------------------------------------------- pods

    def _no_execute_taints(self, node: Message, now: float) -> list[tuple[Message, float]]:
        """The node's NoExecute taints with when each was added (first seen, if unrecorded)."""
        seen = self._taint_seen.setdefault(node.metadata.name, {})
        result, keep = [], {}
        for taint in node.spec.taints:
            if taint.effect != NO_EXECUTE:
                continue
            added = seconds(taint.time_added)
            if added is None:
                k = (taint.key, taint.value)
                added = keep[k] = seen.get(k, now)
            result.append((taint, added))
        self._taint_seen[node.metadata.name] = keep
        return result

    async def _handle_pods(self, node: Message, pods: list[Message], now: float, ready: str | None,
                           expired: bool, health: NodeHealth, disrupted: bool) -> float | None:
        """Mark pods not ready, evict and force-delete as due; returns when
        something next falls due (None: nothing pending)."""
        no_execute = [] if disrupted else self._no_execute_taints(node, now)
        if not pods or (ready == "True" and not expired and not no_execute):
            return None  # the common case: nothing to do for any pod
        unhealthy_since = health.probe_time + self.grace_period
        calls, due = [], None

        def later(at: float) -> None:
            nonlocal due
            due = at if due is None else min(due, at)

        for pod in pods:
            if pod.spec.node_name != node.metadata.name:
                continue
            terminating = pod.metadata.HasField("deletion_timestamp")
            if terminating:
                self._evicted.pop(pod.metadata.uid, None)
            finished = pod.status.phase in ("Succeeded", "Failed")
            if ready is not None and ready != "True" and not finished and is_pod_ready(pod):
                calls.append(self._mark_pod_not_ready(pod, now))
            if terminating:
                if expired and not disrupted:
                    at = max(seconds(pod.metadata.deletion_timestamp) or 0.0,
                             unhealthy_since + self.eviction_timeout + pod_grace_period(pod))
                    if at <= now:
                        calls.append(self._force_delete(pod, f"its node {node.metadata.name} is unreachable"))
                    else:
                        later(at)
                continue
            if no_execute:
                at = eviction_deadline(pod, no_execute, self.eviction_timeout)
                if at is None:
                    continue
                if at <= now:
                    if now - self._evicted.get(pod.metadata.uid, -EVICTION_MEMORY_SECONDS) \
                            >= EVICTION_MEMORY_SECONDS:
                        calls.append(self._evict(pod, now))
                else:
                    later(at)
        await self._run_all(calls)
        return due

    async def _collect_orphans(self, node_name: str, pods: list[Message], now: float) -> float | None:
        """Force-delete pods bound to a Node that does not exist, after a quarantine."""
        if not pods:
            self._orphans_seen.pop(node_name, None)
            return None
        first = self._orphans_seen.setdefault(node_name, now)
        if now - first < ORPHAN_QUARANTINE_SECONDS:
            return first + ORPHAN_QUARANTINE_SECONDS - now + 0.01
        try:
            await self.client.get("nodes", node_name)
            return self.monitor_period  # the cache is behind: the node exists
        except NotFoundError:
            pass
        await self._run_all([self._force_delete(p, f"its node {node_name} does not exist") for p in pods])
        self._orphans_seen.pop(node_name, None)
        return None

    async def _run_all(self, calls: list) -> None:
        """Run per-pod calls a few at a time; raise the first failure after all ran."""
        if not calls:
            return
        async def limited(call):
            async with self._pod_calls:
                return await call
        results = await asyncio.gather(*(limited(c) for c in calls), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _mark_pod_not_ready(self, pod: Message, now: float) -> None:
        new = copy(pod)
        for c in new.status.conditions:
            if c.type == "Ready" and c.status != "False":
                c.status = "False"
                c.last_transition_time.CopyFrom(timestamp(now))
        try:
            await self.client.update_status(new)
        except (NotFoundError, ConflictError):
            return  # gone, or changed: the change brings the node back to the queue
        await self.recorder.event(pod, WARNING, NODE_NOT_READY, "Node is not ready")

    async def _evict(self, pod: Message, now: float) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        await self.recorder.event(pod, NORMAL, TAINT_MANAGER_EVICTION, f"Marking for deletion Pod {ns}/{name}")
        try:
            await self.client.delete("pods", name, ns, uid=pod.metadata.uid)
        except (NotFoundError, ConflictError):
            return  # gone already, or a new pod of that name
        if len(self._evicted) > 10000:
            self._evicted = {uid: at for uid, at in self._evicted.items()
                             if now - at < EVICTION_MEMORY_SECONDS}
        self._evicted[pod.metadata.uid] = now
        log.info("evicted pod %s/%s from node %s", ns, name, pod.spec.node_name)

    async def _force_delete(self, pod: Message, why: str) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        try:
            await self.client.delete("pods", name, ns, grace_period_seconds=0, uid=pod.metadata.uid)
        except (NotFoundError, ConflictError):
            return
        except ApiError as e:
            log.warning("could not force-delete pod %s/%s: %s", ns, name, e)
            raise
        log.info("force-deleted pod %s/%s: %s", ns, name, why)
