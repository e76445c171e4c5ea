"""The nftables rules of the proxy: pure functions from Service and Endpoints
objects to ruleset text, in the shape of kube-proxy's nftables mode.

Everything lives in one table, `ip kubeling`, which the proxy owns:

- Verdict maps send a packet to its service port's chain in one lookup,
  whatever the number of services: `service-ips` (clusterIP / external IP .
  protocol . port), `service-nodeports` (protocol . port, for packets to a
  local address of the node) and, for ports with no ready endpoint,
  `no-endpoint-services` / `no-endpoint-nodeports`, which lead to a reject.
- `svc-<ns>/<name>/<proto>/<port>` (one per service port) picks an endpoint
  at random with `numgen random` (see `balance`); with ClientIP affinity,
  a client found in an endpoint's affinity set goes to that endpoint first.
- `ext-<...>` (one per NodePort or external IP) marks the packet for
  masquerade (policy Cluster) and continues in the service chain; with
  externalTrafficPolicy Local it picks among this node's endpoints only and
  keeps the client's address.
- `ep-<...>__<ip>/<port>` (one per service port and endpoint) marks hairpin
  traffic (an endpoint reaching itself through its Service) for masquerade,
  records the client in the affinity set, and DNATs.
- Marked packets (mark 0x4000) are masqueraded in postrouting, so replies
  come back through this node; so are packets to a clusterIP from outside
  the cluster CIDR.
- The no-endpoint reject runs in prerouting too, before the routing
  decision: a node with no route to the service CIDR (no default route, as
  the nodes of `kubeling up`) would otherwise answer "network unreachable"
  before the forward hook is reached, instead of refusing the connection.

`render_service` renders one Service's part (cached by the syncer and
recomputed only when that Service or its Endpoints change); `full_ruleset`
and `partial_ruleset` assemble one `nft -f` transaction from those parts.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping

from google.protobuf.message import Message

FAMILY = "ip"
TABLE = "kubeling"

MASQ_MARK = "0x00004000"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as Kubernetes

# Chain and set names may be at most 256 bytes in the kernel; stay well under.
_MAX_NAME = 200

MAPS = {
    "service-ips": "type ipv4_addr . inet_proto . inet_service : verdict",
    "service-nodeports": "type inet_proto . inet_service : verdict",
    "no-endpoint-services": "type ipv4_addr . inet_proto . inet_service : verdict",
    "no-endpoint-nodeports": "type inet_proto . inet_service : verdict",
}

# The chains every ruleset has, whatever the services.
BASE_CHAINS = f"""\
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    jump masquerading
  }}
  chain filter-prerouting {{
    type filter hook prerouting priority -110; policy accept;
    ct state new jump service-endpoints-check
  }}
  chain filter-input {{
    type filter hook input priority -110; policy accept;
    ct state new jump nodeport-endpoints-check
    ct state new jump service-endpoints-check
  }}
  chain filter-forward {{
    type filter hook forward priority -110; policy accept;
    ct state new jump service-endpoints-check
  }}
  chain filter-output {{
    type filter hook output priority -110; policy accept;
    ct state new jump service-endpoints-check
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
  }}
  chain service-endpoints-check {{
    ip daddr . meta l4proto . th dport vmap @no-endpoint-services
  }}
  chain nodeport-endpoints-check {{
    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
  }}
  chain reject-chain {{
    reject with icmp type port-unreachable
  }}
  chain mark-for-masquerade {{
    meta mark set meta mark | {MASQ_MARK}
  }}
  chain masquerading {{
    meta mark & {MASQ_MARK} == 0 return
    meta mark set meta mark ^ {MASQ_MARK}
    masquerade fully-random
  }}
"""

BASE_CHAIN_NAMES = (
    "nat-prerouting", "nat-output", "nat-postrouting", "filter-prerouting", "filter-input",
    "filter-forward", "filter-output", "services", "service-endpoints-check", "nodeport-endpoints-check",
    "reject-chain", "mark-for-masquerade", "masquerading")


@dataclass(frozen=True)
class ProxyContext:
    """What the rules depend on besides the objects: this node and the cluster CIDR."""

    node_name: str = ""
    cluster_cidr: str = ""  # "" = unknown: traffic from outside it is not masqueraded


@dataclass(frozen=True)
class Endpoint:
    """One ready backend of one service port."""

    ip: str
    port: int
    node_name: str = ""


@dataclass
class ServiceRules:
    """The rendered part of one Service: its chains and affinity sets, and
    the map elements that lead to them. Treat as immutable once rendered."""

    chains: dict[str, list[str]] = field(default_factory=dict)  # name -> rules
    sets: dict[str, str] = field(default_factory=dict)          # name -> declaration body
    elements: dict[str, list[str]] = field(default_factory=dict)  # map name -> elements
    _text: str | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """The chain and set declarations, as lines inside a `table` block."""
        if self._text is None:
            parts = [f"  set {name} {{ {body} }}\n" for name, body in self.sets.items()]
            for name, rules in self.chains.items():
                parts.append(f"  chain {name} {{\n")
                parts.extend(f"    {r}\n" for r in rules)
                parts.append("  }\n")
            self._text = "".join(parts)
        return self._text

    @property
    def empty(self) -> bool:
        return not self.chains and not self.sets and not any(self.elements.values())


EMPTY = ServiceRules()


# ---------------------------------------------------------------- helpers


_UNSAFE = re.compile(r"[^A-Za-z0-9/_.-]")


def _name(prefix: str, ident: str) -> str:
    """A chain or set name; long ones keep a readable head and a hash.

    Validated names only hold characters nft accepts in an identifier; any
    other character (from an object that escaped validation) is replaced,
    with a hash keeping the name unique, so it cannot break the ruleset.
    """
    name = f"{prefix}-{ident}"
    if _UNSAFE.search(name):
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{_UNSAFE.sub('_', name)[:_MAX_NAME - 17]}.{digest}"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[:_MAX_NAME - 17]}.{digest}"
    return name


PROTOCOLS = ("tcp", "udp", "sctp")


def _protocol(value: str) -> str:
    return (value or "TCP").lower()


def _port_id(service: Message, port: Message) -> str:
    """`<ns>/<name>/<proto>/<port name or number>`: unique per service port.
    (Port names contain a letter, so a number cannot collide with a name.)"""
    meta = service.metadata
    return f"{meta.namespace}/{meta.name}/{_protocol(port.protocol)}/{port.name or port.port}"


@lru_cache(maxsize=65536)
def _packed_ipv4(value: str) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 address, or None. (Cached: the
    same addresses come back at every render, and ipaddress is slow.)"""
    try:
        return socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):
        return None


def is_ipv4(value: str) -> bool:
    return _packed_ipv4(value) is not None


def service_endpoints(service_port: Message, endpoints: Message | None) -> list[Endpoint]:
    """The ready endpoints of one service port, sorted by address.

    Endpoints list resolved port numbers under the Service port's name, so a
    named targetPort (which may resolve to different numbers on different
    pods) is taken from there, as kube-proxy does; not-ready addresses are
    never load-balanced to.
    """
    if endpoints is None:
        return []
    name = service_port.name
    protocol = _protocol(service_port.protocol)
    found: dict[tuple[str, int], Endpoint] = {}
    for subset in endpoints.subsets:
        for ep_port in subset.ports:
            if ep_port.name != name or _protocol(ep_port.protocol) != protocol:
                continue
            for address in subset.addresses:
                if not is_ipv4(address.ip) or not 0 < ep_port.port < 65536:
                    continue
                found[(address.ip, ep_port.port)] = Endpoint(address.ip, ep_port.port,
                                                             address.node_name)
    return sorted(found.values(), key=lambda e: (_packed_ipv4(e.ip), e.port))


def affinity_timeout(service: Message) -> int | None:
    """Seconds of ClientIP affinity, or None without affinity."""
    spec = service.spec
    if spec.session_affinity != "ClientIP":
        return None
    cfg = spec.session_affinity_config.client_ip
    if cfg.HasField("timeout_seconds") and cfg.timeout_seconds > 0:
        return cfg.timeout_seconds
    return DEFAULT_AFFINITY_TIMEOUT


def has_cluster_ip(service: Message) -> bool:
    """Whether the Service has a virtual IP the proxy serves (not headless,
    not ExternalName, IPv4)."""
    spec = service.spec
    return spec.type != "ExternalName" and is_ipv4(spec.cluster_ip)


def balance(chains: list[str]) -> list[str]:
    """Rules sending a new connection to one of `chains`, uniformly at random.

    Rule i (of n) takes `numgen random mod (n - i) == 0`, a fresh draw each:
    1/n, then 1/(n-1) of the rest, ... so each chain gets exactly 1/n.
    kube-proxy writes `numgen random mod n vmap { 0 : goto a, ... }`
    instead, but each such anonymous map is a kernel set, and the kernel
    names a new anonymous set by scanning every set of the table: loading
    5000 services that way takes about 20 s (this way about 2 s).
    """
    n = len(chains)
    lines = [f"numgen random mod {n - i} == 0 goto {c}" for i, c in enumerate(chains[:-1])]
    lines.append(f"goto {chains[-1]}")
    return lines


# ---------------------------------------------------------------- one Service


def render_service(service: Message | None, endpoints: Message | None,
                   ctx: ProxyContext) -> ServiceRules:
    """The rules of one Service (EMPTY for None, headless or ExternalName).

    Pure: the same Service, Endpoints and context give the same rules.
    """
    if service is None or not has_cluster_ip(service):
        return EMPTY
    spec = service.spec
    rules = ServiceRules(elements={name: [] for name in MAPS})
    cluster_ip = spec.cluster_ip
    external_ips = sorted({ip for ip in spec.external_ips if is_ipv4(ip)}, key=_packed_ipv4)
    node_ports = spec.type in ("NodePort", "LoadBalancer")
    timeout = affinity_timeout(service)
    external_local = spec.external_traffic_policy == "Local"
    internal_local = spec.internal_traffic_policy == "Local"

    for port in spec.ports:
        proto = _protocol(port.protocol)
        if not 0 < port.port < 65536 or proto not in PROTOCOLS:
            continue
        ident = _port_id(service, port)
        node_port = port.node_port if node_ports and 0 < port.node_port < 65536 else 0
        all_eps = service_endpoints(port, endpoints)
        local_eps = [e for e in all_eps if ctx.node_name and e.node_name == ctx.node_name]
        cluster_eps = local_eps if internal_local else all_eps
        external_eps = local_eps if external_local else all_eps

        # Endpoint chains (shared by the service and external chains).
        ep_chain: dict[Endpoint, str] = {}
        aff_set: dict[Endpoint, str] = {}
        for ep in {e: None for e in cluster_eps + external_eps}:
            ep_ident = f"{ident}__{ep.ip}/{ep.port}"
            chain = ep_chain[ep] = _name("ep", ep_ident)
            body = [f"ip saddr {ep.ip} jump mark-for-masquerade"]
            if timeout is not None:
                set_name = aff_set[ep] = _name(f"aff{timeout}", ep_ident)
                rules.sets[set_name] = (f"type ipv4_addr; flags dynamic,timeout; "
                                        f"timeout {timeout}s;")
                body.append(f"update @{set_name} {{ ip saddr }}")
            body.append(f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
            rules.chains[chain] = body

        def pick(eps: list[Endpoint]) -> list[str]:
            lines = [f"ip saddr @{aff_set[e]} goto {ep_chain[e]}" for e in eps if e in aff_set]
            return lines + balance([ep_chain[e] for e in eps])

        # ClusterIP.
        svc_chain = _name("svc", ident)
        if cluster_eps:
            body = []
            if ctx.cluster_cidr:
                # From outside the cluster (the node itself, another host):
                # the endpoint must answer through this node.
                body.append(f"ip daddr {cluster_ip} {proto} dport {port.port} "
                            f"ip saddr != {ctx.cluster_cidr} jump mark-for-masquerade")
            body.extend(pick(cluster_eps))
            rules.chains[svc_chain] = body
            rules.elements["service-ips"].append(
                f"{cluster_ip} . {proto} . {port.port} : goto {svc_chain}")
        else:
            rules.elements["no-endpoint-services"].append(
                f"{cluster_ip} . {proto} . {port.port} : goto reject-chain")

        # NodePort and external IPs: traffic from outside the cluster.
        if not node_port and not external_ips:
            continue
        if external_eps:
            ext_chain = _name("ext", ident)
            if external_local:
                # Keep the client's address: only this node's endpoints.
                rules.chains[ext_chain] = pick(external_eps)
            elif cluster_eps is external_eps:
                rules.chains[ext_chain] = ["jump mark-for-masquerade", f"goto {svc_chain}"]
            else:
                rules.chains[ext_chain] = ["jump mark-for-masquerade", *pick(external_eps)]
            if node_port:
                rules.elements["service-nodeports"].append(
                    f"{proto} . {node_port} : goto {ext_chain}")
            for ip in external_ips:
                rules.elements["service-ips"].append(
                    f"{ip} . {proto} . {port.port} : goto {ext_chain}")
        else:
            if node_port:
                rules.elements["no-endpoint-nodeports"].append(
                    f"{proto} . {node_port} : goto reject-chain")
            for ip in external_ips:
                rules.elements["no-endpoint-services"].append(
                    f"{ip} . {proto} . {port.port} : goto reject-chain")
    return rules


# ---------------------------------------------------------------- transactions


def _map_decl(name: str, elements: Iterable[str]) -> str:
    elements = list(elements)
    if not elements:
        return f"  map {name} {{ {MAPS[name]}; }}\n"
    joined = ",\n      ".join(elements)
    return f"  map {name} {{\n    {MAPS[name]}\n    elements = {{\n      {joined}\n    }}\n  }}\n"


def table_body(parts: Iterable[ServiceRules]) -> str:
    """Everything inside `table ip kubeling { ... }` for these services."""
    parts = list(parts)
    out = [BASE_CHAINS]
    for name in MAPS:
        out.append(_map_decl(name, (e for p in parts for e in p.elements.get(name, ()))))
    out.extend(p.text for p in parts)
    return "".join(out)


def delete_table() -> str:
    """Removes the table if it exists (and is harmless if it does not)."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


def full_ruleset(parts: Iterable[ServiceRules],
                 previous: Iterable[ServiceRules] | None = None) -> str:
    """One transaction that makes the table hold exactly `parts`.

    Without `previous` (what is in the kernel is unknown) the table is
    deleted and created anew. With `previous` (the parts this proxy applied
    last) it is flushed and refilled instead, which keeps affinity sets that
    are still wanted (and the clients they remember); chains and sets of
    `previous` that are no longer wanted are deleted at the end.
    """
    parts = list(parts)
    body = table_body(parts)
    if previous is None:
        return f"{delete_table()}table {FAMILY} {TABLE} {{\n{body}}}\n"
    chains = {c for p in parts for c in p.chains}
    sets = {s for p in parts for s in p.sets}
    out = [f"table {FAMILY} {TABLE}\n", f"flush table {FAMILY} {TABLE}\n"]
    out.extend(f"flush map {FAMILY} {TABLE} {name}\n" for name in MAPS)
    out.append(f"table {FAMILY} {TABLE} {{\n{body}}}\n")
    for p in previous:
        out.extend(f"delete chain {FAMILY} {TABLE} {c}\n" for c in p.chains if c not in chains)
        out.extend(f"delete set {FAMILY} {TABLE} {s}\n" for s in p.sets if s not in sets)
    return "".join(out)


def partial_ruleset(changes: Mapping[str, tuple[ServiceRules, ServiceRules]]) -> str:
    """One transaction that turns the (old, new) parts of changed services
    from old into new, leaving every other service's chains untouched.

    Valid only when the kernel holds exactly what was applied (the old parts
    are really there); otherwise nft fails and nothing changes, and the
    caller falls back to `full_ruleset`.
    """
    flush_chains, delete_chains, delete_sets = [], [], []
    delete_elements: dict[str, list[str]] = {name: [] for name in MAPS}
    add_elements: dict[str, list[str]] = {name: [] for name in MAPS}
    bodies = []
    for old, new in changes.values():
        # Every old chain is emptied (rules referencing sets and chains that
        # go away go first); the ones still wanted are filled again below.
        flush_chains.extend(old.chains)
        delete_chains.extend(c for c in old.chains if c not in new.chains)
        delete_sets.extend(s for s in old.sets if s not in new.sets)
        for name in MAPS:
            old_el = old.elements.get(name, ())
            new_el = new.elements.get(name, ())
            if old_el != new_el:
                delete_elements[name].extend(old_el)
                add_elements[name].extend(new_el)
        if new.chains or new.sets:
            bodies.append(new)
    out = [f"table {FAMILY} {TABLE}\n"]
    for name, elements in delete_elements.items():
        if elements:
            out.append(f"delete element {FAMILY} {TABLE} {name} {{ {', '.join(elements)} }}\n")
    out.extend(f"flush chain {FAMILY} {TABLE} {c}\n" for c in flush_chains)
    # Declaring new chains and sets and filling every changed chain again.
    body = "".join(p.text for p in bodies)
    if body:
        out.append(f"table {FAMILY} {TABLE} {{\n{body}}}\n")
    for name, elements in add_elements.items():
        if elements:
            out.append(f"add element {FAMILY} {TABLE} {name} {{ {', '.join(elements)} }}\n")
    out.extend(f"delete chain {FAMILY} {TABLE} {c}\n" for c in delete_chains)
    out.extend(f"delete set {FAMILY} {TABLE} {s}\n" for s in delete_sets)
    return "".join(out)
