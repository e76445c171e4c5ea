"""`kubeling delete KIND NAME... | KIND/NAME... | KIND -l SEL | KIND --all | -f FILE|DIR|-`

Flags as kubectl's: -n, --grace-period, --now, --force, --cascade,
--wait, --timeout, --ignore-not-found. Prints `deployment.apps "web" deleted`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError, NotFoundError

from .apply import add_file_flags, load
from .common import CliError, ServerErrors, connect, format_api_error, is_connection_error, parse_targets

_CASCADE = {"background": "Background", "true": "Background", "foreground": "Foreground",
            "orphan": "Orphan", "false": "Orphan"}


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("delete", parents=parents, help="delete resources by name, selector or file",
                       description="Delete resources by file names, stdin, kinds and names, "
                                   "or kinds and label selector.")
    p.add_argument("targets", nargs="*", metavar="KIND [NAME ...]",
                   help="kind and names, or KIND/NAME")
    add_file_flags(p, required=False)
    p.add_argument("-l", "--selector", default="", help="delete every object matching this label selector")
    p.add_argument("--all", action="store_true", help="delete every object of the kind in the namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="with --all or -l, across all namespaces")
    p.add_argument("--grace-period", type=int, default=-1, metavar="SECONDS",
                   help="seconds a pod gets to stop; -1 (default) uses the pod's own setting, "
                        "0 removes it at once")
    p.add_argument("--now", action="store_true", help="same as --grace-period=1")
    p.add_argument("--force", action="store_true", help="remove at once (--grace-period=0)")
    p.add_argument("--cascade", default="background", type=str.lower, choices=sorted(_CASCADE),
                   help="what happens to dependents: background (default), foreground or orphan")
    p.add_argument("--wait", nargs="?", const="true", default="false", type=str.lower,
                   choices=("true", "false"), help="wait until the objects are really gone")
    p.add_argument("--timeout", default="0", help="how long --wait waits (e.g. 30s, 2m); 0 means no limit")
    p.add_argument("--ignore-not-found", action="store_true",
                   help="treat an object that does not exist as deleted")
    p.set_defaults(run=run)


def parse_duration(text: str) -> float:
    """`30`, `30s`, `2m`, `1h30m`, `500ms` -> seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise CliError(f"invalid duration {text!r} (use e.g. 30s, 2m, 1h)")
    return total


async def run(args: argparse.Namespace) -> int:
    grace = args.grace_period
    if args.now:
        grace = 1
    if args.force:
        grace = 0
    grace_arg = None if grace < 0 else grace
    propagation = _CASCADE[args.cascade]
    wait = args.wait == "true"
    timeout = parse_duration(args.timeout)
    if args.filename:
        if args.targets:
            raise CliError("there is no need to specify a resource type and names with -f")
        manifests = load(args, "delete")
        # Contents before the namespaces that hold them.
        ordered = ([m for m in manifests if m.kind.kind != "Namespace"]
                   + [m for m in manifests if m.kind.kind == "Namespace"])
        work = [(m.kind, m.obj.metadata.name, m.obj.metadata.namespace, f'error when deleting {m.quoted}')
                for m in ordered]
    else:
        work = []
    async with connect(args.config) as client:
        if not args.filename:
            work = await _targets(client, args)
        errors: list[str] = []
        deleted: list[tuple[kinds.Kind, str, str, str]] = []
        for kind, name, namespace, context in work:
            try:
                result = await client.delete(kind, name, namespace=namespace or "default",
                                             grace_period_seconds=grace_arg,
                                             propagation_policy=propagation)
            except NotFoundError as e:
                if not args.ignore_not_found:
                    errors.append(format_api_error(e, client.address, context))
                continue
            except ApiError as e:
                if is_connection_error(e):
                    raise ServerErrors(errors + [format_api_error(e, client.address)]) from None
                errors.append(format_api_error(e, client.address, context))
                continue
            print(f'{kind.qualified} "{name}" deleted', flush=True)
            if result.pending:
                deleted.append((kind, name, namespace, result.object.metadata.uid))
        if wait and deleted:
            errors += await _wait_gone(client, deleted, timeout)
    if errors:
        raise ServerErrors(errors)
    return 0


async def _targets(client: ApiClient, args: argparse.Namespace) -> list[tuple[kinds.Kind, str, str, str]]:
    targets = parse_targets(args.targets)
    has_names = any(names for _, names in targets)
    if has_names and (args.selector or args.all):
        raise CliError("name cannot be provided when a selector or --all is specified")
    if not has_names and not args.selector and not args.all:
        raise CliError("resource(s) were provided, but no name was specified "
                       "(use NAME, -l SELECTOR or --all)")
    namespace = args.namespace or "default"
    work = []
    for kind, names in targets:
        if names:
            work += [(kind, n, namespace, "") for n in names]
            continue
        list_ns = "" if args.all_namespaces else namespace
        try:
            listed = await client.list_all(kind, namespace=list_ns, label_selector=args.selector)
        except ApiError as e:
            raise ServerErrors([format_api_error(e, client.address)]) from None
        work += [(kind, o.metadata.name, o.metadata.namespace, "") for o in listed.items]
    if not work:
        print("No resources found", file=sys.stderr, flush=True)
    return work


async def _wait_gone(client: ApiClient, objs: list[tuple[kinds.Kind, str, str, str]],
                     timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    remaining = list(objs)
    while remaining:
        still = []
        for kind, name, namespace, uid in remaining:
            try:
                obj: Message = await client.get(kind, name, namespace=namespace or "default")
            except NotFoundError:
                continue
            if uid and obj.metadata.uid != uid:
                continue  # gone, and something new took the name
            still.append((kind, name, namespace, uid))
        remaining = still
        if not remaining:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return [f'error: timed out waiting for {kind.qualified} "{name}" to be deleted'
                    for kind, name, _, _ in remaining]
        await asyncio.sleep(0.25)
    return []
