"""python -m services.controllers [--controllers deployment,replicaset,...]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from kubeling.client.api_client import ApiClient


def main() -> None:
    parser = argparse.ArgumentParser(prog="kubeling-controller-manager")
    parser.add_argument("--server", help="API server address (default: from the client config)")
    parser.add_argument("--controllers", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--leader-elect", default="true", choices=["true", "false"])
    parser.add_argument("--identity", default="")
    parser.add_argument("--lease-duration", type=float, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10)
    parser.add_argument("--retry-period", type=float, default=2)
    parser.add_argument("--node-monitor-grace-period", type=float, default=4.0,
                        help="seconds without a node Lease renewal before the node is NotReady")
    parser.add_argument("--pod-eviction-timeout", type=float, default=3.0,
                        help="seconds a NotReady node's pods tolerate it before eviction")
    parser.add_argument("--cluster-cidr", default="10.244.0.0/16")
    parser.add_argument("--node-cidr-mask-size", type=int, default=24)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_run(args))


async def _run(args) -> None:
    from .manager import ControllerManager
    client = ApiClient(args.server) if args.server else ApiClient.from_config()
    manager = ControllerManager(
        client, [n for n in args.controllers.split(",") if n],
        identity=args.identity, leader_elect=args.leader_elect == "true",
        lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        node_monitor_grace_period=args.node_monitor_grace_period,
        pod_eviction_timeout=args.pod_eviction_timeout,
        cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size)
    task = asyncio.create_task(manager.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    print(f"controller-manager {manager.identity} started", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await client.close()


if __name__ == "__main__":
    main()
