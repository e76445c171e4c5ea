"""The controller manager: every controller in one process, behind one
leader election, as kube-controller-manager.

Controllers register here by name; `--controllers` picks a subset (default:
all). Only the leader runs controllers; standbys wait on the Lease and take
over when it expires or is released.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Callable

from kubeling.client.api_client import ApiClient
from kubeling.client.events import EventRecorder
from kubeling.client.informer import SharedInformerFactory
from kubeling.client.leader_election import LeaderElector

from .controller import Controller

log = logging.getLogger(__name__)

LEASE_NAME = "kube-controller-manager"

# name -> factory(client, informers, recorder, **options); filled by register().
CONTROLLERS: dict[str, Callable[..., Controller]] = {}


def register(name: str):
    """Class decorator adding a controller to the manager under `name`."""
    def wrap(cls):
        CONTROLLERS[name] = cls
        return cls
    return wrap


def load_controllers() -> None:
    """Import every controller module so each registers itself."""
    import importlib
    import pkgutil

    import services.controllers as package
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in ("controller", "manager", "__main__"):
            importlib.import_module(f"services.controllers.{mod.name}")


class ControllerManager:
    def __init__(self, client: ApiClient, names: list[str] | None = None, *,
                 identity: str = "", leader_elect: bool = True,
                 lease_duration: float = 15, renew_deadline: float = 10, retry_period: float = 2,
                 **options):
        load_controllers()
        unknown = [n for n in (names or []) if n not in CONTROLLERS]
        if unknown:
            raise ValueError(f"unknown controllers: {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(CONTROLLERS))}")
        self.client = client
        self.names = names or sorted(CONTROLLERS)
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.leader_elect = leader_elect
        self.election = dict(lease_duration=lease_duration, renew_deadline=renew_deadline,
                             retry_period=retry_period)
        self.options = options

    async def _run_controllers(self) -> None:
        informers = SharedInformerFactory(self.client)
        recorder = EventRecorder(self.client, "controller-manager", self.identity)
        controllers = [CONTROLLERS[n](self.client, informers, recorder, **self.options)
                       for n in self.names]
        log.info("starting controllers: %s", ", ".join(self.names))
        try:
            await asyncio.gather(*(c.run() for c in controllers))
        finally:
            await informers.stop_all()

    async def run(self) -> None:
        if not self.leader_elect:
            await self._run_controllers()
            return
        while True:
            elector = LeaderElector(self.client, LEASE_NAME, self.identity,
                                    on_started_leading=self._run_controllers, **self.election)
            await elector.run()
            log.warning("lost leadership; campaigning again")
