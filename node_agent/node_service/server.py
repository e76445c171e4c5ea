"""The node agent's `kubeling.node.v1.Node` service: logs and exec.

It needs nothing from the node agent but the CRI runtime's socket: a
container is found with CRI ListContainers, by the labels every node agent
(ours, and Kubernetes' kubelet) puts on its containers, its log is read from
the `log_path` CRI ContainerStatus reports (the CRI log format, see
`cri_log`), and commands run through CRI ExecSync. So the node agent starts
it with one call and publishes its port:

    running = await start_node_service("0.0.0.0:10250", "unix:///run/kubeling/runtime.sock")
    node.status.daemon_endpoints.kubelet_endpoint.port = running.port
    ...
    await running.stop()

Instances of a container: the node agent creates a new container (attempt
N+1) for each restart, and keeps the one that exited last; the newest is the
"current" instance, the one before it the "previous" one (`--previous`).

Errors are raised as `NodeServiceError` with a gRPC code and mapped to a
status in one place (`_handle`); failures of the runtime keep their code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import AsyncIterator

import grpc

from kubeling.cri.v1 import api_pb2 as cri
from kubeling.cri.v1 import api_pb2_grpc as cri_grpc
from kubeling.node.v1 import node_pb2, node_pb2_grpc

from .cri_log import LogDecoder, tail_offset

log = logging.getLogger(__name__)

# The CRI labels a node agent sets on every container it creates.
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"

READ_BLOCK = 64 * 1024
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # exec output comes back in one message
EXEC_GRACE_SECONDS = 10  # on top of an exec's own timeout, for the runtime to answer


class NodeServiceError(Exception):
    """A request this node cannot serve; `code` is its gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _describe(ref: node_pb2.ContainerRef) -> str:
    return f'container "{ref.container}" in pod "{ref.pod_namespace}/{ref.pod_name}"'


def _validate(ref: node_pb2.ContainerRef) -> None:
    for field in ("pod_namespace", "pod_name", "container"):
        if not getattr(ref, field):
            raise NodeServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"container.{field}: Required value")


def _handle(method):
    """Map NodeServiceError and runtime failures to a status, for unary methods."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except NodeServiceError as e:
            await context.abort(e.code, e.message)
        except grpc.aio.AioRpcError as e:
            await context.abort(*_runtime_status(e))
    return wrapper


def _runtime_status(e: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    if e.code() == grpc.StatusCode.UNAVAILABLE:
        return e.code(), f"container runtime unavailable: {e.details()}"
    return e.code(), e.details() or e.code().name


class NodeService(node_pb2_grpc.NodeServicer):
    """Serves Logs and Exec from the CRI runtime at `runtime_endpoint`
    (`unix:///path/runtime.sock`). `poll_interval` is how often a followed
    log is checked for new lines, `status_interval` how often the followed
    container is checked for having exited."""

    def __init__(self, runtime_endpoint: str, *, poll_interval: float = 0.1,
                 status_interval: float = 0.5):
        self.runtime_endpoint = runtime_endpoint
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self._channel = grpc.aio.insecure_channel(runtime_endpoint, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self._runtime = cri_grpc.RuntimeServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    # -- finding containers --

    async def instances(self, ref: node_pb2.ContainerRef) -> list[cri.Container]:
        """The instances of a container on this node, newest first."""
        labels = {POD_NAMESPACE_LABEL: ref.pod_namespace, POD_NAME_LABEL: ref.pod_name,
                  CONTAINER_NAME_LABEL: ref.container}
        if ref.pod_uid:
            labels[POD_UID_LABEL] = ref.pod_uid
        resp = await self._runtime.ListContainers(
            cri.ListContainersRequest(filter=cri.ContainerFilter(label_selector=labels)))
        return sorted(resp.containers, key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)

    async def find(self, ref: node_pb2.ContainerRef, previous: bool = False) -> cri.Container:
        found = await self.instances(ref)
        if previous:
            if len(found) < 2:
                raise NodeServiceError(grpc.StatusCode.NOT_FOUND,
                                       f"previous terminated {_describe(ref)} not found")
            return found[1]
        if not found:
            raise NodeServiceError(grpc.StatusCode.NOT_FOUND,
                                   f"{_describe(ref)} has not been created on this node")
        return found[0]

    async def _status(self, container_id: str) -> cri.ContainerStatus | None:
        """The container's status, or None once it is removed."""
        try:
            resp = await self._runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return resp.status

    # -- Logs --

    async def Logs(self, request: node_pb2.LogsRequest, context) -> AsyncIterator[node_pb2.LogChunk]:
        try:
            _validate(request.container)
            tail = request.tail_lines if request.HasField("tail_lines") else None
            if tail is not None and tail < 0:
                raise NodeServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"tail_lines: Invalid value: {tail}: must be 0 or more")
            container = await self.find(request.container, request.previous)
            status = await self._status(container.id)
            if status is None:
                raise NodeServiceError(grpc.StatusCode.NOT_FOUND,
                                       f"{_describe(request.container)} was removed")
            follow = request.follow and status.state != cri.CONTAINER_EXITED
            reader = self.read_log(container.id, status.log_path, follow=follow, tail=tail,
                                   timestamps=request.timestamps,
                                   exited=status.state == cri.CONTAINER_EXITED)
            async with contextlib.aclosing(reader):  # a caller that leaves closes the file at once
                async for data in reader:
                    yield node_pb2.LogChunk(data=data)
        except NodeServiceError as e:
            await context.abort(e.code, e.message)
        except grpc.aio.AioRpcError as e:
            await context.abort(*_runtime_status(e))

    async def read_log(self, container_id: str, path: str, *, follow: bool, tail: int | None,
                       timestamps: bool, exited: bool) -> AsyncIterator[bytes]:
        """The container's output from its log file at `path`: from `tail`
        lines before the end (None: the start), then, with `follow`, what is
        written until the container exits or is removed."""
        f = await self._open_log(container_id, path, follow)
        if f is None:
            return
        try:
            f.seek(tail_offset(f, tail) if tail is not None else 0)
            decoder = LogDecoder(timestamps)
            unfinished = b""  # the start of a record whose newline is not written yet
            loop = asyncio.get_running_loop()
            next_status = loop.time() + self.status_interval
            ending = False  # the container is gone: read what is left, then stop
            while True:
                data = f.read(READ_BLOCK)
                if data:
                    records = (unfinished + data).split(b"\n")
                    unfinished = records.pop()
                    out = b"".join(decoder.feed(r) for r in records)
                    if out:
                        yield out
                    continue
                if not follow or ending:
                    break
                if loop.time() >= next_status:
                    status = await self._status(container_id)
                    if status is None or status.state == cri.CONTAINER_EXITED:
                        exited = ending = True
                        continue
                    next_status = loop.time() + self.status_interval
                reopened = _reopen_if_rotated(f, path)
                if reopened is not None:
                    f.close()
                    f, unfinished = reopened, b""
                    continue
                await asyncio.sleep(self.poll_interval)
            if exited:
                # No more records will come: give out a last line without its end.
                rest = decoder.flush()
                if unfinished:
                    rest += decoder.feed(unfinished)
                    rest += decoder.flush()
                if rest:
                    yield rest
        finally:
            f.close()

    async def _open_log(self, container_id: str, path: str, follow: bool):
        """The log file opened for reading; None when it does not exist and
        will not (the container never started, or is gone). A followed
        container that has not written its log yet is waited for."""
        while True:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                if not follow:
                    return None
            status = await self._status(container_id)
            if status is None or status.state == cri.CONTAINER_EXITED:
                return None
            await asyncio.sleep(self.poll_interval)

    # -- Exec --

    @_handle
    async def Exec(self, request: node_pb2.ExecRequest, context) -> node_pb2.ExecResponse:
        _validate(request.container)
        if not request.command:
            raise NodeServiceError(grpc.StatusCode.INVALID_ARGUMENT, "command: Required value")
        if request.timeout_seconds < 0:
            raise NodeServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"timeout_seconds: Invalid value: {request.timeout_seconds}: "
                                   "must be 0 or more")
        container = await self.find(request.container)
        if container.state != cri.CONTAINER_RUNNING:
            raise NodeServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"{_describe(request.container)} is not running")
        deadline = request.timeout_seconds + EXEC_GRACE_SECONDS if request.timeout_seconds else None
        resp = await self._runtime.ExecSync(
            cri.ExecSyncRequest(container_id=container.id, cmd=list(request.command),
                                timeout=request.timeout_seconds), timeout=deadline)
        return node_pb2.ExecResponse(stdout=resp.stdout, stderr=resp.stderr, exit_code=resp.exit_code)


def _reopen_if_rotated(f, path: str):
    """The file now at `path` when the log was rotated (replaced or
    truncated) since `f` was opened, after `f` was read to its end; else None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    current = os.fstat(f.fileno())
    if (st.st_ino, st.st_dev) != (current.st_ino, current.st_dev) or st.st_size < f.tell():
        with contextlib.suppress(FileNotFoundError):
            return open(path, "rb")
    return None


@dataclass
class RunningNodeService:
    """A started Node service: its gRPC server and the port it listens on."""

    server: grpc.aio.Server
    service: NodeService
    port: int

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving (open log streams end) and close the runtime channel."""
        await self.server.stop(grace)
        await self.service.close()


async def start_node_service(listen: str, runtime_endpoint: str, **options) -> RunningNodeService:
    """Start the Node service on `listen` (`host:port`; port 0 picks a free
    one) against the CRI runtime at `runtime_endpoint` (`unix:///path`).

    The caller publishes `.port` in its Node's
    status.daemonEndpoints.kubeletEndpoint.Port, next to an InternalIP
    address the API server can reach, and calls `await .stop()` on exit.
    Raises OSError when the address cannot be bound. `options` go to
    NodeService (poll_interval, status_interval).
    """
    service = NodeService(runtime_endpoint, **options)
    server = grpc.aio.server(options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.so_reuseport", 0)])
    node_pb2_grpc.add_NodeServicer_to_server(service, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as e:
        await service.close()
        raise OSError(f"node service: cannot listen on {listen}: {e}") from None
    if not port:
        await service.close()
        raise OSError(f"node service: cannot listen on {listen}")
    await server.start()
    log.info("node service listening on %s (port %d), runtime %s", listen, port, runtime_endpoint)
    return RunningNodeService(server, service, port)
