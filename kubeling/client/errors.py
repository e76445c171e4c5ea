"""Typed errors for API calls, one class per gRPC status code the API returns.

Every `grpc.aio.AioRpcError` raised by a call through `ApiClient` is turned
into an `ApiError` subclass by `from_rpc_error`, so callers write
`except NotFoundError:` instead of comparing status codes. `str(err)` is the
server's message (which names the object and field); `err.code` is the
`grpc.StatusCode`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, TypeVar

import grpc

log = logging.getLogger(__name__)
T = TypeVar("T")


class ApiError(Exception):
    """A failed API call. `.code` is a grpc.StatusCode, `.message` the server's text."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class NotFoundError(ApiError):
    """NOT_FOUND: the object (or its namespace) does not exist."""
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ApiError):
    """ALREADY_EXISTS: create of a name that is taken."""
    code = grpc.StatusCode.ALREADY_EXISTS


class ConflictError(ApiError):
    """ABORTED: a resourceVersion or uid precondition failed; re-read and retry."""
    code = grpc.StatusCode.ABORTED


class InvalidError(ApiError):
    """INVALID_ARGUMENT: the object or request is invalid; the message names the field."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class GoneError(ApiError):
    """OUT_OF_RANGE: the resourceVersion or continue token was compacted; relist."""
    code = grpc.StatusCode.OUT_OF_RANGE


class ForbiddenError(ApiError):
    """PERMISSION_DENIED: the caller may not do this, or the namespace is terminating."""
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPreconditionError(ApiError):
    """FAILED_PRECONDITION: the object's state forbids the call (e.g. pod already bound)."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(ApiError):
    """UNAUTHENTICATED: no or bad credentials."""
    code = grpc.StatusCode.UNAUTHENTICATED


class UnavailableError(ApiError):
    """UNAVAILABLE: the API server or etcd cannot be reached; retry later."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ApiError):
    """DEADLINE_EXCEEDED: the call did not finish in time."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ClientClosedError(ApiError):
    """The ApiClient was closed; the call was not sent."""
    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls for cls in (
        NotFoundError, AlreadyExistsError, ConflictError, InvalidError, GoneError,
        ForbiddenError, FailedPreconditionError, UnauthenticatedError,
        UnavailableError, DeadlineExceededError)
}


def from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> ApiError:
    """The typed ApiError for a gRPC error (ApiError itself for other codes)."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else None
    message = details or (code.name if code else "unknown error")
    cls = _BY_CODE.get(code, ApiError)
    return cls(message, code)


async def retry_on_conflict(fn: Callable[[], Awaitable[T]], attempts: int = 5,
                            delay: float = 0.01, jitter: float = 0.1) -> T:
    """Run `fn` (a read-modify-write) again while it raises ConflictError.

    Like client-go's RetryOnConflict with DefaultRetry: up to `attempts` tries,
    `delay` seconds (plus up to `jitter` of it) apart. `fn` must re-read the
    object on every call, or it will conflict forever. The last ConflictError
    is re-raised; any other error is raised at once.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except ConflictError:
            if attempt == attempts:
                raise
            log.debug("conflict, retrying (%d/%d)", attempt, attempts)
            await asyncio.sleep(delay * (1 + random.random() * jitter))
    raise AssertionError("unreachable")
