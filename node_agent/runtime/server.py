"""The gRPC layer: CRI RuntimeService and ImageService, and kubeling's ImageImportService.

Thin by design: each method runs the logic (runtime.py, images.py) in a
worker thread and converts its result; errors map to status codes in one
place, `_call`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from kubeling.cri.v1 import api_pb2, api_pb2_grpc, images_pb2, images_pb2_grpc
from node_agent.runtime import errors
from node_agent.runtime.images import Image
from node_agent.runtime.runtime import Runtime

log = logging.getLogger(__name__)

_CODES = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


class _Base:
    def __init__(self, runtime: Runtime, executor: ThreadPoolExecutor):
        self.runtime = runtime
        self.executor = executor

    async def _call(self, context: grpc.aio.ServicerContext, fn, *args):
        """Runs `fn(*args)` in a worker thread; maps runtime errors to status codes."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except errors.RuntimeServiceError as e:
            await context.abort(_CODES.get(type(e), grpc.StatusCode.INTERNAL), str(e))
        except Exception as e:  # a bug or an unexpected OS failure: say so, keep serving
            log.exception("runtime call %s failed", getattr(fn, "__name__", fn))
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    @staticmethod
    async def _unimplemented(context, what: str):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not implemented by kubeling's runtime")


class RuntimeServicer(_Base, api_pb2_grpc.RuntimeServiceServicer):
    """runtime.v1.RuntimeService."""

    async def Version(self, request, context):
        return self.runtime.version()

    async def Status(self, request, context):
        return await self._call(context, self.runtime.status, request.verbose)

    async def RunPodSandbox(self, request, context):
        sid = await self._call(context, self.runtime.run_pod_sandbox, request.config,
                               request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, request, context):
        await self._call(context, self.runtime.stop_pod_sandbox, request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request, context):
        await self._call(context, self.runtime.remove_pod_sandbox, request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request, context):
        return await self._call(context, self.runtime.pod_sandbox_status, request.pod_sandbox_id,
                                request.verbose)

    async def ListPodSandbox(self, request, context):
        items = await self._call(context, self.runtime.list_pod_sandbox,
                                 request.filter if request.HasField("filter") else None)
        return api_pb2.ListPodSandboxResponse(items=items)

    async def CreateContainer(self, request, context):
        cid = await self._call(context, self.runtime.create_container, request.pod_sandbox_id,
                               request.config,
                               request.sandbox_config if request.HasField("sandbox_config") else None)
        return api_pb2.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request, context):
        await self._call(context, self.runtime.start_container, request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request, context):
        await self._call(context, self.runtime.stop_container, request.container_id, request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request, context):
        await self._call(context, self.runtime.remove_container, request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ListContainers(self, request, context):
        items = await self._call(context, self.runtime.list_containers,
                                 request.filter if request.HasField("filter") else None)
        return api_pb2.ListContainersResponse(containers=items)

    async def ContainerStatus(self, request, context):
        return await self._call(context, self.runtime.container_status, request.container_id,
                                request.verbose)

    async def UpdateContainerResources(self, request, context):
        await self._call(context, self.runtime.update_container_resources, request.container_id,
                         request.linux)
        return api_pb2.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request, context):
        await self._call(context, self.runtime.reopen_container_log, request.container_id)
        return api_pb2.ReopenContainerLogResponse()

    async def ExecSync(self, request, context):
        return await self._call(context, self.runtime.exec_sync, request.container_id,
                                list(request.cmd), request.timeout)

    async def ContainerStats(self, request, context):
        stats = await self._call(context, self.runtime.container_stats, request.container_id)
        return api_pb2.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(self, request, context):
        stats = await self._call(context, self.runtime.list_container_stats,
                                 request.filter if request.HasField("filter") else None)
        return api_pb2.ListContainerStatsResponse(stats=stats)

    async def Exec(self, request, context):
        await self._unimplemented(context, "Exec (streaming)")

    async def Attach(self, request, context):
        await self._unimplemented(context, "Attach")

    async def PortForward(self, request, context):
        await self._unimplemented(context, "PortForward")

    async def UpdateRuntimeConfig(self, request, context):
        await self._unimplemented(context, "UpdateRuntimeConfig")


def image_to_pb(image: Image) -> api_pb2.Image:
    """The CRI Image for a stored image."""
    pb = api_pb2.Image(id=image.id, repo_tags=image.repo_tags, repo_digests=image.repo_digests,
                       size=image.size, spec=api_pb2.ImageSpec(image=image.id))
    user = (image.config.get("User") or "").split(":", 1)[0]
    if user.isdigit() or not user:
        pb.uid.value = int(user or 0)
    else:
        pb.username = user
    return pb


class ImageServicer(_Base, api_pb2_grpc.ImageServiceServicer):
    """runtime.v1.ImageService."""

    async def ListImages(self, request, context):
        images = await self._call(context, self.runtime.images.list)
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            match = await self._call(context, self.runtime.images.find, wanted)
            images = [i for i in images if match is not None and i.id == match.id]
        return api_pb2.ListImagesResponse(images=[image_to_pb(i) for i in images])

    async def ImageStatus(self, request, context):
        image = await self._call(context, self.runtime.images.find, request.image.image)
        if image is None:
            return api_pb2.ImageStatusResponse()
        info = {}
        if request.verbose:
            import json
            info = {"info": json.dumps({"config": image.config, "layers": image.layers,
                                        "manifestDigest": image.manifest_digest})}
        return api_pb2.ImageStatusResponse(image=image_to_pb(image), info=info)

    async def PullImage(self, request, context):
        auth = request.auth
        image = await self._call(context, self.runtime.images.pull, request.image.image,
                                 auth.username, auth.password, auth.auth, auth.registry_token)
        return api_pb2.PullImageResponse(image_ref=image.id)

    async def RemoveImage(self, request, context):
        await self._call(context, self.runtime.remove_image, request.image.image)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request, context):
        return await self._call(context, self.runtime.image_fs_info)


class ImageImportServicer(_Base, images_pb2_grpc.ImageImportServiceServicer):
    """kubeling.cri.v1.ImageImportService."""

    async def ImportImage(self, request, context):
        images = await self._call(context, self.runtime.images.import_archive, request.path,
                                  request.name)
        return images_pb2.ImportImageResponse(images=[
            images_pb2.ImportedImage(id=i.id, repo_tags=i.repo_tags) for i in images])


def unix_path(listen: str) -> str:
    """`unix:///run/x.sock` or `/run/x.sock` -> `/run/x.sock`."""
    if listen.startswith("unix://"):
        return listen[len("unix://"):]
    if listen.startswith("unix:"):
        return listen[len("unix:"):]
    return listen


async def serve(runtime: Runtime, listen: str, ready: asyncio.Event | None = None) -> grpc.aio.Server:
    """Starts the server on a unix socket (replacing a stale one) and returns it."""
    path = unix_path(listen)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cri")
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20),
                                      ("grpc.max_send_message_length", 16 << 20)])
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(runtime, executor), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(runtime, executor), server)
    images_pb2_grpc.add_ImageImportServiceServicer_to_server(ImageImportServicer(runtime, executor), server)
    server.add_insecure_port(f"unix://{path}")
    await server.start()
    os.chmod(path, 0o660)
    return server
