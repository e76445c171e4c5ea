"""The garbage collector and the namespace controller against a real API
server: owners and dependents wired by hand with ownerReferences, deleted
with each propagation policy; and a namespace deleted with content of
every kind in it."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import NotFoundError
from kubeling.objects import from_dict
from tests.waiting import eventually as _eventually

TIMEOUT = 30.0



async def eventually(check, timeout: float = TIMEOUT, interval: float = 0.1, what: str = ""):
    return await _eventually(check, timeout, interval, what)


async def gone(client: ApiClient, resource: str, name: str, namespace: str) -> bool:
    try:
        await client.get(resource, name, namespace)
    except NotFoundError:
        return True
    return False


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    namespace = core_pb2.Namespace()
    namespace.metadata.name = namespace_name
    await client.create(namespace)
    return namespace_name


@pytest.fixture
def controllers(components):
    proc = components("services.controllers", "--controllers", "garbagecollector,namespace",
                      "--leader-elect", "false")
    yield proc
    assert proc.running, f"controller manager died:\n{proc.log_tail()}"


# ------------------------------------------------------------------ builders


def owner_ref(owner, *, controller: bool = True, block: bool = True) -> dict:
    return {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.metadata.name,
            "uid": owner.metadata.uid, "controller": controller, "blockOwnerDeletion": block}


def replica_set(name: str, ns: str, owners=()):
    return from_dict({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": list(owners)},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "localhost/kubeling/shell:1"}]}}},
    })


def deployment(name: str, ns: str):
    return from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "localhost/kubeling/shell:1"}]}}},
    })


def pod(name: str, ns: str, owners=(), node: str = "", grace: int | None = None):
    spec = {"containers": [{"name": "c", "image": "localhost/kubeling/shell:1"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns, "ownerReferences": list(owners)},
                      "spec": spec})


def config_map(name: str, ns: str, owners=()):
    return from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "namespace": ns, "ownerReferences": list(owners)},
                      "data": {"k": "v"}})


async def deletion_revisions(client: ApiClient, ns: str, resources: list[str], since: str,
                             expect: int) -> dict[tuple[str, str], int]:
    """Watch `resources` in `ns` from `since` until `expect` DELETED events
    were seen; returns (resource, name) -> the etcd revision of its removal.
    Revisions are one global order across resources."""
    seen: dict[tuple[str, str], int] = {}

    async def follow(resource: str) -> None:
        async for ev in client.watch(resource, ns, resource_version=since):
            if ev.type == "DELETED":
                seen[(resource, ev.object.metadata.name)] = int(ev.object.metadata.resource_version)
            if len(seen) >= expect:
                return

    tasks = [asyncio.create_task(follow(r)) for r in resources]
    try:
        await eventually(lambda: asyncio.sleep(0, len(seen) >= expect), what=f"{expect} deletions")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen


# --------------------------------------------------------------------- tests


async def test_background_deletion_removes_dependents(client, ns, controllers):
    rs = await client.create(replica_set("web", ns))
    keeper = await client.create(config_map("keeper", ns))
    for i in range(3):
        await client.create(pod(f"web-{i}", ns, [owner_ref(rs)]))
    await client.create(config_map("web-config", ns, [owner_ref(rs, controller=False, block=False)]))
    # A dependent with a second, live owner outlives the first.
    await client.create(pod("shared", ns, [owner_ref(rs), owner_ref(keeper, controller=False)]))

    _, pending = await client.delete("replicasets", "web", ns)  # default: background
    assert not pending

    async def dependents_gone():
        pods = (await client.list("pods", ns)).items
        cms = {c.metadata.name for c in (await client.list("configmaps", ns)).items}
        return {p.metadata.name for p in pods} == {"shared"} and cms == {"keeper"}
    await eventually(dependents_gone, what="the ReplicaSet's dependents to be collected")

    async def shared_unlinked():
        shared = await client.get("pods", "shared", ns)
        return [r.uid for r in shared.metadata.owner_references] == [keeper.metadata.uid]
    await eventually(shared_unlinked, what="the dangling reference to be removed")


async def test_dependent_of_a_replaced_owner_is_collected(client, ns, controllers):
    """An owner reference names a uid: a new object with the owner's name is not its owner."""
    old = await client.create(config_map("owner", ns))
    await client.delete("configmaps", "owner", ns)
    await client.create(config_map("owner", ns))  # same name, new uid
    await client.create(pod("orphan", ns, [owner_ref(old)]))
    await eventually(lambda: gone(client, "pods", "orphan", ns), what="the pod of the old owner to go")
    assert (await client.get("configmaps", "owner", ns)).metadata.uid != old.metadata.uid


async def test_foreground_deletion_removes_dependents_before_the_owner(client, ns, controllers):
    rs = await client.create(replica_set("web", ns))
    pods = [await client.create(pod(f"web-{i}", ns, [owner_ref(rs)])) for i in range(3)]
    since = pods[-1].metadata.resource_version

    watching = asyncio.create_task(
        deletion_revisions(client, ns, ["pods", "replicasets"], since, expect=4))
    await asyncio.sleep(0.2)
    obj, pending = await client.delete("replicasets", "web", ns, propagation_policy="Foreground")
    assert pending and "foregroundDeletion" in obj.metadata.finalizers

    removed = await watching
    rs_rev = removed[("replicasets", "web")]
    assert all(removed[("pods", p.metadata.name)] < rs_rev for p in pods), removed
    assert await gone(client, "replicasets", "web", ns)


async def test_foreground_deletion_walks_down_the_tree(client, ns, controllers):
    """Deployment -> ReplicaSet -> pods: each level goes before its owner."""
    deploy = await client.create(deployment("app", ns))
    rs = await client.create(replica_set("app-1", ns, [owner_ref(deploy)]))
    pods = [await client.create(pod(f"app-1-{i}", ns, [owner_ref(rs)])) for i in range(2)]
    since = pods[-1].metadata.resource_version

    watching = asyncio.create_task(
        deletion_revisions(client, ns, ["pods", "replicasets", "deployments"], since, expect=4))
    await asyncio.sleep(0.2)
    await client.delete("deployments", "app", ns, propagation_policy="Foreground")

    removed = await watching
    pod_revs = [removed[("pods", p.metadata.name)] for p in pods]
    assert max(pod_revs) < removed[("replicasets", "app-1")] < removed[("deployments", "app")]


async def test_foreground_owner_does_not_wait_for_non_blocking_dependents_to_be_kept(client, ns, controllers):
    """A dependent with another live owner only loses its reference to the deleted one."""
    rs = await client.create(replica_set("web", ns))
    keeper = await client.create(config_map("keeper", ns))
    await client.create(pod("shared", ns, [owner_ref(rs), owner_ref(keeper, controller=False)]))
    await client.delete("replicasets", "web", ns, propagation_policy="Foreground")
    await eventually(lambda: gone(client, "replicasets", "web", ns), what="the owner to go")
    shared = await client.get("pods", "shared", ns)
    assert [r.uid for r in shared.metadata.owner_references] == [keeper.metadata.uid]


async def test_orphan_deletion_keeps_dependents_without_the_reference(client, ns, controllers):
    rs = await client.create(replica_set("web", ns))
    keeper = await client.create(config_map("keeper", ns))
    for i in range(3):
        await client.create(pod(f"web-{i}", ns, [owner_ref(rs)]))
    await client.create(pod("two-owners", ns, [owner_ref(rs), owner_ref(keeper, controller=False)]))

    obj, pending = await client.delete("replicasets", "web", ns, propagation_policy="Orphan")
    assert pending and "orphan" in obj.metadata.finalizers
    await eventually(lambda: gone(client, "replicasets", "web", ns), what="the orphaning owner to go")

    pods = {p.metadata.name: p for p in (await client.list("pods", ns)).items}
    assert set(pods) == {"web-0", "web-1", "web-2", "two-owners"}
    for name in ("web-0", "web-1", "web-2"):
        assert not pods[name].metadata.owner_references
        assert not pods[name].metadata.HasField("deletion_timestamp")
    assert [r.uid for r in pods["two-owners"].metadata.owner_references] == [keeper.metadata.uid]
    # Nothing collects them later either.
    await asyncio.sleep(1.0)
    assert len((await client.list("pods", ns)).items) == 4


async def test_deleting_a_namespace_removes_its_content_then_itself(client, ns, namespace_name, controllers):
    other = core_pb2.Namespace()
    other.metadata.name = f"{namespace_name}-other"
    await client.create(other)
    await client.create(config_map("survivor", other.metadata.name))
    await client.create(pod("survivor", other.metadata.name))

    rs = await client.create(replica_set("web", ns))
    await client.create(deployment("app", ns))
    for i in range(3):
        await client.create(pod(f"web-{i}", ns, [owner_ref(rs)]))
    # Bound to a node that has no agent: graceful deletion never completes
    # by itself, so the controller must force it once the grace period ends.
    await client.create(pod("bound", ns, node="no-such-node", grace=1))
    await client.create(config_map("settings", ns))
    await client.create(from_dict({"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": "token", "namespace": ns},
                                   "stringData": {"token": "s3cret"}}))
    await client.create(from_dict({"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "web", "namespace": ns},
                                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    await client.create(from_dict({"apiVersion": "v1", "kind": "Endpoints",
                                   "metadata": {"name": "web", "namespace": ns}}))

    obj, pending = await client.delete("namespaces", ns, "")
    assert pending and obj.status.phase == "Terminating"

    await eventually(lambda: gone(client, "namespaces", ns, ""), what="the namespace to be removed")
    for resource in ("pods", "replicasets", "deployments", "configmaps", "secrets", "services", "endpoints"):
        assert not (await client.list(resource, ns)).items, resource
    # Nothing outside it was touched.
    assert (await client.get("configmaps", "survivor", other.metadata.name)).metadata.name == "survivor"
    assert (await client.get("pods", "survivor", other.metadata.name)).metadata.name == "survivor"
    assert not (await client.get("namespaces", other.metadata.name, "")).metadata.HasField("deletion_timestamp")
