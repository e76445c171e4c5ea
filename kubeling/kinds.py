"""The kinds of object kubeling serves, and how to name them.

One table answers every naming question a client, the CLI or the API server
asks: which message class holds a kind, its plural resource name (used in etcd
keys and API requests), kubectl's short names, its API group, whether it lives
in a namespace, and which field of the `Object` oneof carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from kubeling.api.v1 import api_pb2, apps_pb2, coordination_pb2, core_pb2


@dataclass(frozen=True)
class Kind:
    """A kind of object: Pod, Deployment, ..."""

    kind: str  # "Deployment"
    resource: str  # plural, as in URLs and etcd keys: "deployments"
    singular: str  # "deployment"
    short_names: tuple[str, ...]  # kubectl's: ("deploy",)
    group: str  # API group: "" for core, "apps", "coordination.k8s.io"
    namespaced: bool
    message: type[Message]
    field: str  # the Object oneof field: "deployment"
    has_status: bool  # status is written through UpdateStatus only
    has_spec: bool  # generation follows changes of spec

    @property
    def api_version(self) -> str:
        """apiVersion as written in manifests: "v1" or "apps/v1"."""
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        """kubectl's name for the kind in messages: "deployment.apps"."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    def new(self) -> Message:
        """An empty object of this kind with apiVersion and kind filled."""
        obj = self.message()
        obj.api_version = self.api_version
        obj.kind = self.kind
        return obj


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", "namespace", ("ns",), "", False,
         core_pb2.Namespace, "namespace", True, True),
    Kind("Pod", "pods", "pod", ("po",), "", True,
         core_pb2.Pod, "pod", True, True),
    Kind("Service", "services", "service", ("svc",), "", True,
         core_pb2.Service, "service", True, True),
    Kind("Endpoints", "endpoints", "endpoints", ("ep",), "", True,
         core_pb2.Endpoints, "endpoints", False, False),
    Kind("Node", "nodes", "node", ("no",), "", False,
         core_pb2.Node, "node", True, True),
    Kind("ConfigMap", "configmaps", "configmap", ("cm",), "", True,
         core_pb2.ConfigMap, "config_map", False, False),
    Kind("Secret", "secrets", "secret", (), "", True,
         core_pb2.Secret, "secret", False, False),
    Kind("Event", "events", "event", ("ev",), "", True,
         core_pb2.Event, "event", False, False),
    Kind("Deployment", "deployments", "deployment", ("deploy",), "apps", True,
         apps_pb2.Deployment, "deployment", True, True),
    Kind("ReplicaSet", "replicasets", "replicaset", ("rs",), "apps", True,
         apps_pb2.ReplicaSet, "replica_set", True, True),
    Kind("Lease", "leases", "lease", (), "coordination.k8s.io", True,
         coordination_pb2.Lease, "lease", False, True),
)

_BY_KIND = {k.kind: k for k in KINDS}
_BY_RESOURCE = {k.resource: k for k in KINDS}
_BY_FIELD = {k.field: k for k in KINDS}
_BY_MESSAGE = {k.message.DESCRIPTOR.full_name: k for k in KINDS}
_ALIASES: dict[str, Kind] = {}
for _k in KINDS:
    for _alias in (_k.kind.lower(), _k.resource, _k.singular, *_k.short_names,
                   f"{_k.resource}.{_k.group}", f"{_k.singular}.{_k.group}"):
        _ALIASES.setdefault(_alias, _k)


class UnknownKindError(LookupError):
    """A name that is not a kind kubeling serves."""


def by_kind(kind: str) -> Kind:
    """The Kind for a manifest's `kind:` value ("Deployment")."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise UnknownKindError(
            f'no kind "{kind}" is served by kubeling; known kinds: '
            + ", ".join(sorted(_BY_KIND))) from None


def by_resource(resource: str) -> Kind:
    """The Kind for a plural resource name ("deployments")."""
    try:
        return _BY_RESOURCE[resource]
    except KeyError:
        raise UnknownKindError(
            f'the server doesn\'t have a resource type "{resource}"; known resources: '
            + ", ".join(sorted(_BY_RESOURCE))) from None


def lookup(name: str) -> Kind:
    """The Kind for anything kubectl accepts: "po", "pods", "pod", "Pod", "deployments.apps"."""
    k = _ALIASES.get(name.lower())
    if k is None:
        raise UnknownKindError(f'the server doesn\'t have a resource type "{name}"')
    return k


def of(obj: Message) -> Kind:
    """The Kind of a message instance."""
    return _BY_MESSAGE[obj.DESCRIPTOR.full_name]


def wrap(obj: Message) -> api_pb2.Object:
    """Put an object into the `Object` oneof."""
    wrapped = api_pb2.Object()
    getattr(wrapped, of(obj).field).CopyFrom(obj)
    return wrapped


def unwrap(wrapped: api_pb2.Object) -> Message:
    """Take the object out of the `Object` oneof; ValueError when it is empty."""
    field = wrapped.WhichOneof("kind")
    if field is None:
        raise ValueError("object: no kind is set")
    return getattr(wrapped, field)


def kind_of_wrapped(wrapped: api_pb2.Object) -> Kind:
    """The Kind carried by an `Object`; ValueError when it is empty."""
    field = wrapped.WhichOneof("kind")
    if field is None:
        raise ValueError("object: no kind is set")
    return _BY_FIELD[field]
