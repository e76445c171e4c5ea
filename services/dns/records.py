"""Cluster DNS records: pure lookups from a question to an answer, over the
Services and Endpoints the informers cache (Kubernetes' DNS specification,
the subset CoreDNS' kubernetes plugin serves by default):

- `<svc>.<ns>.svc.<domain>` A: the Service's clusterIP; for a headless
  Service (clusterIP None), the address of every ready endpoint.
- `<host>.<svc>.<ns>.svc.<domain>` A: one endpoint of a headless Service, by
  the pod's hostname (hostname + subdomain) or by its dashed IP (10-244-1-5).
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV: a named port; the target
  is the Service's name (with a clusterIP) or each endpoint's name
  (headless), with the A records of the targets as additional records.
- `<a-b-c-d>.<ns>.pod.<domain>` A: a.b.c.d (CoreDNS' "pods insecure").
- Names that exist with no data of the asked type (an AAAA for a Service,
  `<ns>.svc.<domain>`, the zone's apex) get NOERROR and no answer; names
  under the domain that do not exist get NXDOMAIN; both carry the zone's SOA
  so resolvers cache the negative answer for the TTL only.

Names are matched case-insensitively. Everything else (`is_cluster_name`
False) is the server's to forward or refuse.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from google.protobuf.message import Message

DEFAULT_TTL = 5


class ClusterData(Protocol):
    """What the records are made from (the informers' caches in the server)."""

    def service(self, namespace: str, name: str) -> Message | None: ...

    def endpoints(self, namespace: str, name: str) -> Message | None: ...

    def has_namespace(self, namespace: str) -> bool:
        """Whether any Service lives in `namespace`."""
        ...


@dataclass
class Answer:
    """The sections of a response to one question."""

    rcode: int = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    """One endpoint of a headless Service, with its DNS label."""

    label: str
    ip: str
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, number)


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def undashed(label: str) -> str | None:
    """a.b.c.d from "a-b-c-d", or None when it is not an IPv4 address."""
    try:
        return str(ipaddress.IPv4Address(label.replace("-", ".")))
    except ValueError:
        return None


def headless_targets(endpoints: Message | None) -> list[_Target]:
    """Ready endpoints of a headless Service, each under one label: the pod's
    hostname when it has one, else its dashed IP; sorted by label."""
    if endpoints is None:
        return []
    found: dict[str, dict] = {}
    for subset in endpoints.subsets:
        ports = [(p.name, (p.protocol or "TCP").lower(), p.port) for p in subset.ports]
        for address in subset.addresses:
            try:
                ip = str(ipaddress.IPv4Address(address.ip))
            except ValueError:
                continue
            label = (address.hostname or dashed(ip)).lower()
            entry = found.setdefault(label, {"ip": ip, "ports": {}})
            for port in ports:
                entry["ports"][port] = None
    return [_Target(label, v["ip"], tuple(v["ports"])) for label, v in sorted(found.items())]


class Records:
    """Answers for names in the cluster domain. Pure over `data`."""

    def __init__(self, data: ClusterData, domain: str = "cluster.local", ttl: int = DEFAULT_TTL):
        self.data = data
        self.domain = dns.name.from_text(domain)
        self.ttl = ttl
        self._soa = dns.rrset.from_text(
            self.domain, ttl, dns.rdataclass.IN, dns.rdatatype.SOA,
            f"ns.dns.{self.domain} hostmaster.{self.domain} 1 7200 1800 86400 {ttl}")

    def is_cluster_name(self, qname: dns.name.Name) -> bool:
        return qname.is_subdomain(self.domain)

    # --- building blocks ---

    def _a(self, name: dns.name.Name, ips) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(name, self.ttl, dns.rdataclass.IN, dns.rdatatype.A,
                                        list(ips))

    def _nodata(self) -> Answer:
        return Answer(dns.rcode.NOERROR, authority=[self._soa])

    def _nxdomain(self) -> Answer:
        return Answer(dns.rcode.NXDOMAIN, authority=[self._soa])

    def _name(self, *labels: str) -> dns.name.Name:
        return dns.name.Name([label.encode() for label in labels]).concatenate(self.domain)

    # --- the question ---

    def answer(self, qname: dns.name.Name, qtype: int) -> Answer:
        """The answer to (qname, IN, qtype) for a name in the cluster domain."""
        labels = tuple(label.decode("ascii", "replace").lower()
                       for label in qname.relativize(self.domain).labels)
        if not labels:
            if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
                return Answer(answer=[self._soa])
            return self._nodata()
        kind, rest = labels[-1], labels[:-1]
        if kind == "svc":
            return self._service_name(qname, qtype, rest)
        if kind == "pod":
            return self._pod_name(qname, qtype, rest)
        return self._nxdomain()

    def _pod_name(self, qname, qtype, rest) -> Answer:
        if len(rest) <= 1:  # pod.<domain>, <ns>.pod.<domain>
            return self._nodata()
        if len(rest) != 2 or (ip := undashed(rest[0])) is None:
            return self._nxdomain()
        if qtype not in (dns.rdatatype.A, dns.rdatatype.ANY):
            return self._nodata()
        return Answer(answer=[self._a(qname, [ip])])

    def _service_name(self, qname, qtype, rest) -> Answer:
        if not rest:  # svc.<domain>
            return self._nodata()
        namespace = rest[-1]
        if len(rest) == 1:
            return self._nodata() if self.data.has_namespace(namespace) else self._nxdomain()
        name = rest[-2]
        service = self.data.service(namespace, name)
        if service is None:
            return self._nxdomain()
        prefix = rest[:-2]
        if not prefix:
            return self._service(qname, qtype, service)
        if len(prefix) == 1 and not prefix[0].startswith("_"):
            return self._endpoint(qname, qtype, service, prefix[0])
        if all(p.startswith("_") for p in prefix) and len(prefix) <= 2:
            return self._srv(qname, qtype, service, prefix)
        return self._nxdomain()

    def _headless(self, service: Message) -> bool:
        return service.spec.cluster_ip == "None"

    def _service(self, qname, qtype, service) -> Answer:
        if qtype not in (dns.rdatatype.A, dns.rdatatype.ANY):
            return self._nodata()
        if self._headless(service):
            meta = service.metadata
            ips = sorted({t.ip for t in headless_targets(
                self.data.endpoints(meta.namespace, meta.name))}, key=ipaddress.IPv4Address)
        else:
            ips = [service.spec.cluster_ip] if _is_ipv4(service.spec.cluster_ip) else []
        if not ips:  # no clusterIP yet, or a headless Service with no ready pod
            return self._nodata()
        return Answer(answer=[self._a(qname, ips)])

    def _endpoint(self, qname, qtype, service, label) -> Answer:
        if not self._headless(service):
            return self._nxdomain()
        meta = service.metadata
        for target in headless_targets(self.data.endpoints(meta.namespace, meta.name)):
            if target.label == label:
                if qtype not in (dns.rdatatype.A, dns.rdatatype.ANY):
                    return self._nodata()
                return Answer(answer=[self._a(qname, [target.ip])])
        return self._nxdomain()

    def _srv(self, qname, qtype, service, prefix) -> Answer:
        """`_<port>._<proto>` (SRV) or `_<proto>` (an empty non-terminal)."""
        meta = service.metadata
        protocol = prefix[-1][1:]
        wanted = prefix[0][1:] if len(prefix) == 2 else None
        ports = [p for p in service.spec.ports
                 if p.name and (p.protocol or "TCP").lower() == protocol
                 and (wanted is None or p.name.lower() == wanted)]
        if not ports:
            return self._nxdomain()
        if wanted is None or qtype not in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            return self._nodata()
        port = ports[0]
        service_name = self._name(meta.name, meta.namespace, "svc")
        if not self._headless(service):
            if not _is_ipv4(service.spec.cluster_ip):
                return self._nodata()
            srv = dns.rrset.from_text(qname, self.ttl, dns.rdataclass.IN, dns.rdatatype.SRV,
                                      f"0 100 {port.port} {service_name}")
            return Answer(answer=[srv],
                          additional=[self._a(service_name, [service.spec.cluster_ip])])
        targets = [(t, number) for t in headless_targets(self.data.endpoints(meta.namespace, meta.name))
                   for name, proto, number in t.ports
                   if name.lower() == wanted and proto == protocol]
        if not targets:
            return self._nodata()
        weight = max(1, 100 // len(targets))
        srv = dns.rrset.from_text_list(
            qname, self.ttl, dns.rdataclass.IN, dns.rdatatype.SRV,
            [f"0 {weight} {number} {t.label}.{service_name}" for t, number in targets])
        additional = [self._a(dns.name.Name([t.label.encode()]).concatenate(service_name), [t.ip])
                      for t, _ in targets]
        return Answer(answer=[srv], additional=additional)


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True
