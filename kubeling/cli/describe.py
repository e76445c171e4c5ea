"""`kubeling describe KIND [NAME...] [-n NS] [-l SEL]`: a readable, multi-section
description of objects, as `kubectl describe` prints it, ending with the
Events about the object."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Iterable, Sequence

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError, NotFoundError

from . import printers
from .common import ServerErrors, connect, format_api_error, parse_targets
from .printers import NONE, age, format_time, is_set, timestamp_seconds


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("describe", parents=parents, help="show details of a resource",
                       description="Show details of a specific resource or group of resources.")
    p.add_argument("targets", nargs="*", metavar="KIND [NAME ...]",
                   help="kind and names (or KIND/NAME); without names, every object of the kind")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="", help="label selector")
    p.add_argument("--show-events", default="true", choices=("true", "false"),
                   help="show the events about each object (default true)")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    targets = parse_targets(args.targets)
    namespace = "" if args.all_namespaces else (args.namespace or "default")
    errors: list[str] = []
    first = True
    async with connect(args.config) as client:
        for kind, names in targets:
            try:
                if names:
                    objs = []
                    for name in names:
                        try:
                            objs.append(await client.get(kind, name, namespace=namespace or "default"))
                        except NotFoundError as e:
                            errors.append(format_api_error(e, client.address))
                else:
                    objs = (await client.list_all(kind, namespace=namespace,
                                                  label_selector=args.selector)).items
                for obj in objs:
                    text = await describe(client, obj, show_events=args.show_events == "true")
                    if not first:
                        sys.stdout.write("\n\n")
                    first = False
                    sys.stdout.write(text)
                    sys.stdout.flush()
            except ApiError as e:
                raise ServerErrors(errors + [format_api_error(e, client.address)]) from None
        if first and not errors:
            ns = f" in {namespace} namespace" if namespace and any(k.namespaced for k, _ in targets) else ""
            print(f"No resources found{ns}.", file=sys.stderr)
    if errors:
        raise ServerErrors(errors)
    return 0


# ------------------------------------------------------------------ output

class Writer:
    """kubectl describe's layout: `Key:  value` lines whose values line up per
    indentation level, nested sections indented by two spaces, and small tables."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, Any, Any]] = []

    def kv(self, level: int, key: str, value: Any = "") -> None:
        self.items.append(("kv", level, key, _text(value)))

    def kvs(self, level: int, key: str, values: Sequence[str]) -> None:
        """A key with several values, one per line (`<none>` when there are none)."""
        values = list(values) or [NONE]
        self.items.append(("kv", level, key, values[0]))
        for v in values[1:]:
            self.items.append(("cont", level, key, v))

    def line(self, level: int, text: str) -> None:
        self.items.append(("line", level, text, None))

    def table(self, level: int, headers: Sequence[str], rows: Sequence[Sequence[str]],
              dashes: bool = True) -> None:
        all_rows = [list(headers)]
        if dashes:
            all_rows.append(["-" * len(h) for h in headers])
        all_rows += [[_text(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
        for r in all_rows:
            cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
            self.items.append(("line", level, "  ".join(cells).rstrip(), None))

    def render(self) -> str:
        widths: dict[int, int] = {}
        for typ, level, key, _ in self.items:
            if typ == "kv":
                widths[level] = max(widths.get(level, 0), len(key) + 1)
        out = []
        for typ, level, key, value in self.items:
            indent = "  " * level
            if typ == "line":
                out.append(indent + key)
            elif typ == "kv":
                label = f"{key}:"
                out.append((indent + label.ljust(widths[level] + 2) + value).rstrip() if value
                           else indent + label)
            else:
                out.append(indent + " " * (widths[level] + 2) + value)
        return "\n".join(out) + "\n"


def _text(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def quantity(v: Value) -> str:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        return str(int(n)) if n.is_integer() else str(n)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    return ""


def _pairs(mapping: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(mapping.items())]


def _annotations(mapping: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted(mapping.items())]


def _meta(w: Writer, obj: Message, kind: kinds.Kind, namespace: bool = True,
          created: bool = False) -> None:
    meta = obj.metadata
    w.kv(0, "Name", meta.name)
    if kind.namespaced and namespace:
        w.kv(0, "Namespace", meta.namespace)
    if created:
        w.kv(0, "CreationTimestamp", format_time(meta.creation_timestamp))
    w.kvs(0, "Labels", _pairs(dict(meta.labels)))
    w.kvs(0, "Annotations", _annotations(dict(meta.annotations)))


def _controlled_by(w: Writer, obj: Message) -> None:
    for ref in obj.metadata.owner_references:
        if ref.HasField("controller") and ref.controller:
            w.kv(0, "Controlled By", f"{ref.kind}/{ref.name}")
            return


def _deletion(w: Writer, obj: Message, now: float) -> None:
    meta = obj.metadata
    if meta.HasField("deletion_timestamp"):
        grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") else 0
        w.kv(0, "Termination Grace Period", f"{grace}s")
        w.kv(0, "Terminating", f"since {format_time(meta.deletion_timestamp)}")
    if meta.finalizers:
        w.kv(0, "Finalizers", "[" + " ".join(meta.finalizers) + "]")


# ------------------------------------------------------------------ pods

def _port(v: Value) -> str:
    return quantity(v)


def probe_text(p: Message) -> str:
    if p.HasField("http_get"):
        h = p.http_get
        scheme = (h.scheme or "HTTP").lower()
        what = f"http-get {scheme}://{h.host}:{_port(h.port)}{h.path or '/'}"
    elif p.HasField("tcp_socket"):
        what = f"tcp-socket {p.tcp_socket.host}:{_port(p.tcp_socket.port)}"
    elif p.HasField("exec"):
        what = "exec [" + " ".join(p.exec.command) + "]"
    else:
        what = "unknown"
    return (f"{what} delay={p.initial_delay_seconds}s timeout={p.timeout_seconds or 1}s "
            f"period={p.period_seconds or 10}s #success={p.success_threshold or 1} "
            f"#failure={p.failure_threshold or 3}")


def _env_source(e: Message) -> str:
    src = e.value_from
    if src.HasField("config_map_key_ref"):
        r = src.config_map_key_ref
        opt = r.optional if r.HasField("optional") else False
        return f"<set to the key '{r.key}' of config map '{r.name}'>  Optional: {str(opt).lower()}"
    if src.HasField("secret_key_ref"):
        r = src.secret_key_ref
        opt = r.optional if r.HasField("optional") else False
        return f"<set to the key '{r.key}' in secret '{r.name}'>  Optional: {str(opt).lower()}"
    if src.HasField("field_ref"):
        return f"({src.field_ref.api_version or 'v1'}:{src.field_ref.field_path})"
    if src.HasField("resource_field_ref"):
        r = src.resource_field_ref
        return f"{r.resource} ({r.container_name or 'this container'})"
    return e.value


def _state(w: Writer, level: int, key: str, state: Message) -> None:
    if state.HasField("running"):
        w.kv(level, key, "Running")
        w.kv(level + 1, "Started", format_time(state.running.started_at))
    elif state.HasField("waiting"):
        w.kv(level, key, "Waiting")
        if state.waiting.reason:
            w.kv(level + 1, "Reason", state.waiting.reason)
        if state.waiting.message:
            w.kv(level + 1, "Message", state.waiting.message)
    elif state.HasField("terminated"):
        t = state.terminated
        w.kv(level, key, "Terminated")
        if t.reason:
            w.kv(level + 1, "Reason", t.reason)
        if t.message:
            w.kv(level + 1, "Message", t.message)
        w.kv(level + 1, "Exit Code", t.exit_code)
        if t.signal:
            w.kv(level + 1, "Signal", t.signal)
        w.kv(level + 1, "Started", format_time(t.started_at))
        w.kv(level + 1, "Finished", format_time(t.finished_at))
    else:
        w.kv(level, key, "Waiting" if key == "State" else "")


def _containers(w: Writer, level: int, containers: Iterable[Message],
                statuses: dict[str, Message] | None) -> None:
    for c in containers:
        w.line(level, f"{c.name}:")
        st = statuses.get(c.name) if statuses is not None else None
        lv = level + 1
        if st is not None:
            w.kv(lv, "Container ID", st.container_id)
        w.kv(lv, "Image", c.image)
        if st is not None:
            w.kv(lv, "Image ID", st.image_id)
        ports = [f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports]
        host_ports = [f"{p.host_port}/{p.protocol or 'TCP'}" for p in c.ports]
        w.kv(lv, "Port" if len(ports) < 2 else "Ports", ", ".join(ports) or NONE)
        w.kv(lv, "Host Port" if len(ports) < 2 else "Host Ports", ", ".join(host_ports) or NONE)
        if c.command:
            w.kvs(lv, "Command", list(c.command))
        if c.args:
            w.kvs(lv, "Args", list(c.args))
        if st is not None:
            _state(w, lv, "State", st.state)
            if st.last_state.ListFields():
                _state(w, lv, "Last State", st.last_state)
            w.kv(lv, "Ready", "True" if st.ready else "False")
            w.kv(lv, "Restart Count", st.restart_count)
        if c.resources.limits:
            w.kv(lv, "Limits")
            for k, v in sorted(c.resources.limits.items()):
                w.kv(lv + 1, k, quantity(v))
        if c.resources.requests:
            w.kv(lv, "Requests")
            for k, v in sorted(c.resources.requests.items()):
                w.kv(lv + 1, k, quantity(v))
        for key, field in (("Liveness", "liveness_probe"), ("Readiness", "readiness_probe"),
                           ("Startup", "startup_probe")):
            if c.HasField(field):
                w.kv(lv, key, probe_text(getattr(c, field)))
        if c.env_from:
            w.kv(lv, "Environment Variables from")
            for ef in c.env_from:
                if ef.HasField("config_map_ref"):
                    w.kv(lv + 1, ef.config_map_ref.name, f"ConfigMap  Optional: "
                         f"{str(ef.config_map_ref.optional).lower()}")
                elif ef.HasField("secret_ref"):
                    w.kv(lv + 1, ef.secret_ref.name, f"Secret  Optional: "
                         f"{str(ef.secret_ref.optional).lower()}")
        if c.env:
            w.kv(lv, "Environment")
            for e in c.env:
                w.kv(lv + 1, e.name, _env_source(e) if e.HasField("value_from") else e.value)
        else:
            w.kv(lv, "Environment", NONE)
        mounts = [f"{m.mount_path} from {m.name} ({'ro' if m.read_only else 'rw'})"
                  + (f" path=\"{m.sub_path}\"" if m.sub_path else "") for m in c.volume_mounts]
        w.kvs(lv, "Mounts", mounts)


def _volumes(w: Writer, level: int, volumes: Iterable[Message]) -> None:
    volumes = list(volumes)
    if not volumes:
        w.kv(level, "Volumes", NONE)
        return
    w.kv(level, "Volumes")
    for v in volumes:
        w.line(level + 1, f"{v.name}:")
        lv = level + 2
        if v.HasField("empty_dir"):
            w.kv(lv, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
            w.kv(lv, "Medium", v.empty_dir.medium)
            if v.empty_dir.HasField("size_limit"):
                w.kv(lv, "SizeLimit", quantity(v.empty_dir.size_limit))
        elif v.HasField("host_path"):
            w.kv(lv, "Type", "HostPath (bare host directory volume)")
            w.kv(lv, "Path", v.host_path.path)
            w.kv(lv, "HostPathType", v.host_path.type)
        elif v.HasField("config_map"):
            w.kv(lv, "Type", "ConfigMap (a volume populated by a ConfigMap)")
            w.kv(lv, "Name", v.config_map.name)
            w.kv(lv, "Optional", bool(v.config_map.optional))
        elif v.HasField("secret"):
            w.kv(lv, "Type", "Secret (a volume populated by a Secret)")
            w.kv(lv, "SecretName", v.secret.secret_name)
            w.kv(lv, "Optional", bool(v.secret.optional))
        else:
            w.kv(lv, "Type", "<unknown>")


def _qos(pod: Message) -> str:
    if pod.status.qos_class:
        return pod.status.qos_class
    requests = limits = False
    guaranteed = True
    for c in pod.spec.containers:
        r, l_ = c.resources.requests, c.resources.limits
        requests |= bool(r)
        limits |= bool(l_)
        for res in ("cpu", "memory"):
            if res not in l_ or (res in r and quantity(r[res]) != quantity(l_[res])):
                guaranteed = False
    if guaranteed and limits:
        return "Guaranteed"
    return "Burstable" if (requests or limits) else "BestEffort"


def describe_pod(w: Writer, pod: Message, now: float) -> None:
    spec, status, meta = pod.spec, pod.status, pod.metadata
    w.kv(0, "Name", meta.name)
    w.kv(0, "Namespace", meta.namespace)
    w.kv(0, "Priority", spec.priority if spec.HasField("priority") else 0)
    if spec.service_account_name:
        w.kv(0, "Service Account", spec.service_account_name)
    node = spec.node_name or NONE
    if spec.node_name and status.host_ip:
        node = f"{spec.node_name}/{status.host_ip}"
    w.kv(0, "Node", node)
    if is_set(status.start_time):
        w.kv(0, "Start Time", format_time(status.start_time))
    w.kvs(0, "Labels", _pairs(dict(meta.labels)))
    w.kvs(0, "Annotations", _annotations(dict(meta.annotations)))
    if meta.HasField("deletion_timestamp"):
        w.kv(0, "Status", f"Terminating (lasts {printers.format_duration(now - timestamp_seconds(meta.deletion_timestamp))})")
        grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") else 0
        w.kv(0, "Termination Grace Period", f"{grace}s")
    else:
        w.kv(0, "Status", status.phase or "Pending")
    if status.reason:
        w.kv(0, "Reason", status.reason)
    if status.message:
        w.kv(0, "Message", status.message)
    w.kv(0, "IP", status.pod_ip)
    ips = [ip.ip for ip in status.pod_ips] or ([status.pod_ip] if status.pod_ip else [])
    if ips:
        w.kv(0, "IPs")
        for ip in ips:
            w.kv(1, "IP", ip)
    else:
        w.kv(0, "IPs", NONE)
    _controlled_by(w, pod)
    if spec.init_containers:
        w.kv(0, "Init Containers")
        _containers(w, 1, spec.init_containers,
                    {s.name: s for s in status.init_container_statuses})
    w.kv(0, "Containers")
    _containers(w, 1, spec.containers, {s.name: s for s in status.container_statuses})
    if status.conditions:
        w.kv(0, "Conditions")
        w.table(1, ("Type", "Status"), [(c.type, c.status) for c in status.conditions], dashes=False)
    _volumes(w, 0, spec.volumes)
    w.kv(0, "QoS Class", _qos(pod))
    w.kvs(0, "Node-Selectors", _pairs(dict(spec.node_selector)))
    tolerations = []
    for t in spec.tolerations:
        text = t.key
        if t.operator == "Exists" and not t.key:
            text = "op=Exists"
        elif t.value:
            text += f"={t.value}"
        elif t.operator == "Exists":
            text += " op=Exists"
        if t.effect:
            text += f":{t.effect}"
        if t.HasField("toleration_seconds"):
            text += f" for {t.toleration_seconds}s"
        tolerations.append(text)
    w.kvs(0, "Tolerations", tolerations)


def _template(w: Writer, level: int, template: Message) -> None:
    w.kv(level, "Pod Template")
    lv = level + 1
    w.kvs(lv, "Labels", _pairs(dict(template.metadata.labels)))
    if template.metadata.annotations:
        w.kvs(lv, "Annotations", _annotations(dict(template.metadata.annotations)))
    if template.spec.service_account_name:
        w.kv(lv, "Service Account", template.spec.service_account_name)
    if template.spec.init_containers:
        w.kv(lv, "Init Containers")
        _containers(w, lv + 1, template.spec.init_containers, None)
    w.kv(lv, "Containers")
    _containers(w, lv + 1, template.spec.containers, None)
    _volumes(w, lv, template.spec.volumes)
    if template.spec.node_selector:
        w.kvs(lv, "Node-Selectors", _pairs(dict(template.spec.node_selector)))


def _int_or_percent(v: Value, default: str) -> str:
    return quantity(v) if v.WhichOneof("kind") else default


async def describe_deployment(w: Writer, client: ApiClient, d: Message, now: float) -> None:
    spec, status = d.spec, d.status
    _meta(w, d, kinds.of(d), created=True)
    w.kv(0, "Selector", printers.label_selector(spec.selector))
    desired = spec.replicas if spec.HasField("replicas") else 1
    w.kv(0, "Replicas", f"{desired} desired | {status.updated_replicas} updated | {status.replicas} total"
                        f" | {status.available_replicas} available | {status.unavailable_replicas} unavailable")
    strategy = spec.strategy.type or "RollingUpdate"
    w.kv(0, "StrategyType", strategy)
    w.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if strategy == "RollingUpdate":
        ru = spec.strategy.rolling_update
        w.kv(0, "RollingUpdateStrategy",
             f"{_int_or_percent(ru.max_unavailable, '25%')} max unavailable, "
             f"{_int_or_percent(ru.max_surge, '25%')} max surge")
    if spec.paused:
        w.kv(0, "Paused", "true")
    _template(w, 0, spec.template)
    if status.conditions:
        w.kv(0, "Conditions")
        w.table(1, ("Type", "Status", "Reason"),
                [(c.type, c.status, c.reason) for c in status.conditions])
    old, new = await _replica_sets(client, d)
    w.kvs(0, "OldReplicaSets", [_rs_summary(r) for r in old])
    w.kv(0, "NewReplicaSet", _rs_summary(new) if new is not None else NONE)


def _rs_summary(rs: Message) -> str:
    desired = rs.spec.replicas if rs.spec.HasField("replicas") else 1
    return f"{rs.metadata.name} ({rs.status.replicas}/{desired} replicas created)"


async def _replica_sets(client: ApiClient, d: Message) -> tuple[list[Message], Message | None]:
    """The Deployment's ReplicaSets: (old ones with pods, the one matching its template)."""
    try:
        listed = await client.list_all("replicasets", namespace=d.metadata.namespace)
    except ApiError:
        return [], None
    owned = [rs for rs in listed.items
             if any(r.uid == d.metadata.uid and r.kind == "Deployment"
                    for r in rs.metadata.owner_references)]
    new = None
    for rs in sorted(owned, key=lambda r: timestamp_seconds(r.metadata.creation_timestamp)):
        if _same_template(rs.spec.template, d.spec.template):
            new = rs
    old = [rs for rs in owned if rs is not new and (rs.status.replicas or
                                                     (rs.spec.HasField("replicas") and rs.spec.replicas))]
    return old, new


def _same_template(a: Message, b: Message) -> bool:
    a2, b2 = type(a)(), type(b)()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    for t in (a2, b2):
        t.metadata.labels.pop("pod-template-hash", None)
    return a2 == b2


async def describe_replicaset(w: Writer, client: ApiClient, rs: Message, now: float) -> None:
    spec, status = rs.spec, rs.status
    w.kv(0, "Name", rs.metadata.name)
    w.kv(0, "Namespace", rs.metadata.namespace)
    w.kv(0, "Selector", printers.label_selector(spec.selector))
    w.kvs(0, "Labels", _pairs(dict(rs.metadata.labels)))
    w.kvs(0, "Annotations", _annotations(dict(rs.metadata.annotations)))
    _controlled_by(w, rs)
    desired = spec.replicas if spec.HasField("replicas") else 1
    w.kv(0, "Replicas", f"{status.replicas} current / {desired} desired")
    phases = {"Running": 0, "Pending": 0, "Succeeded": 0, "Failed": 0}
    try:
        pods = (await client.list_all("pods", namespace=rs.metadata.namespace)).items
        for p in pods:
            if any(r.uid == rs.metadata.uid for r in p.metadata.owner_references):
                phase = p.status.phase or "Pending"
                phases[phase] = phases.get(phase, 0) + 1
    except ApiError:
        pass
    w.kv(0, "Pods Status", f"{phases['Running']} Running / {phases['Pending']} Waiting / "
                           f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed")
    _template(w, 0, spec.template)
    if status.conditions:
        w.kv(0, "Conditions")
        w.table(1, ("Type", "Status", "Reason"),
                [(c.type, c.status, c.reason) for c in status.conditions])


async def describe_service(w: Writer, client: ApiClient, svc: Message, now: float) -> None:
    spec = svc.spec
    _meta(w, svc, kinds.of(svc))
    w.kvs(0, "Selector", [",".join(_pairs(dict(spec.selector)))] if spec.selector else [])
    w.kv(0, "Type", spec.type or "ClusterIP")
    w.kv(0, "IP", spec.cluster_ip or NONE)
    if spec.cluster_ips:
        w.kv(0, "IPs", ",".join(spec.cluster_ips))
    if spec.external_ips:
        w.kv(0, "External IPs", ",".join(spec.external_ips))
    ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
    if ingress:
        w.kv(0, "LoadBalancer Ingress", ", ".join(ingress))
    endpoints = None
    try:
        endpoints = await client.get("endpoints", svc.metadata.name, namespace=svc.metadata.namespace)
    except ApiError:
        pass
    for p in spec.ports:
        proto = p.protocol or "TCP"
        name = p.name or "<unset>"
        w.kv(0, "Port", f"{name}  {p.port}/{proto}")
        target = quantity(p.target_port) if p.target_port.WhichOneof("kind") else str(p.port)
        w.kv(0, "TargetPort", f"{target}/{proto}")
        if p.node_port:
            w.kv(0, "NodePort", f"{name}  {p.node_port}/{proto}")
        w.kv(0, "Endpoints", _endpoints_for_port(endpoints, p.name))
    w.kv(0, "Session Affinity", spec.session_affinity or "None")
    if spec.external_traffic_policy:
        w.kv(0, "External Traffic Policy", spec.external_traffic_policy)


def _endpoints_for_port(ep: Message | None, port_name: str) -> str:
    if ep is None:
        return NONE
    out = []
    for subset in ep.subsets:
        for port in subset.ports:
            if port.name == port_name:
                out += [f"{a.ip}:{port.port}" for a in subset.addresses]
    return ",".join(out) if out else NONE


async def describe_node(w: Writer, client: ApiClient, node: Message, now: float) -> None:
    spec, status, meta = node.spec, node.status, node.metadata
    w.kv(0, "Name", meta.name)
    w.kv(0, "Roles", printers.node_roles(node))
    w.kvs(0, "Labels", _pairs(dict(meta.labels)))
    w.kvs(0, "Annotations", _annotations(dict(meta.annotations)))
    w.kv(0, "CreationTimestamp", format_time(meta.creation_timestamp))
    w.kvs(0, "Taints", [f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"
                        for t in spec.taints])
    w.kv(0, "Unschedulable", bool(spec.unschedulable))
    try:
        lease = await client.get("leases", meta.name, namespace="kube-node-lease")
        w.kv(0, "Lease")
        w.kv(1, "HolderIdentity", lease.spec.holder_identity or NONE)
        w.kv(1, "AcquireTime", format_time(lease.spec.acquire_time))
        w.kv(1, "RenewTime", format_time(lease.spec.renew_time))
    except ApiError:
        w.kv(0, "Lease", "Failed to get lease")
    if status.conditions:
        w.kv(0, "Conditions")
        w.table(1, ("Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"),
                [(c.type, c.status, format_time(c.last_heartbeat_time),
                  format_time(c.last_transition_time), c.reason, c.message)
                 for c in status.conditions])
    else:
        w.kv(0, "Conditions", NONE)
    if status.addresses:
        w.kv(0, "Addresses")
        for a in status.addresses:
            w.kv(1, a.type, a.address)
    else:
        w.kv(0, "Addresses", NONE)
    for key, mapping in (("Capacity", status.capacity), ("Allocatable", status.allocatable)):
        if mapping:
            w.kv(0, key)
            for k, v in sorted(mapping.items()):
                w.kv(1, k, v)
    info = status.node_info
    if info.ListFields():
        w.kv(0, "System Info")
        for label, value in (("Machine ID", info.machine_id), ("System UUID", info.system_uuid),
                             ("Boot ID", info.boot_id), ("Kernel Version", info.kernel_version),
                             ("OS Image", info.os_image), ("Operating System", info.operating_system),
                             ("Architecture", info.architecture),
                             ("Container Runtime Version", info.container_runtime_version),
                             ("Kubelet Version", info.kubelet_version),
                             ("Kube-Proxy Version", info.kube_proxy_version)):
            w.kv(1, label, value)
    if spec.pod_cidr:
        w.kv(0, "PodCIDR", spec.pod_cidr)
    if spec.pod_cidrs:
        w.kv(0, "PodCIDRs", ",".join(spec.pod_cidrs))
    try:
        pods = (await client.list_all("pods", field_selector=f"spec.nodeName={meta.name}")).items
    except ApiError:
        pods = []
    running = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
    w.kv(0, "Non-terminated Pods", f"({len(running)} in total)")
    if running:
        rows = []
        for p in running:
            cpu_req = _sum_resource(p, "requests", "cpu")
            mem_req = _sum_resource(p, "requests", "memory")
            cpu_lim = _sum_resource(p, "limits", "cpu")
            mem_lim = _sum_resource(p, "limits", "memory")
            rows.append((p.metadata.namespace, p.metadata.name, cpu_req, cpu_lim, mem_req, mem_lim,
                         age(p.metadata.creation_timestamp, now)))
        w.table(1, ("Namespace", "Name", "CPU Requests", "CPU Limits", "Memory Requests",
                    "Memory Limits", "Age"), rows)


def _sum_resource(pod: Message, which: str, name: str) -> str:
    values = [quantity(getattr(c.resources, which)[name]) for c in pod.spec.containers
              if name in getattr(c.resources, which)]
    return "+".join(values) if values else "0"


def describe_namespace(w: Writer, ns: Message, now: float) -> None:
    _meta(w, ns, kinds.of(ns))
    w.kv(0, "Status", ns.status.phase or "Active")
    if ns.status.conditions:
        w.kv(0, "Conditions")
        w.table(1, ("Type", "Status", "Reason", "Message"),
                [(c.type, c.status, c.reason, c.message) for c in ns.status.conditions])
    w.line(0, "")
    w.line(0, "No resource quota.")
    w.line(0, "")
    w.line(0, "No LimitRange resource.")
    w.line(0, "")


def describe_configmap(w: Writer, cm: Message, now: float) -> None:
    _meta(w, cm, kinds.of(cm))
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for k, v in sorted(cm.data.items()):
        w.line(0, f"{k}:")
        w.line(0, "----")
        w.line(0, v.rstrip("\n"))
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    for k, v in sorted(cm.binary_data.items()):
        w.line(0, f"{k}: {len(v)} bytes")
    w.line(0, "")


def describe_secret(w: Writer, s: Message, now: float) -> None:
    _meta(w, s, kinds.of(s))
    w.line(0, "")
    w.kv(0, "Type", s.type or "Opaque")
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    sizes = {k: len(v) for k, v in s.data.items()}
    for k, v in s.string_data.items():
        sizes[k] = len(v.encode())
    for k, n in sorted(sizes.items()):
        w.kv(0, k, f"{n} bytes")


def describe_endpoints(w: Writer, ep: Message, now: float) -> None:
    _meta(w, ep, kinds.of(ep))
    if not ep.subsets:
        w.kv(0, "Subsets", NONE)
        return
    w.kv(0, "Subsets")
    for s in ep.subsets:
        w.kv(1, "Addresses", ",".join(a.ip for a in s.addresses) or NONE)
        w.kv(1, "NotReadyAddresses", ",".join(a.ip for a in s.not_ready_addresses) or NONE)
        if s.ports:
            w.kv(1, "Ports")
            w.table(2, ("Name", "Port", "Protocol"),
                    [(p.name or "<unset>", p.port, p.protocol or "TCP") for p in s.ports])


def describe_lease(w: Writer, lease: Message, now: float) -> None:
    _meta(w, lease, kinds.of(lease))
    spec = lease.spec
    w.kv(0, "Holder Identity", spec.holder_identity if spec.HasField("holder_identity") else NONE)
    if spec.HasField("lease_duration_seconds"):
        w.kv(0, "Lease Duration Seconds", spec.lease_duration_seconds)
    w.kv(0, "Acquire Time", format_time(spec.acquire_time))
    w.kv(0, "Renew Time", format_time(spec.renew_time))
    if spec.HasField("lease_transitions"):
        w.kv(0, "Lease Transitions", spec.lease_transitions)


def describe_event(w: Writer, e: Message, now: float) -> None:
    _meta(w, e, kinds.of(e))
    ref = e.involved_object
    w.kv(0, "Involved Object")
    w.kv(1, "Kind", ref.kind)
    w.kv(1, "Name", ref.name)
    if ref.namespace:
        w.kv(1, "Namespace", ref.namespace)
    w.kv(0, "Type", e.type or "Normal")
    w.kv(0, "Reason", e.reason)
    w.kv(0, "Message", e.message)
    w.kv(0, "Source", printers.event_source(e) or NONE)
    w.kv(0, "Count", e.count or 1)
    w.kv(0, "First Timestamp", format_time(e.first_timestamp))
    w.kv(0, "Last Timestamp", format_time(e.last_timestamp))


# ------------------------------------------------------------------ events

async def events_for(client: ApiClient, obj: Message) -> list[Message]:
    """The Events whose involvedObject is `obj` (by name and namespace on the
    server, then kind and uid here), oldest first."""
    kind = kinds.of(obj)
    meta = obj.metadata
    selector = f"involvedObject.name={meta.name}"
    if kind.namespaced:
        selector += f",involvedObject.namespace={meta.namespace}"
    listed = await client.list_all("events", namespace=meta.namespace if kind.namespaced else "",
                                   field_selector=selector)
    out = []
    for e in listed.items:
        ref = e.involved_object
        if ref.kind and ref.kind != kind.kind:
            continue
        if ref.uid and meta.uid and ref.uid != meta.uid:
            continue
        out.append(e)
    return printers.sort_for_table(kinds.lookup("events"), out)


def event_age(e: Message, now: float) -> str:
    last = printers.event_last_seen(e, now)
    if e.count > 1:
        first = None
        for ts in (e.first_timestamp, e.event_time, e.metadata.creation_timestamp):
            if is_set(ts):
                first = age(ts, now)
                break
        return f"{last} (x{e.count} over {first or last})"
    return last


def _events(w: Writer, events: list[Message] | None, now: float) -> None:
    if events is None:
        w.kv(0, "Events", "<unable to list events>")
        return
    if not events:
        w.kv(0, "Events", NONE)
        return
    w.kv(0, "Events")
    w.table(1, ("Type", "Reason", "Age", "From", "Message"),
            [(e.type or "Normal", e.reason, event_age(e, now), printers.event_source(e),
              e.message.strip().replace("\n", " ")) for e in events])


# ------------------------------------------------------------------ dispatch

async def describe(client: ApiClient, obj: Message, show_events: bool = True,
                   now: float | None = None) -> str:
    """The description of one object, as text."""
    now = time.time() if now is None else now
    kind = kinds.of(obj)
    w = Writer()
    k = kind.kind
    if k == "Pod":
        describe_pod(w, obj, now)
    elif k == "Deployment":
        await describe_deployment(w, client, obj, now)
    elif k == "ReplicaSet":
        await describe_replicaset(w, client, obj, now)
    elif k == "Service":
        await describe_service(w, client, obj, now)
    elif k == "Node":
        await describe_node(w, client, obj, now)
    elif k == "Namespace":
        describe_namespace(w, obj, now)
    elif k == "ConfigMap":
        describe_configmap(w, obj, now)
    elif k == "Secret":
        describe_secret(w, obj, now)
    elif k == "Endpoints":
        describe_endpoints(w, obj, now)
    elif k == "Lease":
        describe_lease(w, obj, now)
    elif k == "Event":
        describe_event(w, obj, now)
        show_events = False
    else:  # pragma: no cover - every kind has a describer
        _meta(w, obj, kind)
    if k not in ("Pod", "Node"):
        _deletion(w, obj, now)
    if show_events:
        try:
            events = await events_for(client, obj)
        except ApiError:
            events = None
        _events(w, events, now)
    return w.render()


__all__ = ["describe", "events_for", "Writer", "probe_text"]
