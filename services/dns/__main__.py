"""python -m services.dns --server ADDR --listen HOST:PORT [--cluster-domain D]
[--upstream IP:PORT ...] [--ttl 5]

The cluster DNS: answers for Services and pods in the cluster domain from
informers on Services and Endpoints (see `records`), over UDP and TCP on
one address; other names go to the upstream resolvers, or are refused when
none is given. Prints "dns listening on HOST:PORT" once its caches are
full and its sockets bound. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import dns.name
from google.protobuf.message import Message

from kubeling.client.api_client import ApiClient
from kubeling.client.informer import SharedInformerFactory, Store
from services.dns.records import DEFAULT_TTL, Records
from services.dns.server import DnsServer

log = logging.getLogger("services.dns")

_NAMESPACE_INDEX = "dns/namespace"


def host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """("127.0.0.1", 5353) from "127.0.0.1:5353"; "[::1]:53" for IPv6."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = value, ""
    if not port:
        if default_port is None:
            raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
        return host, default_port
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: port {port!r} is not a number") from None
    if not 0 <= number < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: port {number} is out of range")
    return host, number


def cluster_domain(value: str) -> str:
    try:
        name = dns.name.from_text(value)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"{value!r}: {e}") from None
    if len(name.labels) < 2:
        raise argparse.ArgumentTypeError(f"{value!r}: not a domain (e.g. cluster.local)")
    return name.to_text(omit_final_dot=True)


class InformerData:
    """records.ClusterData over the informers' stores."""

    def __init__(self, services: Store, endpoints: Store):
        self.services = services
        self.endpoints_store = endpoints
        services.add_index(_NAMESPACE_INDEX, lambda svc: [svc.metadata.namespace])

    def service(self, namespace: str, name: str) -> Message | None:
        return self.services.get(f"{namespace}/{name}")

    def endpoints(self, namespace: str, name: str) -> Message | None:
        return self.endpoints_store.get(f"{namespace}/{name}")

    def has_namespace(self, namespace: str) -> bool:
        return bool(self.services.index_keys(_NAMESPACE_INDEX, namespace))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeling-dns")
    parser.add_argument("--server", help="API server address (default: from the client config)")
    parser.add_argument("--listen", type=lambda v: host_port(v, 53), default=("127.0.0.1", 5353),
                        help="HOST:PORT to serve on, UDP and TCP (default 127.0.0.1:5353)")
    parser.add_argument("--cluster-domain", type=cluster_domain, default="cluster.local")
    parser.add_argument("--upstream", type=lambda v: host_port(v, 53), action="append", default=[],
                        help="IP:PORT of a resolver for names outside the cluster domain "
                             "(repeatable; none: such names are refused)")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="seconds (default 5)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_run(args))
    except OSError as e:
        sys.exit(f"kubeling-dns: cannot listen on {args.listen[0]}:{args.listen[1]}: {e}")


async def _run(args: argparse.Namespace) -> None:
    client = ApiClient(args.server) if args.server else ApiClient.from_config()
    factory = SharedInformerFactory(client)
    services = factory.informer("services")
    endpoints = factory.informer("endpoints")
    records = Records(InformerData(services.store, endpoints.store), args.cluster_domain, args.ttl)
    server = DnsServer(records, args.upstream)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await factory.start_all()
        synced = asyncio.create_task(factory.wait_for_cache_sync())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if not stop.is_set():
            host, port = await server.start(*args.listen)
            print(f"dns listening on {host}:{port} for {args.cluster_domain}", flush=True)
            await stopped
        stopped.cancel()
    finally:
        await server.stop()
        await factory.stop_all()
        await client.close()


if __name__ == "__main__":
    main()
