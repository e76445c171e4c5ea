"""What the Deployment and ReplicaSet controllers share: the pod-template
hash, owner references, pod readiness and availability, label selectors of
workloads, and cache indexes.

Everything here is pure (no API calls) so the controllers' unit tests can use
it on in-memory objects.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterable

from google.protobuf.message import Message

from kubeling.api.v1 import core_pb2, meta_pb2
from kubeling.client.informer import Store
from kubeling.labels import Selector, SelectorError, selector_from_label_selector

# The label that ties a ReplicaSet (and its pods) to one version of a
# Deployment's template; Kubernetes' DefaultDeploymentUniqueLabelKey.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no look-alikes
# (0/o, 1/l, 3/e), so a hash never spells a word.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv32a(data: bytes, h: int = _FNV32_OFFSET) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a); `h` continues an earlier sum."""
    for byte in data:
        h ^= byte
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Kubernetes' rand.SafeEncodeString: each character mapped into the safe alphabet."""
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in text)


def compute_hash(template: core_pb2.PodTemplateSpec, collision_count: int | None = None) -> str:
    """The pod-template hash of a Deployment's template, as Kubernetes'
    ComputeHash: FNV-32a of the template (here its deterministic protobuf
    serialization), then the collision count as 4 little-endian bytes when
    set, rendered in decimal and safe-encoded. Stable across processes and
    runs; a different collision count gives a different hash."""
    h = fnv32a(template.SerializeToString(deterministic=True))
    if collision_count is not None:
        h = fnv32a(struct.pack("<I", collision_count & 0xFFFFFFFF), h)
    return safe_encode(str(h))


def template_without_hash(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    """A copy of `template` without the pod-template-hash label."""
    t = core_pb2.PodTemplateSpec()
    t.CopyFrom(template)
    t.metadata.labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return t


def equal_ignore_hash(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Whether two templates are the same apart from the pod-template-hash
    label (Kubernetes' EqualIgnoreHash): how a Deployment finds its new RS."""
    return template_without_hash(a) == template_without_hash(b)


# ------------------------------------------------------------- ownership


def controller_ref(obj: Message) -> meta_pb2.OwnerReference | None:
    """The owner reference with controller=true, or None (an orphan)."""
    for ref in obj.metadata.owner_references:
        if ref.controller:
            return ref
    return None


def new_controller_ref(owner: Message, api_version: str, kind: str) -> meta_pb2.OwnerReference:
    """An owner reference making `owner` the controller (Kubernetes' NewControllerRef)."""
    return meta_pb2.OwnerReference(api_version=api_version, kind=kind, name=owner.metadata.name,
                                   uid=owner.metadata.uid, controller=True,
                                   block_owner_deletion=True)


def is_controlled_by(obj: Message, owner: Message) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.uid == owner.metadata.uid


def selector_of(label_selector: meta_pb2.LabelSelector) -> Selector | None:
    """The Selector of a workload's spec.selector, or None when it selects
    nothing: unset, empty (validation forbids both) or invalid."""
    if not label_selector.match_labels and not label_selector.match_expressions:
        return None
    try:
        return selector_from_label_selector(dict(label_selector.match_labels),
                                            label_selector.match_expressions)
    except SelectorError:
        return None


def matches(selector: Selector | None, obj: Message) -> bool:
    return selector is not None and selector.matches(obj.metadata.labels)


# ------------------------------------------------------------- pods


def is_pod_active(pod: core_pb2.Pod) -> bool:
    """Kubernetes' IsPodActive: not finished and not being deleted."""
    return (pod.status.phase not in ("Succeeded", "Failed")
            and not pod.metadata.HasField("deletion_timestamp"))


def ready_condition(pod: core_pb2.Pod) -> core_pb2.PodCondition | None:
    for c in pod.status.conditions:
        if c.type == "Ready":
            return c
    return None


def is_pod_ready(pod: core_pb2.Pod) -> bool:
    c = ready_condition(pod)
    return c is not None and c.status == "True"


def timestamp_seconds(ts) -> float | None:
    """A Timestamp as seconds since the epoch; None when unset (zero)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def ready_since(pod: core_pb2.Pod) -> float | None:
    """When the pod last became Ready (its Ready condition's transition
    time), or None if it is not ready or the time is unknown."""
    c = ready_condition(pod)
    if c is None or c.status != "True":
        return None
    return timestamp_seconds(c.last_transition_time)


def is_pod_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    """Kubernetes' IsPodAvailable: ready, and ready for at least
    `min_ready_seconds` (any ready pod when it is 0)."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds < now


def available_in(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until a ready pod becomes available, or None when it is not
    ready or already available."""
    if min_ready_seconds <= 0 or not is_pod_ready(pod):
        return None
    since = ready_since(pod)
    if since is None:
        return None
    left = since + min_ready_seconds - now
    return left if left >= 0 else None


# ------------------------------------------------------------- cache indexes

IndexFunc = Callable[[Message], Iterable[str]]

# Index names are shared by both controllers (one informer per resource in
# the manager), so each is defined once, here.
BY_CONTROLLER_UID = "workloads/controller-uid"
ORPHANS_BY_NAMESPACE = "workloads/orphans-by-namespace"
BY_NAMESPACE = "workloads/namespace"


def _controller_uid(obj: Message) -> list[str]:
    ref = controller_ref(obj)
    return [ref.uid] if ref is not None else []


def _orphan_namespace(obj: Message) -> list[str]:
    return [obj.metadata.namespace] if controller_ref(obj) is None else []


def _namespace(obj: Message) -> list[str]:
    return [obj.metadata.namespace]


_INDEXES: dict[str, IndexFunc] = {
    BY_CONTROLLER_UID: _controller_uid,
    ORPHANS_BY_NAMESPACE: _orphan_namespace,
    BY_NAMESPACE: _namespace,
}


def ensure_indexes(store: Store, *names: str) -> None:
    """Add these standard indexes to `store` unless another controller
    sharing the informer already did."""
    for name in names:
        try:
            store.add_index(name, _INDEXES[name])
        except ValueError:
            pass  # already there: same name, same function
