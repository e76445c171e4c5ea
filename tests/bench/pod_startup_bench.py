"""Pod startup latency on real nodes, as Kubernetes' SLI defines it: from a
pod's creation until all its containers are seen running through a watch,
with images already present. Measured on a fresh `kubeling up --nodes 2` for
a 50-replica Deployment and for steady churn of 5 pods per second; also the
node agents' memory.

The creation moment is when the watch first shows the pod (our
creationTimestamp has one-second resolution); that is at most a few
milliseconds after the create is stored, so it slightly favours no one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kubeling import objects
from kubeling.client.api_client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
KUBELING = ROOT / ".venv" / "bin" / "kubeling"
REPLICAS = 50
CHURN_PER_SECOND = 5
CHURN_SECONDS = 20
TIMEOUT = 300.0


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _running(pod) -> bool:
    statuses = pod.status.container_statuses
    return bool(statuses) and len(statuses) == len(pod.spec.containers) and all(
        s.state.HasField("running") for s in statuses)


class Startup:
    """Follows pods in a namespace: first seen, then all containers running."""

    def __init__(self, client: ApiClient, namespace: str):
        self.client = client
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def follow(self, resource_version: str) -> None:
        async for ev in self.client.watch("pods", self.namespace, resource_version=resource_version,
                                          allow_bookmarks=False):
            name, now = ev.object.metadata.name, time.perf_counter()
            self.seen.setdefault(name, now)
            if name not in self.latency and _running(ev.object):
                self.latency[name] = now - self.seen[name]
                self.changed.set()

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(self.latency) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))


def _manifest(kind: str, name: str, namespace: str, replicas: int = 0):
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "web", "image": "localhost/kubeling/http:1",
                                         "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}}
    if kind == "Pod":
        return objects.from_dict({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": name, "namespace": namespace, **template["metadata"]},
                                  "spec": template["spec"]})
    return objects.from_dict({"apiVersion": "apps/v1", "kind": "Deployment",
                              "metadata": {"name": name, "namespace": namespace},
                              "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                       "template": template}})


def _agent_memory_mib(state_dir: Path) -> list[float]:
    record = json.loads((state_dir / "cluster.json").read_text())
    sizes = []
    for proc in record["processes"]:
        if proc["name"].startswith("kubelet-"):
            for line in Path(f"/proc/{proc['pid']}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
    return sizes


async def _measure(report, state_dir: Path, env: dict) -> None:
    os.environ.update(env)
    async with ApiClient.from_config() as client:
        ns = objects.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        await client.create(ns)
        rv = (await client.list("pods", "bench", limit=1)).resource_version

        deploy = Startup(client, "bench")
        follower = asyncio.create_task(deploy.follow(rv))
        await client.create(_manifest("Deployment", "web", "bench", REPLICAS))
        await deploy.wait_for(REPLICAS)
        follower.cancel()
        values = list(deploy.latency.values())
        report("pod_startup_p50_deployment_50_on_2_nodes", _pct(values, 50) * 1000, "ms")
        report("pod_startup_p99_deployment_50_on_2_nodes", _pct(values, 99) * 1000, "ms")
        memory = _agent_memory_mib(state_dir)
        report("node_agent_memory_per_node_with_25_pods", sum(memory) / len(memory), "MiB")
        await client.delete("deployments", "web", "bench")  # its pods go with it

        rv = (await client.list("pods", "bench", limit=1)).resource_version
        churn = Startup(client, "bench")
        follower = asyncio.create_task(churn.follow(rv))
        total = CHURN_PER_SECOND * CHURN_SECONDS
        start = time.perf_counter()
        deletes = []
        for i in range(total):
            delay = start + i / CHURN_PER_SECOND - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.create(_manifest("Pod", f"churn-{i}", "bench"))
            if i >= 10:  # keep about ten churn pods alive: delete as fast as we create
                deletes.append(asyncio.create_task(client.delete("pods", f"churn-{i - 10}", "bench")))
        await churn.wait_for(total)
        await asyncio.gather(*deletes, return_exceptions=True)
        follower.cancel()
        values = [v for k, v in churn.latency.items() if k.startswith("churn-")]
        report("pod_startup_p50_churn_5_per_second", _pct(values, 50) * 1000, "ms")
        report("pod_startup_p99_churn_5_per_second", _pct(values, 99) * 1000, "ms")


def run(tmp: Path, report) -> None:
    if os.geteuid() != 0:
        print("# pod startup: needs root (real nodes)", flush=True)
        return
    state_dir, config = tmp / "state", tmp / "config"
    env = dict(os.environ, KUBELING_STATE_DIR=str(state_dir), KUBELING_CONFIG=str(config))
    saved = {k: os.environ.get(k) for k in ("KUBELING_STATE_DIR", "KUBELING_CONFIG")}
    try:
        subprocess.run([str(KUBELING), "up", "--nodes", "2"], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        asyncio.run(_measure(report, state_dir, {"KUBELING_STATE_DIR": str(state_dir),
                                                 "KUBELING_CONFIG": str(config)}))
    finally:
        subprocess.run([str(KUBELING), "down", "--purge"], env=env, stdout=subprocess.DEVNULL,
                       timeout=300)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kubeling-pod-startup-") as d:
        run(Path(d), lambda n, v, u: print(f"{n}: {v:.3f} {u}", flush=True))
    sys.exit(0)
