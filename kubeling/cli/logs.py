"""`kubeling logs POD [CONTAINER] [-c CONTAINER] [-f] [-p] [--tail N] [--timestamps] [-n NS]`,
as kubectl logs.

The API server relays the call to the node the pod runs on (the CLI never
talks to a node). Without -c, a pod's only container is used; for a pod with
several, the one its `kubectl.kubernetes.io/default-container` annotation
names, else the first, with a note on stderr (`Defaulted container "a" out
of: a, b`), as kubectl does. With -f the output follows the container until
it exits (then exit 0) or Ctrl-C.

Wiring: `register(subparsers, parents)` adds the command. Errors are raised
as CliError / ApiError / ServerErrors for kubeling.cli.main to print.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf.message import Message

from kubeling.api.v1 import api_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError

from .common import CliError, ServerErrors, connect, format_api_error

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
_POD_KINDS = ("pod", "pods", "po")


def register(subparsers: argparse._SubParsersAction, parents: list | None = None) -> None:
    p = subparsers.add_parser("logs", parents=parents or [], help="print the logs of a container in a pod",
                              description="Print the logs of a container in a pod (relayed by the API "
                                          "server from the pod's node).")
    p.add_argument("pod", metavar="POD", help="the pod: NAME or pod/NAME")
    p.add_argument("container_arg", nargs="?", metavar="CONTAINER", help="the container (as -c)")
    p.add_argument("-c", "--container", default="", help="the container (default: the pod's only, "
                                                         "or default, container)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the "
                                                              "container exits")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the logs of the previous instance of the container (before its last restart)")
    p.add_argument("--tail", type=int, default=-1, metavar="N",
                   help="only the last N lines (default -1: all of them)")
    p.add_argument("--timestamps", action="store_true", help="begin each line with its time (RFC 3339)")
    p.set_defaults(run=run)


def pod_name(target: str) -> str:
    """`web-1`, `pod/web-1` or `pods/web-1` -> `web-1`; CliError for other kinds."""
    if "/" in target:
        kind, _, name = target.partition("/")
        if kind.lower() not in _POD_KINDS:
            raise CliError(f"only pods have logs and exec here: {target!r} is not pod/NAME")
        target = name
    if not target:
        raise CliError("a pod name is required")
    return target


def choose_container(pod: Message, container: str) -> str:
    """The container to use: the one named, else the pod's default (with
    kubectl's note on stderr when the pod has several)."""
    names = [c.name for c in pod.spec.containers]
    if container or not names:
        return container
    default = pod.metadata.annotations.get(DEFAULT_CONTAINER_ANNOTATION, "")
    if default not in names:
        default = names[0]
    if len(names) > 1:
        everything = names + [f"{c.name} (init)" for c in pod.spec.init_containers]
        print(f'Defaulted container "{default}" out of: {", ".join(everything)}', file=sys.stderr)
    return default


def relay_error(err: ApiError, address: str) -> Exception:
    """An error from a relayed call, ready for main to print. A node that
    cannot be reached is the API server's answer, not a failure to reach the
    API server (which the same status code would otherwise mean)."""
    if err.code == grpc.StatusCode.UNAVAILABLE and err.message.startswith('node "'):
        return ServerErrors([f"Error from server (ServiceUnavailable): {err.message}"])
    if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:  # relayed calls carry no deadline of ours
        return ServerErrors([f"Error from server (Timeout): {err.message}"])
    return ServerErrors([format_api_error(err, address)])


async def get_pod(client: ApiClient, name: str, namespace: str) -> Message:
    try:
        return await client.get("pods", name, namespace=namespace)
    except ApiError as e:
        raise ServerErrors([format_api_error(e, client.address)]) from None


async def run(args: argparse.Namespace) -> int:
    name = pod_name(args.pod)
    if args.container and args.container_arg and args.container != args.container_arg:
        raise CliError("only one of -c or an inline container name is allowed")
    namespace = args.namespace or "default"
    request = api_pb2.LogsRequest(namespace=namespace, name=name, follow=args.follow,
                                  previous=args.previous, timestamps=args.timestamps)
    if args.tail >= 0:
        request.tail_lines = args.tail
    out = sys.stdout.buffer
    async with connect(args.config) as client:
        pod = await get_pod(client, name, namespace)
        request.container = choose_container(pod, args.container or args.container_arg or "")
        try:
            async for data in client.logs(request):
                out.write(data)
                out.flush()
        except ApiError as e:
            raise relay_error(e, client.address) from None
    return 0
