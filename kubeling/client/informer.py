"""Informers: a local, watch-driven cache of one resource, as client-go's.

An `Informer` lists every matching object (all pages), fills its `Store`,
then watches from the list's resourceVersion (with bookmarks, so a quiet
resource still advances the version it would resume from). It keeps the
store equal to the server's state and tells handlers about every change:

- A watch that ends or breaks (server restart, network loss, no event or
  bookmark for `watch_idle_timeout`) is resumed from the last version seen,
  so nothing is missed and nothing is repeated.
- When that version is too old (GoneError / OUT_OF_RANGE, after etcd
  compaction) the informer relists and emits the difference between its
  store and the new list as add / update / delete events, so handlers stay
  level-correct even for objects deleted while it was disconnected.
- Repeated failures back off exponentially (0.5 s .. 30 s, with jitter);
  the informer never busy-loops against a server that is down.

Cached objects are shared: handlers, `Store.get` and `Store.list` return the
cached messages themselves. Never mutate them; `copy(obj)` first and change
the copy (then write it through the client).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from google.protobuf.message import Message

from kubeling.client.api_client import ApiClient, resolve_kind
from kubeling.client.errors import ApiError, GoneError
from kubeling.objects import copy, key_of as object_key  # re-exported for consumers

log = logging.getLogger(__name__)


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) from a store key; namespace is "" for cluster-scoped keys."""
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else ("", ns)


IndexFunc = Callable[[Message], Iterable[str]]


class Store:
    """Objects by key, with optional secondary indexes.

    An index function maps an object to the index values it is filed under
    (for example `lambda pod: [pod.spec.node_name]`); `by_index(name, value)`
    returns the objects filed under `value`. Only the informer writes.
    """

    def __init__(self) -> None:
        self._items: dict[str, Message] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}

    def get(self, key: str) -> Message | None:
        """The cached object for `key`, or None. Do not mutate it."""
        return self._items.get(key)

    def list(self) -> list[Message]:
        """Every cached object. Do not mutate them."""
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Register an index and build it over the objects already cached."""
        if name in self._indexers:
            raise ValueError(f"index {name!r} already exists")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def by_index(self, name: str, value: str) -> list[Message]:
        """Objects whose index function returned `value`. KeyError for an unknown index."""
        keys = self._indices[name].get(value, ())
        return [self._items[k] for k in sorted(keys)]

    def index_keys(self, name: str, value: str) -> list[str]:
        """Keys of the objects filed under `value` in index `name`."""
        return sorted(self._indices[name].get(value, ()))

    # --- writes (informer only) ---

    def _put(self, obj: Message) -> Message | None:
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        return old

    def _remove(self, key: str) -> Message | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index_one(self, name: str, key: str, obj: Message) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Message) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


@dataclass
class _Handler:
    on_add: Callable | None
    on_update: Callable | None
    on_delete: Callable | None


class Informer:
    """A list-watch cache of one resource (see the module docstring).

    `resync_period` (seconds), when set, re-delivers every cached object to
    on_update(obj, obj) that often, so controllers re-check what nothing changed.
    """

    def __init__(self, client: ApiClient, resource: Any, namespace: str = "",
                 label_selector: str = "", field_selector: str = "",
                 resync_period: float | None = None, *, page_size: int = 500,
                 bookmark_interval: int = 0, watch_idle_timeout: float | None = None,
                 min_backoff: float = 0.5, max_backoff: float = 30.0):
        self.client = client
        self.kind = resolve_kind(resource)
        self.namespace = namespace if self.kind.namespaced else ""
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.bookmark_interval = bookmark_interval
        # Bookmarks arrive every bookmark_interval (server default 10 s); a
        # stream silent for much longer than that is dead, whatever TCP says.
        self.watch_idle_timeout = watch_idle_timeout or max(30.0, 3 * (bookmark_interval or 10))
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.store = Store()
        self.resource_version = ""  # the last version the store reflects
        self.relists = 0            # lists after the first, for observability
        self._handlers: list[_Handler] = []
        self._synced = asyncio.Event()
        self._delivered = False
        self._task: asyncio.Task | None = None
        self._resync_task: asyncio.Task | None = None

    def __repr__(self) -> str:
        sel = ",".join(s for s in (self.label_selector, self.field_selector) if s)
        return f"<Informer {self.kind.resource} ns={self.namespace or '*'} {sel}>"

    # --- handlers and state ---

    def add_handler(self, on_add: Callable | None = None, on_update: Callable | None = None,
                    on_delete: Callable | None = None) -> None:
        """Register callbacks: on_add(obj), on_update(old, new), on_delete(obj).

        Callbacks may be plain functions or coroutines; they run one at a time
        in event order, so they should be quick (enqueue a key and return).
        A handler added after the first sync is not told about objects already
        cached; read the store for those (controllers add handlers before start).
        """
        self._handlers.append(_Handler(on_add, on_update, on_delete))

    @property
    def has_synced(self) -> bool:
        """True once the first list has filled the store."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first list; False if `timeout` passes first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # --- lifecycle ---

    async def start(self) -> None:
        """Start listing and watching in a background task; returns at once. Idempotent."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind.resource}")
        if self.resync_period:
            self._resync_task = asyncio.create_task(self._resync_loop())

    async def stop(self) -> None:
        """Stop watching. The store keeps its contents; `start` again relists."""
        tasks = [t for t in (self._task, self._resync_task) if t is not None]
        self._task = self._resync_task = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the reflector ---

    async def _run(self) -> None:
        failures = 0  # consecutive rounds in which the watch delivered nothing
        need_list = True
        while True:
            self._delivered = gone = False
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                await self._watch()  # returns when the server ends the stream
            except GoneError as e:
                log.info("%r: %s; relisting", self, e)
                need_list = gone = True
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("%r: %s (%s); retrying", self, e, e.code.name)
            except Exception:
                log.exception("%r: unexpected error; retrying", self)
            failures = 0 if self._delivered else failures + 1
            # The first Gone relists at once; anything repeated backs off, so
            # a server that is down or refusing is not hammered.
            if failures and not (gone and failures == 1):
                delay = min(self.max_backoff, self.min_backoff * 2 ** (failures - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def _list_and_replace(self) -> None:
        result = await self.client.list_all(
            self.kind, self.namespace, self.label_selector, self.field_selector,
            page_size=self.page_size)
        if self._synced.is_set():
            self.relists += 1
        new = {object_key(o): o for o in result.items}
        events: list[tuple[str, Message | None, Message]] = []
        for key in self.store.keys():
            if key not in new:
                events.append(("delete", None, self.store._remove(key)))
        for key, obj in new.items():
            old = self.store._put(obj)
            if old is None:
                events.append(("add", None, obj))
            elif old.metadata.resource_version != obj.metadata.resource_version:
                events.append(("update", old, obj))
        self.resource_version = result.resource_version
        for what, old, obj in events:
            await self._dispatch(what, old, obj)
        if not self._synced.is_set():
            log.debug("%r: synced %d objects at %s", self, len(new), self.resource_version)
            self._synced.set()

    async def _watch(self) -> None:
        """Follow the watch until it ends (sets _delivered on any event)."""
        stream = self.client.watch(
            self.kind, self.namespace, self.label_selector, self.field_selector,
            resource_version=self.resource_version, allow_bookmarks=True,
            bookmark_interval_seconds=self.bookmark_interval)
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(stream.__anext__(), self.watch_idle_timeout)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    log.info("%r: no event for %.0f s; restarting the watch",
                             self, self.watch_idle_timeout)
                    return
                self._delivered = True
                await self._apply(ev.type, ev.object)
        finally:
            stream.cancel()

    async def _apply(self, type_: str, obj: Message) -> None:
        rv = obj.metadata.resource_version
        if type_ == "BOOKMARK":
            pass
        elif type_ in ("ADDED", "MODIFIED"):
            old = self.store._put(obj)
            if old is None:
                await self._dispatch("add", None, obj)
            else:
                await self._dispatch("update", old, obj)
        elif type_ == "DELETED":
            old = self.store._remove(object_key(obj))
            if old is not None:
                await self._dispatch("delete", None, obj)
        else:
            log.warning("%r: ignoring watch event of unknown type %r", self, type_)
        if rv:
            self.resource_version = rv

    async def _dispatch(self, what: str, old: Message | None, obj: Message) -> None:
        for h in list(self._handlers):
            fn = {"add": h.on_add, "update": h.on_update, "delete": h.on_delete}[what]
            if fn is None:
                continue
            try:
                result = fn(old, obj) if what == "update" else fn(obj)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%r: %s handler failed for %s", self, what, object_key(obj))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            if self.has_synced:
                for obj in self.store.list():
                    await self._dispatch("update", obj, obj)


class SharedInformerFactory:
    """One informer per (resource, namespace, selectors), shared by every
    controller in the process, so each resource is listed and watched once."""

    def __init__(self, client: ApiClient, resync_period: float | None = None, **informer_kwargs):
        self.client = client
        self.resync_period = resync_period
        self._informer_kwargs = informer_kwargs
        self._informers: dict[tuple[str, str, str, str], Informer] = {}

    def informer(self, resource: Any, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", resync_period: float | None = None) -> Informer:
        """The shared informer for these arguments (created on first use; the
        first caller's resync_period wins)."""
        kind = resolve_kind(resource)
        key = (kind.resource, namespace if kind.namespaced else "", label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(self.client, kind, key[1], label_selector, field_selector,
                           resync_period if resync_period is not None else self.resync_period,
                           **self._informer_kwargs)
            self._informers[key] = inf
        return inf

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    async def start_all(self) -> None:
        """Start every informer created so far (idempotent; call again after adding more)."""
        for inf in self._informers.values():
            await inf.start()

    async def wait_for_cache_sync(self, timeout: float | None = None) -> bool:
        """Wait until every informer has synced; False if `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for inf in list(self._informers.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not await inf.wait_synced(left):
                return False
        return True

    async def stop_all(self) -> None:
        await asyncio.gather(*(inf.stop() for inf in self._informers.values()))


__all__ = ["Informer", "SharedInformerFactory", "Store", "copy", "object_key", "split_key"]
