"""Ordinary Kubernetes manifests parse into our messages unchanged, and back.

Every manifest below is written the way users (or kubectl) write it. Each is
read with `yaml.safe_load` and `json_format.ParseDict(doc, Message())` with no
preprocessing, then the values are checked in their snake_case fields. The
last tests guard the contract itself: Kubernetes' JSON names for acronym
fields, sequential field numbers, and a comment on every message and field.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from kubeling.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2

PROTO_DIR = Path(__file__).resolve().parents[2] / "protos" / "kubeling" / "api" / "v1"
OUR_PROTOS = ("meta.proto", "core.proto", "apps.proto", "coordination.proto")


def parse(text: str, message_type):
    """yaml.safe_load + ParseDict, exactly as a client would do it."""
    return json_format.ParseDict(yaml.safe_load(text), message_type())


def roundtrip(msg):
    """MessageToDict and back; the message must survive unchanged."""
    out = json_format.MessageToDict(msg)
    again = json_format.ParseDict(out, type(msg)())
    assert again == msg
    return out


def which(value) -> str | None:
    """The kind of a google.protobuf.Value: number_value, string_value, ..."""
    return value.WhichOneof("kind")


# --------------------------------------------------------------- Deployment

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
  annotations:
    kubernetes.io/change-cause: first rollout
spec:
  replicas: 3
  revisionHistoryLimit: 5
  progressDeadlineSeconds: 120
  minReadySeconds: 2
  selector:
    matchLabels:
      app: web
    matchExpressions:
    - {key: tier, operator: In, values: [frontend]}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: web
        tier: frontend
    spec:
      terminationGracePeriodSeconds: 10
      nodeSelector:
        kubernetes.io/os: linux
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: disktype
                operator: In
                values: [ssd]
              matchFields:
              - key: metadata.name
                operator: NotIn
                values: [node-3]
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 50
            preference:
              matchExpressions:
              - {key: zone, operator: In, values: [a]}
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 30
      - key: dedicated
        operator: Equal
        value: web
        effect: NoSchedule
      securityContext:
        runAsUser: 1000
        runAsGroup: 3000
        fsGroup: 2000
        runAsNonRoot: true
        supplementalGroups: [4000]
      initContainers:
      - name: init
        image: localhost/kubeling/shell:1
        command: [sh, -c, echo init]
      containers:
      - name: web
        image: localhost/kubeling/http:1
        imagePullPolicy: IfNotPresent
        ports:
        - name: http
          containerPort: 8080
          protocol: TCP
        - name: debug
          containerPort: 9090
          hostPort: 19090
          hostIP: 127.0.0.1
        env:
        - name: MODE
          value: production
        - name: LOG_LEVEL
          valueFrom:
            configMapKeyRef:
              name: web-config
              key: log_level
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef:
              name: web-secret
              key: password
              optional: false
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: MEM_LIMIT
          valueFrom:
            resourceFieldRef:
              containerName: web
              resource: limits.memory
              divisor: 1Mi
        envFrom:
        - configMapRef:
            name: web-config
        - prefix: SECRET_
          secretRef:
            name: web-secret
            optional: true
        resources:
          requests:
            cpu: 500m
            memory: 128Mi
          limits:
            cpu: 1
            memory: 256Mi
        livenessProbe:
          httpGet:
            path: /healthz
            port: 8080
            httpHeaders:
            - name: X-Probe
              value: liveness
          initialDelaySeconds: 3
          periodSeconds: 5
        readinessProbe:
          httpGet:
            path: /
            port: http
          failureThreshold: 2
        startupProbe:
          tcpSocket:
            port: http
          failureThreshold: 30
          periodSeconds: 1
        lifecycle:
          preStop:
            exec:
              command: [sh, -c, sleep 2]
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
            add: [NET_BIND_SERVICE]
        volumeMounts:
        - {name: cache, mountPath: /cache}
        - {name: host-logs, mountPath: /var/log/host, readOnly: true}
        - {name: config, mountPath: /etc/web}
        - {name: certs, mountPath: /etc/certs, subPath: tls}
      volumes:
      - name: cache
        emptyDir:
          medium: Memory
          sizeLimit: 64Mi
      - name: scratch
        emptyDir: {}
      - name: host-logs
        hostPath:
          path: /var/log
          type: Directory
      - name: config
        configMap:
          name: web-config
          defaultMode: 0644
          items:
          - key: app.conf
            path: app.conf
            mode: 0400
      - name: certs
        secret:
          secretName: web-tls
          optional: true
"""


def test_deployment_metadata_and_spec():
    d = parse(DEPLOYMENT, apps_pb2.Deployment)
    assert (d.api_version, d.kind) == ("apps/v1", "Deployment")
    assert d.metadata.name == "web" and d.metadata.namespace == "shop"
    assert d.metadata.annotations["kubernetes.io/change-cause"] == "first rollout"
    s = d.spec
    assert s.HasField("replicas") and s.replicas == 3
    assert s.revision_history_limit == 5 and s.progress_deadline_seconds == 120
    assert s.min_ready_seconds == 2
    assert dict(s.selector.match_labels) == {"app": "web"}
    expr = s.selector.match_expressions[0]
    assert (expr.key, expr.operator, list(expr.values)) == ("tier", "In", ["frontend"])


def test_deployment_strategy_int_or_string():
    ru = parse(DEPLOYMENT, apps_pb2.Deployment).spec.strategy.rolling_update
    assert which(ru.max_surge) == "string_value" and ru.max_surge.string_value == "25%"
    # maxUnavailable: 0 is set (not absent) and is a number.
    assert ru.HasField("max_unavailable")
    assert which(ru.max_unavailable) == "number_value" and ru.max_unavailable.number_value == 0


def test_unset_optional_fields_are_distinguishable_from_zero():
    d2 = parse("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: img}]
""", apps_pb2.Deployment)
    assert d2.spec.HasField("replicas") and d2.spec.replicas == 0
    assert not d2.spec.HasField("revision_history_limit")
    assert not d2.spec.HasField("progress_deadline_seconds")
    assert not d2.spec.template.spec.HasField("termination_grace_period_seconds")
    assert json_format.MessageToDict(d2)["spec"]["replicas"] == 0


def test_deployment_pod_template_scheduling():
    t = parse(DEPLOYMENT, apps_pb2.Deployment).spec.template
    assert dict(t.metadata.labels) == {"app": "web", "tier": "frontend"}
    ps = t.spec
    assert ps.termination_grace_period_seconds == 10
    assert dict(ps.node_selector) == {"kubernetes.io/os": "linux"}
    na = ps.affinity.node_affinity
    term = na.required_during_scheduling_ignored_during_execution.node_selector_terms[0]
    assert term.match_expressions[0].key == "disktype"
    assert list(term.match_expressions[0].values) == ["ssd"]
    assert term.match_fields[0].key == "metadata.name"
    assert term.match_fields[0].operator == "NotIn"
    pref = na.preferred_during_scheduling_ignored_during_execution[0]
    assert pref.weight == 50 and pref.preference.match_expressions[0].key == "zone"
    t0, t1 = ps.tolerations
    assert (t0.key, t0.operator, t0.effect) == ("node.kubernetes.io/unreachable", "Exists", "NoExecute")
    assert t0.HasField("toleration_seconds") and t0.toleration_seconds == 30
    assert (t1.value, t1.effect) == ("web", "NoSchedule") and not t1.HasField("toleration_seconds")
    sc = ps.security_context
    assert (sc.run_as_user, sc.run_as_group, sc.fs_group) == (1000, 3000, 2000)
    assert sc.run_as_non_root is True and list(sc.supplemental_groups) == [4000]


def test_deployment_container_env_and_env_from():
    spec = parse(DEPLOYMENT, apps_pb2.Deployment).spec.template.spec
    assert spec.init_containers[0].command == ["sh", "-c", "echo init"]
    c = spec.containers[0]
    assert c.image_pull_policy == "IfNotPresent"
    assert c.ports[0].container_port == 8080 and c.ports[0].name == "http"
    assert c.ports[1].host_port == 19090 and c.ports[1].host_ip == "127.0.0.1"
    env = {e.name: e for e in c.env}
    assert env["MODE"].value == "production"
    cm = env["LOG_LEVEL"].value_from.config_map_key_ref
    assert (cm.name, cm.key) == ("web-config", "log_level") and not cm.HasField("optional")
    sk = env["DB_PASSWORD"].value_from.secret_key_ref
    assert (sk.name, sk.key) == ("web-secret", "password")
    assert sk.HasField("optional") and sk.optional is False
    assert env["POD_IP"].value_from.field_ref.field_path == "status.podIP"
    rf = env["MEM_LIMIT"].value_from.resource_field_ref
    assert (rf.container_name, rf.resource) == ("web", "limits.memory")
    assert rf.divisor.string_value == "1Mi"
    ef0, ef1 = c.env_from
    assert ef0.config_map_ref.name == "web-config" and not ef0.HasField("secret_ref")
    assert ef1.prefix == "SECRET_" and ef1.secret_ref.name == "web-secret" and ef1.secret_ref.optional


def test_deployment_container_resources_quantities():
    c = parse(DEPLOYMENT, apps_pb2.Deployment).spec.template.spec.containers[0]
    req, lim = c.resources.requests, c.resources.limits
    assert req["cpu"].string_value == "500m"
    assert req["memory"].string_value == "128Mi"
    # `cpu: 1` is a YAML integer; it is kept as a number until the API server normalises it.
    assert which(lim["cpu"]) == "number_value" and lim["cpu"].number_value == 1
    assert lim["memory"].string_value == "256Mi"


def test_deployment_container_probes_lifecycle_security():
    c = parse(DEPLOYMENT, apps_pb2.Deployment).spec.template.spec.containers[0]
    lp = c.liveness_probe
    assert lp.http_get.path == "/healthz"
    assert which(lp.http_get.port) == "number_value" and lp.http_get.port.number_value == 8080
    assert (lp.http_get.http_headers[0].name, lp.http_get.http_headers[0].value) == ("X-Probe", "liveness")
    assert (lp.initial_delay_seconds, lp.period_seconds) == (3, 5)
    assert not lp.HasField("tcp_socket") and not lp.HasField("exec")
    rp = c.readiness_probe
    assert which(rp.http_get.port) == "string_value" and rp.http_get.port.string_value == "http"
    assert rp.failure_threshold == 2
    sp = c.startup_probe
    assert sp.tcp_socket.port.string_value == "http" and sp.failure_threshold == 30
    assert list(c.lifecycle.pre_stop.exec.command) == ["sh", "-c", "sleep 2"]
    assert not c.lifecycle.HasField("post_start")
    sc = c.security_context
    assert sc.HasField("allow_privilege_escalation") and sc.allow_privilege_escalation is False
    assert sc.read_only_root_filesystem is True
    assert not sc.HasField("privileged") and not sc.HasField("run_as_user")
    assert list(sc.capabilities.drop) == ["ALL"] and list(sc.capabilities.add) == ["NET_BIND_SERVICE"]


def test_deployment_volumes_of_every_kind():
    spec = parse(DEPLOYMENT, apps_pb2.Deployment).spec.template.spec
    vols = {v.name: v for v in spec.volumes}
    assert vols["cache"].empty_dir.medium == "Memory"
    assert vols["cache"].empty_dir.size_limit.string_value == "64Mi"
    # `emptyDir: {}` still selects the emptyDir source.
    assert vols["scratch"].HasField("empty_dir") and not vols["scratch"].HasField("host_path")
    assert (vols["host-logs"].host_path.path, vols["host-logs"].host_path.type) == ("/var/log", "Directory")
    cm = vols["config"].config_map
    assert cm.name == "web-config" and cm.default_mode == 0o644  # YAML 0644 is octal
    assert (cm.items[0].key, cm.items[0].path, cm.items[0].mode) == ("app.conf", "app.conf", 0o400)
    assert not cm.HasField("optional")
    sec = vols["certs"].secret
    assert sec.secret_name == "web-tls" and sec.optional is True and not sec.HasField("default_mode")
    mounts = {m.name: m for m in spec.containers[0].volume_mounts}
    assert mounts["host-logs"].read_only and mounts["host-logs"].mount_path == "/var/log/host"
    assert mounts["certs"].sub_path == "tls"


def test_deployment_round_trip():
    d = parse(DEPLOYMENT, apps_pb2.Deployment)
    out = roundtrip(d)
    ru = out["spec"]["strategy"]["rollingUpdate"]
    assert ru["maxSurge"] == "25%" and ru["maxUnavailable"] == 0
    c = out["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"] == "500m"
    assert c["livenessProbe"]["httpGet"]["port"] == 8080
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["ports"][1]["hostIP"] == "127.0.0.1"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in (
        out["spec"]["template"]["spec"]["affinity"]["nodeAffinity"])


KUBECTL_DRY_RUN = """
apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels:
    app: web
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - image: localhost/kubeling/http:1
        name: http
        resources: {}
status: {}
"""


def test_kubectl_create_dry_run_output_parses():
    d = parse(KUBECTL_DRY_RUN, apps_pb2.Deployment)
    assert not d.metadata.HasField("creation_timestamp")
    assert d.spec.template.spec.containers[0].name == "http"
    assert d.spec.template.spec.containers[0].HasField("resources")


# -------------------------------------------------------------------- Service

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector:
    app: web
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  externalIPs: [192.0.2.10]
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  publishNotReadyAddresses: true
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 8080
    nodePort: 30080
  - name: alt
    port: 8081
    targetPort: http
status:
  loadBalancer:
    ingress:
    - ip: 192.0.2.1
      hostname: lb.example.com
"""


def test_service():
    svc = parse(SERVICE, core_pb2.Service)
    s = svc.spec
    assert s.type == "NodePort" and dict(s.selector) == {"app": "web"}
    assert s.cluster_ip == "10.96.0.20" and list(s.cluster_ips) == ["10.96.0.20"]
    assert list(s.external_ips) == ["192.0.2.10"]
    assert s.session_affinity == "ClientIP"
    assert s.session_affinity_config.client_ip.timeout_seconds == 600
    assert (s.external_traffic_policy, s.internal_traffic_policy) == ("Local", "Cluster")
    assert s.publish_not_ready_addresses is True
    http, alt = s.ports
    assert (http.name, http.protocol, http.port, http.node_port) == ("http", "TCP", 80, 30080)
    assert which(http.target_port) == "number_value" and http.target_port.number_value == 8080
    assert which(alt.target_port) == "string_value" and alt.target_port.string_value == "http"
    assert svc.status.load_balancer.ingress[0].ip == "192.0.2.1"
    assert svc.status.load_balancer.ingress[0].hostname == "lb.example.com"


def test_service_round_trip_keeps_kubernetes_names():
    out = roundtrip(parse(SERVICE, core_pb2.Service))
    spec = out["spec"]
    for key in ("clusterIP", "clusterIPs", "externalIPs", "sessionAffinityConfig"):
        assert key in spec, key
    assert "clientIP" in spec["sessionAffinityConfig"]
    assert spec["ports"][0]["targetPort"] == 8080
    assert spec["ports"][1]["targetPort"] == "http"
    assert "clusterIp" not in spec and "externalIps" not in spec


# ------------------------------------------------------------------------ Pod

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web-7d4b9c-x2k8p
  generateName: web-7d4b9c-
  namespace: shop
  uid: 6f1c2f4e-3b7a-4d1e-9c53-0d2f3c1a9b10
  resourceVersion: "12345"
  generation: 1
  creationTimestamp: "2024-05-01T12:00:00Z"
  deletionTimestamp: "2024-05-01T13:00:00Z"
  deletionGracePeriodSeconds: 30
  labels:
    app: web
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: web-7d4b9c
    uid: 0a6d3f3e-1111-2222-3333-444455556666
    controller: true
    blockOwnerDeletion: true
  finalizers:
  - example.com/cleanup
spec:
  nodeName: node-1
  hostNetwork: false
  hostPID: true
  hostIPC: true
  restartPolicy: Always
  dnsPolicy: ClusterFirst
  serviceAccountName: default
  schedulerName: default-scheduler
  priorityClassName: ""
  priority: 0
  enableServiceLinks: false
  shareProcessNamespace: true
  activeDeadlineSeconds: 3600
  hostname: web-0
  subdomain: web
  containers:
  - name: web
    image: localhost/kubeling/http:1
    workingDir: /srv
    args: [--port, "8080"]
    stdin: true
    tty: true
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    livenessProbe:
      exec:
        command: [cat, /tmp/healthy]
      timeoutSeconds: 2
      successThreshold: 1
      terminationGracePeriodSeconds: 5
    securityContext:
      privileged: false
      runAsUser: 0
    lifecycle:
      postStart:
        httpGet: {path: /warm, port: 8080, host: 127.0.0.1, scheme: HTTP}
      preStop:
        tcpSocket: {port: 8080}
status:
  phase: Running
  hostIP: 192.168.1.10
  hostIPs:
  - ip: 192.168.1.10
  podIP: 10.244.1.5
  podIPs:
  - ip: 10.244.1.5
  qosClass: BestEffort
  startTime: "2024-05-01T12:00:01Z"
  conditions:
  - type: Ready
    status: "True"
    lastProbeTime: null
    lastTransitionTime: "2024-05-01T12:00:05Z"
  initContainerStatuses:
  - name: init
    ready: true
    restartCount: 0
    image: localhost/kubeling/shell:1
    imageID: sha256:1111
    containerID: kubeling://init0
    state:
      terminated:
        exitCode: 0
        reason: Completed
        startedAt: "2024-05-01T12:00:02Z"
        finishedAt: "2024-05-01T12:00:03Z"
        containerID: kubeling://init0
  containerStatuses:
  - name: web
    ready: true
    started: true
    restartCount: 2
    image: localhost/kubeling/http:1
    imageID: sha256:2222
    containerID: kubeling://web2
    state:
      running:
        startedAt: "2024-05-01T12:00:04Z"
    lastState:
      terminated:
        exitCode: 137
        signal: 9
        reason: OOMKilled
        message: out of memory
        startedAt: "2024-05-01T12:00:03Z"
        finishedAt: "2024-05-01T12:00:04Z"
        containerID: kubeling://web1
"""


def test_pod_metadata():
    m = parse(POD, core_pb2.Pod).metadata
    assert m.generate_name == "web-7d4b9c-" and m.uid.startswith("6f1c2f4e")
    assert m.resource_version == "12345" and m.generation == 1
    assert m.creation_timestamp.ToJsonString() == "2024-05-01T12:00:00Z"
    assert m.deletion_timestamp.seconds - m.creation_timestamp.seconds == 3600
    assert m.deletion_grace_period_seconds == 30
    ref = m.owner_references[0]
    assert (ref.api_version, ref.kind, ref.name) == ("apps/v1", "ReplicaSet", "web-7d4b9c")
    assert ref.controller is True and ref.block_owner_deletion is True
    assert list(m.finalizers) == ["example.com/cleanup"]


def test_pod_spec():
    s = parse(POD, core_pb2.Pod).spec
    assert s.node_name == "node-1" and s.host_network is False
    assert s.host_pid is True and s.host_ipc is True
    assert (s.restart_policy, s.dns_policy) == ("Always", "ClusterFirst")
    assert (s.service_account_name, s.scheduler_name) == ("default", "default-scheduler")
    # Explicit zero / false values of optional fields are present, not defaulted.
    assert s.HasField("priority") and s.priority == 0
    assert s.HasField("enable_service_links") and s.enable_service_links is False
    assert s.share_process_namespace is True and s.active_deadline_seconds == 3600
    assert (s.hostname, s.subdomain) == ("web-0", "web")
    c = s.containers[0]
    assert (c.working_dir, list(c.args), c.stdin, c.tty) == ("/srv", ["--port", "8080"], True, True)
    assert c.termination_message_policy == "FallbackToLogsOnError"
    assert list(c.liveness_probe.exec.command) == ["cat", "/tmp/healthy"]
    assert c.liveness_probe.termination_grace_period_seconds == 5
    assert c.liveness_probe.timeout_seconds == 2
    assert c.security_context.HasField("run_as_user") and c.security_context.run_as_user == 0
    assert c.security_context.HasField("privileged") and not c.security_context.privileged
    ps = c.lifecycle.post_start.http_get
    assert (ps.path, ps.host, ps.scheme, ps.port.number_value) == ("/warm", "127.0.0.1", "HTTP", 8080)
    assert c.lifecycle.pre_stop.tcp_socket.port.number_value == 8080


def test_pod_status():
    st = parse(POD, core_pb2.Pod).status
    assert st.phase == "Running" and st.qos_class == "BestEffort"
    assert st.pod_ip == "10.244.1.5" and st.pod_ips[0].ip == "10.244.1.5"
    assert st.host_ip == "192.168.1.10" and st.host_ips[0].ip == "192.168.1.10"
    assert st.start_time.ToJsonString() == "2024-05-01T12:00:01Z"
    cond = st.conditions[0]
    assert (cond.type, cond.status) == ("Ready", "True") and not cond.HasField("last_probe_time")
    init = st.init_container_statuses[0]
    assert init.state.terminated.reason == "Completed" and init.state.terminated.exit_code == 0
    cs = st.container_statuses[0]
    assert cs.ready and cs.started and cs.restart_count == 2
    assert cs.image_id == "sha256:2222" and cs.container_id == "kubeling://web2"
    assert cs.state.HasField("running") and not cs.state.HasField("terminated")
    assert cs.state.running.started_at.ToJsonString() == "2024-05-01T12:00:04Z"
    last = cs.last_state.terminated
    assert (last.exit_code, last.signal, last.reason) == (137, 9, "OOMKilled")
    assert last.container_id == "kubeling://web1" and last.message == "out of memory"


def test_pod_round_trip_keeps_kubernetes_names():
    out = roundtrip(parse(POD, core_pb2.Pod))
    st = out["status"]
    assert st["podIP"] == "10.244.1.5" and st["podIPs"] == [{"ip": "10.244.1.5"}]
    assert st["hostIP"] == "192.168.1.10" and st["hostIPs"] == [{"ip": "192.168.1.10"}]
    assert st["startTime"] == "2024-05-01T12:00:01Z"
    cs = st["containerStatuses"][0]
    assert cs["containerID"] == "kubeling://web2" and cs["imageID"] == "sha256:2222"
    assert cs["lastState"]["terminated"]["containerID"] == "kubeling://web1"
    assert out["spec"]["hostPID"] is True and out["spec"]["hostIPC"] is True
    assert out["spec"]["priority"] == 0 and out["spec"]["enableServiceLinks"] is False
    assert out["metadata"]["creationTimestamp"] == "2024-05-01T12:00:00Z"
    for wrong in ("podIp", "hostIp", "containerId", "imageId", "hostPid", "hostIpc"):
        assert wrong not in repr(out), wrong


# ------------------------------------------------------- Namespace, ConfigMap, Secret

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: payments
spec:
  finalizers: [kubernetes]
status:
  phase: Active
"""


def test_namespace():
    ns = parse(NAMESPACE, core_pb2.Namespace)
    assert ns.metadata.name == "shop" and ns.metadata.labels["team"] == "payments"
    assert list(ns.spec.finalizers) == ["kubernetes"] and ns.status.phase == "Active"
    roundtrip(ns)


CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  log_level: debug
  app.conf: |
    listen 8080
    workers 4
binaryData:
  logo.png: iVBORw0KGgo=
immutable: false
"""


def test_configmap():
    cm = parse(CONFIGMAP, core_pb2.ConfigMap)
    assert cm.data["log_level"] == "debug"
    assert cm.data["app.conf"] == "listen 8080\nworkers 4\n"
    assert cm.binary_data["logo.png"] == b"\x89PNG\r\n\x1a\n"
    assert cm.HasField("immutable") and cm.immutable is False
    out = roundtrip(cm)
    assert out["binaryData"] == {"logo.png": "iVBORw0KGgo="}


SECRET = """
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: shop
type: Opaque
data:
  password: cGFzc3dvcmQ=
  blob: AAEC/w==
stringData:
  username: admin
immutable: true
"""


def test_secret_base64_data_and_string_data():
    sec = parse(SECRET, core_pb2.Secret)
    assert sec.type == "Opaque"
    assert sec.data["password"] == b"password"
    assert sec.data["blob"] == b"\x00\x01\x02\xff"
    assert dict(sec.string_data) == {"username": "admin"}
    assert sec.immutable is True
    out = roundtrip(sec)
    assert out["data"] == {"password": "cGFzc3dvcmQ=", "blob": "AAEC/w=="}
    assert out["stringData"] == {"username": "admin"}


def test_secret_data_must_be_base64():
    doc = yaml.safe_load(SECRET)
    doc["data"]["password"] = "not base64!"
    with pytest.raises(json_format.ParseError, match="data"):
        json_format.ParseDict(doc, core_pb2.Secret())


# ----------------------------------------------------------------------- Node

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels:
    kubernetes.io/hostname: node-1
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs:
  - 10.244.1.0/24
  providerID: kubeling://node-1
  unschedulable: true
  taints:
  - key: node.kubernetes.io/unreachable
    effect: NoExecute
    timeAdded: "2024-05-01T12:00:00Z"
  - key: dedicated
    value: web
    effect: NoSchedule
status:
  capacity:
    cpu: "4"
    memory: 8053920Ki
    pods: "110"
  allocatable:
    cpu: 3800m
    memory: 7851296Ki
    pods: "110"
  conditions:
  - type: Ready
    status: "True"
    lastHeartbeatTime: "2024-05-01T12:00:10Z"
    lastTransitionTime: "2024-05-01T11:00:00Z"
    reason: KubeletReady
    message: kubelet is posting ready status
  addresses:
  - type: InternalIP
    address: 192.168.1.10
  - type: Hostname
    address: node-1
  daemonEndpoints:
    kubeletEndpoint:
      Port: 10250
  nodeInfo:
    machineID: 0123456789abcdef
    bootID: 5f7a8c00-aaaa-bbbb-cccc-ddddeeeeffff
    systemUUID: 4c4c4544-0042-3010-8052-b4c04f4b4d32
    kernelVersion: 6.1.0-18-amd64
    osImage: Debian GNU/Linux 12 (bookworm)
    containerRuntimeVersion: kubeling://0.1.0
    kubeletVersion: v0.1.0
    kubeProxyVersion: v0.1.0
    operatingSystem: linux
    architecture: amd64
"""


def test_node():
    node = parse(NODE, core_pb2.Node)
    s = node.spec
    assert s.pod_cidr == "10.244.1.0/24" and list(s.pod_cidrs) == ["10.244.1.0/24"]
    assert s.provider_id == "kubeling://node-1" and s.unschedulable
    assert s.taints[0].time_added.ToJsonString() == "2024-05-01T12:00:00Z"
    assert (s.taints[1].key, s.taints[1].value, s.taints[1].effect) == ("dedicated", "web", "NoSchedule")
    st = node.status
    assert st.capacity["cpu"] == "4" and st.allocatable["cpu"] == "3800m"
    ready = st.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "KubeletReady")
    assert ready.last_heartbeat_time.ToJsonString() == "2024-05-01T12:00:10Z"
    assert [(a.type, a.address) for a in st.addresses] == [
        ("InternalIP", "192.168.1.10"), ("Hostname", "node-1")]
    assert st.daemon_endpoints.kubelet_endpoint.port == 10250
    info = st.node_info
    assert (info.machine_id, info.boot_id) == ("0123456789abcdef", "5f7a8c00-aaaa-bbbb-cccc-ddddeeeeffff")
    assert info.system_uuid.startswith("4c4c4544")
    assert (info.operating_system, info.architecture) == ("linux", "amd64")
    assert info.kernel_version == "6.1.0-18-amd64" and info.kube_proxy_version == "v0.1.0"


def test_node_round_trip_keeps_kubernetes_names():
    out = roundtrip(parse(NODE, core_pb2.Node))
    assert out["spec"]["podCIDR"] == "10.244.1.0/24"
    assert out["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    assert out["spec"]["providerID"] == "kubeling://node-1"
    info = out["status"]["nodeInfo"]
    assert {"machineID", "bootID", "systemUUID"} <= info.keys()
    # Kubernetes' one capitalised JSON name.
    assert out["status"]["daemonEndpoints"]["kubeletEndpoint"] == {"Port": 10250}


# ---------------------------------------------------------------------- Event

EVENT = """
apiVersion: v1
kind: Event
metadata:
  name: web-7d4b9c-x2k8p.17c1a2b3c4d5e6f7
  namespace: shop
involvedObject:
  kind: Pod
  namespace: shop
  name: web-7d4b9c-x2k8p
  uid: 6f1c2f4e-3b7a-4d1e-9c53-0d2f3c1a9b10
  apiVersion: v1
  resourceVersion: "12345"
  fieldPath: spec.containers{web}
reason: FailedScheduling
message: "0/3 nodes are available: 3 Insufficient cpu."
source:
  component: default-scheduler
  host: node-1
firstTimestamp: "2024-05-01T12:00:00Z"
lastTimestamp: "2024-05-01T12:05:00Z"
count: 3
type: Warning
eventTime: "2024-05-01T12:00:00.123456Z"
reportingComponent: default-scheduler
reportingInstance: scheduler-1
action: Scheduling
"""


def test_event():
    ev = parse(EVENT, core_pb2.Event)
    io = ev.involved_object
    assert (io.kind, io.namespace, io.name, io.api_version) == ("Pod", "shop", "web-7d4b9c-x2k8p", "v1")
    assert io.resource_version == "12345" and io.field_path == "spec.containers{web}"
    assert ev.reason == "FailedScheduling" and "Insufficient cpu" in ev.message
    assert (ev.source.component, ev.source.host) == ("default-scheduler", "node-1")
    assert ev.last_timestamp.seconds - ev.first_timestamp.seconds == 300
    assert ev.count == 3 and ev.type == "Warning"
    assert ev.event_time.nanos == 123456000
    assert (ev.reporting_component, ev.reporting_instance, ev.action) == (
        "default-scheduler", "scheduler-1", "Scheduling")
    out = roundtrip(ev)
    assert out["eventTime"] == "2024-05-01T12:00:00.123456Z"
    assert out["involvedObject"]["fieldPath"] == "spec.containers{web}"


# ---------------------------------------------------------------------- Lease

LEASE = """
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: node-1
  namespace: kube-node-lease
spec:
  holderIdentity: node-1
  leaseDurationSeconds: 40
  acquireTime: "2024-05-01T12:00:00.000000Z"
  renewTime: "2024-05-01T12:00:30.500000Z"
  leaseTransitions: 0
"""


def test_lease():
    lease = parse(LEASE, coordination_pb2.Lease)
    s = lease.spec
    assert s.holder_identity == "node-1" and s.lease_duration_seconds == 40
    assert s.renew_time.seconds - s.acquire_time.seconds == 30 and s.renew_time.nanos == 500_000_000
    assert s.HasField("lease_transitions") and s.lease_transitions == 0
    out = roundtrip(lease)
    assert out["spec"]["leaseTransitions"] == 0
    assert out["spec"]["renewTime"] == "2024-05-01T12:00:30.500Z"


# ----------------------------------------------------------------- ReplicaSet

REPLICASET = """
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7d4b9c
  namespace: shop
  labels:
    app: web
    pod-template-hash: 7d4b9c
  ownerReferences:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    uid: 11111111-2222-3333-4444-555555555555
    controller: true
    blockOwnerDeletion: true
spec:
  replicas: 2
  minReadySeconds: 5
  selector:
    matchLabels:
      app: web
      pod-template-hash: 7d4b9c
  template:
    metadata:
      labels:
        app: web
        pod-template-hash: 7d4b9c
    spec:
      containers:
      - name: web
        image: localhost/kubeling/http:1
status:
  replicas: 2
  fullyLabeledReplicas: 2
  readyReplicas: 1
  availableReplicas: 1
  observedGeneration: 4
  conditions:
  - type: ReplicaFailure
    status: "True"
    lastTransitionTime: "2024-05-01T12:00:00Z"
    reason: FailedCreate
    message: exceeded quota
"""


def test_replicaset():
    rs = parse(REPLICASET, apps_pb2.ReplicaSet)
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.spec.replicas == 2 and rs.spec.min_ready_seconds == 5
    assert rs.spec.selector.match_labels["pod-template-hash"] == "7d4b9c"
    assert rs.spec.template.spec.containers[0].image == "localhost/kubeling/http:1"
    st = rs.status
    assert (st.replicas, st.fully_labeled_replicas, st.ready_replicas, st.available_replicas) == (2, 2, 1, 1)
    assert st.observed_generation == 4
    assert (st.conditions[0].type, st.conditions[0].reason) == ("ReplicaFailure", "FailedCreate")
    roundtrip(rs)


DEPLOYMENT_STATUS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, generation: 4}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: img}]}
  strategy: {type: Recreate}
  paused: true
status:
  observedGeneration: 4
  replicas: 3
  updatedReplicas: 2
  readyReplicas: 2
  availableReplicas: 2
  unavailableReplicas: 1
  collisionCount: 0
  conditions:
  - type: Progressing
    status: "True"
    lastUpdateTime: "2024-05-01T12:00:00Z"
    lastTransitionTime: "2024-05-01T11:00:00Z"
    reason: ReplicaSetUpdated
    message: ReplicaSet "web-7d4b9c" is progressing.
"""


def test_deployment_status():
    d = parse(DEPLOYMENT_STATUS, apps_pb2.Deployment)
    assert d.spec.strategy.type == "Recreate" and d.spec.paused
    assert not d.spec.HasField("replicas")
    st = d.status
    assert (st.observed_generation, st.replicas, st.updated_replicas) == (4, 3, 2)
    assert (st.ready_replicas, st.available_replicas, st.unavailable_replicas) == (2, 2, 1)
    assert st.HasField("collision_count") and st.collision_count == 0
    c = st.conditions[0]
    assert (c.type, c.reason) == ("Progressing", "ReplicaSetUpdated")
    assert c.last_update_time.ToJsonString() == "2024-05-01T12:00:00Z"
    roundtrip(d)


# ------------------------------------------------------------------ Endpoints

ENDPOINTS = """
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: shop
subsets:
- addresses:
  - ip: 10.244.1.5
    hostname: web-0
    nodeName: node-1
    targetRef:
      kind: Pod
      namespace: shop
      name: web-7d4b9c-x2k8p
      uid: 6f1c2f4e-3b7a-4d1e-9c53-0d2f3c1a9b10
  notReadyAddresses:
  - ip: 10.244.2.7
  ports:
  - name: http
    port: 8080
    protocol: TCP
"""


def test_endpoints():
    ep = parse(ENDPOINTS, core_pb2.Endpoints)
    sub = ep.subsets[0]
    a = sub.addresses[0]
    assert (a.ip, a.hostname, a.node_name) == ("10.244.1.5", "web-0", "node-1")
    assert a.target_ref.kind == "Pod" and a.target_ref.name == "web-7d4b9c-x2k8p"
    assert sub.not_ready_addresses[0].ip == "10.244.2.7"
    assert not sub.not_ready_addresses[0].HasField("node_name")
    assert (sub.ports[0].name, sub.ports[0].port, sub.ports[0].protocol) == ("http", 8080, "TCP")
    out = roundtrip(ep)
    assert out["subsets"][0]["notReadyAddresses"] == [{"ip": "10.244.2.7"}]


# ------------------------------------------------------------- unknown fields

@pytest.mark.parametrize("path, message_type", [
    (("spec", "foo"), apps_pb2.Deployment),
    (("spec", "template", "spec", "containers", 0, "foo"), apps_pb2.Deployment),
    (("spec", "foo"), core_pb2.Service),
    (("status", "foo"), core_pb2.Pod),
    (("metadata", "foo"), core_pb2.ConfigMap),
])
def test_unknown_field_is_an_error_naming_it(path, message_type):
    text = {apps_pb2.Deployment: DEPLOYMENT, core_pb2.Service: SERVICE,
            core_pb2.Pod: POD, core_pb2.ConfigMap: CONFIGMAP}[message_type]
    doc = yaml.safe_load(text)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = "bar"
    with pytest.raises(json_format.ParseError) as err:
        json_format.ParseDict(doc, message_type())
    assert 'no field named "foo"' in str(err.value)


def test_unsupported_kubernetes_field_is_an_error_not_dropped():
    doc = yaml.safe_load(DEPLOYMENT)
    doc["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"] = {}
    with pytest.raises(json_format.ParseError, match="podAntiAffinity"):
        json_format.ParseDict(doc, apps_pb2.Deployment())


def test_wrongly_typed_value_is_an_error():
    doc = yaml.safe_load(SERVICE)
    doc["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(json_format.ParseError, match="port"):
        json_format.ParseDict(doc, core_pb2.Service())


# ------------------------------------------------------- the contract itself

MODULES = (meta_pb2, core_pb2, apps_pb2, coordination_pb2)


def _all_messages():
    seen = {}

    def walk(desc):
        if desc.full_name in seen or desc.GetOptions().map_entry:
            return
        seen[desc.full_name] = desc
        for nested in desc.nested_types:
            walk(nested)

    for module in MODULES:
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            walk(desc)
    return list(seen.values())


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# Fields whose Kubernetes JSON name is not protoc's default lowerCamelCase.
KUBERNETES_JSON_NAMES = {
    "kubeling.api.v1.PodSpec.host_pid": "hostPID",
    "kubeling.api.v1.PodSpec.host_ipc": "hostIPC",
    "kubeling.api.v1.PodStatus.host_ip": "hostIP",
    "kubeling.api.v1.PodStatus.host_ips": "hostIPs",
    "kubeling.api.v1.PodStatus.pod_ip": "podIP",
    "kubeling.api.v1.PodStatus.pod_ips": "podIPs",
    "kubeling.api.v1.ContainerPort.host_ip": "hostIP",
    "kubeling.api.v1.ContainerStatus.image_id": "imageID",
    "kubeling.api.v1.ContainerStatus.container_id": "containerID",
    "kubeling.api.v1.ContainerStateTerminated.container_id": "containerID",
    "kubeling.api.v1.ServiceSpec.cluster_ip": "clusterIP",
    "kubeling.api.v1.ServiceSpec.cluster_ips": "clusterIPs",
    "kubeling.api.v1.ServiceSpec.external_ips": "externalIPs",
    "kubeling.api.v1.SessionAffinityConfig.client_ip": "clientIP",
    "kubeling.api.v1.NodeSpec.pod_cidr": "podCIDR",
    "kubeling.api.v1.NodeSpec.pod_cidrs": "podCIDRs",
    "kubeling.api.v1.NodeSpec.provider_id": "providerID",
    "kubeling.api.v1.NodeSystemInfo.machine_id": "machineID",
    "kubeling.api.v1.NodeSystemInfo.boot_id": "bootID",
    "kubeling.api.v1.NodeSystemInfo.system_uuid": "systemUUID",
    "kubeling.api.v1.DaemonEndpoint.port": "Port",
}


def test_json_names_are_kubernetes_names():
    for desc in _all_messages():
        for field in desc.fields:
            expected = KUBERNETES_JSON_NAMES.get(field.full_name, _camel(field.name))
            assert field.json_name == expected, field.full_name


def test_no_acronym_is_spelled_in_camel_case():
    # Kubernetes writes acronyms in capitals (podIP, containerID); a field
    # added later without json_name would show up here as podIp / containerId.
    bad = re.compile(r"(Ip|Id|Cidr|Ipc|Pid|Uuid|Uid|Url|Dns|Tls|Http|Tcp|Udp)s?($|[A-Z])")
    allowed = {"httpGet", "httpHeaders", "tcpSocket", "dnsPolicy"}
    for desc in _all_messages():
        for field in desc.fields:
            name = field.json_name
            if name in allowed:
                continue
            assert not bad.search(name), f"{field.full_name}: json name {name!r}"


def test_field_numbers_are_sequential_from_one():
    for desc in _all_messages():
        numbers = sorted(f.number for f in desc.fields)
        assert numbers == list(range(1, len(numbers) + 1)), desc.full_name


def test_every_kind_starts_with_api_version_kind_metadata():
    kinds = [core_pb2.Namespace, core_pb2.Pod, core_pb2.Service, core_pb2.Endpoints,
             core_pb2.Node, core_pb2.ConfigMap, core_pb2.Secret, core_pb2.Event,
             apps_pb2.Deployment, apps_pb2.ReplicaSet, coordination_pb2.Lease]
    for kind in kinds:
        f = kind.DESCRIPTOR.fields_by_number
        assert (f[1].name, f[1].type) == ("api_version", FieldDescriptor.TYPE_STRING)
        assert (f[2].name, f[2].type) == ("kind", FieldDescriptor.TYPE_STRING)
        assert f[3].name == "metadata" and f[3].message_type is meta_pb2.ObjectMeta.DESCRIPTOR
        if "spec" in kind.DESCRIPTOR.fields_by_name:
            assert kind.DESCRIPTOR.fields_by_name["spec"].number == 4
        if "status" in kind.DESCRIPTOR.fields_by_name:
            assert kind.DESCRIPTOR.fields_by_name["status"].number == 5


_DECL = re.compile(
    r"^\s*(message\s+\w+\s*\{|(optional\s+|repeated\s+)?"
    r"(map<[^>]+>|[\w.]+)\s+\w+\s*=\s*\d+.*;)")


@pytest.mark.parametrize("name", OUR_PROTOS)
def test_every_message_and_field_is_documented(name):
    lines = (PROTO_DIR / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if not _DECL.match(line):
            continue
        prev = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        assert prev.startswith("//"), f"{name}:{i + 1} has no comment: {line.strip()}"
