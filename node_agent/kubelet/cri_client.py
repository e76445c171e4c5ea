"""The node agent's side of CRI: an asyncio client for any `runtime.v1` runtime.

The node agent talks to its container runtime only through this client, over
the unix socket named by `--container-runtime-endpoint`, so kubeling's own
runtime and any other CRI runtime (containerd, CRI-O) are interchangeable.

Every method is one RPC. gRPC failures are raised as `CriError` subclasses
(`CriNotFound`, `CriUnavailable`, ...), so callers write `except CriNotFound:`.
Every call has a deadline; `stop_container` adds the grace period to it.
"""

from __future__ import annotations

from typing import Iterable

import grpc

from kubeling.cri.v1 import api_pb2, api_pb2_grpc

CRI_VERSION = "v1"


class CriError(Exception):
    """A failed CRI call; `.code` is the grpc.StatusCode, str() the runtime's message."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, method: str, message: str, code: grpc.StatusCode | None = None):
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message
        if code is not None:
            self.code = code


class CriNotFound(CriError):
    code = grpc.StatusCode.NOT_FOUND


class CriUnavailable(CriError):
    """The runtime cannot be reached (not started yet, restarting)."""
    code = grpc.StatusCode.UNAVAILABLE


class CriDeadlineExceeded(CriError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {c.code: c for c in (CriNotFound, CriUnavailable, CriDeadlineExceeded)}


def endpoint_target(endpoint: str) -> str:
    """A gRPC target for `unix:///path`, `unix:path` or a bare `/path`."""
    if endpoint.startswith("unix:"):
        return endpoint
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    return endpoint


class RuntimeClient:
    """RuntimeService and ImageService of one runtime endpoint."""

    def __init__(self, endpoint: str, timeout: float = 30.0, pull_timeout: float = 600.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self._channel = grpc.aio.insecure_channel(
            endpoint_target(endpoint),
            options=[("grpc.max_receive_message_length", 64 << 20)])
        self._rt = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._img = api_pb2_grpc.ImageServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, stub_method, request, timeout: float | None = None):
        try:
            return await stub_method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            cls = _BY_CODE.get(e.code(), CriError)
            raise cls(method, e.details() or e.code().name, e.code()) from None

    # ---- runtime ---------------------------------------------------------------------

    async def version(self) -> api_pb2.VersionResponse:
        return await self._call("Version", self._rt.Version, api_pb2.VersionRequest(version=CRI_VERSION))

    async def status(self) -> api_pb2.StatusResponse:
        return await self._call("Status", self._rt.Status, api_pb2.StatusRequest())

    async def run_pod_sandbox(self, config: api_pb2.PodSandboxConfig) -> str:
        resp = await self._call("RunPodSandbox", self._rt.RunPodSandbox,
                                api_pb2.RunPodSandboxRequest(config=config), timeout=120)
        return resp.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call("StopPodSandbox", self._rt.StopPodSandbox,
                         api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call("RemovePodSandbox", self._rt.RemovePodSandbox,
                         api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    async def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> api_pb2.PodSandboxStatusResponse:
        return await self._call("PodSandboxStatus", self._rt.PodSandboxStatus,
                                api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose))

    async def list_pod_sandbox(self, labels: dict[str, str] | None = None) -> list[api_pb2.PodSandbox]:
        req = api_pb2.ListPodSandboxRequest()
        if labels:
            req.filter.label_selector.update(labels)
        return list((await self._call("ListPodSandbox", self._rt.ListPodSandbox, req)).items)

    async def create_container(self, sandbox_id: str, config: api_pb2.ContainerConfig,
                               sandbox_config: api_pb2.PodSandboxConfig) -> str:
        resp = await self._call("CreateContainer", self._rt.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config), timeout=120)
        return resp.container_id

    async def start_container(self, container_id: str) -> None:
        await self._call("StartContainer", self._rt.StartContainer,
                         api_pb2.StartContainerRequest(container_id=container_id), timeout=120)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """Stop signal, up to `timeout` seconds, then SIGKILL. Idempotent."""
        await self._call("StopContainer", self._rt.StopContainer,
                         api_pb2.StopContainerRequest(container_id=container_id, timeout=max(0, timeout)),
                         timeout=max(0, timeout) + self.timeout + 30)

    async def remove_container(self, container_id: str) -> None:
        await self._call("RemoveContainer", self._rt.RemoveContainer,
                         api_pb2.RemoveContainerRequest(container_id=container_id), timeout=120)

    async def list_containers(self, labels: dict[str, str] | None = None,
                              sandbox_id: str = "") -> list[api_pb2.Container]:
        req = api_pb2.ListContainersRequest()
        if labels:
            req.filter.label_selector.update(labels)
        if sandbox_id:
            req.filter.pod_sandbox_id = sandbox_id
        return list((await self._call("ListContainers", self._rt.ListContainers, req)).containers)

    async def container_status(self, container_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        return await self._call("ContainerStatus", self._rt.ContainerStatus,
                                api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose))

    async def exec_sync(self, container_id: str, cmd: Iterable[str], timeout: int) -> api_pb2.ExecSyncResponse:
        """Run `cmd`; CriDeadlineExceeded when it outlives `timeout` seconds (0: no limit)."""
        return await self._call("ExecSync", self._rt.ExecSync,
                                api_pb2.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout),
                                timeout=(timeout + 10) if timeout > 0 else 3600)

    # ---- images ----------------------------------------------------------------------

    async def image_status(self, image: str) -> api_pb2.Image | None:
        """The image, or None when it is not on the node."""
        resp = await self._call("ImageStatus", self._img.ImageStatus,
                                api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)))
        return resp.image if resp.HasField("image") else None

    async def pull_image(self, image: str, sandbox_config: api_pb2.PodSandboxConfig | None = None) -> str:
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))
        if sandbox_config is not None:
            req.sandbox_config.CopyFrom(sandbox_config)
        return (await self._call("PullImage", self._img.PullImage, req, timeout=self.pull_timeout)).image_ref
