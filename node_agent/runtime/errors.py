"""Errors of the runtime's logic layer; the gRPC layer maps each to one status code."""

from __future__ import annotations


class RuntimeServiceError(Exception):
    """Base class; the message is what the client sees."""


class NotFound(RuntimeServiceError):
    """An unknown sandbox, container or image (NOT_FOUND)."""


class InvalidArgument(RuntimeServiceError):
    """Bad input; the message names the field (INVALID_ARGUMENT)."""


class FailedPrecondition(RuntimeServiceError):
    """The object's state forbids the call (FAILED_PRECONDITION)."""


class AlreadyExists(RuntimeServiceError):
    """A name that is already taken (ALREADY_EXISTS)."""


class DeadlineExceeded(RuntimeServiceError):
    """An exec or stop that outlived its timeout (DEADLINE_EXCEEDED)."""


class Unavailable(RuntimeServiceError):
    """A registry that cannot be reached (UNAVAILABLE)."""


class Internal(RuntimeServiceError):
    """runc, conmon, skopeo or the kernel failed (INTERNAL)."""
