"""python -m node_agent.runtime --listen unix:///run/kubeling/runtime.sock --state-dir DIR

Runs kubeling's CRI runtime service until SIGTERM or SIGINT. Containers keep
running when it stops (conmon is their parent), and a restarted service
picks them up from its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from node_agent.runtime.network import CniServiceNetwork, LoopbackNetwork
from node_agent.runtime.runtime import Runtime
from node_agent.runtime.server import serve

DEFAULT_LISTEN = "unix:///run/kubeling/runtime.sock"
DEFAULT_STATE_DIR = "/var/lib/kubeling/runtime"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m node_agent.runtime", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="unix socket (default %(default)s)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, type=Path,
                   help="images, bundles, records (default %(default)s)")
    p.add_argument("--cgroup-root", default="/kubeling",
                   help="cgroup under which pod cgroups are made (default %(default)s)")
    p.add_argument("--runc", default="runc", help="runc binary")
    p.add_argument("--conmon", default="conmon", help="conmon binary")
    p.add_argument("--insecure-registry", action="append", default=[],
                   help="registry host[:port] reached over plain HTTP (loopback ones always are)")
    p.add_argument("--network-endpoint", default="",
                   help="kubeling network service socket (unix:///run/kubeling/network.sock); "
                        "without it pods get loopback only")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    network = CniServiceNetwork(args.network_endpoint) if args.network_endpoint else LoopbackNetwork()
    runtime = Runtime(args.state_dir, runc_binary=args.runc, conmon_binary=args.conmon,
                      cgroup_root=args.cgroup_root, network=network,
                      insecure_registries=tuple(args.insecure_registry))
    server = await serve(runtime, args.listen)
    logging.info("kubeling runtime serving CRI on %s, state in %s", args.listen, args.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
