"""The gRPC face of the network service (`kubeling.cni.v1.Network`).

Thin: each method converts the request into an `Attachment` (and an
optional network configuration), calls `PodNetwork`, and converts back.
Every failure, expected or not, becomes a CNI error inside the response
(`error` field); unexpected exceptions are logged and reported as code 100
so that no input can take the service down.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import grpc

from kubeling.cni.v1 import cni_pb2, cni_pb2_grpc
from node_agent.network.config import (
    CNI_VERSION,
    SUPPORTED_VERSIONS,
    NetworkConfig,
    apply_cni_json,
    decode_json,
    port_mapping,
    port_mappings_from_json,
)
from node_agent.network.errors import INTERFACE_FAILURE, INVALID_NETWORK_CONFIG, CniError
from node_agent.network.network import Attachment, PodInfo, PodNetwork

log = logging.getLogger(__name__)


# --- conversions (the only place messages meet the core) -----------------------

def result_to_proto(result: dict) -> cni_pb2.Result:
    msg = cni_pb2.Result(cni_version=result.get("cniVersion", CNI_VERSION))
    for itf in result.get("interfaces") or []:
        msg.interfaces.add(name=itf.get("name", ""), mac=itf.get("mac", ""), mtu=itf.get("mtu", 0),
                           sandbox=itf.get("sandbox", ""))
    for ip in result.get("ips") or []:
        entry = msg.ips.add(address=ip.get("address", ""), gateway=ip.get("gateway", ""))
        if ip.get("interface") is not None:
            entry.interface = ip["interface"]
    for r in result.get("routes") or []:
        msg.routes.add(dst=r.get("dst", ""), gw=r.get("gw", ""), mtu=r.get("mtu", 0), advmss=r.get("advmss", 0),
                       priority=r.get("priority", 0), table=r.get("table", 0), scope=r.get("scope", 0))
    dns = result.get("dns") or {}
    msg.dns.nameservers.extend(dns.get("nameservers", []))
    msg.dns.domain = dns.get("domain", "")
    msg.dns.search.extend(dns.get("search", []))
    msg.dns.options.extend(dns.get("options", []))
    return msg


def result_from_proto(msg: cni_pb2.Result) -> dict:
    """The CNI JSON shape of `msg` (only fields that are set)."""
    out: dict = {"cniVersion": msg.cni_version or CNI_VERSION, "interfaces": [], "ips": [], "routes": []}
    for itf in msg.interfaces:
        d = {"name": itf.name, "mac": itf.mac}
        if itf.mtu:
            d["mtu"] = itf.mtu
        if itf.sandbox:
            d["sandbox"] = itf.sandbox
        out["interfaces"].append(d)
    for ip in msg.ips:
        d = {"address": ip.address}
        if ip.gateway:
            d["gateway"] = ip.gateway
        if ip.HasField("interface"):
            d["interface"] = ip.interface
        out["ips"].append(d)
    for r in msg.routes:
        d = {"dst": r.dst}
        if r.gw:
            d["gw"] = r.gw
        out["routes"].append(d)
    return out


def error_to_proto(e: CniError) -> cni_pb2.Error:
    return cni_pb2.Error(code=e.code, msg=e.msg, details=e.details)


class NetworkServicer(cni_pb2_grpc.NetworkServicer):
    """Serves one node's `PodNetwork`."""

    def __init__(self, network: PodNetwork, mode: str = "host-gw"):
        self.network = network
        self.mode = mode

    def _config(self, text: str) -> NetworkConfig | None:
        """The request's network configuration over the service's, or None when not given."""
        if not text:
            return None
        base = self.network.config
        cfg = apply_cni_json(base, decode_json(text))
        if cfg.subnet != base.subnet or cfg.gateway != base.gateway or cfg.bridge != base.bridge:
            raise CniError(INVALID_NETWORK_CONFIG, "the configuration names another subnet, gateway or bridge",
                           f"this service serves {base.bridge} with the node's pod CIDR {base.subnet}")
        return cfg

    def _attachment(self, request, mappings=()) -> Attachment:
        args = request.args
        return Attachment(container_id=request.container_id, netns=request.netns, ifname=request.ifname,
                          pod=PodInfo(args.name, args.namespace, args.uid), port_mappings=tuple(mappings),
                          config=self._config(request.config))

    async def Add(self, request: cni_pb2.AddRequest, context) -> cni_pb2.AddResponse:
        async def run():
            mappings = [port_mapping(m.host_port, m.container_port, m.protocol, m.host_ip)
                        for m in request.port_mappings]
            if request.config:
                conf = decode_json(request.config)
                runtime = conf.get("runtimeConfig") or {}
                if isinstance(runtime, dict) and "portMappings" in runtime:
                    mappings += port_mappings_from_json(runtime["portMappings"])
            result = await self.network.add(self._attachment(request, mappings))
            return cni_pb2.AddResponse(result=result_to_proto(result))
        return await _guard("Add", run, lambda e: cni_pb2.AddResponse(error=e))

    async def Del(self, request: cni_pb2.DelRequest, context) -> cni_pb2.DelResponse:
        async def run():
            await self.network.delete(self._attachment(request))
            return cni_pb2.DelResponse()
        return await _guard("Del", run, lambda e: cni_pb2.DelResponse(error=e))

    async def Check(self, request: cni_pb2.CheckRequest, context) -> cni_pb2.CheckResponse:
        async def run():
            prev = result_from_proto(request.prev_result) if request.HasField("prev_result") else None
            await self.network.check(self._attachment(request), prev)
            return cni_pb2.CheckResponse()
        return await _guard("Check", run, lambda e: cni_pb2.CheckResponse(error=e))

    async def Status(self, request: cni_pb2.StatusRequest, context) -> cni_pb2.StatusResponse:
        async def run():
            info = await self.network.status(self._config(request.config))
            resp = cni_pb2.StatusResponse(pod_cidr=info["pod_cidr"], gateway=info["gateway"], bridge=info["bridge"],
                                          mode=self.mode, allocated=info["allocated"], capacity=info["capacity"])
            if info["error"] is not None:
                resp.error.CopyFrom(error_to_proto(info["error"]))
            return resp
        return await _guard("Status", run, lambda e: cni_pb2.StatusResponse(error=e, mode=self.mode))

    async def Version(self, request: cni_pb2.VersionRequest, context) -> cni_pb2.VersionResponse:
        return cni_pb2.VersionResponse(cni_version=CNI_VERSION, supported_versions=list(SUPPORTED_VERSIONS))


async def _guard(method: str, run: Callable[[], Awaitable], failed: Callable[[cni_pb2.Error], object]):
    try:
        return await run()
    except CniError as e:
        log.info("%s: CNI error %d: %s", method, e.code, e)
        return failed(error_to_proto(e))
    except Exception as e:  # noqa: BLE001 - no input may crash the service
        log.exception("%s: unexpected error", method)
        return failed(cni_pb2.Error(code=INTERFACE_FAILURE, msg=f"internal error in {method}", details=repr(e)))


def add_to_server(servicer: NetworkServicer, server: grpc.aio.Server) -> None:
    cni_pb2_grpc.add_NetworkServicer_to_server(servicer, server)
