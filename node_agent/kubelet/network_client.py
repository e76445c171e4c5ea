"""The node agent's side of the network service (`kubeling.cni.v1.Network`).

Used only when the container runtime leaves a sandbox without an address
(kubeling's runtime does that unless it is wired to a network itself): the
node agent then attaches the sandbox's network namespace with Add, as
Kubernetes' kubenet did, and detaches it with Del before the sandbox goes.
`status()` also feeds the node's Ready condition.

CNI failures come back inside the responses; they are raised here as
`NetworkError` with the CNI code and message.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from kubeling.cni.v1 import cni_pb2, cni_pb2_grpc
from node_agent.kubelet.cri_client import endpoint_target

POD_INTERFACE = "eth0"


class NetworkError(Exception):
    """A CNI error (`.code`, CNI's numbers) or an unreachable service (code 0)."""

    def __init__(self, op: str, code: int, message: str):
        super().__init__(f"network {op}: {message}" + (f" (CNI code {code})" if code else ""))
        self.code = code


@dataclass
class Attached:
    """What Add answered: the pod's address (without prefix) and gateway."""

    ip: str
    gateway: str = ""


class NetworkClient:
    def __init__(self, endpoint: str, timeout: float = 60.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(endpoint_target(endpoint))
        self._stub = cni_pb2_grpc.NetworkStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, op: str, method, request):
        try:
            resp = await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise NetworkError(op, 0, e.details() or e.code().name) from None
        if resp.HasField("error") and resp.error.code:
            detail = f"{resp.error.msg}: {resp.error.details}" if resp.error.details else resp.error.msg
            raise NetworkError(op, resp.error.code, detail)
        return resp

    @staticmethod
    def _args(namespace: str, name: str, uid: str) -> cni_pb2.PodArgs:
        return cni_pb2.PodArgs(name=name, namespace=namespace, uid=uid)

    async def add(self, sandbox_id: str, netns: str, namespace: str, name: str, uid: str,
                  port_mappings: list[tuple[int, int, str, str]] = ()) -> Attached:
        req = cni_pb2.AddRequest(container_id=sandbox_id, netns=netns, ifname=POD_INTERFACE,
                                 args=self._args(namespace, name, uid))
        for host_port, container_port, protocol, host_ip in port_mappings:
            req.port_mappings.add(host_port=host_port, container_port=container_port,
                                  protocol=protocol.lower(), host_ip=host_ip)
        resp = await self._call("Add", self._stub.Add, req)
        for ip in resp.result.ips:
            if ip.address:
                return Attached(ip.address.split("/")[0], ip.gateway)
        raise NetworkError("Add", 0, "the result carries no address")

    async def delete(self, sandbox_id: str, netns: str = "", namespace: str = "", name: str = "",
                     uid: str = "") -> None:
        """Idempotent: succeeds when nothing is attached."""
        await self._call("Del", self._stub.Del, cni_pb2.DelRequest(
            container_id=sandbox_id, netns=netns, ifname=POD_INTERFACE,
            args=self._args(namespace, name, uid)))

    async def status(self) -> tuple[bool, str]:
        """(ready, message): whether Add can be served now."""
        try:
            resp = await self._stub.Status(cni_pb2.StatusRequest(), timeout=10)
        except grpc.aio.AioRpcError as e:
            return False, f"network service unreachable: {e.details() or e.code().name}"
        if resp.HasField("error") and resp.error.code:
            return False, resp.error.msg
        return True, ""
