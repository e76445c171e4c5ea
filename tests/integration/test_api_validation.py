"""Bad input through the real API server: each class is refused with
INVALID_ARGUMENT and a message naming the field, and nothing is written."""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import pytest
import yaml
from google.protobuf.message import Message

from kubeling.api.v1 import api_pb2, api_pb2_grpc
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import GoneError, InvalidError, NotFoundError, from_rpc_error
from kubeling.objects import copy, from_dict


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    await client.create(from_dict({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": namespace_name}}))
    return namespace_name


POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: localhost/kubeling/http:1
    ports: [{containerPort: 8080}]
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 500m, memory: 128Mi}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "localhost/kubeling/http:1"}]
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""

CONFIG_MAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue}
"""


def doc(manifest: str) -> dict:
    return yaml.safe_load(manifest)


def _name(value):
    def change(d):
        d["metadata"]["name"] = value
    return change


def _labels(labels):
    def change(d):
        d["metadata"]["labels"] = labels
    return change


def _container(**fields):
    def change(d):
        c = d["spec"]["containers"][0]
        for k, v in fields.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
    return change


def _spec(**fields):
    def change(d):
        d["spec"].update(fields)
    return change


def _no_containers(d):
    d["spec"]["containers"] = []


def _template_labels(d):
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}


def _max_surge(value):
    def change(d):
        d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": value}}
    return change


def _huge_value(d):
    d["data"] = {"blob": "x" * (2 * 1024 * 1024)}


# (id, manifest, change, the field the message must name)
BAD_CREATES = [
    ("name-uppercase", CONFIG_MAP, _name("Settings"), "metadata.name"),
    ("name-underscore", CONFIG_MAP, _name("my_settings"), "metadata.name"),
    ("name-254-chars", CONFIG_MAP, _name("a" * 254), "metadata.name"),
    ("service-name-dns1035", SERVICE, _name("1web"), "metadata.name"),
    ("label-key", CONFIG_MAP, _labels({"bad key!": "x"}), "metadata.labels"),
    ("label-key-prefix", CONFIG_MAP, _labels({"Example.COM_/x": "y"}), "metadata.labels"),
    ("label-value", CONFIG_MAP, _labels({"app": "-starts-with-dash"}), "metadata.labels"),
    ("label-value-too-long", CONFIG_MAP, _labels({"app": "v" * 64}), "metadata.labels"),
    ("missing-image", POD, _container(image=None), "spec.containers[0].image"),
    ("no-containers", POD, _no_containers, "spec.containers"),
    ("port-70000", POD, _container(ports=[{"containerPort": 70000}]),
     "spec.containers[0].ports[0].containerPort"),
    ("bad-quantity", POD, _container(resources={"requests": {"cpu": "12xyz"}}),
     "spec.containers[0].resources.requests[cpu]"),
    ("requests-above-limits", POD,
     _container(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
     "spec.containers[0].resources.requests[cpu]"),
    ("restart-policy", POD, _spec(restartPolicy="Sometimes"), "spec.restartPolicy"),
    ("selector-does-not-match-template", DEPLOYMENT, _template_labels, "spec.template.metadata.labels"),
    ("max-surge-bad-string", DEPLOYMENT, _max_surge("lots"), "spec.strategy.rollingUpdate.maxSurge"),
    ("max-surge-negative", DEPLOYMENT, _max_surge(-1), "spec.strategy.rollingUpdate.maxSurge"),
    ("service-without-ports", SERVICE, _spec(ports=[]), "spec.ports"),
    ("service-port-0", SERVICE, _spec(ports=[{"port": 0}]), "spec.ports[0].port"),
    ("object-over-1.5MiB", CONFIG_MAP, _huge_value, "data"),
]


@pytest.mark.parametrize("manifest, change, field", [c[1:] for c in BAD_CREATES],
                         ids=[c[0] for c in BAD_CREATES])
async def test_bad_objects_are_refused_naming_the_field_and_nothing_is_written(
        client, ns, manifest, change, field):
    d = doc(manifest)
    change(d)
    d["metadata"]["namespace"] = ns
    obj = from_dict(d)
    with pytest.raises(InvalidError) as err:
        await client.create(obj)
    message = str(err.value)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in message, message
    assert obj.metadata.name[:40] in message or obj.metadata.name == "", message  # names the object
    # Nothing was stored: not the object, not anything else in the namespace.
    with pytest.raises(NotFoundError):
        await client.get(obj.kind, obj.metadata.name, ns)
    assert (await client.list(obj.kind, ns)).items == []
    # A dry run refuses the same way.
    with pytest.raises(InvalidError):
        await client.create(obj, dry_run=True)


async def test_the_good_versions_are_accepted(client, ns):
    """The manifests above are valid before their change (so each test fails for its reason)."""
    for manifest in (POD, DEPLOYMENT, SERVICE, CONFIG_MAP):
        d = doc(manifest)
        d["metadata"]["namespace"] = ns
        created = await client.create(from_dict(d))
        assert created.metadata.uid


async def test_an_object_over_the_size_limit_is_invalid_not_a_transport_error(client, ns):
    """No per-field limit applies to an env value: the 1.5 MiB object limit does."""
    d = doc(POD)
    d["metadata"]["namespace"] = ns
    d["spec"]["containers"][0]["env"] = [{"name": "BIG", "value": "x" * (2 * 1024 * 1024)}]
    with pytest.raises(InvalidError) as err:
        await client.create(from_dict(d))
    message = str(err.value)
    assert 'Pod "web"' in message and "limit is 1572864 bytes" in message, message[:300]
    with pytest.raises(NotFoundError):
        await client.get("pods", "web", ns)

    # Just under the limit is fine.
    d["spec"]["containers"][0]["env"][0]["value"] = "x" * (1024 * 1024)
    created = await client.create(from_dict(d))
    assert len(created.spec.containers[0].env[0].value) == 1024 * 1024


async def test_an_oversized_update_is_refused_and_changes_nothing(client, ns):
    d = doc(CONFIG_MAP)
    d["metadata"]["namespace"] = ns
    created = await client.create(from_dict(d))
    big = copy(created)
    big.data["blob"] = "x" * (2 * 1024 * 1024)
    with pytest.raises(InvalidError) as err:
        await client.update(big)
    assert "data" in str(err.value)
    assert (await client.get("configmaps", "settings", ns)) == created


async def test_a_bad_update_is_refused_and_changes_nothing(client, ns):
    d = doc(DEPLOYMENT)
    d["metadata"]["namespace"] = ns
    created = await client.create(from_dict(d))
    bad = copy(created)
    bad.spec.replicas = -1
    bad.metadata.labels["Bad Key"] = "x"
    with pytest.raises(InvalidError) as err:
        await client.update(bad)
    assert "spec.replicas" in str(err.value) and "metadata.labels" in str(err.value)
    moved = copy(created)
    moved.spec.selector.match_labels["app"] = "other"
    moved.spec.template.metadata.labels["app"] = "other"
    with pytest.raises(InvalidError) as err:
        await client.update(moved)
    assert "spec.selector" in str(err.value) and "immutable" in str(err.value)
    assert (await client.get("deployments", "web", ns)) == created


async def test_pod_spec_updates_may_only_change_images(client, ns):
    d = doc(POD)
    d["metadata"]["namespace"] = ns
    created = await client.create(from_dict(d))

    changes = [  # (change, the field the message names as changed)
        (lambda p: p.spec.containers[0].command.append("sh"), "containers"),
        (lambda p: p.spec.containers[0].env.add(name="X", value="1"), "containers"),
        (lambda p: setattr(p.spec, "restart_policy", "Never"), "restartPolicy"),
        (lambda p: p.spec.containers.add(name="extra", image="localhost/kubeling/shell:1"), "containers"),
        (lambda p: p.spec.node_selector.update({"disk": "ssd"}), "nodeSelector"),
    ]
    for change, field in changes:
        bad = copy(created)
        change(bad)
        with pytest.raises(InvalidError) as err:
            await client.update(bad)
        message = str(err.value)
        assert "Forbidden" in message and "spec" in message, message
        assert f"spec.{field}" in message, message
    assert (await client.get("pods", "web", ns)) == created

    # The image may change (generation follows).
    ok = copy(created)
    ok.spec.containers[0].image = "localhost/kubeling/http:2"
    updated = await client.update(ok)
    assert updated.spec.containers[0].image == "localhost/kubeling/http:2"
    assert updated.metadata.generation == created.metadata.generation + 1


# ------------------------------------------------------------- bad requests


async def test_unknown_resource_is_invalid(client, ns):
    stub_channel = grpc.aio.insecure_channel(client.address)
    stub = api_pb2_grpc.ApiStub(stub_channel)
    try:
        for call, request in (
                (stub.Get, api_pb2.GetRequest(resource="widgets", namespace=ns, name="x")),
                (stub.List, api_pb2.ListRequest(resource="widgets", namespace=ns)),
                (stub.Delete, api_pb2.DeleteRequest(resource="widgets", namespace=ns, name="x")),
                (stub.Get, api_pb2.GetRequest(resource="", namespace=ns, name="x"))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            error = from_rpc_error(err.value)
            assert isinstance(error, InvalidError), error
            assert "widgets" in str(error) or "resource" in str(error)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Watch(api_pb2.WatchRequest(resource="widgets")):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "widgets" in err.value.details()
    finally:
        await stub_channel.close()


async def test_an_empty_object_oneof_is_invalid(client, ns):
    channel = grpc.aio.insecure_channel(client.address)
    stub = api_pb2_grpc.ApiStub(channel)
    try:
        for call, request in ((stub.Create, api_pb2.CreateRequest()),
                              (stub.Update, api_pb2.UpdateRequest()),
                              (stub.UpdateStatus, api_pb2.UpdateRequest(object=api_pb2.Object()))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "object" in err.value.details()
    finally:
        await channel.close()


def _cm(name: str, ns: str) -> Message:
    d = doc(CONFIG_MAP)
    d["metadata"].update(name=name, namespace=ns)
    return from_dict(d)


async def test_bad_continue_tokens(client, ns, api_server):
    for i in range(4):
        await client.create(_cm(f"cm-{i}", ns))
    page = await client.list("configmaps", ns, limit=2)
    assert page.continue_token

    for token in ("garbage", "eyJydiI6IDF9", page.continue_token[:-4] + "AAAA"):
        with pytest.raises(InvalidError) as err:
            await client.list("configmaps", ns, limit=2, continue_token=token)
        assert "continue" in str(err.value)
    # Well-formed JSON that this server never issued.
    for data in ({"rv": -3, "start": f"/registry/configmaps/{ns}/x"}, {"rv": 1, "start": 5},
                 {"start": f"/registry/configmaps/{ns}/x"}, [1, 2]):
        token = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
        with pytest.raises(InvalidError) as err:
            await client.list("configmaps", ns, limit=2, continue_token=token)
        assert "continue" in str(err.value)
    # A version this server has not reached yet.
    future = base64.urlsafe_b64encode(json.dumps(
        {"rv": 10**9, "start": f"/registry/configmaps/{ns}/cm-2"}).encode()).decode()
    with pytest.raises(InvalidError) as err:
        await client.list("configmaps", ns, limit=2, continue_token=future)
    assert "continue" in str(err.value)
    # A token from another list (another resource or namespace) is refused.
    with pytest.raises(InvalidError) as err:
        await client.list("secrets", ns, limit=2, continue_token=page.continue_token)
    assert "continue" in str(err.value)
    with pytest.raises(InvalidError):
        await client.list("configmaps", "default", limit=2, continue_token=page.continue_token)

    # A token whose revision was compacted is stale: OUT_OF_RANGE, list again.
    await client.delete("configmaps", "cm-3", ns)
    await asyncio.to_thread(api_server.compact)
    with pytest.raises(GoneError) as gone:
        await client.list("configmaps", ns, limit=2, continue_token=page.continue_token)
    assert "continue" in str(gone.value)
    fresh = await client.list("configmaps", ns)
    assert [o.metadata.name for o in fresh.items] == ["cm-0", "cm-1", "cm-2"]


@pytest.mark.parametrize("selector", ["app in (web", "app=web,", "=web", "app in web", "a b",
                                      "app=" + "v" * 64, "bad key!=x"])
async def test_bad_label_selectors_are_invalid(client, ns, selector):
    with pytest.raises(InvalidError) as err:
        await client.list("pods", ns, label_selector=selector)
    assert "labelSelector" in str(err.value)
    with pytest.raises(InvalidError) as err:
        async with asyncio.timeout(10):
            async for _ in client.watch("pods", ns, label_selector=selector):
                pass
    assert "labelSelector" in str(err.value)


@pytest.mark.parametrize("selector", ["spec.nodeName", "spec.nodeName in (a)", "=x"])
async def test_bad_field_selectors_are_invalid(client, ns, selector):
    with pytest.raises(InvalidError) as err:
        await client.list("pods", ns, field_selector=selector)
    assert "fieldSelector" in str(err.value)


async def test_bad_request_parameters_are_invalid(client, ns):
    with pytest.raises(InvalidError) as err:
        await client.list("pods", ns, resource_version="yesterday")
    assert "resourceVersion" in str(err.value)
    with pytest.raises(InvalidError) as err:
        await client.list("pods", ns, resource_version=str(10**9))
    assert "resourceVersion" in str(err.value) and "newer" in str(err.value)
    with pytest.raises(InvalidError) as err:
        async with asyncio.timeout(10):
            async for _ in client.watch("pods", ns, resource_version=str(10**9), bookmark_interval_seconds=1):
                pass
    assert "resourceVersion" in str(err.value) and "newer" in str(err.value)
    with pytest.raises(InvalidError) as err:
        await client.list("pods", ns, limit=-1)
    assert "limit" in str(err.value)
    with pytest.raises(InvalidError) as err:
        async with asyncio.timeout(10):
            async for _ in client.watch("pods", ns, resource_version="-5"):
                pass
    assert "resourceVersion" in str(err.value)
    await client.create(_cm("x", ns))
    with pytest.raises(InvalidError) as err:
        await client.delete("configmaps", "x", ns, grace_period_seconds=-1)
    assert "gracePeriodSeconds" in str(err.value)
    await client.get("configmaps", "x", ns)


async def test_a_resource_version_on_create_is_invalid(client, ns):
    cm = _cm("x", ns)
    cm.metadata.resource_version = "12"
    with pytest.raises(InvalidError) as err:
        await client.create(cm)
    assert "metadata.resourceVersion" in str(err.value)
    with pytest.raises(NotFoundError):
        await client.get("configmaps", "x", ns)
