"""Pure parts of the CLI: ages, kubectl's computed columns, tables, -o formats,
reading manifests (with errors naming file and document), and apply's merge."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from kubeling import kinds
from kubeling.api.v1 import apps_pb2, core_pb2
from kubeling.cli import printers
from kubeling.cli.apply import merge_for_apply
from kubeling.cli.common import CliError, parse_targets
from kubeling.cli.delete import parse_duration
from kubeling.cli.manifests import (ManifestReadError, order_for_apply, parse_text, read_manifests,
                                    resolve_namespaces)
from kubeling.objects import from_dict

NOW = 1_700_000_000.0


# ------------------------------------------------------------------ ages

@pytest.mark.parametrize("seconds, expected", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"),
    (182, "3m2s"), (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (5 * 3600 + 20 * 60, "5h20m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
    (2 * 365 * 86400, "2y"), (3 * 365 * 86400 + 10 * 86400, "3y10d"), (9 * 365 * 86400, "9y"),
])
def test_format_duration_matches_kubectl(seconds, expected):
    assert printers.format_duration(seconds) == expected


def test_age_of_unset_timestamp_is_unknown():
    pod = core_pb2.Pod()
    assert printers.age(pod.metadata.creation_timestamp, NOW) == "<unknown>"
    pod.metadata.creation_timestamp.seconds = int(NOW) - 65
    assert printers.age(pod.metadata.creation_timestamp, NOW) == "65s"


# ------------------------------------------------------------------ pods

def _pod(**status) -> core_pb2.Pod:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": "x"}]}, "status": status}
    return from_dict(doc)


def test_pod_status_is_phase_when_containers_are_fine():
    pod = _pod(phase="Running", containerStatuses=[
        {"name": "a", "ready": True, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}])
    assert printers.pod_status(pod) == "Running"
    assert printers.pod_ready(pod) == "1/1"


def test_pod_status_defaults_to_pending():
    assert printers.pod_status(_pod()) == "Pending"
    assert printers.pod_ready(_pod()) == "0/1"


def test_pod_status_shows_waiting_reason():
    pod = _pod(phase="Running", containerStatuses=[
        {"name": "a", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                      "finishedAt": "2023-11-14T22:11:20Z"}}}])
    assert printers.pod_status(pod) == "CrashLoopBackOff"
    assert printers.pod_ready(pod) == "0/1"
    # NOW is 2023-11-14T22:13:20Z: the last restart was 2 minutes ago
    assert printers.pod_restarts(pod, NOW) == "4 (2m ago)"


def test_pod_status_shows_terminated_reason_or_exit_code():
    done = _pod(phase="Succeeded", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}])
    assert printers.pod_status(done) == "Completed"
    failed = _pod(phase="Failed", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 3}}}])
    assert printers.pod_status(failed) == "ExitCode:3"
    killed = _pod(phase="Failed", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}])
    assert printers.pod_status(killed) == "Signal:9"


def test_pod_status_terminating_when_deletion_timestamp_is_set():
    pod = _pod(phase="Running")
    pod.metadata.deletion_timestamp.seconds = int(NOW)
    assert printers.pod_status(pod) == "Terminating"
    pod.status.phase = "Succeeded"
    assert printers.pod_status(pod) == "Succeeded"


def test_pod_status_init_containers():
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"initContainers": [{"name": "i", "image": "x"}, {"name": "j", "image": "x"}],
                    "containers": [{"name": "a", "image": "x"}]},
           "status": {"phase": "Pending", "initContainerStatuses": [
               {"name": "i", "state": {"terminated": {"exitCode": 0}}},
               {"name": "j", "state": {"running": {}}}]}}
    assert printers.pod_status(from_dict(doc)) == "Init:1/2"
    doc["status"]["initContainerStatuses"][1]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert printers.pod_status(from_dict(doc)) == "Init:CrashLoopBackOff"
    doc["status"]["initContainerStatuses"][1]["state"] = {"terminated": {"exitCode": 2}}
    assert printers.pod_status(from_dict(doc)) == "Init:ExitCode:2"


def test_pod_restarts_without_last_state():
    pod = _pod(containerStatuses=[{"name": "a", "restartCount": 0}])
    assert printers.pod_restarts(pod, NOW) == "0"


# ------------------------------------------------------------------ services, nodes, endpoints

def _svc(spec: dict, status: dict | None = None) -> core_pb2.Service:
    return from_dict({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                      "spec": spec, "status": status or {}})


def test_service_ports_column():
    assert printers.service_ports(_svc({})) == "<none>"
    assert printers.service_ports(_svc({"ports": [{"port": 80}]})) == "80/TCP"
    svc = _svc({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                              {"port": 53, "protocol": "UDP"}]})
    assert printers.service_ports(svc) == "80:30080/TCP,53/UDP"


def test_service_ips_columns():
    assert printers.service_cluster_ip(_svc({"clusterIP": "10.96.0.10"})) == "10.96.0.10"
    assert printers.service_cluster_ip(_svc({"clusterIP": "None"})) == "None"
    assert printers.service_external_ip(_svc({"type": "ClusterIP"})) == "<none>"
    assert printers.service_external_ip(_svc({"type": "LoadBalancer"})) == "<pending>"
    assert printers.service_external_ip(_svc({"type": "NodePort", "externalIPs": ["1.2.3.4"]})) == "1.2.3.4"


def test_node_status_column():
    node = from_dict({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    assert printers.node_status(node) == "Unknown"
    node.status.conditions.add(type="Ready", status="True")
    assert printers.node_status(node) == "Ready"
    node.status.conditions[0].status = "Unknown"
    assert printers.node_status(node) == "NotReady"
    node.spec.unschedulable = True
    assert printers.node_status(node) == "NotReady,SchedulingDisabled"
    assert printers.node_roles(node) == "<none>"
    node.metadata.labels["node-role.kubernetes.io/control-plane"] = ""
    assert printers.node_roles(node) == "control-plane"


def test_endpoints_column_limits_to_three():
    ep = from_dict({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
                    "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 6)],
                                 "ports": [{"port": 8080}]}]})
    assert printers.endpoints_column(ep) == "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 2 more..."
    assert printers.endpoints_column(core_pb2.Endpoints()) == "<none>"


def test_label_selector_string():
    sel = from_dict({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                     "spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
                         {"key": "t", "operator": "In", "values": ["y", "x"]},
                         {"key": "c", "operator": "DoesNotExist"}]}}}).spec.selector
    assert printers.label_selector(sel) == "a=1,b=2,t in (x,y),!c"


# ------------------------------------------------------------------ tables

def _deployment(name: str, ready: int = 1, replicas: int = 3) -> apps_pb2.Deployment:
    d = from_dict({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
                   "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"containers": [{"name": "c", "image": "img:1"}]}}},
                   "status": {"readyReplicas": ready, "updatedReplicas": 2, "availableReplicas": 1}})
    d.metadata.creation_timestamp.seconds = int(NOW) - 182
    return d


def test_table_aligns_columns_like_kubectl():
    printer = printers.TablePrinter(kinds.lookup("deploy"), now=NOW)
    text = printer.render([_deployment("web"), _deployment("a-much-longer-name")])
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split() == ["web", "1/3", "2", "1", "3m2s"]
    # every column starts at the same offset on every line
    col = lines[0].index("READY")
    assert lines[1][col:].startswith("1/3") and lines[2][col:].startswith("1/3")
    assert lines[0].index("READY") == len("a-much-longer-name") + 3


def test_table_wide_all_namespaces_and_labels():
    printer = printers.TablePrinter(kinds.lookup("deployments"), wide=True, all_namespaces=True,
                                    show_labels=True, now=NOW)
    lines = printer.render([_deployment("web")]).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE",
                                "CONTAINERS", "IMAGES", "SELECTOR", "LABELS"]
    assert lines[1].split() == ["default", "web", "1/3", "2", "1", "3m2s", "c", "img:1", "app=web",
                                "app=web"]


def test_table_kind_prefix_and_watch_rows_keep_widths():
    printer = printers.TablePrinter(kinds.lookup("deploy"), show_kind=True, now=NOW)
    text = printer.render([_deployment("web")])
    assert text.splitlines()[1].startswith("deployment.apps/web   ")
    row = printer.row(_deployment("web", ready=3))
    assert row.index("3/3") == text.splitlines()[0].index("READY")


def test_event_table_columns():
    e = from_dict({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
                   "involvedObject": {"kind": "Pod", "name": "web-1"}, "reason": "Scheduled",
                   "message": "assigned", "type": "Normal", "lastTimestamp": "2023-11-14T22:13:15Z"})
    lines = printers.TablePrinter(kinds.lookup("ev"), now=NOW).render([e]).splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert lines[1].split() == ["5s", "Normal", "Scheduled", "pod/web-1", "assigned"]


def test_pod_and_service_tables():
    pod = _pod(phase="Running", podIP="10.1.0.5")
    pod.spec.node_name = "node-1"
    pod.metadata.creation_timestamp.seconds = int(NOW) - 5
    lines = printers.TablePrinter(kinds.lookup("po"), wide=True, now=NOW).render([pod]).splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert lines[1].split() == ["p", "0/1", "Running", "0", "5s", "10.1.0.5", "node-1"]
    svc = _svc({"type": "NodePort", "clusterIP": "10.96.0.7", "ports": [{"port": 80, "nodePort": 30080}]})
    lines = printers.TablePrinter(kinds.lookup("svc"), now=NOW).render([svc]).splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert lines[1].split() == ["s", "NodePort", "10.96.0.7", "<none>", "80:30080/TCP", "<unknown>"]


# ------------------------------------------------------------------ -o yaml / json / name

def test_render_objects_formats():
    d = _deployment("web")
    one = json.loads(printers.render_objects([d], "json", single=True))
    assert one["apiVersion"] == "apps/v1" and one["kind"] == "Deployment"
    assert one["spec"]["replicas"] == 3
    many = json.loads(printers.render_objects([d, d], "json", single=False))
    assert many["kind"] == "List" and len(many["items"]) == 2
    assert many["metadata"] == {"resourceVersion": ""}
    doc = yaml.safe_load(printers.render_objects([d], "yaml", single=True))
    assert list(doc)[:3] == ["apiVersion", "kind", "metadata"]
    assert printers.render_objects([d], "name", single=True) == "deployment.apps/web\n"
    assert printers.render_objects([_pod()], "name", single=True) == "pod/p\n"


# ------------------------------------------------------------------ manifests

GOOD = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
# only a comment: an empty document
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  when: 2024-01-01
"""


def test_parse_text_skips_empty_documents_and_keeps_numbers():
    ms = parse_text(GOOD, "app.yaml")
    assert [(m.kind.kind, m.document) for m in ms] == [("Namespace", 1), ("ConfigMap", 3)]
    assert ms[1].obj.data["when"] == "2024-01-01"  # dates stay strings, as in Kubernetes


def test_unknown_field_names_file_document_and_field(tmp_path):
    bad = tmp_path / "web.yaml"
    bad.write_text(GOOD + """---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  foo: 1
""")
    with pytest.raises(ManifestReadError) as e:
        read_manifests([str(bad)])
    assert e.value.errors == [f'{bad} (document 4): Deployment: unknown field "spec.foo": '
                              "kubeling does not support this field"]


def test_every_bad_document_is_reported():
    text = "kind: Nope\napiVersion: v1\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\n---\n- 1\n"
    with pytest.raises(ManifestReadError) as e:
        parse_text(text, "m.yaml")
    assert len(e.value.errors) == 2
    assert e.value.errors[0].startswith('m.yaml (document 1): no kind "Nope"')
    assert e.value.errors[1].startswith("m.yaml (document 3): expected an object")


def test_yaml_syntax_error_names_document_and_line():
    with pytest.raises(ManifestReadError) as e:
        parse_text("apiVersion: v1\nkind: Pod\n---\nmetadata: [a,\n", "x.yaml")
    assert e.value.errors[0].startswith("x.yaml (document 2): error parsing YAML")
    assert "line" in e.value.errors[0]


def test_wrong_api_version_and_missing_kind():
    with pytest.raises(ManifestReadError) as e:
        parse_text("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n", "d.yaml")
    assert "d.yaml (document 1): Deployment: no kind 'Deployment' is registered for version 'v1'" in e.value.errors[0]
    with pytest.raises(ManifestReadError) as e:
        parse_text("apiVersion: v1\nmetadata: {name: d}\n", "d.yaml")
    assert e.value.errors[0] == "d.yaml (document 1): Object 'Kind' is missing"


def test_json_and_list_items():
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}, "bogus": 1}]})
    with pytest.raises(ManifestReadError) as e:
        parse_text(text, "list.json")
    assert e.value.errors[0].startswith('list.json (document 1, item 2): Secret: unknown field "bogus"')
    ms = parse_text(text.replace(', "bogus": 1', ""), "list.json")
    assert [m.obj.metadata.name for m in ms] == ["a", "b"]
    stream = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}\n' \
             '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}\n'
    assert [m.document for m in parse_text(stream, "s.json")] == [1, 2]


def test_directory_reads_sorted_yaml_and_json_files(tmp_path):
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    (tmp_path / "a.json").write_text('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}')
    (tmp_path / "c.yml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    ms = read_manifests([str(tmp_path)])
    assert [m.obj.metadata.name for m in ms] == ["a", "b", "c"]
    assert ms[0].source.endswith("a.json")


def test_stdin_and_missing_path():
    ms = read_manifests(["-"], stdin=io.StringIO("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n"))
    assert ms[0].where == "stdin (document 1)"
    with pytest.raises(ManifestReadError) as e:
        read_manifests(["/nonexistent/x.yaml"])
    assert e.value.errors == ['the path "/nonexistent/x.yaml" does not exist']


def test_namespaces_first_and_namespace_resolution():
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: other}\n")
    ms = order_for_apply(parse_text(text, "m.yaml"))
    assert [m.obj.metadata.name for m in ms] == ["n", "a", "b"]
    resolve_namespaces(ms, None)
    assert [m.obj.metadata.namespace for m in ms] == ["", "default", "other"]
    ms = parse_text(text, "m.yaml")
    with pytest.raises(ManifestReadError) as e:
        resolve_namespaces(ms, "mine")
    assert 'the namespace from the provided object "other" does not match the namespace "mine"' in e.value.errors[0]


# ------------------------------------------------------------------ command-line helpers

def test_parse_targets():
    assert [(k.kind, n) for k, n in parse_targets(["po"])] == [("Pod", [])]
    assert [(k.kind, n) for k, n in parse_targets(["deploy,svc", "web"])] == \
        [("Deployment", ["web"]), ("Service", ["web"])]
    assert [(k.kind, n) for k, n in parse_targets(["deployment.apps/web", "deploy/api", "svc/web"])] == \
        [("Deployment", ["web", "api"]), ("Service", ["web"])]
    assert [k.resource for k, _ in parse_targets(["all"])] == ["pods", "services", "deployments", "replicasets"]
    with pytest.raises(CliError, match='doesn\'t have a resource type "widgets"'):
        parse_targets(["widgets"])


def test_parse_duration():
    assert parse_duration("30") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    with pytest.raises(CliError):
        parse_duration("soon")


# ------------------------------------------------------------------ apply's merge

def test_merge_for_apply_keeps_status_and_assigned_fields():
    live = from_dict({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": "s", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                                   "labels": {"old": "x"},
                                   "annotations": {"kubeling.io/seen": "1", "note": "old"}},
                      "spec": {"clusterIP": "10.96.0.9", "type": "NodePort", "selector": {"app": "a"},
                               "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]},
                      "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}})
    manifest = from_dict({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "s", "labels": {"new": "y"}},
                          "spec": {"type": "NodePort", "selector": {"app": "b"}, "ports": [{"port": 80}]}})
    merged = merge_for_apply(live, manifest)
    assert dict(merged.metadata.labels) == {"new": "y"}
    assert dict(merged.metadata.annotations) == {"kubeling.io/seen": "1"}
    assert merged.metadata.uid == "u1" and merged.metadata.resource_version == "7"
    assert merged.spec.cluster_ip == "10.96.0.9"
    assert merged.spec.ports[0].node_port == 30001
    assert dict(merged.spec.selector) == {"app": "b"}
    assert merged.status.load_balancer.ingress[0].ip == "1.1.1.1"


def test_merge_for_apply_keeps_scaled_replicas_unless_manifest_sets_them():
    live = _deployment("web", replicas=5)
    manifest = _deployment("web")
    manifest.spec.ClearField("replicas")
    manifest.spec.template.spec.containers[0].image = "img:2"
    merged = merge_for_apply(live, manifest)
    assert merged.spec.replicas == 5
    assert merged.spec.template.spec.containers[0].image == "img:2"
    manifest.spec.replicas = 2
    assert merge_for_apply(live, manifest).spec.replicas == 2


def test_merge_for_apply_replaces_configmap_data():
    live = from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                      "data": {"a": "1", "b": "2"}})
    manifest = from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                          "data": {"a": "3"}})
    assert dict(merge_for_apply(live, manifest).data) == {"a": "3"}
