"""Pods on two nodes reach each other, in host-gw and in VXLAN mode.

Each node is a network namespace running its own network service process
(`--netns`), following Nodes on a real API server (with its etcd). In
host-gw mode the nodes share an L2 segment (a veth pair); in VXLAN mode
they sit on two different subnets joined by a router namespace, where
host-gw could not work. The tests create the Node objects themselves, as
the node agents and the node IPAM controller would.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from tests.e2e.test_network import (  # noqa: F401 - fixtures
    links,
    namespaces,
    ping,
    pod_ip,
    pytestmark,
    routes,
    services,
    sh,
    tcp_get,
    tcp_servers,
)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    from tests.integration.conftest import start_api_server
    server = start_api_server(tmp_path_factory, "network-apiserver")
    try:
        yield server
    finally:
        server.shutdown()


class Nodes:
    """Node objects created for one test, deleted after it."""

    def __init__(self, address: str):
        self.address = address
        self.names: list[str] = []

    def _run(self, coro_fn):
        async def go():
            async with ApiClient(self.address) as client:
                return await coro_fn(client)
        return asyncio.run(go())

    def create(self, name: str, pod_cidr: str, internal_ip: str) -> None:
        async def go(client):
            node = core_pb2.Node(api_version="v1", kind="Node")
            node.metadata.name = name
            node.metadata.labels["kubernetes.io/hostname"] = name
            node.spec.pod_cidr = pod_cidr
            node.spec.pod_cidrs.append(pod_cidr)
            created = await client.create(node)
            created.status.addresses.add(type="InternalIP", address=internal_ip)
            created.status.addresses.add(type="Hostname", address=name)
            await client.update_status(created)
        self._run(go)
        self.names.append(name)

    def delete(self, name: str) -> None:
        async def go(client):
            await client.delete("nodes", name, "")
        self._run(go)
        self.names.remove(name)

    def cleanup(self) -> None:
        for name in list(self.names):
            try:
                self.delete(name)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


@pytest.fixture
def nodes(api_server):
    n = Nodes(api_server.address)
    try:
        yield n
    finally:
        n.cleanup()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def has_route(ns: str, cidr: str) -> bool:
    return any(r.get("dst") == cidr for r in routes(ns))


def shared_lan(namespaces, n1: str, n2: str) -> tuple[str, str]:
    """One L2 segment: a veth pair eth1 <-> eth1, 192.168.77.1/.2."""
    sh("ip", "link", "add", "eth1", "netns", n1, "type", "veth", "peer", "name", "eth1", "netns", n2)
    for ns, addr in ((n1, "192.168.77.1/24"), (n2, "192.168.77.2/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth1")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
    return "192.168.77.1", "192.168.77.2"


def routed_lans(namespaces, n1: str, n2: str) -> tuple[str, str]:
    """Two subnets (192.168.71.0/24, 192.168.72.0/24) joined by a router namespace."""
    router = namespaces.add("rtr")
    sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for ns, net in ((n1, "71"), (n2, "72")):
        sh("ip", "link", "add", "eth1", "netns", ns, "type", "veth", "peer", "name", f"to{net}", "netns", router)
        sh("ip", "-n", router, "addr", "add", f"192.168.{net}.1/24", "dev", f"to{net}")
        sh("ip", "-n", router, "link", "set", f"to{net}", "up")
        sh("ip", "-n", ns, "addr", "add", f"192.168.{net}.2/24", "dev", "eth1")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", f"192.168.{net}.1")
    return "192.168.71.2", "192.168.72.2"


@pytest.mark.parametrize("mode,cidr_a,cidr_b", [("host-gw", "10.244.1.0/24", "10.244.2.0/24"),
                                                 ("vxlan", "10.244.3.0/24", "10.244.4.0/24")],
                         ids=["host-gw", "vxlan"])
def test_pods_reach_each_other_across_nodes(mode, cidr_a, cidr_b, api_server, nodes, namespaces, services,
                                            tcp_servers):
    n1, n2 = namespaces.add("n1"), namespaces.add("n2")
    ip1, ip2 = (shared_lan if mode == "host-gw" else routed_lans)(namespaces, n1, n2)
    name_a, name_b = f"net-{namespaces.run}-a", f"net-{namespaces.run}-b"
    nodes.create(name_a, cidr_a, ip1)
    nodes.create(name_b, cidr_b, ip2)
    svc_a = services(name_a, n1, "--server", api_server.address, "--mode", mode)
    svc_b = services(name_b, n2, "--server", api_server.address, "--mode", mode)
    wait_for(lambda: svc_a.status().pod_cidr == cidr_a and svc_b.status().pod_cidr == cidr_b,
             what="pod CIDRs from the Nodes")
    wait_for(lambda: has_route(n1, cidr_b) and has_route(n2, cidr_a), what="routes to the other node")
    if mode == "vxlan":
        assert links(n1)["kubeling.vxlan"]["linkinfo"]["info_kind"] == "vxlan"

    pa, pc = namespaces.add("pa"), namespaces.add("pc")
    pb = namespaces.add("pb")
    ip_a, ip_c = pod_ip(svc_a.add_ok("ca", pa)), pod_ip(svc_a.add_ok("cc", pc))
    ip_b = pod_ip(svc_b.add_ok("cb", pb))
    if mode == "vxlan":
        assert links(pa)["eth0"]["mtu"] == 1450  # room for the VXLAN header

    # Same node, and across nodes, both ways: ICMP and TCP, with pod addresses kept.
    assert ping(pa, ip_c)
    assert ping(pa, ip_b) and ping(pb, ip_a)
    tcp_servers(pb, 7000)
    tcp_servers(pa, 7000)
    assert tcp_get(pa, ip_b, 7000) == f"hello from {pb} to {ip_a}"
    assert tcp_get(pb, ip_a, 7000) == f"hello from {pa} to {ip_b}"
    # Leaving the cluster network (to the other node's own address) is masqueraded.
    tcp_servers(n2, 7100, ip2)
    assert tcp_get(pa, ip2, 7100) == f"hello from {n2} to {ip1}"

    # A node that goes away takes its route with it.
    nodes.delete(name_b)
    wait_for(lambda: not has_route(n1, cidr_b), what="the route to the deleted node to go")
    assert not ping(pa, ip_b)

    for svc, cid, pod in ((svc_a, "ca", pa), (svc_a, "cc", pc), (svc_b, "cb", pb)):
        assert not svc.delete(cid, pod).HasField("error")
