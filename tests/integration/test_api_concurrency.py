"""Concurrent writers against the real API server and etcd: optimistic
concurrency on resourceVersion (one winner, ABORTED for the rest, never a
half-written object) and create races on one name."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from google.protobuf.message import Message

from kubeling.client.api_client import ApiClient
from kubeling.client.errors import AlreadyExistsError, ConflictError
from kubeling.objects import copy, from_dict

ROUNDS = 20


@pytest.fixture
async def clients(api_server):
    """Two independent connections, so the two writers really race."""
    async with ApiClient(api_server.address) as a, ApiClient(api_server.address) as b:
        yield a, b


@pytest.fixture
async def ns(clients, namespace_name):
    await clients[0].create(from_dict({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": namespace_name}}))
    return namespace_name


def config_map(name: str, ns: str, **data: str) -> Message:
    return from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "namespace": ns}, "data": data})


def deployment(name: str, ns: str) -> Message:
    return from_dict(yaml.safe_load(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "localhost/kubeling/http:1"}}]
"""))


def outcome(results) -> tuple[list, list]:
    """(successes, conflicts); anything else fails the test."""
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ConflictError)]
    assert not others, others
    return wins, conflicts


async def test_two_writers_with_one_resource_version_one_wins_whole(clients, ns):
    a, b = clients
    current = await a.create(config_map("shared", ns, round="0"))
    for i in range(ROUNDS):
        mine = copy(current)
        mine.data.clear()
        mine.data.update({"round": str(i + 1), "writer": "a", "a-only": f"a{i}"})
        mine.metadata.labels.clear()
        mine.metadata.labels["writer"] = "a"
        theirs = copy(current)
        theirs.data.clear()
        theirs.data.update({"round": str(i + 1), "writer": "b", "b-only": f"b{i}", "extra": "x"})
        theirs.metadata.labels.clear()
        theirs.metadata.labels.update({"writer": "b", "round": str(i)})

        results = await asyncio.gather(a.update(mine), b.update(theirs), return_exceptions=True)
        wins, conflicts = outcome(results)
        assert len(wins) == 1 and len(conflicts) == 1, results
        assert conflicts[0].code.name == "ABORTED"
        assert "shared" in str(conflicts[0])
        winner = wins[0]
        sent = mine if winner.data["writer"] == "a" else theirs

        stored = await a.get("configmaps", "shared", ns)
        assert stored == winner  # exactly what the winner was told
        assert dict(stored.data) == dict(sent.data)  # the winner's whole version ...
        assert dict(stored.metadata.labels) == dict(sent.metadata.labels)  # ... and nothing of the other
        assert int(stored.metadata.resource_version) > int(current.metadata.resource_version)
        current = stored


async def test_two_writers_on_spec_bump_generation_once(clients, ns):
    a, b = clients
    current = await a.create(deployment("web", ns))
    for i in range(ROUNDS):
        first, second = copy(current), copy(current)
        first.spec.replicas = 2 * i + 2
        first.spec.template.spec.containers[0].image = f"localhost/kubeling/http:a{i}"
        second.spec.replicas = 2 * i + 3
        second.spec.min_ready_seconds = i + 1
        results = await asyncio.gather(a.update(first), b.update(second), return_exceptions=True)
        wins, conflicts = outcome(results)
        assert len(wins) == 1 and len(conflicts) == 1, results
        stored = await b.get("deployments", "web", ns)
        assert stored == wins[0]
        sent = first if stored.spec.replicas == first.spec.replicas else second
        assert stored.spec.template.spec.containers[0].image == sent.spec.template.spec.containers[0].image
        assert stored.spec.min_ready_seconds == sent.spec.min_ready_seconds
        assert stored.metadata.generation == current.metadata.generation + 1
        current = stored


async def test_two_status_writers_with_one_resource_version(clients, ns):
    a, b = clients
    current = await a.create(deployment("web", ns))
    for i in range(ROUNDS):
        first, second = copy(current), copy(current)
        first.status.replicas, first.status.ready_replicas = 5, i
        second.status.replicas, second.status.available_replicas = 7, i
        results = await asyncio.gather(a.update_status(first), b.update_status(second),
                                       return_exceptions=True)
        wins, conflicts = outcome(results)
        assert len(wins) == 1 and len(conflicts) == 1, results
        stored = await a.get("deployments", "web", ns)
        assert stored == wins[0]
        sent = first if stored.status.replicas == 5 else second
        assert stored.status == sent.status
        assert stored.spec == current.spec and stored.metadata.generation == current.metadata.generation
        current = stored


async def test_a_stale_resource_version_changes_nothing(clients, ns):
    a, _ = clients
    original = await a.create(config_map("cas", ns, value="original"))
    newer = copy(original)
    newer.data["value"] = "newer"
    newer = await a.update(newer)

    stale = copy(original)  # still carries the first resourceVersion
    stale.data["value"] = "stale"
    stale.metadata.labels["stale"] = "yes"
    with pytest.raises(ConflictError) as err:
        await a.update(stale)
    assert "cas" in str(err.value)
    assert (await a.get("configmaps", "cas", ns)) == newer

    with pytest.raises(ConflictError):
        await a.delete("configmaps", "cas", ns, resource_version=original.metadata.resource_version)
    with pytest.raises(ConflictError):
        await a.delete("configmaps", "cas", ns, uid="00000000-0000-0000-0000-000000000000")
    assert (await a.get("configmaps", "cas", ns)) == newer

    # Status and Bind honour the same precondition.
    pod = from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": ns},
                     "spec": {"containers": [{"name": "c", "image": "localhost/kubeling/shell:1"}]}})
    created = await a.create(pod)
    relabelled = copy(created)
    relabelled.metadata.labels["x"] = "y"
    relabelled = await a.update(relabelled)
    stale_status = copy(created)
    stale_status.status.phase = "Running"
    with pytest.raises(ConflictError):
        await a.update_status(stale_status)
    with pytest.raises(ConflictError):
        await a.bind(ns, "web", "node-1", resource_version=created.metadata.resource_version)
    with pytest.raises(ConflictError):
        await a.bind(ns, "web", "node-1", uid="not-the-uid")
    assert (await a.get("pods", "web", ns)) == relabelled

    # With the current version the same writes land.
    bound = await a.bind(ns, "web", "node-1", uid=created.metadata.uid,
                         resource_version=relabelled.metadata.resource_version)
    assert bound.spec.node_name == "node-1"


async def test_concurrent_creates_of_one_name_one_wins(clients, ns):
    a, b = clients
    for i in range(ROUNDS // 2):
        name = f"race-{i}"
        attempts = [config_map(name, ns, writer=str(w), round=str(i)) for w in range(8)]
        results = await asyncio.gather(
            *((a if w % 2 else b).create(obj) for w, obj in enumerate(attempts)),
            return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        exists = [r for r in results if isinstance(r, AlreadyExistsError)]
        assert len(wins) == 1 and len(exists) == 7, results
        assert all(name in str(e) for e in exists)
        stored = await a.get("configmaps", name, ns)
        assert stored == wins[0]
        assert stored.metadata.uid == wins[0].metadata.uid


async def test_unconditional_updates_all_land_and_none_is_half_written(clients, ns):
    """Without a resourceVersion the server re-reads and reapplies; every
    write succeeds and the stored object is the last one whole."""
    a, b = clients
    await a.create(config_map("last-writer", ns))
    writes = []
    for w in range(10):
        obj = config_map("last-writer", ns, writer=str(w), **{f"only-{w}": "x"})
        obj.metadata.labels["writer"] = str(w)
        writes.append(obj)
    results = await asyncio.gather(*((a if w % 2 else b).update(obj) for w, obj in enumerate(writes)))
    revisions = [int(r.metadata.resource_version) for r in results]
    assert len(set(revisions)) == len(revisions)  # each was its own write
    last = results[revisions.index(max(revisions))]
    stored = await a.get("configmaps", "last-writer", ns)
    assert stored == last
    w = stored.data["writer"]
    assert dict(stored.data) == {"writer": w, f"only-{w}": "x"}
    assert dict(stored.metadata.labels) == {"writer": w}
