"""Deployments and ReplicaSets against the real API server and the real
controller-manager process (running only `deployment,replicaset`).

No scheduler or node runs: the test plays the node (`FakeKubelet`), marking
each new pod Running and Ready a moment after it appears, except pods of an
image it is told never becomes ready (a bad release). Rollout invariants are
checked on every pod event a watch delivers, not by sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import pytest

from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.cli import rollout, set_image
from kubeling.cli.common import CliError
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import GoneError, NotFoundError, retry_on_conflict
from tests.waiting import eventually as _eventually

GOOD = "localhost/kubeling/http:1"
V2 = "localhost/kubeling/http:2"
V3 = "localhost/kubeling/http:3"
V4 = "localhost/kubeling/http:4"
BAD = "localhost/kubeling/broken:1"
WAIT = 60.0


# ---------------------------------------------------------------- helpers



async def eventually(check, timeout: float = WAIT, interval: float = 0.1, what: str = ""):
    return await _eventually(check, timeout, interval, what)


def deployment(name: str, namespace: str, replicas: int, image: str = GOOD, **spec) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = name
    d.metadata.namespace = namespace
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="web", image=image)
    surge = spec.pop("max_surge", None)
    unavailable = spec.pop("max_unavailable", None)
    for k, v in spec.items():
        setattr(d.spec, k, v)
    ru = d.spec.strategy.rolling_update
    for field, value in (("max_surge", surge), ("max_unavailable", unavailable)):
        if isinstance(value, int):
            getattr(ru, field).number_value = value
        elif isinstance(value, str):
            getattr(ru, field).string_value = value
    return d


def is_ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def image_of(pod) -> str:
    spec = pod.spec if isinstance(pod, core_pb2.Pod) else pod.spec.template.spec
    return spec.containers[0].image


class FakeKubelet:
    """Plays every node: a pod that appears is reported Running a moment
    later, Ready unless its image is in `never_ready`."""

    def __init__(self, client: ApiClient, namespace: str, delay: float = 0.1,
                 never_ready: tuple[str, ...] = (BAD,)):
        self.client = client
        self.namespace = namespace
        self.delay = delay
        self.never_ready = set(never_ready)
        self.marked: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> "FakeKubelet":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        for t in [self._task, *self._tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*[t for t in [self._task, *self._tasks] if t], return_exceptions=True)

    async def _run(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    listed = await self.client.list("pods", self.namespace)
                    for pod in listed.items:
                        self._seen(pod)
                    rv = listed.resource_version
                async with self.client.watch("pods", self.namespace, resource_version=rv) as stream:
                    async for ev in stream:
                        rv = ev.object.metadata.resource_version or rv
                        if ev.type in ("ADDED", "MODIFIED"):
                            self._seen(ev.object)
            except GoneError:
                rv = ""

    def _seen(self, pod: core_pb2.Pod) -> None:
        if pod.status.phase != "Pending" or pod.metadata.HasField("deletion_timestamp"):
            return
        if pod.metadata.uid in self.marked:
            return
        self.marked.add(pod.metadata.uid)
        task = asyncio.create_task(self._mark(pod))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark(self, pod: core_pb2.Pod) -> None:
        await asyncio.sleep(self.delay)
        ready = image_of(pod) not in self.never_ready
        pod.metadata.resource_version = ""  # status only, unconditional: no conflicts
        pod.status.phase = "Running"
        pod.status.pod_ip = "10.244.0.10"
        del pod.status.conditions[:]
        for type_ in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            c = pod.status.conditions.add(type=type_, status="True")
            if type_ in ("ContainersReady", "Ready") and not ready:
                c.status = "False"
            c.last_transition_time.GetCurrentTime()
        with contextlib.suppress(NotFoundError):
            await self.client.update_status(pod)


class PodWatcher:
    """Follows the namespace's pods through a watch and checks `invariant`
    after every event; `violations` lists the states that broke it."""

    def __init__(self, client: ApiClient, namespace: str, invariant):
        self.client = client
        self.namespace = namespace
        self.invariant = invariant
        self.pods: dict[str, core_pb2.Pod] = {}
        self.violations: list[str] = []
        self.events = 0
        self.max_total = 0
        self.min_ready: int | None = None
        self._task: asyncio.Task | None = None
        self._started = asyncio.Event()

    async def start(self) -> "PodWatcher":
        self._task = asyncio.create_task(self._run())
        await self._started.wait()
        return self

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _check(self) -> None:
        pods = [p for p in self.pods.values() if not p.metadata.HasField("deletion_timestamp")]
        total, ready = len(pods), sum(1 for p in pods if is_ready(p))
        self.max_total = max(self.max_total, total)
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        problem = self.invariant(total, ready)
        if problem:
            images = sorted((image_of(p), is_ready(p)) for p in pods)
            self.violations.append(f"{problem}: {images}")

    async def _run(self) -> None:
        listed = await self.client.list("pods", self.namespace)
        self.pods = {p.metadata.name: p for p in listed.items}
        self._check()
        self._started.set()
        async with self.client.watch("pods", self.namespace,
                                     resource_version=listed.resource_version) as stream:
            async for ev in stream:
                if ev.type == "BOOKMARK":
                    continue
                self.events += 1
                if ev.type == "DELETED":
                    self.pods.pop(ev.object.metadata.name, None)
                else:
                    self.pods[ev.object.metadata.name] = ev.object
                self._check()


async def run_cli(capsys, config: str, *argv: str) -> tuple[int, str, str]:
    """Run a rollout / set image command as `kubeling` would (errors as `error: ...`, exit 1)."""
    parser = argparse.ArgumentParser(prog="kubeling")
    sub = parser.add_subparsers(dest="verb")
    rollout.register(sub)
    set_image.register(sub)
    args = parser.parse_args([*argv, "--config", config])
    capsys.readouterr()
    try:
        code = await args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
    namespace.metadata.name = namespace_name
    await client.create(namespace)
    return namespace_name


@pytest.fixture
def controller_manager(components):
    return components("services.controllers", "--controllers", "deployment,replicaset",
                      "--leader-elect", "false", name="controller-manager")


@pytest.fixture
async def kubelet(client, ns):
    k = FakeKubelet(client, ns).start()
    yield k
    await k.stop()


@pytest.fixture
def config(api_server, tmp_path) -> str:
    path = tmp_path / "kubeling-config"
    path.write_text(f"server: {api_server.address}\n")
    return str(path)


# ---------------------------------------------------------------- state


async def get(client, ns, name) -> apps_pb2.Deployment:
    return await client.get("deployments", name, ns)


async def pods(client, ns) -> list[core_pb2.Pod]:
    return [p for p in (await client.list("pods", ns)).items
            if not p.metadata.HasField("deletion_timestamp")]


async def replica_sets(client, ns, name) -> list[apps_pb2.ReplicaSet]:
    return [rs for rs in (await client.list("replicasets", ns)).items
            if rs.metadata.name.startswith(f"{name}-")]


def complete(d: apps_pb2.Deployment, replicas: int) -> bool:
    s = d.status
    return (d.status.observed_generation >= d.metadata.generation and s.replicas == replicas
            and s.updated_replicas == replicas and s.available_replicas == replicas
            and s.ready_replicas == replicas)


async def wait_complete(client, ns, name, replicas, image=None, timeout=WAIT):
    async def check():
        d = await get(client, ns, name)
        if not complete(d, replicas):
            return False
        ps = await pods(client, ns)
        if len(ps) != replicas or not all(is_ready(p) for p in ps):
            return False
        return image is None or all(image_of(p) == image for p in ps)
    await eventually(check, timeout, what=f"{name} complete with {replicas} replicas of {image}")
    return await get(client, ns, name)


async def set_replicas(client, ns, name, n):
    async def attempt():
        d = await get(client, ns, name)
        d.spec.replicas = n
        await client.update(d)
    await retry_on_conflict(attempt)


def condition(d: apps_pb2.Deployment, type_: str):
    return next((c for c in d.status.conditions if c.type == type_), None)


# ---------------------------------------------------------------- tests


async def test_deployment_of_30_becomes_available_then_scales_to_50_and_to_0(
        client, ns, controller_manager, kubelet):
    await client.create(deployment("web", ns, 30))
    d = await wait_complete(client, ns, "web", 30)
    assert condition(d, "Available").status == "True"
    assert condition(d, "Progressing").reason == "NewReplicaSetAvailable"
    (rs,) = await replica_sets(client, ns, "web")
    template_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{template_hash}"
    assert rs.spec.selector.match_labels["pod-template-hash"] == template_hash
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    for pod in await pods(client, ns):
        (ref,) = pod.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ReplicaSet", rs.metadata.name,
                                                                   rs.metadata.uid, True)
        assert pod.metadata.name.startswith(f"{rs.metadata.name}-")
        assert pod.metadata.labels["pod-template-hash"] == template_hash

    await set_replicas(client, ns, "web", 50)
    await wait_complete(client, ns, "web", 50)
    await set_replicas(client, ns, "web", 0)
    d = await wait_complete(client, ns, "web", 0)
    assert len(await replica_sets(client, ns, "web")) == 1

    events = (await client.list("events", ns)).items
    reasons = {e.reason for e in events}
    assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"} <= reasons
    assert any(e.message == f"Scaled up replica set {rs.metadata.name} to 30" for e in events)


@pytest.mark.parametrize("surge,unavailable,replicas", [
    ("25%", "25%", 12),
    (0, 3, 9),
    (4, 0, 8),
], ids=["percentages", "no-surge", "no-unavailable"])
async def test_rolling_update_stays_within_surge_and_unavailability(
        client, ns, controller_manager, kubelet, capsys, config, surge, unavailable, replicas):
    from kubeling.intstr import resolve_fenceposts
    max_surge, max_unavailable = resolve_fenceposts(surge, unavailable, replicas)
    await client.create(deployment("web", ns, replicas, max_surge=surge, max_unavailable=unavailable))
    await wait_complete(client, ns, "web", replicas)

    def invariant(total: int, ready: int) -> str:
        if total > replicas + max_surge:
            return f"{total} pods > {replicas} + maxSurge {max_surge}"
        if ready < replicas - max_unavailable:
            return f"{ready} ready < {replicas} - maxUnavailable {max_unavailable}"
        return ""

    watcher = await PodWatcher(client, ns, invariant).start()
    try:
        code, out, _ = await run_cli(capsys, config, "set", "image", "deployment/web", f"web={V2}", "-n", ns)
        assert (code, out) == (0, "deployment.apps/web image updated\n")
        await wait_complete(client, ns, "web", replicas, image=V2)
    finally:
        await watcher.stop()
    assert watcher.violations == []
    assert watcher.events >= 3 * replicas  # the whole rollout was seen: creates, readiness, deletes
    if max_surge:
        assert watcher.max_total > replicas  # it did surge


async def test_rollout_status_follows_to_completion(client, ns, controller_manager, kubelet, capsys, config):
    await client.create(deployment("web", ns, 4))
    code, out, err = await run_cli(capsys, config, "rollout", "status", "deployment/web", "-n", ns,
                                   "--timeout", "60s")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == 'deployment "web" successfully rolled out'
    assert all(line.startswith('Waiting for deployment "web" rollout to finish') or
               line == "Waiting for deployment spec update to be observed..." for line in lines[:-1])


async def test_rollback_restores_the_previous_template(client, ns, controller_manager, kubelet, capsys, config):
    await client.create(deployment("web", ns, 4))
    await wait_complete(client, ns, "web", 4, image=GOOD)
    code, _, err = await run_cli(capsys, config, "set", "image", "deployment/web", f"web={V2}", "-n", ns)
    assert code == 0, err
    await wait_complete(client, ns, "web", 4, image=V2)

    code, out, err = await run_cli(capsys, config, "rollout", "history", "deployment/web", "-n", ns)
    assert code == 0, err
    assert out.split() == ["deployment.apps/web", "REVISION", "CHANGE-CAUSE", "1", "<none>", "2", "<none>"]
    code, out, err = await run_cli(capsys, config, "rollout", "history", "deployment/web", "-n", ns,
                                   "--revision=2")
    assert code == 0, err
    assert out.startswith("deployment.apps/web with revision #2\nPod Template:\n")
    assert V2 in out and GOOD not in out

    code, out, err = await run_cli(capsys, config, "rollout", "undo", "deployment/web", "-n", ns)
    assert (code, out) == (0, "deployment.apps/web rolled back\n"), err
    d = await get(client, ns, "web")
    assert image_of(d) == GOOD
    assert "pod-template-hash" not in d.spec.template.metadata.labels
    d = await wait_complete(client, ns, "web", 4, image=GOOD)

    # The first RS is reused (no third RS) and renumbered as revision 3.
    rss = {image_of(rs): rs for rs in await replica_sets(client, ns, "web")}
    assert len(rss) == 2
    assert rss[GOOD].metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert rss[GOOD].metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert replicas_of(rss[V2]) == 0
    await eventually(lambda: _revision_is(client, ns, "3"), what="deployment revision 3")

    code, out, _ = await run_cli(capsys, config, "rollout", "undo", "deployment/web", "-n", ns,
                                 "--to-revision=2")
    assert (code, out) == (0, "deployment.apps/web rolled back\n")
    await wait_complete(client, ns, "web", 4, image=V2)
    code, _, err = await run_cli(capsys, config, "rollout", "undo", "deployment/web", "-n", ns,
                                 "--to-revision=9")
    assert (code, err) == (1, "error: unable to find specified revision 9 in history\n")


async def _revision_is(client, ns, revision):
    d = await get(client, ns, "web")
    return d.metadata.annotations.get("deployment.kubernetes.io/revision") == revision


def replicas_of(obj) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


async def test_progress_deadline_exceeded_fails_rollout_status(
        client, ns, controller_manager, kubelet, capsys, config):
    await client.create(deployment("web", ns, 3, progress_deadline_seconds=2))
    await wait_complete(client, ns, "web", 3)
    code, _, _ = await run_cli(capsys, config, "set", "image", "deployment/web", f"web={BAD}", "-n", ns)
    assert code == 0

    async def timed_out():
        c = condition(await get(client, ns, "web"), "Progressing")
        return c if c is not None and c.reason == "ProgressDeadlineExceeded" else None
    cond = await eventually(timed_out, what="ProgressDeadlineExceeded")
    assert cond.status == "False"
    assert "has timed out progressing" in cond.message

    code, out, err = await run_cli(capsys, config, "rollout", "status", "deployment/web", "-n", ns,
                                   "--timeout", "30s")
    assert code == 1
    assert err == 'error: deployment "web" exceeded its progress deadline\n'
    # The old pods keep serving: the bad release never took availability below the minimum.
    d = await get(client, ns, "web")
    assert d.status.available_replicas >= 3 - 0  # maxUnavailable 25% of 3 rounds down to 0
    assert condition(d, "Available").status == "True"


async def test_revision_history_limit_prunes_old_replica_sets(client, ns, controller_manager, kubelet):
    await client.create(deployment("web", ns, 2, revision_history_limit=1))
    await wait_complete(client, ns, "web", 2)
    for image in (V2, V3, V4):
        async def attempt(image=image):
            d = await get(client, ns, "web")
            d.spec.template.spec.containers[0].image = image
            await client.update(d)
        await retry_on_conflict(attempt)
        await wait_complete(client, ns, "web", 2, image=image)

    async def pruned():
        rss = await replica_sets(client, ns, "web")
        return rss if len(rss) == 2 else None
    rss = await eventually(pruned, what="old replica sets pruned to 1")
    revisions = sorted(int(rs.metadata.annotations["deployment.kubernetes.io/revision"]) for rs in rss)
    assert revisions == [3, 4]
    assert sorted(image_of(rs) for rs in rss) == [V3, V4]


async def test_scaling_during_a_stuck_rollout_is_proportional(client, ns, controller_manager, kubelet):
    await client.create(deployment("web", ns, 10, max_surge=3, max_unavailable=2))
    await wait_complete(client, ns, "web", 10)

    async def attempt():
        d = await get(client, ns, "web")
        d.spec.template.spec.containers[0].image = BAD
        await client.update(d)
    await retry_on_conflict(attempt)

    seen: list[dict] = []

    async def sizes(expected):
        rss = await replica_sets(client, ns, "web")
        got = {image_of(rs): replicas_of(rs) for rs in rss}
        if not seen or seen[-1] != got:
            seen.append(got)
        return got if got == expected else None
    # Stuck: 2 old pods replaced by 5 new ones that never become ready.
    await eventually(lambda: sizes({GOOD: 8, BAD: 5}), what="rollout stuck at 8 old / 5 new")

    await set_replicas(client, ns, "web", 15)
    # 15 + 3 surge = 18 pods, 5 more, spread 3:2 as Kubernetes does (8*18/13 -> 11, 5*18/13 -> 7).
    await eventually(lambda: sizes({GOOD: 11, BAD: 7}), what=f"proportional scale-up to 11 / 7 (saw {seen})")
    d = await get(client, ns, "web")
    for rs in await replica_sets(client, ns, "web"):
        assert rs.metadata.annotations["deployment.kubernetes.io/desired-replicas"] == "15"
        assert rs.metadata.annotations["deployment.kubernetes.io/max-replicas"] == "18"

    await set_replicas(client, ns, "web", 10)
    # 10 + 3 = 13 pods: 18 -> 13, removed in proportion (11*13/18 -> 8, 7*13/18 -> 5). With
    # maxUnavailable 2 the old RS cannot shrink further while no new pod is ready: stable.
    await eventually(lambda: sizes({GOOD: 8, BAD: 5}), what=f"proportional scale-down to 8 / 5 (saw {seen})")
    await eventually(lambda: _pod_count(client, ns, 13), what="13 pods")
    messages = {e.message for e in (await client.list("events", ns)).items if e.reason == "ScalingReplicaSet"}
    old_name = next(rs.metadata.name for rs in await replica_sets(client, ns, "web") if image_of(rs) == GOOD)
    assert {f"Scaled up replica set {old_name} to 11", f"Scaled down replica set {old_name} to 8"} <= messages


async def _pod_count(client, ns, n):
    return len(await pods(client, ns)) == n


async def test_recreate_removes_old_pods_before_creating_new_ones(client, ns, controller_manager, kubelet):
    d = deployment("web", ns, 4)
    d.spec.strategy.type = "Recreate"
    d.spec.strategy.ClearField("rolling_update")
    await client.create(d)
    await wait_complete(client, ns, "web", 4, image=GOOD)

    def invariant(total: int, ready: int) -> str:
        return f"{total} pods" if total > 4 else ""
    watcher = await PodWatcher(client, ns, invariant).start()
    mixed: list[list[str]] = []

    async def attempt():
        d = await get(client, ns, "web")
        d.spec.template.spec.containers[0].image = V2
        await client.update(d)
    try:
        await retry_on_conflict(attempt)
        deadline = asyncio.get_running_loop().time() + WAIT
        while asyncio.get_running_loop().time() < deadline:
            images = {image_of(p) for p in watcher.pods.values()}
            if len(images) > 1:
                mixed.append(sorted(images))
            d = await get(client, ns, "web")
            if complete(d, 4) and images == {V2}:
                break
            await asyncio.sleep(0.01)
        await wait_complete(client, ns, "web", 4, image=V2)
    finally:
        await watcher.stop()
    assert watcher.violations == []
    assert watcher.min_ready == 0  # everything went down before the new version came up
    assert mixed == []


async def test_replica_set_adopts_orphans_and_replaces_deleted_pods(client, ns, controller_manager, kubelet):
    orphan = core_pb2.Pod(api_version="v1", kind="Pod")
    orphan.metadata.name = "orphan"
    orphan.metadata.namespace = ns
    orphan.metadata.labels["app"] = "solo"
    orphan.spec.containers.add(name="web", image=GOOD)
    await client.create(orphan)

    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = "solo"
    rs.metadata.namespace = ns
    rs.spec.replicas = 3
    rs.spec.selector.match_labels["app"] = "solo"
    rs.spec.template.metadata.labels["app"] = "solo"
    rs.spec.template.spec.containers.add(name="web", image=GOOD)
    rs = await client.create(rs)

    async def three_ready():
        r = await client.get("replicasets", "solo", ns)
        return r if (r.status.replicas, r.status.ready_replicas, r.status.available_replicas) == (3, 3, 3) else None
    await eventually(three_ready, what="3 ready replicas")
    adopted = await client.get("pods", "orphan", ns)
    assert [(r.kind, r.uid) for r in adopted.metadata.owner_references] == [("ReplicaSet", rs.metadata.uid)]
    assert len(await pods(client, ns)) == 3  # the orphan counts: only 2 were created

    victim = next(p for p in await pods(client, ns) if p.metadata.name != "orphan")
    await client.delete("pods", victim.metadata.name, ns)

    async def replaced():
        ps = await pods(client, ns)
        names = {p.metadata.name for p in ps}
        return victim.metadata.name not in names and len(ps) == 3 and all(is_ready(p) for p in ps)
    await eventually(replaced, what="a replacement pod")
    await eventually(three_ready, what="3 ready replicas again")

    # Relabelled out of the selector: released, and replaced.
    async def relabel():
        p = await client.get("pods", "orphan", ns)
        p.metadata.labels["app"] = "elsewhere"
        await client.update(p)
    await retry_on_conflict(relabel)

    async def released():
        p = await client.get("pods", "orphan", ns)
        return not p.metadata.owner_references and len([
            q for q in await pods(client, ns) if q.metadata.labels.get("app") == "solo"]) == 3
    await eventually(released, what="release and replacement")


async def test_min_ready_seconds_delays_availability(client, ns, controller_manager, kubelet):
    await client.create(deployment("web", ns, 2, min_ready_seconds=2))

    async def ready_not_available():
        d = await get(client, ns, "web")
        return d if d.status.ready_replicas == 2 else None
    d = await eventually(ready_not_available, what="2 ready")
    assert d.status.available_replicas < 2
    d = await wait_complete(client, ns, "web", 2, timeout=20)
    assert d.status.available_replicas == 2


async def test_restart_and_pause_resume(client, ns, controller_manager, kubelet, capsys, config):
    await client.create(deployment("web", ns, 2))
    await wait_complete(client, ns, "web", 2)
    before = {p.metadata.name for p in await pods(client, ns)}
    code, out, _ = await run_cli(capsys, config, "rollout", "restart", "deployment/web", "-n", ns)
    assert (code, out) == (0, "deployment.apps/web restarted\n")

    async def replaced():
        names = {p.metadata.name for p in await pods(client, ns)}
        d = await get(client, ns, "web")
        return complete(d, 2) and len(names) == 2 and not names & before
    await eventually(replaced, what="every pod replaced")

    code, out, _ = await run_cli(capsys, config, "rollout", "pause", "deployment/web", "-n", ns)
    assert (code, out) == (0, "deployment.apps/web paused\n")
    code, _, _ = await run_cli(capsys, config, "set", "image", "deployment/web", f"web={V2}", "-n", ns)
    assert code == 0
    await set_replicas(client, ns, "web", 3)

    async def scaled_not_rolled_out():
        d = await get(client, ns, "web")
        ps = await pods(client, ns)
        return (d.status.observed_generation == d.metadata.generation and d.status.replicas == 3
                and d.status.available_replicas == 3 and d.status.updated_replicas == 0
                and len(ps) == 3 and {image_of(p) for p in ps} == {GOOD})
    await eventually(scaled_not_rolled_out, what="scaled to 3 without a rollout")
    assert condition(await get(client, ns, "web"), "Progressing").reason == "DeploymentPaused"
    code, _, err = await run_cli(capsys, config, "rollout", "undo", "deployment/web", "-n", ns)
    assert code == 1 and "cannot rollback a paused deployment" in err

    code, out, _ = await run_cli(capsys, config, "rollout", "resume", "deployment/web", "-n", ns)
    assert (code, out) == (0, "deployment.apps/web resumed\n")
    await wait_complete(client, ns, "web", 3, image=V2)
