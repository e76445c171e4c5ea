"""What every CLI verb shares: errors as kubectl prints them, finding the
cluster from the client configuration, and naming kinds and objects."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import grpc
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError
from kubeling.config import ConfigError, load_config


class CliError(Exception):
    """A user-facing error: printed as `error: <message>`, exit code 1."""


class ServerErrors(Exception):
    """One or more lines already formatted (`Error from server ...`); exit code 1."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


# gRPC status -> the reason kubectl shows in `Error from server (Reason): ...`.
_REASONS = {
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.ABORTED: "Conflict",
    grpc.StatusCode.INVALID_ARGUMENT: "Invalid",
    grpc.StatusCode.OUT_OF_RANGE: "Expired",
    grpc.StatusCode.PERMISSION_DENIED: "Forbidden",
    grpc.StatusCode.FAILED_PRECONDITION: "BadRequest",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthorized",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "TooManyRequests",
    grpc.StatusCode.INTERNAL: "InternalError",
    grpc.StatusCode.UNIMPLEMENTED: "MethodNotAllowed",
}

_CONNECT_HINT = "is the cluster running? (start one with `kubeling up`)"


def is_connection_error(err: ApiError) -> bool:
    """The API server could not be reached at all (as opposed to answering with an error)."""
    if err.code == grpc.StatusCode.UNAVAILABLE:
        text = err.message.lower()
        return not text.startswith("storage unavailable")
    return err.code == grpc.StatusCode.DEADLINE_EXCEEDED


def format_api_error(err: ApiError, address: str = "", context: str = "") -> str:
    """One line, as kubectl prints it: `Error from server (NotFound): pods "x" not found`.

    `context` (e.g. `error when creating "web.yaml" (document 2)`) goes
    before the server's message. Connection failures become `error: ...`.
    """
    where = f" at {address}" if address else ""
    if err.code == grpc.StatusCode.UNAVAILABLE and is_connection_error(err):
        return f"error: cannot connect to the API server{where}: {_short(err.message)}; {_CONNECT_HINT}"
    if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"error: the API server{where} did not answer in time; {_CONNECT_HINT}"
    reason = _REASONS.get(err.code, "ServiceUnavailable" if err.code == grpc.StatusCode.UNAVAILABLE
                          else err.code.name.title().replace("_", ""))
    prefix = f"{context}: " if context else ""
    return f"Error from server ({reason}): {prefix}{err.message}"


def _short(message: str) -> str:
    # gRPC's connection messages are long and repetitive; keep the first clause.
    message = " ".join(message.split())
    if "connection refused" in message.lower():
        return "connection refused"
    return message if len(message) <= 200 else message[:197] + "..."


@contextlib.asynccontextmanager
async def connect(config_path: str | None = None) -> AsyncIterator[ApiClient]:
    """A client for the configured cluster; CliError when none is configured."""
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        raise CliError(str(e)) from None
    try:
        client = ApiClient.from_config(str(cfg.path) if cfg.path else config_path)
    except (ConfigError, OSError) as e:
        raise CliError(str(e)) from None
    try:
        yield client
    finally:
        # Never let closing the channel hide the real outcome (or a Ctrl-C).
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await client.close()


def lookup_kind(name: str) -> kinds.Kind:
    """A Kind from anything kubectl accepts, or CliError naming the bad type."""
    try:
        return kinds.lookup(name)
    except kinds.UnknownKindError:
        raise CliError(f'the server doesn\'t have a resource type "{name}"') from None


def resource_name(kind: kinds.Kind) -> str:
    """`deployments.apps` / `pods`: how kubectl names a resource in messages."""
    return f"{kind.resource}.{kind.group}" if kind.group else kind.resource


def object_name(obj: Message) -> str:
    """`deployment.apps/web`: kubectl's `-o name` form."""
    return f"{kinds.of(obj).qualified}/{obj.metadata.name}"


def namespace_of(kind: kinds.Kind, obj_namespace: str, flag_namespace: str | None) -> str:
    if not kind.namespaced:
        return ""
    return obj_namespace or flag_namespace or "default"


def parse_targets(args: list[str]) -> list[tuple[kinds.Kind, list[str]]]:
    """kubectl's ways of naming objects on the command line:

    `KIND[,KIND2] [NAME...]` or `KIND/NAME [KIND/NAME...]`. Returns
    [(kind, [names])] in order; an empty name list means "all of them".
    """
    if not args:
        raise CliError("you must specify the type of resource; for example: kubeling get pods")
    if any("/" in a for a in args):
        if not all("/" in a for a in args):
            raise CliError("there is no need to specify a resource type as a separate argument "
                           "when passing arguments in resource/name form "
                           "(e.g. 'kubeling get resource/<resource_name>' instead of "
                           "'kubeling get resource resource/<resource_name>')")
        out: list[tuple[kinds.Kind, list[str]]] = []
        for a in args:
            kind_name, _, name = a.partition("/")
            if not kind_name or not name:
                raise CliError(f"arguments in resource/name form must have a single resource and name: {a!r}")
            kind = lookup_kind(kind_name)
            if out and out[-1][0] is kind:
                out[-1][1].append(name)
            else:
                out.append((kind, [name]))
        return out
    kind_names = [k for k in args[0].split(",") if k]
    if not kind_names:
        raise CliError(f"invalid resource type {args[0]!r}")
    names = args[1:]
    expanded: list[kinds.Kind] = []
    for k in kind_names:
        if k.lower() == "all":
            expanded.extend(kinds.lookup(r) for r in ALL_RESOURCES)
        else:
            expanded.append(lookup_kind(k))
    seen: list[kinds.Kind] = []
    for k in expanded:
        if k not in seen:
            seen.append(k)
    if names and len(seen) > 1:
        # kubectl allows it (`get deploy,svc web`); every kind is asked for every name.
        pass
    return [(k, list(names)) for k in seen]


# What `kubeling get all` shows, in kubectl's order.
ALL_RESOURCES = ("pods", "services", "deployments", "replicasets")
