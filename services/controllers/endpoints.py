"""Endpoints: the addresses of the pods behind each Service, as
kube-controller-manager's endpoints controller.

For every Service with a selector, the Endpoints object of the same name
lists the pods its selector matches in its namespace:

- a pod with an IP that is Ready goes in `addresses`; one that is not yet (or
  no longer) Ready goes in `notReadyAddresses`, unless the Service sets
  `publishNotReadyAddresses`, which publishes every pod as ready;
- terminating pods (deletionTimestamp set) and finished pods (Succeeded,
  Failed) are left out; with `publishNotReadyAddresses`, terminating pods
  stay in, as in Kubernetes;
- each Service port resolves on each pod: a number as is, a name through the
  pod's container ports (name and protocol must match); a pod lacking a
  named port is not an endpoint of that port;
- addresses offering the same ports share one subset (Kubernetes'
  RepackSubsets), and everything is sorted, so an unchanged set of pods
  gives an identical object and no write.

Endpoints of a deleted Service are deleted. Endpoints of a Service without a
selector are the user's, and left alone. The object carries the Service's
labels (plus `service.kubernetes.io/headless` for headless Services).
"""

from __future__ import annotations

import logging
import socket
from functools import lru_cache
from typing import Iterable

from google.protobuf.message import Message

from kubeling.api.v1 import core_pb2, meta_pb2
from kubeling.client.errors import AlreadyExistsError, ConflictError, ForbiddenError, NotFoundError
from kubeling.client.events import WARNING
from kubeling.client.informer import split_key
from kubeling.labels import Selector, SelectorError, selector_from_set
from kubeling.objects import copy, key_of

from .controller import Controller
from .manager import register

log = logging.getLogger(__name__)

# Event reasons, as Kubernetes' endpoints controller names them.
FAILED_TO_CREATE_ENDPOINT = "FailedToCreateEndpoint"
FAILED_TO_UPDATE_ENDPOINT = "FailedToUpdateEndpoint"
FAILED_TO_DELETE_ENDPOINT = "FailedToDeleteEndpoint"

LABEL_HEADLESS = "service.kubernetes.io/headless"

_NAMESPACE_INDEX = "endpoints-controller/namespace"

# (port name, port number, protocol); None stands for "no ports" (headless).
PortKey = tuple[str, int, str]


# ---------------------------------------------------------------- pure parts


def is_pod_ready(pod: Message) -> bool:
    """Whether the pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def pod_ip(pod: Message) -> str:
    """The pod's primary IP, or "" when it has none yet."""
    return pod.status.pod_ip or (pod.status.pod_ips[0].ip if pod.status.pod_ips else "")


def should_be_endpoint(pod: Message, include_terminating: bool) -> bool:
    """Kubernetes' ShouldPodBeInEndpoints: not finished, has an IP, and not
    terminating unless `include_terminating`."""
    if pod.status.phase in ("Succeeded", "Failed"):
        return False
    if not pod_ip(pod):
        return False
    return include_terminating or not pod.metadata.HasField("deletion_timestamp")


def find_port(pod: Message, service_port: Message) -> int | None:
    """The pod's port number for a Service port (Kubernetes' FindPort): a
    numeric targetPort as is; a named one from the containers' ports with that
    name and the Service port's protocol; None when the pod has no such port."""
    target = service_port.target_port
    which = target.WhichOneof("kind") if service_port.HasField("target_port") else None
    if which == "string_value" and target.string_value:
        protocol = service_port.protocol or "TCP"
        for container in pod.spec.containers:
            for port in container.ports:
                if port.name == target.string_value and (port.protocol or "TCP") == protocol:
                    return port.container_port
        return None
    if which == "number_value" and target.number_value:
        return int(target.number_value)
    return service_port.port


def endpoint_address(service: Message, pod: Message) -> Message:
    """The EndpointAddress of `pod` behind `service`."""
    address = core_pb2.EndpointAddress(
        ip=pod_ip(pod),
        target_ref=meta_pb2.ObjectReference(kind="Pod", namespace=pod.metadata.namespace,
                                            name=pod.metadata.name, uid=pod.metadata.uid))
    if pod.spec.node_name:
        address.node_name = pod.spec.node_name
    # A pod with hostname and subdomain = the (headless) Service's name gets a DNS name.
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name \
            and pod.metadata.namespace == service.metadata.namespace:
        address.hostname = pod.spec.hostname
    return address


@lru_cache(maxsize=65536)
def _ip_sort_key(ip: str) -> tuple:
    """IPv4 before IPv6, each in numeric order; anything unparsable last."""
    for family, rank in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return (rank, socket.inet_pton(family, ip))
        except OSError:
            continue
    return (99, ip.encode())


def _address_key(address: Message) -> tuple:
    return _ip_sort_key(address.ip) + (address.target_ref.uid,)


def endpoint_subsets(service: Message, pods: Iterable[Message]) -> list[Message]:
    """The subsets of `service`'s Endpoints for the pods its selector matches.

    Pure and deterministic: the same service and pods (in any order) give the
    same list. Addresses with the same set of ports share a subset; within a
    subset addresses are sorted by IP (then pod uid) and ports by name, number
    and protocol; subsets are sorted by their ports, then addresses.
    """
    spec = service.spec
    publish_not_ready = spec.publish_not_ready_addresses
    headless_without_ports = not spec.ports and spec.cluster_ip == "None"
    # address key -> (address, ready); port -> the address keys offering it.
    addresses: dict[tuple, tuple[Message, bool]] = {}
    by_port: dict[PortKey | None, set[tuple]] = {}
    for pod in pods:
        if not should_be_endpoint(pod, include_terminating=publish_not_ready):
            continue
        address = endpoint_address(service, pod)
        ready = publish_not_ready or is_pod_ready(pod)
        ports: list[PortKey | None] = []
        if headless_without_ports:
            ports.append(None)
        for sp in spec.ports:
            number = find_port(pod, sp)
            if number is None:
                log.debug("service %s: pod %s has no port %s", key_of(service), key_of(pod),
                          sp.target_port.string_value)
                continue
            ports.append((sp.name, number, sp.protocol or "TCP"))
        if not ports:
            continue
        key = _address_key(address)
        if key in addresses:
            ready = ready or addresses[key][1]  # the same IP and pod twice: ready wins
        addresses[key] = (address, ready)
        for port in ports:
            by_port.setdefault(port, set()).add(key)

    # Group ports by the exact set of addresses offering them.
    groups: dict[frozenset, list[PortKey]] = {}
    for port, keys in by_port.items():
        ports = groups.setdefault(frozenset(keys), [])
        if port is not None:
            ports.append(port)

    # Sort on plain tuples, then build the messages once.
    ordered = []
    for keys, ports in groups.items():
        keys = sorted(keys)
        ordered.append((sorted(ports), [k for k in keys if addresses[k][1]],
                        [k for k in keys if not addresses[k][1]]))
    ordered.sort()
    return [core_pb2.EndpointSubset(
        addresses=[addresses[k][0] for k in ready],
        not_ready_addresses=[addresses[k][0] for k in not_ready],
        ports=[core_pb2.EndpointPort(name=name, port=number, protocol=protocol)
               for name, number, protocol in ports])
        for ports, ready, not_ready in ordered]


def endpoints_labels(service: Message) -> dict[str, str]:
    """Labels of a Service's Endpoints: the Service's, plus the headless marker."""
    labels = dict(service.metadata.labels)
    if service.spec.cluster_ip == "None":
        labels[LABEL_HEADLESS] = ""
    else:
        labels.pop(LABEL_HEADLESS, None)
    return labels


@lru_cache(maxsize=4096)
def _selector(items: tuple[tuple[str, str], ...]) -> Selector:
    return selector_from_set(dict(items))


def service_selector(service: Message) -> Selector | None:
    """The Service's selector, or None when it has none (its Endpoints are the user's)."""
    if not service.spec.selector:
        return None
    return _selector(tuple(sorted(service.spec.selector.items())))


def _relevant(pod: Message) -> tuple:
    """What of a pod its Endpoints depend on; other changes need no resync."""
    return (dict(pod.metadata.labels), pod_ip(pod), is_pod_ready(pod),
            pod.metadata.HasField("deletion_timestamp"), pod.status.phase in ("Succeeded", "Failed"),
            pod.spec.node_name, pod.spec.hostname, pod.spec.subdomain,
            [(p.name, p.container_port, p.protocol) for c in pod.spec.containers for p in c.ports])


# ---------------------------------------------------------------- controller


@register("endpoints")
class EndpointsController(Controller):
    """Keeps each selector Service's Endpoints equal to its pods; one key per Service."""

    name = "endpoints"
    workers = 4

    def setup(self) -> None:
        self.services = self.informers.informer("services")
        self.pods = self.informers.informer("pods")
        self.endpoints = self.informers.informer("endpoints")
        for informer in (self.services, self.pods):
            informer.store.add_index(_NAMESPACE_INDEX, lambda o: [o.metadata.namespace])

        self.watch(self.services)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated,
                              on_delete=self._pod_changed)
        # As Kubernetes: look at every existing Endpoints once (leftovers of
        # Services deleted while we were down), then at updates and deletes,
        # so hand edits of managed Endpoints are undone and a deleted one comes back.
        self.endpoints.add_handler(
            on_add=lambda ep: None if self.endpoints.has_synced else self.enqueue(ep),
            on_update=lambda old, new: self.enqueue(new),
            on_delete=self.enqueue)

    def _pod_updated(self, old: Message, new: Message) -> None:
        if _relevant(old) != _relevant(new):  # most pod updates (container statuses...) are not
            self._pod_changed(old)
            self._pod_changed(new)

    def _pod_changed(self, pod: Message) -> None:
        for key in self.services_for_pod(pod):
            self.queue.add(key)

    def services_for_pod(self, pod: Message) -> list[str]:
        """Keys of the Services in the pod's namespace whose selector matches it."""
        keys = []
        labels = pod.metadata.labels
        for svc in self.services.store.by_index(_NAMESPACE_INDEX, pod.metadata.namespace):
            selector = svc.spec.selector
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                keys.append(key_of(svc))
        return keys

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        current = self.endpoints.store.get(key)
        if service is None:
            if current is not None:
                await self._delete(namespace, name, current)
            return None
        try:
            selector = service_selector(service)
        except SelectorError as e:  # the API server validates selectors; be safe anyway
            log.warning("service %s: %s", key, e)
            return None
        if selector is None:
            return None  # Endpoints of selector-less Services are managed by hand

        pods = [p for p in self.pods.store.by_index(_NAMESPACE_INDEX, namespace)
                if selector.matches(p.metadata.labels)]
        subsets = endpoint_subsets(service, pods)
        labels = endpoints_labels(service)

        if current is None:
            ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints", subsets=subsets)
            ep.metadata.name = name
            ep.metadata.namespace = namespace
            ep.metadata.labels.update(labels)
            try:
                await self.client.create(ep)
            except AlreadyExistsError:
                raise  # our cache is behind; retry once it has caught up
            except ForbiddenError as e:
                if "being terminated" in str(e):
                    return None  # the namespace is going away, and the Service with it
                await self._failed(service, FAILED_TO_CREATE_ENDPOINT, "create", e)
                raise
            except Exception as e:
                await self._failed(service, FAILED_TO_CREATE_ENDPOINT, "create", e)
                raise
            return None
        if list(current.subsets) == subsets and dict(current.metadata.labels) == labels:
            return None
        ep = copy(current)
        del ep.subsets[:]
        ep.subsets.extend(subsets)
        ep.metadata.labels.clear()
        ep.metadata.labels.update(labels)
        try:
            await self.client.update(ep)
        except (ConflictError, NotFoundError):
            raise  # our cache is behind; retry once it has caught up
        except Exception as e:
            await self._failed(service, FAILED_TO_UPDATE_ENDPOINT, "update", e)
            raise
        return None

    async def _delete(self, namespace: str, name: str, current: Message) -> None:
        try:
            await self.client.delete("endpoints", name, namespace, uid=current.metadata.uid)
        except NotFoundError:
            pass
        except ConflictError:
            pass  # a new Endpoints of that name; its own events bring us back

    async def _failed(self, service: Message, reason: str, verb: str, error: Exception) -> None:
        await self.recorder.event(service, WARNING, reason,
                                  f"Failed to {verb} endpoint for service {key_of(service)}: {error}")
