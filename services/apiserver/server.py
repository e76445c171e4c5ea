"""Assembles the API server: storage, registry, the gRPC service, health and
reflection, on one address."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kubeling.api.v1 import api_pb2, api_pb2_grpc

from .registry import Registry
from .servicer import ApiServicer
from .storage import Storage

log = logging.getLogger(__name__)

# Larger than the object limit, so an oversized object reaches validation and
# gets a message naming it rather than a transport error.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class ApiServer:
    """A running API server. `await start()`, then `.address`; `await stop()`."""

    def __init__(self, etcd_endpoints: list[str], bind: str = "127.0.0.1:0", *,
                 service_cidr: str = "10.96.0.0/16", node_port_range: tuple[int, int] = (30000, 32767),
                 advertise_address: str = ""):
        self.etcd_endpoints = etcd_endpoints
        self.bind = bind
        self.service_cidr = service_cidr
        self.node_port_range = node_port_range
        self.advertise_address = advertise_address
        self.storage: Storage | None = None
        self.registry: Registry | None = None
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self.storage = Storage(self.etcd_endpoints)
        await self.storage.connect()
        self.registry = Registry(self.storage, service_cidr=self.service_cidr,
                                 node_port_range=self.node_port_range)
        await self.registry.start()
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ])
        self.servicer = ApiServicer(self.registry)
        api_pb2_grpc.add_ApiServicer_to_server(self.servicer, self.server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        service_name = api_pb2.DESCRIPTOR.services_by_name["Api"].full_name
        reflection.enable_server_reflection(
            (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        port = self.server.add_insecure_port(self.bind)
        host = self.bind.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        await self.server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        advertise = self.advertise_address or host
        if advertise not in ("0.0.0.0", "::", "[::]", ""):
            await self.registry.publish(f"{advertise}:{port}")
        log.info("API server listening on %s (etcd %s)", self.address, ",".join(self.etcd_endpoints))

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 1.0) -> None:
        if self.server:
            await self.server.stop(grace)
            await self.servicer.node_proxy.close()
        if self.registry:
            await self.registry.stop()
        if self.storage:
            await self.storage.close()
