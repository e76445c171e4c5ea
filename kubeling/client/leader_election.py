"""Leader election on a Lease object, as client-go's leaderelection.

Candidates share one Lease (namespace kube-system by default). A candidate
takes the lease when it is missing, expired (renewTime + leaseDurationSeconds
in the past), released (no holder) or already its own; every write is a
compare-and-set on resourceVersion, so when two candidates race exactly one
wins (the other gets ConflictError). The leader renews every retry_period.
If it cannot renew for renew_deadline, or sees another holder, it steps down
(on_stopped_leading). Because renew_deadline < lease_duration, a leader that
loses contact stops leading before anyone else may start. leaseTransitions
counts changes of holder.

Expiry uses the holder's renewTime against this machine's clock, so the
candidates' clocks must agree to well within lease_duration (NTP).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from kubeling import kinds
from kubeling.api.v1 import coordination_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

_LEASE = kinds.by_kind("Lease")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LeaderElector:
    """One candidate for the leadership that `lease_name` stands for.

    `await run()` campaigns until elected, calls on_started_leading, renews
    until leadership is lost, calls on_stopped_leading and returns. If
    on_started_leading returns a coroutine it runs as a task that is
    cancelled when leadership ends (client-go's leading context). Cancelling
    run() steps down too, and with release_on_cancel (the default) clears the
    holder so another candidate takes over at once instead of waiting for
    expiry. `release()` does the same from outside.

    Durations are seconds and may be fractions, except that the Lease stores
    leaseDurationSeconds as whole seconds (rounded up).
    """

    def __init__(self, client: ApiClient, lease_name: str, identity: str, *,
                 lease_duration: float = 15, renew_deadline: float = 10,
                 retry_period: float = 2,
                 on_started_leading: Callable[[], Any] | None = None,
                 on_stopped_leading: Callable[[], Any] | None = None,
                 on_new_leader: Callable[[str], Any] | None = None,
                 namespace: str = "kube-system", release_on_cancel: bool = True):
        if not identity:
            raise ValueError("identity must not be empty")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.lease_name = lease_name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self.leader: str = ""  # the holder last observed ("" when none)
        self._leading = False
        self._lead_task: asyncio.Task | None = None
        self._run_task: asyncio.Task | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def run(self) -> None:
        """Campaign, lead, and return once leadership is lost (see class doc)."""
        self._run_task = asyncio.current_task()
        cancelled = False
        try:
            await self._acquire()
            await self._start_leading()
            await self._renew_until_lost()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            was_leading = self._leading
            await self._stop_leading()
            if cancelled and was_leading and self.release_on_cancel:
                await self._release_lease()
            self._run_task = None

    async def release(self) -> None:
        """Step down now (if leading) and clear the lease's holder so another
        candidate can take over without waiting for expiry; stops run()."""
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            keep, self.release_on_cancel = self.release_on_cancel, True
            try:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            finally:
                self.release_on_cancel = keep
        else:
            await self._stop_leading()
            await self._release_lease()

    # --- the loops ---

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            # Jitter keeps candidates that started together from colliding.
            await asyncio.sleep(self.retry_period * (1 + 0.2 * random.random()))

    async def _renew_until_lost(self) -> None:
        last_renew = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                ok = await asyncio.wait_for(self._try_acquire_or_renew(),
                                            max(0.01, self.renew_deadline - (time.monotonic() - last_renew)))
            except asyncio.TimeoutError:
                ok = False
            if ok:
                last_renew = time.monotonic()
            elif self.leader and self.leader != self.identity:
                log.info("lease %s/%s: taken over by %s", self.namespace, self.lease_name, self.leader)
                return
            elif time.monotonic() - last_renew >= self.renew_deadline:
                log.warning("lease %s/%s: failed to renew for %.1f s; stepping down",
                            self.namespace, self.lease_name, self.renew_deadline)
                return

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the lease; False if someone else holds
        it, another candidate won the race, or the API call failed."""
        now = _now()
        try:
            try:
                lease = await self.client.get(_LEASE, self.lease_name, self.namespace)
            except NotFoundError:
                lease = _LEASE.new()
                lease.metadata.name = self.lease_name
                lease.metadata.namespace = self.namespace
                lease.spec.acquire_time.FromDatetime(now)
                lease.spec.lease_transitions = 0
                self._fill(lease, now, transition=False)
                try:
                    await self.client.create(lease)
                except AlreadyExistsError:
                    return False
                self._observe(self.identity)
                return True
            holder = lease.spec.holder_identity
            if holder and holder != self.identity and not _expired(lease, now):
                self._observe(holder)
                return False
            self._fill(lease, now, transition=holder != self.identity)
            # resourceVersion from the get makes this a compare-and-set.
            await self.client.update(lease)
            self._observe(self.identity)
            return True
        except ConflictError:
            return False
        except ApiError as e:
            log.warning("lease %s/%s: %s", self.namespace, self.lease_name, e)
            return False

    def _fill(self, lease: coordination_pb2.Lease, now: datetime, transition: bool) -> None:
        spec = lease.spec
        if transition:
            spec.acquire_time.FromDatetime(now)
            spec.lease_transitions = spec.lease_transitions + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = max(1, math.ceil(self.lease_duration))
        spec.renew_time.FromDatetime(now)

    async def _release_lease(self) -> None:
        try:
            lease = await self.client.get(_LEASE, self.lease_name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            now = _now()
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time.FromDatetime(now)
            lease.spec.acquire_time.FromDatetime(now)
            await self.client.update(lease)
            self._observe("")
            log.info("lease %s/%s: released by %s", self.namespace, self.lease_name, self.identity)
        except ApiError as e:
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.lease_name, e)

    # --- callbacks ---

    def _observe(self, holder: str) -> None:
        if holder != self.leader:
            self.leader = holder
            if holder and self.on_new_leader is not None:
                try:
                    result = self.on_new_leader(holder)
                    if inspect.iscoroutine(result):
                        asyncio.ensure_future(result)
                except Exception:
                    log.exception("on_new_leader failed")

    async def _start_leading(self) -> None:
        self._leading = True
        log.info("lease %s/%s: %s is leading", self.namespace, self.lease_name, self.identity)
        if self.on_started_leading is not None:
            result = self.on_started_leading()
            if inspect.isawaitable(result):
                self._lead_task = asyncio.ensure_future(result)

    async def _stop_leading(self) -> None:
        if not self._leading:
            return
        self._leading = False
        task, self._lead_task = self._lead_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.on_stopped_leading is not None:
            try:
                result = self.on_stopped_leading()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_stopped_leading failed")


def _expired(lease: coordination_pb2.Lease, now: datetime) -> bool:
    spec = lease.spec
    if not spec.HasField("renew_time"):
        return True
    renewed = spec.renew_time.ToDatetime(tzinfo=timezone.utc)
    return renewed + timedelta(seconds=spec.lease_duration_seconds) < now
