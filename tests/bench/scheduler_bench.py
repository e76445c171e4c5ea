"""Scheduler throughput, end to end: pods bound per second with 100 and with
1000 nodes.

For each cluster size a fresh etcd and API server start, NODES Node objects
(Ready, large allocatable) are created directly (no node agents), and the
real scheduler process starts and syncs. Then PODS pods are created, CREATE_CONCURRENCY
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
    await asyncio.to_thread(server.start)
    client = ApiClient(server.address)
    try:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = NAMESPACE
        await client.create(ns)
        await _in_parallel(node_count, CREATE_CONCURRENCY,
                           lambda i: client.create(_node(f"node-{i + 1}")))

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
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        await asyncio.to_thread(server.shutdown)


async def run(tmp: Path, report) -> None:
    for node_count in NODE_COUNTS:
        rate = await pods_per_second(tmp / f"scheduler-{node_count}-nodes", node_count)
        report(f"scheduler_pods_per_second_{node_count}_nodes", rate,
               f"pods/s ({PODS} pods, end to end)")


if __name__ == "__main__":
    import tempfile

    def _report(name: str, value: float, unit: str) -> None:
        print(f"{name}: {value:.3f} {unit}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kubeling-scheduler-bench-") as d:
        asyncio.run(run(Path(d), _report))
