"""Pod status as the node agent computes it (node_agent/kubelet/status.py)."""

from __future__ import annotations

import pytest

from kubeling.objects import from_dict
from node_agent.kubelet import status as st
from node_agent.kubelet.runtime_pods import CREATED, EXITED, RUNNING, RuntimeContainer, RuntimePod, RuntimeSandbox

NOW = 1_700_000_000 * 10**9
S = 10**9


def make_pod(*names: str, policy: str = "Always", init: tuple[str, ...] = (), status: dict | None = None):
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
           "spec": {"nodeName": "n1", "restartPolicy": policy,
                    "containers": [{"name": n, "image": "img"} for n in names],
                    "initContainers": [{"name": n, "image": "img"} for n in init]}}
    if status:
        doc["status"] = status
    return from_dict(doc)


def c(name: str, state: str = RUNNING, attempt: int = 0, exit_code: int = 0, kind: str = "app",
      started: int = NOW - 10 * S, finished: int = 0) -> RuntimeContainer:
    return RuntimeContainer(id=f"{name}-{attempt}-{kind}", name=name, sandbox_id="s1", attempt=attempt,
                            state=state, created_at=started - S, started_at=started if state != CREATED else 0,
                            finished_at=finished or (started + S if state == EXITED else 0),
                            exit_code=exit_code, reason="" if state != EXITED else
                            ("Completed" if exit_code == 0 else "Error"), image_ref="sha256:abc", kind=kind)


def runtime(*containers: RuntimeContainer) -> RuntimePod:
    rp = RuntimePod("u1", "ns", "p", sandboxes=[RuntimeSandbox("s1", 0, True, NOW)])
    rp.containers = sorted(containers, key=lambda x: x.attempt, reverse=True)
    return rp


def compute(pod, rp, waiting=None, ready=lambda cid: True, started=lambda cid: True):
    return st.pod_status(pod, st.StatusInputs(rp, pod_ip="10.0.0.5", host_ip="192.0.2.1", now_ns=NOW,
                                              waiting=waiting or {}, ready=ready, started=started))


# -- phase ---------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, containers, waiting, phase", [
    ("Always", [], {}, "Pending"),
    ("Always", [c("a")], {}, "Running"),
    ("Always", [c("a", EXITED, exit_code=1)], {"a": ("CrashLoopBackOff", "")}, "Running"),
    ("Always", [c("a", EXITED, exit_code=0)], {}, "Running"),
    ("Never", [c("a", EXITED, exit_code=0)], {}, "Succeeded"),
    ("Never", [c("a", EXITED, exit_code=2)], {}, "Failed"),
    ("OnFailure", [c("a", EXITED, exit_code=0)], {}, "Succeeded"),
    ("OnFailure", [c("a", EXITED, exit_code=1)], {}, "Running"),
    ("Always", [c("a", CREATED)], {}, "Pending"),
], ids=["nothing-yet", "running", "crash-looping", "always-restarts-success", "never-succeeded",
        "never-failed", "onfailure-succeeded", "onfailure-retrying", "created-not-started"])
def test_phase_of_one_container_pods(policy, containers, waiting, phase):
    pod = make_pod("a", policy=policy)
    assert compute(pod, runtime(*containers), waiting).phase == phase


@pytest.mark.parametrize("containers, phase", [
    ([c("a"), c("b", EXITED, exit_code=0)], "Running"),
    ([c("a", EXITED, exit_code=0), c("b", EXITED, exit_code=3)], "Failed"),
    ([c("a", EXITED, exit_code=0), c("b", EXITED, exit_code=0)], "Succeeded"),
    ([c("a")], "Pending"),  # b not made yet
], ids=["one-still-running", "one-failed", "all-succeeded", "one-missing"])
def test_phase_of_two_container_pods_under_never(containers, phase):
    assert compute(make_pod("a", "b", policy="Never"), runtime(*containers)).phase == phase


def test_a_finished_pod_stays_finished():
    pod = make_pod("a", policy="Never", status={"phase": "Succeeded"})
    assert compute(pod, runtime(c("a"))).phase == "Succeeded"


# -- containers ----------------------------------------------------------------------------

def test_a_running_container_reports_start_ready_and_ids():
    status = compute(make_pod("a"), runtime(c("a", attempt=2), c("a", EXITED, attempt=1, exit_code=137)))
    cs = status.container_statuses[0]
    assert cs.state.running.started_at.seconds == (NOW - 10 * S) // S
    assert (cs.ready, cs.started, cs.restart_count) == (True, True, 2)
    assert cs.container_id == "kubeling://a-2-app" and cs.image_id == "sha256:abc"
    assert cs.last_state.terminated.exit_code == 137
    assert cs.last_state.terminated.container_id == "kubeling://a-1-app"


@pytest.mark.parametrize("ready, started, expect_ready, expect_started", [
    (True, True, True, True), (False, True, False, True), (True, False, False, False)],
    ids=["ready", "readiness-failing", "not-started"])
def test_readiness_needs_the_startup_probe_to_have_passed(ready, started, expect_ready, expect_started):
    status = compute(make_pod("a"), runtime(c("a")), ready=lambda _: ready, started=lambda _: started)
    cs = status.container_statuses[0]
    assert (cs.ready, cs.started) == (expect_ready, expect_started)
    assert status.conditions[3].type == "Ready"
    assert status.conditions[3].status == ("True" if expect_ready else "False")


@pytest.mark.parametrize("containers, waiting, reason", [
    ([], {}, "ContainerCreating"),
    ([], {"a": ("ErrImagePull", "no such image")}, "ErrImagePull"),
    ([], {"a": ("CreateContainerConfigError", 'configmap "x" not found')}, "CreateContainerConfigError"),
    ([c("a", EXITED, exit_code=1)], {"a": ("CrashLoopBackOff", "back-off 10s")}, "CrashLoopBackOff"),
], ids=["creating", "image", "config", "crash-loop"])
def test_waiting_reasons(containers, waiting, reason):
    cs = compute(make_pod("a"), runtime(*containers), waiting).container_statuses[0]
    assert cs.state.waiting.reason == reason
    assert cs.state.waiting.message == waiting.get("a", ("", ""))[1]
    assert not cs.ready
    if containers:
        assert cs.last_state.terminated.exit_code == 1


def test_an_exited_container_that_stays_down_is_terminated():
    cs = compute(make_pod("a", policy="Never"), runtime(c("a", EXITED, exit_code=3))).container_statuses[0]
    t = cs.state.terminated
    assert (t.exit_code, t.reason, t.container_id) == (3, "Error", "kubeling://a-0-app")
    assert t.finished_at.seconds >= t.started_at.seconds


# -- conditions and addresses ----------------------------------------------------------------

def test_conditions_keep_their_transition_time_while_unchanged():
    old = {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2023-01-01T00:00:00Z"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2023-01-01T00:00:05Z"},
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": "2023-01-01T00:00:05Z"},
        {"type": "example.com/gate", "status": "True"}]}
    status = compute(make_pod("a", status=old), runtime(c("a")))
    conds = {x.type: x for x in status.conditions}
    assert list(conds) == ["PodScheduled", "Initialized", "ContainersReady", "Ready", "example.com/gate"]
    assert conds["Ready"].last_transition_time.ToJsonString() == "2023-01-01T00:00:05Z"
    assert conds["ContainersReady"].last_transition_time.seconds == NOW // S  # it changed
    assert conds["PodScheduled"].last_transition_time.ToJsonString() == "2023-01-01T00:00:00Z"


def test_unready_containers_are_named_in_the_ready_condition():
    status = compute(make_pod("a", "b"), runtime(c("a"), c("b")), ready=lambda cid: cid.startswith("a"))
    ready = next(x for x in status.conditions if x.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == (
        "False", "ContainersNotReady", "containers with unready status: [b]")


def test_addresses_and_start_time():
    status = compute(make_pod("a"), runtime(c("a")))
    assert (status.pod_ip, [i.ip for i in status.pod_ips]) == ("10.0.0.5", ["10.0.0.5"])
    assert (status.host_ip, [i.ip for i in status.host_ips]) == ("192.0.2.1", ["192.0.2.1"])
    assert status.start_time.seconds == NOW // S


def test_the_same_inputs_give_the_same_status():
    pod = make_pod("a")
    first = compute(pod, runtime(c("a")))
    pod.status.CopyFrom(first)
    assert compute(pod, runtime(c("a"))) == first  # so nothing is written again


# -- init containers --------------------------------------------------------------------------

@pytest.mark.parametrize("policy, inits, phase, initialized, app_reason", [
    ("Always", [], "Pending", "False", "PodInitializing"),
    ("Always", [c("i1", kind="init")], "Pending", "False", "PodInitializing"),
    ("Always", [c("i1", EXITED, kind="init")], "Pending", "True", "ContainerCreating"),
    ("Never", [c("i1", EXITED, exit_code=1, kind="init")], "Failed", "False", "PodInitializing"),
    ("Always", [c("i1", EXITED, exit_code=1, kind="init")], "Pending", "False", "PodInitializing"),
], ids=["not-started", "running", "done", "failed-for-good", "failed-will-retry"])
def test_init_containers_gate_the_app(policy, inits, phase, initialized, app_reason):
    pod = make_pod("a", init=("i1",), policy=policy)
    status = compute(pod, runtime(*inits))
    assert status.phase == phase
    assert next(x.status for x in status.conditions if x.type == "Initialized") == initialized
    assert status.container_statuses[0].state.waiting.reason == app_reason


def test_a_phase_decided_by_the_agent_wins_until_the_pod_is_finished():
    pod = make_pod("a")
    inputs = st.StatusInputs(runtime(c("a", EXITED, exit_code=137)), now_ns=NOW,
                             override=("Failed", "DeadlineExceeded", "too long"))
    status = st.pod_status(pod, inputs)
    assert (status.phase, status.reason, status.message) == ("Failed", "DeadlineExceeded", "too long")
    assert next(x for x in status.conditions if x.type == "Ready").reason == "PodCompleted"
