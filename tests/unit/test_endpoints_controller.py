"""The endpoints controller: subsets computed from a Service and its pods
(pure), and reconcile against a fake client (what it writes, and when not)."""

from __future__ import annotations

import random

import pytest
from kubeling.api.v1 import core_pb2
from kubeling.client.errors import NotFoundError
from kubeling.client.informer import SharedInformerFactory
from kubeling.objects import copy
from services.controllers.endpoints import (LABEL_HEADLESS, EndpointsController, endpoint_subsets,
                                            find_port)

# ------------------------------------------------------------------ builders


def make_service(name="web", namespace="default", ports=(("http", 80, 8080),), selector=None,
                 publish_not_ready=False, cluster_ip="10.96.0.10", labels=None):
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.metadata.uid = f"uid-svc-{name}"
    svc.metadata.labels.update(labels or {})
    svc.spec.selector.update({"app": "web"} if selector is None else selector)
    svc.spec.cluster_ip = cluster_ip
    svc.spec.publish_not_ready_addresses = publish_not_ready
    for port_name, port, target in ports:
        sp = svc.spec.ports.add(name=port_name, port=port, protocol="TCP")
        if isinstance(target, str):
            sp.target_port.string_value = target
        elif target is not None:
            sp.target_port.number_value = target
    return svc


def make_pod(name, ip="", ready=True, labels=None, ports=(), node="node-1", namespace="default",
             terminating=False, phase="Running", hostname="", subdomain=""):
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.labels.update({"app": "web"} if labels is None else labels)
    if terminating:
        pod.metadata.deletion_timestamp.GetCurrentTime()
    pod.spec.node_name = node
    pod.spec.hostname, pod.spec.subdomain = hostname, subdomain
    container = pod.spec.containers.add(name="main", image="localhost/kubeling/http:1")
    for port_name, number, *protocol in ports:
        container.ports.add(name=port_name, container_port=number, protocol=(protocol or ["TCP"])[0])
    pod.status.phase = phase
    pod.status.pod_ip = ip
    pod.status.conditions.add(type="Ready", status="True" if ready else "False")
    return pod


def summary(subsets):
    """[(ports, ready ips, not-ready ips)] for compact assertions."""
    return [([(p.name, p.port) for p in s.ports], [a.ip for a in s.addresses],
             [a.ip for a in s.not_ready_addresses]) for s in subsets]


HTTP = [("http", 8080)]

# --------------------------------------------------------------- pure: subsets


@pytest.mark.parametrize("service, pods, expected", [
    (make_service(), [make_pod("a", "10.244.0.5", ports=HTTP), make_pod("b", "10.244.1.3", ports=HTTP)],
     [([("http", 8080)], ["10.244.0.5", "10.244.1.3"], [])]),
    (make_service(), [make_pod("a", "10.244.0.5", ports=HTTP), make_pod("b", "10.244.1.3", ready=False, ports=HTTP)],
     [([("http", 8080)], ["10.244.0.5"], ["10.244.1.3"])]),
    (make_service(publish_not_ready=True),
     [make_pod("a", "10.244.0.5", ready=False, ports=HTTP)],
     [([("http", 8080)], ["10.244.0.5"], [])]),
    (make_service(), [make_pod("a", "", ports=HTTP)], []),
    (make_service(), [make_pod("a", "10.244.0.5", terminating=True, ports=HTTP)], []),
    (make_service(publish_not_ready=True), [make_pod("a", "10.244.0.5", terminating=True, ports=HTTP)],
     [([("http", 8080)], ["10.244.0.5"], [])]),
    (make_service(), [make_pod("a", "10.244.0.5", phase="Succeeded", ports=HTTP),
                      make_pod("b", "10.244.0.6", phase="Failed", ports=HTTP)], []),
    (make_service(ports=[("", 80, 9376)]), [make_pod("a", "10.244.0.5")], [([("", 9376)], ["10.244.0.5"], [])]),
    (make_service(ports=[("", 80, None)]), [make_pod("a", "10.244.0.5")], [([("", 80)], ["10.244.0.5"], [])]),
    (make_service(), [], []),
], ids=["ready-pods", "not-ready-apart", "publish-not-ready", "no-ip-skipped", "terminating-excluded",
        "terminating-kept-when-publishing", "finished-excluded", "numeric-target", "target-defaults-to-port",
        "no-pods"])
def test_subsets(service, pods, expected):
    assert summary(endpoint_subsets(service, pods)) == expected


def test_named_target_port_resolves_per_pod_and_groups_pods_by_port():
    svc = make_service(ports=[("http", 80, "web")])
    pods = [make_pod("a", "10.244.0.5", ports=[("web", 8080)]),
            make_pod("b", "10.244.0.6", ports=[("web", 9090)]),
            make_pod("c", "10.244.0.7", ports=[("other", 8080)]),   # lacks the named port: left out
            make_pod("d", "10.244.0.8", ports=[("web", 8080)])]
    assert summary(endpoint_subsets(svc, pods)) == [
        ([("http", 8080)], ["10.244.0.5", "10.244.0.8"], []),
        ([("http", 9090)], ["10.244.0.6"], []),
    ]


def test_pods_lacking_one_of_two_named_ports_get_a_subset_of_their_own():
    svc = make_service(ports=[("http", 80, "web"), ("metrics", 9100, "metrics")])
    pods = [make_pod("a", "10.244.0.5", ports=[("web", 8080), ("metrics", 9100)]),
            make_pod("b", "10.244.0.6", ports=[("web", 8080)]),
            make_pod("c", "10.244.0.7", ready=False, ports=[("web", 8080), ("metrics", 9100)])]
    assert summary(endpoint_subsets(svc, pods)) == [
        ([("http", 8080)], ["10.244.0.5", "10.244.0.6"], ["10.244.0.7"]),
        ([("metrics", 9100)], ["10.244.0.5"], ["10.244.0.7"]),
    ]


def test_addresses_with_the_same_ports_share_one_subset_as_repack_subsets_does():
    # Both pods offer both ports: one subset with both ports, not one per port.
    svc = make_service(ports=[("http", 80, "web"), ("metrics", 9100, "metrics")])
    both = [("web", 8080), ("metrics", 9100)]
    pods = [make_pod("a", "10.244.0.5", ports=both), make_pod("c", "10.244.0.7", ports=both)]
    assert summary(endpoint_subsets(svc, pods)) == [
        ([("http", 8080), ("metrics", 9100)], ["10.244.0.5", "10.244.0.7"], []),
    ]


def test_named_port_must_match_protocol():
    svc = make_service(ports=[("dns", 53, "dns")])
    udp_only = make_pod("a", "10.244.0.5", ports=[("dns", 53, "UDP")])
    tcp = make_pod("b", "10.244.0.6", ports=[("dns", 5353, "TCP")])
    assert find_port(udp_only, svc.spec.ports[0]) is None
    assert find_port(tcp, svc.spec.ports[0]) == 5353


def test_order_of_pods_does_not_change_the_result():
    svc = make_service(ports=[("http", 80, "web")])
    pods = [make_pod(f"p{i}", f"10.244.{i % 3}.{i}", ready=i % 4 != 0, ports=[("web", 8080 + i % 2)])
            for i in range(1, 30)]
    first = endpoint_subsets(svc, pods)
    shuffled = list(pods)
    random.Random(7).shuffle(shuffled)
    assert endpoint_subsets(svc, shuffled) == first
    ips = [a.ip for a in first[0].addresses]
    assert ips == sorted(ips, key=lambda ip: tuple(int(x) for x in ip.split(".")))


def test_address_carries_node_and_pod_reference():
    (subset,) = endpoint_subsets(make_service(), [make_pod("a", "10.244.0.5", node="node-2", ports=HTTP)])
    address = subset.addresses[0]
    assert address.node_name == "node-2"
    ref = address.target_ref
    assert (ref.kind, ref.namespace, ref.name, ref.uid) == ("Pod", "default", "a", "uid-a")
    assert subset.ports[0].protocol == "TCP"


def test_hostname_is_set_only_for_pods_whose_subdomain_is_the_service():
    svc = make_service(name="db", cluster_ip="None", ports=[("", 5432, None)])
    pods = [make_pod("db-0", "10.244.0.5", hostname="db-0", subdomain="db"),
            make_pod("x", "10.244.0.6", hostname="x", subdomain="other")]
    (subset,) = endpoint_subsets(svc, pods)
    assert [(a.ip, a.hostname) for a in subset.addresses] == [("10.244.0.5", "db-0"), ("10.244.0.6", "")]


def test_headless_service_without_ports_lists_addresses_without_ports():
    svc = make_service(cluster_ip="None", ports=[])
    assert summary(endpoint_subsets(svc, [make_pod("a", "10.244.0.5")])) == [([], ["10.244.0.5"], [])]
    # A non-headless Service without ports has no endpoints.
    assert endpoint_subsets(make_service(ports=[]), [make_pod("a", "10.244.0.5")]) == []


# --------------------------------------------------------- reconcile (fake API)


class FakeClient:
    """Records writes; returns what it is given."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    async def create(self, obj):
        self.calls.append(("create", copy(obj)))
        return obj

    async def update(self, obj):
        self.calls.append(("update", copy(obj)))
        return obj

    async def delete(self, resource, name, namespace="default", **kwargs):
        self.calls.append(("delete", f"{namespace}/{name}"))
        if not kwargs.get("uid"):
            raise NotFoundError("precondition expected")


class FakeRecorder:
    def __init__(self):
        self.events = []

    async def event(self, obj, type_, reason, message):
        self.events.append((reason, message))


@pytest.fixture
def controller():
    client = FakeClient()
    c = EndpointsController(client, SharedInformerFactory(client), FakeRecorder())
    return c


def put(informer, *objs):
    for o in objs:
        informer.store._put(o)


async def test_creates_endpoints_with_the_service_labels(controller):
    put(controller.services, make_service(labels={"tier": "front"}))
    put(controller.pods, make_pod("a", "10.244.0.5", ports=HTTP), make_pod("other", "10.244.0.9", labels={"app": "x"}))
    await controller.reconcile("default/web")
    ((verb, ep),) = controller.client.calls
    assert verb == "create"
    assert (ep.metadata.name, ep.metadata.namespace) == ("web", "default")
    assert dict(ep.metadata.labels) == {"tier": "front"}
    assert summary(ep.subsets) == [([("http", 8080)], ["10.244.0.5"], [])]


async def test_unchanged_endpoints_are_not_written(controller):
    svc = make_service()
    pods = [make_pod("a", "10.244.0.5", ports=HTTP), make_pod("b", "10.244.0.6", ready=False, ports=HTTP)]
    put(controller.services, svc)
    put(controller.pods, *pods)
    await controller.reconcile("default/web")
    (_, ep), = controller.client.calls
    ep.metadata.resource_version = "5"
    put(controller.endpoints, ep)
    controller.client.calls.clear()
    await controller.reconcile("default/web")
    assert controller.client.calls == []


async def test_readiness_change_updates_endpoints(controller):
    put(controller.services, make_service())
    put(controller.pods, make_pod("a", "10.244.0.5", ready=False, ports=HTTP))
    await controller.reconcile("default/web")
    (_, ep), = controller.client.calls
    put(controller.endpoints, ep)
    controller.client.calls.clear()
    put(controller.pods, make_pod("a", "10.244.0.5", ready=True, ports=HTTP))
    await controller.reconcile("default/web")
    ((verb, updated),) = controller.client.calls
    assert verb == "update"
    assert summary(updated.subsets) == [([("http", 8080)], ["10.244.0.5"], [])]


async def test_headless_label_is_added(controller):
    put(controller.services, make_service(cluster_ip="None"))
    await controller.reconcile("default/web")
    ((_, ep),) = controller.client.calls
    assert dict(ep.metadata.labels) == {LABEL_HEADLESS: ""}


async def test_endpoints_of_deleted_service_are_deleted(controller):
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace, ep.metadata.uid = "web", "default", "uid-ep"
    put(controller.endpoints, ep)
    await controller.reconcile("default/web")
    assert controller.client.calls == [("delete", "default/web")]


async def test_endpoints_of_selectorless_service_are_left_alone(controller):
    put(controller.services, make_service(selector={}))
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = "web", "default"
    ep.subsets.add().addresses.add(ip="192.168.1.1")
    put(controller.endpoints, ep)
    await controller.reconcile("default/web")
    assert controller.client.calls == []


async def test_pod_maps_to_every_matching_service_in_its_namespace(controller):
    put(controller.services,
        make_service("web", selector={"app": "web"}),
        make_service("all", selector={"tier": "front"}),
        make_service("both", selector={"app": "web", "tier": "front"}),
        make_service("other-ns", namespace="prod", selector={"app": "web"}),
        make_service("manual", selector={}))
    pod = make_pod("a", "10.244.0.5", labels={"app": "web", "tier": "front"})
    assert sorted(controller.services_for_pod(pod)) == ["default/all", "default/both", "default/web"]
    assert controller.services_for_pod(make_pod("b", labels={"app": "db"})) == []


def test_every_controller_module_registers():
    from services.controllers.manager import CONTROLLERS, load_controllers
    load_controllers()
    assert {"endpoints", "nodeipam", "nodelifecycle"} <= set(CONTROLLERS)



@pytest.mark.parametrize("change, enqueued", [
    (lambda p: p.status.container_statuses.add(name="main", restart_count=1), False),
    (lambda p: p.metadata.annotations.update({"note": "x"}), False),
    (lambda p: p.status.conditions[0].__setattr__("status", "False"), True),
    (lambda p: p.status.__setattr__("pod_ip", "10.244.0.99"), True),
    (lambda p: p.metadata.labels.__setitem__("app", "other"), True),
    (lambda p: p.metadata.deletion_timestamp.GetCurrentTime(), True),
], ids=["container-status", "annotation", "readiness", "ip", "labels", "terminating"])
def test_only_pod_changes_that_matter_enqueue_the_service(controller, change, enqueued):
    put(controller.services, make_service())
    old = make_pod("a", "10.244.0.5", ports=HTTP)
    new = copy(old)
    change(new)
    controller._pod_updated(old, new)
    assert (len(controller.queue) == 1) is enqueued
