"""Deployment: roll a pod template out through ReplicaSets, as
kube-controller-manager's deployment controller.

Each version of a Deployment's template gets one ReplicaSet, named
`<deployment>-<hash>` where the hash (label `pod-template-hash` on the RS,
its selector and its template) is a stable hash of the template. The RS
whose template equals the Deployment's (ignoring that label) is the *new*
one; every other owned RS is *old*. One reconcile per Deployment key:

- claim ReplicaSets: owned ones the selector still matches, adopt matching
  orphans, release owned ones that no longer match;
- paused, or replicas changed (an active RS's `desired-replicas`
  annotation differs from spec.replicas): only scale, proportionally across
  the active RSs when a rollout is under way (Kubernetes' scale());
- RollingUpdate (Kubernetes' rolling.go): scale the new RS up as far as
  `replicas + maxSurge` allows, then scale old RSs down as far as
  `replicas - maxUnavailable` available pods allow, unhealthy ones first;
- Recreate: scale every old RS to 0, wait until their pods are gone, then
  create (or scale) the new RS to `replicas`;
- once complete, delete the oldest old RSs with no pods beyond
  revisionHistoryLimit;
- status: replicas / updatedReplicas / readyReplicas / availableReplicas /
  unavailableReplicas / observedGeneration, the Available condition, and
  the Progressing condition (NewReplicaSetCreated, FoundNewReplicaSet,
  ReplicaSetUpdated, NewReplicaSetAvailable, or ProgressDeadlineExceeded
  with status False after progressDeadlineSeconds without progress; the key
  comes back in time to notice).

Revisions: the new RS carries `deployment.kubernetes.io/revision` (one more
than any old RS; a rollback to an old template re-numbers that RS), and the
Deployment carries the same annotation. Rollback itself is the client's job
(`kubeling rollout undo` copies an old RS's template into the Deployment).

Two deliberate tightenings of Kubernetes' arithmetic keep "at most
replicas + maxSurge pods, at least replicas - maxUnavailable available" true
of the pods themselves, not only of the RS specs, while ReplicaSet
controllers catch up: an RS counts as max(spec, status) pods when scaling
up, and as min(spec, status) available pods when scaling down.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Iterable

from google.protobuf.struct_pb2 import Value

from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.client import events
from kubeling.client.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from kubeling.intstr import resolve_fenceposts
from kubeling.objects import copy, key_of

from .controller import Controller
from .manager import register
from .pod_template import (BY_CONTROLLER_UID, BY_NAMESPACE, ORPHANS_BY_NAMESPACE,
                           POD_TEMPLATE_HASH_LABEL, compute_hash, controller_ref, ensure_indexes,
                           equal_ignore_hash, is_controlled_by, matches, new_controller_ref,
                           selector_of, timestamp_seconds)

log = logging.getLogger(__name__)

# Annotations (Kubernetes' names, so tools that know them work).
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Deployment annotations that are not copied to its ReplicaSets.
NOT_COPIED = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
                        ROLLBACK_TO})

# Condition types and reasons.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

# A progressDeadlineSeconds of MaxInt32 means "no deadline", as in Kubernetes.
NO_DEADLINE = 2**31 - 1
CONFLICT_RETRY = 0.05


# ================================================================ pure parts


def replicas_of(obj) -> int:
    """spec.replicas of a Deployment or ReplicaSet; unset means 1."""
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def _int_or_string(v: Value) -> int | str | None:
    which = v.WhichOneof("kind")
    if which == "number_value":
        return int(v.number_value)
    if which == "string_value":
        return v.string_value
    return None


def is_rolling(d: apps_pb2.Deployment) -> bool:
    return d.spec.strategy.type in ("", "RollingUpdate")


def _fenceposts(d: apps_pb2.Deployment) -> tuple[int, int]:
    ru = d.spec.strategy.rolling_update
    return resolve_fenceposts(_int_or_string(ru.max_surge), _int_or_string(ru.max_unavailable),
                              replicas_of(d))


def max_surge(d: apps_pb2.Deployment) -> int:
    """Pods allowed above replicas (Kubernetes' MaxSurge); 0 unless RollingUpdate."""
    return _fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: apps_pb2.Deployment) -> int:
    """Pods allowed to be unavailable (Kubernetes' MaxUnavailable), at most replicas."""
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    return min(_fenceposts(d)[1], replicas_of(d))


def revision_of(rs) -> int:
    """The revision annotation as a number; 0 when missing or invalid."""
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: Iterable) -> int:
    return max((revision_of(rs) for rs in rss), default=0)


def _created(rs) -> float:
    return timestamp_seconds(rs.metadata.creation_timestamp) or 0.0


def _older(a, b) -> bool:
    """Kubernetes' ReplicaSetsByCreationTimestamp.Less."""
    ta, tb = _created(a), _created(b)
    if ta == tb:
        return a.metadata.name < b.metadata.name
    return ta < tb


def _cmp(less: Callable) -> Callable:
    return functools.cmp_to_key(lambda a, b: -1 if less(a, b) else (1 if less(b, a) else 0))


def by_creation(rss: Iterable) -> list:
    """Oldest first; ties by name."""
    return sorted(rss, key=_cmp(_older))


def by_size_newer(rss: Iterable) -> list:
    """Largest first; among equals, newest first (for scaling up)."""
    def less(a, b):
        if replicas_of(a) == replicas_of(b):
            return _older(b, a)
        return replicas_of(a) > replicas_of(b)
    return sorted(rss, key=_cmp(less))


def by_size_older(rss: Iterable) -> list:
    """Largest first; among equals, oldest first (for scaling down)."""
    def less(a, b):
        if replicas_of(a) == replicas_of(b):
            return _older(a, b)
        return replicas_of(a) > replicas_of(b)
    return sorted(rss, key=_cmp(less))


def by_revision(rss: Iterable) -> list:
    """Lowest revision first; ties oldest first."""
    def less(a, b):
        ra, rb = revision_of(a), revision_of(b)
        if ra == rb:
            return _older(a, b)
        return ra < rb
    return sorted(rss, key=_cmp(less))


def active(rss: Iterable) -> list:
    """ReplicaSets that should have pods (spec.replicas > 0)."""
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]


def pods_upper_bound(rs) -> int:
    """How many pods `rs` may have right now: its spec, or more while its
    controller has not yet deleted the pods of a scale-down."""
    return max(replicas_of(rs), rs.status.replicas)


def available_lower_bound(rs) -> int:
    """How many available pods `rs` surely keeps: its reported available
    pods, but no more than its spec once a scale-down has been asked for."""
    return min(replicas_of(rs), rs.status.available_replicas)


def find_new_replica_set(d: apps_pb2.Deployment, rss: Iterable):
    """The oldest RS whose template equals the Deployment's, ignoring the hash label."""
    for rs in by_creation(rss):
        if equal_ignore_hash(rs.spec.template, d.spec.template):
            return rs
    return None


def new_rs_new_replicas(d: apps_pb2.Deployment, all_rss: list, new_rs) -> int:
    """What the new RS should be scaled to now (Kubernetes' NewRSNewReplicas):
    for RollingUpdate, up by what room `replicas + maxSurge` leaves, never
    past replicas; for Recreate, replicas."""
    if not is_rolling(d):
        return replicas_of(d)
    current_pods = sum(pods_upper_bound(rs) for rs in all_rss)
    max_total = replicas_of(d) + max_surge(d)
    if current_pods >= max_total:
        return replicas_of(new_rs)
    scale_up = min(max_total - current_pods, replicas_of(d) - replicas_of(new_rs))
    return replicas_of(new_rs) + max(scale_up, 0)


def old_replica_sets_scale_down(all_rss: list, old_rss: list, new_rs, d: apps_pb2.Deployment
                                ) -> dict[str, int]:
    """New sizes (RS name -> spec.replicas) of the old RSs of a rolling
    update (Kubernetes' reconcileOldReplicaSets): nothing while the pods
    that may go are needed for minAvailable; otherwise first unhealthy pods
    (oldest RS first), then available ones down to minAvailable."""
    old_rss = [rs for rs in old_rss if rs is not None]
    if sum(replicas_of(rs) for rs in old_rss) == 0:
        return {}
    all_pods = sum(replicas_of(rs) for rs in all_rss if rs is not None)
    min_available = replicas_of(d) - max_unavailable(d)
    new_unavailable = replicas_of(new_rs) - new_rs.status.available_replicas if new_rs is not None else 0
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    sizes = {rs.metadata.name: replicas_of(rs) for rs in old_rss}

    # Unhealthy pods first: removing them costs no availability.
    cleaned = 0
    for rs in by_creation(old_rss):
        if cleaned >= max_scaled_down:
            break
        size = sizes[rs.metadata.name]
        healthy = min(size, rs.status.available_replicas)
        if size == 0 or size == healthy:
            continue
        n = min(max_scaled_down - cleaned, size - healthy)
        sizes[rs.metadata.name] = size - n
        cleaned += n

    # Then available pods, as far as minAvailable allows.
    def avail(rs) -> int:
        size = sizes.get(rs.metadata.name, replicas_of(rs))
        return min(size, rs.status.available_replicas)
    available = sum(avail(rs) for rs in all_rss if rs is not None)
    if available > min_available:
        to_remove, removed = available - min_available, 0
        for rs in by_creation(old_rss):
            if removed >= to_remove:
                break
            size = sizes[rs.metadata.name]
            if size == 0:
                continue
            n = min(size, to_remove - removed)
            sizes[rs.metadata.name] = size - n
            removed += n
    return {name: size for name, size in sizes.items()
            if size != replicas_of(next(rs for rs in old_rss if rs.metadata.name == name))}


def _annotation_int(rs, key: str) -> int | None:
    try:
        return int(rs.metadata.annotations[key])
    except (KeyError, ValueError):
        return None


def replica_set_fraction(rs, d: apps_pb2.Deployment) -> int:
    """How many replicas `rs` gains (or loses) in proportion to its share
    of the Deployment's previous size (Kubernetes' getReplicaSetFraction)."""
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    deployment_replicas = replicas_of(d) + max_surge(d)
    annotated = _annotation_int(rs, MAX_REPLICAS)
    if annotated is None:
        annotated = d.status.replicas
    if annotated <= 0:
        return 0
    new_size = replicas_of(rs) * deployment_replicas / annotated
    return _round_half_away(new_size) - replicas_of(rs)


def _round_half_away(x: float) -> int:
    """Go's math.Round: halves away from zero."""
    n = int(abs(x) + 0.5)
    return n if x >= 0 else -n


def proportion(rs, d: apps_pb2.Deployment, to_add: int, added: int) -> int:
    """Kubernetes' GetProportion: the RS's fraction, bounded by what is left to add."""
    if rs is None or replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def find_active_or_latest(new_rs, old_rss: list):
    """The only active RS; the newest when none is active; None when several are."""
    if new_rs is None and not old_rss:
        return None
    olds = list(reversed(by_creation(old_rss)))
    all_active = active(olds + [new_rs])
    if not all_active:
        return new_rs if new_rs is not None else olds[0]
    if len(all_active) == 1:
        return all_active[0]
    return None


def is_saturated(d: apps_pb2.Deployment, rs) -> bool:
    """The RS has all the Deployment's replicas, all available."""
    if rs is None:
        return False
    return (_annotation_int(rs, DESIRED_REPLICAS) == replicas_of(d)
            and replicas_of(rs) == replicas_of(d)
            and rs.status.available_replicas == replicas_of(d))


def scale_plan(d: apps_pb2.Deployment, new_rs, old_rss: list) -> list[tuple[object, int]]:
    """(rs, new size) for a change of spec.replicas (Kubernetes' scale()).

    One active RS takes the whole size; a saturated new RS means old ones go
    to 0; otherwise, in a rolling update, the difference between
    `replicas + maxSurge` and the pods of all active RSs is spread in
    proportion to their sizes, leftovers going to the largest (newest when
    scaling up, oldest when scaling down). Every active RS is listed so its
    replica annotations can be brought up to date.
    """
    target = find_active_or_latest(new_rs, old_rss)
    if target is not None:
        if replicas_of(target) == replicas_of(d):
            return []
        return [(target, replicas_of(d))]
    if is_saturated(d, new_rs):
        return [(rs, 0) for rs in active(old_rss)]
    if not is_rolling(d):
        return []
    rss = active(list(old_rss) + [new_rs])
    allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
    to_add = allowed - sum(replicas_of(rs) for rs in rss)
    if to_add > 0:
        rss = by_size_newer(rss)
    elif to_add < 0:
        rss = by_size_older(rss)
    sizes: list[int] = []
    added = 0
    for rs in rss:
        if to_add != 0:
            p = proportion(rs, d, to_add, added)
            sizes.append(replicas_of(rs) + p)
            added += p
        else:
            sizes.append(replicas_of(rs))
    if rss and to_add != 0:
        sizes[0] = max(sizes[0] + to_add - added, 0)
    return list(zip(rss, sizes))


def is_scaling_event(d: apps_pb2.Deployment, new_rs, old_rss: list) -> bool:
    """An active RS was sized for a different spec.replicas than the current one."""
    for rs in active(list(old_rss) + [new_rs]):
        desired = _annotation_int(rs, DESIRED_REPLICAS)
        if desired is not None and desired != replicas_of(d):
            return True
    return False


def replicas_annotations_need_update(rs, desired: int, max_replicas: int) -> bool:
    a = rs.metadata.annotations
    return a.get(DESIRED_REPLICAS) != str(desired) or a.get(MAX_REPLICAS) != str(max_replicas)


def set_replicas_annotations(rs, desired: int, max_replicas: int) -> bool:
    changed = replicas_annotations_need_update(rs, desired, max_replicas)
    rs.metadata.annotations[DESIRED_REPLICAS] = str(desired)
    rs.metadata.annotations[MAX_REPLICAS] = str(max_replicas)
    return changed


def set_new_replica_set_annotations(d: apps_pb2.Deployment, rs, new_revision: int,
                                    exists: bool) -> bool:
    """Kubernetes' SetNewReplicaSetAnnotations: copy the Deployment's own
    annotations, raise the RS's revision to `new_revision` (keeping the
    ones it had in revision-history: a rollback re-numbers an old RS), and
    on a new RS the replica annotations. Returns whether anything changed."""
    changed = False
    for k, v in d.metadata.annotations.items():
        if k in NOT_COPIED or rs.metadata.annotations.get(k) == v:
            continue
        rs.metadata.annotations[k] = v
        changed = True
    old = rs.metadata.annotations.get(REVISION)
    try:
        old_revision = int(old) if old else 0
    except ValueError:
        return changed
    if old_revision < new_revision:
        rs.metadata.annotations[REVISION] = str(new_revision)
        changed = True
        if old:
            history = rs.metadata.annotations.get(REVISION_HISTORY)
            rs.metadata.annotations[REVISION_HISTORY] = f"{history},{old}" if history else old
    if not exists and set_replicas_annotations(rs, replicas_of(d), replicas_of(d) + max_surge(d)):
        changed = True
    return changed


def new_replica_set(d: apps_pb2.Deployment, old_rss: list, revision: int) -> apps_pb2.ReplicaSet:
    """The ReplicaSet for the Deployment's current template: name
    `<deployment>-<hash>`, the hash label on its labels, selector and
    template, owned by the Deployment, sized by new_rs_new_replicas."""
    collision = d.status.collision_count if d.status.HasField("collision_count") else None
    template_hash = compute_hash(d.spec.template, collision)
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = f"{d.metadata.name}-{template_hash}"
    rs.metadata.namespace = d.metadata.namespace
    rs.metadata.owner_references.append(new_controller_ref(d, "apps/v1", "Deployment"))
    rs.spec.template.CopyFrom(d.spec.template)
    rs.spec.template.metadata.labels[POD_TEMPLATE_HASH_LABEL] = template_hash
    rs.metadata.labels.update(rs.spec.template.metadata.labels)
    rs.spec.selector.CopyFrom(d.spec.selector)
    rs.spec.selector.match_labels[POD_TEMPLATE_HASH_LABEL] = template_hash
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds
    rs.spec.replicas = 0
    rs.spec.replicas = new_rs_new_replicas(d, list(old_rss) + [rs], rs)
    set_new_replica_set_annotations(d, rs, revision, exists=False)
    return rs


# ---------------------------------------------------------------- conditions


def get_condition(status: apps_pb2.DeploymentStatus, type_: str):
    for c in status.conditions:
        if c.type == type_:
            return c
    return None


def new_condition(type_: str, status: str, reason: str, message: str, now: float
                  ) -> apps_pb2.DeploymentCondition:
    c = apps_pb2.DeploymentCondition(type=type_, status=status, reason=reason, message=message)
    c.last_update_time.seconds = int(now)
    c.last_transition_time.seconds = int(now)
    return c


def remove_condition(status: apps_pb2.DeploymentStatus, type_: str) -> None:
    kept = [c for c in status.conditions if c.type != type_]
    if len(kept) != len(status.conditions):
        del status.conditions[:]
        status.conditions.extend(kept)


def set_condition(status: apps_pb2.DeploymentStatus, cond: apps_pb2.DeploymentCondition) -> None:
    """Kubernetes' SetDeploymentCondition: no change when status and reason
    are the same; the transition time is kept while the status is."""
    current = get_condition(status, cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return
    cond = copy(cond)
    if current is not None and current.status == cond.status:
        cond.last_transition_time.CopyFrom(current.last_transition_time)
    remove_condition(status, cond.type)
    status.conditions.append(cond)


def has_progress_deadline(d: apps_pb2.Deployment) -> bool:
    return d.spec.HasField("progress_deadline_seconds") and d.spec.progress_deadline_seconds != NO_DEADLINE


def deployment_complete(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    """Every replica updated and available, nothing old left, this generation seen."""
    n = replicas_of(d)
    return (status.updated_replicas == n and status.replicas == n and status.available_replicas == n
            and status.observed_generation >= d.metadata.generation)


def deployment_progressing(d: apps_pb2.Deployment, new: apps_pb2.DeploymentStatus) -> bool:
    """More updated, ready or available pods, or fewer old ones, than before."""
    old = d.status
    return (new.updated_replicas > old.updated_replicas
            or (new.replicas - new.updated_replicas) < (old.replicas - old.updated_replicas)
            or new.ready_replicas > old.ready_replicas
            or new.available_replicas > old.available_replicas)


def deployment_timed_out(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    since = timestamp_seconds(cond.last_update_time) or 0.0
    return since + d.spec.progress_deadline_seconds < now


def calculate_status(all_rss: list, new_rs, d: apps_pb2.Deployment, now: float
                     ) -> apps_pb2.DeploymentStatus:
    """Counts from the RSs' statuses and the Available condition (Kubernetes' calculateStatus)."""
    rss = [rs for rs in all_rss if rs is not None]
    available = sum(rs.status.available_replicas for rs in rss)
    total = sum(replicas_of(rs) for rs in rss)
    status = apps_pb2.DeploymentStatus(
        observed_generation=d.metadata.generation,
        replicas=sum(rs.status.replicas for rs in rss),
        updated_replicas=new_rs.status.replicas if new_rs is not None else 0,
        ready_replicas=sum(rs.status.ready_replicas for rs in rss),
        available_replicas=available,
        unavailable_replicas=max(total - available, 0))
    if d.status.HasField("collision_count"):
        status.collision_count = d.status.collision_count
    status.conditions.extend(d.status.conditions)
    if available >= replicas_of(d) - max_unavailable(d):
        set_condition(status, new_condition(AVAILABLE, "True", MIN_AVAILABLE,
                                            "Deployment has minimum availability.", now))
    else:
        set_condition(status, new_condition(AVAILABLE, "False", MIN_UNAVAILABLE,
                                            "Deployment does not have minimum availability.", now))
    return status


def replica_failure(all_rss: list, new_rs) -> apps_pb2.DeploymentCondition | None:
    """The ReplicaFailure condition of the new RS, else of any other, as a Deployment condition."""
    for rs in [new_rs] + [r for r in all_rss if r is not new_rs]:
        if rs is None:
            continue
        for c in rs.status.conditions:
            if c.type == REPLICA_FAILURE:
                cond = apps_pb2.DeploymentCondition(type=c.type, status=c.status, reason=c.reason,
                                                    message=c.message)
                cond.last_transition_time.CopyFrom(c.last_transition_time)
                cond.last_update_time.CopyFrom(c.last_transition_time)
                return cond
    return None


def update_progress(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, new_rs,
                    all_rss: list, now: float) -> None:
    """Set the Progressing and ReplicaFailure conditions of a newly
    calculated `status` (Kubernetes' syncRolloutStatus): complete, still
    making progress (the update time moves, the transition time stays), or
    no progress for progressDeadlineSeconds."""
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
    current = get_condition(d.status, PROGRESSING)
    already_complete = (status.replicas == status.updated_replicas and current is not None
                        and current.reason == NEW_RS_AVAILABLE)
    if has_progress_deadline(d) and not already_complete:
        what = f'ReplicaSet "{new_rs.metadata.name}"' if new_rs is not None else f'Deployment "{d.metadata.name}"'
        if deployment_complete(d, status):
            set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                                f"{what} has successfully progressed.", now))
        elif deployment_progressing(d, status):
            cond = new_condition(PROGRESSING, "True", RS_UPDATED, f"{what} is progressing.", now)
            if current is not None:
                if current.status == "True":
                    cond.last_transition_time.CopyFrom(current.last_transition_time)
                remove_condition(status, PROGRESSING)
            set_condition(status, cond)
        elif deployment_timed_out(d, status, now):
            set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT,
                                                f"{what} has timed out progressing.", now))
    failure = replica_failure(all_rss, new_rs)
    if failure is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, REPLICA_FAILURE)


def recheck_progress_in(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus, now: float
                        ) -> float | None:
    """Seconds until the progress deadline would pass with no progress, so
    the controller looks again then (Kubernetes' requeueStuckDeployment)."""
    cond = get_condition(status, PROGRESSING)
    if not has_progress_deadline(d) or cond is None:
        return None
    if deployment_complete(d, status) or cond.reason == TIMED_OUT:
        return None
    since = timestamp_seconds(cond.last_update_time) or now
    return max(since + d.spec.progress_deadline_seconds - now, 0.0) + 0.1


def replica_sets_to_prune(old_rss: list, d: apps_pb2.Deployment) -> list:
    """Old RSs beyond revisionHistoryLimit, lowest revision first, that have
    no pods and whose status is current (Kubernetes' cleanupDeployment)."""
    if not d.spec.HasField("revision_history_limit"):
        return []
    alive = [rs for rs in old_rss if rs is not None and not rs.metadata.HasField("deletion_timestamp")]
    excess = len(alive) - d.spec.revision_history_limit
    if excess <= 0:
        return []
    return [rs for rs in by_revision(alive)[:excess]
            if rs.status.replicas == 0 and replicas_of(rs) == 0
            and rs.metadata.generation <= rs.status.observed_generation]


def old_pods_running(new_rs, old_rss: list, pods_by_rs_uid: dict[str, list]) -> bool:
    """Whether any pod of an old RS may still run (Recreate waits for none)."""
    if sum(rs.status.replicas for rs in old_rss) > 0:
        return True
    for uid, pods in pods_by_rs_uid.items():
        if new_rs is not None and uid == new_rs.metadata.uid:
            continue
        if any(p.status.phase not in ("Succeeded", "Failed") for p in pods):
            return True
    return False


class _HashCollision(Exception):
    """The new RS's name is taken by another RS: retry with collisionCount + 1."""


# ================================================================ controller


@register("deployment")
class DeploymentController(Controller):
    name = "deployment"
    workers = 5

    def setup(self) -> None:
        self.clock: Callable[[], float] = time.time
        self.deployments = self.informers.informer("deployments")
        self.replicasets = self.informers.informer("replicasets")
        self.pods = self.informers.informer("pods")
        ensure_indexes(self.deployments.store, BY_NAMESPACE)
        ensure_indexes(self.replicasets.store, BY_CONTROLLER_UID, ORPHANS_BY_NAMESPACE, BY_NAMESPACE)
        ensure_indexes(self.pods.store, BY_CONTROLLER_UID)
        self.watch(self.deployments)
        self.watch(self.replicasets, self._replica_set_keys)
        self.pods.add_handler(on_update=self._pod_updated, on_delete=self._pod_deleted)

    # ------------------------------------------------------------ events

    def _owner_deployment(self, obj) -> str | None:
        ref = controller_ref(obj)
        if ref is None or ref.kind != "Deployment":
            return None
        key = f"{obj.metadata.namespace}/{ref.name}"
        d = self.deployments.store.get(key)
        return key if d is not None and d.metadata.uid == ref.uid else None

    def _replica_set_keys(self, rs: apps_pb2.ReplicaSet) -> list[str]:
        if controller_ref(rs) is not None:
            key = self._owner_deployment(rs)
            return [key] if key else []
        # An orphan: every Deployment that could adopt it.
        return [key_of(d) for d in self.deployments.store.by_index(BY_NAMESPACE, rs.metadata.namespace)
                if matches(selector_of(d.spec.selector), rs)]

    def _recreate_key_of_pod(self, pod: core_pb2.Pod) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return None
        rs = self.replicasets.store.get(f"{pod.metadata.namespace}/{ref.name}")
        if rs is None:
            return None
        key = self._owner_deployment(rs)
        d = self.deployments.store.get(key) if key else None
        return key if d is not None and d.spec.strategy.type == "Recreate" else None

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        # Only a Recreate rollout waits for pods (for the old ones to be gone).
        key = self._recreate_key_of_pod(pod)
        if key:
            self.queue.add(key)

    def _pod_updated(self, old: core_pb2.Pod, cur: core_pb2.Pod) -> None:
        if cur.status.phase != old.status.phase and cur.status.phase in ("Succeeded", "Failed"):
            self._pod_deleted(cur)

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> float | None:
        cached = self.deployments.store.get(key)
        if cached is None:
            return None
        d = copy(cached)
        try:
            return await self._sync(d)
        except (ConflictError, _HashCollision) as e:
            log.debug("deployment %s: %s; retrying", key, e)
            return CONFLICT_RETRY

    async def _sync(self, d: apps_pb2.Deployment) -> float | None:
        selector = selector_of(d.spec.selector)
        if selector is None:
            # Validation forbids it; selecting every pod would be worse than doing nothing.
            await self.recorder.event(d, events.WARNING, "SelectingAll",
                                      "This deployment has an empty or invalid selector; it selects nothing")
            if d.status.observed_generation < d.metadata.generation:
                d.status.observed_generation = d.metadata.generation
                await self._write_status(d)
            return None
        rss = await self._claim_replica_sets(d, selector)
        if d.metadata.HasField("deletion_timestamp"):
            new_rs, old_rss = await self._new_and_old(d, rss, create=False)
            await self._sync_status(d, self._all(new_rs, old_rss), new_rs)
            return None
        await self._check_paused_conditions(d)
        if d.spec.paused:
            return await self._scale_only(d, rss)
        found = find_new_replica_set(d, rss)
        if is_scaling_event(d, found, [rs for rs in rss if rs is not found]):
            return await self._scale_only(d, rss)
        if d.spec.strategy.type == "Recreate":
            return await self._rollout_recreate(d, rss)
        return await self._rollout_rolling(d, rss)

    @staticmethod
    def _all(new_rs, old_rss: list) -> list:
        return list(old_rss) + ([new_rs] if new_rs is not None else [])

    # ------------------------------------------------------------ claiming

    async def _claim_replica_sets(self, d: apps_pb2.Deployment, selector) -> list:
        """Copies of the RSs the Deployment owns (adopting and releasing as needed)."""
        deleting = d.metadata.HasField("deletion_timestamp")
        claimed = []
        for rs in self.replicasets.store.by_index(BY_CONTROLLER_UID, d.metadata.uid):
            if rs.metadata.namespace != d.metadata.namespace:
                continue
            if matches(selector, rs):
                claimed.append(copy(rs))
            elif not deleting:
                released = copy(rs)
                kept = [r for r in released.metadata.owner_references if r.uid != d.metadata.uid]
                del released.metadata.owner_references[:]
                released.metadata.owner_references.extend(kept)
                await self._ignore_gone(self.client.update(released))
        if deleting:
            return claimed
        for rs in self.replicasets.store.by_index(ORPHANS_BY_NAMESPACE, d.metadata.namespace):
            if rs.metadata.HasField("deletion_timestamp") or not matches(selector, rs):
                continue
            adopted = copy(rs)
            adopted.metadata.owner_references.append(new_controller_ref(d, "apps/v1", "Deployment"))
            result = await self._ignore_gone(self.client.update(adopted))
            if result is not None:
                claimed.append(result)
        return claimed

    @staticmethod
    async def _ignore_gone(call):
        try:
            return await call
        except NotFoundError:
            return None

    # ------------------------------------------------------------ the new RS

    async def _new_and_old(self, d: apps_pb2.Deployment, rss: list, create: bool):
        """(new RS or None, old RSs), syncing revision annotations; with
        `create`, makes the new RS when there is none."""
        found = find_new_replica_set(d, rss)
        old_rss = [rs for rs in rss if rs is not found]
        new_rs = await self._new_replica_set(d, found, old_rss, create)
        return new_rs, old_rss

    async def _new_replica_set(self, d: apps_pb2.Deployment, existing, old_rss: list, create: bool):
        now = self.clock()
        revision = max_revision(old_rss) + 1
        if existing is not None:
            wanted = copy(existing)
            changed = set_new_replica_set_annotations(d, wanted, revision, exists=True)
            if changed or wanted.spec.min_ready_seconds != d.spec.min_ready_seconds:
                wanted.spec.min_ready_seconds = d.spec.min_ready_seconds
                existing.CopyFrom(await self.client.update(wanted))
            await self._set_revision(d, existing.metadata.annotations.get(REVISION, ""))
            if has_progress_deadline(d) and get_condition(d.status, PROGRESSING) is None:
                set_condition(d.status, new_condition(
                    PROGRESSING, "True", FOUND_NEW_RS, f'Found new replica set "{existing.metadata.name}"', now))
                await self._write_status(d)
            return existing
        if not create:
            return None

        rs = new_replica_set(d, old_rss, revision)
        name = rs.metadata.name
        already_existed = False
        try:
            created = await self.client.create(rs)
        except AlreadyExistsError:
            # Our own create the cache has not shown yet, or a hash collision.
            try:
                created = await self.client.get("replicasets", name, d.metadata.namespace)
            except NotFoundError:
                raise ConflictError(f"replica set {name} vanished; retrying") from None
            if not (is_controlled_by(created, d) and equal_ignore_hash(created.spec.template, d.spec.template)):
                d.status.collision_count = (d.status.collision_count if d.status.HasField(
                    "collision_count") else 0) + 1
                await self._write_status(d)
                raise _HashCollision(f"hash collision on replica set {name}; "
                                     f"collisionCount now {d.status.collision_count}") from None
            already_existed = True
        except ApiError as e:
            message = f'Failed to create new replica set "{name}": {e}'
            if has_progress_deadline(d):
                set_condition(d.status, new_condition(PROGRESSING, "False", FAILED_RS_CREATE, message, now))
                await self._write_status(d)
            await self.recorder.event(d, events.WARNING, FAILED_RS_CREATE, message)
            raise
        if not already_existed and replicas_of(created) > 0:
            await self.recorder.event(d, events.NORMAL, events.SCALING_REPLICA_SET,
                                      f"Scaled up replica set {name} to {replicas_of(created)}")
        await self._set_revision(d, str(revision))
        if not already_existed and has_progress_deadline(d):
            set_condition(d.status, new_condition(PROGRESSING, "True", NEW_RS_CREATED,
                                                  f'Created new replica set "{name}"', now))
            await self._write_status(d)
        return created

    async def _set_revision(self, d: apps_pb2.Deployment, revision: str) -> None:
        """Carry the new RS's revision on the Deployment too."""
        if not revision or d.metadata.annotations.get(REVISION) == revision:
            return
        d.metadata.annotations[REVISION] = revision
        updated = await self.client.update(d)
        d.metadata.resource_version = updated.metadata.resource_version

    async def _write_status(self, d: apps_pb2.Deployment) -> None:
        updated = await self.client.update_status(d)
        d.metadata.resource_version = updated.metadata.resource_version

    # ------------------------------------------------------------ scaling

    async def _scale(self, rs, size: int, d: apps_pb2.Deployment) -> bool:
        """Set the RS's size (and replica annotations); True when the size changed."""
        desired, most = replicas_of(d), replicas_of(d) + max_surge(d)
        size_changed = replicas_of(rs) != size
        if not size_changed and not replicas_annotations_need_update(rs, desired, most):
            return False
        before = replicas_of(rs)
        wanted = copy(rs)
        wanted.spec.replicas = size
        set_replicas_annotations(wanted, desired, most)
        rs.CopyFrom(await self.client.update(wanted))
        if size_changed:
            direction = "up" if size > before else "down"
            await self.recorder.event(d, events.NORMAL, events.SCALING_REPLICA_SET,
                                      f"Scaled {direction} replica set {rs.metadata.name} to {size}")
        return size_changed

    async def _scale_only(self, d: apps_pb2.Deployment, rss: list) -> float | None:
        """Paused, or spec.replicas changed: resize (proportionally), nothing else."""
        new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        for rs, size in scale_plan(d, new_rs, old_rss):
            await self._scale(rs, size, d)
        if d.spec.paused:
            await self._cleanup(old_rss, d)
        await self._sync_status(d, self._all(new_rs, old_rss), new_rs)
        return None

    async def _cleanup(self, old_rss: list, d: apps_pb2.Deployment) -> None:
        for rs in replica_sets_to_prune(old_rss, d):
            log.info("deployment %s: deleting old replica set %s (revision %d)", key_of(d),
                     rs.metadata.name, revision_of(rs))
            try:
                await self.client.delete("replicasets", rs.metadata.name, rs.metadata.namespace,
                                         uid=rs.metadata.uid)
            except (NotFoundError, ConflictError):
                pass

    # ------------------------------------------------------------ strategies

    async def _rollout_rolling(self, d: apps_pb2.Deployment, rss: list) -> float | None:
        new_rs, old_rss = await self._new_and_old(d, rss, create=True)
        all_rss = self._all(new_rs, old_rss)
        # Scale up the new RS first; if it moved, the next event continues.
        if replicas_of(new_rs) != replicas_of(d):
            target = (replicas_of(d) if replicas_of(new_rs) > replicas_of(d)
                      else new_rs_new_replicas(d, all_rss, new_rs))
            if await self._scale(new_rs, target, d):
                return await self._sync_rollout_status(d, all_rss, new_rs)
        plan = old_replica_sets_scale_down(all_rss, active(old_rss), new_rs, d)
        scaled = False
        for rs in by_creation(old_rss):
            if rs.metadata.name in plan:
                scaled |= await self._scale(rs, plan[rs.metadata.name], d)
        if scaled:
            return await self._sync_rollout_status(d, all_rss, new_rs)
        if deployment_complete(d, d.status):
            await self._cleanup(old_rss, d)
        return await self._sync_rollout_status(d, all_rss, new_rs)

    async def _rollout_recreate(self, d: apps_pb2.Deployment, rss: list) -> float | None:
        # No new RS yet: scaling it up before the old pods are gone is what Recreate forbids.
        new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        scaled = False
        for rs in active(old_rss):
            scaled |= await self._scale(rs, 0, d)
        if scaled:
            return await self._sync_rollout_status(d, self._all(new_rs, old_rss), new_rs)
        pods = {rs.metadata.uid: self.pods.store.by_index(BY_CONTROLLER_UID, rs.metadata.uid)
                for rs in rss}
        if old_pods_running(new_rs, old_rss, pods):
            return await self._sync_rollout_status(d, self._all(new_rs, old_rss), new_rs)
        if new_rs is None:
            new_rs, old_rss = await self._new_and_old(d, rss, create=True)
        await self._scale(new_rs, replicas_of(d), d)
        if deployment_complete(d, d.status):
            await self._cleanup(old_rss, d)
        return await self._sync_rollout_status(d, self._all(new_rs, old_rss), new_rs)

    # ------------------------------------------------------------ status

    async def _check_paused_conditions(self, d: apps_pb2.Deployment) -> None:
        if not has_progress_deadline(d):
            return
        cond = get_condition(d.status, PROGRESSING)
        if cond is not None and cond.reason == TIMED_OUT:
            return  # a reported failure is not overwritten by pause / resume
        paused_shown = cond is not None and cond.reason == PAUSED
        now = self.clock()
        if d.spec.paused and not paused_shown:
            set_condition(d.status, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now))
        elif not d.spec.paused and paused_shown:
            set_condition(d.status, new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now))
        else:
            return
        await self._write_status(d)

    async def _sync_status(self, d: apps_pb2.Deployment, all_rss: list, new_rs) -> None:
        status = calculate_status(all_rss, new_rs, d, self.clock())
        if status != d.status:
            d.status.CopyFrom(status)
            await self._write_status(d)

    async def _sync_rollout_status(self, d: apps_pb2.Deployment, all_rss: list, new_rs) -> float | None:
        now = self.clock()
        status = calculate_status(all_rss, new_rs, d, now)
        update_progress(d, status, new_rs, all_rss, now)
        if status != d.status:
            d.status.CopyFrom(status)
            await self._write_status(d)
        return recheck_progress_in(d, status, now)


__all__ = ["DeploymentController", "calculate_status", "find_new_replica_set", "max_surge",
           "max_unavailable", "new_replica_set", "new_rs_new_replicas", "old_replica_sets_scale_down",
           "replica_sets_to_prune", "scale_plan", "set_new_replica_set_annotations", "update_progress"]
