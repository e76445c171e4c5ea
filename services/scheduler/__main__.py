"""python -m services.scheduler --server ADDR [--leader-elect=true|false]
[--percentage-of-nodes-to-score N] [--lease-duration S --renew-deadline S --retry-period S]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from kubeling.client.api_client import ApiClient


def main() -> None:
    parser = argparse.ArgumentParser(prog="kubeling-scheduler")
    parser.add_argument("--server", help="API server address (default: from the client config)")
    parser.add_argument("--leader-elect", default="true", choices=["true", "false"])
    parser.add_argument("--identity", default="", help="leader election identity (default: host_random)")
    parser.add_argument("--lease-duration", type=float, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10)
    parser.add_argument("--retry-period", type=float, default=2)
    parser.add_argument("--scheduler-name", default="default-scheduler",
                        help="schedule pods whose spec.schedulerName is this")
    parser.add_argument("--percentage-of-nodes-to-score", type=int, default=0,
                        help="percent of nodes to find feasible before scoring; 0 = adaptive "
                             "(50%% minus 1%% per 125 nodes, at least 5%% and 100 nodes)")
    parser.add_argument("--max-binds-in-flight", type=int, default=64,
                        help="binds awaiting the API server at once; scheduling pauses at the limit")
    parser.add_argument("--event-workers", type=int, default=2,
                        help="concurrent Event writes; Events beyond what they keep up with "
                             "queue (up to 10000), then are dropped")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    if not 0 <= args.percentage_of_nodes_to_score <= 100:
        parser.error("--percentage-of-nodes-to-score must be between 0 and 100")
    if args.max_binds_in_flight < 1:
        parser.error("--max-binds-in-flight must be at least 1")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_run(args))


async def _run(args) -> None:
    from .app import SchedulerApp
    client = ApiClient(args.server) if args.server else ApiClient.from_config()
    app = SchedulerApp(
        client, identity=args.identity, leader_elect=args.leader_elect == "true",
        lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
        retry_period=args.retry_period, scheduler_name=args.scheduler_name,
        percentage_of_nodes_to_score=args.percentage_of_nodes_to_score,
        max_binds_in_flight=args.max_binds_in_flight, event_workers=args.event_workers)
    task = asyncio.create_task(app.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    print(f"scheduler {app.identity} started", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await client.close()


if __name__ == "__main__":
    main()
