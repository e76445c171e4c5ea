"""The shape every controller shares (sample-controller's, in asyncio).

A controller declares the informers it reads in `setup()`, whose event
handlers only enqueue keys; `run()` waits for the caches to sync, then runs
workers that call `reconcile(key)` one key at a time (the work queue never
hands one key to two workers). `reconcile` reads the caches, compares desired
with actual, acts through the API client, and may be run again at any time.
"""

from __future__ import annotations

import logging
from typing import Callable

from google.protobuf.message import Message

from kubeling.client.api_client import ApiClient
from kubeling.client.events import EventRecorder
from kubeling.client.informer import Informer, SharedInformerFactory
from kubeling.client.workqueue import WorkQueue, run_workers
from kubeling.objects import key_of

log = logging.getLogger(__name__)


class Controller:
    """Base class: subclasses set `name`, implement `setup` and `reconcile`."""

    name = "controller"
    workers = 4

    def __init__(self, client: ApiClient, informers: SharedInformerFactory,
                 recorder: EventRecorder, **options):
        self.client = client
        self.informers = informers
        self.recorder = recorder
        self.options = options
        self.queue = WorkQueue(name=self.name)
        self.setup()

    def setup(self) -> None:
        """Create informers with `self.informers.informer(...)` and add handlers."""

    async def reconcile(self, key: str) -> float | None:
        """Bring the object named `key` to its desired state. Return seconds
        to look again later, or None. Raise to retry with backoff."""
        raise NotImplementedError

    # ------------------------------------------------------------- helpers

    def enqueue(self, obj: Message) -> None:
        self.queue.add(key_of(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    def watch(self, informer: Informer, to_keys: Callable[[Message], list[str]] | None = None) -> None:
        """Enqueue on every add, update and delete of `informer`'s objects:
        their own key, or the keys `to_keys(obj)` maps them to (an owner...)."""
        def push(obj: Message) -> None:
            for key in (to_keys(obj) if to_keys else [key_of(obj)]):
                if key:
                    self.queue.add(key)
        informer.add_handler(on_add=push, on_update=lambda old, new: (push(old), push(new)),
                             on_delete=push)

    async def run(self) -> None:
        """Wait for caches, then reconcile until cancelled."""
        await self.informers.start_all()
        await self.informers.wait_for_cache_sync()
        log.info("%s controller: caches synced, %d workers", self.name, self.workers)
        try:
            await run_workers(self.queue, self.reconcile, self.workers)
        finally:
            self.queue.shutdown()
