"""How the runtime hands a sandbox's network namespace to the network service.

The runtime creates and pins the namespace; a `PodNetwork` puts interfaces
in it. Until kubeling's network service exists, `LoopbackNetwork` leaves the
pod with loopback only. Both calls must be idempotent: `teardown` of a
namespace that was never set up, or is gone, succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class NetworkResult:
    """What the network service answered: the pod's addresses."""

    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)


class PodNetwork(Protocol):
    def setup(self, sandbox_id: str, netns_path: str, pod_namespace: str, pod_name: str,
              pod_uid: str, port_mappings: list[dict]) -> NetworkResult: ...

    def teardown(self, sandbox_id: str, netns_path: str) -> None: ...

    def ready(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the CRI NetworkReady condition."""
        ...


class LoopbackNetwork:
    """No interfaces besides lo; always ready."""

    def setup(self, sandbox_id, netns_path, pod_namespace, pod_name, pod_uid, port_mappings):
        return NetworkResult()

    def teardown(self, sandbox_id, netns_path):
        return None

    def ready(self):
        return True, "", ""
