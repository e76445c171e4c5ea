"""Printing objects the way kubectl does: tables per kind (and their `-o wide`
columns), `-o yaml`, `-o json` and `-o name`.

Everything here is pure: objects in, text out, with `now` passed in where
ages are computed, so it is easy to test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import yaml
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kubeling import kinds
from kubeling.objects import to_dict

OUTPUT_FORMATS = ("wide", "yaml", "json", "name")
NONE = "<none>"


# --------------------------------------------------------------- durations

def format_duration(seconds: float) -> str:
    """A duration as kubectl prints ages (apimachinery's HumanDuration):
    `5s`, `119s`, `3m2s`, `10m`, `3h`, `5h20m`, `2d`, `3d4h`, `400d`, `2y`..."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def is_set(ts: Timestamp) -> bool:
    return ts.seconds != 0 or ts.nanos != 0


def timestamp_seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def age(ts: Timestamp, now: float | None = None) -> str:
    """The age of a timestamp (`<unknown>` when it is not set)."""
    if not is_set(ts):
        return "<unknown>"
    now = time.time() if now is None else now
    return format_duration(now - timestamp_seconds(ts))


def format_time(ts: Timestamp) -> str:
    """RFC 3339 as Kubernetes prints it: 2024-05-01T12:00:00Z."""
    if not is_set(ts):
        return NONE
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts.seconds))


# --------------------------------------------------------------- pods

def pod_status(pod: Message) -> str:
    """The STATUS column of `get pods`, computed as kubectl computes it."""
    status, spec = pod.status, pod.spec
    reason = status.reason or status.phase or "Pending"
    initializing = False
    n_init = len(spec.init_containers)
    for i, c in enumerate(status.init_container_statuses):
        state = c.state
        if state.HasField("terminated") and state.terminated.exit_code == 0:
            continue
        if state.HasField("terminated"):
            t = state.terminated
            if t.reason:
                reason = "Init:" + t.reason
            elif t.signal:
                reason = f"Init:Signal:{t.signal}"
            else:
                reason = f"Init:ExitCode:{t.exit_code}"
        elif state.HasField("waiting") and state.waiting.reason and state.waiting.reason != "PodInitializing":
            reason = "Init:" + state.waiting.reason
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break
    if not initializing or _condition_true(status.conditions, "Initialized"):
        has_running = False
        for c in reversed(status.container_statuses):
            state = c.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated") and state.terminated.reason:
                reason = state.terminated.reason
            elif state.HasField("terminated"):
                t = state.terminated
                reason = f"Signal:{t.signal}" if t.signal else f"ExitCode:{t.exit_code}"
            elif c.ready and state.HasField("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status.conditions, "Ready") else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        if status.reason == "NodeLost":
            reason = "Unknown"
        elif status.phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason


def _condition_true(conditions: Iterable[Message], kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions)


def pod_ready(pod: Message) -> str:
    """`1/2`: ready containers over containers."""
    ready = sum(1 for c in pod.status.container_statuses if c.ready and c.state.HasField("running"))
    return f"{ready}/{len(pod.spec.containers)}"


def pod_restarts(pod: Message, now: float | None = None) -> str:
    """`0`, or `3 (2m ago)` with the age of the last restart."""
    restarts = 0
    last = 0.0
    for c in list(pod.status.init_container_statuses) + list(pod.status.container_statuses):
        restarts += c.restart_count
        if c.last_state.HasField("terminated") and is_set(c.last_state.terminated.finished_at):
            last = max(last, timestamp_seconds(c.last_state.terminated.finished_at))
    if restarts and last:
        now = time.time() if now is None else now
        return f"{restarts} ({format_duration(now - last)} ago)"
    return str(restarts)


# --------------------------------------------------------------- services

def service_ports(svc: Message) -> str:
    """`80/TCP,443:30443/TCP` (`<none>` without ports)."""
    parts = []
    for p in svc.spec.ports:
        proto = p.protocol or "TCP"
        parts.append(f"{p.port}:{p.node_port}/{proto}" if p.node_port else f"{p.port}/{proto}")
    return ",".join(parts) if parts else NONE


def service_cluster_ip(svc: Message) -> str:
    ip = svc.spec.cluster_ip
    if not ip:
        return NONE
    return ip


def service_external_ip(svc: Message) -> str:
    spec = svc.spec
    kind = spec.type or "ClusterIP"
    ips = list(spec.external_ips)
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(ips) if ips else NONE
    if kind == "LoadBalancer":
        ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
        all_ips = ingress + ips
        return ",".join(all_ips) if all_ips else "<pending>"
    if kind == "ExternalName":
        return NONE
    return "<unknown>"


def map_selector(selector: dict) -> str:
    """`app=web,tier=front` (`<none>` when empty)."""
    if not selector:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def label_selector(sel: Message) -> str:
    """A LabelSelector in kubectl syntax: `app=web,tier in (a,b),!canary`."""
    parts = [f"{k}={v}" for k, v in sorted(sel.match_labels.items())]
    for req in sel.match_expressions:
        op = req.operator
        values = ",".join(sorted(req.values))
        if op == "In":
            parts.append(f"{req.key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{req.key} notin ({values})")
        elif op == "Exists":
            parts.append(req.key)
        elif op == "DoesNotExist":
            parts.append(f"!{req.key}")
        else:
            parts.append(f"{req.key} {op} ({values})")
    return ",".join(parts) if parts else NONE


def labels_column(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else NONE


def endpoints_column(ep: Message, limit: int = 3) -> str:
    """`10.0.0.5:8080,10.0.0.6:8080 + 2 more...` (`<none>` without addresses)."""
    shown: list[str] = []
    count = 0
    for subset in ep.subsets:
        if not subset.ports:
            count += len(subset.addresses)
            shown.extend(a.ip for a in subset.addresses)
            continue
        for port in subset.ports:
            count += len(subset.addresses)
            for a in subset.addresses:
                host = f"[{a.ip}]" if ":" in a.ip else a.ip
                shown.append(f"{host}:{port.port}")
    if not shown:
        return NONE
    text = ",".join(shown[:limit])
    if len(shown) > limit:
        text += f" + {count - limit} more..."
    return text


# --------------------------------------------------------------- nodes

def node_status(node: Message) -> str:
    """`Ready`, `NotReady`, `Unknown` (no Ready condition), plus `,SchedulingDisabled`."""
    status = "Unknown"
    for c in node.status.conditions:
        if c.type == "Ready":
            status = "Ready" if c.status == "True" else "NotReady"
    if node.spec.unschedulable:
        status += ",SchedulingDisabled"
    return status


def node_roles(node: Message) -> str:
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.split("/", 1)[1]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) if roles else NONE


def node_address(node: Message, kind: str) -> str:
    for a in node.status.addresses:
        if a.type == kind:
            return a.address
    return NONE


# --------------------------------------------------------------- tables

Row = Callable[[Message, float], list[str]]


@dataclass(frozen=True)
class Columns:
    headers: tuple[str, ...]
    row: Row
    wide_headers: tuple[str, ...] = ()
    wide_row: Row | None = None


def _containers(spec: Message) -> tuple[str, str]:
    cs = spec.template.spec.containers
    return ",".join(c.name for c in cs) or NONE, ",".join(c.image for c in cs) or NONE


def _replicas(spec: Message) -> int:
    return spec.replicas if spec.HasField("replicas") else 1


def _deploy_row(d: Message, now: float) -> list[str]:
    return [f"{d.status.ready_replicas}/{_replicas(d.spec)}", str(d.status.updated_replicas),
            str(d.status.available_replicas), age(d.metadata.creation_timestamp, now)]


def _template_wide(o: Message, now: float) -> list[str]:
    names, images = _containers(o.spec)
    return [names, images, label_selector(o.spec.selector)]


def _rs_row(rs: Message, now: float) -> list[str]:
    return [str(_replicas(rs.spec)), str(rs.status.replicas), str(rs.status.ready_replicas),
            age(rs.metadata.creation_timestamp, now)]


def _pod_row(p: Message, now: float) -> list[str]:
    return [pod_ready(p), pod_status(p), pod_restarts(p, now), age(p.metadata.creation_timestamp, now)]


def _pod_wide(p: Message, now: float) -> list[str]:
    return [p.status.pod_ip or NONE, p.spec.node_name or NONE]


def _svc_row(s: Message, now: float) -> list[str]:
    return [s.spec.type or "ClusterIP", service_cluster_ip(s), service_external_ip(s),
            service_ports(s), age(s.metadata.creation_timestamp, now)]


def _node_row(n: Message, now: float) -> list[str]:
    return [node_status(n), node_roles(n), age(n.metadata.creation_timestamp, now),
            n.status.node_info.kubelet_version or NONE]


def _node_wide(n: Message, now: float) -> list[str]:
    info = n.status.node_info
    return [node_address(n, "InternalIP"), node_address(n, "ExternalIP"), info.os_image or NONE,
            info.kernel_version or NONE, info.container_runtime_version or NONE]


def _secret_keys(s: Message) -> int:
    return len(set(s.data) | set(s.string_data))


def event_last_seen(e: Message, now: float) -> str:
    for ts in (e.last_timestamp, e.event_time, e.first_timestamp, e.metadata.creation_timestamp):
        if is_set(ts):
            return age(ts, now)
    return "<unknown>"


def event_object(e: Message) -> str:
    ref = e.involved_object
    return f"{ref.kind.lower()}/{ref.name}"


def event_source(e: Message) -> str:
    component = e.source.component or e.reporting_component
    if component and e.source.host:
        return f"{component}, {e.source.host}"
    return component or e.source.host or ""


def _event_row(e: Message, now: float) -> list[str]:
    return [e.type or "Normal", e.reason, event_object(e), e.message.strip()]


def _event_first_seen(e: Message, now: float) -> str:
    for ts in (e.first_timestamp, e.event_time, e.metadata.creation_timestamp):
        if is_set(ts):
            return age(ts, now)
    return "<unknown>"


COLUMNS: dict[str, Columns] = {
    "Pod": Columns(("READY", "STATUS", "RESTARTS", "AGE"), _pod_row, ("IP", "NODE"), _pod_wide),
    "Deployment": Columns(("READY", "UP-TO-DATE", "AVAILABLE", "AGE"), _deploy_row,
                          ("CONTAINERS", "IMAGES", "SELECTOR"), _template_wide),
    "ReplicaSet": Columns(("DESIRED", "CURRENT", "READY", "AGE"), _rs_row,
                          ("CONTAINERS", "IMAGES", "SELECTOR"), _template_wide),
    "Service": Columns(("TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), _svc_row,
                       ("SELECTOR",), lambda s, now: [map_selector(dict(s.spec.selector))]),
    "Node": Columns(("STATUS", "ROLES", "AGE", "VERSION"), _node_row,
                    ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"),
                    _node_wide),
    "Namespace": Columns(("STATUS", "AGE"), lambda n, now: [
        n.status.phase or "Active", age(n.metadata.creation_timestamp, now)]),
    "ConfigMap": Columns(("DATA", "AGE"), lambda c, now: [
        str(len(c.data) + len(c.binary_data)), age(c.metadata.creation_timestamp, now)]),
    "Secret": Columns(("TYPE", "DATA", "AGE"), lambda s, now: [
        s.type or "Opaque", str(_secret_keys(s)), age(s.metadata.creation_timestamp, now)]),
    "Endpoints": Columns(("ENDPOINTS", "AGE"), lambda e, now: [
        endpoints_column(e), age(e.metadata.creation_timestamp, now)]),
    "Lease": Columns(("HOLDER", "AGE"), lambda l, now: [
        l.spec.holder_identity if l.spec.HasField("holder_identity") else NONE,
        age(l.metadata.creation_timestamp, now)]),
}


class TablePrinter:
    """Rows for one kind, aligned as kubectl aligns them (three spaces between columns).

    `render(objs)` returns the table with its header. In watch mode, `row()`
    formats one more line using the widths of the table printed before, so
    later lines stay under their headers.
    """

    PAD = 3

    def __init__(self, kind: kinds.Kind, *, wide: bool = False, all_namespaces: bool = False,
                 show_labels: bool = False, show_kind: bool = False, now: float | None = None):
        self.kind = kind
        self.wide = wide
        self.all_namespaces = all_namespaces and kind.namespaced
        self.show_labels = show_labels
        self.show_kind = show_kind
        self.now = now
        self.widths: list[int] = []

    def headers(self) -> list[str]:
        h: list[str] = []
        if self.all_namespaces:
            h.append("NAMESPACE")
        if self.kind.kind == "Event":
            h += ["LAST SEEN", "TYPE", "REASON", "OBJECT"]
            if self.wide:
                h += ["SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"]
            else:
                h.append("MESSAGE")
        else:
            h.append("NAME")
            cols = COLUMNS.get(self.kind.kind)
            if cols is not None:
                h += cols.headers
                if self.wide:
                    h += cols.wide_headers
            else:
                h.append("AGE")
        if self.show_labels:
            h.append("LABELS")
        return h

    def cells(self, obj: Message) -> list[str]:
        now = time.time() if self.now is None else self.now
        meta = obj.metadata
        c: list[str] = []
        if self.all_namespaces:
            c.append(meta.namespace)
        name = f"{self.kind.qualified}/{meta.name}" if self.show_kind else meta.name
        if self.kind.kind == "Event":
            typ, reason, what, message = _event_row(obj, now)
            c += [event_last_seen(obj, now), typ, reason, what]
            if self.wide:
                c += [obj.involved_object.field_path, event_source(obj), message,
                      _event_first_seen(obj, now), str(obj.count or 1), name]
            else:
                c.append(message)
        else:
            c.append(name)
            cols = COLUMNS.get(self.kind.kind)
            if cols is not None:
                c += cols.row(obj, now)
                if self.wide and cols.wide_row is not None:
                    c += cols.wide_row(obj, now)
            else:
                c.append(age(meta.creation_timestamp, now))
        if self.show_labels:
            c.append(labels_column(dict(meta.labels)))
        return [x.replace("\n", " ") for x in c]

    def render(self, objs: Sequence[Message], header: bool = True) -> str:
        rows = [self.cells(o) for o in objs]
        if header:
            rows.insert(0, self.headers())
        self.widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
        return "".join(self._line(r) for r in rows)

    def row(self, obj: Message) -> str:
        cells = self.cells(obj)
        if not self.widths:
            self.widths = [len(c) for c in cells]
        return self._line(cells)

    def _line(self, cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1:
                out.append(cell)
            else:
                width = self.widths[i] if i < len(self.widths) else 0
                out.append(cell.ljust(max(width, len(cell)) + self.PAD))
        return "".join(out).rstrip() + "\n"


def sort_for_table(kind: kinds.Kind, objs: list[Message]) -> list[Message]:
    """Events by when they were last seen (as kubectl shows them); others as listed."""
    if kind.kind != "Event":
        return objs

    def last(e: Message) -> float:
        for ts in (e.last_timestamp, e.event_time, e.first_timestamp, e.metadata.creation_timestamp):
            if is_set(ts):
                return timestamp_seconds(ts)
        return 0.0
    return sorted(objs, key=last)


# --------------------------------------------------------------- yaml / json / name

def object_dict(obj: Message) -> dict:
    """The object as Kubernetes prints it, apiVersion and kind included."""
    d = to_dict(obj)
    k = kinds.of(obj)
    out = {"apiVersion": d.pop("apiVersion", k.api_version), "kind": d.pop("kind", k.kind)}
    out.update(d)
    return out


def list_dict(objs: Sequence[Message]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": [object_dict(o) for o in objs],
            "metadata": {"resourceVersion": ""}}


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with multi-line strings as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False,
                     allow_unicode=True)


def to_json(data: dict) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def render_objects(objs: Sequence[Message], output: str, single: bool) -> str:
    """-o yaml / json / name for a list of objects. `single`: one named object,
    printed bare rather than inside a List."""
    if output == "name":
        return "".join(f"{kinds.of(o).qualified}/{o.metadata.name}\n" for o in objs)
    data = object_dict(objs[0]) if single and len(objs) == 1 else list_dict(objs)
    if output == "json":
        return to_json(data)
    if output == "yaml":
        return to_yaml(data)
    raise ValueError(f"unsupported output format {output!r}")


def render_watch_object(obj: Message, output: str) -> str:
    """One watch event's object in yaml / json / name form."""
    if output == "name":
        return f"{kinds.of(obj).qualified}/{obj.metadata.name}\n"
    data = object_dict(obj)
    if output == "json":
        return to_json(data)
    return "---\n" + to_yaml(data)
