"""Network programming latency of the service proxy, as Kubernetes defines it:
from an Endpoints change in the API server until every node's nftables
holds it.

An API server (own etcd) and two "nodes": two network namespaces made here,
each with its own proxy (`python -m node_agent.proxy --netns NS`). Services
(one TCP port, no selector, clusterIP allocated by the API server) and their
Endpoints (two addresses each, from 10.244.0.0/16; nothing is ever
contacted, no packet is sent) are created directly through the API client,
32 at a time, growing the cluster to 10, 1000 and 5000 services. At each
size, once both proxies hold every service, CHANGES Endpoints updates are
made one after the other, each adding an address to a random service; a
change's latency runs from just before the update call until BOTH nodes'
tables hold the new endpoint.

Polling is cheap and exact: the new address shows as a jump to the chain
`ep-<ns>/<name>/tcp/http__<ip>/8080` in the service port's chain
`svc-<ns>/<name>/tcp/http` (names from `node_agent.proxy.rules`), and that
one chain is read with a netlink rule dump filtered by table and chain, on
a socket opened in the node's namespace, every POLL_INTERVAL. (`nft list
chain` would do, but nft 1.0 loads its whole cache first: about 40 ms per
call with 5000 services, too slow and too heavy to poll both nodes every
10 ms.) The first sighting at each size is checked against `nft list chain`.

Changes are spaced by more than the proxy's minimum sync interval (0.2 s),
so each is measured alone; changes arriving faster are batched by the proxy
and wait up to that interval more. The sync time of one changed service is
the proxy's own figure (render + `nft -f`), from its log line `synced 1
service(s) in X ms (partial, N in total)`.

    .venv/bin/python -m tests.bench proxy      (root; ip and nft)
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from node_agent.proxy import rules
from tests.integration.conftest import ApiServerProcess, Component

SIZES = (10, 1000, 5000)
CHANGES = 50
CREATE_CONCURRENCY = 32
POLL_INTERVAL = 0.01
GAP = (0.25, 0.45)           # seconds between changes (the proxy's minimum interval is 0.2)
CHANGE_TIMEOUT = 30.0
INITIAL_SYNC_TIMEOUT = 180.0
NAMESPACE = "bench"
PORT_NAME, SERVICE_PORT, TARGET_PORT = "http", 80, 8080
POD_NET = int(ipaddress.IPv4Address("10.244.0.0"))
NODES = ("node-1", "node-2")


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _pod_ip(n: int) -> str:
    """The n-th test endpoint address in 10.244.0.0/16 (skipping .0 and .255)."""
    return str(ipaddress.IPv4Address(POD_NET + (n // 254) * 256 + n % 254 + 1))


def _port_ident(i: int) -> str:
    return f"{NAMESPACE}/svc-{i}/tcp/{PORT_NAME}"


def _service_chain(i: int) -> str:
    return rules._name("svc", _port_ident(i))


def _endpoint_chain(i: int, ip: str) -> str:
    return rules._name("ep", f"{_port_ident(i)}__{ip}/{TARGET_PORT}")


def _service(i: int) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = f"svc-{i}", NAMESPACE
    svc.spec.type = "ClusterIP"
    port = svc.spec.ports.add(name=PORT_NAME, port=SERVICE_PORT, protocol="TCP")
    port.target_port.number_value = TARGET_PORT
    return svc


def _endpoints(i: int, ips: list[str]) -> core_pb2.Endpoints:
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = f"svc-{i}", NAMESPACE
    subset = ep.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    subset.ports.add(name=PORT_NAME, port=TARGET_PORT, protocol="TCP")
    return ep


# --- reading one chain of a namespace's kubeling table over netlink ---------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_NETLINK_NETFILTER = 12
_NFT_GETRULE = (10 << 8) | 7          # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NFPROTO_IPV4 = 2
_NFTA_RULE_TABLE, _NFTA_RULE_CHAIN = 1, 2


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _nlattr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


class ChainReader:
    """A netfilter netlink socket in network namespace `netns`; `rules(chain)`
    dumps the rules of one chain of `ip kubeling` (the kernel filters the
    dump by table and chain, so the cost does not grow with the table)."""

    def __init__(self, netns: str):
        before = os.readlink("/proc/thread-self/ns/net")
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
            finally:
                _setns(own)  # never leave this thread in the node's namespace
        finally:
            os.close(own)
            os.close(target)
        if os.readlink("/proc/thread-self/ns/net") != before:
            raise RuntimeError("could not return to the benchmark's own network namespace")
        self.sock.bind((0, 0))
        self.sock.settimeout(2.0)
        self.seq = 0

    def rules(self, chain: str) -> bytes | None:
        """The raw netlink rule messages of `chain` (empty, or None, when the
        chain is not there)."""
        self.seq += 1
        payload = (struct.pack("=BBH", _NFPROTO_IPV4, 0, 0)
                   + _nlattr(_NFTA_RULE_TABLE, rules.TABLE.encode() + b"\0")
                   + _nlattr(_NFTA_RULE_CHAIN, chain.encode() + b"\0"))
        self.sock.send(struct.pack("=IHHII", 16 + len(payload), _NFT_GETRULE,
                                   _NLM_F_REQUEST | _NLM_F_DUMP, self.seq, 0) + payload)
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    raise RuntimeError("malformed netlink message")
                if seq == self.seq:
                    if kind == _NLMSG_DONE:
                        return b"".join(out)
                    if kind == _NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + 16)[0]
                        if code not in (0, errno.ENOENT):
                            raise OSError(code, f"netlink rule dump of {chain}: {os.strerror(code)}")
                        if code == errno.ENOENT:
                            return None
                    else:
                        out.append(data[offset + 16:offset + length])
                offset += (length + 3) & ~3

    def has(self, chain: str, needle: bytes) -> bool:
        got = self.rules(chain)
        return got is not None and needle in got

    def close(self) -> None:
        self.sock.close()


def _jump_to(chain: str) -> bytes:
    """How a jump/goto to `chain` shows in a rule dump (the verdict's chain name)."""
    return chain.encode() + b"\0"


# --- the nodes ------------------------------------------------------------------------

def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


class Node:
    def __init__(self, name: str, netns: str, log_path: Path):
        self.name = name
        self.netns = netns
        self.log_path = log_path
        self.proxy: Component | None = None
        self.reader: ChainReader | None = None
        self.created = False


async def _wait_for_log(comp: Component, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not comp.running:
            raise RuntimeError(f"proxy exited:\n{comp.log_tail()}")
        if text in comp.log_path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"proxy did not log {text!r}:\n{comp.log_tail()}")


_SYNCED = re.compile(r"synced (\d+) service\(s\) in ([\d.]+) ms \((full|partial), (\d+) in total\)")


def _syncs(node: Node, offset: int) -> list[tuple[int, float, str, int]]:
    """(changed, ms, kind, total) of each sync the proxy logged after byte `offset`."""
    with open(node.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [(int(m[1]), float(m[2]), m[3], int(m[4])) for m in _SYNCED.finditer(text)]


def _log_size(node: Node) -> int:
    try:
        return node.log_path.stat().st_size
    except OSError:
        return 0


# --- the benchmark --------------------------------------------------------------------

class Cluster:
    """Services 0..count-1 with their Endpoints, as last written."""

    def __init__(self, client: ApiClient, nodes: list[Node]):
        self.client = client
        self.nodes = nodes
        self.endpoints: list[core_pb2.Endpoints] = []
        self.next_ip = 20000  # extra addresses; service i starts with 2i and 2i+1

    async def grow(self, count: int) -> float:
        """Create services up to `count`; seconds taken."""
        first = len(self.endpoints)
        self.endpoints.extend([None] * (count - first))  # type: ignore[list-item]
        todo = iter(range(first, count))

        async def worker() -> None:
            for i in todo:
                # Endpoints first: the proxy renders each service once.
                self.endpoints[i] = await self.client.create(
                    _endpoints(i, [_pod_ip(2 * i), _pod_ip(2 * i + 1)]))
                await self.client.create(_service(i))

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
        return time.monotonic() - t0

    async def wait_programmed(self, first: int, count: int) -> float:
        """Until both nodes hold services first..count-1 with their endpoints."""
        t0 = time.monotonic()
        pending = {(node.name, i) for node in self.nodes for i in range(first, count)}
        by_name = {node.name: node for node in self.nodes}
        while True:
            for name, i in sorted(pending):
                ep = self.endpoints[i]
                chain_rules = by_name[name].reader.rules(_service_chain(i))
                if chain_rules is not None and all(
                        _jump_to(_endpoint_chain(i, a.ip)) in chain_rules
                        for s in ep.subsets for a in s.addresses):
                    pending.discard((name, i))
                await asyncio.sleep(0)
            if not pending:
                return time.monotonic() - t0
            if time.monotonic() - t0 > INITIAL_SYNC_TIMEOUT:
                raise RuntimeError(f"proxies did not program {len(pending)} service(s) in "
                                   f"{INITIAL_SYNC_TIMEOUT:.0f} s:\n"
                                   + "\n".join(n.proxy.log_tail(10) for n in self.nodes))
            for node in self.nodes:
                if not node.proxy.running:
                    raise RuntimeError(f"proxy of {node.name} exited:\n{node.proxy.log_tail()}")
            await asyncio.sleep(0.5)

    async def change(self, count: int) -> tuple[float, float, dict[str, float], int, str]:
        """Add an address to a random service's Endpoints; (latency, update call,
        per-node sighting, service, address), times in seconds from the call."""
        i = random.randrange(count)
        ip = _pod_ip(self.next_ip)
        self.next_ip += 1
        new = core_pb2.Endpoints()
        new.CopyFrom(self.endpoints[i])
        new.subsets[0].addresses.add(ip=ip)
        chain, needle = _service_chain(i), _jump_to(_endpoint_chain(i, ip))
        t0 = time.monotonic()
        self.endpoints[i] = await self.client.update(new)
        call = time.monotonic() - t0
        seen: dict[str, float] = {}
        while True:
            for node in self.nodes:
                if node.name not in seen and node.reader.has(chain, needle):
                    seen[node.name] = time.monotonic() - t0
            if len(seen) == len(self.nodes):
                return max(seen.values()), call, seen, i, ip
            if time.monotonic() - t0 > CHANGE_TIMEOUT:
                missing = [n for n in self.nodes if n.name not in seen]
                raise RuntimeError(
                    f"endpoint {ip} of svc-{i} not programmed on "
                    f"{', '.join(n.name for n in missing)} after {CHANGE_TIMEOUT:.0f} s:\n"
                    + "\n".join(n.proxy.log_tail(10) for n in missing))
            await asyncio.sleep(POLL_INTERVAL)


def _check_with_nft(node: Node, chain: str, ip: str) -> None:
    """The netlink reading agrees with nft itself."""
    out = _sh("ip", "netns", "exec", node.netns, "nft", "list", "chain", rules.FAMILY,
              rules.TABLE, chain).stdout
    if f"__{ip}/{TARGET_PORT}" not in out:
        raise RuntimeError(f"nft list chain {chain} on {node.name} lacks {ip}:\n{out}")


async def _measure(cluster: Cluster, count: int, report) -> None:
    offsets = {node.name: _log_size(node) for node in cluster.nodes}
    latencies, calls, per_node = [], [], {n.name: [] for n in cluster.nodes}
    for k in range(CHANGES):
        latency, call, seen, i, ip = await cluster.change(count)
        latencies.append(latency)
        calls.append(call)
        for name, t in seen.items():
            per_node[name].append(t)
        if k == 0:
            for node in cluster.nodes:
                await asyncio.to_thread(_check_with_nft, node, _service_chain(i), ip)
        await asyncio.sleep(random.uniform(*GAP))
    syncs = [ms for node in cluster.nodes for changed, ms, kind, total
             in _syncs(node, offsets[node.name]) if changed == 1 and kind == "partial"]
    p50, p99 = _pct(latencies, 50) * 1000, _pct(latencies, 99) * 1000
    report(f"proxy_programming_latency_p50_{count}_services", p50, "ms")
    report(f"proxy_programming_latency_p99_{count}_services", p99, "ms")
    sync_p50 = statistics.median(syncs) if syncs else float("nan")
    print(f"# proxy, {count} services: {CHANGES} changes; update call p50 "
          f"{_pct(calls, 50) * 1000:.1f} ms; per node p50 "
          + ", ".join(f"{n} {_pct(v, 50) * 1000:.1f} ms" for n, v in per_node.items())
          + f"; one-service sync (proxy log) p50 {sync_p50:.1f} ms, max "
          f"{max(syncs, default=float('nan')):.1f} ms over {len(syncs)} syncs", flush=True)
    if count == max(SIZES):
        if not syncs:
            raise RuntimeError("no one-service sync found in the proxies' logs")
        report(f"proxy_sync_one_changed_service_{count}", sync_p50, "ms (median, render + nft -f)")
    if p99 > 1000:
        worst = max(range(len(latencies)), key=latencies.__getitem__)
        print(f"# proxy, {count} services: p99 {p99:.0f} ms is over 1 s: the slowest change's "
              f"update call took {calls[worst] * 1000:.0f} ms and the nodes saw it after "
              + ", ".join(f"{v[worst] * 1000:.0f} ms" for v in per_node.values())
              + f" while one-service syncs take {sync_p50:.0f} ms (median); the rest is watch "
              f"delivery and CPU contention (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)", flush=True)


async def run(tmp: Path, report) -> None:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        raise RuntimeError("needs root, iproute2 and nftables")
    tag = uuid.uuid4().hex[:6]
    nodes = [Node(name, f"kpb-{tag}-{name}", tmp / f"proxy-{name}.log") for name in NODES]
    server = ApiServerProcess(tmp)
    client: ApiClient | None = None
    try:
        for node in nodes:
            _sh("ip", "netns", "add", node.netns)
            node.created = True
            _sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            node.reader = ChainReader(node.netns)
        await asyncio.to_thread(server.start)
        client = ApiClient(server.address)
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = NAMESPACE
        await client.create(ns)
        for node in nodes:
            node.proxy = Component("node_agent.proxy", [
                "--server", server.address, "--node-name", node.name, "--netns", node.netns,
                "--min-sync-interval", "0.2"], node.log_path).start()
        for node in nodes:
            await _wait_for_log(node.proxy, "proxy started", 60)

        cluster = Cluster(client, nodes)
        for count in SIZES:
            first = len(cluster.endpoints)
            created = await cluster.grow(count)
            programmed = await cluster.wait_programmed(first, count)
            print(f"# proxy: {count - first} services created in {created:.1f} s, "
                  f"on both nodes {programmed:.1f} s later", flush=True)
            await asyncio.sleep(1.0)  # let the proxies go idle
            await _measure(cluster, count, report)
    finally:
        errors: list[str] = []

        async def step(what: str, fn, *args) -> None:
            try:
                result = fn(*args)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as e:  # noqa: BLE001 - clean up the rest regardless
                errors.append(f"{what}: {type(e).__name__}: {e}")

        def stop_proxy(node: Node) -> None:
            node.proxy.stop()  # SIGTERM: it deletes its table on the way out
            if node.created:
                left = _sh("ip", "netns", "exec", node.netns, "nft", "list", "tables",
                           check=False).stdout
                if f"{rules.FAMILY} {rules.TABLE}" in left:
                    raise RuntimeError("it left its table behind")

        def delete_netns(node: Node) -> None:
            if node.reader is not None:
                node.reader.close()  # an open socket would keep the namespace alive
            if node.created:
                _sh("ip", "netns", "del", node.netns)

        if client is not None:
            await step("closing the client", client.close)
        for node in nodes:
            if node.proxy is not None:
                await step(f"stopping the proxy of {node.name}", asyncio.to_thread, stop_proxy, node)
        for node in nodes:
            await step(f"deleting namespace {node.netns}", delete_netns, node)
        await step("stopping the API server", asyncio.to_thread, server.shutdown)
        for e in errors:
            print(f"# proxy: cleanup: {e}", file=sys.stderr, flush=True)

if __name__ == "__main__":
    import tempfile

    def _print(name: str, value: float, unit: str) -> None:
        print(f"{name}: {value:.3f} {unit}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kubeling-bench-proxy-") as d:
        asyncio.run(run(Path(d), _print))
