"""Cluster IPs and node ports: allocated by the API server, kept in etcd,
never handed out twice (not even by two API servers), released on delete."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import yaml

from kubeling import objects
from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import InvalidError, NotFoundError
from kubeling.local.etcd_server import find_free_port

from .conftest import ROOT

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")


def service(name: str, ns: str, *, node_port: bool = False, cluster_ip: str = "",
            ports: list[dict] | None = None) -> core_pb2.Service:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"selector": {"app": name},
                    "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}]}}
    if node_port:
        doc["spec"]["type"] = "NodePort"
    if cluster_ip:
        doc["spec"]["clusterIP"] = cluster_ip
    return objects.from_dict(doc)


@pytest.fixture
async def client(api_server, namespace_name):
    c = ApiClient(api_server.address)
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = namespace_name
    await c.create(ns)
    yield c
    await c.close()


async def test_kubernetes_service_points_at_the_api_server(client):
    svc = await client.get("services", "kubernetes", "default")
    assert svc.spec.cluster_ip == "10.96.0.1"
    assert svc.spec.ports[0].port == 443


async def test_services_get_distinct_cluster_ips_and_node_ports(client, namespace_name):
    made = await asyncio.gather(*(client.create(service(f"s{i}", namespace_name, node_port=True))
                                  for i in range(20)))
    ips = [s.spec.cluster_ip for s in made]
    ports = [s.spec.ports[0].node_port for s in made]
    assert len(set(ips)) == 20 and len(set(ports)) == 20
    assert all(ipaddress.ip_address(ip) in SERVICE_CIDR for ip in ips)
    assert all(30000 <= p <= 32767 for p in ports)
    assert all(list(s.spec.cluster_ips) == [s.spec.cluster_ip] for s in made)


async def test_headless_service_gets_no_address(client, namespace_name):
    svc = await client.create(service("headless", namespace_name, cluster_ip="None"))
    assert svc.spec.cluster_ip == "None"


@pytest.mark.parametrize("field,value,message", [
    ("clusterIP", "10.1.2.3", "not in the valid range"),
    ("nodePort", 80, "not in the valid range"),
], ids=["ip-out-of-range", "node-port-out-of-range"])
async def test_requests_outside_the_ranges_are_refused(client, namespace_name, field, value, message):
    if field == "clusterIP":
        svc = service("bad", namespace_name, cluster_ip=value)
    else:
        svc = service("bad", namespace_name, node_port=True,
                      ports=[{"port": 80, "targetPort": 8080, "nodePort": value}])
    with pytest.raises(InvalidError, match=message):
        await client.create(svc)
    with pytest.raises(NotFoundError):
        await client.get("services", "bad", namespace_name)


async def test_taken_address_and_port_are_refused_and_freed_on_delete(client, namespace_name):
    first = await client.create(service("first", namespace_name, node_port=True))
    ip, port = first.spec.cluster_ip, first.spec.ports[0].node_port
    with pytest.raises(InvalidError, match="provided IP is already allocated"):
        await client.create(service("second", namespace_name, cluster_ip=ip))
    with pytest.raises(InvalidError, match="provided port is already allocated"):
        await client.create(service("second", namespace_name, node_port=True,
                                    ports=[{"port": 80, "targetPort": 80, "nodePort": port}]))
    # A refused create leaves nothing claimed: the second's own pick is free again.
    await client.delete("services", "first", namespace_name)
    again = await client.create(service("second", namespace_name, node_port=True, cluster_ip=ip,
                                        ports=[{"port": 80, "targetPort": 80, "nodePort": port}]))
    assert (again.spec.cluster_ip, again.spec.ports[0].node_port) == (ip, port)


async def test_update_without_ip_or_node_port_keeps_them(client, namespace_name):
    made = await client.create(service("keep", namespace_name, node_port=True))
    manifest = service("keep", namespace_name, node_port=True)  # as kubectl apply sends it
    manifest.metadata.resource_version = made.metadata.resource_version
    manifest.metadata.labels["tier"] = "front"
    updated = await client.update(manifest)
    assert updated.spec.cluster_ip == made.spec.cluster_ip
    assert updated.spec.ports[0].node_port == made.spec.ports[0].node_port


async def test_switching_to_cluster_ip_releases_the_node_port(client, namespace_name):
    made = await client.create(service("switch", namespace_name, node_port=True))
    port = made.spec.ports[0].node_port
    made.spec.type = "ClusterIP"
    made.spec.ports[0].node_port = 0
    await client.update(made)
    reuse = await client.create(service("reuse", namespace_name, node_port=True,
                                        ports=[{"port": 80, "targetPort": 80, "nodePort": port}]))
    assert reuse.spec.ports[0].node_port == port


def _second_api_server(etcd_endpoint: str, log_path) -> tuple[subprocess.Popen, str]:
    address = f"127.0.0.1:{find_free_port()}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.apiserver", "--etcd-servers",
                                 etcd_endpoint, "--bind", address], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while b"listening" not in log_path.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    channel.close()
    return proc, address


async def test_two_api_servers_never_hand_out_the_same_address(api_server, client, namespace_name, tmp_path):
    proc, address = _second_api_server(api_server.etcd.endpoint, tmp_path / "apiserver-2.log")
    other = ApiClient(address)
    try:
        made = await asyncio.gather(*(
            (client if i % 2 else other).create(service(f"pair-{i}", namespace_name, node_port=True))
            for i in range(40)))
    finally:
        await other.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert len({s.spec.cluster_ip for s in made}) == 40
    assert len({s.spec.ports[0].node_port for s in made}) == 40
