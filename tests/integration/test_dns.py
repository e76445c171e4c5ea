"""The cluster DNS as a process (`python -m services.dns`) against the real
API server, queried over UDP and TCP with dnspython's client: Services,
headless Services, SRV, pods, NXDOMAIN, changes followed live, and names
outside the cluster domain forwarded to a tiny upstream DNS server this
test runs on loopback (or refused when there is none)."""

from __future__ import annotations

import asyncio
import random
import re
import time

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import NotFoundError

# --- a tiny upstream resolver ------------------------------------------------------

UPSTREAM_ANSWER = "192.0.2.1"


def upstream_reply(wire: bytes) -> bytes:
    """example.test A -> 192.0.2.1; anything else NXDOMAIN."""
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    question = query.question[0]
    if question.name.to_text().lower() == "example.test." and question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", UPSTREAM_ANSWER))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


class _Upstream(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(upstream_reply(data), addr)


@pytest.fixture
async def upstream():
    """(host, port) of a DNS server on loopback, UDP and TCP."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    async def serve_tcp(reader, writer):
        try:
            length = int.from_bytes(await reader.readexactly(2), "big")
            reply = upstream_reply(await reader.readexactly(length))
            writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
        finally:
            writer.close()

    tcp = await asyncio.start_server(serve_tcp, "127.0.0.1", port)
    try:
        yield ("127.0.0.1", port)
    finally:
        transport.close()
        tcp.close()
        await tcp.wait_closed()


# --- fixtures ---------------------------------------------------------------------

@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    namespace = core_pb2.Namespace()
    namespace.metadata.name = namespace_name
    await client.create(namespace)
    yield namespace_name
    try:
        await client.delete("namespaces", namespace_name, "")
    except NotFoundError:
        pass


async def start_dns(components, *args: str) -> tuple[str, int]:
    """Start a DNS server on a free loopback port; its (host, port)."""
    comp = components("services.dns", "--listen", "127.0.0.1:0", *args, name="dns")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(r"dns listening on ([\d.]+):(\d+)", comp.log_path.read_text(errors="replace"))
        if m:
            return m.group(1), int(m.group(2))
        assert comp.running, comp.log_tail()
        await asyncio.sleep(0.1)
    raise AssertionError(f"dns did not start:\n{comp.log_tail()}")


def cluster_ip() -> str:
    return f"10.96.{random.randint(100, 250)}.{random.randint(1, 254)}"


def make_service(name: str, namespace: str, ip: str, ports=(("http", 80, "TCP"),)):
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = ip
    if ip != "None":
        svc.spec.cluster_ips.append(ip)
    for port_name, port, protocol in ports:
        svc.spec.ports.add(name=port_name, port=port, protocol=protocol).target_port.number_value = port
    return svc


def make_endpoints(name: str, namespace: str, addresses, port=("pg", 5432)):
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, namespace
    if addresses:
        subset = ep.subsets.add()
        for ip, hostname in addresses:
            subset.addresses.add(ip=ip, hostname=hostname)
        subset.ports.add(name=port[0], port=port[1], protocol="TCP")
    return ep


async def query(server, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, server[0], port=server[1], timeout=3)
    return await dns.asyncquery.udp(q, server[0], port=server[1], timeout=3)


def records(response: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(response, section) for rd in rrset)


async def eventually(check, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- tests ----------------------------------------------------------------------------

async def test_services_headless_srv_and_pods(client, ns, components, upstream):
    web_ip = cluster_ip()
    await client.create(make_service("web", ns, web_ip, ports=(("http", 80, "TCP"), ("dns", 53, "UDP"))))
    await client.create(make_service("db", ns, "None", ports=(("pg", 5432, "TCP"),)))
    await client.create(make_endpoints("db", ns, [("10.244.1.3", ""), ("10.244.2.9", "db-0")]))
    server = await start_dns(components, "--upstream", f"{upstream[0]}:{upstream[1]}")

    for tcp in (False, True):
        r = await query(server, f"web.{ns}.svc.cluster.local", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert records(r) == [web_ip]
        assert r.answer[0].ttl == 5

    r = await query(server, f"db.{ns}.svc.cluster.local")
    assert records(r) == ["10.244.1.3", "10.244.2.9"]
    r = await query(server, f"db-0.db.{ns}.svc.cluster.local")
    assert records(r) == ["10.244.2.9"]

    r = await query(server, f"_http._tcp.web.{ns}.svc.cluster.local", "SRV")
    assert records(r) == [f"0 100 80 web.{ns}.svc.cluster.local."]
    assert records(r, "additional") == [web_ip]
    r = await query(server, f"_dns._udp.web.{ns}.svc.cluster.local", "SRV")
    assert records(r) == [f"0 100 53 web.{ns}.svc.cluster.local."]
    r = await query(server, f"_pg._tcp.db.{ns}.svc.cluster.local", "SRV")
    assert records(r) == [f"0 50 5432 10-244-1-3.db.{ns}.svc.cluster.local.",
                          f"0 50 5432 db-0.db.{ns}.svc.cluster.local."]

    r = await query(server, f"10-244-7-2.{ns}.pod.cluster.local")
    assert records(r) == ["10.244.7.2"]

    for missing in (f"nope.{ns}.svc.cluster.local", f"_nope._tcp.web.{ns}.svc.cluster.local",
                    "web.no-such-namespace.svc.cluster.local", "anything.cluster.local"):
        r = await query(server, missing)
        assert r.rcode() == dns.rcode.NXDOMAIN, missing
        assert [rr.rdtype for rr in r.authority] == [dns.rdatatype.SOA]

    # Outside the cluster domain: the upstream answers, over UDP and TCP.
    for tcp in (False, True):
        r = await query(server, "example.test", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and records(r) == [UPSTREAM_ANSWER]
        r = await query(server, "missing.test", tcp=tcp)
        assert r.rcode() == dns.rcode.NXDOMAIN


async def test_changes_are_followed(client, ns, components):
    server = await start_dns(components)
    ip = cluster_ip()
    await client.create(make_service("late", ns, ip))
    await client.create(make_service("hl", ns, "None", ports=(("pg", 5432, "TCP"),)))
    await client.create(make_endpoints("hl", ns, [("10.244.1.3", "")]))

    async def late_answers():
        r = await query(server, f"late.{ns}.svc.cluster.local")
        assert records(r) == [ip]
    await eventually(late_answers)

    current = await client.get("endpoints", "hl", ns)
    new = make_endpoints("hl", ns, [("10.244.1.3", ""), ("10.244.1.4", "")])
    new.metadata.resource_version = current.metadata.resource_version
    await client.update(new)

    async def both_endpoints():
        r = await query(server, f"hl.{ns}.svc.cluster.local")
        assert records(r) == ["10.244.1.3", "10.244.1.4"]
    await eventually(both_endpoints)

    await client.delete("services", "late", ns)

    async def gone():
        r = await query(server, f"late.{ns}.svc.cluster.local")
        assert r.rcode() == dns.rcode.NXDOMAIN
    await eventually(gone)


async def test_outside_names_are_refused_without_an_upstream(components):
    server = await start_dns(components, "--cluster-domain", "kube.test")
    r = await query(server, "example.test")
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
    r = await query(server, "nope.default.svc.kube.test")
    assert r.rcode() == dns.rcode.NXDOMAIN  # in its own domain: answered, not refused
    r = await query(server, "nope.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.REFUSED  # not its domain any more
