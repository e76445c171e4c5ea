"""The garbage collector: owner references decide what lives, as in
Kubernetes' garbagecollector.

It keeps a graph of every object of the owner-able kinds, keyed by uid,
with an edge from each dependent to each owner its `ownerReferences` name.
The graph is fed by informers, so the collector works from events and
never scans the cluster (except the initial list every informer makes).
Work is queued by uid; `reconcile(uid)` looks at one object and does what
its place in the graph asks:

- **Background.** A dependent none of whose owners exists any more is
  deleted (propagationPolicy Background). An owner missing from the graph
  is confirmed gone with a live Get by name (gone, or a different uid: a
  new object that took the name), and the answer is cached by uid because
  uids are never reused. A dependent with one live owner left stays; the
  references to its vanished owners are removed instead.
- **Foreground.** An owner with deletionTimestamp and finalizer
  `foregroundDeletion` has every dependent queued: each is deleted
  (Foreground itself when it has dependents of its own, so the deletion
  walks down the tree) unless another live owner keeps it, in which case
  only its reference to the deleted owner is removed. Once no dependent
  with `blockOwnerDeletion: true` remains, the finalizer is removed and the
  API server removes the owner.
- **Orphan.** An owner with deletionTimestamp and finalizer `orphan` has its
  reference removed from every dependent, then the finalizer removed.

Like Kubernetes, it trusts its graph for "no dependents left": an object
the informers have not delivered yet is not known to the graph, and if its
owner is gone by the time it arrives it is collected as an orphan. Cycles
of blocking references between objects deleted in the foreground are not
detected (Kubernetes detects some); such objects wait forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.errors import ConflictError, NotFoundError, retry_on_conflict
from kubeling.objects import copy

from .controller import Controller
from .manager import register

log = logging.getLogger(__name__)

FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"
BACKGROUND = "Background"
FOREGROUND = "Foreground"

# Namespaced kinds whose objects may own or be owned. Events are left out:
# nothing owns them and there are many.
TRACKED_RESOURCES = ("pods", "replicasets", "deployments", "services", "endpoints",
                     "configmaps", "secrets")

# How many "confirmed gone" owner uids to remember.
ABSENT_CACHE_SIZE = 100_000


# ================================================================= the graph


@dataclass(frozen=True)
class OwnerRef:
    """The parts of an ownerReference the collector uses."""

    uid: str
    kind: str
    name: str
    api_version: str = ""
    block_owner_deletion: bool = False


@dataclass
class GraphNode:
    """One object: who it is, whom it names as owners, how it is being deleted."""

    uid: str
    kind: kinds.Kind
    namespace: str
    name: str
    owners: tuple[OwnerRef, ...] = ()
    deleting: bool = False  # deletionTimestamp is set
    finalizers: frozenset[str] = frozenset()
    obj: Message | None = field(default=None, repr=False, compare=False)  # the cached object

    @property
    def waiting_for_dependents(self) -> bool:
        """Being deleted in the foreground: its dependents must go first."""
        return self.deleting and FINALIZER_FOREGROUND in self.finalizers

    @property
    def orphaning(self) -> bool:
        """Being deleted with propagationPolicy Orphan."""
        return self.deleting and FINALIZER_ORPHAN in self.finalizers

    @property
    def key(self) -> str:
        return f"{self.kind.resource} {self.namespace}/{self.name}"


def node_of(kind: kinds.Kind, obj: Message) -> GraphNode:
    """The graph node for a (cached) object."""
    meta = obj.metadata
    return GraphNode(
        uid=meta.uid, kind=kind, namespace=meta.namespace, name=meta.name,
        owners=tuple(OwnerRef(r.uid, r.kind, r.name, r.api_version, bool(r.block_owner_deletion))
                     for r in meta.owner_references),
        deleting=meta.HasField("deletion_timestamp"),
        finalizers=frozenset(meta.finalizers), obj=obj)


class OwnerGraph:
    """Objects by uid, and for each owner uid the uids of its dependents.

    A dependent may name an owner the graph has never seen (not yet
    delivered, of a kind not tracked, or gone); the edge is kept by uid, so
    `dependents` works whether or not the owner is present.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, GraphNode] = {}
        self._dependents: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, uid: str) -> GraphNode | None:
        return self.nodes.get(uid)

    def upsert(self, node: GraphNode) -> GraphNode | None:
        """Add or replace `node`; returns the node it replaced."""
        old = self.nodes.get(node.uid)
        if old is not None:
            self._unlink(old)
        self.nodes[node.uid] = node
        for ref in node.owners:
            self._dependents.setdefault(ref.uid, set()).add(node.uid)
        return old

    def remove(self, uid: str) -> GraphNode | None:
        """Drop the node; edges from its dependents stay (they name its uid)."""
        old = self.nodes.pop(uid, None)
        if old is not None:
            self._unlink(old)
        return old

    def _unlink(self, node: GraphNode) -> None:
        for ref in node.owners:
            deps = self._dependents.get(ref.uid)
            if deps is not None:
                deps.discard(node.uid)
                if not deps:
                    del self._dependents[ref.uid]

    def dependent_uids(self, owner_uid: str) -> list[str]:
        return sorted(self._dependents.get(owner_uid, ()))

    def dependents(self, owner_uid: str) -> list[GraphNode]:
        """The present objects that name `owner_uid` as an owner."""
        return [self.nodes[u] for u in self.dependent_uids(owner_uid) if u in self.nodes]

    def has_dependents(self, owner_uid: str) -> bool:
        return any(u in self.nodes for u in self._dependents.get(owner_uid, ()))


# ========================================================= pure decisions


@dataclass
class OwnerStates:
    """A dependent's owner references sorted by what the graph knows."""

    solid: list[OwnerRef] = field(default_factory=list)    # present, not waiting on dependents
    waiting: list[OwnerRef] = field(default_factory=list)  # present, foreground deletion
    missing: list[OwnerRef] = field(default_factory=list)  # not in the graph: confirm live


def classify_owners(node: GraphNode, graph: OwnerGraph) -> OwnerStates:
    """Sort `node`'s owner references by the state of the owner they name.

    An owner in the graph under a different kind/name than the reference
    says still counts by uid, as in Kubernetes (uids are unique)."""
    states = OwnerStates()
    for ref in node.owners:
        owner = graph.get(ref.uid)
        if owner is None:
            states.missing.append(ref)
        elif owner.waiting_for_dependents:
            states.waiting.append(ref)
        else:
            states.solid.append(ref)
    return states


@dataclass(frozen=True)
class Verdict:
    """What to do with a dependent: "keep", "remove_refs" (to `refs` uids) or
    "delete" (with `policy`)."""

    action: str
    refs: tuple[str, ...] = ()
    policy: str = ""


KEEP = Verdict("keep")


def dependent_verdict(solid: list[OwnerRef], waiting: list[OwnerRef], dangling: list[OwnerRef],
                      has_dependents: bool) -> Verdict:
    """Decide a dependent's fate from its owners, once missing owners are
    confirmed either gone (`dangling`) or present after all (`solid`).

    - every owner live and none deleting in the foreground: keep it;
    - some owner live: keep it, and drop its references to owners that are
      gone or waiting for it, so it neither blocks nor dangles;
    - otherwise, if a foreground owner waits and it has dependents of its
      own: delete it in the foreground too;
    - otherwise: delete it in the background.
    """
    if not dangling and not waiting:
        return KEEP
    if solid:
        return Verdict("remove_refs", tuple(r.uid for r in (*dangling, *waiting)))
    if waiting and has_dependents:
        return Verdict("delete", policy=FOREGROUND)
    return Verdict("delete", policy=BACKGROUND)


def blocking_dependents(owner_uid: str, graph: OwnerGraph) -> list[GraphNode]:
    """Dependents whose reference to `owner_uid` has blockOwnerDeletion: true;
    the owner's foreground deletion waits until none is left."""
    return [dep for dep in graph.dependents(owner_uid)
            if any(r.uid == owner_uid and r.block_owner_deletion for r in dep.owners)]


def owners_changed(old: GraphNode | None, new: GraphNode) -> bool:
    return old is None or old.owners != new.owners


def deletion_changed(old: GraphNode | None, new: GraphNode) -> bool:
    return old is None or old.deleting != new.deleting or old.finalizers != new.finalizers


# ============================================================== controller


@register("garbagecollector")
class GarbageCollector(Controller):
    """Deletes dependents of deleted owners (background / foreground) and
    orphans dependents of owners deleted with propagationPolicy Orphan."""

    name = "garbagecollector"
    workers = 16

    def setup(self) -> None:
        self.graph = OwnerGraph()
        self._absent: OrderedDict[str, None] = OrderedDict()  # owner uids confirmed gone
        self._informers = []
        for resource in TRACKED_RESOURCES:
            kind = kinds.by_resource(resource)
            inf = self.informers.informer(kind)
            inf.add_handler(on_add=lambda obj, k=kind: self._on_add(k, obj),
                            on_update=lambda old, new, k=kind: self._on_update(k, old, new),
                            on_delete=lambda obj: self._on_delete(obj))
            self._informers.append(inf)

    # ---------------------------------------------------------- events

    def _on_add(self, kind: kinds.Kind, obj: Message) -> None:
        node = node_of(kind, obj)
        self.graph.upsert(node)
        if node.owners or node.deleting:
            self.queue.add(node.uid)

    def _on_update(self, kind: kinds.Kind, old_obj: Message, obj: Message) -> None:
        if old_obj.metadata.uid != obj.metadata.uid:
            # A relist found the name taken by a new object: two events.
            self._on_delete(old_obj)
            self._on_add(kind, obj)
            return
        node = node_of(kind, obj)
        old = self.graph.upsert(node)
        if owners_changed(old, node):
            self.queue.add(node.uid)
            # An owner this object stopped naming may have been waiting for it.
            for uid in {r.uid for r in (old.owners if old else ())} - {r.uid for r in node.owners}:
                self.queue.add(uid)
        if deletion_changed(old, node):
            self.queue.add(node.uid)

    def _on_delete(self, obj: Message) -> None:
        node = self.graph.remove(obj.metadata.uid)
        if node is None:
            return
        for uid in self.graph.dependent_uids(node.uid):
            self.queue.add(uid)  # they may be dangling now
        for ref in node.owners:
            self.queue.add(ref.uid)  # a foreground owner may have waited for this one

    # -------------------------------------------------------- reconcile

    async def reconcile(self, uid: str) -> float | None:
        node = self.graph.get(uid)
        if node is None:
            return None
        if node.deleting:
            if node.orphaning:
                await self._orphan_dependents(node)
            elif node.waiting_for_dependents:
                await self._finish_foreground(node)
            return None  # an object on its way out is not collected again
        if node.owners:
            await self._collect_if_orphaned(node)
        return None

    async def _collect_if_orphaned(self, node: GraphNode) -> None:
        states = classify_owners(node, self.graph)
        dangling: list[OwnerRef] = []
        for ref in states.missing:
            if await self._owner_absent(node, ref):
                dangling.append(ref)
            else:
                states.solid.append(ref)
        verdict = dependent_verdict(states.solid, states.waiting, dangling,
                                    self.graph.has_dependents(node.uid))
        if verdict.action == "remove_refs":
            log.debug("gc: %s keeps a live owner; removing references to %s", node.key, verdict.refs)
            await self._remove_owner_refs(node, set(verdict.refs))
        elif verdict.action == "delete":
            log.debug("gc: deleting %s (%s): its owners are gone or deleting", node.key, verdict.policy)
            try:
                await self.client.delete(node.kind, node.name, node.namespace,
                                         propagation_policy=verdict.policy, uid=node.uid)
            except (NotFoundError, ConflictError):
                pass  # already gone, or the name now belongs to a new object

    async def _owner_absent(self, node: GraphNode, ref: OwnerRef) -> bool:
        """True when the owner `ref` names is confirmed gone by a live Get."""
        if ref.uid in self._absent:
            self._absent.move_to_end(ref.uid)
            return True
        try:
            kind = kinds.by_kind(ref.kind)
        except kinds.UnknownKindError:
            log.warning("gc: %s names an owner of unknown kind %r; keeping it", node.key, ref.kind)
            return False
        try:
            owner = await self.client.get(kind, ref.name, node.namespace if kind.namespaced else "")
        except NotFoundError:
            absent = True
        else:
            absent = owner.metadata.uid != ref.uid
        if absent:
            self._absent[ref.uid] = None
            if len(self._absent) > ABSENT_CACHE_SIZE:
                self._absent.popitem(last=False)
        return absent

    async def _finish_foreground(self, owner: GraphNode) -> None:
        for dep in self.graph.dependents(owner.uid):
            if not dep.deleting:
                self.queue.add(dep.uid)  # decided (delete or unlink) by its own reconcile
        blocking = blocking_dependents(owner.uid, self.graph)
        if blocking:
            log.debug("gc: %s waits for %d blocking dependents", owner.key, len(blocking))
            return  # their deletion events queue the owner again
        await self._remove_finalizer(owner, FINALIZER_FOREGROUND)

    async def _orphan_dependents(self, owner: GraphNode) -> None:
        deps = self.graph.dependents(owner.uid)
        await _gather_limited((self._remove_owner_refs(dep, {owner.uid}) for dep in deps), 16)
        await self._remove_finalizer(owner, FINALIZER_ORPHAN)

    # ------------------------------------------------------------ writes

    async def _rewrite(self, node: GraphNode, change) -> None:
        """Read-modify-write of `node`'s object: `change(obj)` edits it and
        returns True when it changed anything. The first try uses the cached
        copy (its resourceVersion makes a stale write fail); later tries read
        the object live. Gone, or replaced by a new uid: nothing to do."""
        first = True

        async def attempt() -> None:
            nonlocal first
            if first and node.obj is not None:
                obj = copy(node.obj)
            else:
                obj = await self.client.get(node.kind, node.name, node.namespace)
            first = False
            if obj.metadata.uid != node.uid or not change(obj):
                return
            await self.client.update(obj)
        try:
            await retry_on_conflict(attempt)
        except NotFoundError:
            pass

    async def _remove_owner_refs(self, node: GraphNode, uids: set[str]) -> None:
        def change(obj: Message) -> bool:
            refs = obj.metadata.owner_references
            keep = [copy(r) for r in refs if r.uid not in uids]
            if len(keep) == len(refs):
                return False
            del refs[:]
            refs.extend(keep)
            return True
        await self._rewrite(node, change)

    async def _remove_finalizer(self, node: GraphNode, finalizer: str) -> None:
        log.debug("gc: removing finalizer %s from %s", finalizer, node.key)

        def change(obj: Message) -> bool:
            if finalizer not in obj.metadata.finalizers:
                return False
            keep = [f for f in obj.metadata.finalizers if f != finalizer]
            del obj.metadata.finalizers[:]
            obj.metadata.finalizers.extend(keep)
            return True
        await self._rewrite(node, change)


async def _gather_limited(coros: Iterable, limit: int) -> None:
    """Run coroutines with at most `limit` at once; the first error is raised
    after all have finished (so a retry starts from a consistent state)."""
    sem = asyncio.Semaphore(limit)

    async def one(coro):
        async with sem:
            return await coro
    results = await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
