"""`kubeling create -f FILE|DIR|-` (create only: an existing object is an error)
and the generators `create namespace NAME`, `create configmap NAME
--from-literal=K=V`, `create deployment NAME --image=IMAGE`."""

from __future__ import annotations

import argparse
import os

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.api.v1 import apps_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError

from .apply import add_file_flags, load
from .common import CliError, ServerErrors, connect, format_api_error, is_connection_error
from .manifests import order_for_apply


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("create", parents=parents, help="create resources from files or by type",
                       description="Create a resource from a file or from stdin, or one of the "
                                   "types below. Unlike apply, an existing object is an error.")
    add_file_flags(p, required=False)
    p.set_defaults(run=run, generator=None)
    gens = p.add_subparsers(dest="generator", metavar="TYPE")
    ns = gens.add_parser("namespace", aliases=["ns"], parents=parents, help="create a namespace")
    ns.add_argument("name")
    ns.set_defaults(generator="namespace")
    cm = gens.add_parser("configmap", aliases=["cm"], parents=parents, help="create a configmap")
    cm.add_argument("name")
    cm.add_argument("--from-literal", action="append", default=[], metavar="KEY=VALUE")
    cm.add_argument("--from-file", action="append", default=[], metavar="[KEY=]PATH")
    cm.set_defaults(generator="configmap")
    dep = gens.add_parser("deployment", aliases=["deploy"], parents=parents,
                          help="create a deployment running an image")
    dep.add_argument("name")
    dep.add_argument("--image", action="append", default=[], required=True)
    dep.add_argument("--replicas", type=int, default=1)
    dep.add_argument("--port", type=int, default=0, help="the port the container exposes")
    dep.set_defaults(generator="deployment")


async def run(args: argparse.Namespace) -> int:
    if args.generator is None:
        if not args.filename:
            raise CliError("must specify one of -f or --filename, or a type to create "
                           "(namespace, configmap, deployment)")
        return await _from_files(args)
    if args.filename:
        raise CliError(f"-f cannot be used with `create {args.generator}`")
    obj = _generate(args)
    async with connect(args.config) as client:
        try:
            created = await client.create(obj)
        except ApiError as e:
            raise ServerErrors([format_api_error(e, client.address)]) from None
    print(f"{kinds.of(created).qualified}/{created.metadata.name} created")
    return 0


def _generate(args: argparse.Namespace) -> Message:
    namespace = args.namespace or "default"
    if args.generator == "namespace":
        obj = kinds.by_kind("Namespace").new()
        obj.metadata.name = args.name
        return obj
    if args.generator == "configmap":
        cm = kinds.by_kind("ConfigMap").new()
        cm.metadata.name = args.name
        cm.metadata.namespace = namespace
        for item in args.from_literal:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CliError(f"invalid literal source {item!r}, expected KEY=VALUE")
            cm.data[key] = value
        for item in args.from_file:
            key, sep, path = item.partition("=")
            if not sep:
                key, path = os.path.basename(item), item
            try:
                with open(path, encoding="utf-8") as f:
                    cm.data[key] = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise CliError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        return cm
    if args.generator == "deployment":
        if args.replicas < 0:
            raise CliError("--replicas must be 0 or more")
        d = kinds.by_kind("Deployment").new()
        d.metadata.name = args.name
        d.metadata.namespace = namespace
        d.metadata.labels["app"] = args.name
        d.spec.replicas = args.replicas
        d.spec.selector.match_labels["app"] = args.name
        d.spec.template.metadata.labels["app"] = args.name
        for image in args.image:
            name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
            c = d.spec.template.spec.containers.add(name=_container_name(name, d), image=image)
            if args.port:
                c.ports.add(container_port=args.port)
        return d
    raise CliError(f"unknown type {args.generator!r}")  # pragma: no cover


def _container_name(base: str, d: apps_pb2.Deployment) -> str:
    taken = {c.name for c in d.spec.template.spec.containers}
    name, n = base or "app", 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


async def _from_files(args: argparse.Namespace) -> int:
    manifests = order_for_apply(load(args, "create"))
    async with connect(args.config) as client:
        await _validate(client, manifests)
        errors = []
        for m in manifests:
            try:
                created = await client.create(m.obj)
            except ApiError as e:
                if is_connection_error(e):
                    raise ServerErrors(errors + [format_api_error(e, client.address)]) from None
                errors.append(format_api_error(e, client.address, f'error when creating {m.quoted}'))
                continue
            print(f"{m.kind.qualified}/{created.metadata.name} created", flush=True)
    if errors:
        raise ServerErrors(errors)
    return 0


async def _validate(client: ApiClient, manifests: list) -> None:
    """Dry-run every create first, so an invalid document means nothing is created."""
    errors = []
    new_namespaces: set[str] = set()
    for m in manifests:
        probe = m.obj
        if m.kind.namespaced and probe.metadata.namespace in new_namespaces:
            probe = type(probe)()
            probe.CopyFrom(m.obj)
            probe.metadata.namespace = "default"
        try:
            await client.create(probe, dry_run=True)
        except ApiError as e:
            if is_connection_error(e):
                raise ServerErrors([format_api_error(e, client.address)]) from None
            errors.append(format_api_error(e, client.address, f'error when creating {m.quoted}'))
            continue
        if m.kind.kind == "Namespace":
            new_namespaces.add(m.obj.metadata.name)
    if errors:
        raise ServerErrors(errors + ["error: nothing was created"])

