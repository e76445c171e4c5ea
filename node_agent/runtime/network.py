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


class NetworkSetupError(Exception):
    """The network service refused or failed an Add; the message is its CNI error."""


class CniServiceNetwork:
    """kubeling's network service (kubeling.cni.v1.Network) on a unix socket.

    Add puts `eth0` in the sandbox's namespace; Del is called on stop and is
    idempotent on the service's side. The result's first IPv4 address (and
    the rest as additional addresses) becomes the pod's IP."""

    IFNAME = "eth0"

    def __init__(self, endpoint: str, timeout: float = 30):
        import grpc

        from kubeling.cni.v1 import cni_pb2, cni_pb2_grpc
        self._pb = cni_pb2
        self._grpc = grpc
        self.endpoint = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
        self.timeout = timeout
        self._stub = cni_pb2_grpc.NetworkStub(grpc.insecure_channel(self.endpoint))

    def setup(self, sandbox_id, netns_path, pod_namespace, pod_name, pod_uid, port_mappings):
        pb = self._pb
        request = pb.AddRequest(
            container_id=sandbox_id, netns=netns_path, ifname=self.IFNAME,
            args=pb.PodArgs(name=pod_name, namespace=pod_namespace, uid=pod_uid),
            port_mappings=[pb.PortMapping(host_port=p["host_port"], container_port=p["container_port"],
                                          protocol=p["protocol"].lower(), host_ip=p["host_ip"])
                           for p in port_mappings if p["host_port"]])
        try:
            answer = self._stub.Add(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise NetworkSetupError(f"network service at {self.endpoint}: {e.details()}") from None
        if answer.HasField("error"):
            err = answer.error
            raise NetworkSetupError(f"network setup failed (CNI error {err.code}): {err.msg}"
                                    + (f": {err.details}" if err.details else ""))
        ips = [ip.address.split("/", 1)[0] for ip in answer.result.ips]
        ips.sort(key=lambda a: ":" in a)  # IPv4 first, as the kubelet expects
        return NetworkResult(ip=ips[0] if ips else "", additional_ips=ips[1:])

    def teardown(self, sandbox_id, netns_path):
        pb = self._pb
        try:
            answer = self._stub.Del(pb.DelRequest(container_id=sandbox_id, netns=netns_path,
                                                  ifname=self.IFNAME), timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise NetworkSetupError(f"network service at {self.endpoint}: {e.details()}") from None
        if answer.HasField("error"):
            raise NetworkSetupError(f"network teardown failed (CNI error {answer.error.code}): "
                                    f"{answer.error.msg}")

    def ready(self):
        try:
            answer = self._stub.Status(self._pb.StatusRequest(), timeout=5)
        except self._grpc.RpcError as e:
            return False, "NetworkServiceUnreachable", f"{self.endpoint}: {e.details()}"
        if answer.HasField("error"):
            return False, "NetworkPluginNotReady", answer.error.msg
        return True, "", ""
