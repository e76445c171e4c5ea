"""A pod's status, computed from its spec and what the runtime reports, as
the kubelet computes it (pure: no I/O; tests call `pod_status` directly).

Per container (newest runtime container of that name first):
- none yet: waiting, with the reason of the last failed attempt to make it
  (ErrImagePull, ImagePullBackOff, CreateContainerConfigError, ...) or
  ContainerCreating (PodInitializing while init containers run);
- running: running since startedAt; ready when started and its readiness
  probe (if any) passes; `started` once its startup probe (if any) passed;
- exited: terminated (exit code, reason, times), unless it waits to be
  restarted for a reason (CrashLoopBackOff...), then waiting with the
  terminated state as lastState;
- restartCount is the newest container's attempt; lastState is the previous
  container's end.

Phase (Kubernetes' getPhase): Pending while any container has never run
or init containers are unfinished; Running while any runs (or all have
stopped and will be restarted); Succeeded when all stopped with 0 and will
not be restarted; Failed when all stopped, at least one failed, and
restartPolicy is Never (a failed init container under Never fails the pod
too). A pod that reached Succeeded or Failed stays there.

Conditions PodScheduled, Initialized, ContainersReady and Ready keep their
lastTransitionTime while their status does not change; times have whole
seconds, as in Kubernetes' API. Conditions of other types, written by
others, are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kubeling.api.v1 import core_pb2
from node_agent.kubelet.runtime_pods import CREATED, RUNNING, RuntimeContainer, RuntimePod

PENDING, RUNNING_PHASE, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)
OWN_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")

# Waiting reasons.
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"


def timestamp(ns: int) -> Timestamp:
    """Whole seconds, as the API shows times."""
    return Timestamp(seconds=ns // 1_000_000_000)


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure":
        return exit_code != 0
    return True


@dataclass
class StatusInputs:
    """Everything but the pod that status depends on."""

    runtime: RuntimePod
    pod_ip: str = ""
    host_ip: str = ""
    now_ns: int = 0
    runtime_name: str = "kubeling"
    # container name -> (reason, message) of the last failed attempt to make or restart it
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    ready: Callable[[str], bool] = lambda container_id: True
    started: Callable[[str], bool] = lambda container_id: True
    # (phase, reason, message) the node agent decided on (activeDeadlineSeconds passed)
    override: tuple[str, str, str] | None = None


def _terminated(c: RuntimeContainer, runtime_name: str) -> core_pb2.ContainerStateTerminated:
    t = core_pb2.ContainerStateTerminated(exit_code=c.exit_code, reason=c.reason or (
        "Completed" if c.exit_code == 0 else "Error"), message=c.message,
        container_id=f"{runtime_name}://{c.id}")
    if c.started_at:
        t.started_at.CopyFrom(timestamp(c.started_at))
    if c.finished_at:
        t.finished_at.CopyFrom(timestamp(c.finished_at))
    return t


def container_status(spec: Message, kind: str, inputs: StatusInputs,
                     default_waiting: str = CONTAINER_CREATING) -> core_pb2.ContainerStatus:
    """The status of one container of the spec (kind "app" or "init")."""
    rp, runtime_name = inputs.runtime, inputs.runtime_name
    cs = core_pb2.ContainerStatus(name=spec.name, image=spec.image, ready=False)
    history = rp.of(spec.name, kind)
    waiting = inputs.waiting.get(spec.name)
    if not history:
        reason, message = waiting or (default_waiting, "")
        cs.state.waiting.reason, cs.state.waiting.message = reason, message
        cs.started = False
        return cs
    latest = history[0]
    cs.container_id = f"{runtime_name}://{latest.id}"
    cs.image_id = latest.image_ref
    cs.restart_count = latest.attempt
    previous = history[1] if len(history) > 1 else None
    if latest.state == RUNNING:
        cs.state.running.started_at.CopyFrom(timestamp(latest.started_at or latest.created_at))
        cs.started = inputs.started(latest.id)
        cs.ready = cs.started and inputs.ready(latest.id)
        if previous is not None and previous.exited:
            cs.last_state.terminated.CopyFrom(_terminated(previous, runtime_name))
    elif latest.state == CREATED:
        reason, message = waiting or (CONTAINER_CREATING, "")
        cs.state.waiting.reason, cs.state.waiting.message = reason, message
        cs.started = False
        if previous is not None and previous.exited:
            cs.last_state.terminated.CopyFrom(_terminated(previous, runtime_name))
    else:
        cs.started = False
        if waiting:
            cs.state.waiting.reason, cs.state.waiting.message = waiting
            cs.last_state.terminated.CopyFrom(_terminated(latest, runtime_name))
        else:
            cs.state.terminated.CopyFrom(_terminated(latest, runtime_name))
            if previous is not None and previous.exited:
                cs.last_state.terminated.CopyFrom(_terminated(previous, runtime_name))
            # A finished init container counts as ready, as in Kubernetes.
            cs.ready = kind == "init" and latest.exit_code == 0
    return cs


def init_progress(pod: Message, rp: RuntimePod) -> tuple[bool, list[str], bool]:
    """(all init containers succeeded, names not yet done, one failed for good)."""
    pending, failed = [], False
    for c in pod.spec.init_containers:
        latest = rp.latest(c.name, "init")
        if latest is not None and latest.exited and latest.exit_code == 0:
            continue
        pending.append(c.name)
        if latest is not None and latest.exited and not should_restart(pod.spec.restart_policy, latest.exit_code):
            failed = True
    return not pending, pending, failed


def phase(pod: Message, statuses: list[core_pb2.ContainerStatus], initialized: bool,
          init_failed: bool) -> str:
    """Kubernetes' getPhase over the app containers' statuses."""
    if pod.status.phase in TERMINAL:
        return pod.status.phase
    if init_failed:
        return FAILED
    if not initialized:
        return PENDING
    pending = running = stopped = succeeded = unknown = 0
    for cs in statuses:
        st = cs.state
        if st.HasField("running"):
            running += 1
        elif st.HasField("terminated"):
            stopped += 1
            if st.terminated.exit_code == 0:
                succeeded += 1
        elif st.HasField("waiting"):
            if cs.last_state.HasField("terminated"):
                stopped += 1
                if cs.last_state.terminated.exit_code == 0:
                    succeeded += 1
            else:
                pending += 1
        else:
            unknown += 1
    policy = pod.spec.restart_policy or "Always"
    if pending > 0:
        return PENDING
    if running > 0 and unknown == 0:
        return RUNNING_PHASE
    if running == 0 and stopped > 0 and unknown == 0:
        if policy == "Always":
            return RUNNING_PHASE
        if stopped == succeeded:
            return SUCCEEDED
        if policy == "Never":
            return FAILED
        return RUNNING_PHASE
    return PENDING


def _condition(old: dict[str, Message], type_: str, status: str, now: Timestamp,
               reason: str = "", message: str = "") -> core_pb2.PodCondition:
    cond = core_pb2.PodCondition(type=type_, status=status, reason=reason, message=message)
    prev = old.get(type_)
    if prev is not None and prev.status == status and prev.HasField("last_transition_time"):
        cond.last_transition_time.CopyFrom(prev.last_transition_time)
    else:
        cond.last_transition_time.CopyFrom(now)
    if prev is not None and prev.HasField("last_probe_time"):
        cond.last_probe_time.CopyFrom(prev.last_probe_time)
    return cond


def pod_status(pod: Message, inputs: StatusInputs) -> core_pb2.PodStatus:
    """The status the node agent would write for `pod` now."""
    old = pod.status
    now = timestamp(inputs.now_ns)
    status = core_pb2.PodStatus()
    status.qos_class = old.qos_class
    status.reason, status.message = old.reason, old.message
    initialized, not_done, init_failed = init_progress(pod, inputs.runtime)

    for c in pod.spec.init_containers:
        status.init_container_statuses.append(container_status(c, "init", inputs, PENDING_INIT_REASON))
    default_app_waiting = CONTAINER_CREATING if initialized else POD_INITIALIZING
    for c in pod.spec.containers:
        status.container_statuses.append(container_status(c, "app", inputs, default_app_waiting))

    status.phase = phase(pod, list(status.container_statuses), initialized, init_failed)
    if inputs.override is not None and status.phase not in TERMINAL:
        status.phase, status.reason, status.message = inputs.override
    terminal = status.phase in TERMINAL
    if terminal:
        for cs in status.container_statuses:
            cs.ready = False

    status.host_ip = inputs.host_ip
    if inputs.host_ip:
        status.host_ips.add(ip=inputs.host_ip)
    status.pod_ip = inputs.pod_ip
    if inputs.pod_ip:
        status.pod_ips.add(ip=inputs.pod_ip)
    if old.HasField("start_time"):
        status.start_time.CopyFrom(old.start_time)
    else:
        status.start_time.CopyFrom(now)

    conds = {c.type: c for c in old.conditions}
    scheduled = conds.get("PodScheduled")
    if scheduled is not None:
        status.conditions.append(scheduled)
    else:
        status.conditions.append(_condition(conds, "PodScheduled", "True", now))
    if initialized:
        status.conditions.append(_condition(conds, "Initialized", "True", now))
    else:
        status.conditions.append(_condition(
            conds, "Initialized", "False", now, "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(not_done)}]"))
    unready = [cs.name for cs in status.container_statuses if not cs.ready]
    if terminal:
        ready_args = ("False", "PodCompleted", "")
    elif unready:
        ready_args = ("False", "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
    else:
        ready_args = ("True", "", "")
    status.conditions.append(_condition(conds, "ContainersReady", *_args(now, ready_args)))
    status.conditions.append(_condition(conds, "Ready", *_args(now, ready_args)))
    for c in old.conditions:
        if c.type not in OWN_CONDITIONS:
            status.conditions.append(c)
    return status


PENDING_INIT_REASON = POD_INITIALIZING


def _args(now: Timestamp, a: tuple[str, str, str]) -> tuple:
    status, reason, message = a
    return status, now, reason, message


def status_differs(old: Message, new: Message) -> bool:
    return old != new
