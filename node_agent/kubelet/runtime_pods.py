"""What the container runtime holds for each pod, read through CRI.

The node agent keeps no authoritative record of its own: every sandbox and
container it makes carries the pod's identity in CRI labels (the same keys
Kubernetes' kubelet uses), and its restart count in the container's
metadata attempt. After a restart of the node agent, listing the runtime by
these labels finds every pod's sandbox and containers again, so nothing is
recreated (adoption), and sandboxes whose pod is gone are found as orphans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubeling.cri.v1 import api_pb2
from node_agent.kubelet.cri_client import CriNotFound, RuntimeClient

# Labels on sandboxes and containers (Kubernetes' names).
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
# kubeling's own: init or app container ("init" / "app").
CONTAINER_KIND = "io.kubeling.container.kind"
# Annotations on containers.
CONTAINER_HASH = "io.kubernetes.container.hash"
RESTART_COUNT = "io.kubernetes.container.restartCount"
TERMINATION_GRACE = "io.kubernetes.pod.terminationGracePeriod"
TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"

RUNNING = "running"
CREATED = "created"
EXITED = "exited"
UNKNOWN = "unknown"
_STATES = {api_pb2.CONTAINER_CREATED: CREATED, api_pb2.CONTAINER_RUNNING: RUNNING,
           api_pb2.CONTAINER_EXITED: EXITED, api_pb2.CONTAINER_UNKNOWN: UNKNOWN}


@dataclass
class RuntimeSandbox:
    id: str
    attempt: int
    ready: bool
    created_at: int          # ns since the epoch
    ip: str = ""             # as the runtime reports it ("" when the runtime did no networking)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RuntimeContainer:
    """One container as ContainerStatus reports it."""

    id: str
    name: str
    sandbox_id: str
    attempt: int
    state: str               # RUNNING / CREATED / EXITED / UNKNOWN
    created_at: int = 0      # ns since the epoch
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image: str = ""          # as requested
    image_ref: str = ""      # the image's id or digest
    log_path: str = ""
    kind: str = "app"        # "init" or "app"
    hash: str = ""
    grace: int | None = None  # the pod's termination grace when the container was made

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def exited(self) -> bool:
        return self.state in (EXITED, UNKNOWN)


@dataclass
class RuntimePod:
    """A pod's sandboxes (newest first) and containers (newest first)."""

    uid: str
    namespace: str = ""
    name: str = ""
    sandboxes: list[RuntimeSandbox] = field(default_factory=list)
    containers: list[RuntimeContainer] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.sandboxes and not self.containers

    def ready_sandbox(self) -> RuntimeSandbox | None:
        """The newest sandbox, if it is ready (an older ready one is stale)."""
        if self.sandboxes and self.sandboxes[0].ready:
            return self.sandboxes[0]
        return None

    def of(self, name: str, kind: str | None = None) -> list[RuntimeContainer]:
        """Containers with this name, newest first."""
        return [c for c in self.containers if c.name == name and (kind is None or c.kind == kind)]

    def latest(self, name: str, kind: str | None = None) -> RuntimeContainer | None:
        found = self.of(name, kind)
        return found[0] if found else None

    def running(self) -> list[RuntimeContainer]:
        return [c for c in self.containers if c.state in (RUNNING, CREATED)]


def container_from_status(st: api_pb2.ContainerStatus, sandbox_id: str) -> RuntimeContainer:
    labels, ann = st.labels, st.annotations
    grace = ann.get(TERMINATION_GRACE)
    return RuntimeContainer(
        id=st.id, name=labels.get(CONTAINER_NAME, st.metadata.name), sandbox_id=sandbox_id,
        attempt=st.metadata.attempt, state=_STATES.get(st.state, UNKNOWN), created_at=st.created_at,
        started_at=st.started_at, finished_at=st.finished_at, exit_code=st.exit_code, reason=st.reason,
        message=st.message, image=st.image.image, image_ref=st.image_ref or st.image_id,
        log_path=st.log_path, kind=labels.get(CONTAINER_KIND, "app"), hash=ann.get(CONTAINER_HASH, ""),
        grace=int(grace) if grace and grace.isdigit() else None)


async def read_pod(runtime: RuntimeClient, uid: str) -> RuntimePod:
    """The runtime's view of one pod, with a ContainerStatus for each container."""
    sandboxes = await runtime.list_pod_sandbox({POD_UID: uid})
    if sandboxes:
        # By sandbox: a runtime can answer that without looking at every
        # container's labels (kubeling's decodes each container's config).
        containers = []
        for s in sandboxes:
            containers += [c for c in await runtime.list_containers(sandbox_id=s.id)
                           if c.labels.get(POD_UID) == uid]
    else:
        containers = await runtime.list_containers({POD_UID: uid})
    pod = RuntimePod(uid)
    for s in sorted(sandboxes, key=lambda s: (s.metadata.attempt, s.created_at), reverse=True):
        pod.namespace = pod.namespace or s.labels.get(POD_NAMESPACE, s.metadata.namespace)
        pod.name = pod.name or s.labels.get(POD_NAME, s.metadata.name)
        pod.sandboxes.append(RuntimeSandbox(s.id, s.metadata.attempt, s.state == api_pb2.SANDBOX_READY,
                                            s.created_at, labels=dict(s.labels)))
    for c in containers:
        try:
            st = (await runtime.container_status(c.id)).status
        except CriNotFound:
            continue  # removed meanwhile
        pod.namespace = pod.namespace or c.labels.get(POD_NAMESPACE, "")
        pod.name = pod.name or c.labels.get(POD_NAME, "")
        pod.containers.append(container_from_status(st, c.pod_sandbox_id))
    pod.containers.sort(key=lambda c: (c.attempt, c.created_at), reverse=True)
    return pod

