"""python -m node_agent.proxy --server ADDR --node-name NAME [--netns NS] ...

The per-node service proxy: watches Services and Endpoints and keeps the
nftables table `ip kubeling` of the node's network namespace in step (see
`syncer`). On SIGTERM or SIGINT it deletes its table, so a stopped proxy
leaves nothing behind; `--cleanup` deletes the table and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import shutil
import signal
import sys

from kubeling.client.api_client import ApiClient
from kubeling.client.informer import SharedInformerFactory, object_key
from node_agent.proxy.rules import ProxyContext
from node_agent.proxy.syncer import Nft, NftError, ProxySyncer

log = logging.getLogger("node_agent.proxy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeling-proxy")
    parser.add_argument("--server", help="API server address (default: from the client config)")
    parser.add_argument("--node-name", default="",
                        help="this node's name (for externalTrafficPolicy / internalTrafficPolicy Local)")
    parser.add_argument("--netns", default="",
                        help="network namespace (ip netns name) of the node; default: the current one")
    parser.add_argument("--min-sync-interval", type=float, default=0.2,
                        help="seconds between two syncs at least; changes meanwhile are batched")
    parser.add_argument("--full-sync-period", type=float, default=600.0,
                        help="seconds between full syncs that repair any drift (0: never)")
    parser.add_argument("--cluster-cidr", default="10.244.0.0/16",
                        help="pod addresses; traffic to a Service from outside it is masqueraded "
                             "('' to disable)")
    parser.add_argument("--cleanup", action="store_true",
                        help="delete the kubeling table and exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.cluster_cidr:
        try:
            args.cluster_cidr = str(ipaddress.IPv4Network(args.cluster_cidr))
        except ValueError as e:
            parser.error(f"--cluster-cidr: {e}")
    if args.min_sync_interval < 0:
        parser.error("--min-sync-interval must not be negative")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not shutil.which("nft"):
        sys.exit("kubeling-proxy: nft (nftables) is not installed")
    nft = Nft(args.netns or None)
    if args.cleanup:
        try:
            asyncio.run(nft.apply("table ip kubeling\ndelete table ip kubeling\n"))
        except NftError as e:
            sys.exit(f"kubeling-proxy: {e}")
        return
    asyncio.run(_run(args, nft))


async def _run(args: argparse.Namespace, nft: Nft) -> None:
    client = ApiClient(args.server) if args.server else ApiClient.from_config()
    factory = SharedInformerFactory(client)
    services = factory.informer("services")
    endpoints = factory.informer("endpoints")
    syncer = ProxySyncer(nft, ProxyContext(args.node_name, args.cluster_cidr),
                         services.store.get, endpoints.store.get,
                         min_sync_interval=args.min_sync_interval,
                         full_sync_period=args.full_sync_period)
    for informer in (services, endpoints):
        informer.add_handler(on_add=lambda o: syncer.changed(object_key(o)),
                             on_update=lambda old, new: syncer.changed(object_key(new)),
                             on_delete=lambda o: syncer.changed(object_key(o)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run_task: asyncio.Task | None = None
    try:
        await factory.start_all()
        # As kube-proxy: no sync before the caches are full, or the first
        # sync would drop the rules of every service not yet listed.
        synced = asyncio.create_task(factory.wait_for_cache_sync())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if not stop.is_set():
            syncer.changed_all(services.store.keys())
            run_task = asyncio.create_task(syncer.run())
            print(f"proxy started on node {args.node_name or '-'}"
                  f" (netns {args.netns or 'current'})", flush=True)
            await asyncio.wait({run_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        if run_task is not None:
            run_task.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        await factory.stop_all()
        await client.close()
        try:
            await syncer.delete_table()
            log.info("deleted table ip kubeling")
        except NftError as e:
            log.error("could not delete table ip kubeling: %s", e)


if __name__ == "__main__":
    main()
