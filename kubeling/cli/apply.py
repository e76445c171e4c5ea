"""`kubeling apply -f FILE|DIR|- [-n NS]`: make the cluster match manifests.

All or nothing, as far as validation goes:
  1. every document is read and turned into a typed object (a bad field in
     any document stops everything, naming file, document and field);
  2. every object is sent to the server with dry_run (create for new objects,
     update for existing ones), so server-side validation errors also stop
     everything before a single write;
  3. objects are created or updated, Namespaces first, then in file order,
     printing `deployment.apps/web created|configured|unchanged`.

An update replaces what the manifest owns (labels, annotations, spec, or the
data of a ConfigMap/Secret) on the live object, keeps its status and the
fields the cluster filled in (a Service's clusterIP and nodePorts, a pod's
node, replicas left to a scaler when the manifest does not set them), and
writes with the live resourceVersion, retrying on conflict.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import AlreadyExistsError, ApiError, NotFoundError, retry_on_conflict
from kubeling.objects import copy

from .common import CliError, ServerErrors, connect, format_api_error, is_connection_error
from .manifests import (Manifest, ManifestReadError, order_for_apply, read_manifests,
                        require_names, resolve_namespaces)

# Top-level fields that are never taken from a manifest on update.
_NOT_FROM_MANIFEST = ("api_version", "kind", "metadata", "status")
# Annotation domains the cluster writes; kept unless the manifest sets the key.
_SYSTEM_ANNOTATION_DOMAINS = ("kubernetes.io/", "k8s.io/", "kubeling.io/")


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("apply", parents=parents, help="apply a configuration from files or stdin",
                       description="Create or update objects from manifests (YAML or JSON).")
    add_file_flags(p, required=True)
    p.set_defaults(run=run)


def add_file_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], required=required,
                   metavar="FILE|DIR|-", help="manifest file, directory of manifests, or - for stdin "
                                              "(repeatable)")
    p.add_argument("-R", "--recursive", action="store_true",
                   help="read directories given with -f recursively")


def load(args: argparse.Namespace, verb: str) -> list[Manifest]:
    """Read, convert and name-check every manifest, or raise CliError listing every problem."""
    try:
        manifests = read_manifests(args.filename, recursive=args.recursive)
        resolve_namespaces(manifests, args.namespace)
        if verb != "create":
            require_names(manifests, verb)
    except ManifestReadError as e:
        raise CliError("\nerror: ".join(e.errors)) from None
    return manifests


@dataclass
class _Plan:
    manifest: Manifest
    exists: bool


async def run(args: argparse.Namespace) -> int:
    manifests = order_for_apply(load(args, "apply"))
    async with connect(args.config) as client:
        plans = await _dry_run(client, manifests)
        errors: list[str] = []
        for plan in plans:
            m = plan.manifest
            try:
                result = await _apply_one(client, m.obj, plan.exists)
            except ApiError as e:
                if is_connection_error(e):
                    raise ServerErrors(errors + [format_api_error(e, client.address)]) from None
                verb = "applying patch to" if plan.exists else "creating"
                errors.append(format_api_error(e, client.address, f'error when {verb} {m.quoted}'))
                continue
            print(f"{m.kind.qualified}/{m.obj.metadata.name} {result}", flush=True)
    if errors:
        raise ServerErrors(errors)
    return 0


async def _dry_run(client: ApiClient, manifests: list[Manifest]) -> list[_Plan]:
    """Ask the server to validate every object; ServerErrors (nothing written) on any problem."""
    plans: list[_Plan] = []
    errors: list[str] = []
    # Namespaces this apply creates: objects in them cannot be checked against
    # their real namespace yet, so they are validated as if in "default".
    new_namespaces: set[str] = set()
    for m in manifests:
        obj, kind = m.obj, m.kind
        meta = obj.metadata
        try:
            try:
                live = await client.get(kind, meta.name, namespace=meta.namespace)
            except NotFoundError:
                live = None
            if live is None:
                probe = obj
                if kind.namespaced and meta.namespace in new_namespaces:
                    probe = copy(obj)
                    probe.metadata.namespace = "default"
                await client.create(probe, dry_run=True)
                if kind.kind == "Namespace":
                    new_namespaces.add(meta.name)
            else:
                await client.update(merge_for_apply(live, obj), dry_run=True)
        except ApiError as e:
            if is_connection_error(e):
                raise ServerErrors([format_api_error(e, client.address)]) from None
            verb = "creating" if live is None else "applying patch to"
            errors.append(format_api_error(e, client.address, f'error when {verb} {m.quoted}'))
            continue
        plans.append(_Plan(m, live is not None))
    if errors:
        errors.append("error: nothing was applied")
        raise ServerErrors(errors)
    return plans


async def _apply_one(client: ApiClient, obj: Message, exists: bool) -> str:
    kind = kinds.of(obj)
    meta = obj.metadata
    if not exists:
        try:
            await client.create(obj)
            return "created"
        except AlreadyExistsError:
            pass  # someone created it since the dry run: update it instead

    async def attempt() -> str:
        try:
            live = await client.get(kind, meta.name, namespace=meta.namespace)
        except NotFoundError:
            await client.create(obj)  # deleted since the dry run
            return "created"
        updated = await client.update(merge_for_apply(live, obj))
        if updated.metadata.resource_version == live.metadata.resource_version:
            return "unchanged"
        return "configured"

    return await retry_on_conflict(attempt)


def merge_for_apply(live: Message, manifest: Message) -> Message:
    """The live object with everything the manifest owns replaced by the manifest's.

    Kept from `live`: status, server-set metadata (uid, resourceVersion,
    timestamps, generation), owner references and finalizers (unless the
    manifest sets them), annotations the cluster wrote (unless the manifest
    sets the key), and fields the cluster filled in that the manifest leaves
    unset (see `_keep_assigned`).
    """
    new = copy(live)
    kind = kinds.of(live)
    # metadata: labels and annotations belong to the manifest
    meta, want = new.metadata, manifest.metadata
    meta.labels.clear()
    meta.labels.update(want.labels)
    system = {k: v for k, v in live.metadata.annotations.items()
              if _is_system_annotation(k) and k not in want.annotations}
    meta.annotations.clear()
    meta.annotations.update(want.annotations)
    meta.annotations.update(system)
    if want.owner_references:
        del meta.owner_references[:]
        meta.owner_references.extend(want.owner_references)
    if want.finalizers:
        del meta.finalizers[:]
        meta.finalizers.extend(want.finalizers)
    # body: every other top-level field (spec, data, type, subsets, ...)
    body = copy(manifest)
    for name in _NOT_FROM_MANIFEST:
        if name in body.DESCRIPTOR.fields_by_name:
            body.ClearField(name)
    for field in new.DESCRIPTOR.fields:
        if field.name not in _NOT_FROM_MANIFEST:
            new.ClearField(field.name)
    new.MergeFrom(body)
    _keep_assigned(kind, live, new, manifest)
    return new


def _is_system_annotation(key: str) -> bool:
    prefix, _, _ = key.rpartition("/")
    return any((prefix + "/").endswith(d) for d in _SYSTEM_ANNOTATION_DOMAINS) if prefix else False


def _keep_assigned(kind: kinds.Kind, live: Message, new: Message, manifest: Message) -> None:
    """Fields the cluster sets that a manifest normally leaves out, as kubectl's
    merge keeps them: replicas (so `scale` survives a re-apply), a Service's
    cluster IP and node ports, a pod's node, a namespace's finalizers."""
    k = kind.kind
    if k in ("Deployment", "ReplicaSet"):
        if not manifest.spec.HasField("replicas") and live.spec.HasField("replicas"):
            new.spec.replicas = live.spec.replicas
    elif k == "Service":
        spec, old = new.spec, live.spec
        if not manifest.spec.cluster_ip and old.cluster_ip:
            spec.cluster_ip = old.cluster_ip
        if not manifest.spec.cluster_ips and old.cluster_ips:
            spec.cluster_ips.extend(old.cluster_ips)
        old_ports = {(p.port, p.protocol or "TCP"): p.node_port for p in old.ports}
        for p in spec.ports:
            if not p.node_port:
                assigned = old_ports.get((p.port, p.protocol or "TCP"))
                if assigned:
                    p.node_port = assigned
    elif k == "Pod":
        if not manifest.spec.node_name and live.spec.node_name:
            new.spec.node_name = live.spec.node_name
    elif k == "Namespace":
        if not manifest.spec.finalizers and live.spec.finalizers:
            new.spec.finalizers.extend(live.spec.finalizers)
    elif k == "Node":
        for name in ("pod_cidr", "provider_id"):
            if not getattr(manifest.spec, name) and getattr(live.spec, name):
                setattr(new.spec, name, getattr(live.spec, name))
        if not manifest.spec.pod_cidrs and live.spec.pod_cidrs:
            new.spec.pod_cidrs.extend(live.spec.pod_cidrs)


__all__ = ["add_parser", "add_file_flags", "load", "merge_for_apply", "run"]
