"""`kubeling get KIND[,KIND2] [NAME...] [-n NS | -A] [-l SEL] [--field-selector S]
[-o wide|yaml|json|name] [-w] [--show-labels]`"""

from __future__ import annotations

import argparse
import sys

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError, GoneError, NotFoundError

from . import printers
from .common import CliError, ServerErrors, connect, format_api_error, parse_targets


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("get", parents=parents, help="display one or many resources",
                       description="Display one or many resources, as `kubectl get` does.")
    p.add_argument("targets", nargs="*", metavar="KIND[,KIND] [NAME ...]",
                   help="kind (pods, po, deploy, svc, ...) and optional names, or KIND/NAME")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="list across all namespaces")
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. app=web,tier!=db")
    p.add_argument("--field-selector", default="", help="field selector, e.g. status.phase=Running")
    p.add_argument("-o", "--output", default="", type=output_format,
                   metavar="FORMAT", help="wide, yaml, json or name")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after listing, watch for changes (Ctrl-C to stop)")
    p.add_argument("--show-labels", action="store_true", help="show labels as the last column")
    p.set_defaults(run=run, watch_mode=False)


def output_format(value: str) -> str:
    if value and value not in printers.OUTPUT_FORMATS:
        raise argparse.ArgumentTypeError(
            f'unable to match a printer suitable for the output format "{value}", allowed formats '
            f'are: {",".join(sorted(printers.OUTPUT_FORMATS))}')
    return value


async def run(args: argparse.Namespace) -> int:
    targets = parse_targets(args.targets)
    if args.watch:
        args.watch_mode = True  # main: Ctrl-C ends a watch with exit code 0
    if args.all_namespaces and any(names for _, names in targets):
        raise CliError("a resource cannot be retrieved by name across all namespaces")
    namespace = "" if args.all_namespaces else (args.namespace or "default")
    out = sys.stdout
    async with connect(args.config) as client:
        if args.watch:
            if len(targets) != 1:
                raise CliError("watch is only supported on individual resources and resource "
                               f"collections, but {len(targets)} resources were found")
            return await _watch(client, targets[0][0], targets[0][1], namespace, args)
        errors: list[str] = []
        found: list[tuple[kinds.Kind, list[Message]]] = []
        any_names = any(names for _, names in targets)
        for kind, names in targets:
            objs = await _fetch(client, kind, names, namespace, args, errors)
            found.append((kind, objs))
        all_objs = [o for _, objs in found for o in objs]
        if args.output in ("yaml", "json", "name"):
            # A named object prints bare; anything else as a List (an empty one too,
            # unless every named object was missing).
            if all_objs or not any_names:
                single = any_names and len(targets) == 1 and len(targets[0][1]) == 1
                out.write(printers.render_objects(all_objs, args.output, single))
        else:
            first = True
            show_kind = len(targets) > 1
            for kind, objs in found:
                if not objs:
                    continue
                if not first:
                    out.write("\n")
                first = False
                printer = printers.TablePrinter(
                    kind, wide=args.output == "wide", all_namespaces=args.all_namespaces,
                    show_labels=args.show_labels, show_kind=show_kind)
                out.write(printer.render(printers.sort_for_table(kind, objs)))
        out.flush()
        if not all_objs and not errors and args.output not in ("yaml", "json"):
            print(_no_resources(targets, namespace), file=sys.stderr)
        if errors:
            raise ServerErrors(errors)
        return 0


def _no_resources(targets: list[tuple[kinds.Kind, list[str]]], namespace: str) -> str:
    if namespace and any(k.namespaced for k, _ in targets):
        return f"No resources found in {namespace} namespace."
    return "No resources found"


async def _fetch(client: ApiClient, kind: kinds.Kind, names: list[str], namespace: str,
                 args: argparse.Namespace, errors: list[str]) -> list[Message]:
    if not names:
        try:
            return (await client.list_all(kind, namespace=namespace, label_selector=args.selector,
                                          field_selector=args.field_selector)).items
        except ApiError as e:
            raise ServerErrors([format_api_error(e, client.address)]) from None
    objs = []
    for name in names:
        try:
            obj = await client.get(kind, name, namespace=namespace or "default")
        except NotFoundError as e:
            errors.append(format_api_error(e, client.address))
            continue
        except ApiError as e:
            raise ServerErrors([format_api_error(e, client.address)]) from None
        objs.append(obj)
    return objs


async def _watch(client: ApiClient, kind: kinds.Kind, names: list[str], namespace: str,
                 args: argparse.Namespace) -> int:
    """Print the current objects, then one more line (or document) per change."""
    out = sys.stdout
    field_selector = args.field_selector
    if names:
        if len(names) > 1:
            raise CliError("watch is only supported on a single named resource")
        name_sel = f"metadata.name={names[0]}"
        field_selector = f"{field_selector},{name_sel}" if field_selector else name_sel
    printer = printers.TablePrinter(kind, wide=args.output == "wide",
                                    all_namespaces=args.all_namespaces, show_labels=args.show_labels)
    structured = args.output in ("yaml", "json", "name")
    header_done = False
    try:
        while True:
            listed = await client.list_all(kind, namespace=namespace, label_selector=args.selector,
                                           field_selector=field_selector)
            items = printers.sort_for_table(kind, listed.items)
            if structured:
                for obj in items:
                    out.write(printers.render_watch_object(obj, args.output))
            elif items:
                out.write(printer.render(items, header=not header_done))
                header_done = True
            elif not header_done:
                print(_no_resources([(kind, names)], namespace), file=sys.stderr)
            out.flush()
            try:
                async for event in client.watch(kind, namespace=namespace, label_selector=args.selector,
                                                field_selector=field_selector,
                                                resource_version=listed.resource_version):
                    if event.type == "BOOKMARK":
                        continue
                    if structured:
                        out.write(printers.render_watch_object(event.object, args.output))
                    else:
                        if not header_done:
                            out.write(printer.render([], header=True))
                            header_done = True
                        out.write(printer.row(event.object))
                    out.flush()
            except GoneError:
                continue  # our version was compacted away: list again and carry on
            return 0
    except ApiError as e:
        raise ServerErrors([format_api_error(e, client.address)]) from None
