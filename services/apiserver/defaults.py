"""Kubernetes' defaults for the objects the API server stores.

`apply(kind, obj)` fills, in place, every field Kubernetes fills when a
client leaves it out (pkg/apis/core/v1/defaults.go, apps/v1/defaults.go and
the registry strategies' PrepareForCreate), and puts the google.protobuf.Value
fields into their stored form:

- quantities (resources limits / requests, emptyDir sizeLimit,
  resourceFieldRef divisor) become canonical strings: 1 -> "1",
  0.5 -> "500m", "1024Mi" -> "1Gi"; limits and requests round up to a
  thousandth, as Kubernetes' SetDefaults_ResourceList does;
- IntOrString values (ports, maxSurge, maxUnavailable) stay a number when
  they are a whole number and a string when they are a string.

A value that is not a quantity or not a whole number is left as it is, for
validation to report with the field's path. `apply` runs before validation
on create and on update; it is idempotent (running it twice changes nothing),
so an update that resends what a get returned is not a change.
"""

from __future__ import annotations

from typing import Callable, Iterator

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from kubeling.kinds import Kind
from kubeling.quantity import Quantity, QuantityError, parse_quantity

DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS = 30
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_VOLUME_MODE = 0o644  # 420, for configMap and secret volumes
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_CLIENT_IP_AFFINITY_SECONDS = 10800
NAMESPACE_FINALIZER = "kubernetes"
LABEL_METADATA_NAME = "kubernetes.io/metadata.name"

# Resources that decide a pod's QoS class, as Kubernetes' supportedQoSComputeResources.
QOS_RESOURCES = ("cpu", "memory")


def apply(kind: Kind, obj: Message) -> None:
    """Set Kubernetes' defaults on `obj` (of kind `kind`) in place."""
    fill = _BY_KIND.get(kind.kind)
    if fill is not None:
        fill(obj)


# ------------------------------------------------------------------ values


def _is_set(holder: Message, field: str) -> bool:
    """A Value field counts as set unless absent or JSON null, as a nil pointer in Go."""
    if not holder.HasField(field):
        return False
    return getattr(holder, field).WhichOneof("kind") not in (None, "null_value")


def canonical_quantity(value: Value, round_to_milli: bool = False) -> None:
    """Store a quantity Value as its canonical string; leave a non-quantity alone."""
    which = value.WhichOneof("kind")
    if which == "number_value":
        raw: object = value.number_value
        if raw.is_integer() and abs(raw) < 2**53:
            raw = int(raw)  # the exact integer, not "1e+20"
    elif which == "string_value":
        raw = value.string_value
    else:
        return
    try:
        q = parse_quantity(raw)
    except QuantityError:
        return
    if round_to_milli:
        q = _round_up_to_milli(q)
    value.string_value = q.format()


def _round_up_to_milli(q: Quantity) -> Quantity:
    step = 10**6  # nano-units per thousandth
    rest = abs(q.nanos) % step
    if not rest:
        return q
    magnitude = abs(q.nanos) - rest + step
    return Quantity(magnitude if q.nanos > 0 else -magnitude, q.notation)


def _resource_list(values) -> None:
    for name in values:
        canonical_quantity(values[name], round_to_milli=True)


# --------------------------------------------------------------------- pods


def _containers(spec: Message) -> Iterator[Message]:
    yield from spec.init_containers
    yield from spec.containers


def _pod(pod: Message) -> None:
    spec = pod.spec
    _pod_spec(spec)
    # Only pods, not templates, get these (SetDefaults_Pod): a template that
    # changed here would give every Deployment a new pod-template hash.
    for c in _containers(spec):
        requests, limits = c.resources.requests, c.resources.limits
        for name in limits:
            if name not in requests:
                requests[name].CopyFrom(limits[name])
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    if spec.host_network:
        for c in _containers(spec):
            for port in c.ports:
                if port.host_port == 0:
                    port.host_port = port.container_port
    # Status is the server's on create (the registry clears it first); a pod
    # with a phase already keeps its status.
    if not pod.status.phase:
        pod.status.phase = "Pending"
        if not pod.status.qos_class:
            pod.status.qos_class = qos_class(spec)


def _pod_template(owner_spec: Message) -> None:
    # A missing template stays missing, for validation to report as required.
    if owner_spec.HasField("template"):
        _pod_spec(owner_spec.template.spec)


def _pod_spec(spec: Message) -> None:
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.HasField("security_context"):
        spec.security_context.SetInParent()
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
    if not spec.scheduler_name:
        spec.scheduler_name = DEFAULT_SCHEDULER
    for volume in spec.volumes:
        _volume(volume)
    for c in _containers(spec):
        _container(c)


_VOLUME_SOURCES = ("empty_dir", "host_path", "config_map", "secret")


def _volume(volume: Message) -> None:
    if not any(volume.HasField(s) for s in _VOLUME_SOURCES):
        volume.empty_dir.SetInParent()
    if volume.HasField("empty_dir") and _is_set(volume.empty_dir, "size_limit"):
        canonical_quantity(volume.empty_dir.size_limit)
    for source in ("config_map", "secret"):
        if volume.HasField(source) and not getattr(volume, source).HasField("default_mode"):
            getattr(volume, source).default_mode = DEFAULT_VOLUME_MODE


def _container(c: Message) -> None:
    if not c.image_pull_policy:
        c.image_pull_policy = "Always" if image_tag(c.image) == "latest" else "IfNotPresent"
    if not c.termination_message_path:
        c.termination_message_path = DEFAULT_TERMINATION_MESSAGE_PATH
    if not c.termination_message_policy:
        c.termination_message_policy = "File"
    for port in c.ports:
        if not port.protocol:
            port.protocol = "TCP"
    for env in c.env:
        if not env.HasField("value_from"):
            continue
        source = env.value_from
        if source.HasField("field_ref") and not source.field_ref.api_version:
            source.field_ref.api_version = "v1"
        if source.HasField("resource_field_ref") and _is_set(source.resource_field_ref, "divisor"):
            canonical_quantity(source.resource_field_ref.divisor)
    if c.HasField("resources"):
        _resource_list(c.resources.limits)
        _resource_list(c.resources.requests)
    for probe in ("liveness_probe", "readiness_probe", "startup_probe"):
        if c.HasField(probe):
            _probe(getattr(c, probe))
    if c.HasField("lifecycle"):
        for hook in ("post_start", "pre_stop"):
            if c.lifecycle.HasField(hook):
                _handler(getattr(c.lifecycle, hook))


def _probe(probe: Message) -> None:
    if probe.timeout_seconds == 0:
        probe.timeout_seconds = 1
    if probe.period_seconds == 0:
        probe.period_seconds = 10
    if probe.success_threshold == 0:
        probe.success_threshold = 1
    if probe.failure_threshold == 0:
        probe.failure_threshold = 3
    _handler(probe)


def _handler(handler: Message) -> None:
    """Probe or lifecycle handler: Kubernetes defaults every HTTPGetAction."""
    if handler.HasField("http_get"):
        http = handler.http_get
        if not http.path:
            http.path = "/"
        if not http.scheme:
            http.scheme = "HTTP"


def image_tag(image: str) -> str:
    """The tag Kubernetes' parsers.ParseImageName reports for an image:
    "latest" when the reference has neither tag nor digest, "" when it has
    only a digest."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]  # a ':' before the last '/' is a registry port
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def qos_class(spec: Message) -> str:
    """Guaranteed, Burstable or BestEffort, computed as Kubernetes' GetPodQOS:
    only cpu and memory count, zero quantities count as unset, and a pod is
    Guaranteed when every container limits both and the summed requests
    equal the summed limits."""
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}
    guaranteed = True
    for c in _containers(spec):
        for name, value in c.resources.requests.items():
            q = _quantity(value)
            if name in QOS_RESOURCES and q is not None and q.nanos > 0:
                requests[name] = requests.get(name, Quantity()) + q
        limited = set()
        for name, value in c.resources.limits.items():
            q = _quantity(value)
            if name in QOS_RESOURCES and q is not None and q.nanos > 0:
                limited.add(name)
                limits[name] = limits.get(name, Quantity()) + q
        if not limited.issuperset(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(name) == q for name, q in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _quantity(value: Value) -> Quantity | None:
    which = value.WhichOneof("kind")
    if which not in ("string_value", "number_value"):
        return None
    try:
        return parse_quantity(getattr(value, which))
    except QuantityError:
        return None


# ---------------------------------------------------------------- workloads


def _deployment(d: Message) -> None:
    spec = d.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    strategy = spec.strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        if not _is_set(rolling, "max_unavailable"):
            rolling.max_unavailable.string_value = DEFAULT_MAX_UNAVAILABLE
        if not _is_set(rolling, "max_surge"):
            rolling.max_surge.string_value = DEFAULT_MAX_SURGE
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = DEFAULT_REVISION_HISTORY_LIMIT
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = DEFAULT_PROGRESS_DEADLINE_SECONDS
    _pod_template(spec)


def _replica_set(rs: Message) -> None:
    if not rs.spec.HasField("replicas"):
        rs.spec.replicas = 1
    _pod_template(rs.spec)


# ----------------------------------------------------------------- services


def _service(svc: Message) -> None:
    spec = svc.spec
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "None":
        spec.ClearField("session_affinity_config")
    elif spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if not client_ip.HasField("timeout_seconds"):
            client_ip.timeout_seconds = DEFAULT_CLIENT_IP_AFFINITY_SECONDS
    if not spec.type:
        spec.type = "ClusterIP"
    for port in spec.ports:
        if not port.protocol:
            port.protocol = "TCP"
        target = port.target_port
        which = target.WhichOneof("kind") if port.HasField("target_port") else None
        if which in (None, "null_value") or (which == "number_value" and target.number_value == 0) \
                or (which == "string_value" and not target.string_value):
            target.number_value = port.port
    externally_accessible = spec.type in ("NodePort", "LoadBalancer") or (
        spec.type == "ClusterIP" and len(spec.external_ips) > 0)
    if externally_accessible and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.type in ("ClusterIP", "NodePort", "LoadBalancer") and not spec.internal_traffic_policy:
        spec.internal_traffic_policy = "Cluster"


def _endpoints(ep: Message) -> None:
    for subset in ep.subsets:
        for port in subset.ports:
            if not port.protocol:
                port.protocol = "TCP"


# -------------------------------------------------------------- cluster kinds


def _namespace(ns: Message) -> None:
    if ns.metadata.name:
        ns.metadata.labels[LABEL_METADATA_NAME] = ns.metadata.name
    # Kubernetes adds the "kubernetes" finalizer on create and lets only the
    # namespace controller remove it once deletion has begun; an update of a
    # live namespace therefore cannot drop it.
    if not ns.metadata.HasField("deletion_timestamp") and NAMESPACE_FINALIZER not in ns.spec.finalizers:
        ns.spec.finalizers.append(NAMESPACE_FINALIZER)
    if not ns.status.phase:
        ns.status.phase = "Active"


def _node(node: Message) -> None:
    status = node.status
    if not status.allocatable and status.capacity:
        status.allocatable.update(status.capacity)


# ------------------------------------------------------------ config kinds


def _secret(secret: Message) -> None:
    if not secret.type:
        secret.type = "Opaque"
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode("utf-8")
    secret.ClearField("string_data")


def _event(event: Message) -> None:
    if event.count == 0:
        event.count = 1
    if not event.type:
        event.type = "Normal"


_BY_KIND: dict[str, Callable[[Message], None]] = {
    "Pod": _pod,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
    "Service": _service,
    "Endpoints": _endpoints,
    "Namespace": _namespace,
    "Node": _node,
    "Secret": _secret,
    "Event": _event,
}
