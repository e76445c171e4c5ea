"""The per-pod sync: one level-triggered, idempotent pass that drives a pod
bound to this node toward its spec, and reports its status.

`sync(pod)` for a pod that exists and is not being deleted:

1. A pod that is finished (phase Succeeded / Failed, or every container
   exited with nothing to restart) only has its status written and its
   sandbox stopped (network released); its containers stay for logs until
   the pod is deleted. A pod past its activeDeadlineSeconds is stopped and
   fails (reason DeadlineExceeded).
2. Volumes are made or refreshed (ConfigMap / Secret contents).
3. The sandbox: the newest ready one is used; when there is none, a new
   one is made (attempt + 1), with the pod's network: the runtime's, or
   else the network service's Add on the sandbox's network namespace.
4. Init containers run one at a time, in order, each to success.
5. Each app container, in order: a missing one is created and started
   (image per pull policy, env, mounts); a running one whose liveness or
   startup probe failed, or whose spec changed, is killed; an exited one is
   restarted when the restart policy says so, after its CrashLoopBackOff
   (10 s doubling to 5 min) -- the previous container is kept (for
   `logs --previous` and lastState), older ones removed.
6. The status is computed (status.py) and written only when it changed.

Every step first looks at what the runtime already has (found by CRI
labels), so running the sync again, or after the node agent restarted,
changes nothing that is already right: running containers are adopted,
never recreated. Failures are reported as the container's waiting reason
and an Event, and the pod is synced again later (`SyncResult.requeue`).

`terminate(pod)` (deletionTimestamp set) stops the containers within the
grace period, tears the sandbox down and makes the final delete;
`cleanup(uid)` removes what is left of a pod the API server no longer has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from google.protobuf.message import Message

from kubeling.api.v1 import core_pb2
from kubeling.client import events as ev
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ConflictError, NotFoundError
from node_agent.kubelet import container_env, cri_config
from node_agent.kubelet import status as st
from node_agent.kubelet import volumes as vol
from node_agent.kubelet.backoff import Backoff
from node_agent.kubelet.cri_client import CriError, CriNotFound, RuntimeClient
from node_agent.kubelet.image_manager import ImageManager
from node_agent.kubelet.network_client import NetworkClient, NetworkError
from node_agent.kubelet.pod_state import ContainerHistory, ContainerRecord, PodRecord, PodStateStore
from node_agent.kubelet.probes import READINESS, STARTUP, SUCCESS, ProbeManager, ProbeTarget
from node_agent.kubelet.runtime_pods import CREATED, RuntimeContainer, RuntimePod, RuntimeSandbox, read_pod
from node_agent.kubelet.termination import PodKiller, deletion_grace, spec_grace

log = logging.getLogger(__name__)

EventFn = Callable[[Message, str, str, str], Awaitable[None]]

FAILED_MOUNT = "FailedMount"
FAILED_CREATE_POD_SANDBOX = "FailedCreatePodSandBox"
SANDBOX_CHANGED = "SandboxChanged"
CONFIG_RETRY = 2.0  # seconds before a config error (missing ConfigMap key...) is retried


@dataclass
class SyncSettings:
    node_name: str
    node_ip: str
    cgroup_root: str = ""
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    sync_frequency: float = 10.0
    memory_capacity: int = 0
    allocatable: dict[str, str] = field(default_factory=dict)


@dataclass
class _Pass:
    """What one sync learnt: waiting reasons, and when to look again."""

    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    requeue: float | None = None
    override: tuple[str, str, str] | None = None  # a phase decided here (deadline exceeded)

    def again_in(self, seconds: float) -> None:
        seconds = max(0.05, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)


class PodSyncer:
    def __init__(self, settings: SyncSettings, client: ApiClient, runtime: RuntimeClient,
                 network: NetworkClient | None, volumes: vol.VolumeManager, states: PodStateStore,
                 probes: ProbeManager, images: ImageManager, killer: PodKiller, event: EventFn,
                 crash_backoff: Backoff, runtime_name: Callable[[], str]):
        self.s = settings
        self.client = client
        self.runtime = runtime
        self.network = network
        self.volumes = volumes
        self.states = states
        self.probes = probes
        self.images = images
        self.killer = killer
        self.event = event
        self.crash_backoff = crash_backoff
        self.runtime_name = runtime_name
        self._restored_backoff: set[str] = set()
        self._start_failed: set[str] = set()  # created containers whose start failed
        # uid -> (status we last wrote, resourceVersion the write returned)
        self._written: dict[str, tuple[core_pb2.PodStatus, int]] = {}

    # ================================================================ alive pods

    async def sync(self, pod: Message) -> float | None:
        """One pass for a pod that exists and is not being deleted; returns
        seconds until it should be synced again (None: only on events)."""
        uid = pod.metadata.uid
        rec = self.states.get_or_create(uid, pod.metadata.namespace, pod.metadata.name)
        self._restore_backoff(rec)
        rp = await read_pod(self.runtime, uid)
        p = _Pass()

        if pod.status.phase in st.TERMINAL or self._finished(pod, rp):
            await self._write_status(pod, rp, rec, p)
            if any(s.ready for s in rp.sandboxes):
                self.probes.remove_pod(uid)
                await self.killer.kill_pod(pod, rp, 0, self._specs(pod))
            return None

        left = deadline_left(pod, time.time())
        if left is not None and left <= 0:
            # activeDeadlineSeconds passed: the pod fails, its containers are stopped.
            p.override = (st.FAILED, "DeadlineExceeded",
                          "Pod was active on the node longer than the specified deadline")
            await self.event(pod, ev.NORMAL, "DeadlineExceeded", p.override[2])
            self.probes.remove_pod(uid)
            await self.killer.kill_pod(pod, rp, spec_grace(pod), self._specs(pod))
            await self._write_status(pod, await read_pod(self.runtime, uid), rec, p)
            return None
        if left is not None:
            p.again_in(left)

        cms, secrets = await self._fetch_sources(pod, vol.references(pod))
        try:
            prepared = await asyncio.to_thread(self.volumes.setup, pod, cms, secrets)
        except vol.VolumeError as e:
            await self.event(pod, ev.WARNING, FAILED_MOUNT, str(e))
            p.again_in(CONFIG_RETRY)
            await self._write_status(pod, rp, rec, p)
            return p.requeue

        try:
            sandbox, sandbox_cfg, rp = await self._ensure_sandbox(pod, rp, rec)
        except (CriError, NetworkError):
            # Shown as ContainerCreating with a FailedCreatePodSandBox event; retried with backoff.
            await self._write_status(pod, await read_pod(self.runtime, uid), rec, p)
            raise
        pod_ip = rec.pod_ip or sandbox.ip
        self._record_sandbox(rec, sandbox.id)

        ctx = _Ctx(pod, rp, rec, sandbox.id, sandbox_cfg, prepared, pod_ip, cms, secrets, p)
        initialized = await self._sync_init_containers(ctx)
        if initialized:
            for spec in pod.spec.containers:
                await self._sync_container(ctx, spec)

        rp = await read_pod(self.runtime, uid)
        self._ensure_probes(pod, rp, rec)
        self._record_containers(rec, rp)
        self._save_backoff(rec)
        self.states.save(rec)
        await self._write_status(pod, rp, rec, p)
        if self._finished(pod, rp):
            self.probes.remove_pod(uid)
            await self.killer.kill_pod(pod, rp, 0, self._specs(pod))
            return None
        p.again_in(self.s.sync_frequency)
        return p.requeue

    @staticmethod
    def _specs(pod: Message) -> dict[str, Message]:
        return {c.name: c for c in list(pod.spec.init_containers) + list(pod.spec.containers)}

    def _finished(self, pod: Message, rp: RuntimePod) -> bool:
        """Every container has run and nothing is to be restarted (never with Always)."""
        _, _, init_failed = st.init_progress(pod, rp)
        if init_failed:
            return True
        if pod.spec.restart_policy in ("", "Always") or not pod.spec.containers:
            return False
        for c in pod.spec.containers:
            latest = rp.latest(c.name, "app")
            if latest is None or not latest.exited:
                return False
            if st.should_restart(pod.spec.restart_policy, latest.exit_code):
                return False
        return True

    # ---------------------------------------------------------------- sources

    async def _fetch_sources(self, pod: Message, names: tuple[set[str], set[str]],
                             have: tuple[dict, dict] = ({}, {})) -> tuple[dict, dict]:
        """The named ConfigMaps and Secrets of the pod's namespace, fresh from
        the API server (those in `have` are not fetched again); missing ones
        are simply absent."""
        cms, secrets = dict(have[0]), dict(have[1])
        cm_names = sorted(names[0] - set(cms))
        secret_names = sorted(names[1] - set(secrets))
        ns = pod.metadata.namespace

        async def get(kind: str, name: str):
            try:
                return name, await self.client.get(kind, name, ns)
            except NotFoundError:
                return name, None
        got = await asyncio.gather(*(get("configmaps", n) for n in cm_names),
                                   *(get("secrets", n) for n in secret_names))
        cms.update({n: o for n, o in got[:len(cm_names)] if o is not None})
        secrets.update({n: o for n, o in got[len(cm_names):] if o is not None})
        return cms, secrets

    async def _env_sources(self, ctx: "_Ctx") -> tuple[dict, dict]:
        """What the containers' env and envFrom name, fetched once per sync and
        only when a container is about to be created."""
        if ctx.env_sources is None:
            refs = container_env.references(list(ctx.pod.spec.init_containers) + list(ctx.pod.spec.containers))
            ctx.env_sources = await self._fetch_sources(ctx.pod, (refs.config_maps, refs.secrets),
                                                        (ctx.cms, ctx.secrets))
        return ctx.env_sources

    # ---------------------------------------------------------------- sandbox

    def _sandbox_config(self, pod: Message, attempt: int, rec: PodRecord):
        log_dir = str(self.killer.log_dir(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid))
        cgroup_parent = f"{self.s.cgroup_root.rstrip('/')}/pod{pod.metadata.uid}" if self.s.cgroup_root else ""
        return cri_config.sandbox_config(pod, attempt, log_dir, cgroup_parent, self.s.cluster_dns,
                                         self.s.cluster_domain)

    async def _ensure_sandbox(self, pod: Message, rp: RuntimePod, rec: PodRecord):
        sandbox = rp.ready_sandbox()
        if sandbox is not None:
            cfg = self._sandbox_config(pod, sandbox.attempt, rec)
            if not (rec.sandbox_id == sandbox.id and (rec.pod_ip or not self.network)):
                await self._adopt_network(pod, sandbox, rec)
            return sandbox, cfg, rp

        attempt = rp.sandboxes[0].attempt + 1 if rp.sandboxes else 0
        if rp.sandboxes or rp.containers:
            await self.event(pod, ev.NORMAL, SANDBOX_CHANGED,
                             "Pod sandbox changed, it will be killed and re-created.")
            await self.killer.kill_pod(pod, rp, spec_grace(pod), self._specs(pod))
        cfg = self._sandbox_config(pod, attempt, rec)
        try:
            sid = await self.runtime.run_pod_sandbox(cfg)
        except CriError as e:
            await self.event(pod, ev.WARNING, FAILED_CREATE_POD_SANDBOX,
                             f"Failed to create pod sandbox: {e.message}")
            raise
        try:
            await self._attach_network(pod, sid, rec)
        except (NetworkError, CriError) as e:
            await self.event(pod, ev.WARNING, FAILED_CREATE_POD_SANDBOX,
                             f"Failed to create pod sandbox: failed to set up the pod's network: {e}")
            await self.killer.detach_network(sid, pod.metadata.uid)
            await self.runtime.remove_pod_sandbox(sid)
            raise
        # Older sandboxes (and their containers) are of no more use.
        for old in rp.sandboxes:
            await self.killer.detach_network(old.id, pod.metadata.uid)
            await self.runtime.remove_pod_sandbox(old.id)
        # What the runtime now holds for the pod: the new, empty sandbox.
        sandbox = RuntimeSandbox(sid, attempt, True, time.time_ns(), rec.pod_ip, dict(cfg.labels))
        return sandbox, cfg, RuntimePod(pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, [sandbox])

    async def _attach_network(self, pod: Message, sid: str, rec: PodRecord) -> None:
        """The pod's address: the runtime's, or one the network service gives."""
        status = await self.runtime.pod_sandbox_status(sid, verbose=True)
        rec.sandbox_id = sid
        rec.netns = status.info.get("netns", "")
        rec.log_directory = status.info.get("logDirectory", "") or \
            self._sandbox_config(pod, 0, rec).log_directory
        rec.pod_ip = status.status.network.ip
        rec.network_attached = False
        if not rec.pod_ip and self.network is not None:
            if not rec.netns:
                log.warning("pod %s: the runtime reports neither an address nor a network namespace; "
                            "the pod has loopback only", pod.metadata.name)
            else:
                attached = await self.network.add(sid, rec.netns, pod.metadata.namespace, pod.metadata.name,
                                                  pod.metadata.uid, _host_ports(pod))
                rec.pod_ip, rec.network_attached = attached.ip, True
        self.states.save(rec)

    async def _adopt_network(self, pod: Message, sandbox, rec: PodRecord) -> None:
        """A ready sandbox this agent has no record of (its record was lost):
        take its address from the runtime, or attach it again."""
        status = await self.runtime.pod_sandbox_status(sandbox.id, verbose=True)
        rec.sandbox_id = sandbox.id
        rec.netns = status.info.get("netns", rec.netns)
        rec.log_directory = status.info.get("logDirectory", rec.log_directory)
        if status.status.network.ip:
            rec.pod_ip, rec.network_attached = status.status.network.ip, False
        elif self.network is not None and rec.netns:
            await self.network.delete(sandbox.id, rec.netns, pod.metadata.namespace, pod.metadata.name,
                                      pod.metadata.uid)
            attached = await self.network.add(sandbox.id, rec.netns, pod.metadata.namespace,
                                              pod.metadata.name, pod.metadata.uid, _host_ports(pod))
            rec.pod_ip, rec.network_attached = attached.ip, True
        self.states.save(rec)

    def _record_sandbox(self, rec: PodRecord, sid: str) -> None:
        if rec.sandbox_id != sid:
            rec.sandbox_id = sid
            self.states.save(rec)

    # ---------------------------------------------------------------- containers

    async def _sync_init_containers(self, ctx: "_Ctx") -> bool:
        """Run the next init container if needed; True once all have succeeded."""
        pod, rp = ctx.pod, ctx.rp
        for spec in pod.spec.init_containers:
            latest = rp.latest(spec.name, "init")
            if latest is not None and latest.exited and latest.exit_code == 0:
                continue
            if latest is None:
                await self._start(ctx, spec, "init", 0)
            elif latest.state == CREATED and latest.id not in self._start_failed:
                await self._start_created(ctx, spec, latest)
            elif latest.exited or latest.state == CREATED:
                if latest.exited and not st.should_restart(pod.spec.restart_policy, latest.exit_code):
                    return False  # failed for good: the pod fails
                await self._restart(ctx, spec, "init", latest)
            return False
        return True

    async def _sync_container(self, ctx: "_Ctx", spec: Message) -> None:
        pod, rp = ctx.pod, ctx.rp
        latest = rp.latest(spec.name, "app")
        if latest is None:
            await self._start(ctx, spec, "app", self._next_attempt(ctx.rec, spec.name, rp))
            return
        if latest.state == CREATED and latest.id not in self._start_failed:
            await self._start_created(ctx, spec, latest)
            return
        if latest.running:
            failed = self.probes.liveness_failed(latest.id)
            changed = latest.hash and latest.hash != cri_config.container_hash(spec)
            if not failed and not changed:
                return
            if failed:
                probe = spec.startup_probe if failed == STARTUP else spec.liveness_probe
                grace = probe.termination_grace_period_seconds if probe.HasField(
                    "termination_grace_period_seconds") else spec_grace(pod)
                message = f"Container {spec.name} failed {failed.lower()} probe, will be restarted"
            else:
                grace = spec_grace(pod)
                message = f"Container {spec.name} definition changed, will be restarted"
            self.probes.remove(latest.id)
            await self.killer.kill_container(pod, spec, latest, grace, message)
            latest = await self._refreshed(latest)
            if changed and not failed:
                # A new definition starts at once, without backoff.
                await self._start(ctx, spec, "app", latest.attempt + 1, previous=latest)
                return
        if latest.exited or latest.state == CREATED:
            if latest.exited and not st.should_restart(pod.spec.restart_policy, latest.exit_code):
                return
            await self._restart(ctx, spec, "app", latest)

    async def _refreshed(self, c: RuntimeContainer) -> RuntimeContainer:
        from node_agent.kubelet.runtime_pods import container_from_status
        try:
            return container_from_status((await self.runtime.container_status(c.id)).status, c.sandbox_id)
        except CriNotFound:
            c.state = "exited"
            return c

    def _next_attempt(self, rec: PodRecord, name: str, rp: RuntimePod) -> int:
        """0 for a container that never ran; after a sandbox change, the count goes on."""
        hist = rec.containers.get(name)
        if hist is not None and hist.current is not None and not rp.of(name, "app"):
            return hist.current.attempt + 1
        return 0

    async def _restart(self, ctx: "_Ctx", spec: Message, kind: str, latest: RuntimeContainer) -> None:
        """Restart an exited container, once its CrashLoopBackOff allows."""
        pod = ctx.pod
        key = f"{pod.metadata.uid}/{spec.name}"
        finished = (latest.finished_at or latest.created_at) / 1e9
        remaining = self.crash_backoff.remaining(key, finished)
        if remaining > 0:
            delay = self.crash_backoff.get(key)
            message = (f"back-off {_duration(delay)} restarting failed container={spec.name} "
                       f"pod={pod.metadata.name}_{pod.metadata.namespace}({pod.metadata.uid})")
            ctx.p.waiting[spec.name] = (st.CRASH_LOOP_BACK_OFF, message)
            ctx.p.again_in(remaining)
            await self.event(pod, ev.WARNING, ev.BACKOFF, "Back-off restarting failed container "
                             f"{spec.name} in pod {pod.metadata.name}_{pod.metadata.namespace}({pod.metadata.uid})")
            return
        self.crash_backoff.next(key, finished)
        await self._start(ctx, spec, kind, latest.attempt + 1, previous=latest)

    async def _start_created(self, ctx: "_Ctx", spec: Message, c: RuntimeContainer) -> None:
        """A container created but never started (the agent stopped in between)."""
        try:
            await self.runtime.start_container(c.id)
        except CriError as e:
            self._start_failed.add(c.id)
            ctx.p.waiting[spec.name] = (st.RUN_CONTAINER_ERROR, e.message)
            await self.event(ctx.pod, ev.WARNING, ev.FAILED, f"Error: {e.message}")
            ctx.p.again_in(1)
            return
        await self.event(ctx.pod, ev.NORMAL, ev.STARTED, f"Started container {spec.name}")

    async def _start(self, ctx: "_Ctx", spec: Message, kind: str, attempt: int,
                     previous: RuntimeContainer | None = None) -> None:
        """Create and start one attempt of a container; failures become waiting reasons."""
        pod, p = ctx.pod, ctx.p
        image = await self.images.ensure(pod, spec, ctx.sandbox_cfg)
        if image.waiting:
            p.waiting[spec.name] = image.waiting
            p.again_in(image.retry_after if image.retry_after is not None else CONFIG_RETRY)
            return
        cms, secrets = await self._env_sources(ctx)
        try:
            env = container_env.build_env(spec, pod, pod_ip=ctx.pod_ip, host_ip=self.s.node_ip,
                                          config_maps=cms, secrets=secrets,
                                          node_allocatable=self.s.allocatable)
            mounts = self.volumes.mounts(spec, ctx.prepared)
        except (container_env.EnvError, vol.VolumeError) as e:
            p.waiting[spec.name] = (st.CREATE_CONTAINER_CONFIG_ERROR, str(e))
            p.again_in(CONFIG_RETRY)
            await self.event(pod, ev.WARNING, ev.FAILED, f"Error: {e}")
            return
        env_map = dict(env)
        cfg = cri_config.container_config(
            pod, spec, kind=kind, attempt=attempt, image_ref=image.image_ref,
            command=[container_env.expand(x, env_map) for x in spec.command],
            args=[container_env.expand(x, env_map) for x in spec.args],
            env=env, mounts=mounts, memory_capacity=self.s.memory_capacity)
        # An earlier attempt with this number (its start failed) is replaced.
        for old in ctx.rp.of(spec.name, kind):
            if old.attempt >= attempt:
                await self.runtime.remove_container(old.id)
        try:
            cid = await self.runtime.create_container(ctx.sandbox_id, cfg, ctx.sandbox_cfg)
        except CriError as e:
            p.waiting[spec.name] = (st.CREATE_CONTAINER_ERROR, e.message)
            p.again_in(CONFIG_RETRY)
            await self.event(pod, ev.WARNING, ev.FAILED, f"Error: {e.message}")
            return
        await self.event(pod, ev.NORMAL, ev.CREATED, f"Created container {spec.name}")
        # Only the previous container is kept (logs --previous, lastState).
        for old in ctx.rp.of(spec.name, kind):
            if previous is None or old.id != previous.id:
                if old.exited:
                    await self.runtime.remove_container(old.id)
        try:
            await self.runtime.start_container(cid)
        except CriError as e:
            self._start_failed.add(cid)
            p.waiting[spec.name] = (st.RUN_CONTAINER_ERROR, e.message)
            key = f"{pod.metadata.uid}/{spec.name}"
            if self.crash_backoff.get(key) == 0:
                self.crash_backoff.next(key, time.time())
            p.again_in(1)
            await self.event(pod, ev.WARNING, ev.FAILED, f"Error: {e.message}")
            return
        await self.event(pod, ev.NORMAL, ev.STARTED, f"Started container {spec.name}")

    # ---------------------------------------------------------------- probes

    def _ensure_probes(self, pod: Message, rp: RuntimePod, rec: PodRecord) -> None:
        uid = pod.metadata.uid
        specs = {c.name: c for c in pod.spec.containers}
        seen: dict[str, core_pb2.ContainerStatus] = {}
        runtime_name = self.runtime_name()
        for cs in pod.status.container_statuses:
            seen[cs.container_id.split("://", 1)[-1]] = cs
        running: set[str] = set()
        for name, spec in specs.items():
            latest = rp.latest(name, "app")
            if latest is None or not latest.running:
                continue
            running.add(latest.id)
            # Adopted after a restart of the node agent: what the last status said holds
            # until a probe says otherwise, so a restart does not flap readiness.
            seed = {}
            prior = seen.get(latest.id)
            if prior is not None and prior.container_id.startswith(f"{runtime_name}://"):
                if prior.started:
                    seed[STARTUP] = SUCCESS
                if prior.ready:
                    seed[READINESS] = SUCCESS
            self.probes.ensure(uid, spec, latest.id, latest.started_at or latest.created_at,
                               ProbeTarget(latest.id, rec.pod_ip, rec.netns or None), seed)
        self.probes.keep_only(uid, running)

    # ---------------------------------------------------------------- records

    def _record_containers(self, rec: PodRecord, rp: RuntimePod) -> None:
        for kind, table in (("app", rec.containers), ("init", rec.init_containers)):
            names = {c.name for c in rp.containers if c.kind == kind}
            for name in names:
                hist = rp.of(name, kind)
                cur = ContainerRecord(hist[0].id, hist[0].attempt, hist[0].log_path)
                prev = ContainerRecord(hist[1].id, hist[1].attempt, hist[1].log_path) if len(hist) > 1 else None
                old = table.get(name)
                if prev is None and old is not None and old.current is not None and old.current.container_id != cur.container_id:
                    prev = old.current if old.current.attempt < cur.attempt else old.previous
                table[name] = ContainerHistory(cur, prev)

    def _restore_backoff(self, rec: PodRecord) -> None:
        if rec.uid not in self._restored_backoff:
            self.crash_backoff.restore(f"{rec.uid}/", rec.backoff)
            self._restored_backoff.add(rec.uid)

    def _save_backoff(self, rec: PodRecord) -> None:
        rec.backoff = self.crash_backoff.export(f"{rec.uid}/")

    # ---------------------------------------------------------------- status

    async def _write_status(self, pod: Message, rp: RuntimePod, rec: PodRecord, p: _Pass) -> None:
        inputs = st.StatusInputs(
            runtime=rp, pod_ip=rec.pod_ip or next((s.ip for s in rp.sandboxes if s.ready), ""),
            host_ip=self.s.node_ip, now_ns=time.time_ns(), runtime_name=self.runtime_name(),
            waiting=p.waiting, ready=self.probes.ready, started=self.probes.started, override=p.override)
        if not any(s.ready for s in rp.sandboxes):
            inputs.pod_ip = rec.pod_ip if pod.status.pod_ip == rec.pod_ip else pod.status.pod_ip
        new = st.pod_status(pod, inputs)
        uid = pod.metadata.uid
        if new == pod.status:
            return
        written = self._written.get(uid)
        rv = int(pod.metadata.resource_version or 0)
        if written is not None and written[0] == new and rv < written[1]:
            return  # the cache has not caught up with our own write yet
        update = core_pb2.Pod(api_version="v1", kind="Pod")
        update.metadata.name, update.metadata.namespace = pod.metadata.name, pod.metadata.namespace
        update.metadata.uid = uid
        update.status.CopyFrom(new)
        try:
            stored = await self.client.update_status(update)
        except (NotFoundError, ConflictError):
            return  # deleted, or a new pod of that name: its own events bring it here
        self._written[uid] = (new, int(stored.metadata.resource_version or 0))

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._restored_backoff.discard(uid)
        self.crash_backoff.reset_prefix(f"{uid}/")

    # ================================================================ deletion

    async def terminate(self, pod: Message) -> None:
        """deletionTimestamp is set: stop everything within the grace period,
        tear the pod down, and remove it from the API server."""
        uid = pod.metadata.uid
        rp = await read_pod(self.runtime, uid)
        self.probes.remove_pod(uid)
        grace = deletion_grace(pod)
        await self.killer.kill_pod(pod, rp, grace, self._specs(pod))
        await self.killer.remove_pod(await read_pod(self.runtime, uid))
        await self.killer.final_delete(pod)
        self.forget(uid)

    async def cleanup(self, uid: str, last_known: Message | None) -> bool:
        """The pod is gone from the API server: kill and remove what is left.
        True when there was anything."""
        rp = await read_pod(self.runtime, uid)
        self.probes.remove_pod(uid)
        if not rp.empty:
            grace = 0
            if last_known is not None and last_known.metadata.HasField("deletion_grace_period_seconds"):
                grace = last_known.metadata.deletion_grace_period_seconds
            elif rp.containers and rp.containers[0].grace is not None:
                grace = rp.containers[0].grace
            grace = min(grace, 2) if grace else 0  # a pod removed without us: kill promptly
            await self.killer.kill_pod(last_known, rp, grace,
                                       self._specs(last_known) if last_known is not None else None)
            rp = await read_pod(self.runtime, uid)
        await self.killer.remove_pod(rp)
        self.forget(uid)
        return not rp.empty


@dataclass
class _Ctx:
    pod: Message
    rp: RuntimePod
    rec: PodRecord
    sandbox_id: str
    sandbox_cfg: object
    prepared: dict
    pod_ip: str
    cms: dict
    secrets: dict
    p: _Pass
    env_sources: tuple[dict, dict] | None = None


def _host_ports(pod: Message) -> list[tuple[int, int, str, str]]:
    """(host port, container port, protocol, host IP) of the pod's hostPorts, for the network's Add."""
    names = {0: "tcp", 1: "udp", 2: "sctp"}
    return [(m.host_port, m.container_port, names.get(m.protocol, "tcp"), m.host_ip)
            for m in cri_config.port_mappings(pod)]


def deadline_left(pod: Message, now: float) -> float | None:
    """Seconds until the pod's activeDeadlineSeconds passes (None: no deadline)."""
    if not pod.spec.HasField("active_deadline_seconds") or not pod.status.HasField("start_time"):
        return None
    return pod.status.start_time.seconds + pod.spec.active_deadline_seconds - now


def _duration(seconds: float) -> str:
    """Go's time.Duration spelling for whole seconds: 10s, 1m20s, 5m0s."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60}s"
