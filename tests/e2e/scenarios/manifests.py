"""The YAML the scenarios apply, as a Kubernetes user writes it."""

from __future__ import annotations

import json

HTTP_1 = "localhost/kubeling/http:1"
HTTP_2 = "localhost/kubeling/http:2"
SHELL = "localhost/kubeling/shell:1"
# Pods that drive traffic run on node-1; the node failure takes another one.
CLIENT_NODE = "node-1"


def app(namespace: str, replicas: int = 3, image: str = HTTP_1, readiness_path: str = "/healthz",
        progress_deadline: int | None = None) -> str:
    """An ordinary web app: its Namespace, a ConfigMap and a Secret it takes
    environment from, a Deployment with probes, resources and a graceful
    rolling update (never below the desired count; a preStop pause so a pod
    leaving the Service finishes the requests already on their way to it),
    and a Service in front."""
    deadline = f"  progressDeadlineSeconds: {progress_deadline}\n" if progress_deadline else ""
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: {namespace}
data:
  GREETING: hello from {namespace}
  LOG_LEVEL: info
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: {namespace}
type: Opaque
stringData:
  API_TOKEN: token-{namespace}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {namespace}
  labels:
    app: web
spec:
  replicas: {replicas}
{deadline}  selector:
    matchLabels:
      app: web
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: {image}
        ports:
        - name: http
          containerPort: 8080
        env:
        - name: GREETING
          valueFrom:
            configMapKeyRef:
              name: web-config
              key: GREETING
        - name: API_TOKEN
          valueFrom:
            secretKeyRef:
              name: web-secret
              key: API_TOKEN
        envFrom:
        - configMapRef:
            name: web-config
          prefix: CFG_
        resources:
          requests:
            cpu: 10m
            memory: 16Mi
          limits:
            cpu: 250m
            memory: 64Mi
        readinessProbe:
          httpGet:
            path: {readiness_path}
            port: http
          periodSeconds: 1
          failureThreshold: 2
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
          initialDelaySeconds: 3
          periodSeconds: 5
        lifecycle:
          preStop:
            exec:
              command: ["sleep", "3"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {namespace}
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
"""


def shell_pod(name: str, namespace: str, script: str) -> str:
    """A shell pod on CLIENT_NODE running `script`, with an emptyDir at /data."""
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app: {name}
spec:
  nodeName: {CLIENT_NODE}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {{}}
  containers:
  - name: sh
    image: {SHELL}
    command: ["sh", "-c", {json.dumps(script)}]
    volumeMounts:
    - name: data
      mountPath: /data
"""


CLIENT_SCRIPT = "exec sleep 1000000"

# Requests without pause until /data/stop appears: counts in /data/counts
# ("ok failed version-1 version-2"), one log line per failed request.
# (busybox wget's own -T misbehaves; `timeout` bounds each request.)
TRAFFIC_SCRIPT = """\
ok=0; fail=0; v1=0; v2=0
while [ ! -e /data/stop ]; do
  if out=$(timeout 5 wget -qO- http://web.shop.svc.cluster.local/version 2>&1); then
    ok=$((ok+1))
    case "$out" in 1) v1=$((v1+1));; 2) v2=$((v2+1));; esac
  else
    fail=$((fail+1)); echo "$(date +%H:%M:%S) request $((ok+fail)) failed: $out"
  fi
  echo "$ok $fail $v1 $v2" > /data/counts.new && mv /data/counts.new /data/counts
done
touch /data/done
exec sleep 1000000
"""
