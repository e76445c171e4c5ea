"""Validation of objects, with Kubernetes' rules, paths and wording.

`validate(kind, obj, old)` returns every problem it finds (not just the
first) as FieldErrors whose paths are Kubernetes' JSON paths:
`metadata.name`, `spec.template.spec.containers[0].image`,
`spec.ports[1].port`, `spec.containers[0].resources.limits[cpu]`. `old` is
the stored object on update and None on create. The registry applies
defaults (defaults.py) first, so validation sees defaulted objects.

An update that leaves everything but status as stored (the registry's
UpdateStatus) only has its status validated: what did not change was
validated when it was written.

Layout: one function per kind (`_pod`, `_deployment`, ...) over shared
helpers for metadata, label selectors, pod specs, containers and quantities;
the `_RULES` table at the end ties each kind to its name rule and functions.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from kubeling import labels as labelsel
from kubeling import names
from kubeling.kinds import Kind
from kubeling.objects import copy, to_dict
from kubeling.quantity import Quantity, QuantityError, parse_quantity

from .errors import FieldError

Errors = list[FieldError]
NameCheck = Callable[[str], list[str]]

MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 1024 * 1024  # ConfigMap and Secret data together
MAX_INT32 = 2**31 - 1
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")

PROTOCOLS = ("SCTP", "TCP", "UDP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("FallbackToLogsOnError", "File")
URI_SCHEMES = ("HTTP", "HTTPS")
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
TOLERATION_OPERATORS = ("Equal", "Exists")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
QOS_CLASSES = ("BestEffort", "Burstable", "Guaranteed")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket")
EMPTY_DIR_MEDIA = ("", "Memory")
SERVICE_TYPES = ("ClusterIP", "NodePort")  # LoadBalancer and ExternalName: not served by kubeling
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
STRATEGY_TYPES = ("Recreate", "RollingUpdate")
EVENT_TYPES = ("Normal", "Warning")
NODE_PORT_RANGE = (30000, 32767)
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400
MAX_EVENT_REASON_LENGTH = 128

# Downward API fields an env var may read (Kubernetes' validEnvDownwardAPIFieldPathExpressions);
# metadata.labels['k'] and metadata.annotations['k'] are allowed besides.
ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                   "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
                   "status.podIPs")
ENV_RESOURCE_FIELDS = ("limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                       "requests.ephemeral-storage", "requests.memory")
CPU_DIVISORS = ("1m", "1")
MEMORY_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")

# Resource names a container may request or limit without a domain prefix; a
# Node also reports "pods". Anything else must be a domain-qualified
# (extended) resource such as "example.com/gpu".
CONTAINER_RESOURCES = ("cpu", "ephemeral-storage", "memory")
NODE_RESOURCES = CONTAINER_RESOURCES + ("pods",)
HUGEPAGES_PREFIX = "hugepages-"

POD_UPDATE_FORBIDDEN = ("pod updates may not change fields other than spec.containers[*].image, "
                        "spec.initContainers[*].image, spec.activeDeadlineSeconds, spec.tolerations "
                        "(only additions to existing tolerations)")

# Secret types with required keys (Kubernetes' ValidateSecret); other types are free-form.
SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"


# ===================================================================== entry


def validate(kind: Kind, obj: Message, old: Message | None = None) -> Errors:
    """Every problem with `obj` (of kind `kind`); `old` is the stored object
    on update, None on create. Empty when the object is valid."""
    rules = _RULES[kind.kind]
    if old is not None and _only_status_differs(obj, old):
        return rules.status(obj, old) if rules.status else []
    errs = validate_object_meta(obj.metadata, namespaced=kind.namespaced, name_check=rules.name)
    errs += rules.object(obj)
    if rules.status:
        errs += rules.status(obj, old)
    if old is not None and rules.update:
        errs += rules.update(obj, old)
    return errs


def _only_status_differs(obj: Message, old: Message) -> bool:
    if "status" not in obj.DESCRIPTOR.fields_by_name:
        return obj == old
    a, b = copy(obj), copy(old)
    a.ClearField("status")
    b.ClearField("status")
    return a == b


# =================================================================== helpers


def _invalid(path: str, value: object, messages: Iterable[str]) -> Errors:
    """One Invalid error per message of a names.is_* check."""
    return [FieldError(path, m, value) for m in messages]


def _duplicate(path: str, value: object) -> FieldError:
    return FieldError(path, repr(value), kind="Duplicate value")


def _not_found(path: str, value: object) -> FieldError:
    return FieldError(path, repr(value), kind="Not found")


def _too_long(path: str, limit: int) -> FieldError:
    return FieldError(path, f"must have at most {limit} bytes", kind="Too long")


def _one_of(path: str, value: str, supported: Iterable[str], required: bool = True) -> Errors:
    """Required when empty (if `required`), Unsupported when not in `supported`."""
    if not value:
        return [FieldError.required(path)] if required else []
    supported = list(supported)
    return [] if value in supported else [FieldError.not_supported(path, value, supported)]


def _at_least(path: str, value: int, minimum: int) -> Errors:
    if value >= minimum:
        return []
    return [FieldError(path, f"must be greater than or equal to {minimum}", value)]


def _non_negative(path: str, value: int) -> Errors:
    return _at_least(path, value, 0)


def _positive(path: str, value: int) -> Errors:
    return [] if value > 0 else [FieldError(path, "must be greater than 0", value)]


def _id_range(path: str, value: int) -> Errors:
    """UIDs and GIDs: 0..2^31-1."""
    return _invalid(path, value, names.is_in_range(value, 0, MAX_INT32))


def _show(msg: Message) -> object:
    """A message as its JSON form, to quote in an error."""
    return to_dict(msg)


def _plain(value: Value) -> object:
    """A Value as the Python value a user wrote: 8080, "http", "500m"."""
    shown = json_format.MessageToDict(value)
    if isinstance(shown, float) and shown.is_integer():
        return int(shown)
    return shown


def _is_set(holder: Message, field: str) -> bool:
    if not holder.HasField(field):
        return False
    return getattr(holder, field).WhichOneof("kind") not in (None, "null_value")


def _name_errors(check: NameCheck, value: str, prefix: bool) -> list[str]:
    """A name check; a generateName prefix may end in '-' (the suffix follows)."""
    if prefix and value.endswith("-"):
        value = value[:-1] + "a"
    return check(value)


def _config_key_errors(key: str) -> list[str]:
    """ConfigMap and Secret keys (Kubernetes' IsConfigMapKey)."""
    fmt = "[-._a-zA-Z0-9]+"
    errs = []
    if len(key) > names.DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(names.max_len_error(names.DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not re.fullmatch(fmt, key):
        errs.append(names.regex_error("a valid config key must consist of alphanumeric characters, "
                                      "'-', '_' or '.'", fmt, "key.name", "KEY_NAME", "key-name"))
    if key == ".":
        errs.append("must not be '.'")
    elif key == "..":
        errs.append("must not be '..'")
    elif key.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def _relative_path_errors(path: str) -> list[str]:
    """Paths inside a volume (subPath, items[].path): relative, no '..' step."""
    errs = []
    if path.startswith("/"):
        errs.append("must be a relative path")
    if ".." in path.split("/"):
        errs.append("must not contain '..'")
    return errs


def _ip_errors(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def _cidr_errors(value: str) -> list[str]:
    try:
        if "/" not in value:
            raise ValueError(value)
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    return []


def _special_ip_errors(value: str) -> list[str]:
    """Endpoint addresses may not be special (Kubernetes' ValidateNonSpecialIP)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return []
    if ip.is_unspecified:
        return [f"may not be unspecified ({value})"]
    if ip.is_loopback:
        return ["may not be in the loopback range (127.0.0.0/8, ::1/128)"]
    if ip.is_link_local:
        return ["may not be in the link-local range (169.254.0.0/16, fe80::/10)"]
    if ip in ipaddress.ip_network("224.0.0.0/24") or (ip.version == 6 and ip in ipaddress.ip_network("ff02::/16")):
        return ["may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"]
    return []


# ------------------------------------------------------------- quantities


def parse_value_quantity(value: Value, path: str) -> tuple[Quantity | None, Errors]:
    """A quantity written as a Value (after defaults: a string)."""
    which = value.WhichOneof("kind")
    if which not in ("string_value", "number_value"):
        return None, [FieldError(path, 'must be a quantity, a number or a string such as "500m" or "128Mi"',
                                 _plain(value))]
    raw = getattr(value, which)
    try:
        return parse_quantity(raw), []
    except QuantityError as e:
        return None, [FieldError(path, e.reason, _plain(value))]


def parse_string_quantity(value: str, path: str) -> tuple[Quantity | None, Errors]:
    try:
        return parse_quantity(value), []
    except QuantityError as e:
        return None, [FieldError(path, e.reason, value)]


def _non_negative_quantity(path: str, q: Quantity) -> Errors:
    return [] if q.nanos >= 0 else [FieldError(path, "must be greater than or equal to 0", str(q))]


def _is_extended_resource(name: str) -> bool:
    """Domain-qualified resources outside kubernetes.io: whole numbers, no overcommit."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def _resource_name_errors(name: str, path: str, standard: tuple[str, ...], what: str) -> Errors:
    errs = _invalid(path, name, names.is_qualified_name(name))
    if errs:
        return errs
    if "/" not in name and name not in standard and not name.startswith(HUGEPAGES_PREFIX):
        errs.append(FieldError(path, f"must be a standard resource for {what}", name))
    return errs


def _resource_quantity_errors(name: str, q: Quantity, path: str) -> Errors:
    errs = _non_negative_quantity(path, q)
    if _is_extended_resource(name) and q.nanos % 10**9:
        errs.append(FieldError(path, "must be an integer", str(q)))
    return errs


def validate_resources(res: Message, path: str) -> Errors:
    """A container's resources: known names, valid non-negative quantities,
    requests <= limits (== for extended resources, which need a limit)."""
    errs: Errors = []
    parsed: dict[str, dict[str, Quantity]] = {"limits": {}, "requests": {}}
    for part in ("limits", "requests"):
        values = getattr(res, part)
        for name in sorted(values):
            p = f"{path}.{part}[{name}]"
            name_errs = _resource_name_errors(name, p, CONTAINER_RESOURCES, "containers")
            if name_errs:
                errs += name_errs
                continue  # a bad name gets no further, confusing, errors
            q, qerrs = parse_value_quantity(values[name], p)
            errs += qerrs
            if q is not None:
                errs += _resource_quantity_errors(name, q, p)
                parsed[part][name] = q
    limits = parsed["limits"]
    for name, request in parsed["requests"].items():
        p = f"{path}.requests[{name}]"
        limit = limits.get(name)
        if _is_extended_resource(name):
            if name not in res.limits:
                errs.append(FieldError.required(f"{path}.limits[{name}]",
                                                "Limit must be set for non overcommitable resources"))
            elif limit is not None and request != limit:
                errs.append(FieldError(p, f"must be equal to {name} limit of {limit}", str(request)))
        elif limit is not None and request > limit:
            errs.append(FieldError(p, f"must be less than or equal to {name} limit of {limit}", str(request)))
    return errs


# ------------------------------------------------------------- IntOrString


def _port_num_or_name(holder: Message, field: str, path: str) -> Errors:
    """An IntOrString port: a number 1-65535 or an IANA_SVC_NAME."""
    if not _is_set(holder, field):
        return [FieldError.required(path)]
    value = getattr(holder, field)
    which = value.WhichOneof("kind")
    if which == "number_value" and value.number_value.is_integer():
        number = int(value.number_value)
        return _invalid(path, number, names.is_valid_port_num(number))
    if which == "string_value":
        return _invalid(path, value.string_value, names.is_valid_port_name(value.string_value))
    return [FieldError(path, "must be an integer or a port name", _plain(value))]


_PERCENT_FMT = "[0-9]+%"


def _int_or_percent(holder: Message, field: str, path: str) -> tuple[tuple[int, bool] | None, Errors]:
    """A non-negative whole number or a percent string ("25%"): ((n, is_percent), errors)."""
    if not _is_set(holder, field):
        return (0, False), []
    value = getattr(holder, field)
    which = value.WhichOneof("kind")
    if which == "string_value":
        text = value.string_value
        if re.fullmatch(_PERCENT_FMT, text):
            return (int(text[:-1]), True), []
        msg = names.regex_error("a valid percent string must be a numeric string followed by an ending '%'",
                                _PERCENT_FMT, "1%", "93%")
        return None, [FieldError(path, msg, text)]
    if which == "number_value" and value.number_value.is_integer():
        number = int(value.number_value)
        errs = _non_negative(path, number)
        return ((number, False) if not errs else None), errs
    return None, [FieldError(path, "must be an integer or percentage (e.g '5%')", _plain(value))]


# ================================================================= metadata


def validate_object_meta(meta: Message, *, namespaced: bool, name_check: NameCheck,
                         path: str = "metadata") -> Errors:
    """Name (or generateName prefix), namespace, labels, annotations, owner
    references and finalizers (Kubernetes' ValidateObjectMeta)."""
    errs: Errors = []
    if meta.generate_name:
        errs += _invalid(f"{path}.generateName", meta.generate_name,
                         _name_errors(name_check, meta.generate_name, prefix=True))
    if meta.name:
        errs += _invalid(f"{path}.name", meta.name, _name_errors(name_check, meta.name, prefix=False))
    elif not meta.generate_name:
        errs.append(FieldError.required(f"{path}.name", "name or generateName is required"))
    if namespaced:
        if not meta.namespace:
            errs.append(FieldError.required(f"{path}.namespace"))
        else:
            errs += _invalid(f"{path}.namespace", meta.namespace, names.is_dns1123_label(meta.namespace))
    elif meta.namespace:
        errs.append(FieldError.forbidden(f"{path}.namespace", "not allowed on this type"))
    errs += _non_negative(f"{path}.generation", meta.generation)
    errs += validate_labels(meta.labels, f"{path}.labels")
    errs += validate_annotations(meta.annotations, f"{path}.annotations")
    errs += _owner_references(meta.owner_references, f"{path}.ownerReferences")
    errs += _finalizers(meta.finalizers, f"{path}.finalizers")
    return errs


def validate_labels(labels: Mapping[str, str], path: str) -> Errors:
    """Keys are qualified names, values label values (also nodeSelector, Service selector)."""
    errs: Errors = []
    for key in sorted(labels):
        errs += _invalid(path, key, names.is_qualified_name(key))
        errs += _invalid(path, labels[key], names.is_valid_label_value(labels[key]))
    return errs


def validate_annotations(annotations: Mapping[str, str], path: str) -> Errors:
    errs: Errors = []
    total = 0
    for key in sorted(annotations):
        errs += _invalid(path, key, names.is_qualified_name(key.lower()))
        total += len(key.encode()) + len(annotations[key].encode())
    if total > MAX_ANNOTATIONS_BYTES:
        errs.append(_too_long(path, MAX_ANNOTATIONS_BYTES))
    return errs


_OWNER_REFERENCE_FIELDS = (("api_version", "apiVersion"), ("kind", "kind"), ("name", "name"), ("uid", "uid"))


def _owner_references(refs: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    controllers = []
    for i, ref in enumerate(refs):
        for field, json_name in _OWNER_REFERENCE_FIELDS:
            if not getattr(ref, field):
                errs.append(FieldError.required(f"{path}[{i}].{json_name}"))
        if ref.controller:
            controllers.append(f"{ref.kind}/{ref.name}")
    if len(controllers) > 1:
        errs.append(FieldError(path, "Only one reference can have Controller set to true. Found \"true\" in "
                                     "references for " + " and ".join(controllers), controllers))
    return errs


def _finalizers(finalizers: Iterable[str], path: str) -> Errors:
    errs: Errors = []
    for i, name in enumerate(finalizers):
        p = f"{path}[{i}]"
        problems = names.is_qualified_name(name)
        errs += _invalid(p, name, problems)
        if not problems and "/" not in name and name not in STANDARD_FINALIZERS:
            errs.append(FieldError(p, "name is neither a standard finalizer name nor is it fully qualified", name))
    return errs


# =========================================================== label selectors


def validate_label_selector(selector: Message, path: str) -> Errors:
    """A LabelSelector: matchLabels as labels; matchExpressions with operator
    In / NotIn (values required) or Exists / DoesNotExist (no values)."""
    errs = validate_labels(selector.match_labels, f"{path}.matchLabels")
    for i, expr in enumerate(selector.match_expressions):
        p = f"{path}.matchExpressions[{i}]"
        if expr.operator in ("In", "NotIn"):
            if not expr.values:
                errs.append(FieldError.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif expr.operator in ("Exists", "DoesNotExist"):
            if expr.values:
                errs.append(FieldError.forbidden(
                    f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(FieldError(f"{p}.operator", "not a valid selector operator", expr.operator))
        errs += _invalid(f"{p}.key", expr.key, names.is_qualified_name(expr.key))
        for j, value in enumerate(expr.values):
            errs += _invalid(f"{p}.values[{j}]", value, names.is_valid_label_value(value))
    return errs


def _selector_of(selector: Message) -> labelsel.Selector | None:
    """The matcher of a LabelSelector validate_label_selector accepted."""
    try:
        return labelsel.selector_from_label_selector(dict(selector.match_labels), selector.match_expressions)
    except labelsel.SelectorError:
        return None


# ================================================================= pod specs


_VOLUME_SOURCES = (("empty_dir", "emptyDir"), ("host_path", "hostPath"), ("config_map", "configMap"),
                   ("secret", "secret"))
_PROBES = (("liveness_probe", "livenessProbe"), ("readiness_probe", "readinessProbe"),
           ("startup_probe", "startupProbe"))
_HANDLERS = (("exec", "exec"), ("http_get", "httpGet"), ("tcp_socket", "tcpSocket"))
_ENV_SOURCES = (("field_ref", "fieldRef"), ("resource_field_ref", "resourceFieldRef"),
                ("config_map_key_ref", "configMapKeyRef"), ("secret_key_ref", "secretKeyRef"))
_ENV_FROM_SOURCES = (("config_map_ref", "configMapRef"), ("secret_ref", "secretRef"))
_FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"
_HTTP_HEADER_FMT = "[-A-Za-z0-9]+"

# Optional name-like pod spec fields: (proto field, JSON name, check).
_POD_NAME_FIELDS = (
    ("service_account_name", "serviceAccountName", names.is_dns1123_subdomain),
    ("node_name", "nodeName", names.is_dns1123_subdomain),
    ("hostname", "hostname", names.is_dns1123_label),
    ("subdomain", "subdomain", names.is_dns1123_label),
    ("scheduler_name", "schedulerName", names.is_dns1123_subdomain),
    ("priority_class_name", "priorityClassName", names.is_dns1123_subdomain),
)


def validate_pod_spec(spec: Message, path: str, *, template: bool = False) -> Errors:
    """A PodSpec, of a pod or (template=True) of a pod template."""
    volumes = {v.name for v in spec.volumes}
    errs = _volumes(spec.volumes, f"{path}.volumes")
    if not spec.containers:
        errs.append(FieldError.required(f"{path}.containers"))
    container_names: set[str] = set()
    for field, json_name in (("init_containers", "initContainers"), ("containers", "containers")):
        containers = getattr(spec, field)
        for i, c in enumerate(containers):
            errs += _container(c, f"{path}.{json_name}[{i}]", volumes, container_names,
                               init=field == "init_containers")
        errs += _host_ports(containers, f"{path}.{json_name}", spec.host_network, template)
    errs += _one_of(f"{path}.restartPolicy", spec.restart_policy, RESTART_POLICIES)
    errs += _one_of(f"{path}.dnsPolicy", spec.dns_policy, DNS_POLICIES)
    if spec.dns_policy == "None":
        errs.append(FieldError.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is "
                                                             "None (kubeling does not support dnsConfig)"))
    errs += validate_labels(spec.node_selector, f"{path}.nodeSelector")
    for field, json_name, check in _POD_NAME_FIELDS:
        value = getattr(spec, field)
        if value:
            errs += _invalid(f"{path}.{json_name}", value, check(value))
    if spec.HasField("termination_grace_period_seconds"):
        errs += _non_negative(f"{path}.terminationGracePeriodSeconds", spec.termination_grace_period_seconds)
    if spec.HasField("active_deadline_seconds"):
        errs += _invalid(f"{path}.activeDeadlineSeconds", spec.active_deadline_seconds,
                         names.is_in_range(spec.active_deadline_seconds, 1, MAX_INT32))
    if spec.HasField("security_context"):
        errs += _pod_security_context(spec.security_context, f"{path}.securityContext")
    if spec.HasField("affinity"):
        errs += _affinity(spec.affinity, f"{path}.affinity")
    errs += _tolerations(spec.tolerations, f"{path}.tolerations")
    return errs


# ------------------------------------------------------------------ volumes


def _volumes(volumes: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, volume in enumerate(volumes):
        p = f"{path}[{i}]"
        if not volume.name:
            errs.append(FieldError.required(f"{p}.name"))
        else:
            errs += _invalid(f"{p}.name", volume.name, names.is_dns1123_label(volume.name))
            if volume.name in seen:
                errs.append(_duplicate(f"{p}.name", volume.name))
            seen.add(volume.name)
        present = [(f, j) for f, j in _VOLUME_SOURCES if volume.HasField(f)]
        if not present:
            errs.append(FieldError.required(p, "must specify a volume type"))
        for _, json_name in present[1:]:
            errs.append(FieldError.forbidden(f"{p}.{json_name}", "may not specify more than 1 volume type"))
        for field, json_name in present:
            errs += _VOLUME_SOURCE_CHECKS[field](getattr(volume, field), f"{p}.{json_name}")
    return errs


def _empty_dir(source: Message, path: str) -> Errors:
    errs = _one_of(f"{path}.medium", source.medium, EMPTY_DIR_MEDIA, required=False)
    if _is_set(source, "size_limit"):
        q, qerrs = parse_value_quantity(source.size_limit, f"{path}.sizeLimit")
        errs += qerrs
        if q is not None:
            errs += _non_negative_quantity(f"{path}.sizeLimit", q)
    return errs


def _host_path(source: Message, path: str) -> Errors:
    errs: Errors = []
    if not source.path:
        errs.append(FieldError.required(f"{path}.path"))
    elif not source.path.startswith("/"):
        errs.append(FieldError(f"{path}.path", "must be an absolute path", source.path))
    elif ".." in source.path.split("/"):
        errs.append(FieldError(f"{path}.path", "must not contain '..'", source.path))
    if source.type not in HOST_PATH_TYPES:
        errs.append(FieldError.not_supported(f"{path}.type", source.type, list(HOST_PATH_TYPES[1:])))
    return errs


def _projected_keys(source: Message, name_field: str, name_json: str, path: str) -> Errors:
    """configMap and secret volumes: a name, file modes, items within the volume."""
    errs: Errors = []
    name = getattr(source, name_field)
    if not name:
        errs.append(FieldError.required(f"{path}.{name_json}"))
    else:
        errs += _invalid(f"{path}.{name_json}", name, names.is_dns1123_subdomain(name))
    if source.HasField("default_mode") and not 0 <= source.default_mode <= 0o777:
        errs.append(FieldError(f"{path}.defaultMode", _FILE_MODE_ERROR, source.default_mode))
    for i, item in enumerate(source.items):
        p = f"{path}.items[{i}]"
        if not item.key:
            errs.append(FieldError.required(f"{p}.key"))
        if not item.path:
            errs.append(FieldError.required(f"{p}.path"))
        else:
            errs += _invalid(f"{p}.path", item.path, _relative_path_errors(item.path))
        if item.HasField("mode") and not 0 <= item.mode <= 0o777:
            errs.append(FieldError(f"{p}.mode", _FILE_MODE_ERROR, item.mode))
    return errs


_VOLUME_SOURCE_CHECKS: dict[str, Callable[[Message, str], Errors]] = {
    "empty_dir": _empty_dir,
    "host_path": _host_path,
    "config_map": lambda s, p: _projected_keys(s, "name", "name", p),
    "secret": lambda s, p: _projected_keys(s, "secret_name", "secretName", p),
}


# --------------------------------------------------------------- containers


def _container(c: Message, path: str, volumes: set[str], seen: set[str], *, init: bool) -> Errors:
    errs: Errors = []
    if not c.name:
        errs.append(FieldError.required(f"{path}.name"))
    else:
        errs += _invalid(f"{path}.name", c.name, names.is_dns1123_label(c.name))
        if c.name in seen:
            errs.append(_duplicate(f"{path}.name", c.name))
        seen.add(c.name)
    if not c.image:
        errs.append(FieldError.required(f"{path}.image"))
    elif c.image != c.image.strip():
        errs.append(FieldError(f"{path}.image", "must not have leading or trailing whitespace", c.image))
    errs += _one_of(f"{path}.imagePullPolicy", c.image_pull_policy, PULL_POLICIES)
    errs += _one_of(f"{path}.terminationMessagePolicy", c.termination_message_policy,
                    TERMINATION_MESSAGE_POLICIES)
    errs += _container_ports(c.ports, f"{path}.ports")
    errs += _env(c.env, f"{path}.env")
    errs += _env_from(c.env_from, f"{path}.envFrom")
    if c.HasField("resources"):
        errs += validate_resources(c.resources, f"{path}.resources")
    errs += _volume_mounts(c.volume_mounts, volumes, f"{path}.volumeMounts")
    for field, json_name in _PROBES:
        if not c.HasField(field):
            continue
        if init:
            errs.append(FieldError.forbidden(f"{path}.{json_name}", "may not be set for init containers"))
        else:
            errs += _probe(getattr(c, field), f"{path}.{json_name}", json_name)
    if c.HasField("lifecycle"):
        if init:
            errs.append(FieldError.forbidden(f"{path}.lifecycle", "may not be set for init containers"))
        for hook, json_name in (("post_start", "postStart"), ("pre_stop", "preStop")):
            if c.lifecycle.HasField(hook):
                errs += _handler(getattr(c.lifecycle, hook), f"{path}.lifecycle.{json_name}")
    if c.HasField("security_context"):
        errs += _security_context(c.security_context, f"{path}.securityContext")
    return errs


def _container_ports(ports: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        if port.name:
            errs += _invalid(f"{p}.name", port.name, names.is_valid_port_name(port.name))
            if port.name in seen:
                errs.append(_duplicate(f"{p}.name", port.name))
            seen.add(port.name)
        if port.container_port == 0:
            errs.append(FieldError.required(f"{p}.containerPort"))
        else:
            errs += _invalid(f"{p}.containerPort", port.container_port, names.is_valid_port_num(port.container_port))
        if port.host_port != 0:
            errs += _invalid(f"{p}.hostPort", port.host_port, names.is_valid_port_num(port.host_port))
        errs += _one_of(f"{p}.protocol", port.protocol, PROTOCOLS)
        if port.host_ip:
            errs += _invalid(f"{p}.hostIP", port.host_ip, _ip_errors(port.host_ip))
    return errs


def _host_ports(containers: Iterable[Message], path: str, host_network: bool, template: bool) -> Errors:
    """Host ports are unique per protocol and host IP; with hostNetwork a host
    port is the container port (a template may leave it 0: pods default it)."""
    errs: Errors = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        for j, port in enumerate(c.ports):
            p = f"{path}[{i}].ports[{j}]"
            if host_network and port.host_port != port.container_port and not (template and port.host_port == 0):
                errs.append(FieldError(f"{p}.containerPort", "must match `hostPort` when `hostNetwork` is true",
                                       port.container_port))
            if port.host_port == 0:
                continue
            key = f"{port.protocol}/{port.host_ip}/{port.host_port}"
            if key in seen:
                errs.append(_duplicate(f"{p}.hostPort", key))
            seen.add(key)
    return errs


def _env(env: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        if not var.name:
            errs.append(FieldError.required(f"{p}.name"))
        else:
            errs += _invalid(f"{p}.name", var.name, names.is_env_var_name(var.name))
        if var.HasField("value_from"):
            errs += _env_source(var, f"{p}.valueFrom")
    return errs


def _env_source(var: Message, path: str) -> Errors:
    source = var.value_from
    present = [(f, j) for f, j in _ENV_SOURCES if source.HasField(f)]
    errs: Errors = []
    if var.value:
        errs.append(FieldError(path, "may not be specified when `value` is not empty", ""))
    if not present:
        errs.append(FieldError(path, "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` "
                                     "or `secretKeyRef`", ""))
    elif len(present) > 1:
        errs.append(FieldError(path, "may not have more than one field specified at a time", ""))
    for field, json_name in present:
        errs += _ENV_SOURCE_CHECKS[field](getattr(source, field), f"{path}.{json_name}")
    return errs


_SUBSCRIPTED_FIELD = re.compile(r"(.*)\['(.*)'\]")


def _field_ref(ref: Message, path: str) -> Errors:
    errs = _one_of(f"{path}.apiVersion", ref.api_version, ("v1",))
    fp, p = ref.field_path, f"{path}.fieldPath"
    m = _SUBSCRIPTED_FIELD.fullmatch(fp)
    if not fp:
        errs.append(FieldError.required(p))
    elif m:
        base, key = m.groups()
        if base == "metadata.labels":
            errs += _invalid(p, fp, names.is_qualified_name(key))
        elif base == "metadata.annotations":
            errs += _invalid(p, fp, names.is_qualified_name(key.lower()))
        else:
            errs.append(FieldError(p, "does not support subscript", base))
    elif fp not in ENV_FIELD_PATHS:
        errs.append(FieldError.not_supported(p, fp, list(ENV_FIELD_PATHS)))
    return errs


def _resource_field_ref(ref: Message, path: str) -> Errors:
    errs: Errors = []
    resource = ref.resource
    if not resource:
        errs.append(FieldError.required(f"{path}.resource"))
    elif resource not in ENV_RESOURCE_FIELDS and not resource.startswith(
            ("limits." + HUGEPAGES_PREFIX, "requests." + HUGEPAGES_PREFIX)):
        errs.append(FieldError.not_supported(f"{path}.resource", resource, list(ENV_RESOURCE_FIELDS)))
    if _is_set(ref, "divisor"):
        p = f"{path}.divisor"
        q, qerrs = parse_value_quantity(ref.divisor, p)
        errs += qerrs
        allowed = CPU_DIVISORS if resource.endswith(".cpu") else MEMORY_DIVISORS
        if q is not None and resource and str(q) not in {str(parse_quantity(d)) for d in allowed}:
            what = "cpu" if resource.endswith(".cpu") else resource.split(".", 1)[-1]
            errs.append(FieldError(p, f"only divisor's values {', '.join(allowed)} are supported with the "
                                      f"{what} resource", _plain(ref.divisor)))
    return errs


def _key_ref(ref: Message, path: str) -> Errors:
    errs: Errors = []
    if not ref.name:
        errs.append(FieldError.required(f"{path}.name"))
    else:
        errs += _invalid(f"{path}.name", ref.name, names.is_dns1123_subdomain(ref.name))
    if not ref.key:
        errs.append(FieldError.required(f"{path}.key"))
    else:
        errs += _invalid(f"{path}.key", ref.key, _config_key_errors(ref.key))
    return errs


_ENV_SOURCE_CHECKS: dict[str, Callable[[Message, str], Errors]] = {
    "field_ref": _field_ref,
    "resource_field_ref": _resource_field_ref,
    "config_map_key_ref": _key_ref,
    "secret_key_ref": _key_ref,
}


def _env_from(sources: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    for i, source in enumerate(sources):
        p = f"{path}[{i}]"
        if source.prefix:
            errs += _invalid(f"{p}.prefix", source.prefix, names.is_env_var_name(source.prefix))
        present = [(f, j) for f, j in _ENV_FROM_SOURCES if source.HasField(f)]
        if not present:
            errs.append(FieldError(p, "must specify one of: `configMapRef` or `secretRef`", ""))
        elif len(present) > 1:
            errs.append(FieldError(p, "may not have more than one field specified at a time", ""))
        for field, json_name in present:
            name = getattr(source, field).name
            if not name:
                errs.append(FieldError.required(f"{p}.{json_name}.name"))
            else:
                errs += _invalid(f"{p}.{json_name}.name", name, names.is_dns1123_subdomain(name))
    return errs


def _volume_mounts(mounts: Iterable[Message], volumes: set[str], path: str) -> Errors:
    errs: Errors = []
    mount_paths: set[str] = set()
    for i, mount in enumerate(mounts):
        p = f"{path}[{i}]"
        if not mount.name:
            errs.append(FieldError.required(f"{p}.name"))
        elif mount.name not in volumes:
            errs.append(_not_found(f"{p}.name", mount.name))
        if not mount.mount_path:
            errs.append(FieldError.required(f"{p}.mountPath"))
        else:
            if not mount.mount_path.startswith("/"):
                errs.append(FieldError(f"{p}.mountPath", "must be an absolute path", mount.mount_path))
            if mount.mount_path in mount_paths:
                errs.append(FieldError(f"{p}.mountPath", "must be unique", mount.mount_path))
            mount_paths.add(mount.mount_path)
        if mount.sub_path:
            errs += _invalid(f"{p}.subPath", mount.sub_path, _relative_path_errors(mount.sub_path))
    return errs


def _probe(probe: Message, path: str, which: str) -> Errors:
    """`which` is livenessProbe, readinessProbe or startupProbe."""
    errs = _handler(probe, path)
    errs += _non_negative(f"{path}.initialDelaySeconds", probe.initial_delay_seconds)
    for field, json_name in (("timeout_seconds", "timeoutSeconds"), ("period_seconds", "periodSeconds"),
                             ("success_threshold", "successThreshold"), ("failure_threshold", "failureThreshold")):
        errs += _at_least(f"{path}.{json_name}", getattr(probe, field), 1)
    if which != "readinessProbe" and probe.success_threshold > 1:
        errs.append(FieldError(f"{path}.successThreshold", "must be 1", probe.success_threshold))
    if probe.HasField("termination_grace_period_seconds"):
        p = f"{path}.terminationGracePeriodSeconds"
        if which == "readinessProbe":
            errs.append(FieldError(p, "must not be set for readinessProbes", probe.termination_grace_period_seconds))
        else:
            errs += _positive(p, probe.termination_grace_period_seconds)
    return errs


def _handler(handler: Message, path: str) -> Errors:
    """A probe or lifecycle handler: exactly one of exec, httpGet, tcpSocket."""
    present = [(f, j) for f, j in _HANDLERS if handler.HasField(f)]
    if not present:
        return [FieldError.required(path, "must specify a handler type")]
    errs = [FieldError.forbidden(f"{path}.{j}", "may not specify more than 1 handler type") for _, j in present[1:]]
    if handler.HasField("exec") and not handler.exec.command:
        errs.append(FieldError.required(f"{path}.exec.command"))
    if handler.HasField("http_get"):
        http, p = handler.http_get, f"{path}.httpGet"
        if not http.path:
            errs.append(FieldError.required(f"{p}.path"))
        errs += _port_num_or_name(http, "port", f"{p}.port")
        errs += _one_of(f"{p}.scheme", http.scheme, URI_SCHEMES)
        for i, header in enumerate(http.http_headers):
            if not re.fullmatch(_HTTP_HEADER_FMT, header.name):
                errs.append(FieldError(f"{p}.httpHeaders[{i}].name", names.regex_error(
                    "a valid HTTP header must consist of alphanumeric characters or '-'", _HTTP_HEADER_FMT,
                    "X-Header-Name"), header.name))
    if handler.HasField("tcp_socket"):
        errs += _port_num_or_name(handler.tcp_socket, "port", f"{path}.tcpSocket.port")
    return errs


def _security_context(sc: Message, path: str) -> Errors:
    errs: Errors = []
    for field, json_name in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup")):
        if sc.HasField(field):
            errs += _id_range(f"{path}.{json_name}", getattr(sc, field))
    if sc.privileged and sc.HasField("allow_privilege_escalation") and not sc.allow_privilege_escalation:
        errs.append(FieldError(path, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
                               _show(sc)))
    return errs


def _pod_security_context(sc: Message, path: str) -> Errors:
    errs: Errors = []
    for field, json_name in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup"), ("fs_group", "fsGroup")):
        if sc.HasField(field):
            errs += _id_range(f"{path}.{json_name}", getattr(sc, field))
    for i, gid in enumerate(sc.supplemental_groups):
        errs += _id_range(f"{path}.supplementalGroups[{i}]", gid)
    return errs


# ---------------------------------------------------------------- scheduling


def _affinity(affinity: Message, path: str) -> Errors:
    if not affinity.HasField("node_affinity"):
        return []
    na, path = affinity.node_affinity, f"{path}.nodeAffinity"
    errs: Errors = []
    if na.HasField("required_during_scheduling_ignored_during_execution"):
        p = f"{path}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        terms = na.required_during_scheduling_ignored_during_execution.node_selector_terms
        if not terms:
            errs.append(FieldError.required(p, "must have at least one node selector term"))
        for i, term in enumerate(terms):
            errs += _node_selector_term(term, f"{p}[{i}]")
    for i, preferred in enumerate(na.preferred_during_scheduling_ignored_during_execution):
        p = f"{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
        if not 1 <= preferred.weight <= 100:
            errs.append(FieldError(f"{p}.weight", "must be in the range 1-100", preferred.weight))
        errs += _node_selector_term(preferred.preference, f"{p}.preference")
    return errs


def _node_selector_term(term: Message, path: str) -> Errors:
    errs: Errors = []
    for i, req in enumerate(term.match_expressions):
        errs += _node_selector_requirement(req, f"{path}.matchExpressions[{i}]")
    for i, req in enumerate(term.match_fields):
        p = f"{path}.matchFields[{i}]"
        if req.key != "metadata.name":
            errs.append(FieldError(f"{p}.key", "not a valid field selector key", req.key))
        if req.operator not in ("In", "NotIn"):
            errs.append(FieldError(f"{p}.operator", "not a valid selector operator", req.operator))
        elif len(req.values) != 1:
            errs.append(FieldError.required(
                f"{p}.values", "must be only one value when `operator` is 'In' or 'NotIn' for node field selector"))
    return errs


def _node_selector_requirement(req: Message, path: str) -> Errors:
    errs: Errors = []
    op, values = req.operator, list(req.values)
    if op in ("In", "NotIn"):
        if not values:
            errs.append(FieldError.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            errs.append(FieldError.forbidden(
                f"{path}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    elif op in ("Gt", "Lt"):
        if len(values) != 1:
            errs.append(FieldError.required(
                f"{path}.values", "must be specified single value when `operator` is 'Lt' or 'Gt'"))
        elif not re.fullmatch(r"[+-]?[0-9]+", values[0]):
            errs.append(FieldError(f"{path}.values[0]", "must be an integer for 'Gt' and 'Lt'", values[0]))
    else:
        errs.append(FieldError(f"{path}.operator", "not a valid selector operator", op))
    errs += _invalid(f"{path}.key", req.key, names.is_qualified_name(req.key))
    return errs


def _tolerations(tolerations: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    for i, t in enumerate(tolerations):
        p = f"{path}[{i}]"
        if t.key:
            errs += _invalid(f"{p}.key", t.key, names.is_qualified_name(t.key))
        elif t.operator != "Exists":
            errs.append(FieldError(f"{p}.operator", "operator must be Exists when `key` is empty, which means "
                                                    '"match all values and all keys"', t.operator))
        if t.HasField("toleration_seconds") and t.effect != "NoExecute":
            errs.append(FieldError(f"{p}.effect", "effect must be 'NoExecute' when `tolerationSeconds` is set",
                                   t.effect))
        if t.operator in ("", "Equal"):
            errs += _invalid(f"{p}.value", t.value, names.is_valid_label_value(t.value))
        elif t.operator == "Exists":
            if t.value:
                errs.append(FieldError(f"{p}.operator", "value must be empty when `operator` is 'Exists'", t.value))
        else:
            errs.append(FieldError.not_supported(f"{p}.operator", t.operator, list(TOLERATION_OPERATORS)))
        errs += _one_of(f"{p}.effect", t.effect, TAINT_EFFECTS, required=False)
    return errs


# ---------------------------------------------------------------- templates


def validate_pod_template(template: Message, path: str, selector: labelsel.Selector | None) -> Errors:
    """The pod template of a Deployment or ReplicaSet: labels the selector
    matches, a valid pod spec, restartPolicy Always, no activeDeadlineSeconds."""
    meta = template.metadata
    errs = validate_labels(meta.labels, f"{path}.metadata.labels")
    errs += validate_annotations(meta.annotations, f"{path}.metadata.annotations")
    if selector is not None and not selector.matches(dict(meta.labels)):
        errs.append(FieldError(f"{path}.metadata.labels", "selector does not match template labels",
                               dict(meta.labels)))
    spec, p = template.spec, f"{path}.spec"
    errs += validate_pod_spec(spec, p, template=True)
    if spec.restart_policy and spec.restart_policy != "Always":
        errs.append(FieldError.not_supported(f"{p}.restartPolicy", spec.restart_policy, ["Always"]))
    if spec.HasField("active_deadline_seconds"):
        errs.append(FieldError.forbidden(f"{p}.activeDeadlineSeconds",
                                         "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return errs


# ====================================================================== kinds

# ---------------------------------------------------------------------- Pod


def _pod(pod: Message) -> Errors:
    return validate_pod_spec(pod.spec, "spec")


def _pod_status(pod: Message, old: Message | None) -> Errors:
    status = pod.status
    errs = _one_of("status.phase", status.phase, POD_PHASES)
    errs += _one_of("status.qosClass", status.qos_class, QOS_CLASSES, required=False)
    for field, json_name in (("pod_ip", "podIP"), ("host_ip", "hostIP")):
        value = getattr(status, field)
        if value:
            errs += _invalid(f"status.{json_name}", value, _ip_errors(value))
    for field, json_name in (("pod_ips", "podIPs"), ("host_ips", "hostIPs")):
        for i, entry in enumerate(getattr(status, field)):
            errs += _invalid(f"status.{json_name}[{i}].ip", entry.ip, _ip_errors(entry.ip))
    return errs


def _pod_update(pod: Message, old: Message) -> Errors:
    """Only images, activeDeadlineSeconds and added tolerations may change;
    spec.nodeName is set through Bind, never through Update."""
    new_spec, old_spec = pod.spec, old.spec
    errs: Errors = []
    if new_spec.node_name != old_spec.node_name:
        errs.append(FieldError.forbidden("spec.nodeName", "may not be changed by an update; a pod is assigned "
                                                          "to a node through Bind"))
    errs += _active_deadline_update(new_spec, old_spec)
    errs += _tolerations_update(new_spec.tolerations, old_spec.tolerations)
    # Put back what may change; anything else that differs is forbidden.
    masked = copy(new_spec)
    for field in ("init_containers", "containers"):
        for c, old_c in zip(getattr(masked, field), getattr(old_spec, field)):
            c.image = old_c.image
    masked.node_name = old_spec.node_name
    masked.ClearField("active_deadline_seconds")
    if old_spec.HasField("active_deadline_seconds"):
        masked.active_deadline_seconds = old_spec.active_deadline_seconds
    del masked.tolerations[:]
    masked.tolerations.extend(old_spec.tolerations)
    if masked != old_spec:
        changed = [f"spec.{f.json_name}" for f in masked.DESCRIPTOR.fields
                   if _field_differs(masked, old_spec, f.name)]
        errs.append(FieldError.forbidden("spec", POD_UPDATE_FORBIDDEN + "; changed: " + ", ".join(changed)))
    return errs


def _field_differs(a: Message, b: Message, field: str) -> bool:
    fd = a.DESCRIPTOR.fields_by_name[field]
    if fd.has_presence and a.HasField(field) != b.HasField(field):
        return True
    return getattr(a, field) != getattr(b, field)  # maps and repeated fields compare by content


def _active_deadline_update(new_spec: Message, old_spec: Message) -> Errors:
    path = "spec.activeDeadlineSeconds"
    if new_spec.HasField("active_deadline_seconds"):
        new = new_spec.active_deadline_seconds
        if old_spec.HasField("active_deadline_seconds") and new > old_spec.active_deadline_seconds:
            return [FieldError(path, "must be less than or equal to previous value", new)]
    elif old_spec.HasField("active_deadline_seconds"):
        return [FieldError(path, "must not update from a positive integer to nil value", None)]
    return []


def _tolerations_update(new: Iterable[Message], old: Iterable[Message]) -> Errors:
    """Every old toleration must still be there (its tolerationSeconds may change)."""
    new = list(new)
    for before in old:
        found = False
        for after in new:
            probe = copy(before)
            probe.ClearField("toleration_seconds")
            if after.HasField("toleration_seconds"):
                probe.toleration_seconds = after.toleration_seconds
            if probe == after:
                found = True
                break
        if not found:
            return [FieldError.forbidden("spec.tolerations",
                                         "existing toleration can not be modified except its tolerationSeconds")]
    return []


# ------------------------------------------------------ Deployment, ReplicaSet


def _workload_spec(spec: Message, kind_name: str) -> Errors:
    """What Deployments and ReplicaSets share: replicas, selector, template."""
    errs = _non_negative("spec.replicas", spec.replicas)
    errs += _non_negative("spec.minReadySeconds", spec.min_ready_seconds)
    selector = None
    if not spec.HasField("selector"):
        errs.append(FieldError.required("spec.selector"))
    else:
        selector_errs = validate_label_selector(spec.selector, "spec.selector")
        errs += selector_errs
        if not selector_errs:
            if not spec.selector.match_labels and not spec.selector.match_expressions:
                errs.append(FieldError("spec.selector", f"empty selector is invalid for {kind_name}",
                                       _show(spec.selector)))
            else:
                selector = _selector_of(spec.selector)
    if not spec.HasField("template"):
        errs.append(FieldError.required("spec.template"))
    else:
        errs += validate_pod_template(spec.template, "spec.template", selector)
    return errs


def _selector_update(obj: Message, old: Message) -> Errors:
    if obj.spec.selector != old.spec.selector:
        return [FieldError("spec.selector", "field is immutable", _show(obj.spec.selector))]
    return []


def _deployment(d: Message) -> Errors:
    spec = d.spec
    errs = _workload_spec(spec, "deployment")
    errs += _deployment_strategy(spec.strategy, "spec.strategy")
    if spec.HasField("revision_history_limit"):
        errs += _non_negative("spec.revisionHistoryLimit", spec.revision_history_limit)
    if spec.HasField("progress_deadline_seconds"):
        p = "spec.progressDeadlineSeconds"
        errs += _non_negative(p, spec.progress_deadline_seconds)
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            errs.append(FieldError(p, "must be greater than minReadySeconds", spec.progress_deadline_seconds))
    return errs


def _deployment_strategy(strategy: Message, path: str) -> Errors:
    errs = _one_of(f"{path}.type", strategy.type, STRATEGY_TYPES)
    if strategy.type == "Recreate" and strategy.HasField("rolling_update"):
        errs.append(FieldError.forbidden(f"{path}.rollingUpdate",
                                         "may not be specified when strategy `type` is 'Recreate'"))
    if strategy.type != "RollingUpdate":
        return errs
    if not strategy.HasField("rolling_update"):
        return errs + [FieldError.required(f"{path}.rollingUpdate")]
    rolling, p = strategy.rolling_update, f"{path}.rollingUpdate"
    unavailable, e1 = _int_or_percent(rolling, "max_unavailable", f"{p}.maxUnavailable")
    surge, e2 = _int_or_percent(rolling, "max_surge", f"{p}.maxSurge")
    errs += e1 + e2
    if unavailable is not None and unavailable[1] and unavailable[0] > 100:
        errs.append(FieldError(f"{p}.maxUnavailable", "must not be greater than 100%",
                               _plain(rolling.max_unavailable)))
    if unavailable is not None and surge is not None and unavailable[0] == 0 and surge[0] == 0:
        errs.append(FieldError(f"{p}.maxUnavailable", "may not be 0 when `maxSurge` is 0",
                               _plain(rolling.max_unavailable) if _is_set(rolling, "max_unavailable") else 0))
    return errs


def _deployment_status(d: Message, old: Message | None) -> Errors:
    return _status_counts(d.status, ("observed_generation", "replicas", "updated_replicas", "ready_replicas",
                                     "available_replicas", "unavailable_replicas"))


def _replica_set(rs: Message) -> Errors:
    return _workload_spec(rs.spec, "replicaset")


def _replica_set_status(rs: Message, old: Message | None) -> Errors:
    return _status_counts(rs.status, ("replicas", "fully_labeled_replicas", "ready_replicas",
                                      "available_replicas", "observed_generation"))


def _status_counts(status: Message, fields: tuple[str, ...]) -> Errors:
    errs: Errors = []
    for field in fields:
        json_name = status.DESCRIPTOR.fields_by_name[field].json_name
        errs += _non_negative(f"status.{json_name}", getattr(status, field))
    return errs


# ------------------------------------------------------------------ Service


def _service(svc: Message) -> Errors:
    spec = svc.spec
    errs = _one_of("spec.type", spec.type, SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    if not spec.ports and not headless:
        errs.append(FieldError.required("spec.ports"))
    errs += _service_ports(spec)
    errs += _one_of("spec.sessionAffinity", spec.session_affinity, SESSION_AFFINITIES)
    if spec.session_affinity == "ClientIP":
        timeout = spec.session_affinity_config.client_ip.timeout_seconds
        if not 0 < timeout <= MAX_CLIENT_IP_AFFINITY_SECONDS:
            errs.append(FieldError("spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                                   f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}", timeout))
    elif spec.HasField("session_affinity_config"):
        errs.append(FieldError("spec.sessionAffinityConfig", "must not be set when `sessionAffinity` is None",
                               _show(spec.session_affinity_config)))
    errs += validate_labels(spec.selector, "spec.selector")
    if spec.cluster_ip and not headless:
        errs += _invalid("spec.clusterIP", spec.cluster_ip, _ip_errors(spec.cluster_ip))
    if headless and spec.type == "NodePort":
        errs.append(FieldError("spec.clusterIP", "may not be set to 'None' for NodePort services", "None"))
    for i, ip in enumerate(spec.cluster_ips):
        if ip != "None":
            errs += _invalid(f"spec.clusterIPs[{i}]", ip, _ip_errors(ip))
    if spec.cluster_ips and spec.cluster_ip and spec.cluster_ips[0] != spec.cluster_ip:
        errs.append(FieldError("spec.clusterIPs[0]", "must be same as clusterIP", spec.cluster_ips[0]))
    for i, ip in enumerate(spec.external_ips):
        errs += _invalid(f"spec.externalIPs[{i}]", ip, _ip_errors(ip))
    errs += _one_of("spec.externalTrafficPolicy", spec.external_traffic_policy, TRAFFIC_POLICIES, required=False)
    if spec.external_traffic_policy == "Local" and spec.type != "NodePort":
        errs.append(FieldError("spec.externalTrafficPolicy", "may only be set when `type` is 'NodePort' or "
                                                             "'LoadBalancer'", "Local"))
    errs += _one_of("spec.internalTrafficPolicy", spec.internal_traffic_policy, TRAFFIC_POLICIES, required=False)
    return errs


def _service_ports(spec: Message) -> Errors:
    errs: Errors = []
    require_name = len(spec.ports) > 1
    port_names: set[str] = set()
    ports: set[tuple[str, int]] = set()
    node_ports: set[tuple[str, int]] = set()
    lo, hi = NODE_PORT_RANGE
    for i, port in enumerate(spec.ports):
        p = f"spec.ports[{i}]"
        if not port.name:
            if require_name:
                errs.append(FieldError.required(f"{p}.name"))
        else:
            errs += _invalid(f"{p}.name", port.name, names.is_dns1123_label(port.name))
            if port.name in port_names:
                errs.append(_duplicate(f"{p}.name", port.name))
            port_names.add(port.name)
        errs += _invalid(f"{p}.port", port.port, names.is_valid_port_num(port.port))
        errs += _one_of(f"{p}.protocol", port.protocol, PROTOCOLS)
        errs += _port_num_or_name(port, "target_port", f"{p}.targetPort")
        key = (port.protocol, port.port)
        if key in ports:
            errs.append(_duplicate(p, f"{port.port}/{port.protocol}"))
        ports.add(key)
        if port.node_port == 0:
            continue
        if spec.type == "ClusterIP":
            errs.append(FieldError.forbidden(f"{p}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        elif not lo <= port.node_port <= hi:
            errs.append(FieldError(f"{p}.nodePort", f"provided port is not in the valid range. The range of "
                                                    f"valid ports is {lo}-{hi}", port.node_port))
        node_key = (port.protocol, port.node_port)
        if node_key in node_ports:
            errs.append(_duplicate(f"{p}.nodePort", port.node_port))
        node_ports.add(node_key)
    return errs


def _service_update(svc: Message, old: Message) -> Errors:
    """A cluster IP, once set, stays (clients and proxies hold it)."""
    errs: Errors = []
    if old.spec.cluster_ip and svc.spec.cluster_ip != old.spec.cluster_ip:
        errs.append(FieldError("spec.clusterIP", "field is immutable", svc.spec.cluster_ip))
    if old.spec.cluster_ips and list(svc.spec.cluster_ips) != list(old.spec.cluster_ips):
        errs.append(FieldError("spec.clusterIPs", "field is immutable", list(svc.spec.cluster_ips)))
    return errs


# ---------------------------------------------------------------- Endpoints


def _endpoints(ep: Message) -> Errors:
    errs: Errors = []
    for i, subset in enumerate(ep.subsets):
        p = f"subsets[{i}]"
        if not subset.addresses and not subset.not_ready_addresses:
            errs.append(FieldError.required(p, "must specify `addresses` or `notReadyAddresses`"))
        for field, json_name in (("addresses", "addresses"), ("not_ready_addresses", "notReadyAddresses")):
            for j, address in enumerate(getattr(subset, field)):
                errs += _endpoint_address(address, f"{p}.{json_name}[{j}]")
        # A subset without ports is how a headless Service without ports is
        # published, so it is allowed, as in Kubernetes.
        require_name = len(subset.ports) > 1
        port_names: set[str] = set()
        for j, port in enumerate(subset.ports):
            pp = f"{p}.ports[{j}]"
            if not port.name:
                if require_name:
                    errs.append(FieldError.required(f"{pp}.name"))
            else:
                errs += _invalid(f"{pp}.name", port.name, names.is_dns1123_label(port.name))
                if port.name in port_names:
                    errs.append(_duplicate(f"{pp}.name", port.name))
                port_names.add(port.name)
            errs += _invalid(f"{pp}.port", port.port, names.is_valid_port_num(port.port))
            errs += _one_of(f"{pp}.protocol", port.protocol, PROTOCOLS)
    return errs


def _endpoint_address(address: Message, path: str) -> Errors:
    problems = _ip_errors(address.ip) or _special_ip_errors(address.ip)
    errs = _invalid(f"{path}.ip", address.ip, problems)
    if address.hostname:
        errs += _invalid(f"{path}.hostname", address.hostname, names.is_dns1123_label(address.hostname))
    if address.HasField("node_name"):
        errs += _invalid(f"{path}.nodeName", address.node_name, names.is_dns1123_subdomain(address.node_name))
    return errs


# --------------------------------------------------------------------- Node


def _node(node: Message) -> Errors:
    spec = node.spec
    errs: Errors = []
    if spec.pod_cidr:
        errs += _invalid("spec.podCIDR", spec.pod_cidr, _cidr_errors(spec.pod_cidr))
    families: set[int] = set()
    for i, cidr in enumerate(spec.pod_cidrs):
        problems = _cidr_errors(cidr)
        errs += _invalid(f"spec.podCIDRs[{i}]", cidr, problems)
        if problems:
            continue
        family = ipaddress.ip_network(cidr, strict=False).version
        if family in families:
            errs.append(FieldError("spec.podCIDRs", "may specify no more than one CIDR for each IP family",
                                   list(spec.pod_cidrs)))
        families.add(family)
    if not errs and spec.pod_cidr and spec.pod_cidrs and spec.pod_cidrs[0] != spec.pod_cidr:
        errs.append(FieldError("spec.podCIDRs[0]", "must match spec.podCIDR", spec.pod_cidrs[0]))
    errs += _taints(spec.taints, "spec.taints")
    return errs


def _taints(taints: Iterable[Message], path: str) -> Errors:
    errs: Errors = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = f"{path}[{i}]"
        errs += _invalid(f"{p}.key", taint.key, names.is_qualified_name(taint.key))
        errs += _invalid(f"{p}.value", taint.value, names.is_valid_label_value(taint.value))
        errs += _one_of(f"{p}.effect", taint.effect, TAINT_EFFECTS)
        key = (taint.key, taint.effect)
        if key in seen:
            errs.append(FieldError(p, "taints must be unique by key and effect pair", _show(taint)))
        seen.add(key)
    return errs


def _node_status(node: Message, old: Message | None) -> Errors:
    errs: Errors = []
    for field in ("capacity", "allocatable"):
        values = getattr(node.status, field)
        for name in sorted(values):
            p = f"status.{field}[{name}]"
            errs += _resource_name_errors(name, p, NODE_RESOURCES, "nodes")
            q, qerrs = parse_string_quantity(values[name], p)
            errs += qerrs
            if q is not None:
                errs += _resource_quantity_errors(name, q, p)
    return errs


def _node_update(node: Message, old: Message) -> Errors:
    """A pod CIDR and provider ID are set once, from "" to a value."""
    errs: Errors = []
    once = "node updates may not change {} except from \"\" to valid"
    if old.spec.pod_cidr and node.spec.pod_cidr != old.spec.pod_cidr:
        errs.append(FieldError.forbidden("spec.podCIDR", once.format("podCIDR")))
    if old.spec.pod_cidrs and list(node.spec.pod_cidrs) != list(old.spec.pod_cidrs):
        errs.append(FieldError.forbidden("spec.podCIDRs", once.format("podCIDR")))
    if old.spec.provider_id and node.spec.provider_id != old.spec.provider_id:
        errs.append(FieldError.forbidden("spec.providerID", once.format("providerID")))
    return errs


# ---------------------------------------------------------------- Namespace


def _namespace(ns: Message) -> Errors:
    return _finalizers(ns.spec.finalizers, "spec.finalizers")


# --------------------------------------------------------- ConfigMap, Secret


def _config_keys(maps: Iterable[tuple[str, Mapping[str, object]]]) -> tuple[Errors, int]:
    """Key errors of data maps ("data", "binaryData"), and their total size."""
    errs: Errors = []
    total = 0
    for field, values in maps:
        for key in sorted(values):
            errs += _invalid(f"{field}[{key}]", key, _config_key_errors(key))
            value = values[key]
            total += len(key) + len(value.encode() if isinstance(value, str) else value)
    return errs, total


def _config_map(cm: Message) -> Errors:
    errs, total = _config_keys((("data", cm.data), ("binaryData", cm.binary_data)))
    for key in sorted(set(cm.data) & set(cm.binary_data)):
        errs.append(FieldError(f"data[{key}]", "duplicate of key present in binaryData", key))
    if total > MAX_CONFIG_BYTES:
        errs.append(_too_long("data", MAX_CONFIG_BYTES))
    return errs


def _immutable_data_update(obj: Message, old: Message, data_fields: tuple[str, ...]) -> Errors:
    """An immutable ConfigMap or Secret keeps its data and stays immutable."""
    if not old.immutable:
        return []
    errs: Errors = []
    if not obj.immutable:
        errs.append(FieldError.forbidden("immutable", "field is immutable when `immutable` is set"))
    for field in data_fields:
        if dict(getattr(obj, field)) != dict(getattr(old, field)):
            json_name = obj.DESCRIPTOR.fields_by_name[field].json_name
            errs.append(FieldError.forbidden(json_name, "field is immutable when `immutable` is set"))
    return errs


def _secret(secret: Message) -> Errors:
    errs, total = _config_keys((("data", secret.data), ("stringData", secret.string_data)))
    if total > MAX_CONFIG_BYTES:
        errs.append(_too_long("data", MAX_CONFIG_BYTES))
    if not secret.type:
        errs.append(FieldError.required("type"))
    for key in SECRET_REQUIRED_KEYS.get(secret.type, ()):
        if key not in secret.data:
            errs.append(FieldError.required(f"data[{key}]"))
    if secret.type == "kubernetes.io/basic-auth" and "username" not in secret.data \
            and "password" not in secret.data:
        errs.append(FieldError.required("data[username]"))
        errs.append(FieldError.required("data[password]"))
    if secret.type == "kubernetes.io/service-account-token" \
            and not secret.metadata.annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
        errs.append(FieldError.required(f"metadata.annotations[{SERVICE_ACCOUNT_NAME_ANNOTATION}]"))
    return errs


def _secret_update(secret: Message, old: Message) -> Errors:
    errs = _immutable_data_update(secret, old, ("data",))
    if secret.type != old.type:
        errs.append(FieldError("type", "field is immutable", secret.type))
    return errs


# -------------------------------------------------------------------- Event


def _event(event: Message) -> Errors:
    ref = event.involved_object
    errs: Errors = []
    for field in ("kind", "name"):
        if not getattr(ref, field):
            errs.append(FieldError.required(f"involvedObject.{field}"))
    # An event about a cluster-scoped object lives in "default" (or kube-system).
    if (ref.namespace and ref.namespace != event.metadata.namespace) or \
            (not ref.namespace and event.metadata.namespace not in ("", "default", "kube-system")):
        errs.append(FieldError("involvedObject.namespace", "does not match event.namespace", ref.namespace))
    if not event.reason:
        errs.append(FieldError.required("reason"))
    elif len(event.reason) > MAX_EVENT_REASON_LENGTH:
        errs.append(FieldError("reason", f"can have at most {MAX_EVENT_REASON_LENGTH} characters", event.reason))
    errs += _one_of("type", event.type, EVENT_TYPES)
    errs += _non_negative("count", event.count)
    return errs


# -------------------------------------------------------------------- Lease


def _lease(lease: Message) -> Errors:
    spec = lease.spec
    errs: Errors = []
    if spec.HasField("lease_duration_seconds"):
        errs += _positive("spec.leaseDurationSeconds", spec.lease_duration_seconds)
    if spec.HasField("lease_transitions"):
        errs += _non_negative("spec.leaseTransitions", spec.lease_transitions)
    return errs


# ==================================================================== table


@dataclass(frozen=True)
class _Rules:
    """How one kind is validated."""

    name: NameCheck  # metadata.name rule
    object: Callable[[Message], Errors]  # spec (and data) of the object
    update: Callable[[Message, Message], Errors] | None = None  # (new, old) transition rules
    status: Callable[[Message, Message | None], Errors] | None = None  # (obj, old or None)


_RULES: dict[str, _Rules] = {
    "Namespace": _Rules(names.is_dns1123_label, _namespace),
    "Pod": _Rules(names.is_dns1123_subdomain, _pod, _pod_update, _pod_status),
    "Service": _Rules(names.is_dns1035_label, _service, _service_update),
    "Endpoints": _Rules(names.is_dns1123_subdomain, _endpoints),
    "Node": _Rules(names.is_dns1123_subdomain, _node, _node_update, _node_status),
    "ConfigMap": _Rules(names.is_dns1123_subdomain, _config_map,
                        lambda new, old: _immutable_data_update(new, old, ("data", "binary_data"))),
    "Secret": _Rules(names.is_dns1123_subdomain, _secret, _secret_update),
    "Event": _Rules(names.is_dns1123_subdomain, _event),
    "Deployment": _Rules(names.is_dns1123_subdomain, _deployment, _selector_update, _deployment_status),
    "ReplicaSet": _Rules(names.is_dns1123_subdomain, _replica_set, _selector_update, _replica_set_status),
    "Lease": _Rules(names.is_dns1123_subdomain, _lease),
}
