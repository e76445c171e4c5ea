"""`kubeling set image KIND/NAME CONTAINER=IMAGE [...]`, as `kubectl set image`.

Changes the image of the named containers (init containers included; `*`
names every container) of Deployments, ReplicaSets or Pods, and prints
`deployment.apps/web image updated` for each object. For a Deployment this
starts a rollout. A container name the object does not have is an error and
nothing is written for that object.

Wiring: `register(subparsers, parents)` adds `set` with its `image`
subcommand, which sets `run` (and `func`), an `async def (args) -> int`.
"""

from __future__ import annotations

import argparse

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.errors import retry_on_conflict

from .common import CliError, connect, parse_targets

SUPPORTED = ("Deployment", "ReplicaSet", "Pod")


def register(subparsers: argparse._SubParsersAction, parents: list | None = None) -> None:
    """Add `set image`. With `parents` (main's common -n/--config parser)
    those flags come from there; without, they are added here."""
    set_ = subparsers.add_parser("set", help="set specific features on objects",
                                 description="Configure application resources.")
    sub = set_.add_subparsers(dest="set_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("image", parents=_parents(parents), help="update the image of containers",
                       description="Update existing container image(s) of resources.")
    p.add_argument("arguments", nargs="+", metavar="KIND/NAME CONTAINER=IMAGE",
                   help="objects (KIND/NAME or KIND NAME...) then CONTAINER=IMAGE pairs; * for every container")
    p.set_defaults(run=run, func=run)


def _parents(parents: list | None) -> list:
    if parents is not None:
        return list(parents)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("-n", "--namespace", default=None, help='the namespace (default: "default")')
    own.add_argument("--config", "--kubeconfig", dest="config", default=None, metavar="PATH",
                     help="client configuration file")
    return [own]


def parse_arguments(arguments: list[str]) -> tuple[list[tuple[kinds.Kind, list[str]]], dict[str, str]]:
    """(targets, {container: image}) from the positional arguments."""
    targets = [a for a in arguments if "=" not in a]
    pairs = [a for a in arguments if "=" in a]
    if not pairs:
        raise CliError("at least one image update is required")
    images: dict[str, str] = {}
    for pair in pairs:
        container, _, image = pair.partition("=")
        if not container or not image:
            raise CliError(f"invalid image update {pair!r}: expected CONTAINER=IMAGE")
        images[container] = image
    parsed = parse_targets(targets)
    for kind, names in parsed:
        if kind.kind not in SUPPORTED:
            raise CliError(f"cannot set the image of {kind.resource}: only deployments, "
                           "replicasets and pods have containers here")
        if not names:
            raise CliError("resource(s) were provided, but no name was specified")
    return parsed, images


def pod_spec_of(obj: Message) -> Message:
    return obj.spec if kinds.of(obj).kind == "Pod" else obj.spec.template.spec


def set_images(obj: Message, images: dict[str, str]) -> bool:
    """Apply `images` to the object's containers; True if anything changed.
    CliError naming a container the object does not have."""
    spec = pod_spec_of(obj)
    containers = [*spec.init_containers, *spec.containers]
    changed = False
    for name, image in images.items():
        matched = [c for c in containers if name == "*" or c.name == name]
        if not matched:
            raise CliError(f'unable to find container named "{name}"')
        for c in matched:
            if c.image != image:
                c.image = image
                changed = True
    return changed


async def run(args: argparse.Namespace) -> int:
    targets, images = parse_arguments(args.arguments)
    namespace = getattr(args, "namespace", None) or "default"
    async with connect(getattr(args, "config", None)) as client:
        for kind, names in targets:
            for name in names:
                async def attempt(kind=kind, name=name) -> None:
                    obj = await client.get(kind, name, namespace)
                    if set_images(obj, images):
                        await client.update(obj)
                await retry_on_conflict(attempt)
                print(f"{kind.qualified}/{name} image updated", flush=True)
    return 0
