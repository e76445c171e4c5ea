"""The Python API client against a real API server and etcd: every verb, and
every error arriving as its typed exception."""

import asyncio

import pytest

from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    FailedPreconditionError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnavailableError,
    retry_on_conflict,
)
from kubeling.config import ConfigError, load_config, save_config
from kubeling.local.etcd_server import find_free_port


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


def config_map(name: str, ns: str, labels=None, **data) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = ns
    cm.metadata.labels.update(labels or {})
    cm.data.update(data)
    return cm


def pod(name: str, ns: str) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = ns
    c = p.spec.containers.add()
    c.name = "main"
    c.image = "localhost/kubeling/shell:1"
    return p


async def test_create_get_update_delete_round_trip(client, ns):
    created = await client.create(config_map("settings", ns, color="blue"))
    assert isinstance(created, core_pb2.ConfigMap)
    assert created.metadata.uid and created.metadata.resource_version
    assert created.kind == "ConfigMap" and created.api_version == "v1"

    for resource in ("configmaps", "ConfigMap", "cm", core_pb2.ConfigMap):
        got = await client.get(resource, "settings", ns)
        assert got.data["color"] == "blue"

    got.data["color"] = "green"
    updated = await client.update(got)
    assert updated.data["color"] == "green"
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    deleted, pending = await client.delete("configmaps", "settings", ns)
    assert not pending and deleted.metadata.name == "settings"
    with pytest.raises(NotFoundError):
        await client.get("configmaps", "settings", ns)
    with pytest.raises(NotFoundError):
        await client.delete("configmaps", "settings", ns)


async def test_errors_arrive_as_typed_exceptions_with_the_servers_message(client, ns):
    await client.create(config_map("taken", ns))
    with pytest.raises(AlreadyExistsError) as exists:
        await client.create(config_map("taken", ns))
    assert "taken" in str(exists.value)
    assert exists.value.code.name == "ALREADY_EXISTS"

    with pytest.raises(InvalidError) as invalid:
        await client.create(config_map("Not_A_DNS_Name", ns))
    assert "metadata.name" in str(invalid.value)

    with pytest.raises(NotFoundError) as missing_ns:
        await client.create(config_map("orphan", ns + "-missing"))
    assert ns + "-missing" in str(missing_ns.value)

    with pytest.raises(NotFoundError):
        await client.get("pods", "nobody", ns)
    assert issubclass(NotFoundError, ApiError)


async def test_stale_resource_version_is_a_conflict_and_changes_nothing(client, ns):
    first = await client.create(config_map("cas", ns, n="0"))
    winner = core_pb2.ConfigMap()
    winner.CopyFrom(first)
    winner.data["n"] = "1"
    await client.update(winner)

    loser = core_pb2.ConfigMap()
    loser.CopyFrom(first)  # still carries the old resourceVersion
    loser.data["n"] = "2"
    with pytest.raises(ConflictError):
        await client.update(loser)
    assert (await client.get("configmaps", "cas", ns)).data["n"] == "1"

    with pytest.raises(ConflictError):
        await client.delete("configmaps", "cas", ns, uid="not-the-uid")
    with pytest.raises(ConflictError):
        await client.delete("configmaps", "cas", ns,
                            resource_version=first.metadata.resource_version)


async def test_retry_on_conflict_lets_concurrent_read_modify_writes_all_land(client, ns):
    await client.create(config_map("counter", ns, n="0"))

    async def increment():
        cm = await client.get("configmaps", "counter", ns)
        await asyncio.sleep(0)  # let the others read the same version
        cm.data["n"] = str(int(cm.data["n"]) + 1)
        return await client.update(cm)

    await asyncio.gather(*(retry_on_conflict(increment, attempts=20) for _ in range(5)))
    assert (await client.get("configmaps", "counter", ns)).data["n"] == "5"


async def test_retry_on_conflict_gives_up_after_its_attempts():
    calls = 0

    async def always_conflicts():
        nonlocal calls
        calls += 1
        raise ConflictError("the object has been modified")

    with pytest.raises(ConflictError):
        await retry_on_conflict(always_conflicts, attempts=3, delay=0.001)
    assert calls == 3


async def test_list_pages_selectors_and_list_all(client, ns):
    for i in range(7):
        tier = "web" if i % 2 else "db"
        await client.create(config_map(f"cm-{i}", ns, labels={"tier": tier}))

    page = await client.list("configmaps", ns, limit=3)
    assert [o.metadata.name for o in page.items] == ["cm-0", "cm-1", "cm-2"]
    assert page.continue_token and page.resource_version
    rest = await client.list("configmaps", ns, limit=10, continue_token=page.continue_token)
    assert [o.metadata.name for o in rest.items] == [f"cm-{i}" for i in range(3, 7)]
    assert rest.continue_token == ""

    everything = await client.list_all("configmaps", ns, page_size=2)
    assert [o.metadata.name for o in everything.items] == [f"cm-{i}" for i in range(7)]
    assert everything.continue_token == ""

    web = await client.list_all("cm", ns, label_selector="tier=web")
    assert [o.metadata.name for o in web.items] == ["cm-1", "cm-3", "cm-5"]
    named = await client.list("configmaps", ns, field_selector="metadata.name=cm-4")
    assert [o.metadata.name for o in named.items] == ["cm-4"]
    with pytest.raises(InvalidError):
        await client.list("configmaps", ns, label_selector="tier in (")


async def test_watch_streams_changes_in_order_with_bookmarks(client, ns):
    start = await client.list("configmaps", ns)
    stream = client.watch("configmaps", ns, resource_version=start.resource_version,
                          bookmark_interval_seconds=1)
    cm = await client.create(config_map("watched", ns, v="1"))
    cm.data["v"] = "2"
    await client.update(cm)
    await client.delete("configmaps", "watched", ns)

    seen = []
    bookmark = None
    async with stream:
        async with asyncio.timeout(15):
            async for ev in stream:
                if ev.type == "BOOKMARK":
                    bookmark = ev
                    if len(seen) == 3:
                        break
                    continue
                assert isinstance(ev.object, core_pb2.ConfigMap)
                seen.append((ev.type, ev.object.data.get("v")))
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
    assert isinstance(bookmark.object, core_pb2.ConfigMap)
    assert int(bookmark.object.metadata.resource_version) >= int(start.resource_version)


async def test_cancelling_a_watch_from_another_task_ends_the_iteration(client, ns):
    stream = client.watch("configmaps", ns, allow_bookmarks=False)
    seen = []

    async def consume():
        async for ev in stream:
            seen.append((ev.type, ev.object.metadata.name))
        return "ended"

    consumer = asyncio.create_task(consume())
    await client.create(config_map("seen", ns))
    async with asyncio.timeout(10):
        while not seen:
            await asyncio.sleep(0.02)
    stream.cancel()  # the consumer is parked on its next read
    assert await asyncio.wait_for(consumer, 10) == "ended"
    assert seen == [("ADDED", "seen")]


async def test_reads_at_a_compacted_version_are_gone(client, ns, api_server):
    old = await client.create(config_map("old", ns))
    for i in range(3):
        await client.create(config_map(f"newer-{i}", ns))
    page = await client.list("configmaps", ns, limit=2)
    assert page.continue_token
    await client.delete("configmaps", "newer-0", ns)
    await asyncio.to_thread(api_server.compact)

    with pytest.raises(GoneError) as gone:
        await client.list("configmaps", ns, resource_version=old.metadata.resource_version)
    assert "too old" in str(gone.value)
    with pytest.raises(GoneError):
        await client.list("configmaps", ns, limit=2, continue_token=page.continue_token)
    # list_all needs no continue token from before the compaction.
    everything = await client.list_all("configmaps", ns, page_size=1)
    assert [o.metadata.name for o in everything.items] == ["newer-1", "newer-2", "old"]


async def test_update_status_and_bind(client, ns):
    created = await client.create(pod("web", ns))
    created.status.phase = "Running"
    created.spec.hostname = "ignored-by-update-status"
    updated = await client.update_status(created)
    assert updated.status.phase == "Running"
    assert updated.spec.hostname == ""  # spec is not written through status

    bound = await client.bind(ns, "web", "node-1", uid=created.metadata.uid)
    assert isinstance(bound, core_pb2.Pod) and bound.spec.node_name == "node-1"
    assert (await client.get("pods", "web", ns)).spec.node_name == "node-1"
    with pytest.raises(FailedPreconditionError):
        await client.bind(ns, "web", "node-2")
    with pytest.raises(NotFoundError):
        await client.bind(ns, "nobody", "node-1")

    # A bound pod waits for its node agent: the delete is pending.
    doomed, pending = await client.delete("pods", "web", ns, grace_period_seconds=30)
    assert pending and doomed.metadata.HasField("deletion_timestamp")
    gone, pending = await client.delete("pods", "web", ns, grace_period_seconds=0)
    assert not pending


async def test_cluster_scoped_kinds_ignore_the_namespace(client, namespace_name):
    node = core_pb2.Node()
    node.metadata.name = f"node-{namespace_name}"
    await client.create(node)
    got = await client.get("nodes", node.metadata.name)  # namespace defaults to "default"
    assert got.metadata.namespace == ""
    await client.delete("node", node.metadata.name)


async def test_apps_kinds_round_trip(client, ns):
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.namespace = ns
    d.spec.replicas = 2
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    c = d.spec.template.spec.containers.add()
    c.name = "web"
    c.image = "localhost/kubeling/http:1"
    created = await client.create(d)
    assert created.metadata.generation == 1
    got = await client.get("deploy", "web", ns)
    got.spec.replicas = 3
    assert (await client.update(got)).metadata.generation == 2


async def test_an_unreachable_server_is_unavailable():
    async with ApiClient(f"127.0.0.1:{find_free_port()}", timeout=5) as c:
        with pytest.raises(UnavailableError):
            await c.get("pods", "x")


async def test_from_config_reads_the_config_file(api_server, tmp_path, monkeypatch):
    path = save_config(server=api_server.address, path=tmp_path / "kube" / "config")
    assert (path.stat().st_mode & 0o777) == 0o600
    monkeypatch.setenv("KUBELING_CONFIG", str(path))
    assert load_config().server == api_server.address
    async with ApiClient.from_config() as c:
        assert (await c.get("namespaces", "default")).metadata.name == "default"


def test_a_missing_config_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELING_CONFIG", str(tmp_path / "nothing-here"))
    with pytest.raises(ConfigError) as err:
        ApiClient.from_config()
    assert "no cluster configured: run `kubeling up` or set KUBELING_CONFIG" in str(err.value)
    (tmp_path / "bad").write_text("server: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad")
    (tmp_path / "noserver").write_text("token: x\n")
    with pytest.raises(ConfigError, match="server"):
        load_config(tmp_path / "noserver")
