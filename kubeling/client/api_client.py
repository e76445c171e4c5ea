"""An asyncio client for the kubeling `Api` gRPC service.

Methods take and return typed messages (`core_pb2.Pod`, `apps_pb2.Deployment`,
...); the `Object` oneof of the wire protocol never shows. Wherever a resource
is named, any name kubectl accepts works ("pods", "po", "Pod",
"deployments.apps"), as does a `kinds.Kind` or a message class.

Every gRPC failure is raised as an `ApiError` subclass (see `errors`):
NotFoundError, AlreadyExistsError, ConflictError, InvalidError, GoneError, ...

Objects returned are fresh messages owned by the caller. A client must be
used from one event loop; `close()` (or `async with`) releases the channel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, NamedTuple, Sequence

import grpc
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.api.v1 import api_pb2, api_pb2_grpc, meta_pb2
from kubeling.client.errors import ApiError, ClientClosedError, GoneError, from_rpc_error
from kubeling.config import load_config

_CHANNEL_OPTIONS = (
    # Large lists (thousands of pods) exceed gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
)


@dataclass
class ObjectList:
    """One page (or, from list_all, every page) of a list."""

    items: list[Message] = field(default_factory=list)
    resource_version: str = ""  # watch from here to follow later changes
    continue_token: str = ""    # non-empty when more pages remain


class WatchEvent(NamedTuple):
    """One change: type is ADDED, MODIFIED, DELETED or BOOKMARK.

    For DELETED, `object` is the object's last state; for BOOKMARK, an empty
    object of the kind with only metadata.resource_version set.
    """

    type: str
    object: Message


class DeleteResult(NamedTuple):
    """The object as deleted (or as it stands while deletion is pending)."""

    object: Message
    pending: bool  # True: still present with deletionTimestamp set


def resolve_kind(resource: Any) -> kinds.Kind:
    """A Kind from a resource name, kind name, short name, Kind or message class."""
    if isinstance(resource, kinds.Kind):
        return resource
    if isinstance(resource, str):
        return kinds.lookup(resource)
    if isinstance(resource, type) and issubclass(resource, Message):
        return kinds.of(resource)
    raise TypeError(f"not a resource: {resource!r}")


def _namespace_for(kind: kinds.Kind, namespace: str) -> str:
    return namespace if kind.namespaced else ""


class WatchStream:
    """An async iterator of WatchEvents over one Watch call.

    Ends when the server closes the stream; raises an ApiError (GoneError when
    the resourceVersion is too old) when it fails. `cancel()` (or leaving an
    `async with` block) ends the call; iteration then stops.
    """

    def __init__(self, call: grpc.aio.UnaryStreamCall, kind: kinds.Kind):
        self._call = call
        self._kind = kind
        self._cancelled = False

    def __aiter__(self) -> "WatchStream":
        return self

    async def __anext__(self) -> WatchEvent:
        if self._cancelled:
            raise StopAsyncIteration
        try:
            ev = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if self._cancelled or (e.code() == grpc.StatusCode.CANCELLED and self._call.cancelled()):
                raise StopAsyncIteration from None
            raise from_rpc_error(e) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancelled and task is not None and not task.cancelling():
                # cancel() from elsewhere ended a pending read: a normal end.
                raise StopAsyncIteration from None
            self.cancel()
            raise
        if ev is grpc.aio.EOF:
            raise StopAsyncIteration
        field_name = ev.object.WhichOneof("kind")
        obj = getattr(ev.object, field_name) if field_name else self._kind.message()
        return WatchEvent(ev.type, obj)

    def cancel(self) -> None:
        """End the watch. Idempotent."""
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> "WatchStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.cancel()


class ApiClient:
    """A connection to one API server.

    `credentials` (grpc.ssl_channel_credentials(...)) switches to TLS; `token`
    is sent as `authorization: Bearer <token>` metadata on every call.
    `timeout` bounds each unary call (watches are unbounded).
    """

    def __init__(self, address: str, *, credentials: grpc.ChannelCredentials | None = None,
                 token: str | None = None, timeout: float | None = 30.0,
                 options: Sequence[tuple[str, Any]] = ()):
        self.address = address
        self.timeout = timeout
        opts = list(_CHANNEL_OPTIONS) + list(options)
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(address, credentials, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=opts)
        self._metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {token}"),) if token else None)
        self._stub = api_pb2_grpc.ApiStub(self._channel)

    @classmethod
    def from_config(cls, path: str | None = None, **kwargs: Any) -> "ApiClient":
        """A client for the cluster in the config file (see kubeling.config).

        Raises kubeling.config.ConfigError when no cluster is configured.
        """
        cfg = load_config(path)
        credentials = None
        if cfg.certificate_authority:
            with open(cfg.certificate_authority, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        return cls(cfg.server, credentials=credentials, token=cfg.token, **kwargs)

    async def close(self) -> None:
        """Close the channel; running watches end. Idempotent."""
        await self._channel.close()

    async def __aenter__(self) -> "ApiClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _unary(self, method, request, timeout: float | None | bool = True):
        """Call `method`; timeout True means the client's default."""
        try:
            return await method(request, metadata=self._metadata,
                                timeout=self.timeout if timeout is True else timeout)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        except grpc.aio.UsageError as e:
            raise ClientClosedError(f"{self.address}: {e}") from None

    # --- verbs ---------------------------------------------------------------

    async def create(self, obj: Message, *, dry_run: bool = False) -> Message:
        """Create `obj`; returns it as stored (uid, resourceVersion, defaults set).

        Errors: InvalidError, AlreadyExistsError, NotFoundError (namespace missing).
        """
        req = api_pb2.CreateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        return kinds.unwrap(await self._unary(self._stub.Create, req))

    async def get(self, resource: Any, name: str, namespace: str = "default") -> Message:
        """Read one object. Errors: NotFoundError."""
        kind = resolve_kind(resource)
        req = api_pb2.GetRequest(resource=kind.resource, name=name,
                                 namespace=_namespace_for(kind, namespace))
        return kinds.unwrap(await self._unary(self._stub.Get, req))

    async def list(self, resource: Any, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ObjectList:
        """One page of objects ("" namespace: all namespaces).

        Errors: InvalidError (bad selector), GoneError (expired continue token).
        """
        kind = resolve_kind(resource)
        req = api_pb2.ListRequest(
            resource=kind.resource, namespace=_namespace_for(kind, namespace),
            label_selector=label_selector, field_selector=field_selector, limit=limit,
            continue_token=continue_token, resource_version=resource_version)
        resp = await self._unary(self._stub.List, req)
        return ObjectList([kinds.unwrap(o) for o in resp.items],
                          resp.resource_version, resp.continue_token)

    async def list_all(self, resource: Any, namespace: str = "", label_selector: str = "",
                       field_selector: str = "", page_size: int = 500,
                       resource_version: str = "") -> ObjectList:
        """Every matching object, fetched `page_size` at a time.

        The result's resource_version is the first page's (the version the
        whole list is consistent with). When a continue token expires midway
        the list starts over in one unpaginated call, as client-go's pager does.
        """
        first = await self.list(resource, namespace, label_selector, field_selector,
                                limit=page_size, resource_version=resource_version)
        result = ObjectList(list(first.items), first.resource_version)
        token = first.continue_token
        while token:
            try:
                page = await self.list(resource, namespace, label_selector, field_selector,
                                       limit=page_size, continue_token=token)
            except GoneError:
                full = await self.list(resource, namespace, label_selector, field_selector)
                return ObjectList(list(full.items), full.resource_version)
            result.items.extend(page.items)
            token = page.continue_token
        return result

    async def update(self, obj: Message, *, dry_run: bool = False) -> Message:
        """Replace metadata and spec (status is kept). With
        metadata.resource_version set, fails with ConflictError unless it is
        still current. Errors: NotFoundError, InvalidError, ConflictError.
        """
        req = api_pb2.UpdateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        return kinds.unwrap(await self._unary(self._stub.Update, req))

    async def update_status(self, obj: Message, *, dry_run: bool = False) -> Message:
        """Replace status only (metadata and spec are kept); same errors as update."""
        req = api_pb2.UpdateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        return kinds.unwrap(await self._unary(self._stub.UpdateStatus, req))

    async def delete(self, resource: Any, name: str, namespace: str = "default",
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     uid: str = "", resource_version: str = "") -> DeleteResult:
        """Delete one object; returns (object, pending).

        pending is True while finalizers or a grace period keep the object.
        Errors: NotFoundError (also for a second delete), ConflictError
        (uid / resource_version precondition failed).
        """
        kind = resolve_kind(resource)
        req = api_pb2.DeleteRequest(
            resource=kind.resource, name=name, namespace=_namespace_for(kind, namespace),
            propagation_policy=propagation_policy,
            preconditions=api_pb2.Preconditions(uid=uid, resource_version=resource_version))
        if grace_period_seconds is not None:
            req.grace_period_seconds = grace_period_seconds
        resp = await self._unary(self._stub.Delete, req)
        field_name = resp.object.WhichOneof("kind")
        obj = getattr(resp.object, field_name) if field_name else kind.message()
        return DeleteResult(obj, resp.pending)

    def watch(self, resource: Any, namespace: str = "", label_selector: str = "",
              field_selector: str = "", resource_version: str = "",
              allow_bookmarks: bool = True, bookmark_interval_seconds: int = 0) -> WatchStream:
        """Follow changes from `resource_version` ("" = from now).

        Use as `async for event in client.watch("pods", ...)`. Errors surface
        on iteration: GoneError when resource_version is too old (relist).
        """
        kind = resolve_kind(resource)
        req = api_pb2.WatchRequest(
            resource=kind.resource, namespace=_namespace_for(kind, namespace),
            label_selector=label_selector, field_selector=field_selector,
            resource_version=resource_version, allow_bookmarks=allow_bookmarks,
            bookmark_interval_seconds=bookmark_interval_seconds)
        try:
            call = self._stub.Watch(req, metadata=self._metadata)
        except grpc.aio.UsageError as e:
            raise ClientClosedError(f"{self.address}: {e}") from None
        return WatchStream(call, kind)

    async def bind(self, namespace: str, pod_name: str, node_name: str, uid: str = "",
                   resource_version: str = "") -> Message:
        """Assign a pod to a node; returns the bound Pod.

        Errors: NotFoundError, FailedPreconditionError (already bound),
        ConflictError (uid / resource_version precondition failed).
        """
        binding = api_pb2.Binding(
            metadata=meta_pb2.ObjectMeta(name=pod_name, namespace=namespace or "default",
                                         uid=uid, resource_version=resource_version),
            target=meta_pb2.ObjectReference(kind="Node", name=node_name))
        return await self._unary(self._stub.Bind, api_pb2.BindRequest(binding=binding))

    async def logs(self, request: api_pb2.LogsRequest) -> AsyncIterator[bytes]:
        """A container's log, relayed from its node: chunks of bytes until the
        log ends (or, with follow, until the container stops or the caller
        stops iterating). Errors: NotFoundError, InvalidError (which
        container), UnavailableError (the node cannot be reached)."""
        call = self._stub.Logs(request, metadata=self._metadata)
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def exec(self, request: api_pb2.ExecRequest) -> api_pb2.ExecResponse:
        """Run a command in a container, relayed to its node; returns its
        stdout, stderr and exit code. Like kubectl exec, no time limit of ours:
        the command runs as long as it runs."""
        return await self._unary(self._stub.Exec, request, timeout=None)


__all__ = ["ApiClient", "ApiError", "DeleteResult", "ObjectList", "WatchEvent",
           "WatchStream", "resolve_kind"]
