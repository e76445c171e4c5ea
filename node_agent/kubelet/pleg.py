"""The pod lifecycle event generator (PLEG), as the kubelet's generic PLEG:
relist the runtime every `period` (1 s) and tell the pod workers which pods
changed.

Each relist is two CRI calls (ListPodSandbox, ListContainers, unfiltered).
A pod's UID is reported when any of its containers or sandboxes appeared,
disappeared or changed state since the previous relist -- a container that
exited is noticed within one period, and its pod synced (and the container
restarted, if due) right after. The first relist reports every UID, so
after a restart of the node agent every pod on the node is looked at,
including orphans whose pod the API server no longer has.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from node_agent.kubelet.cri_client import CriError, RuntimeClient
from node_agent.kubelet.runtime_pods import POD_UID

log = logging.getLogger(__name__)


class Pleg:
    def __init__(self, runtime: RuntimeClient, on_change: Callable[[str], None], period: float = 1.0):
        self.runtime = runtime
        self.on_change = on_change
        self.period = period
        self._last: dict[str, tuple[str, int]] | None = None  # object id -> (uid, state)
        self.uids: set[str] = set()  # UIDs the runtime held at the last relist
        self.healthy = False
        self.relists = 0

    async def relist(self) -> set[str]:
        """One relist; returns (and reports) the UIDs that changed."""
        sandboxes = await self.runtime.list_pod_sandbox()
        containers = await self.runtime.list_containers()
        now: dict[str, tuple[str, int]] = {}
        for s in sandboxes:
            uid = s.labels.get(POD_UID)
            if uid:
                now["s:" + s.id] = (uid, s.state)
        for c in containers:
            uid = c.labels.get(POD_UID)
            if uid:
                now["c:" + c.id] = (uid, c.state)
        previous = self._last
        changed: set[str] = set()
        if previous is None:
            changed = {uid for uid, _ in now.values()}
        else:
            for oid, (uid, state) in now.items():
                if previous.get(oid) != (uid, state):
                    changed.add(uid)
            for oid, (uid, _) in previous.items():
                if oid not in now:
                    changed.add(uid)
        self._last = now
        self.uids = {uid for uid, _ in now.values()}
        self.relists += 1
        for uid in changed:
            self.on_change(uid)
        return changed

    async def run(self) -> None:
        while True:
            try:
                await self.relist()
                if not self.healthy:
                    log.info("PLEG: runtime relisted (%d pods)", len(self.uids))
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except CriError as e:
                if self.healthy:
                    log.warning("PLEG: relisting the runtime failed: %s", e)
                self.healthy = False
            except Exception:  # noqa: BLE001 - keep relisting
                log.exception("PLEG: relist failed")
                self.healthy = False
            await asyncio.sleep(self.period)
