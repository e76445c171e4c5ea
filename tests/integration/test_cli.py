"""The real `kubeling` command against a real API server (and etcd).

Every test runs `.venv/bin/kubeling` as a user would, with a client
configuration file pointing at the `api_server` fixture, and works in a
namespace of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBELING = ROOT / ".venv" / "bin" / "kubeling"
if not KUBELING.exists():  # running from another environment: use this interpreter's
    KUBELING = Path(sys.executable).parent / "kubeling"


@pytest.fixture(scope="module")
def cli_env(api_server, tmp_path_factory) -> dict:
    config = tmp_path_factory.mktemp("cli") / "config"
    config.write_text(f"server: {api_server.address}\n")
    env = dict(os.environ, KUBELING_CONFIG=str(config))
    env.pop("KUBELING_STATE_DIR", None)
    return env


class Kubeling:
    def __init__(self, env: dict, cwd: Path):
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, input: str | None = None, ok: bool | None = True,
                 timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(KUBELING), *args], input=input, capture_output=True, text=True,
                              env=self.env, cwd=self.cwd, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok is True:
            assert proc.returncode == 0, f"kubeling {' '.join(args)}: {proc.stderr}"
        elif ok is False:
            assert proc.returncode == 1, f"kubeling {' '.join(args)} exited {proc.returncode}: {proc.stdout}"
        return proc


@pytest.fixture
def kubeling(cli_env, tmp_path) -> Kubeling:
    return Kubeling(cli_env, tmp_path)


@pytest.fixture
def ns() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def app_manifest(ns: str, image: str = "localhost/kubeling/http:1") -> str:
    """A manifest as a Kubernetes user writes it."""
    return f"""\
# The shop front end.
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    team: web
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: {ns}
data:
  GREETING: hello
  index.html: |
    <h1>hello</h1>
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: {ns}
type: Opaque
stringData:
  password: s3cr3t
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 2
  selector:
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
        - name: PASSWORD
          valueFrom:
            secretKeyRef:
              name: web-secret
              key: password
        - name: MODE
          value: production
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
          limits:
            cpu: 500m
            memory: 128Mi
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 5
        livenessProbe:
          tcpSocket:
            port: 8080
          initialDelaySeconds: 3
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
"""


CREATED = ["namespace/{ns} created", "configmap/web-config created", "secret/web-secret created",
           "deployment.apps/web created", "service/web created"]


@pytest.fixture
def app(kubeling, ns, tmp_path) -> Path:
    """The app applied in namespace `ns`; returns the manifest file."""
    path = tmp_path / "app.yaml"
    path.write_text(app_manifest(ns))
    out = kubeling("apply", "-f", str(path))
    assert out.stdout.splitlines() == [line.format(ns=ns) for line in CREATED]
    return path


# ------------------------------------------------------------------ apply

def test_apply_creates_then_unchanged_then_configured(kubeling, ns, app):
    again = kubeling("apply", "-f", str(app))
    assert again.stdout.splitlines() == [
        f"namespace/{ns} unchanged", "configmap/web-config unchanged", "secret/web-secret unchanged",
        "deployment.apps/web unchanged", "service/web unchanged"]

    app.write_text(app_manifest(ns, image="localhost/kubeling/http:2"))
    edited = kubeling("apply", "-f", str(app))
    assert edited.stdout.splitlines() == [
        f"namespace/{ns} unchanged", "configmap/web-config unchanged", "secret/web-secret unchanged",
        "deployment.apps/web configured", "service/web unchanged"]
    d = json.loads(kubeling("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/kubeling/http:2"
    assert d["metadata"]["generation"] == 2


def test_apply_from_stdin_and_directory(kubeling, ns, tmp_path):
    kubeling("create", "namespace", ns)
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "b.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b, namespace: {ns}}}\n")
    (d / "a.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "a"}}))
    (d / "README.md").write_text("not a manifest")
    out = kubeling("apply", "-f", str(d), "-n", ns)
    assert out.stdout.splitlines() == ["configmap/a created", "configmap/b created"]
    out = kubeling("apply", "-n", ns, "-f", "-",
                   input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n")
    assert out.stdout == "configmap/c created\n"
    names = kubeling("get", "cm", "-n", ns, "-o", "name").stdout.split()
    assert names == ["configmap/a", "configmap/b", "configmap/c"]


def test_bad_document_in_the_middle_applies_nothing(kubeling, ns, tmp_path):
    bad = tmp_path / "web.yaml"
    bad.write_text(f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  foo: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: img}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: after
  namespace: {ns}
""")
    out = kubeling("apply", "-f", str(bad), ok=False)
    assert out.stdout == ""
    assert out.stderr.strip() == (f'error: {bad} (document 2): Deployment: unknown field "spec.foo": '
                                  "kubeling does not support this field")
    missing = kubeling("get", "ns", ns, ok=False)
    assert f'namespaces "{ns}" not found' in missing.stderr


def test_server_side_invalid_document_applies_nothing(kubeling, ns, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: first, namespace: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: -1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: img}}]
""")
    out = kubeling("apply", "-f", str(bad), ok=False)
    assert out.stdout == ""
    assert f'Error from server (Invalid): error when creating "{bad}" (document 3)' in out.stderr
    assert "spec.replicas" in out.stderr
    kubeling("get", "ns", ns, ok=False)


def test_missing_namespace_and_unknown_kind(kubeling, ns, tmp_path):
    cm = tmp_path / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n")
    out = kubeling("apply", "-f", str(cm), "-n", ns, ok=False)
    assert f'Error from server (NotFound): error when creating "{cm}" (document 1): namespaces "{ns}" not found' \
        in out.stderr

    out = kubeling("get", "widgets", ok=False)
    assert out.stderr == 'error: the server doesn\'t have a resource type "widgets"\n'
    widget = tmp_path / "widget.yaml"
    widget.write_text("apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n")
    out = kubeling("apply", "-f", str(widget), ok=False)
    assert out.stderr.startswith(f'error: {widget} (document 1): no kind "Widget" is served by kubeling')


def test_namespace_flag_must_match_manifest(kubeling, ns, tmp_path):
    cm = tmp_path / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: other}\n")
    out = kubeling("apply", "-f", str(cm), "-n", ns, ok=False)
    assert 'the namespace from the provided object "other" does not match the namespace' in out.stderr


# ------------------------------------------------------------------ get

def test_get_tables_and_short_names(kubeling, ns, app):
    out = kubeling("get", "deploy", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert out[1].split()[:2] == ["web", "0/2"]
    for other in ("deployments.apps", "Deployment"):
        assert kubeling("get", other, "-n", ns).stdout.splitlines()[1].split()[0] == "web"

    svc = kubeling("get", "svc", "web", "-n", ns).stdout.splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[1].split()[:2] == ["web", "NodePort"]
    assert "/TCP" in svc[1]

    cms = kubeling("get", "cm", "-n", ns).stdout.splitlines()
    assert cms[0].split() == ["NAME", "DATA", "AGE"]
    assert cms[1].split()[:2] == ["web-config", "2"]
    secrets = kubeling("get", "secret", "-n", ns).stdout.splitlines()
    assert secrets[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert secrets[1].split()[:3] == ["web-secret", "Opaque", "1"]

    nss = kubeling("get", "ns", ns).stdout.splitlines()
    assert nss[1].split()[:2] == [ns, "Active"]

    wide = kubeling("get", "deploy", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["web", "localhost/kubeling/http:1", "app=web"]

    several = kubeling("get", "deploy,svc", "-n", ns).stdout
    assert "deployment.apps/web" in several and "service/web" in several

    everywhere = kubeling("get", "deploy", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [ns, "web"] in [line.split()[:2] for line in everywhere[1:]]

    labels = kubeling("get", "deploy", "-n", ns, "--show-labels").stdout.splitlines()
    assert labels[0].split()[-1] == "LABELS" and labels[1].split()[-1] == "app=web"


def test_get_output_formats(kubeling, ns, app):
    one = json.loads(kubeling("get", "deployment", "web", "-n", ns, "-o", "json").stdout)
    assert (one["apiVersion"], one["kind"]) == ("apps/v1", "Deployment")
    assert one["metadata"]["name"] == "web" and one["spec"]["replicas"] == 2
    c = one["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["memory"] == "128Mi"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["livenessProbe"]["tcpSocket"]["port"] == 8080

    many = json.loads(kubeling("get", "cm,secret", "-n", ns, "-o", "json").stdout)
    assert many["kind"] == "List" and many["apiVersion"] == "v1"
    assert [i["kind"] for i in many["items"]] == ["ConfigMap", "Secret"]
    assert many["metadata"] == {"resourceVersion": ""}

    doc = yaml.safe_load(kubeling("get", "svc", "web", "-n", ns, "-o", "yaml").stdout)
    assert doc["kind"] == "Service" and doc["spec"]["ports"][0]["port"] == 80
    listed = yaml.safe_load(kubeling("get", "svc", "-n", ns, "-o", "yaml").stdout)
    assert listed["kind"] == "List" and listed["items"][0]["metadata"]["name"] == "web"

    names = kubeling("get", "deploy,svc,cm", "-n", ns, "-o", "name").stdout.splitlines()
    assert names == ["deployment.apps/web", "service/web", "configmap/web-config"]


def test_get_selectors_empty_and_not_found(kubeling, ns, app):
    out = kubeling("get", "deploy,svc", "-n", ns, "-l", "app=web", "-o", "name").stdout.split()
    assert out == ["deployment.apps/web", "service/web"]
    empty = kubeling("get", "deploy", "-n", ns, "-l", "app=nothing")
    assert empty.stdout == ""
    assert empty.stderr == f"No resources found in {ns} namespace.\n"
    fields = kubeling("get", "cm", "-n", ns, "--field-selector", "metadata.name=web-config", "-o", "name")
    assert fields.stdout.split() == ["configmap/web-config"]

    bad = kubeling("get", "deploy", "-n", ns, "-l", "app in ((", ok=False)
    assert bad.stderr.startswith("Error from server (Invalid): ")

    missing = kubeling("get", "deploy", "nope", "-n", ns, ok=False)
    assert missing.stderr == 'Error from server (NotFound): deployments.apps "nope" not found\n'
    partly = kubeling("get", "cm", "web-config", "nope", "-n", ns, ok=False)
    assert partly.stdout.splitlines()[1].split()[0] == "web-config"
    assert 'configmaps "nope" not found' in partly.stderr


def test_get_watch_prints_changes_until_interrupted(kubeling, ns, app, cli_env):
    proc = subprocess.Popen([str(KUBELING), "get", "cm", "-n", ns, "-w"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert proc.stdout.readline().split() == ["NAME", "DATA", "AGE"]
        assert proc.stdout.readline().split()[0] == "web-config"
        kubeling("create", "configmap", "watched", "-n", ns, "--from-literal=a=1")
        assert proc.stdout.readline().split()[:2] == ["watched", "1"]
        kubeling("delete", "cm", "watched", "-n", ns)
        assert proc.stdout.readline().split()[0] == "watched"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
        stderr = proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr


# ------------------------------------------------------------------ describe

def test_describe(kubeling, ns, app, tmp_path):
    uid = json.loads(kubeling("get", "deploy", "web", "-n", ns, "-o", "json").stdout)["metadata"]["uid"]
    event = tmp_path / "event.yaml"
    event.write_text(f"""\
apiVersion: v1
kind: Event
metadata:
  name: web.1
  namespace: {ns}
involvedObject:
  apiVersion: apps/v1
  kind: Deployment
  name: web
  namespace: {ns}
  uid: {uid}
reason: ScalingReplicaSet
message: Scaled up replica set web-abc to 2
type: Normal
source:
  component: deployment-controller
count: 1
""")
    kubeling("apply", "-f", str(event))

    d = kubeling("describe", "deployment", "web", "-n", ns).stdout
    for expected in ("Name:", "web", f"Namespace:              {ns}", "Selector:", "app=web",
                     "Replicas:               2 desired | 0 updated | 0 total | 0 available | 0 unavailable",
                     "StrategyType:           RollingUpdate",
                     "RollingUpdateStrategy:  0 max unavailable, 1 max surge",
                     "Image:", "localhost/kubeling/http:1",
                     "<set to the key 'GREETING' of config map 'web-config'>",
                     "http-get http://:http/healthz", "tcp-socket :8080 delay=3s",
                     "NewReplicaSet:", "Events:"):
        assert expected in d, d
    events = d.split("Events:", 1)[1].splitlines()
    assert events[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert events[3].split()[:2] == ["Normal", "ScalingReplicaSet"]
    assert "deployment-controller" in events[3] and "Scaled up replica set web-abc to 2" in events[3]

    svc = kubeling("describe", "svc/web", "-n", ns).stdout
    assert "Type:" in svc and "NodePort" in svc and "TargetPort:" in svc and "http/TCP" in svc
    assert svc.rstrip().endswith("Events:                   <none>") or "Events:" in svc

    cm = kubeling("describe", "cm", "web-config", "-n", ns).stdout
    assert "GREETING:\n----\nhello" in cm
    secret = kubeling("describe", "secret", "web-secret", "-n", ns).stdout
    assert "password:" in secret and "6 bytes" in secret and "s3cr3t" not in secret
    namespace = kubeling("describe", "ns", ns).stdout
    assert "Status:" in namespace and "Active" in namespace and "team=web" in namespace

    missing = kubeling("describe", "deploy", "nope", "-n", ns, ok=False)
    assert missing.stderr == 'Error from server (NotFound): deployments.apps "nope" not found\n'


# ------------------------------------------------------------------ scale, create, delete

def test_scale(kubeling, ns, app):
    assert kubeling("scale", "deployment", "web", "--replicas=3", "-n", ns).stdout == \
        "deployment.apps/web scaled\n"
    d = json.loads(kubeling("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    assert d["spec"]["replicas"] == 3
    assert kubeling("scale", "deploy/web", "--replicas", "0", "-n", ns).stdout == "deployment.apps/web scaled\n"
    assert json.loads(kubeling("get", "deploy", "web", "-n", ns, "-o", "json").stdout)["spec"].get("replicas", 0) == 0
    assert "greater than or equal to 0" in kubeling("scale", "deploy", "web", "--replicas=-1", "-n", ns,
                                                     ok=False).stderr
    assert kubeling("scale", "deploy", "nope", "--replicas=1", "-n", ns, ok=False).stderr == \
        'Error from server (NotFound): deployments.apps "nope" not found\n'
    assert "only deployments and replicasets" in kubeling("scale", "svc", "web", "--replicas=1", "-n", ns,
                                                          ok=False).stderr


def test_create(kubeling, ns, tmp_path):
    assert kubeling("create", "namespace", ns).stdout == f"namespace/{ns} created\n"
    again = kubeling("create", "namespace", ns, ok=False)
    assert again.stderr == f'Error from server (AlreadyExists): namespaces "{ns}" already exists\n'
    cm = tmp_path / "cm.yaml"
    cm.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\ndata: {{a: b}}\n")
    assert kubeling("create", "-f", str(cm)).stdout == "configmap/c created\n"
    dup = kubeling("create", "-f", str(cm), ok=False)
    assert dup.stderr == (f'Error from server (AlreadyExists): error when creating "{cm}" (document 1): '
                          'configmaps "c" already exists\n')
    out = kubeling("create", "deployment", "api", "--image=localhost/kubeling/http:1", "--replicas=2", "-n", ns)
    assert out.stdout == "deployment.apps/api created\n"


def test_delete(kubeling, ns, app):
    assert kubeling("delete", "cm", "web-config", "-n", ns).stdout == 'configmap "web-config" deleted\n'
    gone = kubeling("delete", "cm", "web-config", "-n", ns, ok=False)
    assert gone.stderr == 'Error from server (NotFound): configmaps "web-config" not found\n'
    assert kubeling("delete", "cm", "web-config", "-n", ns, "--ignore-not-found").stdout == ""

    assert kubeling("delete", "deploy/web", "-n", ns, "--cascade=background").stdout == \
        'deployment.apps "web" deleted\n'
    kubeling("get", "deploy", "web", "-n", ns, ok=False)

    out = kubeling("delete", "-f", str(app), "--ignore-not-found")
    # contents first, the namespace last; what was already deleted is skipped
    assert out.stdout.splitlines() == ['secret "web-secret" deleted', 'service "web" deleted',
                                       f'namespace "{ns}" deleted']
    after = kubeling("get", "svc", "-n", ns)
    assert after.stdout == ""


def test_delete_by_selector(kubeling, ns):
    kubeling("create", "namespace", ns)
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        kubeling("apply", "-n", ns, "-f", "-", input=(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\n"))
    out = kubeling("delete", "cm", "-l", "tier=x", "-n", ns)
    assert out.stdout.splitlines() == ['configmap "a" deleted', 'configmap "b" deleted']
    assert kubeling("get", "cm", "-n", ns, "-o", "name").stdout.split() == ["configmap/c"]
    assert "no name was specified" in kubeling("delete", "cm", "-n", ns, ok=False).stderr


# ------------------------------------------------------------------ configuration and reachability

def test_errors_without_a_cluster(tmp_path):
    env = dict(os.environ, KUBELING_CONFIG=str(tmp_path / "missing"))
    k = Kubeling(env, tmp_path)
    out = k("get", "pods", ok=False)
    assert out.stderr.startswith("error: no cluster configured: run `kubeling up`")

    (tmp_path / "dead").write_text("server: 127.0.0.1:1\n")
    k = Kubeling(dict(os.environ, KUBELING_CONFIG=str(tmp_path / "dead")), tmp_path)
    started = time.monotonic()
    out = k("get", "pods", ok=False)
    assert out.stderr.startswith("error: cannot connect to the API server at 127.0.0.1:1")
    assert time.monotonic() - started < 30
    assert k("version").stdout.startswith("Client Version: ")


def test_usage_errors_are_one_line_and_exit_1(kubeling):
    out = kubeling("get", ok=False)
    assert out.stderr.startswith("error: you must specify the type of resource")
    out = kubeling("get", "pods", "-o", "jsonpath", ok=False)
    assert out.stderr.startswith('error: argument -o/--output: unable to match a printer')
    out = kubeling("frobnicate", ok=False)
    assert out.stderr.startswith("error: argument COMMAND: invalid choice: 'frobnicate'")
    out = kubeling("apply", "-f", "/nonexistent.yaml", ok=False)
    assert out.stderr == 'error: the path "/nonexistent.yaml" does not exist\n'
