"""Logs and exec, relayed to the node a pod runs on (Kubernetes' pods/log and
pods/exec, which its API server proxies to the kubelet).

The pod names its node (spec.nodeName); the Node names its address (the
InternalIP in status.addresses, else ExternalIP) and the port of its node
agent's `kubeling.node.v1.Node` service
(status.daemonEndpoints.kubeletEndpoint.Port). The relay checks the request
against the pod (which container), calls the node with the pod's uid so a
re-created pod of the same name is never mixed up, and passes the answer
back. Errors are ApiErrors, turned into status codes by the servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import AsyncIterator

import grpc
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.api.v1 import api_pb2
from kubeling.node.v1 import node_pb2, node_pb2_grpc

from .errors import ApiError, FailedPreconditionError, InvalidError, UnavailableError
from .registry import Registry

CONNECT_TIMEOUT = 10.0  # seconds to reach a node before answering UNAVAILABLE
MAX_CHANNELS = 64  # node channels kept open; the least recently used one closes first
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
_ADDRESS_PREFERENCE = ("InternalIP", "ExternalIP")


class NodeCallError(ApiError):
    """A failure the node reported, passed on with the node's status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class NodeProxy:
    """Finds the node of a pod and relays Logs and Exec to it."""

    def __init__(self, registry: Registry, *, connect_timeout: float = CONNECT_TIMEOUT):
        self.registry = registry
        self.connect_timeout = connect_timeout
        self._channels: OrderedDict[str, grpc.aio.Channel] = OrderedDict()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()

    # -- the two calls --

    async def logs(self, request: api_pb2.LogsRequest) -> AsyncIterator[bytes]:
        """The container's log as it comes from the node."""
        if request.HasField("tail_lines") and request.tail_lines < 0:
            raise InvalidError(f"tail_lines: Invalid value: {request.tail_lines}: must be 0 or more")
        pod, container = await self._pod_and_container(request.namespace, request.name, request.container)
        node_request = node_pb2.LogsRequest(container=_ref(pod, container), follow=request.follow,
                                            previous=request.previous, timestamps=request.timestamps)
        if request.HasField("tail_lines"):
            node_request.tail_lines = request.tail_lines
        stub, address = await self._node(pod)
        call = stub.Logs(node_request)
        try:
            while True:
                try:
                    chunk = await call.read()
                except grpc.aio.AioRpcError as e:
                    raise _node_error(e, pod, container, address, request.previous) from None
                if chunk is grpc.aio.EOF:
                    return
                yield chunk.data
        finally:
            call.cancel()  # the client went away, or the stream ended: nothing to wait for

    async def exec(self, request: api_pb2.ExecRequest) -> api_pb2.ExecResponse:
        """Run the command on the node and return what it did."""
        if not request.command:
            raise InvalidError("command: Required value: the command to run")
        if request.timeout_seconds < 0:
            raise InvalidError(f"timeout_seconds: Invalid value: {request.timeout_seconds}: must be 0 or more")
        pod, container = await self._pod_and_container(request.namespace, request.name, request.container)
        stub, address = await self._node(pod)
        try:
            resp = await stub.Exec(node_pb2.ExecRequest(
                container=_ref(pod, container), command=list(request.command),
                timeout_seconds=request.timeout_seconds))
        except grpc.aio.AioRpcError as e:
            raise _node_error(e, pod, container, address) from None
        return api_pb2.ExecResponse(stdout=resp.stdout, stderr=resp.stderr, exit_code=resp.exit_code)

    # -- finding the pod, its container and its node --

    async def _pod_and_container(self, namespace: str, name: str, container: str) -> tuple[Message, str]:
        if not name:
            raise InvalidError("name: Required value: the pod's name")
        pod = await self.registry.get(kinds.by_resource("pods"), namespace or "default", name)
        names = [c.name for c in pod.spec.containers]
        others = [c.name for c in pod.spec.init_containers]
        if not container:
            if len(names) == 1:
                return pod, names[0]
            default = pod.metadata.annotations.get(DEFAULT_CONTAINER_ANNOTATION, "")
            if default in names + others:
                return pod, default
            raise InvalidError(f"a container name must be specified for pod {name}, "
                               f"choose one of: [{' '.join(names)}]"
                               + (f" or one of the init containers: [{' '.join(others)}]" if others else ""))
        if container not in names and container not in others:
            raise InvalidError(f'container {container} is not valid for pod {name}')
        if not pod.spec.node_name:
            raise FailedPreconditionError(f"pod {name} does not have a host assigned")
        return pod, container

    async def _node(self, pod: Message) -> tuple[node_pb2_grpc.NodeStub, str]:
        node_name = pod.spec.node_name
        if not node_name:
            raise FailedPreconditionError(f"pod {pod.metadata.name} does not have a host assigned")
        node = await self.registry.get(kinds.by_resource("nodes"), "", node_name)
        addresses = {a.type: a.address for a in reversed(node.status.addresses)}
        host = next((addresses[t] for t in _ADDRESS_PREFERENCE if addresses.get(t)), "")
        if not host:
            raise UnavailableError(f'node "{node_name}" has no InternalIP or ExternalIP address '
                                   f'in status.addresses')
        port = node.status.daemon_endpoints.kubelet_endpoint.port
        if not port:
            raise UnavailableError(f'node "{node_name}" does not publish its node agent\'s port '
                                   f'(status.daemonEndpoints.kubeletEndpoint.Port)')
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        channel = self._channel(address)
        if channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            # It failed before (the node restarted?): start afresh rather than wait out a backoff.
            await self._drop(address)
            channel = self._channel(address)
        try:
            await asyncio.wait_for(_connected(channel), self.connect_timeout)
        except asyncio.TimeoutError:
            raise UnavailableError(f'node "{node_name}": cannot reach its node agent at {address} '
                                   f'within {self.connect_timeout:g}s') from None
        except ConnectionError:
            raise UnavailableError(f'node "{node_name}": cannot connect to its node agent at '
                                   f'{address} (connection refused or reset)') from None
        return node_pb2_grpc.NodeStub(channel), address

    async def _drop(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.pop(address, None)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Fail fast after a node went away, rather than backing off for minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000)])
        self._channels[address] = channel
        while len(self._channels) > MAX_CHANNELS:
            _, old = self._channels.popitem(last=False)
            asyncio.get_running_loop().create_task(old.close(grace=30))
        return channel


async def _connected(channel: grpc.aio.Channel) -> None:
    """Return once the channel is connected; ConnectionError as soon as an
    attempt fails (a refused connection is an answer: no need to wait)."""
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError(state.name)
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _ref(pod: Message, container: str) -> node_pb2.ContainerRef:
    return node_pb2.ContainerRef(pod_namespace=pod.metadata.namespace, pod_name=pod.metadata.name,
                                 pod_uid=pod.metadata.uid, container=container)


def _node_error(e: grpc.aio.AioRpcError, pod: Message, container: str, address: str,
                previous: bool = False) -> ApiError:
    """The node's failure as the user should see it."""
    code, details = e.code(), e.details() or e.code().name
    if code == grpc.StatusCode.NOT_FOUND and not previous:
        # Not created yet: say why, from the status the node agent reported.
        for status in list(pod.status.container_statuses) + list(pod.status.init_container_statuses):
            if status.name == container and status.state.HasField("waiting") and status.restart_count == 0:
                reason = status.state.waiting.reason or "ContainerCreating"
                return FailedPreconditionError(f'container "{container}" in pod "{pod.metadata.name}" '
                                               f'is waiting to start: {reason}')
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f'node "{pod.spec.node_name}" ({address}): {details}')
    return NodeCallError(code, details)
