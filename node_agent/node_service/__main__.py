"""python -m node_agent.node_service --listen 0.0.0.0:10250 --container-runtime-endpoint unix:///run/kubeling/runtime.sock

Serves the Node service (logs and exec) on its own, for a node whose agent
does not embed it, or to try it against any CRI runtime. Prints
"node service listening on port N" when ready; SIGTERM / SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .server import start_node_service


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m node_agent.node_service", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="0.0.0.0:10250", help="host:port to serve on (default %(default)s)")
    p.add_argument("--container-runtime-endpoint", default="unix:///run/kubeling/runtime.sock",
                   help="the CRI runtime's socket (default %(default)s)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    running = await start_node_service(args.listen, args.container_runtime_endpoint)
    print(f"node service listening on port {running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
