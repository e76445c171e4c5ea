"""python -m node_agent.network: the node's network service on a unix socket.

    python -m node_agent.network --listen unix:///run/kubeling/network.sock \\
        --node-name node-1 --state-dir /var/lib/kubeling/network \\
        [--server 127.0.0.1:6443 | --pod-cidr 10.244.1.0/24] [--netns node-1] \\
        [--mode host-gw|vxlan] [--bridge kubeling0] [--cluster-cidr 10.244.0.0/16]

With --server (or a kubeling client config) it follows the Nodes: this
node's spec.podCIDR, and routes to every other node. With only --pod-cidr
it serves that CIDR and makes no cross-node routes. --netns names the
node's own network namespace (the one-machine cluster); without it the
service works in its own namespace. Logs "listening on ..." when ready.
SIGTERM / SIGINT stop it; pods keep their networking.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import grpc

from node_agent.network import service
from node_agent.network.config import (
    DEFAULT_BRIDGE,
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_MTU,
    DEFAULT_STATE_DIR,
    MODES,
    VXLAN_OVERHEAD,
    NetworkConfig,
    parse_subnet,
)
from node_agent.network.errors import CniError
from node_agent.network.network import PodNetwork
from node_agent.network.routes import RouteManager

log = logging.getLogger("node_agent.network")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m node_agent.network", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="unix:///run/kubeling/network.sock", help="gRPC address (unix:///path)")
    p.add_argument("--node-name", required=True, help="this node's Node name")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="IPAM state directory")
    p.add_argument("--server", default="", help="API server address (insecure); default: the client config")
    p.add_argument("--pod-cidr", default="", help="serve this pod CIDR instead of the Node's spec.podCIDR")
    p.add_argument("--netns", default="", help="the node's network namespace (name or path)")
    p.add_argument("--mode", choices=MODES, default="host-gw", help="how pods on other nodes are reached")
    p.add_argument("--bridge", default=DEFAULT_BRIDGE)
    p.add_argument("--cluster-cidr", default=DEFAULT_CLUSTER_CIDR, help="traffic leaving it is masqueraded")
    p.add_argument("--mtu", type=int, default=0, help=f"pod MTU (default {DEFAULT_MTU}, minus "
                                                      f"{VXLAN_OVERHEAD} in vxlan mode)")
    p.add_argument("--network-name", default="kubeling")
    p.add_argument("--no-masquerade", action="store_true", help="do not masquerade traffic leaving the cluster")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    mtu = args.mtu or (DEFAULT_MTU - VXLAN_OVERHEAD if args.mode == "vxlan" else DEFAULT_MTU)
    config = NetworkConfig(name=args.network_name, bridge=args.bridge, mtu=mtu,
                           cluster_cidr=parse_subnet(args.cluster_cidr, "--cluster-cidr"),
                           ip_masq=not args.no_masquerade, state_dir=args.state_dir)
    if args.pod_cidr:
        config = config.with_subnet(args.pod_cidr)
    network = PodNetwork(config, args.netns or None)
    await network.start()

    client = watcher = None
    if args.server or not args.pod_cidr:
        from kubeling.client.api_client import ApiClient
        from node_agent.network.node_watch import NodeWatcher
        client = ApiClient(args.server) if args.server else ApiClient.from_config()
        watcher = NodeWatcher(client, args.node_name, network, RouteManager(network.node_ipr, args.mode,
                                                                            vxlan_mtu=mtu),
                              fixed_pod_cidr=bool(args.pod_cidr))
        await watcher.start()

    server = grpc.aio.server()
    service.add_to_server(service.NetworkServicer(network, args.mode), server)
    if args.listen.startswith("unix://"):
        path = args.listen[len("unix://"):]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            os.unlink(path)  # a socket left by a previous run
        except FileNotFoundError:
            pass
    server.add_insecure_port(args.listen)
    await server.start()
    log.info("listening on %s (node %s, pod CIDR %s, mode %s)", args.listen, args.node_name,
             network.config.subnet or "pending", args.mode)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await server.stop(grace=2)
    if watcher is not None:
        await watcher.stop()
    if client is not None:
        await client.close()
    await network.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(serve(args))
    except CniError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
