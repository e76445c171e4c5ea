"""Recording Events about objects, as client-go's EventRecorder does.

Controllers, the scheduler and node agents call `recorder.event(obj, type,
reason, message)`. Repeats of the same (object, reason, message) within a
short window become one Event whose `count` and `lastTimestamp` grow, so a
pod that fails to schedule a hundred times is one Event, not a hundred.
Recording never raises: an Event is diagnostic and must not break a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.api.v1 import core_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

# Reasons are constants so users and tests can match them.
FAILED_SCHEDULING = "FailedScheduling"
SCHEDULED = "Scheduled"
SCALING_REPLICA_SET = "ScalingReplicaSet"
SUCCESSFUL_CREATE = "SuccessfulCreate"
SUCCESSFUL_DELETE = "SuccessfulDelete"
FAILED_CREATE = "FailedCreate"
FAILED_DELETE = "FailedDelete"
DEPLOYMENT_ROLLBACK = "DeploymentRollback"
NODE_NOT_READY = "NodeNotReady"
NODE_READY = "NodeReady"
REGISTERED_NODE = "RegisteredNode"
TAINT_MANAGER_EVICTION = "TaintManagerEviction"
KILLING = "Killing"
PULLING = "Pulling"
PULLED = "Pulled"
CREATED = "Created"
STARTED = "Started"
BACKOFF = "BackOff"
UNHEALTHY = "Unhealthy"
FAILED = "Failed"


class EventRecorder:
    """Writes Events for one component (`source.component`, e.g. "scheduler")."""

    def __init__(self, client: ApiClient, component: str, host: str = "",
                 dedup_window: float = 600.0):
        self.client = client
        self.component = component
        self.host = host
        self.dedup_window = dedup_window
        # (uid, reason, message) -> (event namespace, event name, first seen monotonic)
        self._seen: dict[tuple[str, str, str], tuple[str, str, float]] = {}
        self._lock = asyncio.Lock()

    async def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Record that `reason` happened to `obj`. Never raises."""
        try:
            await self._record(obj, type_, reason, message)
        except (ApiError, asyncio.TimeoutError) as e:
            log.debug("could not record event %s for %s: %s", reason, obj.metadata.name, e)
        except Exception:  # noqa: BLE001 - events are best effort by contract
            log.exception("could not record event %s", reason)

    async def _record(self, obj: Message, type_: str, reason: str, message: str) -> None:
        kind = kinds.of(obj)
        # Events about cluster-scoped objects live in "default", as in Kubernetes.
        namespace = obj.metadata.namespace or "default"
        key = (obj.metadata.uid or f"{kind.kind}/{namespace}/{obj.metadata.name}", reason, message)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen and now - seen[2] < self.dedup_window:
            if await self._bump(seen[0], seen[1]):
                return
        ev = core_pb2.Event(api_version="v1", kind="Event", type=type_, reason=reason,
                            message=message, count=1)
        ev.metadata.namespace = namespace
        ev.metadata.name = f"{obj.metadata.name}.{uuid.uuid4().hex[:16]}"
        ref = ev.involved_object
        ref.kind = kind.kind
        ref.api_version = kind.api_version
        ref.name = obj.metadata.name
        ref.namespace = obj.metadata.namespace
        ref.uid = obj.metadata.uid
        ref.resource_version = obj.metadata.resource_version
        ev.source.component = self.component
        ev.source.host = self.host
        ev.reporting_component = self.component
        ev.reporting_instance = self.host
        ev.first_timestamp.GetCurrentTime()
        ev.first_timestamp.nanos = 0
        ev.last_timestamp.CopyFrom(ev.first_timestamp)
        await self.client.create(ev)
        if len(self._seen) > 10000:
            self._seen.clear()
        self._seen[key] = (namespace, ev.metadata.name, now)

    async def _bump(self, namespace: str, name: str) -> bool:
        """Count one more occurrence on an existing Event; False if it is gone."""
        for _ in range(3):
            try:
                ev = await self.client.get("events", name, namespace)
            except ApiError:
                return False
            ev.count = max(ev.count, 1) + 1
            ev.last_timestamp.GetCurrentTime()
            ev.last_timestamp.nanos = 0
            try:
                await self.client.update(ev)
                return True
            except ApiError as e:
                if type(e).__name__ != "ConflictError":
                    return False
        return False
