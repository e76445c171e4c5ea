"""`kubeling hollow-nodes --count N [--name-prefix P] [--cpu 4] [--memory 16Gi] [--pods 110] ...`

Runs N simulated nodes (kubemark's hollow nodes) against the configured
cluster, in the foreground, until Ctrl-C or SIGTERM. The nodes run in a
child process (`python -m node_agent.hollow`, as `kubeling up` starts every
component), so the CLI itself stays a plain client: it resolves the client
configuration, hands its path to the child, forwards stop signals and exits
with the child's status (0 after a clean stop; 1 with the child's `error:`
line for bad flags or configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from kubeling.config import config_path, load_config

MODULE = "node_agent.hollow"

# Flags passed through to the child when given; the child owns the defaults
# (shown in the help) and validates the values.
_PASS_THROUGH = (
    ("--name-prefix", str, "node names are PREFIX1 .. PREFIXN (default: hollow-node-)"),
    ("--first-index", int, "number of the first node (default: 1)"),
    ("--cpu", str, "CPU capacity of each node (default: 4)"),
    ("--memory", str, "memory capacity of each node (default: 16Gi)"),
    ("--pods", str, "pod capacity of each node (default: 110)"),
    ("--lease-duration", int, "leaseDurationSeconds of each node Lease (default: 40)"),
    ("--renew-interval", float, "seconds between Lease renewals (default: 1)"),
    ("--status-interval", float, "seconds between Ready heartbeats in node status (default: 10)"),
    ("--pod-workers", int, "pod status writes in flight (default: 32)"),
    ("--api-concurrency", int, "lease / node status writes in flight (default: 64)"),
    ("--stats-interval", float, "seconds between progress lines; 0 for none (default: 30)"),
    ("--log-level", str, "DEBUG, INFO, WARNING or ERROR (default: INFO)"),
)


def register(subparsers: argparse._SubParsersAction, parents: list | tuple = ()) -> argparse.ArgumentParser:
    """Add the `hollow-nodes` command. `parents` are the CLI's common flags
    (its --config is honoured)."""
    p = subparsers.add_parser(
        "hollow-nodes", parents=list(parents), help="run N simulated nodes in the foreground",
        description="Run N hollow nodes (simulated node agents, like kubemark) against the cluster "
                    "until interrupted. They register Nodes, renew their Leases and report pods "
                    "bound to them Running; they never run a container.")
    p.add_argument("--count", type=int, required=True, help="how many nodes to run")
    for flag, type_, help_ in _PASS_THROUGH:
        p.add_argument(flag, type=type_, default=argparse.SUPPRESS, help=help_)
    p.set_defaults(run=run)
    return p


add_parser = register  # the name the other verb modules use


def child_argv(args: argparse.Namespace, config: str) -> list[str]:
    """The command line of the child process for parsed `args`."""
    argv = [sys.executable, "-m", MODULE, "--config", config, "--count", str(args.count)]
    for flag, _type, _help in _PASS_THROUGH:
        dest = flag.lstrip("-").replace("-", "_")
        if hasattr(args, dest):
            argv += [flag, str(getattr(args, dest))]
    return argv


async def run(args: argparse.Namespace) -> int:
    path = str(config_path(getattr(args, "config", None)).resolve())
    load_config(path)  # a missing or broken configuration is one error line, here
    proc = await asyncio.create_subprocess_exec(*child_argv(args, path))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        return await proc.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if proc.returncode is None:  # cancelled from outside: do not leave it behind
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
