"""Cluster DNS: records from Services and Endpoints (pure, table-driven),
and the server's handling of whole messages (no sockets)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from kubeling.api.v1 import core_pb2
from services.dns.__main__ import host_port
from services.dns.records import Records
from services.dns.server import DnsServer

# ------------------------------------------------------------------ builders


def make_service(name, namespace="default", cluster_ip="10.96.0.10", ports=(("http", 80, "TCP"),)):
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = cluster_ip
    for port_name, port, protocol in ports:
        svc.spec.ports.add(name=port_name, port=port, protocol=protocol)
    return svc


def make_endpoints(name, namespace="default", addresses=(), ports=(("http", 8080, "TCP"),),
                   not_ready=()):
    """addresses: ip or (ip, hostname)."""
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, namespace
    subset = ep.subsets.add()
    for a in addresses:
        ip, hostname = (a, "") if isinstance(a, str) else a
        subset.addresses.add(ip=ip, hostname=hostname)
    for ip in not_ready:
        subset.not_ready_addresses.add(ip=ip)
    for port_name, port, protocol in ports:
        subset.ports.add(name=port_name, port=port, protocol=protocol)
    return ep


class FakeData:
    def __init__(self, *objects):
        self.services, self.eps = {}, {}
        for obj in objects:
            target = self.services if isinstance(obj, core_pb2.Service) else self.eps
            target[(obj.metadata.namespace, obj.metadata.name)] = obj

    def service(self, namespace, name):
        return self.services.get((namespace, name))

    def endpoints(self, namespace, name):
        return self.eps.get((namespace, name))

    def has_namespace(self, namespace):
        return any(ns == namespace for ns, _ in self.services)


DATA = FakeData(
    make_service("web", ports=(("http", 80, "TCP"), ("dns", 53, "UDP"), ("", 9000, "TCP"))),
    make_endpoints("web", addresses=["10.244.1.5", "10.244.2.7"]),
    make_service("db", cluster_ip="None", ports=(("pg", 5432, "TCP"),)),
    make_endpoints("db", addresses=[("10.244.2.9", "db-0"), "10.244.1.3"],
                   ports=(("pg", 5432, "TCP"),), not_ready=["10.244.3.3"]),
    make_service("empty", cluster_ip="None"),
    make_service("pending", cluster_ip=""),
    make_service("api", namespace="prod", cluster_ip="10.96.5.5"),
)

A, AAAA, SRV, SOA, TXT = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV,
                          dns.rdatatype.SOA, dns.rdatatype.TXT)
NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN

CASES = {
    # name, type -> rcode, answer texts (sorted), additional texts (sorted)
    "service-a": ("web.default.svc.cluster.local", A, NOERROR, ["10.96.0.10"], []),
    "names-are-case-insensitive": ("WEB.Default.SVC.cluster.LOCAL", A, NOERROR, ["10.96.0.10"], []),
    "other-namespace": ("api.prod.svc.cluster.local", A, NOERROR, ["10.96.5.5"], []),
    "service-in-wrong-namespace": ("api.default.svc.cluster.local", A, NXDOMAIN, [], []),
    "missing-service": ("nope.default.svc.cluster.local", A, NXDOMAIN, [], []),
    "service-aaaa-is-nodata": ("web.default.svc.cluster.local", AAAA, NOERROR, [], []),
    "headless-a-ready-endpoints-only": (
        "db.default.svc.cluster.local", A, NOERROR, ["10.244.1.3", "10.244.2.9"], []),
    "headless-endpoint-by-hostname": ("db-0.db.default.svc.cluster.local", A, NOERROR, ["10.244.2.9"], []),
    "headless-endpoint-by-dashed-ip": (
        "10-244-1-3.db.default.svc.cluster.local", A, NOERROR, ["10.244.1.3"], []),
    "headless-not-ready-endpoint": ("10-244-3-3.db.default.svc.cluster.local", A, NXDOMAIN, [], []),
    "endpoint-name-of-a-cluster-ip-service": (
        "10-244-1-5.web.default.svc.cluster.local", A, NXDOMAIN, [], []),
    "headless-without-endpoints-is-nodata": ("empty.default.svc.cluster.local", A, NOERROR, [], []),
    "no-cluster-ip-yet-is-nodata": ("pending.default.svc.cluster.local", A, NOERROR, [], []),
    "srv-named-port": (
        "_http._tcp.web.default.svc.cluster.local", SRV, NOERROR,
        ["0 100 80 web.default.svc.cluster.local."], ["10.96.0.10"]),
    "srv-udp-port": (
        "_dns._udp.web.default.svc.cluster.local", SRV, NOERROR,
        ["0 100 53 web.default.svc.cluster.local."], ["10.96.0.10"]),
    "srv-wrong-protocol": ("_dns._tcp.web.default.svc.cluster.local", SRV, NXDOMAIN, [], []),
    "srv-unknown-port": ("_grpc._tcp.web.default.svc.cluster.local", SRV, NXDOMAIN, [], []),
    "srv-headless-one-per-endpoint": (
        "_pg._tcp.db.default.svc.cluster.local", SRV, NOERROR,
        ["0 50 5432 10-244-1-3.db.default.svc.cluster.local.",
         "0 50 5432 db-0.db.default.svc.cluster.local."],
        ["10.244.1.3", "10.244.2.9"]),
    "srv-name-asked-for-a": ("_http._tcp.web.default.svc.cluster.local", A, NOERROR, [], []),
    "proto-empty-non-terminal": ("_tcp.web.default.svc.cluster.local", A, NOERROR, [], []),
    "pod-a": ("10-244-1-5.default.pod.cluster.local", A, NOERROR, ["10.244.1.5"], []),
    "pod-not-an-ip": ("web-1.default.pod.cluster.local", A, NXDOMAIN, [], []),
    "pod-aaaa-is-nodata": ("10-244-1-5.default.pod.cluster.local", AAAA, NOERROR, [], []),
    "namespace-with-services": ("default.svc.cluster.local", A, NOERROR, [], []),
    "namespace-without-services": ("ghost.svc.cluster.local", A, NXDOMAIN, [], []),
    "svc-apex": ("svc.cluster.local", A, NOERROR, [], []),
    "zone-apex-soa": ("cluster.local", SOA, NOERROR,
                      ["ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"], []),
    "unknown-kind": ("web.default.foo.cluster.local", A, NXDOMAIN, [], []),
    "too-deep": ("a.b.web.default.svc.cluster.local", A, NXDOMAIN, [], []),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_records(case):
    qname, qtype, rcode, answers, additional = case
    records = Records(DATA)
    name = dns.name.from_text(qname)
    assert records.is_cluster_name(name)
    got = records.answer(name, qtype)
    assert got.rcode == rcode
    assert sorted(rd.to_text() for rrset in got.answer for rd in rrset) == answers
    assert sorted(rd.to_text() for rrset in got.additional for rd in rrset) == additional
    for rrset in got.answer + got.additional:
        assert rrset.ttl == 5
    if not answers:  # negative answers carry the SOA, for negative caching
        assert [rr.rdtype for rr in got.authority] == [SOA]


def test_srv_additional_records_name_the_targets():
    got = Records(DATA).answer(dns.name.from_text("_pg._tcp.db.default.svc.cluster.local"), SRV)
    names = sorted(rrset.name.to_text() for rrset in got.additional)
    assert names == ["10-244-1-3.db.default.svc.cluster.local.", "db-0.db.default.svc.cluster.local."]


def test_other_cluster_domain_and_ttl():
    records = Records(DATA, domain="kube.example", ttl=30)
    assert not records.is_cluster_name(dns.name.from_text("web.default.svc.cluster.local"))
    got = records.answer(dns.name.from_text("web.default.svc.kube.example"), A)
    assert [rrset.ttl for rrset in got.answer] == [30]


def test_host_port():
    assert host_port("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert host_port("[::1]:53") == ("::1", 53)
    assert host_port("10.0.0.1", 53) == ("10.0.0.1", 53)


# ------------------------------------------------------------------ whole messages


async def ask(server, qname, qtype="A", tcp=False, **kwargs):
    query = dns.message.make_query(qname, qtype, **kwargs)
    wire = await server.handle(query.to_wire(), tcp=tcp)
    return query, dns.message.from_wire(wire)


async def test_cluster_answers_are_authoritative():
    query, response = await ask(DnsServer(Records(DATA)), "web.default.svc.cluster.local")
    assert response.id == query.id and response.rcode() == NOERROR
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR
    assert response.answer[0].to_text() == "web.default.svc.cluster.local. 5 IN A 10.96.0.10"


async def test_outside_names_are_refused_without_an_upstream():
    _, response = await ask(DnsServer(Records(DATA)), "example.com")
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


async def test_unreachable_upstream_gives_servfail():
    server = DnsServer(Records(DATA), [("127.0.0.1", 9)], forward_timeout=0.3)
    _, response = await ask(server, "example.com")
    assert response.rcode() == dns.rcode.SERVFAIL


async def test_bad_messages():
    server = DnsServer(Records(DATA))
    assert await server.handle(b"\x01") is None  # not even a header
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff"
    response = dns.message.from_wire(await server.handle(garbage))
    assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR
    # responses are never answered (no loops between servers)
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    assert await server.handle(dns.message.make_response(query).to_wire()) is None
    query.set_opcode(dns.opcode.NOTIFY)
    response = dns.message.from_wire(await server.handle(query.to_wire()))
    assert response.rcode() == dns.rcode.NOTIMP


async def test_large_answers_are_truncated_over_udp_and_whole_over_tcp():
    ips = [f"10.244.{i // 200}.{i % 200 + 1}" for i in range(100)]
    data = FakeData(make_service("big", cluster_ip="None"), make_endpoints("big", addresses=ips))
    server = DnsServer(Records(data))
    _, response = await ask(server, "big.default.svc.cluster.local")
    assert response.flags & dns.flags.TC and not response.answer
    _, response = await ask(server, "big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert not response.flags & dns.flags.TC and len(response.answer[0]) == 100
    _, response = await ask(server, "big.default.svc.cluster.local", tcp=True)
    assert not response.flags & dns.flags.TC and len(response.answer[0]) == 100
