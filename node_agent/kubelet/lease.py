"""The node's Lease in `kube-node-lease`: its heartbeat for the node
lifecycle controller, renewed every `renew_interval` seconds.

The Lease is named after the node, held by it (holderIdentity), says how
long it is good for (leaseDurationSeconds) and is owned by the Node (so it
goes when the Node goes). Renewal is an update that names the version last
written; when someone else wrote it, or it was deleted, the next renewal
reads or creates it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from google.protobuf.message import Message

from kubeling.api.v1 import coordination_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from kubeling.objects import copy

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"


class LeaseRenewer:
    def __init__(self, client: ApiClient, node_name: str, duration: int = 40, renew_interval: float = 10.0,
                 node_uid: Callable[[], str] = lambda: ""):
        self.client = client
        self.node_name = node_name
        self.duration = duration
        self.renew_interval = renew_interval
        self.node_uid = node_uid
        self.lease: Message | None = None
        self.last_renewed = 0.0  # time.monotonic() of the last successful renewal

    def _fill(self, lease: Message) -> None:
        lease.spec.holder_identity = self.node_name
        lease.spec.lease_duration_seconds = self.duration
        lease.spec.renew_time.GetCurrentTime()

    def _new(self) -> Message:
        lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
        lease.metadata.name = self.node_name
        lease.metadata.namespace = NODE_LEASE_NAMESPACE
        uid = self.node_uid()
        if uid:
            lease.metadata.owner_references.add(api_version="v1", kind="Node", name=self.node_name, uid=uid)
        self._fill(lease)
        return lease

    async def renew(self) -> None:
        """One renewal. Raises ApiError."""
        if self.lease is not None:
            lease = copy(self.lease)
            self._fill(lease)
            try:
                self.lease = await self.client.update(lease)
                self.last_renewed = time.monotonic()
                return
            except (ConflictError, NotFoundError):
                self.lease = None
        try:
            self.lease = await self.client.create(self._new())
        except AlreadyExistsError:
            lease = await self.client.get("leases", self.node_name, NODE_LEASE_NAMESPACE)
            self._fill(lease)
            self.lease = await self.client.update(lease)
        self.last_renewed = time.monotonic()

    async def run(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self.renew()
                failures = 0
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                failures += 1
                log.warning("lease renewal failed (%d in a row): %s", failures, e)
            except Exception:  # noqa: BLE001 - one bad renewal must not stop the heartbeat
                failures += 1
                log.exception("lease renewal failed")
            # After a failure, retry sooner (but not in a tight loop), as the kubelet does.
            interval = self.renew_interval if failures == 0 else min(self.renew_interval, 0.2 * 2 ** failures)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
