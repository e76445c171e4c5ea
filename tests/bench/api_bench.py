"""API server benchmarks: create throughput against raw etcd, latency at a
steady rate, and watch fan-out delay.

Throughput is measured in ROUNDS rounds, each a raw etcd run and an API run
back to back, so that both see the same machine load (it varies a lot on a
shared two-core machine); the figures are medians, the ratio the median of
the per-round ratios. Both loops are one Python process with CONCURRENCY
tasks on one connection, so they compare like with like. CPU time per create
is reported for the API server process (all its threads), for etcd and for
this client process, to show which one a run was limited by.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Callable

import aetcd

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from tests.integration.conftest import ApiServerProcess

CONCURRENCY = 32
CREATES = 3000  # per round
ROUNDS = 3
STEADY_RPS = 100
STEADY_SECONDS = 5
WATCHERS = 100
WATCH_WRITES = 100


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _configmap(ns: str, name: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name = name
    cm.metadata.namespace = ns
    cm.metadata.labels["bench"] = "yes"
    cm.data["key"] = "value"
    return cm


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _in_parallel(n_total: int, concurrency: int, op: Callable[[int], "asyncio.Future"]) -> float:
    """Run op(i) for i in range(n_total) with `concurrency` workers; returns seconds."""
    counter = iter(range(n_total))

    async def worker():
        for i in counter:
            await op(i)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


class _CpuMeter:
    """CPU seconds used by the given processes and by this one over a block."""

    def __init__(self, **pids: int):
        self.pids = pids
        self.used: dict[str, float] = {}

    def __enter__(self) -> "_CpuMeter":
        self._start = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        self._own = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.used = {name: _cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        self.used["client"] = time.process_time() - self._own


async def raw_etcd_puts(endpoint: str, etcd_pid: int) -> tuple[float, dict[str, float]]:
    """Puts per second, and CPU seconds per put of etcd and of this client."""
    host, port = endpoint.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port)) as etcd:
        value = _configmap("bench", "x").SerializeToString()
        prefix = f"/bench-raw/{uuid.uuid4().hex}/".encode()
        await etcd.put(prefix + b"warm-up", value)
        with _CpuMeter(etcd=etcd_pid) as meter:
            seconds = await _in_parallel(CREATES, CONCURRENCY,
                                         lambda i: etcd.put(prefix + str(i).encode(), value))
        await etcd.delete_prefix(prefix)
    return CREATES / seconds, {k: v / CREATES for k, v in meter.used.items()}


async def api_creates(server: ApiServerProcess, client: ApiClient, ns: str,
                      prefix: str = "cm-") -> tuple[float, dict[str, float]]:
    """Creates per second, and CPU seconds per create of the API server, etcd and this client."""
    with _CpuMeter(apiserver=server.proc.pid, etcd=server.etcd.pid) as meter:
        seconds = await _in_parallel(CREATES, CONCURRENCY,
                                     lambda i: client.create(_configmap(ns, f"{prefix}{i}")))
    return CREATES / seconds, {k: v / CREATES for k, v in meter.used.items()}


async def throughput(server: ApiServerProcess, client: ApiClient, ns: str, report) -> None:
    """Raw etcd puts and API creates, ROUNDS times back to back."""
    raw_rates, api_rates, ratios = [], [], []
    raw_cpu: list[dict[str, float]] = []
    api_cpu: list[dict[str, float]] = []
    for r in range(ROUNDS):
        raw, cpu = await raw_etcd_puts(server.etcd.endpoint, server.etcd.pid)
        raw_rates.append(raw)
        raw_cpu.append(cpu)
        rate, cpu = await api_creates(server, client, ns, prefix=f"cm-{r}-")
        api_rates.append(rate)
        api_cpu.append(cpu)
        ratios.append(rate / raw)

    def us(samples: list[dict[str, float]], name: str) -> float:
        return statistics.median(s[name] for s in samples) * 1e6

    rounds = f"concurrency {CONCURRENCY}, median of {ROUNDS} rounds"
    report("etcd_raw_puts_per_second", statistics.median(raw_rates), f"puts/s ({rounds})")
    report("api_creates_per_second", statistics.median(api_rates), f"creates/s ({rounds})")
    report("api_creates_to_raw_etcd_ratio", statistics.median(ratios),
           "ratio (median of the rounds: " + ", ".join(f"{x:.3f}" for x in ratios) + ")")
    report("apiserver_cpu_per_create", us(api_cpu, "apiserver"), "us (API server process, all threads)")
    report("etcd_cpu_per_create", us(api_cpu, "etcd"), f"us (per raw put: {us(raw_cpu, 'etcd'):.0f} us)")
    report("bench_client_cpu_per_create", us(api_cpu, "client"),
           f"us (per raw put: {us(raw_cpu, 'client'):.0f} us)")


async def steady_latency(client: ApiClient, ns: str) -> tuple[list[float], list[float]]:
    """Open loop: a create and a get every 1/STEADY_RPS s, each timed alone."""
    creates: list[float] = []
    gets: list[float] = []
    tasks = []

    async def one(i: int):
        t0 = time.perf_counter()
        await client.create(_configmap(ns, f"steady-{i}"))
        creates.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await client.get("configmaps", f"steady-{i}", ns)
        gets.append(time.perf_counter() - t0)

    start = time.perf_counter()
    for i in range(STEADY_RPS * STEADY_SECONDS):
        delay = start + i / STEADY_RPS - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return creates, gets


async def watch_delivery(address: str, ns: str) -> list[float]:
    """WATCHERS clients watch one namespace; each write's delay to each watcher."""
    written: dict[str, float] = {}
    delays: list[float] = []
    clients = [ApiClient(address) for _ in range(4)]
    writer = ApiClient(address)
    ready = asyncio.Semaphore(0)
    done = asyncio.Event()
    remaining = WATCHERS * WATCH_WRITES

    async def watcher(client: ApiClient, first_rv: str):
        nonlocal remaining
        stream = client.watch("configmaps", namespace=ns, resource_version=first_rv,
                              allow_bookmarks=False)
        ready.release()
        async for ev in stream:
            if ev.type == "ADDED":
                delays.append(time.perf_counter() - written[ev.object.metadata.name])
                remaining -= 1
                if remaining == 0:
                    done.set()
                if ev.object.metadata.name == f"w-{WATCH_WRITES - 1}":
                    return

    probe = await writer.create(_configmap(ns, "w-start"))
    tasks = [asyncio.create_task(watcher(clients[i % len(clients)], probe.metadata.resource_version))
             for i in range(WATCHERS)]
    for _ in range(WATCHERS):
        await ready.acquire()
    await asyncio.sleep(0.5)
    for i in range(WATCH_WRITES):
        name = f"w-{i}"
        written[name] = time.perf_counter()
        await writer.create(_configmap(ns, name))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(done.wait(), 60)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in (*clients, writer):
        await c.close()
    return delays


async def run(tmp: Path, report) -> None:
    server = ApiServerProcess(tmp)
    try:
        await asyncio.to_thread(server.start)
        client = ApiClient(server.address)
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = "bench"
        await client.create(ns)

        await throughput(server, client, "bench", report)

        c_lat, g_lat = await steady_latency(client, "bench")
        report("create_latency_p50_at_100rps", _pct(c_lat, 50) * 1000, "ms")
        report("create_latency_p99_at_100rps", _pct(c_lat, 99) * 1000, "ms")
        report("get_latency_p50_at_100rps", _pct(g_lat, 50) * 1000, "ms")
        report("get_latency_p99_at_100rps", _pct(g_lat, 99) * 1000, "ms")

        delays = await watch_delivery(server.address, "bench")
        report("watch_delivery_p50_100_watchers", _pct(delays, 50) * 1000, "ms")
        report("watch_delivery_p99_100_watchers", _pct(delays, 99) * 1000, "ms")
        report("watch_events_delivered", float(len(delays)), "events")
        await client.close()
    finally:
        await asyncio.to_thread(server.shutdown)
