"""The namespace controller: a deleted namespace is emptied, then removed,
as Kubernetes' namespace controller does.

Deleting a Namespace only sets its deletionTimestamp (phase Terminating):
the API server keeps it while `spec.finalizers` holds "kubernetes", and
refuses new objects in it. This controller then deletes every object of
every namespaced kind in it, and once nothing is left removes "kubernetes"
from `spec.finalizers`, after which the API server deletes the namespace.

Objects may take time to go: pods on a node wait for their node agent
(graceful deletion), objects with finalizers wait for whoever owns the
finalizer (the garbage collector for foreground / orphan deletion). The
controller looks again every so often until the namespace is empty; a pod
still present after its grace period (no node agent confirmed it, e.g. its
node is gone) is deleted with grace period 0, so a namespace always empties
without a node agent. Progress is reported in the namespace's conditions
(NamespaceContentRemaining, NamespaceFinalizersRemaining), as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.errors import ConflictError, NotFoundError, retry_on_conflict
from kubeling.objects import copy

from .controller import Controller
from .manager import register

log = logging.getLogger(__name__)

FINALIZER_KUBERNETES = "kubernetes"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"

# How soon to look again while objects remain (seconds).
RECHECK_MIN = 0.2
RECHECK_MAX = 2.0
DELETE_CONCURRENCY = 32


def namespaced_kinds() -> list[kinds.Kind]:
    """Every kind that lives in a namespace; workloads first so their
    controllers stop making new objects early (the order is a courtesy:
    everything is deleted in one pass)."""
    order = {"Deployment": 0, "ReplicaSet": 1, "Pod": 2}
    return sorted((k for k in kinds.KINDS if k.namespaced), key=lambda k: (order.get(k.kind, 9), k.resource))


def pod_overdue(pod: Message, now: float) -> bool:
    """A pod still present after its graceful deletion period ran out."""
    meta = pod.metadata
    return meta.HasField("deletion_timestamp") and meta.deletion_timestamp.seconds <= now


def remaining_message(counts: dict[str, int]) -> str:
    """Kubernetes' wording: "Some resources are remaining: pods. has 2 resource instances"."""
    return "Some resources are remaining: " + ", ".join(
        f"{res} has {n} resource instances" for res, n in sorted(counts.items()))


@register("namespace")
class NamespaceController(Controller):
    """Empties and finalizes namespaces that are being deleted."""

    name = "namespace"
    workers = 4

    def setup(self) -> None:
        self.namespaces = self.informers.informer("namespaces")
        self.watch(self.namespaces)

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.store.get(key)
        if ns is None or not ns.metadata.HasField("deletion_timestamp"):
            return None
        if FINALIZER_KUBERNETES not in ns.spec.finalizers:
            return None  # our part is done; the server removes it when others finish
        counts, finalizer_counts, recheck = await self._delete_content(ns.metadata.name)
        await self._report(ns, counts, finalizer_counts)
        if counts:
            return recheck
        await self._finalize(ns)
        log.info("namespace %s: empty; finalized", ns.metadata.name)
        return None

    async def _delete_content(self, namespace: str) -> tuple[dict[str, int], dict[str, int], float]:
        """Delete every object in `namespace` once; returns what is still
        there per resource, how many of those hold finalizers, and when to
        look again."""
        now = time.time()
        remaining: dict[str, int] = {}
        with_finalizers: dict[str, int] = {}
        recheck = RECHECK_MAX
        sem = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(kind: kinds.Kind, obj: Message) -> bool:
            """True when the object is gone."""
            meta = obj.metadata
            if meta.HasField("deletion_timestamp"):
                if not (kind.kind == "Pod" and pod_overdue(obj, now)):
                    return False  # already on its way out
                grace = 0  # no node agent confirmed it in time: force
            else:
                grace = None
            async with sem:
                try:
                    result = await self.client.delete(kind, meta.name, namespace,
                                                      grace_period_seconds=grace, uid=meta.uid)
                except (NotFoundError, ConflictError):
                    return True  # gone (or replaced: the next pass sees the new one)
            return not result.pending

        for kind in namespaced_kinds():
            items = (await self.client.list_all(kind, namespace)).items
            if not items:
                continue
            gone = await asyncio.gather(*(delete(kind, obj) for obj in items))
            left = [obj for obj, g in zip(items, gone) if not g]
            if not left:
                continue
            remaining[kind.resource] = len(left)
            held = sum(1 for obj in left if obj.metadata.finalizers)
            if held:
                with_finalizers[kind.resource] = held
            if kind.kind == "Pod":
                # Look again when the first graceful deletion runs out.
                for pod in left:
                    if pod.metadata.HasField("deletion_timestamp"):
                        recheck = min(recheck, pod.metadata.deletion_timestamp.seconds - now)
        return remaining, with_finalizers, max(RECHECK_MIN, min(recheck, RECHECK_MAX))

    async def _report(self, ns: Message, counts: dict[str, int], finalizer_counts: dict[str, int]) -> None:
        """Keep the two progress conditions current; best effort."""
        want = {
            CONTENT_REMAINING: ("True", "SomeResourcesRemain", remaining_message(counts)) if counts
            else ("False", "ContentRemoved", "All content successfully removed"),
            FINALIZERS_REMAINING: ("True", "SomeFinalizersRemain", "Some content in the namespace has "
                                   "finalizers remaining: " + ", ".join(
                                       f"{res} ({n})" for res, n in sorted(finalizer_counts.items())))
            if finalizer_counts else ("False", "ContentHasNoFinalizers", "All content-preserving "
                                      "finalizers finished"),
        }
        new = copy(ns)
        changed = False
        for type_, (status, reason, message) in want.items():
            cond = next((c for c in new.status.conditions if c.type == type_), None)
            if cond is None:
                cond = new.status.conditions.add(type=type_)
            if (cond.status, cond.reason, cond.message) == (status, reason, message):
                continue
            if cond.status != status:
                cond.last_transition_time.GetCurrentTime()
                cond.last_transition_time.nanos = 0
            cond.status, cond.reason, cond.message = status, reason, message
            changed = True
        if not changed:
            return
        new.metadata.resource_version = ""  # status only; do not fight over versions
        try:
            await self.client.update_status(new)
        except NotFoundError:
            pass
        except Exception as e:  # noqa: BLE001 - conditions are informational
            log.debug("namespace %s: could not update conditions: %s", ns.metadata.name, e)

    async def _finalize(self, ns: Message) -> None:
        async def attempt() -> None:
            live = await self.client.get("namespaces", ns.metadata.name, "")
            if live.metadata.uid != ns.metadata.uid or FINALIZER_KUBERNETES not in live.spec.finalizers:
                return
            keep = [f for f in live.spec.finalizers if f != FINALIZER_KUBERNETES]
            del live.spec.finalizers[:]
            live.spec.finalizers.extend(keep)
            await self.client.update(live)
        try:
            await retry_on_conflict(attempt)
        except NotFoundError:
            pass
