"""The thin gRPC layer of the API server: unwraps requests, calls the
Registry, wraps replies, and maps every error to a status code in one place."""

from __future__ import annotations

import contextlib
import functools
import logging

import grpc

from kubeling import kinds
from kubeling.api.v1 import api_pb2, api_pb2_grpc

from .errors import ApiError, InvalidError
from .node_proxy import NodeProxy
from .registry import DEFAULT_BOOKMARK_SECONDS, Registry
from .storage import StorageUnavailableError

log = logging.getLogger(__name__)


def _kind(resource: str) -> kinds.Kind:
    if not resource:
        raise InvalidError("resource: Required value: a plural resource name such as \"pods\"")
    try:
        return kinds.by_resource(resource)
    except kinds.UnknownKindError as e:
        raise InvalidError(str(e)) from None


def _object(wrapped: api_pb2.Object):
    try:
        return kinds.unwrap(wrapped)
    except ValueError:
        raise InvalidError("object: Required value: set exactly one kind in the Object oneof") from None


async def _abort(context: grpc.aio.ServicerContext, err: Exception) -> None:
    if isinstance(err, ApiError):
        await context.abort(err.code, err.message)
    if isinstance(err, StorageUnavailableError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable: {err}")
    log.exception("internal error", exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")


def _unary(method):
    """Run a unary handler, turning any exception into a gRPC status."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except (ApiError, StorageUnavailableError, Exception) as err:  # noqa: B014 - one mapping for all
            if isinstance(err, grpc.aio.AbortError):
                raise
            await _abort(context, err)
    return wrapper


class ApiServicer(api_pb2_grpc.ApiServicer):
    def __init__(self, registry: Registry, node_proxy: NodeProxy | None = None):
        self.registry = registry
        self.node_proxy = node_proxy or NodeProxy(registry)

    @_unary
    async def Create(self, request, context):
        obj = await self.registry.create(_object(request.object), dry_run=request.dry_run)
        return kinds.wrap(obj)

    @_unary
    async def Get(self, request, context):
        obj = await self.registry.get(_kind(request.resource), request.namespace, request.name)
        return kinds.wrap(obj)

    @_unary
    async def List(self, request, context):
        result = await self.registry.list(
            _kind(request.resource), request.namespace, request.label_selector,
            request.field_selector, request.limit, request.continue_token, request.resource_version)
        return api_pb2.ListResponse(items=[kinds.wrap(o) for o in result.items],
                                    resource_version=result.resource_version,
                                    continue_token=result.continue_token)

    @_unary
    async def Update(self, request, context):
        return kinds.wrap(await self.registry.update(_object(request.object), dry_run=request.dry_run))

    @_unary
    async def UpdateStatus(self, request, context):
        return kinds.wrap(await self.registry.update_status(_object(request.object), dry_run=request.dry_run))

    @_unary
    async def Delete(self, request, context):
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        obj, pending = await self.registry.delete(
            _kind(request.resource), request.namespace, request.name,
            grace_period_seconds=grace, propagation_policy=request.propagation_policy,
            uid=request.preconditions.uid, resource_version=request.preconditions.resource_version)
        return api_pb2.DeleteResponse(object=kinds.wrap(obj), pending=pending)

    @_unary
    async def Bind(self, request, context):
        b = request.binding
        if b.target.kind and b.target.kind != "Node":
            raise InvalidError(f'target.kind: Unsupported value: "{b.target.kind}": supported values: "Node"')
        return await self.registry.bind(b.metadata.namespace, b.metadata.name, b.target.name,
                                        uid=b.metadata.uid, resource_version=b.metadata.resource_version)

    async def Watch(self, request, context):
        try:
            kind = _kind(request.resource)
            interval = request.bookmark_interval_seconds or DEFAULT_BOOKMARK_SECONDS
            async for ev in self.registry.watch(
                    kind, request.namespace, request.label_selector, request.field_selector,
                    request.resource_version, request.allow_bookmarks, interval):
                yield api_pb2.WatchEvent(type=ev.type, object=kinds.wrap(ev.object))
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # noqa: BLE001 - mapped to a status
            await _abort(context, err)

    async def Logs(self, request, context):
        try:
            # aclosing: a client that goes away ends the node's stream at once.
            async with contextlib.aclosing(self.node_proxy.logs(request)) as chunks:
                async for data in chunks:
                    yield api_pb2.LogChunk(data=data)
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # noqa: BLE001 - mapped to a status
            await _abort(context, err)

    @_unary
    async def Exec(self, request, context):
        return await self.node_proxy.exec(request)
