"""python -m node_agent.hollow --count N [--name-prefix hollow-node-] [--server ADDR | --config PATH]

Runs N hollow nodes in the foreground until SIGTERM or SIGINT, which stop
every lease renewal at once and exit 0 (the Nodes stay, and go NotReady
through the node lifecycle controller, as when machines die).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from kubeling import names
from kubeling.client.api_client import ApiClient
from kubeling.config import ConfigError
from kubeling.quantity import QuantityError, parse_quantity

from .hollow_node import HollowConfig, HollowNodes


def build_parser(prog: str = "kubeling-hollow-nodes") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run N simulated nodes in one process.")
    parser.add_argument("--server", help="API server address (default: from the client config)")
    parser.add_argument("--config", help="client configuration file (default: $KUBELING_CONFIG "
                                         "or ~/.kubeling/config)")
    add_node_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags describing the nodes (shared with `kubeling hollow-nodes`)."""
    parser.add_argument("--count", type=int, required=True, help="how many nodes to run")
    parser.add_argument("--name-prefix", default="hollow-node-",
                        help="node names are PREFIX1 .. PREFIXN (default: hollow-node-)")
    parser.add_argument("--first-index", type=int, default=1, help="number of the first node (default: 1)")
    parser.add_argument("--cpu", default="4", help="CPU capacity of each node (default: 4)")
    parser.add_argument("--memory", default="16Gi", help="memory capacity of each node (default: 16Gi)")
    parser.add_argument("--pods", default="110", help="pod capacity of each node (default: 110)")
    parser.add_argument("--lease-duration", type=int, default=40,
                        help="leaseDurationSeconds written into each node Lease (default: 40)")
    parser.add_argument("--renew-interval", type=float, default=1.0,
                        help="seconds between Lease renewals (default: 1)")
    parser.add_argument("--status-interval", type=float, default=10.0,
                        help="seconds between Ready heartbeats in node status (default: 10)")
    parser.add_argument("--pod-workers", type=int, default=32,
                        help="pod status writes in flight (default: 32)")
    parser.add_argument("--api-concurrency", type=int, default=64,
                        help="lease writes in flight, and node status writes in flight (default: 64)")
    parser.add_argument("--stats-interval", type=float, default=30.0,
                        help="seconds between progress lines in the log; 0 for none (default: 30)")


def config_from_args(args: argparse.Namespace) -> HollowConfig:
    """A HollowConfig from parsed flags; ValueError naming the bad flag."""
    if args.count < 1:
        raise ValueError(f"--count: must be at least 1, got {args.count}")
    if args.first_index < 0:
        raise ValueError(f"--first-index: must be 0 or more, got {args.first_index}")
    problems = names.is_dns1123_subdomain(f"{args.name_prefix}{args.first_index + args.count - 1}")
    if problems:
        raise ValueError(f"--name-prefix: {args.name_prefix!r} does not make valid node names: "
                         + "; ".join(problems))
    for flag in ("cpu", "memory", "pods"):
        value = getattr(args, flag)
        try:
            parse_quantity(value)
        except QuantityError as e:
            raise ValueError(f"--{flag}: {e}") from None
    if args.lease_duration < 1:
        raise ValueError("--lease-duration: must be at least 1 second")
    if not 0 < args.renew_interval < args.lease_duration:
        raise ValueError("--renew-interval: must be more than 0 and less than --lease-duration")
    if args.status_interval <= 0:
        raise ValueError("--status-interval: must be more than 0")
    if args.pod_workers < 1:
        raise ValueError("--pod-workers: must be at least 1")
    if args.api_concurrency < 1:
        raise ValueError("--api-concurrency: must be at least 1")
    if args.stats_interval < 0:
        raise ValueError("--stats-interval: must be 0 or more")
    return HollowConfig(count=args.count, name_prefix=args.name_prefix, first_index=args.first_index,
                        cpu=args.cpu, memory=args.memory, pods=args.pods,
                        lease_duration=args.lease_duration, renew_interval=args.renew_interval,
                        status_interval=args.status_interval, pod_workers=args.pod_workers,
                        api_concurrency=args.api_concurrency, stats_interval=args.stats_interval)


async def run(client: ApiClient, config: HollowConfig) -> None:
    """Run the nodes until SIGTERM / SIGINT."""
    nodes = HollowNodes(client, config)
    task = asyncio.create_task(nodes.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)

    async def announce() -> None:
        await nodes.ready.wait()
        print(f"hollow nodes ready: {config.count} ({config.name_prefix}{config.first_index} .. "
              f"{config.name_prefix}{config.first_index + config.count - 1})", flush=True)
    announcer = asyncio.create_task(announce())
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        announcer.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await client.close()


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(asyncio.run(_main(args, config)))


async def _main(args: argparse.Namespace, config: HollowConfig) -> int:
    # The channel belongs to the running loop: make it here, not before asyncio.run.
    try:
        client = ApiClient(args.server) if args.server else ApiClient.from_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    await run(client, config)
    return 0


if __name__ == "__main__":
    main()
