"""The proxy's nftables rules: rendering one Service (pure, table-driven),
assembling transactions, the syncer's batching and caching (against a fake
nft), and — where nft and root are available — the rendered text loaded by
the real nft in a private network namespace."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from kubeling.api.v1 import core_pb2
from node_agent.proxy import rules
from node_agent.proxy.rules import EMPTY, ProxyContext, balance, render_service, service_endpoints
from node_agent.proxy.syncer import NftError, ProxySyncer

CTX = ProxyContext(node_name="node-1", cluster_cidr="10.244.0.0/16")

# ------------------------------------------------------------------ builders


def make_service(name="web", namespace="default", cluster_ip="10.96.0.10",
                 ports=(("http", 80, 8080),), type_="ClusterIP", node_ports=(),
                 affinity_timeout=None, protocol="TCP", external_ips=(),
                 external_policy="", internal_policy=""):
    """ports: (name, port, targetPort) with targetPort an int or a port name."""
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = cluster_ip
    svc.spec.type = type_
    svc.spec.external_ips.extend(external_ips)
    svc.spec.external_traffic_policy = external_policy
    svc.spec.internal_traffic_policy = internal_policy
    for i, (port_name, port, target) in enumerate(ports):
        sp = svc.spec.ports.add(name=port_name, port=port, protocol=protocol)
        if isinstance(target, str):
            sp.target_port.string_value = target
        else:
            sp.target_port.number_value = target
        if i < len(node_ports):
            sp.node_port = node_ports[i]
    if affinity_timeout is not None:
        svc.spec.session_affinity = "ClientIP"
        if affinity_timeout:
            svc.spec.session_affinity_config.client_ip.timeout_seconds = affinity_timeout
    return svc


def make_endpoints(name="web", namespace="default", subsets=()):
    """subsets: (ready ips, ports [(name, port)], not-ready ips[, protocol[, node]])."""
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, namespace
    for ready, ports, *rest in subsets:
        not_ready = rest[0] if rest else ()
        protocol = rest[1] if len(rest) > 1 else "TCP"
        node = rest[2] if len(rest) > 2 else "node-2"
        subset = ep.subsets.add()
        for ip in ready:
            subset.addresses.add(ip=ip, node_name=node if isinstance(node, str) else node[ip])
        for ip in not_ready:
            subset.not_ready_addresses.add(ip=ip)
        for port_name, number in ports:
            subset.ports.add(name=port_name, port=number, protocol=protocol)
    return ep


SVC = "default/web/tcp/http"


def ep_chain(ip, port, ident=SVC):
    return f"ep-{ident}__{ip}/{port}"


# ------------------------------------------------------------------ rendering

@dataclass
class Case:
    service: core_pb2.Service | None
    endpoints: core_pb2.Endpoints | None
    chains: dict          # chain name -> expected rules (exactly)
    elements: dict        # map name -> expected elements (exactly; unlisted maps empty)
    sets: tuple = ()      # expected affinity set names
    ctx: ProxyContext = CTX


TWO_PODS = make_endpoints(subsets=[(["10.244.1.5", "10.244.2.7"], [("http", 8080)], ["10.244.3.9"])])

CASES = {
    "cluster-ip-two-endpoints": Case(
        make_service(), TWO_PODS,
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"numgen random mod 2 == 0 goto {ep_chain('10.244.1.5', 8080)}",
                f"goto {ep_chain('10.244.2.7', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
            ep_chain("10.244.2.7", 8080): [
                "ip saddr 10.244.2.7 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.2.7:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"]}),
    "no-cluster-cidr-no-outside-masquerade": Case(
        make_service(), make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]),
        ctx=ProxyContext("node-1", ""),
        chains={
            f"svc-{SVC}": [f"goto {ep_chain('10.244.1.5', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"]}),
    "multiple-ports": Case(
        make_service(ports=(("http", 80, 8080), ("metrics", 9100, 9100))),
        make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080), ("metrics", 9100)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"goto {ep_chain('10.244.1.5', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
            "svc-default/web/tcp/metrics": [
                "ip daddr 10.96.0.10 tcp dport 9100 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"goto {ep_chain('10.244.1.5', 9100, 'default/web/tcp/metrics')}"],
            ep_chain("10.244.1.5", 9100, "default/web/tcp/metrics"): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:9100"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}",
                                  "10.96.0.10 . tcp . 9100 : goto svc-default/web/tcp/metrics"]}),
    "named-target-port-resolved-per-pod": Case(
        # targetPort "web" is 8080 on one pod and 9090 on another: the
        # Endpoints carry the numbers under the Service port's name.
        make_service(ports=(("http", 80, "web"),)),
        make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)]),
                                (["10.244.2.7"], [("http", 9090)]),
                                (["10.244.3.3"], [("other", 7070)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"numgen random mod 2 == 0 goto {ep_chain('10.244.1.5', 8080)}",
                f"goto {ep_chain('10.244.2.7', 9090)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
            ep_chain("10.244.2.7", 9090): [
                "ip saddr 10.244.2.7 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.2.7:9090"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"]}),
    "node-port": Case(
        make_service(type_="NodePort", node_ports=(30080,)),
        make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"goto {ep_chain('10.244.1.5', 8080)}"],
            f"ext-{SVC}": ["jump mark-for-masquerade", f"goto svc-{SVC}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"],
                  "service-nodeports": [f"tcp . 30080 : goto ext-{SVC}"]}),
    "node-port-on-a-cluster-ip-service-is-ignored": Case(
        make_service(node_ports=(30080,)),
        make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"goto {ep_chain('10.244.1.5', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"]}),
    "no-endpoints-rejects": Case(
        make_service(type_="NodePort", node_ports=(30080,)),
        make_endpoints(subsets=[([], [("http", 8080)], ["10.244.3.9"])]),
        chains={},
        elements={"no-endpoint-services": ["10.96.0.10 . tcp . 80 : goto reject-chain"],
                  "no-endpoint-nodeports": ["tcp . 30080 : goto reject-chain"]}),
    "no-endpoints-object-rejects": Case(
        make_service(), None, chains={},
        elements={"no-endpoint-services": ["10.96.0.10 . tcp . 80 : goto reject-chain"]}),
    "client-ip-affinity": Case(
        make_service(affinity_timeout=60),
        make_endpoints(subsets=[(["10.244.1.5", "10.244.2.7"], [("http", 8080)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"ip saddr @aff60-{SVC}__10.244.1.5/8080 goto {ep_chain('10.244.1.5', 8080)}",
                f"ip saddr @aff60-{SVC}__10.244.2.7/8080 goto {ep_chain('10.244.2.7', 8080)}",
                f"numgen random mod 2 == 0 goto {ep_chain('10.244.1.5', 8080)}",
                f"goto {ep_chain('10.244.2.7', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                f"update @aff60-{SVC}__10.244.1.5/8080 {{ ip saddr }}",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
            ep_chain("10.244.2.7", 8080): [
                "ip saddr 10.244.2.7 jump mark-for-masquerade",
                f"update @aff60-{SVC}__10.244.2.7/8080 {{ ip saddr }}",
                "meta l4proto tcp dnat to 10.244.2.7:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"]},
        sets=(f"aff60-{SVC}__10.244.1.5/8080", f"aff60-{SVC}__10.244.2.7/8080")),
    "udp": Case(
        make_service(name="dns", ports=(("dns", 53, 5353),), protocol="UDP"),
        make_endpoints(name="dns", subsets=[(["10.244.1.5"], [("dns", 5353)], [], "UDP")]),
        chains={
            "svc-default/dns/udp/dns": [
                "ip daddr 10.96.0.10 udp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "goto ep-default/dns/udp/dns__10.244.1.5/5353"],
            "ep-default/dns/udp/dns__10.244.1.5/5353": [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto udp dnat to 10.244.1.5:5353"],
        },
        elements={"service-ips": ["10.96.0.10 . udp . 53 : goto svc-default/dns/udp/dns"]}),
    "external-traffic-policy-local": Case(
        make_service(type_="NodePort", node_ports=(30080,), external_policy="Local"),
        make_endpoints(subsets=[(["10.244.1.5", "10.244.2.7"], [("http", 8080)], [], "TCP",
                                 {"10.244.1.5": "node-1", "10.244.2.7": "node-2"})]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"numgen random mod 2 == 0 goto {ep_chain('10.244.1.5', 8080)}",
                f"goto {ep_chain('10.244.2.7', 8080)}"],
            f"ext-{SVC}": [f"goto {ep_chain('10.244.1.5', 8080)}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
            ep_chain("10.244.2.7", 8080): [
                "ip saddr 10.244.2.7 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.2.7:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}"],
                  "service-nodeports": [f"tcp . 30080 : goto ext-{SVC}"]}),
    "external-ip": Case(
        make_service(external_ips=("192.0.2.10",)),
        make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]),
        chains={
            f"svc-{SVC}": [
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                f"goto {ep_chain('10.244.1.5', 8080)}"],
            f"ext-{SVC}": ["jump mark-for-masquerade", f"goto svc-{SVC}"],
            ep_chain("10.244.1.5", 8080): [
                "ip saddr 10.244.1.5 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.1.5:8080"],
        },
        elements={"service-ips": [f"10.96.0.10 . tcp . 80 : goto svc-{SVC}",
                                  f"192.0.2.10 . tcp . 80 : goto ext-{SVC}"]}),
    "headless-has-no-rules": Case(make_service(cluster_ip="None"), TWO_PODS, chains={}, elements={}),
    "no-cluster-ip-yet-has-no-rules": Case(make_service(cluster_ip=""), TWO_PODS, chains={}, elements={}),
    "external-name-has-no-rules": Case(make_service(type_="ExternalName"), TWO_PODS, chains={}, elements={}),
    "deleted-service-has-no-rules": Case(None, TWO_PODS, chains={}, elements={}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_render_service(case: Case):
    got = render_service(case.service, case.endpoints, case.ctx)
    assert got.chains == case.chains
    for name in rules.MAPS:
        assert got.elements.get(name, []) == case.elements.get(name, []), name
    assert tuple(got.sets) == case.sets
    for body in got.sets.values():
        assert "flags dynamic,timeout" in body


def test_affinity_timeout_defaults_to_three_hours():
    got = render_service(make_service(affinity_timeout=0),
                         make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]), CTX)
    (body,) = got.sets.values()
    assert "timeout 10800s" in body
    assert all(name.startswith("aff10800-") for name in got.sets)


def test_render_is_deterministic_whatever_the_address_order():
    a = make_endpoints(subsets=[(["10.244.2.7", "10.244.1.5", "10.244.10.1"], [("http", 8080)])])
    b = make_endpoints(subsets=[(["10.244.10.1", "10.244.2.7", "10.244.1.5"], [("http", 8080)])])
    assert render_service(make_service(), a, CTX) == render_service(make_service(), b, CTX)
    ips = [e.ip for e in service_endpoints(make_service().spec.ports[0], a)]
    assert ips == ["10.244.1.5", "10.244.2.7", "10.244.10.1"]  # numeric, not string, order


def test_not_ready_and_non_ipv4_addresses_are_not_endpoints():
    ep = make_endpoints(subsets=[(["10.244.1.5", "fd00::5"], [("http", 8080)], ["10.244.3.9"])])
    assert [e.ip for e in service_endpoints(make_service().spec.ports[0], ep)] == ["10.244.1.5"]


def test_odd_names_still_give_valid_identifiers():
    svc = make_service(name="x" * 63, namespace="y" * 63, ports=(("Weird Name!", 80, 8080),))
    ep = make_endpoints(name="x" * 63, namespace="y" * 63,
                        subsets=[(["10.244.1.5"], [("Weird Name!", 8080)])])
    got = render_service(svc, ep, CTX)
    for name in got.chains:
        assert len(name) <= 200 and all(c.isalnum() or c in "/_.-" for c in name), name


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_balance_gives_each_endpoint_one_nth(n):
    lines = balance([f"ep-{i}" for i in range(n)])
    assert len(lines) == n and lines[-1] == f"goto ep-{n - 1}"
    remaining, shares = 1.0, []
    for i, line in enumerate(lines[:-1]):
        assert line == f"numgen random mod {n - i} == 0 goto ep-{i}"
        shares.append(remaining / (n - i))
        remaining -= shares[-1]
    shares.append(remaining)
    assert shares == pytest.approx([1 / n] * n)


# ------------------------------------------------------------------ transactions


def test_full_ruleset_replaces_the_table_in_one_file():
    part = render_service(make_service(), TWO_PODS, CTX)
    text = rules.full_ruleset([part])
    assert text.startswith("table ip kubeling\ndelete table ip kubeling\ntable ip kubeling {\n")
    assert text.count("delete table") == 1
    assert "elements = {\n      10.96.0.10 . tcp . 80 : goto svc-default/web/tcp/http\n    }" in text
    for chain in rules.BASE_CHAIN_NAMES:
        assert f"  chain {chain} {{\n" in text


def test_full_ruleset_over_a_known_table_flushes_and_deletes_what_went():
    old = render_service(make_service(affinity_timeout=60), TWO_PODS, CTX)
    new = render_service(make_service(affinity_timeout=60),
                         make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]), CTX)
    text = rules.full_ruleset([new], previous=[old])
    assert "delete table" not in text
    lines = text.splitlines()
    assert lines[:2] == ["table ip kubeling", "flush table ip kubeling"]
    assert f"delete chain ip kubeling {ep_chain('10.244.2.7', 8080)}" in lines
    assert f"delete set ip kubeling aff60-{SVC}__10.244.2.7/8080" in lines
    # the set still wanted is declared, not deleted: its clients are kept
    assert f"delete set ip kubeling aff60-{SVC}__10.244.1.5/8080" not in lines


def test_partial_ruleset_touches_only_the_changed_service():
    old = render_service(make_service(), TWO_PODS, CTX)
    new = render_service(make_service(), make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])]), CTX)
    text = rules.partial_ruleset({"default/web": (old, new)})
    assert "delete table" not in text and "flush table" not in text
    assert f"flush chain ip kubeling svc-{SVC}" in text
    assert f"delete chain ip kubeling {ep_chain('10.244.2.7', 8080)}" in text
    # the map element did not change, so it is left alone
    assert "element" not in text
    # a deleted service: its elements go before its chains
    gone = rules.partial_ruleset({"default/web": (new, EMPTY)})
    assert gone.index("delete element ip kubeling service-ips") < gone.index("delete chain")


# ------------------------------------------------------------------ the syncer


class FakeNft:
    def __init__(self):
        self.applied: list[str] = []
        self.fail = 0

    async def apply(self, text: str) -> None:
        if self.fail:
            self.fail -= 1
            raise NftError("nft -f - failed: boom")
        self.applied.append(text)


class Objects:
    def __init__(self):
        self.services: dict[str, core_pb2.Service] = {}
        self.endpoints: dict[str, core_pb2.Endpoints] = {}
        self.reads: list[str] = []

    def get_service(self, key):
        self.reads.append(key)
        return self.services.get(key)


def make_syncer(objs, nft, **kwargs):
    return ProxySyncer(nft, CTX, objs.get_service, objs.endpoints.get, **kwargs)


async def test_syncer_first_sync_is_full_then_partial_for_changes_only():
    objs, nft = Objects(), FakeNft()
    for i in range(50):
        objs.services[f"default/s{i}"] = make_service(name=f"s{i}", cluster_ip=f"10.96.1.{i + 1}")
    syncer = make_syncer(objs, nft)
    syncer.changed_all(objs.services)
    assert await syncer.sync_once()
    assert nft.applied[-1].startswith("table ip kubeling\ndelete table ip kubeling\n")
    assert nft.applied[-1].count("goto reject-chain") == 50

    objs.reads.clear()
    objs.endpoints["default/s7"] = make_endpoints(name="s7", subsets=[(["10.244.1.5"], [("http", 8080)])])
    syncer.changed("default/s7")
    syncer.changed("default/s7")
    assert await syncer.sync_once()
    assert objs.reads == ["default/s7"]  # only the changed service is rendered again
    text = nft.applied[-1]
    assert "delete table" not in text and "flush table" not in text
    assert "delete element ip kubeling no-endpoint-services { 10.96.1.8 . tcp . 80 : goto reject-chain }" in text
    assert "add element ip kubeling service-ips { 10.96.1.8 . tcp . 80 : goto svc-default/s7/tcp/http }" in text
    assert "s6" not in text and "s8" not in text

    # An update that changes nothing rendered costs no nft run.
    count = len(nft.applied)
    syncer.changed("default/s7")
    assert await syncer.sync_once()
    assert len(nft.applied) == count


async def test_syncer_batches_changes_within_the_minimum_interval():
    objs, nft = Objects(), FakeNft()
    syncer = make_syncer(objs, nft, min_sync_interval=1.0)
    task = asyncio.create_task(syncer.run())

    async def applied(count):
        for _ in range(100):
            if len(nft.applied) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(nft.applied)} syncs, expected {count}")

    try:
        syncer.changed("default/nothing")
        await applied(1)  # the first (full) sync, at once
        first = syncer.stats.last_sync_end
        for batch in range(2):
            for i in range(batch * 10, batch * 10 + 10):
                objs.services[f"default/s{i}"] = make_service(name=f"s{i}", cluster_ip=f"10.96.1.{i + 1}")
                syncer.changed(f"default/s{i}")
            await asyncio.sleep(0.2)
        await applied(2)
        await asyncio.sleep(0.3)
        assert len(nft.applied) == 2, "the changes were not batched into one sync"
        assert nft.applied[1].count("goto reject-chain") == 20
        assert syncer.stats.last_sync_end - first >= 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_syncer_retries_a_failed_sync_as_a_full_one():
    objs, nft = Objects(), FakeNft()
    objs.services["default/a"] = make_service(name="a", cluster_ip="10.96.1.1")
    syncer = make_syncer(objs, nft, min_backoff=0.01)
    syncer.changed("default/a")
    assert await syncer.sync_once()
    nft.fail = 1
    objs.services["default/b"] = make_service(name="b", cluster_ip="10.96.1.2")
    syncer.changed("default/b")
    assert not await syncer.sync_once()
    assert await syncer.sync_once()
    text = nft.applied[-1]
    # the kernel may not hold what we think after a failure: refill everything
    assert "flush table ip kubeling" in text
    assert "10.96.1.1 . tcp . 80" in text and "10.96.1.2 . tcp . 80" in text


async def test_syncer_ignores_a_second_service_on_a_taken_address_until_it_is_free():
    objs, nft = Objects(), FakeNft()
    objs.services["default/a"] = make_service(name="a", cluster_ip="10.96.1.1")
    objs.services["default/b"] = make_service(name="b", cluster_ip="10.96.1.1")
    syncer = make_syncer(objs, nft)
    syncer.changed("default/a")
    assert await syncer.sync_once()
    count = len(nft.applied)
    syncer.changed("default/b")
    assert await syncer.sync_once()
    assert len(nft.applied) == count  # b's only element is a's: nothing to apply
    del objs.services["default/a"]
    syncer.changed("default/a")
    assert await syncer.sync_once()   # a goes; b is queued again
    assert await syncer.sync_once()
    assert "add element ip kubeling no-endpoint-services { 10.96.1.1 . tcp . 80 : goto reject-chain }" \
        in nft.applied[-1]


# ------------------------------------------------------------------ the real nft

needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="needs root, nft and unshare (a private network namespace)")


def nft_in_private_netns(*scripts: str, check: bool = False) -> dict:
    """Apply (or with check, only check) `scripts` one after another with the
    real nft in a throwaway network namespace; the table's JSON listing."""
    shell = []
    for i, _ in enumerate(scripts):
        shell.append(f'nft {"-c " if check else ""}-f "$S{i}" || exit 1')
    shell.append("nft -j list table ip kubeling" if not check else "true")
    env = dict(os.environ, **{f"S{i}": s for i, s in enumerate(_write_scripts(scripts))})
    proc = subprocess.run(["unshare", "-n", "sh", "-c", "\n".join(shell)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout) if not check else {}


_tmp_dir: list = []


def _write_scripts(scripts):
    import tempfile
    paths = []
    for s in scripts:
        f = tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False)
        f.write(s)
        f.close()
        paths.append(f.name)
    _tmp_dir.extend(paths)
    return paths


@pytest.fixture(autouse=True)
def _remove_scripts():
    yield
    while _tmp_dir:
        try:
            os.unlink(_tmp_dir.pop())
        except OSError:
            pass


def normalized(listing: dict) -> dict:
    """Chains with their rules, maps and sets with their elements: handles
    and the order of declaration do not matter, the order of rules does."""
    out: dict = {}
    for item in listing["nftables"]:
        if "chain" in item:
            c = item["chain"]
            out.setdefault(("chain", c["name"]), {"hook": c.get("hook"), "rules": []})
        elif "rule" in item:
            r = item["rule"]
            out.setdefault(("chain", r["chain"]), {"hook": None, "rules": []})["rules"].append(
                json.dumps(r["expr"], sort_keys=True))
        elif "map" in item or "set" in item:
            kind = "map" if "map" in item else "set"
            s = item[kind]
            out[(kind, s["name"])] = sorted(json.dumps(e, sort_keys=True) for e in s.get("elem", []))
    return out


@needs_nft
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_nft_accepts_each_rendered_service(case: Case):
    nft_in_private_netns(rules.full_ruleset([render_service(case.service, case.endpoints, case.ctx)]),
                         check=True)


@needs_nft
def test_partial_and_flushing_syncs_end_where_a_fresh_load_does():
    """Apply a fresh table, then a series of partial transactions and a
    flush-and-refill, and compare with loading the final state fresh."""
    ep1 = make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])])
    ep2 = make_endpoints(subsets=[(["10.244.1.5", "10.244.2.7"], [("http", 8080)])])
    states = [
        {"web": (make_service(), ep1), "db": (make_service(name="db", cluster_ip="10.96.0.11"), None)},
        {"web": (make_service(), ep2), "db": (make_service(name="db", cluster_ip="10.96.0.11"), None)},
        {"web": (make_service(affinity_timeout=60, type_="NodePort", node_ports=(30080,)), ep2),
         "db": (make_service(name="db", cluster_ip="10.96.0.11"),
                make_endpoints(name="db", subsets=[(["10.244.3.3"], [("http", 5432)])]))},
        {"web": (make_service(affinity_timeout=60, type_="NodePort", node_ports=(30080,)), ep1)},
        {"web": (make_service(), None)},
    ]

    def render(state):
        return {k: render_service(svc, ep, CTX) for k, (svc, ep) in state.items()}

    scripts = [rules.full_ruleset(render(states[0]).values())]
    for before, after in zip(states, states[1:]):
        old, new = render(before), render(after)
        scripts.append(rules.partial_ruleset({k: (old.get(k, EMPTY), new.get(k, EMPTY))
                                              for k in set(old) | set(new)}))
    final = render(states[-1])
    incremental = normalized(nft_in_private_netns(*scripts))
    fresh = normalized(nft_in_private_netns(rules.full_ruleset(final.values())))
    assert incremental == fresh

    refilled = normalized(nft_in_private_netns(
        rules.full_ruleset(render(states[2]).values()),
        rules.full_ruleset(final.values(), previous=render(states[2]).values())))
    assert refilled == fresh


@needs_nft
def test_flushing_sync_keeps_the_clients_an_affinity_set_remembers():
    svc = make_service(affinity_timeout=60)
    ep = make_endpoints(subsets=[(["10.244.1.5"], [("http", 8080)])])
    part = render_service(svc, ep, CTX)
    (aff,) = part.sets
    listing = nft_in_private_netns(
        rules.full_ruleset([part]),
        f"add element ip kubeling {aff} {{ 10.244.9.9 }}\n",
        rules.full_ruleset([part], previous=[part]))
    (elements,) = [v for k, v in normalized(listing).items() if k == ("set", aff)]
    assert any("10.244.9.9" in e for e in elements)
