"""A container's environment, resolved as the kubelet does.

Order and precedence: every `envFrom` source in order (ConfigMap or Secret,
each key that is a valid variable name, with the prefix), then every `env`
entry in order; a later name replaces an earlier one. `env` values may
refer to variables defined before them as `$(NAME)` (`$$` escapes), and so
may the container's command and args.

`env` entries take a literal value, a ConfigMap or Secret key
(configMapKeyRef / secretKeyRef), a downward API field (fieldRef:
metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'],
metadata.annotations['k'], spec.nodeName, spec.serviceAccountName,
status.podIP, status.podIPs, status.hostIP, status.hostIPs) or a resource
(resourceFieldRef: limits/requests of cpu and memory, with a divisor).

A missing ConfigMap, Secret or key that is not optional raises `EnvError`;
the caller reports it as the container's `CreateContainerConfigError`.
Pure: the caller fetches the objects first (`references`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

from google.protobuf.message import Message

from kubeling.quantity import QuantityError, parse_quantity

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class EnvError(Exception):
    """A reference that cannot be resolved (message as Kubernetes words it)."""


@dataclass
class References:
    config_maps: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)


def references(containers: Iterable[Message]) -> References:
    """The ConfigMaps and Secrets the containers' env and envFrom name."""
    refs = References()
    for c in containers:
        for src in c.env_from:
            if src.HasField("config_map_ref"):
                refs.config_maps.add(src.config_map_ref.name)
            if src.HasField("secret_ref"):
                refs.secrets.add(src.secret_ref.name)
        for env in c.env:
            vf = env.value_from
            if env.HasField("value_from"):
                if vf.HasField("config_map_key_ref"):
                    refs.config_maps.add(vf.config_map_key_ref.name)
                if vf.HasField("secret_key_ref"):
                    refs.secrets.add(vf.secret_key_ref.name)
    return refs


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones
    kept as written, `$$` becomes `$`."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _secret_value(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _config_map_data(cm: Message) -> dict[str, str]:
    data = dict(cm.data)
    for k, v in cm.binary_data.items():
        data.setdefault(k, v.decode("utf-8", errors="replace"))
    return data


def field_value(pod: Message, path: str, pod_ip: str, host_ip: str) -> str:
    """A downward API field of the pod; EnvError for an unsupported path."""
    m = _FIELD_SUBSCRIPT.match(path)
    if m:
        source = pod.metadata.labels if m.group(1) == "labels" else pod.metadata.annotations
        return source.get(m.group(2), "")
    simple = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in simple:
        raise EnvError(f"unsupported fieldRef path {path!r}")
    return simple[path]


def resource_value(container: Message, resource: str, divisor: str,
                   node_allocatable: dict[str, str]) -> str:
    """limits.cpu / requests.memory ... of a container, divided and rounded up
    as Kubernetes does; an unset limit reads as the node's allocatable."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise EnvError(f"unsupported resourceFieldRef resource {resource!r}")
    values = container.resources.limits if kind == "limits" else container.resources.requests
    if name in values:
        v = values[name]
        raw = v.string_value if v.HasField("string_value") else v.number_value
    elif kind == "limits":
        raw = node_allocatable.get(name, "0")
    else:
        raw = "0"
    try:
        q = parse_quantity(raw)
        d = parse_quantity(divisor or "1")
    except QuantityError as e:
        raise EnvError(f"resourceFieldRef {resource}: {e}") from None
    if d.is_zero():
        raise EnvError(f"resourceFieldRef {resource}: divisor is zero")
    return str(math.ceil(q.as_fraction() / d.as_fraction()))


def build_env(container: Message, pod: Message, *, pod_ip: str, host_ip: str,
              config_maps: dict[str, Message], secrets: dict[str, Message],
              node_allocatable: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The container's environment as (name, value) pairs, in definition order.

    `config_maps` / `secrets` hold the objects of the pod's namespace by name
    (missing ones are simply absent). Raises EnvError.
    """
    env: dict[str, str] = {}
    for src in container.env_from:
        if src.HasField("config_map_ref"):
            ref = src.config_map_ref
            cm = config_maps.get(ref.name)
            if cm is None:
                if ref.optional:
                    continue
                raise EnvError(f'configmap "{ref.name}" not found')
            items = _config_map_data(cm)
        elif src.HasField("secret_ref"):
            ref = src.secret_ref
            secret = secrets.get(ref.name)
            if secret is None:
                if ref.optional:
                    continue
                raise EnvError(f'secret "{ref.name}" not found')
            items = {k: _secret_value(v) for k, v in secret.data.items()}
        else:
            continue
        for key in sorted(items):
            name = src.prefix + key
            if _ENV_NAME.match(name):  # invalid names are skipped, as in Kubernetes
                env[name] = items[key]

    for var in container.env:
        if not var.HasField("value_from"):
            env[var.name] = expand(var.value, env)
            continue
        vf = var.value_from
        if vf.HasField("config_map_key_ref"):
            ref = vf.config_map_key_ref
            cm = config_maps.get(ref.name)
            if cm is None:
                if ref.optional:
                    continue
                raise EnvError(f'configmap "{ref.name}" not found')
            data = _config_map_data(cm)
            if ref.key not in data:
                if ref.optional:
                    continue
                raise EnvError(f"couldn't find key {ref.key} in ConfigMap {pod.metadata.namespace}/{ref.name}")
            env[var.name] = data[ref.key]
        elif vf.HasField("secret_key_ref"):
            ref = vf.secret_key_ref
            secret = secrets.get(ref.name)
            if secret is None:
                if ref.optional:
                    continue
                raise EnvError(f'secret "{ref.name}" not found')
            if ref.key not in secret.data:
                if ref.optional:
                    continue
                raise EnvError(f"couldn't find key {ref.key} in Secret {pod.metadata.namespace}/{ref.name}")
            env[var.name] = _secret_value(secret.data[ref.key])
        elif vf.HasField("field_ref"):
            env[var.name] = field_value(pod, vf.field_ref.field_path, pod_ip, host_ip)
        elif vf.HasField("resource_field_ref"):
            ref = vf.resource_field_ref
            divisor = ""
            if ref.HasField("divisor"):
                divisor = ref.divisor.string_value if ref.divisor.HasField("string_value") \
                    else repr(ref.divisor.number_value)
            target = container
            if ref.container_name:
                target = next((c for c in list(pod.spec.containers) + list(pod.spec.init_containers)
                               if c.name == ref.container_name), None)
                if target is None:
                    raise EnvError(f"resourceFieldRef: no container named {ref.container_name!r}")
            env[var.name] = resource_value(target, ref.resource, divisor, node_allocatable or {})
        else:
            env[var.name] = ""
    return list(env.items())
