"""Images per imagePullPolicy, with Kubernetes' pull backoff and events.

- Never: the image must be on the node (else ErrImageNeverPull).
- IfNotPresent: pulled only when absent.
- Always: pulled before every container start (the registry is asked each
  time; an image that cannot be pulled fails even when a copy is present).

A failed pull gives ErrImagePull and starts a backoff (10 s doubling to
5 min, per pod and image); syncs within it answer ImagePullBackOff without
pulling. Events: Pulling, Pulled, Failed, BackOff (as Kubernetes words them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from google.protobuf.message import Message

from kubeling.client import events as ev
from node_agent.kubelet import status as st
from node_agent.kubelet.backoff import Backoff
from node_agent.kubelet.cri_client import CriError, RuntimeClient

EventFn = Callable[[Message, str, str, str], Awaitable[None]]


@dataclass
class ImageResult:
    image_ref: str = ""                     # the image id to create the container from
    waiting: tuple[str, str] | None = None  # (reason, message) when it is not there
    retry_after: float | None = None        # seconds until a pull may be tried again


class ImageManager:
    def __init__(self, runtime: RuntimeClient, event: EventFn, backoff: Backoff | None = None):
        self.runtime = runtime
        self.event = event
        self.backoff = backoff or Backoff()

    async def ensure(self, pod: Message, container: Message, sandbox_config=None) -> ImageResult:
        image = container.image
        policy = container.image_pull_policy or "IfNotPresent"
        if not image:
            return ImageResult(waiting=("InvalidImageName", "the container names no image"))
        try:
            present = await self.runtime.image_status(image)
        except CriError as e:
            if "invalid" in e.message.lower() or e.code.name == "INVALID_ARGUMENT":
                msg = f'Failed to apply default image tag "{image}": {e.message}'
                await self.event(pod, ev.WARNING, "InspectFailed", msg)
                return ImageResult(waiting=("InvalidImageName", msg))
            raise
        if policy == "Never":
            if present is None:
                msg = f'Container image "{image}" is not present with pull policy of Never'
                await self.event(pod, ev.WARNING, "ErrImageNeverPull", msg)
                return ImageResult(waiting=(st.ERR_IMAGE_NEVER_PULL, msg))
            return ImageResult(present.id)
        if policy == "IfNotPresent" and present is not None:
            await self.event(pod, ev.NORMAL, ev.PULLED, f'Container image "{image}" already present on machine')
            return ImageResult(present.id)
        key = f"{pod.metadata.uid}/{image}"
        remaining = self.backoff.remaining_since_update(key)
        if remaining > 0:
            msg = f'Back-off pulling image "{image}"'
            await self.event(pod, ev.NORMAL, ev.BACKOFF, msg)
            return ImageResult(waiting=(st.IMAGE_PULL_BACK_OFF, msg), retry_after=remaining)
        await self.event(pod, ev.NORMAL, ev.PULLING, f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            ref = await self.runtime.pull_image(image, sandbox_config)
        except CriError as e:
            delay = self.backoff.next(key, time.time())
            msg = f'Failed to pull image "{image}": {e.message}'
            await self.event(pod, ev.WARNING, ev.FAILED, msg)
            await self.event(pod, ev.WARNING, ev.FAILED, f"Error: {st.ERR_IMAGE_PULL}")
            return ImageResult(waiting=(st.ERR_IMAGE_PULL, msg), retry_after=delay)
        self.backoff.reset(key)
        await self.event(pod, ev.NORMAL, ev.PULLED,
                         f'Successfully pulled image "{image}" in {time.monotonic() - started:.3f}s')
        return ImageResult(ref)
