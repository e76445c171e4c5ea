"""`kubeling exec POD [-c CONTAINER] [-n NS] -- CMD ARGS...`, as kubectl exec
without a terminal or input.

The API server relays the command to the node the pod runs on, which runs
it in the container (CRI ExecSync) and answers when it has finished. Its
standard output and error are written to ours, and its exit code becomes
kubeling's: 0, or the command's code with `command terminated with exit code
N` on stderr, as kubectl prints it. `-i` / `-t` (an interactive session) are
refused with a clear error.

Wiring: `register(subparsers, parents)` adds the command. Errors are raised
as CliError / ServerErrors for kubeling.cli.main to print.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


from kubeling.api.v1 import api_pb2
from kubeling.client.errors import ApiError

from .common import CliError, connect
from .logs import choose_container, get_pod, pod_name, relay_error

_INTERACTIVE = "interactive sessions (-i/--stdin, -t/--tty) are not supported: kubeling exec runs " \
               "a command without a terminal or input and prints its output when it ends"


def register(subparsers: argparse._SubParsersAction, parents: list | None = None) -> None:
    p = subparsers.add_parser("exec", parents=parents or [], help="run a command in a container",
                              description="Run a command in a container of a pod and print its output; "
                                          "kubeling exits with the command's exit code.")
    _add_flags(p)
    p.add_argument("pod", metavar="POD", help="the pod: NAME or pod/NAME")
    # Everything after the pod: flags given after it, then `--`, then the command.
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]",
                   help="the command and its arguments, after --")
    p.set_defaults(run=run)


def _add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--container", default="", help="the container (default: the pod's only, "
                                                         "or default, container)")
    p.add_argument("-i", "--stdin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-t", "--tty", action="store_true", help=argparse.SUPPRESS)


class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def split_command(args: argparse.Namespace) -> list[str]:
    """The command, after any flags written between the pod and `--`
    (argparse leaves those in the remainder); those flags are applied to `args`."""
    rest = list(args.command)
    if rest and rest[0].startswith("-") and rest[0] != "--":
        if "--" not in rest:
            raise CliError("the command must follow --: kubeling exec POD [-c CONTAINER] -- COMMAND [ARG...]")
        cut = rest.index("--")
        flags = _FlagParser(prog="kubeling exec", add_help=False)
        _add_flags(flags)
        flags.add_argument("-n", "--namespace", default=None)
        parsed = flags.parse_args(rest[:cut])
        args.container = parsed.container or args.container
        args.stdin = args.stdin or parsed.stdin
        args.tty = args.tty or parsed.tty
        if parsed.namespace:
            args.namespace = parsed.namespace
        rest = rest[cut + 1:]
    elif rest and rest[0] == "--":
        rest = rest[1:]
    return rest


async def run(args: argparse.Namespace) -> int:
    name = pod_name(args.pod)
    command = split_command(args)
    if args.stdin or args.tty:
        raise CliError(_INTERACTIVE)
    if not command:
        raise CliError("you must specify at least one command for the container: "
                       "kubeling exec POD [-c CONTAINER] -- COMMAND [ARG...]")
    namespace = args.namespace or "default"
    async with connect(args.config) as client:
        pod = await get_pod(client, name, namespace)
        request = api_pb2.ExecRequest(namespace=namespace, name=name, command=command,
                                      container=choose_container(pod, args.container))
        try:
            resp = await client.exec(request)
        except ApiError as e:
            raise relay_error(e, client.address) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.buffer.flush()
    if resp.exit_code != 0:
        print(f"command terminated with exit code {resp.exit_code}", file=sys.stderr)
        return resp.exit_code if 0 < resp.exit_code < 256 else 1
    return 0
