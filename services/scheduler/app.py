"""The scheduler process: one Scheduler behind leader election, as kube-scheduler.

Every replica starts its informers at once, so a standby's caches are warm;
only the replica holding the Lease `kube-scheduler` in kube-system runs the
scheduling loop. When the leader dies, its lease expires and a standby takes
over; a replica that loses the lease drops all its state (queue, assumed
pods) and campaigns again with fresh caches.
"""

from __future__ import annotations

import logging
import socket
import uuid

from kubeling.client.api_client import ApiClient
from kubeling.client.leader_election import LeaderElector

from .scheduler import Scheduler

log = logging.getLogger(__name__)

LEASE_NAME = "kube-scheduler"
LEASE_NAMESPACE = "kube-system"


class SchedulerApp:
    def __init__(self, client: ApiClient, *, identity: str = "", leader_elect: bool = True,
                 lease_duration: float = 15, renew_deadline: float = 10, retry_period: float = 2,
                 **scheduler_options):
        self.client = client
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.leader_elect = leader_elect
        self.election = dict(lease_duration=lease_duration, renew_deadline=renew_deadline,
                             retry_period=retry_period)
        self.scheduler_options = scheduler_options
        self.scheduler: Scheduler | None = None

    async def run(self) -> None:
        while True:
            scheduler = self.scheduler = Scheduler(self.client, identity=self.identity,
                                                   **self.scheduler_options)
            try:
                await scheduler.start()
                if not self.leader_elect:
                    await scheduler.run()
                    return
                elector = LeaderElector(self.client, LEASE_NAME, self.identity,
                                        namespace=LEASE_NAMESPACE,
                                        on_started_leading=scheduler.run, **self.election)
                await elector.run()
                log.warning("lost leadership after scheduling %d pods; campaigning again",
                            scheduler.scheduled)
            finally:
                await scheduler.stop()
