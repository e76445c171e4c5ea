"""The API server's logic: what Create, Get, List, Update, UpdateStatus,
Delete, Watch and Bind do to objects, independent of gRPC.

Objects are stored under `/registry/<resource>/<namespace>/<name>` (cluster-
scoped kinds: `/registry/<resource>/<name>`) as serialized protobuf with an
empty resourceVersion; the resourceVersion a client sees is etcd's mod
revision of the key. Every write is one etcd transaction conditioned on the
mod revision the logic read, so a concurrent writer makes it fail whole
(ConflictError) rather than half-apply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from google.protobuf.message import Message

from kubeling import fields as fieldsel
from kubeling import kinds
from kubeling import labels as labelsel
from kubeling import names
from kubeling.kinds import Kind
from kubeling.objects import copy, field_value

from . import defaults, validation
from .errors import (ApiError, ConflictError, FailedPreconditionError, FieldError, ForbiddenError,
                     GoneError, InvalidError, UnavailableError, already_exists, conflict, invalid,
                     not_found)
from .storage import (CompactedError, ConflictError as StorageConflict, FutureRevisionError,
                      KeyExistsError, KeyNotFoundError, Storage)
from .service_allocator import AllocationError, ServiceAllocator
from .watch_cache import WatchCache, WatcherTooSlowError

log = logging.getLogger(__name__)

PREFIX = "/registry"
# etcd's default request limit is 1.5 MiB; Kubernetes refuses larger objects.
MAX_OBJECT_BYTES = 1536 * 1024
# Namespaces that exist from the start, as in Kubernetes.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_BOOKMARK_SECONDS = 10.0
# Objects remembered as last written or read, to skip the read before an
# update that names the version we remember.
RECENT_OBJECTS = 20000

FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"
FINALIZER_NAMESPACE = "kubernetes"
PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")


@dataclass
class ListResult:
    items: list[Message]
    resource_version: str
    continue_token: str


@dataclass
class Event:
    type: str  # ADDED MODIFIED DELETED BOOKMARK
    object: Message


class Registry:
    """Every verb of the API over one Storage, with one WatchCache per resource."""

    def __init__(self, storage: Storage, *, watch_cache_capacity: int = 20000,
                 service_cidr: str = "10.96.0.0/16", node_port_range: tuple[int, int] = (30000, 32767)):
        self.storage = storage
        self.service_allocator = ServiceAllocator(storage, service_cidr, node_port_range)
        self.caches: dict[str, WatchCache] = {}
        self._capacity = watch_cache_capacity
        # Namespaces known to exist, fed by the namespaces watch cache; a
        # create whose namespace is not here falls back to reading etcd.
        self._namespaces: dict[str, Message] = {}
        self._ns_task: asyncio.Task | None = None
        self._recent: OrderedDict[bytes, tuple[int, Message]] = OrderedDict()

    # ----------------------------------------------------------- life cycle

    async def start(self) -> None:
        for kind in kinds.KINDS:
            cache = WatchCache(self.storage, self._prefix(kind), self._decoder(kind),
                               capacity=self._capacity)
            await cache.start()
            self.caches[kind.resource] = cache
        await self._ensure_system_namespaces()
        self._ns_task = asyncio.create_task(self._follow_namespaces())
        await self._repair_service_allocations()

    async def publish(self, advertise_address: str) -> None:
        """Point the `kubernetes` Service in `default` at this API server."""
        await self._ensure_kubernetes_service(advertise_address)

    async def stop(self) -> None:
        if self._ns_task:
            self._ns_task.cancel()
            await asyncio.gather(self._ns_task, return_exceptions=True)
        for cache in self.caches.values():
            await cache.stop()

    async def _ensure_system_namespaces(self) -> None:
        ns_kind = kinds.by_kind("Namespace")
        for name in SYSTEM_NAMESPACES:
            obj = ns_kind.new()
            obj.metadata.name = name
            try:
                await self.create(obj)
            except ApiError as e:
                if "already exists" not in e.message:
                    raise

    async def _follow_namespaces(self) -> None:
        """Keep self._namespaces current: list, then follow the watch cache."""
        ns_kind = kinds.by_kind("Namespace")
        while True:
            try:
                listed = await self.list(ns_kind)
                self._namespaces = {o.metadata.name: o for o in listed.items}
                async for ev in self.watch(ns_kind, resource_version=listed.resource_version):
                    if ev.type == "DELETED":
                        self._namespaces.pop(ev.object.metadata.name, None)
                    elif ev.type != "BOOKMARK":
                        self._remember_namespace(ev.object)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # relist on anything; the cache is only a shortcut
                log.warning("namespace cache: %s; relisting", e)
                await asyncio.sleep(0.5)

    def _remember_namespace(self, ns: Message) -> None:
        """Cache a namespace unless the cache already holds a newer version
        (delete() records its own write before the watch delivers it)."""
        cached = self._namespaces.get(ns.metadata.name)
        if cached is None or int(cached.metadata.resource_version) <= int(ns.metadata.resource_version):
            self._namespaces[ns.metadata.name] = ns

    # ---------------------------------------------------------------- keys

    @staticmethod
    def _prefix(kind: Kind, namespace: str = "") -> bytes:
        if kind.namespaced and namespace:
            return f"{PREFIX}/{kind.resource}/{namespace}/".encode()
        return f"{PREFIX}/{kind.resource}/".encode()

    @staticmethod
    def _key(kind: Kind, namespace: str, name: str) -> bytes:
        if kind.namespaced:
            return f"{PREFIX}/{kind.resource}/{namespace}/{name}".encode()
        return f"{PREFIX}/{kind.resource}/{name}".encode()

    @staticmethod
    def _decoder(kind: Kind) -> Callable[[bytes, int], Message]:
        def decode(value: bytes, revision: int) -> Message:
            obj = kind.message()
            obj.ParseFromString(value)
            obj.metadata.resource_version = str(revision)
            return obj
        return decode

    @staticmethod
    def _encode(obj: Message) -> bytes:
        """The stored form: the object without its resourceVersion (etcd's
        mod revision is the version). The field is cleared for the
        serialization and put back, which is cheaper than copying the object."""
        meta = obj.metadata
        rv = meta.resource_version
        if not rv:
            return obj.SerializeToString(deterministic=True)
        meta.resource_version = ""
        try:
            return obj.SerializeToString(deterministic=True)
        finally:
            meta.resource_version = rv

    # ------------------------------------------------------------- reading

    async def get(self, kind: Kind, namespace: str, name: str) -> Message:
        namespace = self._namespace_for(kind, namespace)
        obj, _ = await self._read(kind, namespace, name)
        return obj

    async def _read(self, kind: Kind, namespace: str, name: str) -> tuple[Message, int]:
        key = self._key(kind, namespace, name)
        try:
            kv = await self.storage.get(key)
        except KeyNotFoundError:
            self._recent.pop(key, None)
            raise not_found(kind, name) from None
        obj = self._decoder(kind)(kv.value, kv.mod_revision)
        self._remember(key, kv.mod_revision, copy(obj))
        return obj, kv.mod_revision

    async def list(self, kind: Kind, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ListResult:
        match = self._matcher(label_selector, field_selector)
        prefix = self._prefix(kind, namespace if kind.namespaced else "")
        revision, start = 0, None
        if continue_token:
            revision, start = self._parse_continue(continue_token, prefix)
        elif resource_version:
            revision = self._parse_rv(resource_version)
        if limit < 0:
            raise InvalidError(f"limit: Invalid value: {limit}: must be 0 or greater")
        decode = self._decoder(kind)
        items: list[Message] = []
        chunk = max(limit, 256) if limit else 0
        while True:
            try:
                page = await self.storage.list(prefix, revision=revision, start_key=start, limit=chunk)
            except CompactedError:
                raise GoneError(
                    f"The provided continue parameter or resourceVersion is too old to display "
                    f"a consistent list result (resourceVersion {revision} was compacted); "
                    f"start a new list without it") from None
            except FutureRevisionError:
                what = "continue" if continue_token else "resourceVersion"
                raise InvalidError(f"{what}: Invalid value: resourceVersion {revision} is newer than "
                                   f"the server's current version") from None
            revision = page.revision
            for i, kv in enumerate(page.items):
                obj = decode(kv.value, kv.mod_revision)
                if match(obj):
                    items.append(obj)
                    if limit and len(items) == limit:
                        more = page.more or i + 1 < len(page.items)
                        token = self._make_continue(revision, kv.key + b"\x00") if more else ""
                        return ListResult(items, str(revision), token)
            if not page.more or not page.items:
                return ListResult(items, str(revision), "")
            start = page.items[-1].key + b"\x00"

    @staticmethod
    def _make_continue(revision: int, start: bytes) -> str:
        raw = json.dumps({"rv": revision, "start": start.decode()}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def _parse_continue(token: str, prefix: bytes) -> tuple[int, bytes]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            revision, start = int(data["rv"]), data["start"].encode()
            if revision <= 0:
                raise ValueError(revision)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise InvalidError(f"continue: Invalid value: {token!r}: not a continue token from this server") from None
        if not start.startswith(prefix):
            raise InvalidError("continue: Invalid value: the token belongs to a different list")
        return revision, start

    @staticmethod
    def _parse_rv(rv: str) -> int:
        try:
            value = int(rv)
        except ValueError:
            value = -1
        if value < 0:
            raise InvalidError(f"resourceVersion: Invalid value: {rv!r}: must be a non-negative integer")
        return value

    @staticmethod
    def _matcher(label_selector: str, field_selector: str) -> Callable[[Message], bool]:
        try:
            lsel = labelsel.parse_selector(label_selector)
        except labelsel.SelectorError as e:
            raise InvalidError(f"labelSelector: {e}") from None
        try:
            fsel = fieldsel.parse_field_selector(field_selector)
        except fieldsel.FieldSelectorError as e:
            raise InvalidError(f"fieldSelector: {e}") from None
        for field, _op, _value in fsel.requirements:
            # A path that names no scalar field is an error, as in Kubernetes.
            pass
        if lsel.empty and not fsel.requirements:
            return lambda obj: True

        def match(obj: Message) -> bool:
            if not lsel.empty and not lsel.matches(obj.metadata.labels):
                return False
            return fsel.matches(lambda path: field_value(obj, path))
        return match

    # ------------------------------------------------------------ creating

    def _namespace_for(self, kind: Kind, namespace: str) -> str:
        if not kind.namespaced:
            return ""
        return namespace or "default"

    async def create(self, obj: Message, dry_run: bool = False) -> Message:
        kind = kinds.of(obj)
        obj = copy(obj)
        self._check_type(kind, obj)
        meta = obj.metadata
        meta.namespace = self._namespace_for(kind, meta.namespace)
        if not meta.name and not meta.generate_name:
            raise invalid(kind, "", [FieldError.required("metadata.name", "name or generateName is required")])
        if meta.resource_version:
            raise InvalidError(f'{kind.kind} "{meta.name}": metadata.resourceVersion: '
                               f'Invalid value: must not be set on create')
        meta.uid = _new_uid()
        meta.creation_timestamp.FromSeconds(int(time.time()))
        meta.ClearField("deletion_timestamp")
        meta.ClearField("deletion_grace_period_seconds")
        meta.generation = 1 if kind.has_spec else 0
        if kind.has_status and kind.kind != "Node":
            obj.ClearField("status")
        defaults.apply(kind, obj)
        self._check(kind, obj, None)
        if kind.namespaced:
            await self._check_namespace(kind, obj)
        if dry_run:
            return obj
        allocated = await self._allocate_service(obj, None) if kind.kind == "Service" else []
        try:
            return await self._store_new(kind, obj)
        except BaseException:
            await self._release_service(allocated)
            raise

    async def _store_new(self, kind: Kind, obj: Message) -> Message:
        meta = obj.metadata
        for attempt in range(8):
            if meta.generate_name and (not meta.name or attempt):
                meta.name = meta.generate_name + names.generate_name_suffix()
                self._check(kind, obj, None)
            value = self._encode(obj)
            self._check_size(kind, obj, value)
            try:
                revision = await self.storage.create(self._key(kind, meta.namespace, meta.name), value)
            except KeyExistsError:
                if meta.generate_name and attempt < 7:
                    continue
                raise already_exists(kind, meta.name) from None
            meta.resource_version = str(revision)
            self._remember(self._key(kind, meta.namespace, meta.name), revision, copy(obj))
            return obj
        raise AssertionError("unreachable")

    @staticmethod
    def _check_type(kind: Kind, obj: Message) -> None:
        if obj.api_version and obj.api_version != kind.api_version:
            raise InvalidError(f'{kind.kind} "{obj.metadata.name}": apiVersion: Invalid value: '
                               f'{obj.api_version!r}: must be {kind.api_version!r}')
        if obj.kind and obj.kind != kind.kind:
            raise InvalidError(f'{kind.kind} "{obj.metadata.name}": kind: Invalid value: '
                               f'{obj.kind!r}: must be {kind.kind!r}')
        obj.api_version = kind.api_version
        obj.kind = kind.kind

    @staticmethod
    def _check(kind: Kind, obj: Message, old: Message | None) -> None:
        errors = validation.validate(kind, obj, old)
        if errors:
            raise invalid(kind, obj.metadata.name or obj.metadata.generate_name, errors)

    @staticmethod
    def _check_size(kind: Kind, obj: Message, value: bytes) -> None:
        if len(value) > MAX_OBJECT_BYTES:
            raise InvalidError(f'{kind.kind} "{obj.metadata.name}" is invalid: the object is '
                               f'{len(value)} bytes; the limit is {MAX_OBJECT_BYTES} bytes')

    async def _check_namespace(self, kind: Kind, obj: Message) -> None:
        name = obj.metadata.namespace
        ns = self._namespaces.get(name)
        if ns is None:
            try:
                ns = await self.get(kinds.by_kind("Namespace"), "", name)
            except ApiError:
                raise not_found(kinds.by_kind("Namespace"), name) from None
        if ns.metadata.HasField("deletion_timestamp"):
            raise ForbiddenError(
                f'{kind.resource} "{obj.metadata.name}" is forbidden: unable to create new content '
                f'in namespace {name} because it is being terminated')

    # ------------------------------------------------------------ updating

    async def update(self, obj: Message, dry_run: bool = False) -> Message:
        """Replace metadata and spec; status is kept from the stored object."""
        return await self._replace(obj, status_only=False, dry_run=dry_run)

    async def update_status(self, obj: Message, dry_run: bool = False) -> Message:
        """Replace status; metadata and spec are kept from the stored object."""
        kind = kinds.of(obj)
        if not kind.has_status:
            raise InvalidError(f"{kind.resource} have no status; use Update")
        return await self._replace(obj, status_only=True, dry_run=dry_run)

    async def _replace(self, obj: Message, *, status_only: bool, dry_run: bool) -> Message:
        kind = kinds.of(obj)
        obj = copy(obj)
        self._check_type(kind, obj)
        namespace = self._namespace_for(kind, obj.metadata.namespace)
        name = obj.metadata.name
        if not name:
            raise invalid(kind, "", [FieldError.required("metadata.name")])
        expected = obj.metadata.resource_version
        if expected:
            self._parse_rv(expected)
        key = self._key(kind, namespace, name)
        # A writer that read the object from us (a lease renewer, a
        # controller updating status) sends back the version we last saw;
        # then that copy is the old object and etcd's compare in the write
        # is the only round trip. Any other case reads etcd first.
        recent = self._recent.get(key)
        while True:
            # Without a resourceVersion the remembered copy is only a guess at
            # the latest; etcd's compare in the write checks it, and a wrong
            # guess costs one retry with a real read.
            guessed = recent is not None and (not expected or str(recent[0]) == expected)
            if guessed:
                revision, old = recent
                old = copy(old)
            else:
                old, revision = await self._read(kind, namespace, name)
            recent = None
            if guessed and obj.metadata.uid and obj.metadata.uid != old.metadata.uid:
                continue  # the remembered copy may be stale: decide on a real read
            if expected and expected != str(revision):
                raise conflict(kind, name)
            if obj.metadata.uid and obj.metadata.uid != old.metadata.uid:
                raise conflict(kind, name, f"Precondition failed: UID in precondition: "
                                           f"{obj.metadata.uid}, UID in object meta: {old.metadata.uid}")
            new = self._merge(kind, old, obj, status_only)
            if kind.kind == "Service" and not status_only:
                _keep_service_allocations(old, new)
            if not status_only:
                defaults.apply(kind, new)
            self._check(kind, new, old)
            if kind.has_spec and not status_only and new.spec != old.spec:
                new.metadata.generation = old.metadata.generation + 1
            if new == old:
                if guessed and not expected:
                    continue  # "no change" must be judged against etcd, not a guess
                return old  # nothing changed: no write, same resourceVersion
            if dry_run:
                return new
            claimed = []
            if kind.kind == "Service" and not status_only and not self._finalized(kind, new):
                claimed = await self._allocate_service(new, old)
            try:
                if self._finalized(kind, new):
                    _, rev = await self.storage.delete(key, expected_mod_revision=revision)
                    self._recent.pop(key, None)
                    await self._release_unused(kind, old, None)
                    new.metadata.resource_version = str(rev)
                    return new
                value = self._encode(new)
                self._check_size(kind, new, value)
                rev = await self.storage.update(key, value, expected_mod_revision=revision)
            except StorageConflict:
                await self._release_service(claimed)
                if expected:
                    raise conflict(kind, name) from None
                continue  # unconditional update: read again and reapply
            except BaseException as e:
                await self._release_service(claimed)
                if isinstance(e, KeyNotFoundError):
                    raise not_found(kind, name) from None
                raise
            await self._release_unused(kind, old, new)
            new.metadata.resource_version = str(rev)
            self._remember(key, rev, copy(new))
            return new

    # ------------------------------------------------- service allocations

    async def _allocate_service(self, svc: Message, old: Message | None) -> list[tuple]:
        """Give a Service the cluster IP and node ports it lacks (or claim the
        ones it asks for); returns what was newly claimed, to undo on failure."""
        kind = kinds.of(svc)
        spec = svc.spec
        owner = f"{svc.metadata.namespace}/{svc.metadata.name or svc.metadata.generate_name}"
        claimed: list[tuple] = []
        alloc = self.service_allocator
        try:
            old_ip = old.spec.cluster_ip if old is not None else ""
            if spec.cluster_ip != "None" and (not old_ip or old_ip == "None"):
                ip = await alloc.allocate_ip(owner, spec.cluster_ip)
                claimed.append(("ip", ip))
                spec.cluster_ip = ip
                del spec.cluster_ips[:]
                spec.cluster_ips.append(ip)
            held = _node_ports(old) if old is not None else set()
            if spec.type == "NodePort":
                for i, port in enumerate(spec.ports):
                    protocol = port.protocol or "TCP"
                    if port.node_port and (protocol, port.node_port) in held:
                        continue
                    port.node_port = await alloc.allocate_port(owner, protocol, port.node_port,
                                                               f"spec.ports[{i}].nodePort")
                    claimed.append(("port", protocol, port.node_port))
        except AllocationError as e:
            await self._release_service(claimed)
            raise invalid(kind, svc.metadata.name, [e.error]) from None
        except BaseException:
            await self._release_service(claimed)
            raise
        return claimed

    async def _release_service(self, claimed: list[tuple]) -> None:
        for item in claimed:
            try:
                if item[0] == "ip":
                    await self.service_allocator.release_ip(item[1])
                else:
                    await self.service_allocator.release_port(item[1], item[2])
            except Exception as e:  # noqa: BLE001 - repair() frees it at the next start
                log.warning("could not release %s: %s", item, e)

    async def _release_unused(self, kind: Kind, old: Message, new: Message | None) -> None:
        """After a Service changed or went away, free what it no longer uses."""
        if kind.kind != "Service":
            return
        freed = []
        if old.spec.cluster_ip and old.spec.cluster_ip != "None" and (
                new is None or new.spec.cluster_ip != old.spec.cluster_ip):
            freed.append(("ip", old.spec.cluster_ip))
        kept = _node_ports(new) if new is not None else set()
        freed += [("port", proto, port) for proto, port in _node_ports(old) - kept]
        await self._release_service(freed)

    async def _repair_service_allocations(self) -> None:
        services = await self.list(kinds.by_kind("Service"))
        ips = {s.spec.cluster_ip for s in services.items if s.spec.cluster_ip not in ("", "None")}
        ports = set().union(*(_node_ports(s) for s in services.items)) if services.items else set()
        freed = await self.service_allocator.repair(ips, ports)
        if freed:
            log.info("released %d service allocations no Service uses", freed)

    async def _ensure_kubernetes_service(self, advertise: str) -> None:
        """The `kubernetes` Service in `default` points at the API server."""
        host, _, port = advertise.rpartition(":")
        svc_kind, ep_kind = kinds.by_kind("Service"), kinds.by_kind("Endpoints")
        svc = svc_kind.new()
        svc.metadata.name, svc.metadata.namespace = "kubernetes", "default"
        svc.metadata.labels["component"] = "apiserver"
        svc.metadata.labels["provider"] = "kubernetes"
        svc.spec.cluster_ip = self.service_allocator.first_ip()
        p = svc.spec.ports.add(name="https", port=443, protocol="TCP")
        p.target_port.number_value = int(port)
        try:
            await self.create(svc)
        except ApiError as e:
            if "already exists" not in e.message:
                log.warning("could not create the kubernetes Service: %s", e.message)
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return  # pods cannot reach a loopback address; Kubernetes refuses it too
        ep = ep_kind.new()
        ep.metadata.name, ep.metadata.namespace = "kubernetes", "default"
        subset = ep.subsets.add()
        subset.addresses.add(ip=host)
        subset.ports.add(name="https", port=int(port), protocol="TCP")
        try:
            current = await self.get(ep_kind, "default", "kubernetes")
            ep.metadata.resource_version = current.metadata.resource_version
            await self.update(ep)
        except ApiError:
            try:
                await self.create(ep)
            except ApiError as e:
                log.warning("could not write the kubernetes Endpoints: %s", e.message)

    def _remember(self, key: bytes, revision: int, obj: Message) -> None:
        """Keep the object we just wrote or read, as of its revision."""
        self._recent[key] = (revision, obj)
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_OBJECTS:
            self._recent.popitem(last=False)

    @staticmethod
    def _merge(kind: Kind, old: Message, obj: Message, status_only: bool) -> Message:
        if status_only:
            new = copy(old)
            _copy_status(new, obj)
            return new
        new = copy(obj)
        meta, old_meta = new.metadata, old.metadata
        meta.namespace = old_meta.namespace
        meta.uid = old_meta.uid
        meta.resource_version = old_meta.resource_version
        meta.generation = old_meta.generation
        meta.generate_name = old_meta.generate_name
        meta.creation_timestamp.CopyFrom(old_meta.creation_timestamp)
        if old_meta.HasField("deletion_timestamp"):
            meta.deletion_timestamp.CopyFrom(old_meta.deletion_timestamp)
        else:
            meta.ClearField("deletion_timestamp")
        if old_meta.HasField("deletion_grace_period_seconds"):
            meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds
        else:
            meta.ClearField("deletion_grace_period_seconds")
        if kind.has_status:
            _copy_status(new, old)
        return new

    @staticmethod
    def _finalized(kind: Kind, obj: Message) -> bool:
        """A deleted object whose last finalizer is gone is removed for good."""
        if not obj.metadata.HasField("deletion_timestamp") or obj.metadata.finalizers:
            return False
        if kind.kind == "Namespace" and obj.spec.finalizers:
            return False
        if kind.kind == "Pod" and obj.metadata.deletion_grace_period_seconds > 0:
            return False  # the node agent removes it once its containers are gone
        return True

    # ------------------------------------------------------------ deleting

    async def delete(self, kind: Kind, namespace: str, name: str, *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     uid: str = "", resource_version: str = "") -> tuple[Message, bool]:
        """Delete an object; returns (object, pending). Pending means the
        object stays with deletionTimestamp set until its finalizers are gone
        or (pods on a node) its node agent has stopped it."""
        namespace = self._namespace_for(kind, namespace)
        if propagation_policy and propagation_policy not in PROPAGATION_POLICIES:
            raise InvalidError(f"propagationPolicy: Unsupported value: {propagation_policy!r}: "
                               f"supported values: " + ", ".join(f'"{p}"' for p in PROPAGATION_POLICIES))
        if grace_period_seconds is not None and grace_period_seconds < 0:
            raise InvalidError(f"gracePeriodSeconds: Invalid value: {grace_period_seconds}: must be >= 0")
        while True:
            old, revision = await self._read(kind, namespace, name)
            if uid and uid != old.metadata.uid:
                raise conflict(kind, name, f"Precondition failed: UID in precondition: {uid}, "
                                           f"UID in object meta: {old.metadata.uid}")
            if resource_version and resource_version != str(revision):
                raise conflict(kind, name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{resource_version}, ResourceVersion in object meta: {revision}")
            new = copy(old)
            meta = new.metadata
            if propagation_policy == "Orphan" and FINALIZER_ORPHAN not in meta.finalizers:
                meta.finalizers.append(FINALIZER_ORPHAN)
            if propagation_policy == "Foreground" and FINALIZER_FOREGROUND not in meta.finalizers:
                meta.finalizers.append(FINALIZER_FOREGROUND)
            grace = self._grace_period(kind, old, grace_period_seconds)
            pending = bool(meta.finalizers) or grace > 0 or (
                kind.kind == "Namespace" and bool(new.spec.finalizers))
            key = self._key(kind, namespace, name)
            try:
                if not pending:
                    _, rev = await self.storage.delete(key, expected_mod_revision=revision)
                    self._recent.pop(key, None)
                    await self._release_unused(kind, old, None)
                    old.metadata.resource_version = str(rev)
                    return old, False
                if not meta.HasField("deletion_timestamp"):
                    meta.deletion_timestamp.GetCurrentTime()
                    meta.deletion_timestamp.nanos = 0
                    meta.deletion_timestamp.seconds += grace
                    meta.deletion_grace_period_seconds = grace
                elif kind.kind == "Pod" and grace < meta.deletion_grace_period_seconds:
                    # A second delete may shorten, never lengthen, the grace period.
                    meta.deletion_timestamp.seconds -= meta.deletion_grace_period_seconds - grace
                    meta.deletion_grace_period_seconds = grace
                if kind.kind == "Namespace":
                    new.status.phase = "Terminating"
                if new == old:
                    return old, True
                rev = await self.storage.update(key, self._encode(new), expected_mod_revision=revision)
            except StorageConflict:
                continue
            except KeyNotFoundError:
                raise not_found(kind, name) from None
            meta.resource_version = str(rev)
            if kind.kind == "Namespace":
                # Refuse new content from now on, not once the watch catches up.
                self._remember_namespace(new)
            return new, True

    @staticmethod
    def _grace_period(kind: Kind, obj: Message, requested: int | None) -> int:
        """Only pods bound to a node and not yet finished wait for a grace period."""
        if kind.kind != "Pod":
            return 0
        if not obj.spec.node_name or obj.status.phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return requested
        if obj.metadata.HasField("deletion_grace_period_seconds"):
            return obj.metadata.deletion_grace_period_seconds
        return obj.spec.termination_grace_period_seconds if obj.spec.HasField(
            "termination_grace_period_seconds") else 30

    # ------------------------------------------------------------- binding

    async def bind(self, namespace: str, name: str, node_name: str, uid: str = "",
                   resource_version: str = "") -> Message:
        """Set a pod's spec.nodeName once: an atomic compare-and-set."""
        kind = kinds.by_kind("Pod")
        namespace = namespace or "default"
        if not node_name:
            raise invalid(kind, name, [FieldError.required("target.name", "the node to bind to")])
        key = self._key(kind, namespace, name)
        recent = self._recent.get(key)  # a guess, checked by the write's compare
        while True:
            guessed = recent is not None
            if guessed:
                revision, pod = recent
                pod, recent = copy(pod), None
            else:
                pod, revision = await self._read(kind, namespace, name)
            if guessed and ((uid and uid != pod.metadata.uid)
                            or (resource_version and resource_version != str(revision))):
                continue  # the remembered copy may be stale: decide on a real read
            if uid and uid != pod.metadata.uid:
                raise conflict(kind, name, f"Precondition failed: UID in precondition: {uid}, "
                                           f"UID in object meta: {pod.metadata.uid}")
            if resource_version and resource_version != str(revision):
                raise conflict(kind, name)
            if pod.spec.node_name:
                raise FailedPreconditionError(
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already '
                    f'assigned to node "{pod.spec.node_name}"')
            if pod.metadata.HasField("deletion_timestamp"):
                raise FailedPreconditionError(
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is being deleted')
            pod.spec.node_name = node_name
            _set_pod_condition(pod, "PodScheduled", "True")
            try:
                rev = await self.storage.update(self._key(kind, namespace, name), self._encode(pod),
                                                expected_mod_revision=revision)
            except StorageConflict:
                continue
            except KeyNotFoundError:
                raise not_found(kind, name) from None
            pod.metadata.resource_version = str(rev)
            self._remember(key, rev, copy(pod))
            return pod

    # ------------------------------------------------------------ watching

    async def watch(self, kind: Kind, namespace: str = "", label_selector: str = "",
                    field_selector: str = "", resource_version: str = "",
                    allow_bookmarks: bool = False,
                    bookmark_interval: float = DEFAULT_BOOKMARK_SECONDS) -> AsyncIterator[Event]:
        """Changes after resource_version (or from now), in order, filtered.

        An object that starts matching the selectors is sent as ADDED, one
        that stops matching as DELETED, as Kubernetes does.
        """
        match = self._matcher(label_selector, field_selector)
        start = self._parse_rv(resource_version) if resource_version else None
        cache = self.caches[kind.resource]
        key_prefix = self._prefix(kind, namespace if kind.namespaced else "")
        # A version from the future would silently skip every event up to it.
        # The cache sees only this resource's writes, so etcd is the judge.
        if start and start > cache.current_revision and start > await self.storage.current_revision():
            raise InvalidError(f"resourceVersion: Invalid value: {resource_version!r}: is newer than "
                               f"the server's current version")
        try:
            watcher = cache.watch(start, key_prefix=key_prefix)
        except CompactedError:
            raise self._gone(resource_version) from None
        last = start if start is not None else cache.current_revision
        try:
            while True:
                try:
                    ev = await watcher.next(bookmark_interval if allow_bookmarks else None)
                except StopAsyncIteration:
                    return
                except CompactedError:
                    raise self._gone(resource_version) from None
                except WatcherTooSlowError as e:
                    raise UnavailableError(f"watch of {kind.resource} ended: {e}; rewatch from "
                                           f"resourceVersion {last}") from None
                if ev is None:
                    mark = kind.new()
                    mark.metadata.resource_version = str(max(last, watcher.progress_revision or 0))
                    yield Event("BOOKMARK", mark)
                    continue
                last = ev.revision
                now_matches = match(ev.obj)
                if ev.type == "DELETED":
                    if now_matches:
                        yield Event("DELETED", ev.obj)
                elif ev.type == "ADDED":
                    if now_matches:
                        yield Event("ADDED", ev.obj)
                else:
                    was = ev.prev_obj is not None and match(ev.prev_obj)
                    if was and now_matches:
                        yield Event("MODIFIED", ev.obj)
                    elif now_matches:
                        yield Event("ADDED", ev.obj)
                    elif was:
                        yield Event("DELETED", ev.obj)
        finally:
            watcher.close()

    @staticmethod
    def _gone(rv: str) -> GoneError:
        return GoneError(f"too old resource version: {rv}: it has been compacted; list again and "
                         f"watch from the list's resourceVersion")


def _new_uid() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) gives, at a
    third of its cost: it is made on every create."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _copy_status(dst: Message, src: Message) -> None:
    """dst.status = src.status, including its absence: CopyFrom of an empty
    status would mark it present, and the object would differ from the
    stored one (a no-op update would then write a new resourceVersion)."""
    if src.HasField("status"):
        dst.status.CopyFrom(src.status)
    else:
        dst.ClearField("status")


def _node_ports(svc: Message) -> set[tuple[str, int]]:
    if svc.spec.type != "NodePort":
        return set()
    return {(p.protocol or "TCP", p.node_port) for p in svc.spec.ports if p.node_port}


def _keep_service_allocations(old: Message, new: Message) -> None:
    """An update that leaves out the cluster IP or node ports keeps the
    allocated ones, as Kubernetes does (kubectl apply sends neither)."""
    if not new.spec.cluster_ip and old.spec.cluster_ip:
        new.spec.cluster_ip = old.spec.cluster_ip
        if not new.spec.cluster_ips:
            new.spec.cluster_ips.extend(old.spec.cluster_ips)
    if new.spec.type == "NodePort" and old.spec.type == "NodePort":
        by_name = {(p.name, p.protocol or "TCP"): p.node_port for p in old.spec.ports}
        by_port = {(p.port, p.protocol or "TCP"): p.node_port for p in old.spec.ports}
        for p in new.spec.ports:
            if not p.node_port:
                p.node_port = (by_name.get((p.name, p.protocol or "TCP"))
                               or by_port.get((p.port, p.protocol or "TCP")) or 0)


def _set_pod_condition(pod: Message, type_: str, status: str) -> None:
    for cond in pod.status.conditions:
        if cond.type == type_:
            if cond.status != status:
                cond.status = status
                cond.last_transition_time.GetCurrentTime()
            return
    cond = pod.status.conditions.add()
    cond.type = type_
    cond.status = status
    cond.last_transition_time.GetCurrentTime()
    cond.last_transition_time.nanos = 0
