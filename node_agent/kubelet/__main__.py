"""python -m node_agent.kubelet: the node agent of one node.

    python -m node_agent.kubelet --server API_ADDR --node-name NAME --node-ip IP \\
        --container-runtime-endpoint unix:///run/kubeling/runtime.sock \\
        [--network-endpoint unix:///run/kubeling/network.sock] --state-dir DIR \\
        [--lease-duration 40] [--renew-interval 1] [--status-interval 10] \\
        [--system-reserved cpu=100m,memory=256Mi] [--node-labels k=v,...]

Registers the Node, renews its Lease, and runs the pods bound to it through
the CRI runtime. Logs "node agent ready" once it serves pods. SIGTERM or
SIGINT stop it; containers keep running and a new agent adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from node_agent.kubelet.agent import AgentConfig, NodeAgent
from node_agent.kubelet.node_status import ConfigError, parse_key_values, parse_reservations

log = logging.getLogger("node_agent.kubelet")


def default_node_ip() -> str:
    """The address this machine would use to reach the outside (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m node_agent.kubelet", description=__doc__.split("\n")[0])
    p.add_argument("--server", default="", help="API server address (default: the client config)")
    p.add_argument("--node-name", default=socket.gethostname(), help="this node's name (default: hostname)")
    p.add_argument("--node-ip", default="", help="the node's InternalIP (default: the primary address)")
    p.add_argument("--container-runtime-endpoint", default="unix:///run/kubeling/runtime.sock",
                   help="CRI runtime socket (default %(default)s)")
    p.add_argument("--network-endpoint", default="",
                   help="network service socket, used when the runtime leaves pods without an address")
    p.add_argument("--state-dir", default="/var/lib/kubeling/kubelet", type=Path,
                   help="pod volumes, records and logs (default %(default)s)")
    p.add_argument("--lease-duration", type=int, default=40, help="seconds a node lease is good for")
    p.add_argument("--renew-interval", type=float, default=1.0, help="seconds between lease renewals")
    p.add_argument("--status-interval", type=float, default=10.0, help="seconds between node status heartbeats")
    p.add_argument("--system-reserved", default="", help="resources kept from pods: cpu=100m,memory=256Mi")
    p.add_argument("--node-labels", default="", help="extra node labels: k=v,...")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--pod-workers", type=int, default=16, help="pods synced in parallel")
    p.add_argument("--pleg-period", type=float, default=1.0, help="seconds between runtime relists")
    p.add_argument("--sync-frequency", type=float, default=10.0,
                   help="seconds between periodic syncs of each pod (ConfigMap/Secret volume refresh)")
    p.add_argument("--crashloop-backoff-initial", type=float, default=10.0,
                   help="first CrashLoopBackOff delay in seconds (doubles each restart)")
    p.add_argument("--crashloop-backoff-max", type=float, default=300.0, help="CrashLoopBackOff cap in seconds")
    p.add_argument("--cgroup-root", default="",
                   help="cgroup under which each pod gets pod<uid> (default: the runtime's choice)")
    p.add_argument("--cluster-dns", default="", help="cluster DNS server addresses, comma separated")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--port", type=int, default=10250,
                   help="port of the node's logs/exec service (0: any free port; -1: none)")
    p.add_argument("--address", default="0.0.0.0", help="address the logs/exec service listens on")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    if args.lease_duration <= 0 or args.renew_interval <= 0 or args.status_interval <= 0:
        raise ConfigError("--lease-duration, --renew-interval and --status-interval must be positive")
    if args.crashloop_backoff_initial <= 0 or args.crashloop_backoff_max < args.crashloop_backoff_initial:
        raise ConfigError("--crashloop-backoff-initial must be positive and at most --crashloop-backoff-max")
    return AgentConfig(
        server=args.server, node_name=args.node_name, node_ip=args.node_ip or default_node_ip(),
        runtime_endpoint=args.container_runtime_endpoint, network_endpoint=args.network_endpoint,
        state_dir=args.state_dir, lease_duration=args.lease_duration, renew_interval=args.renew_interval,
        status_interval=args.status_interval, system_reserved=parse_reservations(args.system_reserved),
        node_labels=parse_key_values(args.node_labels, "--node-labels"), max_pods=args.max_pods,
        pod_workers=args.pod_workers, pleg_period=args.pleg_period, sync_frequency=args.sync_frequency,
        crashloop_initial=args.crashloop_backoff_initial, crashloop_max=args.crashloop_backoff_max,
        cgroup_root=args.cgroup_root,
        cluster_dns=[a.strip() for a in args.cluster_dns.split(",") if a.strip()],
        cluster_domain=args.cluster_domain, port=args.port,
        address=args.address)


async def amain(config: AgentConfig) -> None:
    agent = NodeAgent(config)
    task = asyncio.create_task(agent.run(), name="node-agent")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("node agent stopped; pods keep running")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(amain(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
