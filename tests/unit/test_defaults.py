"""Kubernetes' defaults, applied by the API server before validation."""

import re

import pytest
import yaml
from google.protobuf import json_format

from kubeling import kinds
from kubeling.objects import copy, to_dict
from services.apiserver import defaults

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: localhost/kubeling/http:1
    ports: [{containerPort: 8080}]
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      volumes:
      - {name: scratch}
      - {name: cfg, configMap: {name: web-config}}
      - {name: creds, secret: {secretName: web-creds}}
      containers:
      - name: web
        image: localhost/kubeling/http:1
        ports: [{containerPort: 8080, name: http}]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        resources:
          limits: {cpu: 0.5, memory: 1024Mi}
        livenessProbe:
          httpGet: {port: http}
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 5
        lifecycle:
          preStop: {httpGet: {port: 8080, path: /quit}}
        volumeMounts:
        - {name: scratch, mountPath: /scratch}
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090}
"""

OTHERS = {
    "replicaset": """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: busybox}]}
""",
    "namespace": "{apiVersion: v1, kind: Namespace, metadata: {name: team-a}}",
    "secret": """
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {user: YWRtaW4=, password: b2xk}
stringData: {password: new}
""",
    "event": """
apiVersion: v1
kind: Event
metadata: {name: web.1}
involvedObject: {kind: Pod, name: web, namespace: default}
reason: Scheduled
""",
    "node": """
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {capacity: {cpu: "4", memory: 8Gi, pods: "110"}}
""",
    "endpoints": """
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.244.1.5}], ports: [{port: 8080}]}]
""",
    "configmap": "{apiVersion: v1, kind: ConfigMap, metadata: {name: cfg}, data: {a: b}}",
    "lease": "{apiVersion: coordination.k8s.io/v1, kind: Lease, metadata: {name: l}, spec: {holderIdentity: x}}",
}


def parse(text: str):
    doc = yaml.safe_load(text)
    kind = kinds.by_kind(doc["kind"])
    obj = json_format.ParseDict(doc, kind.message())
    return kind, obj


def defaulted(text: str) -> dict:
    kind, obj = parse(text)
    defaults.apply(kind, obj)
    return to_dict(obj)


_MISSING = object()


def get(doc, path: str):
    """The value at a JSON path such as `spec.containers[0].ports[0].protocol`."""
    current = doc
    for part in path.split("."):
        m = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", part)
        name, indices = m.group(1), re.findall(r"\[(\d+)\]", m.group(2))
        if not isinstance(current, dict) or name not in current:
            return _MISSING
        current = current[name]
        for i in indices:
            current = current[int(i)]
    return current


# ------------------------------------------------------------------ pods

POD_DEFAULTS = [
    ("restartPolicy", "spec.restartPolicy", "Always"),
    ("dnsPolicy", "spec.dnsPolicy", "ClusterFirst"),
    ("schedulerName", "spec.schedulerName", "default-scheduler"),
    ("terminationGracePeriodSeconds", "spec.terminationGracePeriodSeconds", 30),
    ("securityContext", "spec.securityContext", {}),
    ("enableServiceLinks", "spec.enableServiceLinks", True),
    ("imagePullPolicy", "spec.containers[0].imagePullPolicy", "IfNotPresent"),
    ("terminationMessagePath", "spec.containers[0].terminationMessagePath", "/dev/termination-log"),
    ("terminationMessagePolicy", "spec.containers[0].terminationMessagePolicy", "File"),
    ("port protocol", "spec.containers[0].ports[0].protocol", "TCP"),
    ("phase", "status.phase", "Pending"),
    ("qosClass", "status.qosClass", "BestEffort"),
]


@pytest.mark.parametrize("path, expected", [c[1:] for c in POD_DEFAULTS], ids=[c[0] for c in POD_DEFAULTS])
def test_pod_defaults(path, expected):
    assert get(defaulted(POD), path) == expected


TEMPLATE_DEFAULTS = [
    ("restartPolicy", "spec.template.spec.restartPolicy", "Always"),
    ("terminationGracePeriodSeconds", "spec.template.spec.terminationGracePeriodSeconds", 30),
    ("emptyDir when no source", "spec.template.spec.volumes[0].emptyDir", {}),
    ("configMap defaultMode 0644", "spec.template.spec.volumes[1].configMap.defaultMode", 420),
    ("secret defaultMode 0644", "spec.template.spec.volumes[2].secret.defaultMode", 420),
    ("fieldRef apiVersion", "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.apiVersion", "v1"),
    ("cpu number to milli string", "spec.template.spec.containers[0].resources.limits.cpu", "500m"),
    ("memory canonical", "spec.template.spec.containers[0].resources.limits.memory", "1Gi"),
    ("liveness timeout", "spec.template.spec.containers[0].livenessProbe.timeoutSeconds", 1),
    ("liveness period", "spec.template.spec.containers[0].livenessProbe.periodSeconds", 10),
    ("liveness success", "spec.template.spec.containers[0].livenessProbe.successThreshold", 1),
    ("liveness failure", "spec.template.spec.containers[0].livenessProbe.failureThreshold", 3),
    ("httpGet scheme", "spec.template.spec.containers[0].livenessProbe.httpGet.scheme", "HTTP"),
    ("httpGet path /", "spec.template.spec.containers[0].livenessProbe.httpGet.path", "/"),
    ("named port stays a name", "spec.template.spec.containers[0].livenessProbe.httpGet.port", "http"),
    ("explicit period kept", "spec.template.spec.containers[0].readinessProbe.periodSeconds", 5),
    ("lifecycle httpGet scheme", "spec.template.spec.containers[0].lifecycle.preStop.httpGet.scheme", "HTTP"),
    ("lifecycle httpGet path kept", "spec.template.spec.containers[0].lifecycle.preStop.httpGet.path", "/quit"),
    ("replicas", "spec.replicas", 1),
    ("strategy type", "spec.strategy.type", "RollingUpdate"),
    ("maxSurge", "spec.strategy.rollingUpdate.maxSurge", "25%"),
    ("maxUnavailable", "spec.strategy.rollingUpdate.maxUnavailable", "25%"),
    ("revisionHistoryLimit", "spec.revisionHistoryLimit", 10),
    ("progressDeadlineSeconds", "spec.progressDeadlineSeconds", 600),
    # Only pods get these; a template keeps what the user wrote.
    ("template requests not from limits", "spec.template.spec.containers[0].resources.requests", _MISSING),
    ("template has no enableServiceLinks", "spec.template.spec.enableServiceLinks", _MISSING),
]


@pytest.mark.parametrize("path, expected", [c[1:] for c in TEMPLATE_DEFAULTS],
                         ids=[c[0] for c in TEMPLATE_DEFAULTS])
def test_deployment_and_template_defaults(path, expected):
    assert get(defaulted(DEPLOYMENT), path) == expected


IMAGES = [
    ("no tag", "nginx", "Always"),
    ("latest", "nginx:latest", "Always"),
    ("tag", "nginx:1.25", "IfNotPresent"),
    ("registry port, no tag", "localhost:5000/app", "Always"),
    ("registry port and tag", "localhost:5000/app:2", "IfNotPresent"),
    ("digest only", "app@sha256:" + "a" * 64, "IfNotPresent"),
    ("latest and digest", "app:latest@sha256:" + "a" * 64, "Always"),
]


@pytest.mark.parametrize("image, policy", [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES])
def test_image_pull_policy_follows_the_tag(image, policy):
    doc = defaulted(POD.replace("localhost/kubeling/http:1", image))
    assert get(doc, "spec.containers[0].imagePullPolicy") == policy


def test_an_explicit_pull_policy_is_kept():
    doc = defaulted(POD.replace("ports:", "imagePullPolicy: Never\n    ports:"))
    assert get(doc, "spec.containers[0].imagePullPolicy") == "Never"


QUANTITIES = [
    ("integer", "1", "1"),
    ("half", "0.5", "500m"),
    ("string kept", '"250m"', "250m"),
    ("binary canonical", '"2048Mi"', "2Gi"),
    ("decimal string", '"1.5"', "1500m"),
    ("big number", "1000000000", "1G"),
    ("rounded up to milli", '"0.0001"', "1m"),
    ("invalid left for validation", '"lots"', "lots"),
]


@pytest.mark.parametrize("written, stored", [c[1:] for c in QUANTITIES], ids=[c[0] for c in QUANTITIES])
def test_quantities_are_stored_as_canonical_strings(written, stored):
    doc = defaulted(POD.replace("ports:", f"resources: {{limits: {{cpu: {written}}}}}\n    ports:"))
    assert get(doc, "spec.containers[0].resources.limits.cpu") == stored
    # A pod's requests default to its limits.
    assert get(doc, "spec.containers[0].resources.requests.cpu") == stored


def test_empty_dir_size_limit_is_a_string():
    doc = defaulted(POD + "  volumes: [{name: v, emptyDir: {sizeLimit: 1073741824}}]\n")
    assert get(doc, "spec.volumes[0].emptyDir.sizeLimit") == "1073741824"
    doc = defaulted(POD + "  volumes: [{name: v, emptyDir: {sizeLimit: 0.5}}]\n")
    assert get(doc, "spec.volumes[0].emptyDir.sizeLimit") == "500m"


def test_pod_requests_default_to_limits_but_explicit_requests_win():
    doc = defaulted(POD.replace(
        "ports:", "resources: {limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 100m}}\n    ports:"))
    assert get(doc, "spec.containers[0].resources.requests") == {"cpu": "100m", "memory": "1Gi"}


def _resources(*containers: str) -> str:
    lines = ["apiVersion: v1", "kind: Pod", "metadata: {name: p}", "spec:", "  containers:"]
    for i, res in enumerate(containers):
        lines += [f"  - name: c{i}", "    image: busybox:1", f"    resources: {res}"]
    return "\n".join(lines) + "\n"


QOS = [
    ("nothing", ["{}"], "BestEffort"),
    ("limits only", ["{limits: {cpu: 1, memory: 1Gi}}"], "Guaranteed"),
    ("requests equal limits", ["{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 1, memory: 1Gi}}"], "Guaranteed"),
    ("requests below limits", ["{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m}}"], "Burstable"),
    ("only cpu limited", ["{limits: {cpu: 1}}"], "Burstable"),
    ("requests only", ["{requests: {memory: 64Mi}}"], "Burstable"),
    ("one of two containers unlimited", ["{limits: {cpu: 1, memory: 1Gi}}", "{}"], "Burstable"),
    ("both containers guaranteed", ["{limits: {cpu: 1, memory: 1Gi}}", "{limits: {cpu: 2, memory: 1Mi}}"],
     "Guaranteed"),
    ("zero requests count as unset", ["{requests: {cpu: 0}}"], "BestEffort"),
    ("other resources do not count", ["{limits: {ephemeral-storage: 1Gi}}"], "BestEffort"),
]


@pytest.mark.parametrize("resources, qos", [c[1:] for c in QOS], ids=[c[0] for c in QOS])
def test_qos_class_is_computed_as_kubernetes_does(resources, qos):
    assert get(defaulted(_resources(*resources)), "status.qosClass") == qos


def test_a_pod_with_a_phase_keeps_its_status():
    doc = defaulted(POD + "status: {phase: Running, qosClass: Burstable}\n")
    assert doc["status"] == {"phase": "Running", "qosClass": "Burstable"}


def test_host_network_pods_get_host_ports():
    doc = defaulted(POD.replace("spec:\n", "spec:\n  hostNetwork: true\n", 1))
    assert get(doc, "spec.containers[0].ports[0].hostPort") == 8080


# ------------------------------------------------------------- workloads


def test_recreate_gets_no_rolling_update():
    doc = defaulted(DEPLOYMENT.replace("spec:\n  selector", "spec:\n  strategy: {type: Recreate}\n  selector", 1))
    assert doc["spec"]["strategy"] == {"type": "Recreate"}


def test_explicit_rolling_update_values_are_kept():
    doc = defaulted(DEPLOYMENT.replace(
        "spec:\n  selector", "spec:\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  selector", 1))
    assert doc["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_a_missing_template_is_left_missing():
    doc = defaulted("{apiVersion: apps/v1, kind: ReplicaSet, metadata: {name: x}, spec: {}}")
    assert "template" not in doc["spec"] and doc["spec"]["replicas"] == 1


def test_replica_set_defaults():
    doc = defaulted(OTHERS["replicaset"])
    assert doc["spec"]["replicas"] == 1
    assert get(doc, "spec.template.spec.restartPolicy") == "Always"
    assert get(doc, "spec.template.spec.containers[0].imagePullPolicy") == "Always"


# --------------------------------------------------------------- services

SERVICE_DEFAULTS = [
    ("type", "spec.type", "ClusterIP"),
    ("sessionAffinity", "spec.sessionAffinity", "None"),
    ("protocol", "spec.ports[0].protocol", "TCP"),
    ("named targetPort kept", "spec.ports[0].targetPort", "http"),
    ("targetPort defaults to port", "spec.ports[1].targetPort", 9090),
    ("internalTrafficPolicy", "spec.internalTrafficPolicy", "Cluster"),
    ("no externalTrafficPolicy for ClusterIP", "spec.externalTrafficPolicy", _MISSING),
    ("clusterIP left for allocation", "spec.clusterIP", _MISSING),
]


@pytest.mark.parametrize("path, expected", [c[1:] for c in SERVICE_DEFAULTS], ids=[c[0] for c in SERVICE_DEFAULTS])
def test_service_defaults(path, expected):
    assert get(defaulted(SERVICE), path) == expected


def test_client_ip_affinity_gets_a_timeout():
    doc = defaulted(SERVICE.replace("selector:", "sessionAffinity: ClientIP\n  selector:"))
    assert get(doc, "spec.sessionAffinityConfig.clientIP.timeoutSeconds") == 10800


def test_node_port_service_gets_external_traffic_policy():
    doc = defaulted(SERVICE.replace("selector:", "type: NodePort\n  selector:"))
    assert get(doc, "spec.externalTrafficPolicy") == "Cluster"


def test_endpoint_ports_default_to_tcp():
    assert get(defaulted(OTHERS["endpoints"]), "subsets[0].ports[0].protocol") == "TCP"


# ---------------------------------------------------------- other kinds


def test_namespace_defaults():
    doc = defaulted(OTHERS["namespace"])
    assert doc["spec"] == {"finalizers": ["kubernetes"]}
    assert doc["status"] == {"phase": "Active"}
    assert doc["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}


def test_a_terminating_namespace_may_drop_its_finalizer():
    kind, ns = parse(OTHERS["namespace"])
    ns.metadata.deletion_timestamp.GetCurrentTime()
    ns.status.phase = "Terminating"
    defaults.apply(kind, ns)
    assert list(ns.spec.finalizers) == [] and ns.status.phase == "Terminating"


def test_secret_string_data_is_merged_into_data_and_cleared():
    kind, secret = parse(OTHERS["secret"])
    defaults.apply(kind, secret)
    assert secret.type == "Opaque"
    assert dict(secret.data) == {"user": b"admin", "password": b"new"}
    assert not secret.string_data


def test_event_defaults():
    kind, event = parse(OTHERS["event"])
    defaults.apply(kind, event)
    assert (event.count, event.type) == (1, "Normal")


def test_node_allocatable_defaults_to_capacity():
    doc = defaulted(OTHERS["node"])
    assert doc["status"]["allocatable"] == doc["status"]["capacity"]


# ------------------------------------------------------------ idempotence

ALL = {"pod": POD, "deployment": DEPLOYMENT, "service": SERVICE, **OTHERS,
       "pod with resources": _resources("{limits: {cpu: 0.25, memory: 1000000}}", "{requests: {cpu: 1.5}}")}


@pytest.mark.parametrize("text", list(ALL.values()), ids=list(ALL))
def test_defaults_are_idempotent(text):
    kind, obj = parse(text)
    defaults.apply(kind, obj)
    once = copy(obj)
    defaults.apply(kind, obj)
    assert obj == once
