"""python -m services.apiserver --etcd-servers 127.0.0.1:2379 --bind 127.0.0.1:6443"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .server import ApiServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="kubeling-apiserver", description=__doc__)
    parser.add_argument("--etcd-servers", required=True,
                        help="comma-separated etcd client endpoints (host:port); fails over in order")
    parser.add_argument("--bind", default="127.0.0.1:6443", help="address to serve the API on")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_run(ApiServer(args.etcd_servers.split(","), args.bind)))


async def _run(server: ApiServer) -> None:
    await server.start()
    print(f"apiserver listening on {server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    main()
