"""Scheduler throughput, end to end: pods bound per second with 100 and with
1000 nodes.

For each cluster size a fresh etcd and API server start with that many
hollow nodes (one `python -m node_agent.hollow` process; no IPAM controller
runs, so they only register and renew leases, adding no pod status writes),
and the real scheduler process starts and syncs. Then PODS pods are created, CREATE_CONCURRENCY
at a time, while a watch counts the pods that become bound. The figure is
PODS divided by the time from the first create to the last pod seen bound,
so it includes the API server and etcd (creates, binds, Events) as well as
the scheduler.

    .venv/bin/python -m tests.bench.scheduler_bench
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Callable

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from tests.integration.conftest import ApiServerProcess, Component

PODS = 5000
CREATE_CONCURRENCY = 32
NODE_COUNTS = (100, 1000)
NAMESPACE = "bench"
SYNC_TIMEOUT = 120.0
BIND_TIMEOUT = 600.0


def _node(name: str) -> core_pb2.Node:
    node = core_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels["kubernetes.io/hostname"] = name
    node.status.capacity.update({"cpu": "64", "memory": "256Gi", "pods": "1000"})
    node.status.allocatable.update(node.status.capacity)
    node.status.conditions.add(type="Ready", status="True", reason="KubeletReady")
    return node


def _pod(i: int) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = f"pod-{i}"
    pod.metadata.namespace = NAMESPACE
    c = pod.spec.containers.add(name="app", image="localhost/kubeling/shell:1")
    c.resources.requests["cpu"].string_value = "100m"
    c.resources.requests["memory"].string_value = "128Mi"
    return pod


async def _in_parallel(n_total: int, concurrency: int, op: Callable[[int], "asyncio.Future"]) -> None:
    counter = iter(range(n_total))

    async def worker():
        for i in counter:
            await op(i)
    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _wait_for_log(component: Component, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.running:
            raise RuntimeError(f"scheduler exited:\n{component.log_tail()}")
        if text in component.log_path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"scheduler did not log {text!r}:\n{component.log_tail()}")


async def pods_per_second(tmp: Path, node_count: int) -> float:
    """One round on a fresh cluster of `node_count` nodes."""
    tmp.mkdir(parents=True, exist_ok=True)
    server = ApiServerProcess(tmp)
    scheduler: Component | None = None
    hollow: Component | None = None
    await asyncio.to_thread(server.start)
    client = ApiClient(server.address)
    try:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = NAMESPACE
        await client.create(ns)
        hollow = Component("node_agent.hollow", [
            "--server", server.address, "--count", str(node_count), "--cpu", "64",
            "--memory", "256Gi", "--pods", "1000", "--renew-interval", "10",
            "--status-interval", "60"], tmp / "hollow.log").start()
        await _wait_for_log(hollow, "hollow nodes ready", SYNC_TIMEOUT)

        scheduler = Component("services.scheduler",
                              ["--server", server.address, "--leader-elect=false"],
                              tmp / "scheduler.log").start()
        await _wait_for_log(scheduler, f"scheduling: {node_count} nodes", SYNC_TIMEOUT)

        start_rv = (await client.list("pods", NAMESPACE, limit=1)).resource_version
        bound: set[str] = set()
        all_bound = asyncio.Event()

        async def watch_bindings() -> None:
            stream = client.watch("pods", NAMESPACE, resource_version=start_rv,
                                  allow_bookmarks=False)
            async with stream:
                async for ev in stream:
                    if ev.object.spec.node_name and ev.object.metadata.name not in bound:
                        bound.add(ev.object.metadata.name)
                        if len(bound) == PODS:
                            all_bound.set()
                            return

        watcher = asyncio.create_task(watch_bindings())
        t0 = time.perf_counter()
        await _in_parallel(PODS, CREATE_CONCURRENCY, lambda i: client.create(_pod(i)))
        created = time.perf_counter() - t0
        try:
            await asyncio.wait_for(all_bound.wait(), BIND_TIMEOUT)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        seconds = time.perf_counter() - t0
        print(f"  {node_count} nodes: {PODS} pods created in {created:.1f} s "
              f"({PODS / created:.0f}/s), all bound after {seconds:.1f} s", file=sys.stderr,
              flush=True)
        return PODS / seconds
    finally:
        await client.close()
        for comp in (scheduler, hollow):
            if comp is not None:
                await asyncio.to_thread(comp.stop)
        await asyncio.to_thread(server.shutdown)


async def deployment_available_seconds(tmp: Path, node_count: int, replicas: int) -> float:
    """Seconds from creating a Deployment of `replicas` until all are
    available, with the whole control plane and `node_count` hollow nodes."""
    tmp.mkdir(parents=True, exist_ok=True)
    server = ApiServerProcess(tmp)
    await asyncio.to_thread(server.start)
    client = ApiClient(server.address)
    started: list[Component] = []
    try:
        hollow = Component("node_agent.hollow", [
            "--server", server.address, "--count", str(node_count), "--renew-interval", "2",
            "--status-interval", "60"], tmp / "hollow.log").start()
        started.append(hollow)
        await _wait_for_log(hollow, "hollow nodes ready", SYNC_TIMEOUT)
        started.append(Component("services.controllers", [
            "--server", server.address, "--leader-elect", "false",
            "--node-monitor-grace-period", "20"], tmp / "controllers.log").start())
        scheduler = Component("services.scheduler", ["--server", server.address,
                                                     "--leader-elect=false"], tmp / "scheduler.log")
        started.append(scheduler.start())
        await _wait_for_log(scheduler, f"scheduling: {node_count} nodes", SYNC_TIMEOUT)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not all(n.spec.pod_cidr for n in (await client.list("nodes")).items):
            if time.monotonic() > deadline:
                raise RuntimeError("nodes got no pod CIDRs")
            await asyncio.sleep(0.2)

        d = _deployment(replicas)
        t0 = time.perf_counter()
        await client.create(d)
        stream = client.watch("deployments", "default", allow_bookmarks=False)
        async with stream:
            async for ev in stream:
                st = ev.object.status
                if st.available_replicas == replicas and st.updated_replicas == replicas:
                    break
                if time.perf_counter() - t0 > BIND_TIMEOUT:
                    raise RuntimeError(f"not available after {BIND_TIMEOUT}s: {st}")
        return time.perf_counter() - t0
    finally:
        await client.close()
        for comp in reversed(started):
            await asyncio.to_thread(comp.stop)
        await asyncio.to_thread(server.shutdown)


def _deployment(replicas: int):
    from kubeling import objects
    return objects.from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "app",
                                                       "image": "localhost/kubeling/shell:1"}]}}}})


async def run(tmp: Path, report) -> None:
    for node_count in NODE_COUNTS:
        rate = await pods_per_second(tmp / f"scheduler-{node_count}-nodes", node_count)
        report(f"scheduler_pods_per_second_{node_count}_nodes", rate,
               f"pods/s ({PODS} pods on {node_count} hollow nodes, end to end)")
    seconds = await deployment_available_seconds(tmp / "deployment-1000", 100, 1000)
    report("deployment_1000_replicas_available_100_nodes", seconds, "s")


if __name__ == "__main__":
    import tempfile

    def _report(name: str, value: float, unit: str) -> None:
        print(f"{name}: {value:.3f} {unit}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kubeling-scheduler-bench-") as d:
        asyncio.run(run(Path(d), _report))
