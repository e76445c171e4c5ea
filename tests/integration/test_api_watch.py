"""Watch through the real API server process on a real etcd: order, resume,
bookmarks, selector transitions, compaction (OUT_OF_RANGE then relist), fan
out of one etcd watch to many watchers, and resuming across an API server
restart."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient, WatchEvent, WatchStream
from kubeling.client.errors import GoneError
from kubeling.objects import copy, from_dict

TIMEOUT = 15  # seconds any single wait may take before the test fails


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


async def create_namespace(client: ApiClient, name: str) -> str:
    await client.create(from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


@pytest.fixture
async def ns(client, namespace_name):
    return await create_namespace(client, namespace_name)


def config_map(name: str, ns: str, labels: dict[str, str] | None = None, **data: str) -> Message:
    return from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "data": data})


def pod(name: str, ns: str, node: str = "") -> Message:
    obj = from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                     "spec": {"containers": [{"name": "c", "image": "localhost/kubeling/shell:1"}]}})
    obj.spec.node_name = node
    return obj


def rv(obj: Message) -> int:
    return int(obj.metadata.resource_version)


async def take(stream: WatchStream, n: int, *, bookmarks: bool = False) -> list[WatchEvent]:
    """The next n events of a stream (BOOKMARKs skipped unless asked for)."""
    events: list[WatchEvent] = []
    async with asyncio.timeout(TIMEOUT):
        while len(events) < n:
            ev = await stream.__anext__()
            if ev.type == "BOOKMARK" and not bookmarks:
                continue
            events.append(ev)
    return events


async def nothing_more(stream: WatchStream, seconds: float = 0.3, *, bookmarks: bool = True) -> None:
    """No event (other than a BOOKMARK, when allowed) arrives for a little
    while. This ends the stream: a cancelled read cancels the watch call."""
    try:
        async with asyncio.timeout(seconds):
            async for ev in stream:
                assert bookmarks and ev.type == "BOOKMARK", f"unexpected {ev.type} {ev.object.metadata.name}"
    except TimeoutError:
        pass


def summary(events) -> list[tuple[str, str, int]]:
    return [(e.type, e.object.metadata.name, rv(e.object)) for e in events]


async def write_mix(client: ApiClient, ns: str, n: int) -> list[tuple[str, str, int]]:
    """n writes of every kind (create, update, delete) in ns; returns what a
    watcher must see: (type, name, resourceVersion) in order."""
    expected = []
    live: list[Message] = []
    for i in range(n):
        step = i % 4
        if step in (0, 1) or not live:
            obj = await client.create(config_map(f"cm-{i:03d}", ns, v="0"))
            live.append(obj)
            expected.append(("ADDED", obj.metadata.name, rv(obj)))
        elif step == 2:
            obj = copy(live[0])
            obj.data["v"] = str(i)
            obj = await client.update(obj)
            live[0] = obj
            expected.append(("MODIFIED", obj.metadata.name, rv(obj)))
        else:
            victim = live.pop()
            deleted, pending = await client.delete("configmaps", victim.metadata.name, ns)
            assert not pending
            expected.append(("DELETED", victim.metadata.name, rv(deleted)))
    return expected


# ------------------------------------------------------------ order and resume


async def test_events_arrive_in_revision_order_with_none_missing(client, ns):
    start = await client.list("configmaps", ns)
    async with client.watch("configmaps", ns, resource_version=start.resource_version,
                            allow_bookmarks=False) as stream:
        expected = await write_mix(client, ns, 40)
        events = await take(stream, len(expected))
        await nothing_more(stream)
    assert summary(events) == expected
    revisions = [rv(e.object) for e in events]
    assert revisions == sorted(set(revisions))  # strictly increasing, no duplicate
    assert revisions[0] > int(start.resource_version)
    # DELETED carries the last state; MODIFIED the new one.
    for ev in events:
        assert ev.object.metadata.namespace == ns and ev.object.kind == "ConfigMap"
        if ev.type == "MODIFIED":
            assert ev.object.data["v"] != "0"


async def test_resume_from_a_version_in_the_middle(client, ns):
    start = await client.list("configmaps", ns)
    expected = await write_mix(client, ns, 30)
    for cut in (0, 7, 15, 29):
        resume_rv = str(expected[cut][2])
        async with client.watch("configmaps", ns, resource_version=resume_rv,
                                allow_bookmarks=False) as stream:
            rest = expected[cut + 1:]
            events = await take(stream, len(rest)) if rest else []
            await nothing_more(stream, 0.2)
        assert summary(events) == rest
    # From the list's version: everything.
    async with client.watch("configmaps", ns, resource_version=start.resource_version,
                            allow_bookmarks=False) as stream:
        assert summary(await take(stream, len(expected))) == expected


async def test_watch_from_now_sees_only_later_changes(client, ns):
    await client.create(config_map("before", ns))
    async with client.watch("configmaps", ns, bookmark_interval_seconds=1) as stream:
        # A bookmark proves the watch is in place before the next write.
        first = await take(stream, 1, bookmarks=True)
        assert first[0].type == "BOOKMARK"
        after = await client.create(config_map("after", ns))
        events = await take(stream, 1)
    assert summary(events) == [("ADDED", "after", rv(after))]


async def test_namespace_scoped_watch_sees_only_its_namespace(client, ns):
    other = await create_namespace(client, f"{ns}-o")
    start = await client.list("configmaps", "")
    async with client.watch("configmaps", ns, resource_version=start.resource_version,
                            allow_bookmarks=False) as mine, \
            client.watch("configmaps", "", resource_version=start.resource_version,
                         allow_bookmarks=False, label_selector=f"suite={ns}") as everywhere:
        a = await client.create(config_map("a", other, {"suite": ns}))
        b = await client.create(config_map("b", ns, {"suite": ns}))
        assert summary(await take(mine, 1)) == [("ADDED", "b", rv(b))]
        both = await take(everywhere, 2)
        assert [(e.object.metadata.namespace, e.object.metadata.name) for e in both] == [
            (other, "a"), (ns, "b")]
        assert rv(both[0].object) == rv(a)
        await nothing_more(mine, 0.2)


# ---------------------------------------------------------------- bookmarks


async def test_bookmarks_on_a_quiet_watch_carry_a_version_to_resume_from(client, ns):
    created = await client.create(config_map("one", ns))
    async with client.watch("configmaps", ns, resource_version=created.metadata.resource_version,
                            allow_bookmarks=True, bookmark_interval_seconds=1) as stream:
        marks = await take(stream, 2, bookmarks=True)
    for mark in marks:
        assert mark.type == "BOOKMARK"
        assert mark.object.kind == "ConfigMap"
        assert mark.object.metadata.name == ""  # only the version
        assert rv(mark.object) >= rv(created)
    assert rv(marks[1].object) >= rv(marks[0].object)

    # Resuming from the bookmark gives exactly the later changes.
    later = await client.create(config_map("two", ns))
    async with client.watch("configmaps", ns, resource_version=marks[-1].object.metadata.resource_version,
                            allow_bookmarks=False) as stream:
        assert summary(await take(stream, 1)) == [("ADDED", "two", rv(later))]
        await nothing_more(stream, 0.2)


async def test_no_bookmarks_unless_asked(client, ns):
    async with client.watch("configmaps", ns, allow_bookmarks=False, bookmark_interval_seconds=1) as stream:
        await nothing_more(stream, 1.5, bookmarks=False)


async def test_bookmarks_advance_past_changes_elsewhere(client, ns):
    """A quiet watch's bookmarks move to the current version, so a client
    that resumes from them is not sent back into history that etcd may have
    compacted (api.proto: a bookmark carries the current resourceVersion)."""
    start = await client.list("configmaps", ns)
    async with client.watch("configmaps", ns, resource_version=start.resource_version,
                            allow_bookmarks=True, bookmark_interval_seconds=1) as stream:
        elsewhere = await client.create(config_map(f"elsewhere-{ns}", "default"))
        await client.delete("configmaps", elsewhere.metadata.name, "default")
        async with asyncio.timeout(TIMEOUT):
            while True:
                (mark,) = await take(stream, 1, bookmarks=True)
                assert mark.type == "BOOKMARK"
                if rv(mark.object) > rv(elsewhere):
                    break


# ------------------------------------------------------- selector transitions


async def test_label_selector_watch_sends_transitions_as_added_and_deleted(client, ns):
    start = await client.list("configmaps", ns)
    async with client.watch("configmaps", ns, label_selector="app=web",
                            resource_version=start.resource_version, allow_bookmarks=False) as stream:
        a = await client.create(config_map("a", ns, {"app": "web"}))  # ADDED
        added_a = rv(a)
        b = await client.create(config_map("b", ns, {"app": "db"}))   # not seen
        a.metadata.labels["app"] = "db"
        a = await client.update(a)                                    # stops matching: DELETED
        left_a = rv(a)
        b.metadata.labels["app"] = "web"
        b = await client.update(b)                                    # starts matching: ADDED
        joined_b = rv(b)
        b.data["x"] = "1"
        b = await client.update(b)                                    # MODIFIED
        a.data["x"] = "1"
        a = await client.update(a)                                    # not seen
        await client.delete("configmaps", "a", ns)                    # not seen
        gone, _ = await client.delete("configmaps", "b", ns)          # DELETED
        end = await client.create(config_map("end", ns, {"app": "web"}))  # ADDED
        events = await take(stream, 6)
        await nothing_more(stream, 0.2)
    assert summary(events) == [
        ("ADDED", "a", added_a),
        ("DELETED", "a", left_a),
        ("ADDED", "b", joined_b),
        ("MODIFIED", "b", rv(b)),
        ("DELETED", "b", rv(gone)),
        ("ADDED", "end", rv(end)),
    ]
    # The DELETED for "a" is the update that made it stop matching: its new state.
    assert events[1].object.metadata.labels["app"] == "db"
    assert events[2].object.metadata.labels["app"] == "web"


async def test_field_selector_watch_follows_binding(client, ns):
    start = await client.list("pods", ns)
    async with client.watch("pods", ns, field_selector="spec.nodeName=node-1",
                            resource_version=start.resource_version, allow_bookmarks=False) as on_node_1, \
            client.watch("pods", ns, field_selector="spec.nodeName=",
                         resource_version=start.resource_version, allow_bookmarks=False) as unscheduled:
        await client.create(pod("p1", ns))                     # unscheduled: ADDED
        await client.create(pod("p2", ns, node="node-2"))      # neither
        bound = await client.bind(ns, "p1", "node-1")          # node-1: ADDED, unscheduled: DELETED
        bound.status.phase = "Running"
        running = await client.update_status(bound)            # node-1: MODIFIED
        gone, pending = await client.delete("pods", "p1", ns, grace_period_seconds=0)  # node-1: DELETED
        assert not pending

        events = await take(on_node_1, 3)
        assert summary(events) == [("ADDED", "p1", rv(bound)), ("MODIFIED", "p1", rv(running)),
                                   ("DELETED", "p1", rv(gone))]
        assert events[0].object.spec.node_name == "node-1"
        assert events[1].object.status.phase == "Running"
        await nothing_more(on_node_1, 0.2)

        events = await take(unscheduled, 2)
        assert [(e.type, e.object.metadata.name) for e in events] == [("ADDED", "p1"), ("DELETED", "p1")]
        assert rv(events[1].object) == rv(bound)
        await nothing_more(unscheduled, 0.2)


async def test_field_selector_on_status_phase(client, ns):
    start = await client.list("pods", ns)
    async with client.watch("pods", ns, field_selector="status.phase=Running",
                            resource_version=start.resource_version, allow_bookmarks=False) as stream:
        p = await client.create(pod("p", ns, node="node-1"))
        p.status.phase = "Running"
        running = await client.update_status(p)
        running.status.phase = "Succeeded"
        done = await client.update_status(running)
        events = await take(stream, 2)
        await nothing_more(stream, 0.2)
    assert summary(events) == [("ADDED", "p", rv(running)), ("DELETED", "p", rv(done))]


# --------------------------------------------------------------- compaction


async def test_watch_from_a_compacted_version_is_gone_then_relist_and_watch(client, ns, api_server):
    old = await client.create(config_map("old", ns, v="1"))
    old.data["v"] = "2"
    await client.update(old)
    await client.create(config_map("newer", ns))
    await asyncio.to_thread(api_server.compact)
    # A fresh API server's watch cache starts after the compaction, so the
    # old version is neither in memory nor in etcd.
    await asyncio.to_thread(api_server.restart)
    async with ApiClient(api_server.address) as fresh:
        with pytest.raises(GoneError) as gone:
            async with asyncio.timeout(TIMEOUT):
                async for _ in fresh.watch("configmaps", ns, resource_version=old.metadata.resource_version):
                    pass
        assert gone.value.code.name == "OUT_OF_RANGE"
        assert old.metadata.resource_version in str(gone.value)

        # Relist, then watch from the list's version.
        listed = await fresh.list("configmaps", ns)
        assert sorted(o.metadata.name for o in listed.items) == ["newer", "old"]
        async with fresh.watch("configmaps", ns, resource_version=listed.resource_version,
                               allow_bookmarks=False) as stream:
            after = await fresh.create(config_map("after", ns))
            assert summary(await take(stream, 1)) == [("ADDED", "after", rv(after))]


# ------------------------------------------------------------------ fan out


def etcd_watchers(api_server) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{api_server.etcd.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        for metric in ("etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total"):
            if line.startswith(metric + " "):
                found[metric] = int(float(line.split()[1]))
    assert "etcd_debugging_mvcc_watcher_total" in found, "etcd 3.4 reports its watchers"
    return found


async def test_200_watchers_get_every_event_over_one_etcd_watch(api_server, client, ns):
    watchers_per_channel, channels = 50, 4
    before = etcd_watchers(api_server)
    start = await client.list("configmaps", ns)
    conns = [ApiClient(api_server.address) for _ in range(channels)]
    streams = [conn.watch("configmaps", ns, resource_version=start.resource_version,
                          allow_bookmarks=False)
               for conn in conns for _ in range(watchers_per_channel)]
    try:
        # Every watcher is open once each has seen the first write.
        first = await client.create(config_map("first", ns))
        heads = await asyncio.gather(*(take(s, 1) for s in streams))
        assert all(summary(h) == [("ADDED", "first", rv(first))] for h in heads)
        during = etcd_watchers(api_server)
        # One etcd watch per resource serves them all: 200 watchers add none
        # (a small allowance for unrelated watches opening or closing).
        assert during["etcd_debugging_mvcc_watcher_total"] <= before["etcd_debugging_mvcc_watcher_total"] + 2, \
            (before, during)
        # ... and the server's whole cost is about one etcd watch per resource.
        assert during["etcd_debugging_mvcc_watcher_total"] <= len(kinds.KINDS) + 4, during

        expected = await write_mix(client, ns, 25)
        results = await asyncio.gather(*(take(s, len(expected)) for s in streams))
        for events in results:
            assert summary(events) == expected
        assert etcd_watchers(api_server)["etcd_debugging_mvcc_watcher_total"] <= \
            before["etcd_debugging_mvcc_watcher_total"] + 2
    finally:
        for s in streams:
            s.cancel()
        for conn in conns:
            await conn.close()


# ----------------------------------------------------------- server restart


async def test_resume_after_an_api_server_restart_has_no_gap(api_server, ns):
    async with ApiClient(api_server.address) as before:
        start = await before.list("configmaps", ns)
        async with before.watch("configmaps", ns, resource_version=start.resource_version,
                                allow_bookmarks=False) as stream:
            seen_writes = await write_mix(before, ns, 8)
            seen = await take(stream, len(seen_writes))
        assert summary(seen) == seen_writes
        last_seen = seen[-1].object.metadata.resource_version
        # Changes the watcher never saw, made before the restart ...
        unseen = await _more_writes(before, ns, "pre")

    await asyncio.to_thread(api_server.restart)

    async with ApiClient(api_server.address) as after:
        # ... and after it; the new server's cache starts after the first
        # batch, so it must catch up from etcd's history for those.
        later = await _more_writes(after, ns, "post")
        async with after.watch("configmaps", ns, resource_version=last_seen,
                               allow_bookmarks=False) as stream:
            events = await take(stream, len(unseen) + len(later))
            live = await after.create(config_map("live", ns))
            events += await take(stream, 1)
            await nothing_more(stream, 0.2)
    assert summary(events) == unseen + later + [("ADDED", "live", rv(live))]
    revisions = [rv(e.object) for e in events]
    assert revisions == sorted(set(revisions))


async def _more_writes(client: ApiClient, ns: str, prefix: str) -> list[tuple[str, str, int]]:
    out = []
    a = await client.create(config_map(f"{prefix}-a", ns, v="1"))
    out.append(("ADDED", a.metadata.name, rv(a)))
    a.data["v"] = "2"
    a = await client.update(a)
    out.append(("MODIFIED", a.metadata.name, rv(a)))
    b = await client.create(config_map(f"{prefix}-b", ns))
    out.append(("ADDED", b.metadata.name, rv(b)))
    gone, _ = await client.delete("configmaps", b.metadata.name, ns)
    out.append(("DELETED", b.metadata.name, rv(gone)))
    return out
