"""Errors the API server's logic raises, each mapped to one gRPC status code.

The logic raises these; the gRPC layer (servicer.py) turns them into status
codes in one place. Messages follow Kubernetes' wording so users recognise
them: `deployments.apps "web" not found`.
"""

from __future__ import annotations

import grpc

from kubeling.kinds import Kind


class ApiError(Exception):
    """Base class: an error a client caused or must react to."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidError(ApiError):
    """The object or request is invalid; the message names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ConflictError(ApiError):
    """A resourceVersion or uid precondition failed."""

    code = grpc.StatusCode.ABORTED


class FailedPreconditionError(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class GoneError(ApiError):
    """The requested resourceVersion is no longer available; relist."""

    code = grpc.StatusCode.OUT_OF_RANGE


class ForbiddenError(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class FieldError:
    """One problem with one field, rendered as Kubernetes renders it."""

    def __init__(self, path: str, detail: str, value: object = None, kind: str = "Invalid value"):
        self.path = path
        self.detail = detail
        self.value = value
        self.kind = kind

    def __str__(self) -> str:
        if self.kind == "Invalid value":
            return f"{self.path}: Invalid value: {self.value!r}: {self.detail}"
        return f"{self.path}: {self.kind}: {self.detail}" if self.detail else f"{self.path}: {self.kind}"

    @classmethod
    def required(cls, path: str, detail: str = "") -> "FieldError":
        return cls(path, detail, kind="Required value")

    @classmethod
    def forbidden(cls, path: str, detail: str) -> "FieldError":
        return cls(path, detail, kind="Forbidden")

    @classmethod
    def not_supported(cls, path: str, value: object, supported: list[str]) -> "FieldError":
        quoted = ", ".join(f'"{s}"' for s in supported)
        return cls(path, f"{value!r}: supported values: {quoted}", kind="Unsupported value")

    def __repr__(self) -> str:
        return f"FieldError({self})"


def invalid(kind: Kind, name: str, errors: list[FieldError]) -> InvalidError:
    """`Deployment.apps "web" is invalid: [spec.replicas: ..., ...]`"""
    what = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    if len(errors) == 1:
        detail = str(errors[0])
    else:
        detail = "[" + ", ".join(str(e) for e in errors) + "]"
    return InvalidError(f'{what} "{name}" is invalid: {detail}')


def not_found(kind: Kind, name: str) -> NotFoundError:
    return NotFoundError(f'{_resource(kind)} "{name}" not found')


def already_exists(kind: Kind, name: str) -> AlreadyExistsError:
    return AlreadyExistsError(f'{_resource(kind)} "{name}" already exists')


def conflict(kind: Kind, name: str, detail: str = "") -> ConflictError:
    detail = detail or "the object has been modified; please apply your changes to the latest version and try again"
    return ConflictError(f'Operation cannot be fulfilled on {_resource(kind)} "{name}": {detail}')


def _resource(kind: Kind) -> str:
    return f"{kind.resource}.{kind.group}" if kind.group else kind.resource
