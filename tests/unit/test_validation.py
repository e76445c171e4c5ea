"""Validation of objects: every class of bad input names the right field.

Each case takes a good manifest, changes a few fields (JSON paths, as in the
error it should cause) and expects an error of a kind at a path.
"""

import copy as copy_module
import re

import pytest
import yaml
from google.protobuf import json_format

from kubeling import kinds
from kubeling.objects import copy
from services.apiserver import defaults, validation

INVALID = "Invalid value"
REQUIRED = "Required value"
FORBIDDEN = "Forbidden"
UNSUPPORTED = "Unsupported value"
DUPLICATE = "Duplicate value"
NOT_FOUND = "Not found"
TOO_LONG = "Too long"
DELETE = object()

POD = yaml.safe_load("""
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {app: web, app.kubernetes.io/name: web}
  annotations: {example.com/owner: team-a}
spec:
  initContainers:
  - name: init
    image: localhost/kubeling/shell:1
    command: [sh, -c, "echo ready > /work/ready"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: web
    image: localhost/kubeling/http:1
    ports:
    - {name: http, containerPort: 8080}
    - {name: metrics, containerPort: 9090, hostPort: 19090}
    env:
    - {name: MODE, value: production}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: web-config, key: log.level}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: web-secret, key: token}}}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: web-config}}
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 1, memory: 128Mi, example.com/gpu: 1}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: config, mountPath: /etc/web, readOnly: true}
    - {name: secret, mountPath: /etc/secret, subPath: token}
    livenessProbe: {httpGet: {path: /healthz, port: http}, initialDelaySeconds: 3}
    readinessProbe: {tcpSocket: {port: 8080}, successThreshold: 2}
    startupProbe: {exec: {command: [cat, /work/ready]}, failureThreshold: 30}
    lifecycle: {preStop: {exec: {command: [sleep, "1"]}}}
    securityContext: {runAsUser: 1000, allowPrivilegeEscalation: false}
  - name: sidecar
    image: localhost/kubeling/shell:1
    command: [sleep, "3600"]
  volumes:
  - {name: work, emptyDir: {sizeLimit: 1Gi}}
  - name: config
    configMap: {name: web-config, items: [{key: log.level, path: conf/level}], defaultMode: 0644}
  - {name: secret, secret: {secretName: web-secret}}
  - {name: logs, hostPath: {path: /var/log/web, type: DirectoryOrCreate}}
  nodeSelector: {kubernetes.io/hostname: node-1}
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
  - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: kubernetes.io/hostname, operator: In, values: [node-1, node-2]}
          - {key: cores, operator: Gt, values: ["2"]}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        preference: {matchExpressions: [{key: disk, operator: Exists}]}
  terminationGracePeriodSeconds: 10
  securityContext: {runAsUser: 1000, fsGroup: 2000}
""")

DEPLOYMENT = yaml.safe_load("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  minReadySeconds: 5
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: NotIn, values: [db]}]
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 10%}}
  template:
    metadata: {labels: {app: web}}
""")
DEPLOYMENT["spec"]["template"]["spec"] = copy_module.deepcopy(POD["spec"])

REPLICA_SET = yaml.safe_load("""
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-5d8f7c9b6, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, pod-template-hash: 5d8f7c9b6}}
  template:
    metadata: {labels: {app: web, pod-template-hash: 5d8f7c9b6}}
    spec:
      containers: [{name: web, image: localhost/kubeling/http:1}]
""")

SERVICE = yaml.safe_load("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090, targetPort: 9090, protocol: TCP}
""")

NODE_PORT_SERVICE = yaml.safe_load("""
apiVersion: v1
kind: Service
metadata: {name: web-public}
spec:
  type: NodePort
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
""")

HEADLESS_SERVICE = yaml.safe_load(
    "{apiVersion: v1, kind: Service, metadata: {name: db}, spec: {clusterIP: None, selector: {app: db}}}")

NODE = yaml.safe_load("""
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1}}
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24]
  taints: [{key: node.kubernetes.io/unreachable, effect: NoExecute}, {key: dedicated, value: web, effect: NoSchedule}]
status:
  capacity: {cpu: "4", memory: 8053920Ki, pods: "110", ephemeral-storage: 100Gi}
  allocatable: {cpu: 3800m, memory: 7Gi, pods: "110"}
""")

NAMESPACE = yaml.safe_load("{apiVersion: v1, kind: Namespace, metadata: {name: team-a}}")

CONFIG_MAP = yaml.safe_load("""
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {log.level: debug, app.properties: "a=1\\nb=2", KEY_NAME: x}
binaryData: {logo.png: aGVsbG8=}
""")

SECRET = yaml.safe_load("""
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
data: {token: c2VjcmV0}
stringData: {password: hunter2}
""")

TLS_SECRET = yaml.safe_load("""
apiVersion: v1
kind: Secret
metadata: {name: web-tls}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
""")

EVENT = yaml.safe_load("""
apiVersion: v1
kind: Event
metadata: {name: web-0.17c1a2b3}
involvedObject: {kind: Pod, name: web-0, namespace: default}
reason: FailedScheduling
message: "0/3 nodes are available: 3 Insufficient cpu."
type: Warning
source: {component: default-scheduler}
""")

NODE_EVENT = yaml.safe_load("""
apiVersion: v1
kind: Event
metadata: {name: node-1.17c1a2b3}
involvedObject: {kind: Node, name: node-1}
reason: NodeNotReady
""")

LEASE = yaml.safe_load("""
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: node-1, namespace: kube-node-lease}
spec: {holderIdentity: node-1, leaseDurationSeconds: 40, renewTime: "2024-05-01T12:00:00Z"}
""")

ENDPOINTS = yaml.safe_load("""
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
- addresses:
  - {ip: 10.244.1.5, nodeName: node-1, targetRef: {kind: Pod, name: web-0, namespace: default}}
  notReadyAddresses: [{ip: 10.244.2.7}]
  ports: [{name: http, port: 8080}, {name: metrics, port: 9090}]
""")

GOOD = {
    "pod": POD,
    "deployment": DEPLOYMENT,
    "deployment with Recreate": {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "strategy": {"type": "Recreate"}}},
    "replicaset": REPLICA_SET,
    "service": SERVICE,
    "nodeport service": NODE_PORT_SERVICE,
    "headless service": HEADLESS_SERVICE,
    "node": NODE,
    "namespace": NAMESPACE,
    "configmap": CONFIG_MAP,
    "secret": SECRET,
    "tls secret": TLS_SECRET,
    "event": EVENT,
    "event about a node": NODE_EVENT,
    "lease": LEASE,
    "endpoints": ENDPOINTS,
    "pod with generateName": {**POD, "metadata": {"generateName": "web-"}},
}


# ---------------------------------------------------------------- helpers


def _tokens(path: str) -> list:
    return [int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]


def edited(doc: dict, edits: dict) -> dict:
    """A deep copy of `doc` with each JSON path set to its value (DELETE
    removes it; the index just past a list's end appends)."""
    doc = copy_module.deepcopy(doc)
    for path, value in edits.items():
        *parents, last = _tokens(path)
        node = doc
        for token in parents:
            if isinstance(token, str) and token not in node:
                node[token] = {}
            node = node[token]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(copy_module.deepcopy(value))
        else:
            node[last] = copy_module.deepcopy(value)
    return doc


def parse(doc: dict):
    kind = kinds.by_kind(doc["kind"])
    obj = json_format.ParseDict(doc, kind.message())
    if kind.namespaced and not obj.metadata.namespace:
        obj.metadata.namespace = "default"  # as the registry does
    defaults.apply(kind, obj)
    return kind, obj


def errors_of(doc: dict, old: dict | None = None):
    kind, obj = parse(doc)
    old_obj = parse(old)[1] if old is not None else None
    return validation.validate(kind, obj, old_obj)


def assert_error(errs, path: str, kind: str):
    found = [e for e in errs if e.path == path]
    assert found, f"no error at {path}; got:\n" + "\n".join(map(str, errs))
    assert any(e.kind == kind for e in found), f"no {kind} at {path}; got:\n" + "\n".join(map(str, found))


# ------------------------------------------------------------ good input


@pytest.mark.parametrize("doc", list(GOOD.values()), ids=list(GOOD))
def test_good_manifests_have_no_errors(doc):
    assert [str(e) for e in errors_of(doc)] == []


# ------------------------------------------------------------- bad input

C = "spec.containers[0]"
T = "spec.template.spec"
LONG = "x" * 300 * 1024

CASES = [
    # ---- metadata
    ("name not a subdomain", POD, {"metadata.name": "Web_0"}, "metadata.name", INVALID),
    ("name too long", POD, {"metadata.name": "a" * 254}, "metadata.name", INVALID),
    ("no name or generateName", POD, {"metadata.name": DELETE}, "metadata.name", REQUIRED),
    ("generateName prefix invalid", POD, {"metadata.name": DELETE, "metadata.generateName": "Web-"},
     "metadata.generateName", INVALID),
    ("namespace name has dots", NAMESPACE, {"metadata.name": "team.a"}, "metadata.name", INVALID),
    ("namespace of object invalid", POD, {"metadata.namespace": "Team_A"}, "metadata.namespace", INVALID),
    ("namespace on cluster-scoped kind", NODE, {"metadata.namespace": "default"}, "metadata.namespace", FORBIDDEN),
    ("service name starts with digit", SERVICE, {"metadata.name": "1web"}, "metadata.name", INVALID),
    ("service name with dots", SERVICE, {"metadata.name": "web.v1"}, "metadata.name", INVALID),
    ("label key invalid", POD, {"metadata.labels": {"-app": "web"}}, "metadata.labels", INVALID),
    ("label key prefix invalid", POD, {"metadata.labels": {"Example.com/app": "web"}}, "metadata.labels", INVALID),
    ("label value invalid", POD, {"metadata.labels": {"app": "web server"}}, "metadata.labels", INVALID),
    ("label value too long", POD, {"metadata.labels": {"app": "w" * 64}}, "metadata.labels", INVALID),
    ("annotation key invalid", POD, {"metadata.annotations": {"a b": "x"}}, "metadata.annotations", INVALID),
    ("annotations too large", POD, {"metadata.annotations": {"big": LONG}}, "metadata.annotations", TOO_LONG),
    ("owner reference without uid", POD,
     {"metadata.ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web"}]},
     "metadata.ownerReferences[0].uid", REQUIRED),
    ("owner reference without kind", POD,
     {"metadata.ownerReferences": [{"apiVersion": "apps/v1", "name": "web", "uid": "1"}]},
     "metadata.ownerReferences[0].kind", REQUIRED),
    ("two controller owners", POD, {"metadata.ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": True}]},
     "metadata.ownerReferences", INVALID),
    ("finalizer neither standard nor qualified", POD, {"metadata.finalizers": ["cleanup"]},
     "metadata.finalizers[0]", INVALID),
    # ---- pod spec: containers
    ("no containers", POD, {"spec.containers": []}, "spec.containers", REQUIRED),
    ("container name invalid", POD, {f"{C}.name": "Web"}, f"{C}.name", INVALID),
    ("container name missing", POD, {f"{C}.name": DELETE}, f"{C}.name", REQUIRED),
    ("container names repeat", POD, {"spec.containers[1].name": "web"}, "spec.containers[1].name", DUPLICATE),
    ("container name repeats an init container", POD, {"spec.containers[1].name": "init"},
     "spec.containers[1].name", DUPLICATE),
    ("image missing", POD, {f"{C}.image": DELETE}, f"{C}.image", REQUIRED),
    ("image with spaces", POD, {f"{C}.image": " nginx"}, f"{C}.image", INVALID),
    ("pull policy unknown", POD, {f"{C}.imagePullPolicy": "Sometimes"}, f"{C}.imagePullPolicy", UNSUPPORTED),
    ("termination message policy unknown", POD, {f"{C}.terminationMessagePolicy": "Log"},
     f"{C}.terminationMessagePolicy", UNSUPPORTED),
    # ---- ports
    ("containerPort out of range", POD, {f"{C}.ports[0].containerPort": 70000}, f"{C}.ports[0].containerPort",
     INVALID),
    ("containerPort missing", POD, {f"{C}.ports[0].containerPort": DELETE}, f"{C}.ports[0].containerPort",
     REQUIRED),
    ("hostPort out of range", POD, {f"{C}.ports[1].hostPort": 65536}, f"{C}.ports[1].hostPort", INVALID),
    ("port name too long", POD, {f"{C}.ports[0].name": "a-very-long-port-name"}, f"{C}.ports[0].name", INVALID),
    ("port name without letters", POD, {f"{C}.ports[0].name": "8080"}, f"{C}.ports[0].name", INVALID),
    ("port names repeat", POD, {f"{C}.ports[1].name": "http"}, f"{C}.ports[1].name", DUPLICATE),
    ("protocol unknown", POD, {f"{C}.ports[0].protocol": "HTTP"}, f"{C}.ports[0].protocol", UNSUPPORTED),
    ("hostIP not an IP", POD, {f"{C}.ports[1].hostIP": "localhost"}, f"{C}.ports[1].hostIP", INVALID),
    ("host ports collide", POD, {"spec.containers[1].ports": [{"containerPort": 1, "hostPort": 19090}]},
     "spec.containers[1].ports[0].hostPort", DUPLICATE),
    ("hostNetwork with a different hostPort", POD, {"spec.hostNetwork": True},
     f"{C}.ports[1].containerPort", INVALID),
    # ---- env
    ("env name invalid", POD, {f"{C}.env[0].name": "1MODE"}, f"{C}.env[0].name", INVALID),
    ("env name missing", POD, {f"{C}.env[0].name": ""}, f"{C}.env[0].name", REQUIRED),
    ("env value and valueFrom", POD, {f"{C}.env[1].value": "x"}, f"{C}.env[1].valueFrom", INVALID),
    ("env valueFrom with no source", POD, {f"{C}.env[1].valueFrom": {}}, f"{C}.env[1].valueFrom", INVALID),
    ("env valueFrom with two sources", POD,
     {f"{C}.env[1].valueFrom.secretKeyRef": {"name": "s", "key": "k"}}, f"{C}.env[1].valueFrom", INVALID),
    ("configMapKeyRef without name", POD, {f"{C}.env[4].valueFrom.configMapKeyRef.name": DELETE},
     f"{C}.env[4].valueFrom.configMapKeyRef.name", REQUIRED),
    ("configMapKeyRef key invalid", POD, {f"{C}.env[4].valueFrom.configMapKeyRef.key": "log level"},
     f"{C}.env[4].valueFrom.configMapKeyRef.key", INVALID),
    ("secretKeyRef without key", POD, {f"{C}.env[5].valueFrom.secretKeyRef.key": DELETE},
     f"{C}.env[5].valueFrom.secretKeyRef.key", REQUIRED),
    ("fieldRef path unsupported", POD, {f"{C}.env[1].valueFrom.fieldRef.fieldPath": "spec.containers"},
     f"{C}.env[1].valueFrom.fieldRef.fieldPath", UNSUPPORTED),
    ("fieldRef label key invalid", POD, {f"{C}.env[2].valueFrom.fieldRef.fieldPath": "metadata.labels['-x']"},
     f"{C}.env[2].valueFrom.fieldRef.fieldPath", INVALID),
    ("fieldRef subscript on other field", POD, {f"{C}.env[2].valueFrom.fieldRef.fieldPath": "spec.nodeName['x']"},
     f"{C}.env[2].valueFrom.fieldRef.fieldPath", INVALID),
    ("fieldRef apiVersion unknown", POD, {f"{C}.env[1].valueFrom.fieldRef.apiVersion": "v2"},
     f"{C}.env[1].valueFrom.fieldRef.apiVersion", UNSUPPORTED),
    ("resourceFieldRef resource unknown", POD, {f"{C}.env[3].valueFrom.resourceFieldRef.resource": "limits.gpu"},
     f"{C}.env[3].valueFrom.resourceFieldRef.resource", UNSUPPORTED),
    ("resourceFieldRef divisor unsupported", POD, {f"{C}.env[3].valueFrom.resourceFieldRef.divisor": "3Mi"},
     f"{C}.env[3].valueFrom.resourceFieldRef.divisor", INVALID),
    ("envFrom with no source", POD, {f"{C}.envFrom[0].configMapRef": DELETE}, f"{C}.envFrom[0]", INVALID),
    ("envFrom prefix invalid", POD, {f"{C}.envFrom[0].prefix": "1X"}, f"{C}.envFrom[0].prefix", INVALID),
    # ---- resources
    ("quantity not a quantity", POD, {f"{C}.resources.limits.cpu": "lots"}, f"{C}.resources.limits[cpu]", INVALID),
    ("quantity bad suffix", POD, {f"{C}.resources.limits.memory": "128MB"}, f"{C}.resources.limits[memory]",
     INVALID),
    ("quantity boolean", POD, {f"{C}.resources.limits.cpu": True}, f"{C}.resources.limits[cpu]", INVALID),
    ("request negative", POD, {f"{C}.resources.requests.memory": "-1"}, f"{C}.resources.requests[memory]",
     INVALID),
    ("request above limit", POD, {f"{C}.resources.requests.cpu": 2}, f"{C}.resources.requests[cpu]", INVALID),
    ("resource name unknown", POD, {f"{C}.resources.limits.gpu": 1}, f"{C}.resources.limits[gpu]", INVALID),
    ("resource name not qualified", POD, {f"{C}.resources.requests": {"a/b/c": 1}},
     f"{C}.resources.requests[a/b/c]", INVALID),
    ("extended resource fraction", POD, {f"{C}.resources.limits": {"example.com/gpu": 0.5}},
     f"{C}.resources.limits[example.com/gpu]", INVALID),
    ("extended resource request without limit", POD,
     {f"{C}.resources": {"requests": {"example.com/gpu": 1}}}, f"{C}.resources.limits[example.com/gpu]",
     REQUIRED),
    # ---- volumes and mounts
    ("volume name invalid", POD, {"spec.volumes[0].name": "Work"}, "spec.volumes[0].name", INVALID),
    ("volume names repeat", POD, {"spec.volumes[2].name": "work"}, "spec.volumes[2].name", DUPLICATE),
    ("volume with two sources", POD, {"spec.volumes[0].hostPath": {"path": "/tmp"}}, "spec.volumes[0].hostPath",
     FORBIDDEN),
    ("emptyDir medium unknown", POD, {"spec.volumes[0].emptyDir.medium": "HugePages"},
     "spec.volumes[0].emptyDir.medium", UNSUPPORTED),
    ("emptyDir sizeLimit invalid", POD, {"spec.volumes[0].emptyDir.sizeLimit": "big"},
     "spec.volumes[0].emptyDir.sizeLimit", INVALID),
    ("hostPath relative", POD, {"spec.volumes[3].hostPath.path": "var/log"}, "spec.volumes[3].hostPath.path",
     INVALID),
    ("hostPath type unknown", POD, {"spec.volumes[3].hostPath.type": "Folder"}, "spec.volumes[3].hostPath.type",
     UNSUPPORTED),
    ("configMap volume without name", POD, {"spec.volumes[1].configMap.name": DELETE},
     "spec.volumes[1].configMap.name", REQUIRED),
    ("configMap defaultMode too large", POD, {"spec.volumes[1].configMap.defaultMode": 0o1000},
     "spec.volumes[1].configMap.defaultMode", INVALID),
    ("configMap item path escapes", POD, {"spec.volumes[1].configMap.items[0].path": "../etc/passwd"},
     "spec.volumes[1].configMap.items[0].path", INVALID),
    ("secret volume without secretName", POD, {"spec.volumes[2].secret.secretName": DELETE},
     "spec.volumes[2].secret.secretName", REQUIRED),
    ("mount of unknown volume", POD, {f"{C}.volumeMounts[0].name": "data"}, f"{C}.volumeMounts[0].name",
     NOT_FOUND),
    ("mount path relative", POD, {f"{C}.volumeMounts[0].mountPath": "work"}, f"{C}.volumeMounts[0].mountPath",
     INVALID),
    ("mount path missing", POD, {f"{C}.volumeMounts[0].mountPath": DELETE}, f"{C}.volumeMounts[0].mountPath",
     REQUIRED),
    ("mount paths repeat", POD, {f"{C}.volumeMounts[1].mountPath": "/work"}, f"{C}.volumeMounts[1].mountPath",
     INVALID),
    ("subPath absolute", POD, {f"{C}.volumeMounts[2].subPath": "/token"}, f"{C}.volumeMounts[2].subPath", INVALID),
    # ---- probes and hooks
    ("probe without handler", POD, {f"{C}.livenessProbe.httpGet": DELETE}, f"{C}.livenessProbe", REQUIRED),
    ("probe with two handlers", POD, {f"{C}.livenessProbe.tcpSocket": {"port": 8080}},
     f"{C}.livenessProbe.tcpSocket", FORBIDDEN),
    ("probe port out of range", POD, {f"{C}.livenessProbe.httpGet.port": 0}, f"{C}.livenessProbe.httpGet.port",
     INVALID),
    ("probe port name invalid", POD, {f"{C}.readinessProbe.tcpSocket.port": "Metrics_"},
     f"{C}.readinessProbe.tcpSocket.port", INVALID),
    ("probe port not whole", POD, {f"{C}.readinessProbe.tcpSocket.port": 80.5},
     f"{C}.readinessProbe.tcpSocket.port", INVALID),
    ("probe port missing", POD, {f"{C}.readinessProbe.tcpSocket": {}}, f"{C}.readinessProbe.tcpSocket.port",
     REQUIRED),
    ("probe scheme unknown", POD, {f"{C}.livenessProbe.httpGet.scheme": "FTP"},
     f"{C}.livenessProbe.httpGet.scheme", UNSUPPORTED),
    ("probe header name invalid", POD, {f"{C}.livenessProbe.httpGet.httpHeaders": [{"name": "X Y", "value": "1"}]},
     f"{C}.livenessProbe.httpGet.httpHeaders[0].name", INVALID),
    ("probe exec without command", POD, {f"{C}.startupProbe.exec.command": []}, f"{C}.startupProbe.exec.command",
     REQUIRED),
    ("probe negative initial delay", POD, {f"{C}.livenessProbe.initialDelaySeconds": -1},
     f"{C}.livenessProbe.initialDelaySeconds", INVALID),
    ("probe negative failure threshold", POD, {f"{C}.livenessProbe.failureThreshold": -1},
     f"{C}.livenessProbe.failureThreshold", INVALID),
    ("probe negative period", POD, {f"{C}.readinessProbe.periodSeconds": -5}, f"{C}.readinessProbe.periodSeconds",
     INVALID),
    ("liveness success threshold not 1", POD, {f"{C}.livenessProbe.successThreshold": 2},
     f"{C}.livenessProbe.successThreshold", INVALID),
    ("startup success threshold not 1", POD, {f"{C}.startupProbe.successThreshold": 3},
     f"{C}.startupProbe.successThreshold", INVALID),
    ("readiness probe grace period", POD, {f"{C}.readinessProbe.terminationGracePeriodSeconds": 5},
     f"{C}.readinessProbe.terminationGracePeriodSeconds", INVALID),
    ("liveness probe grace period zero", POD, {f"{C}.livenessProbe.terminationGracePeriodSeconds": 0},
     f"{C}.livenessProbe.terminationGracePeriodSeconds", INVALID),
    ("init container with probe", POD, {"spec.initContainers[0].readinessProbe": {"exec": {"command": ["true"]}}},
     "spec.initContainers[0].readinessProbe", FORBIDDEN),
    ("lifecycle hook without handler", POD, {f"{C}.lifecycle.preStop": {}}, f"{C}.lifecycle.preStop", REQUIRED),
    # ---- pod-level fields
    ("restartPolicy unknown", POD, {"spec.restartPolicy": "Sometimes"}, "spec.restartPolicy", UNSUPPORTED),
    ("dnsPolicy unknown", POD, {"spec.dnsPolicy": "Google"}, "spec.dnsPolicy", UNSUPPORTED),
    ("dnsPolicy None without dnsConfig", POD, {"spec.dnsPolicy": "None"}, "spec.dnsConfig", REQUIRED),
    ("grace period negative", POD, {"spec.terminationGracePeriodSeconds": -1}, "spec.terminationGracePeriodSeconds",
     INVALID),
    ("active deadline zero", POD, {"spec.activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds", INVALID),
    ("service account name invalid", POD, {"spec.serviceAccountName": "Default"}, "spec.serviceAccountName",
     INVALID),
    ("nodeName invalid", POD, {"spec.nodeName": "Node_1"}, "spec.nodeName", INVALID),
    ("hostname invalid", POD, {"spec.hostname": "web.0"}, "spec.hostname", INVALID),
    ("pod runAsUser negative", POD, {"spec.securityContext.runAsUser": -1}, "spec.securityContext.runAsUser",
     INVALID),
    ("privileged without escalation", POD, {f"{C}.securityContext.privileged": True}, f"{C}.securityContext",
     INVALID),
    ("nodeSelector key invalid", POD, {"spec.nodeSelector": {"-zone": "a"}}, "spec.nodeSelector", INVALID),
    ("nodeSelector value invalid", POD, {"spec.nodeSelector": {"zone": "a b"}}, "spec.nodeSelector", INVALID),
    # ---- tolerations
    ("toleration operator unknown", POD, {"spec.tolerations[1].operator": "Matches"}, "spec.tolerations[1].operator",
     UNSUPPORTED),
    ("toleration Exists with value", POD, {"spec.tolerations[0].value": "x"}, "spec.tolerations[0].operator",
     INVALID),
    ("toleration without key must be Exists", POD, {"spec.tolerations[1].key": DELETE},
     "spec.tolerations[1].operator", INVALID),
    ("toleration effect unknown", POD, {"spec.tolerations[1].effect": "NoRun"}, "spec.tolerations[1].effect",
     UNSUPPORTED),
    ("tolerationSeconds without NoExecute", POD, {"spec.tolerations[1].tolerationSeconds": 10},
     "spec.tolerations[1].effect", INVALID),
    ("toleration key invalid", POD, {"spec.tolerations[1].key": "a b"}, "spec.tolerations[1].key", INVALID),
    # ---- node affinity
    ("affinity operator unknown", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[0].operator": "Like"},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].operator", INVALID),
    ("affinity In without values", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[0].values": []},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].values", REQUIRED),
    ("affinity Gt with two values", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[1].values": ["1", "2"]},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[1].values", REQUIRED),
    ("affinity Gt not an integer", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[1].values": ["two"]},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[1].values[0]", INVALID),
    ("affinity Exists with values", POD,
     {"spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
      ".matchExpressions[0].values": ["ssd"]},
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
     ".matchExpressions[0].values", FORBIDDEN),
    ("affinity without terms", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms": []},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", REQUIRED),
    ("affinity weight out of range", POD,
     {"spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight": 101},
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", INVALID),
    ("affinity field key unknown", POD,
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchFields[0].key", INVALID),
    # ---- Deployment
    ("replicas negative", DEPLOYMENT, {"spec.replicas": -1}, "spec.replicas", INVALID),
    ("minReadySeconds negative", DEPLOYMENT, {"spec.minReadySeconds": -1}, "spec.minReadySeconds", INVALID),
    ("selector missing", DEPLOYMENT, {"spec.selector": DELETE}, "spec.selector", REQUIRED),
    ("selector empty", DEPLOYMENT, {"spec.selector": {}}, "spec.selector", INVALID),
    ("selector label invalid", DEPLOYMENT, {"spec.selector.matchLabels": {"app": "a b"}},
     "spec.selector.matchLabels", INVALID),
    ("selector operator unknown", DEPLOYMENT, {"spec.selector.matchExpressions[0].operator": "Gt"},
     "spec.selector.matchExpressions[0].operator", INVALID),
    ("selector In without values", DEPLOYMENT, {"spec.selector.matchExpressions[0].values": []},
     "spec.selector.matchExpressions[0].values", REQUIRED),
    ("selector key invalid", DEPLOYMENT, {"spec.selector.matchExpressions[0].key": "a b"},
     "spec.selector.matchExpressions[0].key", INVALID),
    ("template labels do not match", DEPLOYMENT, {"spec.template.metadata.labels": {"app": "api"}},
     "spec.template.metadata.labels", INVALID),
    ("template labels hit NotIn", DEPLOYMENT, {"spec.template.metadata.labels": {"app": "web", "tier": "db"}},
     "spec.template.metadata.labels", INVALID),
    ("template missing", DEPLOYMENT, {"spec.template": DELETE}, "spec.template", REQUIRED),
    ("template restartPolicy not Always", DEPLOYMENT, {f"{T}.restartPolicy": "OnFailure"}, f"{T}.restartPolicy",
     UNSUPPORTED),
    ("template activeDeadlineSeconds", DEPLOYMENT, {f"{T}.activeDeadlineSeconds": 10}, f"{T}.activeDeadlineSeconds",
     FORBIDDEN),
    ("template container image missing", DEPLOYMENT, {f"{T}.containers[0].image": DELETE},
     f"{T}.containers[0].image", REQUIRED),
    ("template port out of range", DEPLOYMENT, {f"{T}.containers[0].ports[1].containerPort": 0},
     f"{T}.containers[0].ports[1].containerPort", REQUIRED),
    ("strategy type unknown", DEPLOYMENT, {"spec.strategy.type": "BlueGreen"}, "spec.strategy.type", UNSUPPORTED),
    ("Recreate with rollingUpdate", DEPLOYMENT, {"spec.strategy.type": "Recreate"}, "spec.strategy.rollingUpdate",
     FORBIDDEN),
    ("maxSurge not a percent", DEPLOYMENT, {"spec.strategy.rollingUpdate.maxSurge": "a lot"},
     "spec.strategy.rollingUpdate.maxSurge", INVALID),
    ("maxSurge negative", DEPLOYMENT, {"spec.strategy.rollingUpdate.maxSurge": -1},
     "spec.strategy.rollingUpdate.maxSurge", INVALID),
    ("maxSurge fraction", DEPLOYMENT, {"spec.strategy.rollingUpdate.maxSurge": 1.5},
     "spec.strategy.rollingUpdate.maxSurge", INVALID),
    ("maxUnavailable above 100%", DEPLOYMENT, {"spec.strategy.rollingUpdate.maxUnavailable": "150%"},
     "spec.strategy.rollingUpdate.maxUnavailable", INVALID),
    ("maxUnavailable and maxSurge both 0", DEPLOYMENT,
     {"spec.strategy.rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
     "spec.strategy.rollingUpdate.maxUnavailable", INVALID),
    ("revisionHistoryLimit negative", DEPLOYMENT, {"spec.revisionHistoryLimit": -1}, "spec.revisionHistoryLimit",
     INVALID),
    ("progress deadline not above minReadySeconds", DEPLOYMENT, {"spec.progressDeadlineSeconds": 5},
     "spec.progressDeadlineSeconds", INVALID),
    # ---- ReplicaSet
    ("replicaset replicas negative", REPLICA_SET, {"spec.replicas": -2}, "spec.replicas", INVALID),
    ("replicaset selector empty", REPLICA_SET, {"spec.selector": {"matchLabels": {}}}, "spec.selector", INVALID),
    ("replicaset template labels do not match", REPLICA_SET,
     {"spec.template.metadata.labels": {"app": "web"}}, "spec.template.metadata.labels", INVALID),
    ("replicaset template restartPolicy Never", REPLICA_SET, {f"{T}.restartPolicy": "Never"}, f"{T}.restartPolicy",
     UNSUPPORTED),
    # ---- Service
    ("service without ports", SERVICE, {"spec.ports": []}, "spec.ports", REQUIRED),
    ("service port zero", SERVICE, {"spec.ports[0].port": 0}, "spec.ports[0].port", INVALID),
    ("service port too large", SERVICE, {"spec.ports[1].port": 65536}, "spec.ports[1].port", INVALID),
    ("service port names repeat", SERVICE, {"spec.ports[1].name": "http"}, "spec.ports[1].name", DUPLICATE),
    ("service port name missing", SERVICE, {"spec.ports[1].name": DELETE}, "spec.ports[1].name", REQUIRED),
    ("service port name invalid", SERVICE, {"spec.ports[0].name": "HTTP"}, "spec.ports[0].name", INVALID),
    ("service ports repeat", SERVICE, {"spec.ports[1].port": 80}, "spec.ports[1]", DUPLICATE),
    ("service protocol unknown", SERVICE, {"spec.ports[0].protocol": "ICMP"}, "spec.ports[0].protocol", UNSUPPORTED),
    ("targetPort out of range", SERVICE, {"spec.ports[1].targetPort": 70000}, "spec.ports[1].targetPort", INVALID),
    ("targetPort name invalid", SERVICE, {"spec.ports[0].targetPort": "web_port"}, "spec.ports[0].targetPort",
     INVALID),
    ("nodePort on ClusterIP", SERVICE, {"spec.ports[0].nodePort": 30080}, "spec.ports[0].nodePort", FORBIDDEN),
    ("nodePort out of range", NODE_PORT_SERVICE, {"spec.ports[0].nodePort": 8080}, "spec.ports[0].nodePort",
     INVALID),
    ("nodePorts repeat", NODE_PORT_SERVICE,
     {"spec.ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]},
     "spec.ports[1].nodePort", DUPLICATE),
    ("type LoadBalancer", SERVICE, {"spec.type": "LoadBalancer"}, "spec.type", UNSUPPORTED),
    ("type ExternalName", SERVICE, {"spec.type": "ExternalName"}, "spec.type", UNSUPPORTED),
    ("sessionAffinity unknown", SERVICE, {"spec.sessionAffinity": "Cookie"}, "spec.sessionAffinity", UNSUPPORTED),
    ("affinity timeout too long", NODE_PORT_SERVICE,
     {"spec.sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 100000}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", INVALID),
    ("service selector invalid", SERVICE, {"spec.selector": {"app": "web server"}}, "spec.selector", INVALID),
    ("clusterIP not an IP", SERVICE, {"spec.clusterIP": "10.0.0.300"}, "spec.clusterIP", INVALID),
    ("headless NodePort", NODE_PORT_SERVICE, {"spec.clusterIP": "None"}, "spec.clusterIP", INVALID),
    ("externalIP not an IP", SERVICE, {"spec.externalIPs": ["example.com"]}, "spec.externalIPs[0]", INVALID),
    ("Local traffic policy on ClusterIP", SERVICE, {"spec.externalTrafficPolicy": "Local"},
     "spec.externalTrafficPolicy", INVALID),
    # ---- Node
    ("podCIDR invalid", NODE, {"spec.podCIDR": "10.244.1.0"}, "spec.podCIDR", INVALID),
    ("podCIDRs entry invalid", NODE, {"spec.podCIDRs": ["10.244.1.0/33"]}, "spec.podCIDRs[0]", INVALID),
    ("taint effect unknown", NODE, {"spec.taints[0].effect": "NoRun"}, "spec.taints[0].effect", UNSUPPORTED),
    ("taint effect missing", NODE, {"spec.taints[0].effect": DELETE}, "spec.taints[0].effect", REQUIRED),
    ("taint key invalid", NODE, {"spec.taints[1].key": "a b"}, "spec.taints[1].key", INVALID),
    ("taint value invalid", NODE, {"spec.taints[1].value": "a b"}, "spec.taints[1].value", INVALID),
    ("taints repeat", NODE, {"spec.taints[1]": {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}},
     "spec.taints[1]", INVALID),
    ("capacity not a quantity", NODE, {"status.capacity.cpu": "four"}, "status.capacity[cpu]", INVALID),
    ("allocatable negative", NODE, {"status.allocatable.memory": "-1Gi"}, "status.allocatable[memory]", INVALID),
    ("capacity resource unknown", NODE, {"status.capacity.disks": "2"}, "status.capacity[disks]", INVALID),
    # ---- Namespace
    ("namespace finalizer invalid", NAMESPACE, {"spec.finalizers": ["kubernetes", "a b"]}, "spec.finalizers[1]",
     INVALID),
    # ---- ConfigMap and Secret
    ("configmap key invalid", CONFIG_MAP, {"data": {"log level": "debug"}}, "data[log level]", INVALID),
    ("configmap key dot-dot", CONFIG_MAP, {"data": {"..data": "x"}}, "data[..data]", INVALID),
    ("configmap key too long", CONFIG_MAP, {"data": {"k" * 254: "x"}}, f"data[{'k' * 254}]", INVALID),
    ("configmap key in data and binaryData", CONFIG_MAP, {"binaryData": {"log.level": "eA=="}}, "data[log.level]",
     INVALID),
    ("configmap binary key invalid", CONFIG_MAP, {"binaryData": {"logo png": "eA=="}}, "binaryData[logo png]",
     INVALID),
    ("configmap too large", CONFIG_MAP, {"data": {"a": "x" * (1024 * 1024)}}, "data", TOO_LONG),
    ("secret key invalid", SECRET, {"data": {"api token": "eA=="}}, "data[api token]", INVALID),
    ("secret stringData key invalid", SECRET, {"stringData": {"pass word": "x"}}, "data[pass word]", INVALID),
    ("secret too large", SECRET, {"stringData": {"big": "x" * (1024 * 1024)}}, "data", TOO_LONG),
    ("tls secret without key", TLS_SECRET, {"data": {"tls.crt": "Y2VydA=="}}, "data[tls.key]", REQUIRED),
    ("basic-auth secret without credentials", SECRET, {"type": "kubernetes.io/basic-auth", "stringData": {}},
     "data[username]", REQUIRED),
    # ---- Event
    ("event without involved kind", EVENT, {"involvedObject.kind": DELETE}, "involvedObject.kind", REQUIRED),
    ("event without involved name", EVENT, {"involvedObject.name": DELETE}, "involvedObject.name", REQUIRED),
    ("event in another namespace", EVENT, {"involvedObject.namespace": "kube-system"}, "involvedObject.namespace",
     INVALID),
    ("event without reason", EVENT, {"reason": DELETE}, "reason", REQUIRED),
    ("event reason too long", EVENT, {"reason": "R" * 129}, "reason", INVALID),
    ("event type unknown", EVENT, {"type": "Error"}, "type", UNSUPPORTED),
    # ---- Lease
    ("lease duration zero", LEASE, {"spec.leaseDurationSeconds": 0}, "spec.leaseDurationSeconds", INVALID),
    ("lease transitions negative", LEASE, {"spec.leaseTransitions": -1}, "spec.leaseTransitions", INVALID),
    # ---- Endpoints
    ("endpoint IP invalid", ENDPOINTS, {"subsets[0].addresses[0].ip": "10.244.1"}, "subsets[0].addresses[0].ip",
     INVALID),
    ("endpoint IP loopback", ENDPOINTS, {"subsets[0].notReadyAddresses[0].ip": "127.0.0.1"},
     "subsets[0].notReadyAddresses[0].ip", INVALID),
    ("endpoint nodeName invalid", ENDPOINTS, {"subsets[0].addresses[0].nodeName": "Node_1"},
     "subsets[0].addresses[0].nodeName", INVALID),
    ("endpoint port out of range", ENDPOINTS, {"subsets[0].ports[0].port": 0}, "subsets[0].ports[0].port", INVALID),
    ("endpoint port name missing", ENDPOINTS, {"subsets[0].ports[1].name": DELETE}, "subsets[0].ports[1].name",
     REQUIRED),
    ("endpoint protocol unknown", ENDPOINTS, {"subsets[0].ports[0].protocol": "QUIC"}, "subsets[0].ports[0].protocol",
     UNSUPPORTED),
    ("endpoint subset without addresses", ENDPOINTS,
     {"subsets[0].addresses": DELETE, "subsets[0].notReadyAddresses": DELETE}, "subsets[0]", REQUIRED),
]


@pytest.mark.parametrize("base, edits, path, kind", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_field(base, edits, path, kind):
    assert_error(errors_of(edited(base, edits)), path, kind)


def test_every_problem_is_reported_not_just_the_first():
    doc = edited(DEPLOYMENT, {"metadata.name": "Web", "spec.replicas": -1,
                              f"{T}.containers[0].image": DELETE, f"{T}.containers[1].ports": [{"containerPort": 0}]})
    paths = {e.path for e in errors_of(doc)}
    assert {"metadata.name", "spec.replicas", f"{T}.containers[0].image",
            f"{T}.containers[1].ports[0].containerPort"} <= paths


def test_messages_read_like_kubernetes():
    errs = errors_of(edited(DEPLOYMENT, {"spec.template.metadata.labels": {"app": "api"}}))
    assert "spec.template.metadata.labels: Invalid value: {'app': 'api'}: selector does not match template labels" \
        in [str(e) for e in errs]
    errs = errors_of(edited(POD, {f"{C}.image": DELETE}))
    assert "spec.containers[0].image: Required value" in [str(e) for e in errs]


# ----------------------------------------------------------------- updates


def pod_with(**edits):
    return edited(POD, {k.replace("__", "."): v for k, v in edits.items()})


UPDATES_ALLOWED = [
    ("pod image", POD, {f"{C}.image": "localhost/kubeling/http:2"}),
    ("pod init container image", POD, {"spec.initContainers[0].image": "busybox:2"}),
    ("pod labels", POD, {"metadata.labels": {"app": "web", "canary": "true"}}),
    ("pod toleration added", POD, {"spec.tolerations[2]": {"operator": "Exists"}}),
    ("pod tolerationSeconds changed", POD, {"spec.tolerations[0].tolerationSeconds": 1}),
    ("pod activeDeadlineSeconds set", POD, {"spec.activeDeadlineSeconds": 60}),
    ("pod status phase", POD, {"status": {"phase": "Running", "podIP": "10.244.1.5"}}),
    ("deployment replicas", DEPLOYMENT, {"spec.replicas": 10}),
    ("deployment template image", DEPLOYMENT, {f"{T}.containers[0].image": "localhost/kubeling/http:2"}),
    ("service clusterIP allocated", SERVICE, {"spec.clusterIP": "10.96.0.10"}),
    ("service ports", SERVICE, {"spec.ports[1].port": 9091}),
    ("node podCIDR assigned", edited(NODE, {"spec.podCIDR": DELETE, "spec.podCIDRs": DELETE}),
     {"spec.podCIDR": "10.244.3.0/24"}),
    ("node cordoned", NODE, {"spec.unschedulable": True}),
    ("configmap data", CONFIG_MAP, {"data.KEY_NAME": "y"}),
    ("immutable configmap labels", edited(CONFIG_MAP, {"immutable": True}), {"metadata.labels": {"a": "b"}}),
]


@pytest.mark.parametrize("old, edits", [c[1:] for c in UPDATES_ALLOWED], ids=[c[0] for c in UPDATES_ALLOWED])
def test_allowed_updates_have_no_errors(old, edits):
    assert [str(e) for e in errors_of(edited(old, edits), old)] == []


UPDATES_FORBIDDEN = [
    ("pod ports", POD, {f"{C}.ports[0].containerPort": 8081}, "spec", FORBIDDEN),
    ("pod container added", POD, {"spec.containers[2]": {"name": "x", "image": "busybox"}}, "spec", FORBIDDEN),
    ("pod restartPolicy", POD, {"spec.restartPolicy": "Never"}, "spec", FORBIDDEN),
    ("pod resources", POD, {f"{C}.resources.limits.cpu": 2}, "spec", FORBIDDEN),
    ("pod nodeSelector value", POD, {"spec.nodeSelector": {"kubernetes.io/hostname": "node-2"}}, "spec", FORBIDDEN),
    ("pod nodeName through Update", POD, {"spec.nodeName": "node-2"}, "spec.nodeName", FORBIDDEN),
    ("pod toleration removed", POD, {"spec.tolerations": []}, "spec.tolerations", FORBIDDEN),
    ("pod toleration changed", POD, {"spec.tolerations[1].value": "api"}, "spec.tolerations", FORBIDDEN),
    ("pod activeDeadlineSeconds raised", pod_with(spec__activeDeadlineSeconds=60), {"spec.activeDeadlineSeconds": 120},
     "spec.activeDeadlineSeconds", INVALID),
    ("pod activeDeadlineSeconds removed", pod_with(spec__activeDeadlineSeconds=60),
     {"spec.activeDeadlineSeconds": DELETE}, "spec.activeDeadlineSeconds", INVALID),
    ("pod status phase unknown", POD, {"status": {"phase": "Done"}}, "status.phase", UNSUPPORTED),
    ("pod status podIP invalid", POD, {"status": {"phase": "Running", "podIP": "10.244.1"}}, "status.podIP", INVALID),
    ("deployment selector", DEPLOYMENT,
     {"spec.selector.matchLabels": {"app": "web", "v": "2"}, "spec.template.metadata.labels": {"app": "web", "v": "2"}},
     "spec.selector", INVALID),
    ("replicaset selector", REPLICA_SET, {"spec.selector.matchLabels.pod-template-hash": "x",
                                          "spec.template.metadata.labels.pod-template-hash": "x"},
     "spec.selector", INVALID),
    ("service clusterIP changed", edited(SERVICE, {"spec.clusterIP": "10.96.0.10"}),
     {"spec.clusterIP": "10.96.0.11"}, "spec.clusterIP", INVALID),
    ("service clusterIP cleared", edited(SERVICE, {"spec.clusterIP": "10.96.0.10"}),
     {"spec.clusterIP": DELETE}, "spec.clusterIP", INVALID),
    ("node podCIDR changed", NODE, {"spec.podCIDR": "10.244.9.0/24", "spec.podCIDRs": ["10.244.9.0/24"]},
     "spec.podCIDR", FORBIDDEN),
    ("immutable configmap data", edited(CONFIG_MAP, {"immutable": True}), {"data.KEY_NAME": "y"}, "data", FORBIDDEN),
    ("immutable configmap made mutable", edited(CONFIG_MAP, {"immutable": True}), {"immutable": False}, "immutable",
     FORBIDDEN),
    ("immutable secret data", edited(SECRET, {"immutable": True}), {"stringData": {"password": "new"}}, "data",
     FORBIDDEN),
    ("secret type", SECRET, {"type": "example.com/custom"}, "type", INVALID),
]


@pytest.mark.parametrize("old, edits, path, kind", [c[1:] for c in UPDATES_FORBIDDEN],
                         ids=[c[0] for c in UPDATES_FORBIDDEN])
def test_forbidden_updates_name_the_field(old, edits, path, kind):
    assert_error(errors_of(edited(old, edits), old), path, kind)


def test_pod_update_message_lists_what_may_change():
    errs = errors_of(edited(POD, {"spec.restartPolicy": "Never"}), POD)
    message = next(str(e) for e in errs if e.path == "spec")
    assert validation.POD_UPDATE_FORBIDDEN in message and message.endswith("changed: spec.restartPolicy")
    errs = errors_of(edited(POD, {"spec.nodeSelector": {"kubernetes.io/hostname": "node-2"}}), POD)
    assert next(str(e) for e in errs if e.path == "spec").endswith("changed: spec.nodeSelector")


def test_status_update_validates_only_the_status():
    """UpdateStatus keeps the stored spec; an old spec is not re-judged."""
    kind, old = parse(POD)
    old.spec.containers[0].image = ""  # stored before some rule existed
    new = copy(old)
    new.status.phase = "Running"
    assert validation.validate(kind, new, old) == []
    new.status.phase = "Sleeping"
    assert [e.path for e in validation.validate(kind, new, old)] == ["status.phase"]


def test_validation_does_not_change_the_object():
    kind, obj = parse(DEPLOYMENT)
    before = copy(obj)
    validation.validate(kind, obj, None)
    assert obj == before
