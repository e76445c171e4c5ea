"""`kubeling scale deployment|replicaset NAME... --replicas=N [-n NS] [--current-replicas=M]`"""

from __future__ import annotations

import argparse

from kubeling.client.errors import ApiError, ConflictError, retry_on_conflict

from .common import CliError, ServerErrors, connect, format_api_error, is_connection_error, parse_targets

SCALABLE = ("Deployment", "ReplicaSet")


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("scale", parents=parents, help="set the number of replicas",
                       description="Set a new size for a Deployment or ReplicaSet.")
    p.add_argument("targets", nargs="+", metavar="KIND NAME", help="deployment|replicaset NAME, or KIND/NAME")
    p.add_argument("--replicas", type=int, required=True, help="the new number of replicas (0 or more)")
    p.add_argument("--current-replicas", type=int, default=-1,
                   help="precondition: only scale if the current size is this")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise CliError("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    targets = parse_targets(args.targets)
    for kind, names in targets:
        if kind.kind not in SCALABLE:
            raise CliError(f'cannot scale {kind.resource}: only deployments and replicasets can be scaled')
        if not names:
            raise CliError("resource(s) were provided, but no name was specified")
    namespace = args.namespace or "default"
    errors: list[str] = []
    async with connect(args.config) as client:
        for kind, names in targets:
            for name in names:
                async def attempt(kind=kind, name=name) -> None:
                    obj = await client.get(kind, name, namespace=namespace)
                    current = obj.spec.replicas if obj.spec.HasField("replicas") else 1
                    if args.current_replicas >= 0 and current != args.current_replicas:
                        raise CliError(f"expected replicas to be {args.current_replicas}, was {current}")
                    obj.spec.replicas = args.replicas
                    await client.update(obj)
                try:
                    await retry_on_conflict(attempt)
                except ConflictError as e:
                    errors.append(format_api_error(e, client.address))
                    continue
                except ApiError as e:
                    if is_connection_error(e):
                        raise ServerErrors(errors + [format_api_error(e, client.address)]) from None
                    errors.append(format_api_error(e, client.address))
                    continue
                print(f"{kind.qualified}/{name} scaled", flush=True)
    if errors:
        raise ServerErrors(errors)
    return 0
