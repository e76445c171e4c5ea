"""Keeping the node's `ip kubeling` table equal to the Services and Endpoints.

Informer handlers only mark a Service key dirty (`changed(key)`); the sync
loop wakes, waits until at least `min_sync_interval` has passed since the
previous sync (so a burst of changes costs one nft run), re-renders just the
dirty services (`rules.render_service`; every other service's rendered part
is reused from the cache) and applies the result in ONE `nft -f`
transaction, so no packet ever sees a half-programmed table:

- normally a partial transaction that rewrites only the changed services'
  chains and map elements (`rules.partial_ruleset`);
- at start, after a failed sync, and every `full_sync_period`, a full one
  (`rules.full_ruleset`), which also repairs any drift. When the kernel is
  known to hold what we applied last, the full sync flushes and refills the
  table rather than deleting it, so ClientIP affinity sets survive it.

A failed sync is retried with backoff (0.5 s doubling to 30 s) as a full
sync; changes arriving meanwhile are folded into that retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.message import Message

from node_agent.proxy import rules
from node_agent.proxy.rules import EMPTY, ProxyContext, ServiceRules

log = logging.getLogger(__name__)

# Map elements whose keys share a key space: a clusterIP:port may lead to a
# service or to a reject, never both; likewise a node port.
_KEY_SPACE = {"service-ips": "ips", "no-endpoint-services": "ips",
              "service-nodeports": "nodeports", "no-endpoint-nodeports": "nodeports"}


class NftError(Exception):
    """nft failed; the message carries its stderr."""


class Nft:
    """Runs `nft` in one network namespace (None: the current one)."""

    def __init__(self, netns: str | None = None, nft: str = "nft"):
        self.netns = netns
        self.command = (["ip", "netns", "exec", netns, nft] if netns else [nft])

    async def run(self, args: list[str], stdin: str | None = None) -> str:
        """nft ARGS (with `stdin`); its stdout. NftError on failure."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise NftError(f"cannot run {self.command[0]}: {e}") from None
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()
            if len(text) > 2000:
                text = text[:2000] + " ..."
            raise NftError(f"nft {' '.join(args)} failed (exit {proc.returncode}): {text}")
        return out.decode(errors="replace")

    async def apply(self, ruleset: str) -> None:
        """Apply `ruleset` as one transaction (`nft -f -`): all of it or nothing."""
        await self.run(["-f", "-"], ruleset)


@dataclass
class SyncStats:
    """What the last syncs did, for logs, tests and benchmarks."""

    syncs: int = 0
    full_syncs: int = 0
    failures: int = 0
    last_changed: int = 0          # services re-rendered in the last sync
    last_duration: float = 0.0     # seconds, render + nft
    last_sync_end: float = 0.0     # time.monotonic() when it finished
    generation: int = 0            # bumps on every successful sync
    durations: list[float] = field(default_factory=list)


class ProxySyncer:
    """Owns the table: renders, caches and applies the services' rules.

    `get_service(key)` and `get_endpoints(key)` read the informers' caches
    (None when absent); `changed(key)` is called by the informer handlers.
    """

    def __init__(self, nft: Nft, ctx: ProxyContext,
                 get_service: Callable[[str], Message | None],
                 get_endpoints: Callable[[str], Message | None], *,
                 min_sync_interval: float = 0.2, full_sync_period: float = 600.0,
                 min_backoff: float = 0.5, max_backoff: float = 30.0):
        self.nft = nft
        self.ctx = ctx
        self.get_service = get_service
        self.get_endpoints = get_endpoints
        self.min_sync_interval = min_sync_interval
        self.full_sync_period = full_sync_period
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stats = SyncStats()
        # Desired: the rendered part of every service with rules.
        self._parts: dict[str, ServiceRules] = {}
        # What the kernel holds (as we applied it); None when unknown.
        self._applied: dict[str, ServiceRules] | None = None
        self._dirty: set[str] = set()     # keys to re-render
        self._pending: set[str] = set()   # keys whose part differs from _applied
        # Element key (key space, "ip . proto . port") -> the service holding it,
        # and the services that wanted a key someone else holds.
        self._owners: dict[tuple[str, str], str] = {}
        self._losers: dict[tuple[str, str], set[str]] = {}
        self._wake = asyncio.Event()
        self._need_full = True
        self._last_full = 0.0
        self._failures = 0

    # --- inputs ---

    def changed(self, key: str) -> None:
        """The Service or Endpoints `namespace/name` changed (or went away)."""
        self._dirty.add(key)
        self._wake.set()

    def changed_all(self, keys) -> None:
        for key in keys:
            self._dirty.add(key)
        self._wake.set()

    # --- the loop ---

    async def run(self) -> None:
        """Sync whenever something changed, forever (cancel to stop)."""
        while True:
            if self._failures:
                # Retry (as a full sync) after the backoff, news or not.
                delay = min(self.max_backoff, self.min_backoff * 2 ** (self._failures - 1))
                await self._sleep_until(self.stats.last_sync_end + max(delay, self.min_sync_interval))
            else:
                timeout = None
                if self.full_sync_period:
                    timeout = max(0.0, self._last_full + self.full_sync_period - time.monotonic())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    self._need_full = True
                # Batch: whatever arrives before the minimum interval is over
                # goes into this same sync.
                await self._sleep_until(self.stats.last_sync_end + self.min_sync_interval)
            self._wake.clear()
            await self.sync_once()

    @staticmethod
    async def _sleep_until(when: float) -> None:
        delay = when - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sync_once(self) -> bool:
        """Render what is dirty and apply it; True on success. Never raises
        for an nft failure (it is logged and retried by `run`)."""
        start = time.monotonic()
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self._render(key)
        full = self._need_full or self._applied is None
        if not full and not self._pending:
            self.stats.last_sync_end = time.monotonic()
            return True
        try:
            if full:
                text = rules.full_ruleset(
                    self._parts.values(),
                    None if self._applied is None else self._applied.values())
            else:
                text = rules.partial_ruleset(
                    {k: (self._applied.get(k, EMPTY), self._parts.get(k, EMPTY))
                     for k in self._pending})
            await self.nft.apply(text)
        except asyncio.CancelledError:
            self._applied = None  # the nft run may or may not have happened
            raise
        except Exception as e:
            self._failures += 1
            self.stats.failures += 1
            # Whether a partial transaction failed because the kernel is not
            # what we think or because of our input, the full sync repairs
            # it; if even a flush-and-refill fails, start from nothing.
            if full:
                self._applied = None
            self._need_full = True
            log.error("sync of %d service(s) failed (%s sync, attempt %d): %s",
                      len(self._pending), "full" if full else "partial", self._failures, e)
            self.stats.last_sync_end = time.monotonic()
            return False
        changed = len(self._pending)
        if full:
            self._applied = dict(self._parts)
            self._need_full = False
            self._last_full = time.monotonic()
            self.stats.full_syncs += 1
        else:
            for key in self._pending:
                part = self._parts.get(key)
                if part is None:
                    self._applied.pop(key, None)
                else:
                    self._applied[key] = part
        self._pending.clear()
        self._failures = 0
        end = time.monotonic()
        self.stats.syncs += 1
        self.stats.generation += 1
        self.stats.last_changed = changed
        self.stats.last_duration = end - start
        self.stats.last_sync_end = end
        self.stats.durations.append(end - start)
        del self.stats.durations[:-1000]
        log.info("synced %d service(s) in %.1f ms (%s, %d in total)", changed,
                 (end - start) * 1000, "full" if full else "partial", len(self._parts))
        return True

    def _render(self, key: str) -> None:
        old = self._parts.get(key, EMPTY)
        service = self.get_service(key)
        try:
            new = rules.render_service(service, self.get_endpoints(key) if service else None,
                                       self.ctx)
        except Exception:
            # A bug rendering one odd object must not stop every other service.
            log.exception("service %s: cannot render its rules; keeping the previous ones", key)
            return
        new = self._claim(key, old, new)
        if new.empty:
            new = EMPTY
        if new == old:
            return
        if new is EMPTY:
            self._parts.pop(key, None)
        else:
            self._parts[key] = new
        self._pending.add(key)

    def _claim(self, key: str, old: ServiceRules, new: ServiceRules) -> ServiceRules:
        """Drop map elements whose key another service already holds (two
        Services given the same clusterIP:port or nodePort by hand), so one
        bad Service cannot break the whole table. When a key is released,
        the services that wanted it are rendered again."""
        for name, elements in old.elements.items():
            for el in elements:
                owner_key = (_KEY_SPACE[name], el.split(" : ", 1)[0])
                if self._owners.get(owner_key) == key:
                    del self._owners[owner_key]
                    for loser in self._losers.pop(owner_key, ()):
                        if loser != key:
                            self.changed(loser)
                else:
                    losers = self._losers.get(owner_key)
                    if losers is not None:
                        losers.discard(key)
        dropped = False
        kept: dict[str, list[str]] = {}
        mine: set[tuple[str, str]] = set()
        for name, elements in new.elements.items():
            kept[name] = []
            for el in elements:
                owner_key = (_KEY_SPACE[name], el.split(" : ", 1)[0])
                owner = self._owners.setdefault(owner_key, key)
                if owner == key:
                    if owner_key in mine:  # e.g. an external IP equal to the clusterIP
                        dropped = True
                        continue
                    mine.add(owner_key)
                    kept[name].append(el)
                else:
                    dropped = True
                    self._losers.setdefault(owner_key, set()).add(key)
                    log.warning("service %s: %s is already used by service %s; ignored",
                                key, owner_key[1], owner)
        if not dropped:
            return new
        return ServiceRules(chains=new.chains, sets=new.sets, elements=kept)

    # --- teardown ---

    async def delete_table(self) -> None:
        """Remove the table (no error when it is not there)."""
        await self.nft.apply(rules.delete_table())
        self._applied = None
        self._need_full = True
