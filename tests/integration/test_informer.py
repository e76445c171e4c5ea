"""Informers against a real API server: the initial list and the watch reach
handlers, and the cache converges to the server's state after the watch
breaks, after etcd compaction forces a relist, and after a restart, deletes
made meanwhile included.

Network failures are real: the informer's client reaches the API server
through a TCP proxy in this process that the tests can cut and restore.
"""

import asyncio
import logging

import pytest

from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import GoneError
from kubeling.client.informer import Informer, SharedInformerFactory, split_key

# Reconnect quickly once the proxy lets connections through again.
FAST_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 100),
                  ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 500))


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` drops every connection
    and refuses new ones until `restore()`. `target` may be changed."""

    def __init__(self, target: str):
        self.target = target
        self.blocked = False
        self.accepted = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        self.accepted += 1
        if self.blocked:
            writer.transport.abort()
            return
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)

    def cut(self) -> None:
        self.blocked = True
        for a, b in list(self._pairs):
            a.transport.abort()
            b.transport.abort()

    def restore(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def eventually(predicate, timeout: float = 20.0, interval: float = 0.05):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


class Recorder:
    """Handlers that record (event, key, data) tuples."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_add(self, obj):
        self.events.append(("add", _key(obj), dict(obj.data)))

    def on_update(self, old, new):
        self.events.append(("update", _key(new), dict(old.data), dict(new.data)))

    def on_delete(self, obj):
        self.events.append(("delete", _key(obj)))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]

    def attach(self, informer):
        informer.add_handler(self.on_add, self.on_update, self.on_delete)
        return self


def _key(obj):
    return f"{obj.metadata.namespace}/{obj.metadata.name}"


def config_map(name, ns, labels=None, **data):
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = ns
    cm.metadata.labels.update(labels or {})
    cm.data.update(data)
    return cm


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
async def proxy(api_server):
    p = TcpProxy(api_server.address)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def proxied_client(proxy):
    async with ApiClient(proxy.address, options=FAST_RECONNECT, timeout=5) as c:
        yield c


def store_data(informer):
    return {k: dict(o.data) for k, o in ((k, informer.store.get(k)) for k in informer.store.keys())}


async def server_data(client, ns):
    listed = await client.list_all("configmaps", ns)
    return {f"{ns}/{o.metadata.name}": dict(o.data) for o in listed.items}


async def test_initial_list_and_watch_events_reach_handlers(client, ns):
    for i in range(5):
        await client.create(config_map(f"cm-{i}", ns, labels={"tier": "web" if i % 2 else "db"}, v="1"))
    informer = Informer(client, "configmaps", ns, page_size=2, bookmark_interval=1)
    rec = Recorder().attach(informer)
    informer.store.add_index("by_tier", lambda cm: [cm.metadata.labels.get("tier", "")])
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        assert informer.has_synced
        assert sorted(informer.store.keys()) == [f"{ns}/cm-{i}" for i in range(5)]
        assert sorted(e[1] for e in rec.of("add")) == [f"{ns}/cm-{i}" for i in range(5)]
        assert [o.metadata.name for o in informer.store.by_index("by_tier", "web")] == ["cm-1", "cm-3"]

        await client.create(config_map("late", ns, labels={"tier": "web"}, v="1"))
        cm = await client.get("configmaps", "cm-0", ns)
        cm.data["v"] = "2"
        cm.metadata.labels["tier"] = "web"
        await client.update(cm)
        await client.delete("configmaps", "cm-1", ns)

        await eventually(lambda: len(rec.events) == 8)
        assert rec.events[5:] == [
            ("add", f"{ns}/late", {"v": "1"}),
            ("update", f"{ns}/cm-0", {"v": "1"}, {"v": "2"}),
            ("delete", f"{ns}/cm-1"),
        ]
        assert store_data(informer) == await server_data(client, ns)
        # The index follows updates and deletes.
        assert sorted(o.metadata.name for o in informer.store.by_index("by_tier", "web")) == \
            ["cm-0", "cm-3", "late"]
        assert [o.metadata.name for o in informer.store.by_index("by_tier", "db")] == ["cm-2", "cm-4"]
        assert split_key(f"{ns}/cm-0") == (ns, "cm-0")
    finally:
        await informer.stop()


async def test_selector_informer_sees_objects_enter_and_leave_the_selection(client, ns):
    informer = Informer(client, "configmaps", ns, label_selector="app=web")
    rec = Recorder().attach(informer)
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        cm = await client.create(config_map("flip", ns, labels={"app": "db"}))
        cm.metadata.labels["app"] = "web"
        cm = await client.update(cm)
        await eventually(lambda: f"{ns}/flip" in informer.store)
        cm.metadata.labels["app"] = "db"
        await client.update(cm)
        await eventually(lambda: f"{ns}/flip" not in informer.store)
        assert [e[0] for e in rec.events] == ["add", "delete"]
    finally:
        await informer.stop()


async def test_watch_resumes_after_the_connection_breaks(client, ns, proxy, proxied_client):
    informer = Informer(proxied_client, "configmaps", ns, min_backoff=0.1, max_backoff=1)
    rec = Recorder().attach(informer)
    await client.create(config_map("a", ns, v="1"))
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        proxy.cut()
        await client.create(config_map("b", ns, v="1"))
        a = await client.get("configmaps", "a", ns)
        a.data["v"] = "2"
        await client.update(a)
        await asyncio.sleep(0.3)
        proxy.restore()
        expected = await server_data(client, ns)
        await eventually(lambda: store_data(informer) == expected)
        assert ("add", f"{ns}/b", {"v": "1"}) in rec.events
        assert ("update", f"{ns}/a", {"v": "1"}, {"v": "2"}) in rec.events
    finally:
        await informer.stop()


async def test_bookmarks_advance_a_quiet_watch_to_the_current_version(client, ns):
    informer = Informer(client, "configmaps", ns, bookmark_interval=1)
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        # Changes elsewhere only: this namespace stays quiet, but the version
        # the informer would resume from must still move forward (api.proto:
        # bookmarks carry the current resourceVersion).
        before = int(informer.resource_version)
        cm = await client.create(config_map("elsewhere", "default"))
        await client.delete("configmaps", "elsewhere", "default")
        await eventually(lambda: int(informer.resource_version) > int(cm.metadata.resource_version),
                         timeout=10)
        assert int(informer.resource_version) > before
    finally:
        await informer.stop()


async def test_relist_when_the_watch_history_is_gone_converges_including_deletes(
        ns, proxy, proxied_client, api_server):
    async with ApiClient(api_server.address) as c:
        for name in ("keep", "change", "remove"):
            await c.create(config_map(name, ns, v="1"))
    informer = Informer(proxied_client, "configmaps", ns, min_backoff=0.1, max_backoff=1)
    rec = Recorder().attach(informer)
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        resume_from = informer.resource_version
        proxy.cut()
        # While the informer is cut off: changes and churn; then etcd compacts
        # and the API server restarts, so the version the informer would
        # resume from is neither in etcd nor in the new server's watch cache.
        async with ApiClient(api_server.address) as c:
            change = await c.get("configmaps", "change", ns)
            change.data["v"] = "2"
            await c.update(change)
            await c.delete("configmaps", "remove", ns)
            await c.create(config_map("new", ns, v="1"))
            for i in range(5):
                await c.create(config_map(f"churn-{i}", ns))
                await c.delete("configmaps", f"churn-{i}", ns)
        await asyncio.to_thread(api_server.compact)
        await asyncio.to_thread(api_server.restart)
        proxy.target = api_server.address
        proxy.restore()

        async with ApiClient(api_server.address) as c:
            with pytest.raises(GoneError):
                async with asyncio.timeout(10):
                    async for _ in c.watch("configmaps", ns, resource_version=resume_from):
                        pass
            expected = await server_data(c, ns)
            await eventually(lambda: store_data(informer) == expected)
            assert informer.relists >= 1
            assert ("delete", f"{ns}/remove") in rec.events
            assert ("update", f"{ns}/change", {"v": "1"}, {"v": "2"}) in rec.events
            assert ("add", f"{ns}/new", {"v": "1"}) in rec.events
            # Churn that came and went while disconnected is never reported.
            assert not [e for e in rec.events if "churn" in e[1]]
            # After the relist the informer watches again.
            await c.create(config_map("after", ns, v="1"))
            await eventually(lambda: f"{ns}/after" in informer.store)
    finally:
        await informer.stop()


async def test_restarted_informer_relists_and_reports_what_changed_while_stopped(client, ns):
    await client.create(config_map("stays", ns, v="1"))
    await client.create(config_map("goes", ns, v="1"))
    informer = Informer(client, "configmaps", ns)
    rec = Recorder().attach(informer)
    await informer.start()
    assert await informer.wait_synced(timeout=10)
    await informer.stop()

    await client.delete("configmaps", "goes", ns)
    await client.create(config_map("arrives", ns, v="1"))

    rec.events.clear()
    await informer.start()
    try:
        expected = await server_data(client, ns)
        await eventually(lambda: store_data(informer) == expected)
        assert sorted(rec.events) == [("add", f"{ns}/arrives", {"v": "1"}), ("delete", f"{ns}/goes")]
    finally:
        await informer.stop()


async def test_informer_backs_off_while_the_server_is_unreachable(client, ns, proxy,
                                                                  proxied_client, caplog):
    await client.create(config_map("x", ns))
    proxy.cut()
    informer = Informer(proxied_client, "configmaps", ns, min_backoff=0.2, max_backoff=1)
    caplog.set_level(logging.WARNING, logger="kubeling.client.informer")
    await informer.start()
    try:
        await asyncio.sleep(1.5)
        assert not informer.has_synced
        attempts = len([r for r in caplog.records if "retrying" in r.getMessage()])
        # Exponential backoff from 0.2 s: a handful of attempts, not a hot loop.
        assert 1 <= attempts <= 10
        proxy.restore()
        assert await informer.wait_synced(timeout=20)
        assert f"{ns}/x" in informer.store
    finally:
        await informer.stop()


async def test_handler_errors_do_not_stop_the_informer(client, ns):
    informer = Informer(client, "configmaps", ns)
    seen = []

    def broken(obj):
        raise RuntimeError("handler bug")

    async def async_handler(obj):
        seen.append(obj.metadata.name)

    informer.add_handler(on_add=broken)
    informer.add_handler(on_add=async_handler)
    await informer.start()
    try:
        assert await informer.wait_synced(timeout=10)
        await client.create(config_map("one", ns))
        await client.create(config_map("two", ns))
        await eventually(lambda: seen == ["one", "two"])
    finally:
        await informer.stop()


async def test_resync_redelivers_cached_objects(client, ns):
    await client.create(config_map("quiet", ns, v="1"))
    informer = Informer(client, "configmaps", ns, resync_period=0.2)
    rec = Recorder().attach(informer)
    await informer.start()
    try:
        await eventually(lambda: len(rec.of("update")) >= 2)
        assert all(e == ("update", f"{ns}/quiet", {"v": "1"}, {"v": "1"}) for e in rec.of("update"))
    finally:
        await informer.stop()


async def test_shared_informer_factory_shares_informers(client, ns):
    await client.create(config_map("shared", ns))
    factory = SharedInformerFactory(client)
    first = factory.informer("configmaps", ns)
    assert factory.informer("ConfigMap", ns) is first
    assert factory.informer("cm", ns, label_selector="a=b") is not first
    nodes = factory.informer("nodes", namespace="ignored-for-cluster-scoped")
    assert nodes is factory.informer("nodes")
    await factory.start_all()
    try:
        assert await factory.wait_for_cache_sync(timeout=10)
        assert f"{ns}/shared" in first.store
        assert nodes.has_synced
    finally:
        await factory.stop_all()
