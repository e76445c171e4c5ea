"""Fire-and-forget API writes with bounded concurrency.

Events and PodScheduled status updates are diagnostics: the scheduling loop
must never wait for them, and under load they must not crowd out binds.
`submit` queues a write and returns at once; a fixed number of workers
perform them. When the queue is full the write is dropped (and counted), as
client-go's event broadcaster drops events when its queue overflows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class BackgroundWrites:
    def __init__(self, name: str, workers: int = 4, max_queued: int = 10000):
        self.name = name
        self.workers = workers
        self.dropped = 0
        self.done = 0
        self._queue: asyncio.Queue[Callable[[], Awaitable]] = asyncio.Queue(max_queued)

    def submit(self, write: Callable[[], Awaitable]) -> bool:
        """Queue `write()` (a coroutine function); False if dropped."""
        try:
            self._queue.put_nowait(write)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: queue full, %d writes dropped", self.name, self.dropped)
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Perform queued writes until cancelled."""
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            write = await self._queue.get()
            try:
                await write()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed diagnostic write must not stop the worker
                log.exception("%s: background write failed", self.name)
            finally:
                self.done += 1
