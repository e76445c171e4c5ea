"""Create / Get / List / Update / UpdateStatus / Delete / Bind through the
real API server process on a real etcd, for every kind kubeling serves.

Every test works in a namespace of its own (created first); cluster-scoped
objects get names derived from it and are deleted at the end.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
import yaml
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import (
    FailedPreconditionError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)
from kubeling.objects import copy, from_dict

# ----------------------------------------------------------------- fixtures


@pytest.fixture
async def client(api_server):
    async with ApiClient(api_server.address) as c:
        yield c


@pytest.fixture
async def ns(client, namespace_name):
    await client.create(make(NAMESPACE_YAML, name=namespace_name, ns=""))
    return namespace_name


def make(manifest: str, **fmt: str) -> Message:
    """A typed object from a YAML manifest, with {name} / {ns} filled in."""
    return from_dict(yaml.safe_load(manifest.format(**fmt)))


def names(objs) -> list[str]:
    return [o.metadata.name for o in objs]


def body(obj: Message) -> Message:
    """Everything but metadata and status: what generation follows."""
    b = copy(obj)
    b.ClearField("metadata")
    if "status" in b.DESCRIPTOR.fields_by_name:
        b.ClearField("status")
    return b


def rv(obj: Message) -> int:
    return int(obj.metadata.resource_version)


# ---------------------------------------------------------- one case per kind

NAMESPACE_YAML = """
apiVersion: v1
kind: Namespace
metadata:
  name: {name}
  labels: {{team: a}}
"""

POD_YAML = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: web}}
spec:
  containers:
  - name: main
    image: localhost/kubeling/shell:1
    command: [sleep, "3600"]
"""

DEPLOYMENT_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: localhost/kubeling/http:1
"""


@dataclass
class Case:
    manifest: str
    change_spec: Callable[[Message], None]  # a change of what generation follows
    change_status: Callable[[Message], None] | None = None


def _set(path: str, value):
    def change(obj):
        *parents, last = path.split(".")
        target = obj
        for p in parents:
            target = getattr(target, p)
        setattr(target, last, value)
    return change


def _pod_image(obj):
    obj.spec.containers[0].image = "localhost/kubeling/shell:2"


def _pod_status(obj):
    obj.status.phase = "Running"
    obj.status.pod_ip = "10.244.1.7"


def _service_spec(obj):
    obj.spec.selector["tier"] = "front"


def _service_status(obj):
    obj.status.load_balancer.ingress.add(ip="192.0.2.10")


def _endpoints_change(obj):
    obj.subsets[0].addresses.add(ip="10.244.1.9")


def _node_status(obj):
    obj.status.capacity["cpu"] = "8"
    obj.status.conditions.add(type="Ready", status="True")


def _configmap_change(obj):
    obj.data["color"] = "green"


def _secret_change(obj):
    obj.data["password"] = b"changed"


def _namespace_spec(obj):
    obj.spec.finalizers.append("example.com/cleanup")


def _namespace_status(obj):
    obj.status.conditions.add(type="NamespaceContentRemaining", status="False")


def _workload_status(obj):
    obj.status.replicas = 2
    obj.status.ready_replicas = 1
    obj.status.observed_generation = 1


CASES: dict[str, Case] = {
    "Namespace": Case(NAMESPACE_YAML, _namespace_spec, _namespace_status),
    "Pod": Case(POD_YAML, _pod_image, _pod_status),
    "Service": Case("""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
""", _service_spec, _service_status),
    "Endpoints": Case("""
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
subsets:
- addresses: [{{ip: 10.244.1.8}}]
  ports: [{{port: 8080}}]
""", _endpoints_change),
    "Node": Case("""
apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/hostname: {name}}}
spec:
  podCIDR: 10.244.7.0/24
status:
  capacity: {{cpu: "2", memory: 4Gi, pods: "110"}}
""", _set("spec.unschedulable", True), _node_status),
    "ConfigMap": Case("""
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
data: {{color: blue}}
""", _configmap_change),
    "Secret": Case("""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
stringData: {{password: s3cret}}
""", _secret_change),
    "Event": Case("""
apiVersion: v1
kind: Event
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
involvedObject: {{kind: Pod, name: web, namespace: {ns}}}
reason: Started
message: Started container web
type: Normal
""", _set("message", "Started container web again")),
    "Deployment": Case(DEPLOYMENT_YAML, _set("spec.replicas", 3), _workload_status),
    "ReplicaSet": Case("""
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: localhost/kubeling/http:1
""", _set("spec.replicas", 3), _workload_status),
    "Lease": Case("""
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
spec:
  holderIdentity: candidate-a
  leaseDurationSeconds: 15
""", _set("spec.holder_identity", "candidate-b")),
}


def test_every_kind_has_a_case():
    assert sorted(CASES) == sorted(k.kind for k in kinds.KINDS)


@pytest.mark.parametrize("kind", kinds.KINDS, ids=[k.kind for k in kinds.KINDS])
async def test_crud_round_trip(client, ns, kind):
    case = CASES[kind.kind]
    name = f"{ns}-x" if not kind.namespaced else "obj-1"
    manifest = make(case.manifest, name=name, ns=ns)
    try:
        await _crud_round_trip(client, ns, kind, case, name, manifest)
    finally:
        if kind.kind == "Node":
            try:
                await client.delete("nodes", name)
            except NotFoundError:
                pass


async def _crud_round_trip(client, ns, kind, case, name, manifest):
    # --- create: server-set fields
    created = await client.create(manifest)
    assert isinstance(created, kind.message)
    meta = created.metadata
    assert meta.name == name
    assert meta.namespace == (ns if kind.namespaced else "")
    assert str(uuid.UUID(meta.uid)) == meta.uid
    assert meta.creation_timestamp.seconds > 0
    assert rv(created) > 0
    assert meta.generation == (1 if kind.has_spec else 0)
    assert created.api_version == kind.api_version and created.kind == kind.kind
    assert not meta.HasField("deletion_timestamp")

    # --- get and list return the stored object unchanged
    got = await client.get(kind.resource, name, ns)
    assert got == created
    listed = await client.list(kind.resource, ns, field_selector=f"metadata.name={name}")
    assert listed.items == [created]
    assert int(listed.resource_version) >= rv(created)

    # --- an update that changes nothing writes nothing
    same = await client.update(got)
    assert same == created
    # ... nor does resending the manifest as the user wrote it (defaults re-applied)
    resent = copy(manifest)
    assert (await client.update(resent)) == created

    # --- a label change: new resourceVersion, same generation
    relabel = copy(created)
    relabel.metadata.labels["extra"] = "yes"
    relabelled = await client.update(relabel)
    assert relabelled.metadata.labels["extra"] == "yes"
    assert rv(relabelled) > rv(created)
    assert relabelled.metadata.generation == created.metadata.generation
    assert relabelled.metadata.uid == meta.uid
    assert relabelled.metadata.creation_timestamp == meta.creation_timestamp
    assert (await client.get(kind.resource, name, ns)) == relabelled

    # --- a spec change: generation bumps (kinds with a spec) once
    respec = copy(relabelled)
    case.change_spec(respec)
    respecced = await client.update(respec)
    assert body(respecced) != body(relabelled)
    assert rv(respecced) > rv(relabelled)
    if kind.has_spec:
        assert respecced.metadata.generation == created.metadata.generation + 1
    else:
        assert respecced.metadata.generation == 0
    stored = await client.get(kind.resource, name, ns)
    assert stored == respecced

    if not kind.has_status:
        with pytest.raises(InvalidError):
            await client.update_status(stored)
    else:
        # --- UpdateStatus writes status only
        status_req = copy(stored)
        case.change_status(status_req)
        status_req.metadata.labels["sneaky"] = "label"
        case.change_spec(status_req)  # ignored
        if kind.kind == "Namespace":
            status_req.spec.finalizers.append("example.com/sneaky")
        with_status = await client.update_status(status_req)
        assert with_status.status == status_req.status
        assert with_status.status != stored.status
        assert body(with_status) == body(stored)
        assert "sneaky" not in with_status.metadata.labels
        assert with_status.metadata.generation == stored.metadata.generation
        assert rv(with_status) > rv(stored)
        assert (await client.get(kind.resource, name, ns)) == with_status

        # --- Update never writes status: a status-only change is a no-op ...
        stale_status = copy(with_status)
        stale_status.status.CopyFrom(stored.status)
        assert (await client.update(stale_status)) == with_status
        # ... and alongside a label change, the label lands and the status stays
        stale_status.metadata.labels["later"] = "yes"
        updated = await client.update(stale_status)
        assert updated.metadata.labels["later"] == "yes"
        assert updated.status == with_status.status
        assert updated.metadata.generation == with_status.metadata.generation
        stored = await client.get(kind.resource, name, ns)
        assert stored == updated

    # --- delete
    deleted, pending = await client.delete(kind.resource, name, ns)
    assert deleted.metadata.uid == meta.uid
    if kind.kind == "Namespace":
        # Namespaces wait for the namespace controller (spec.finalizers).
        assert pending
        assert deleted.metadata.HasField("deletion_timestamp")
        assert deleted.status.phase == "Terminating"
        assert (await client.get("namespaces", name)).status.phase == "Terminating"
        return
    assert not pending
    with pytest.raises(NotFoundError) as missing:
        await client.get(kind.resource, name, ns)
    assert name in str(missing.value)
    assert (await client.list(kind.resource, ns, field_selector=f"metadata.name={name}")).items == []
    with pytest.raises(NotFoundError):
        await client.delete(kind.resource, name, ns)


# ------------------------------------------------------------------ defaults


async def test_defaults_are_applied(client, ns):
    pod = make("""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - {{name: pinned, image: "localhost/kubeling/shell:1"}}
  - {{name: untagged, image: "localhost/kubeling/shell"}}
  - {{name: latest, image: "localhost/kubeling/shell:latest"}}
  - {{name: explicit, image: "localhost/kubeling/shell:latest", imagePullPolicy: Never}}
""", name=f"defaults-{ns}")
    created = await client.create(pod)
    try:
        assert created.metadata.namespace == "default"  # no namespace given
        assert created.spec.restart_policy == "Always"
        assert created.spec.termination_grace_period_seconds == 30
        assert created.spec.dns_policy == "ClusterFirst"
        assert created.status.phase == "Pending"
        policies = {c.name: c.image_pull_policy for c in created.spec.containers}
        assert policies == {"pinned": "IfNotPresent", "untagged": "Always", "latest": "Always",
                            "explicit": "Never"}
        assert (await client.get("pods", created.metadata.name, "default")) == created
    finally:
        await client.delete("pods", created.metadata.name, "default")

    deployment = await client.create(make(DEPLOYMENT_YAML, name="web", ns=ns))
    spec = deployment.spec
    assert spec.strategy.type == "RollingUpdate"
    assert spec.strategy.rolling_update.max_surge.string_value == "25%"
    assert spec.strategy.rolling_update.max_unavailable.string_value == "25%"
    assert spec.revision_history_limit == 10
    assert spec.progress_deadline_seconds == 600
    assert spec.template.spec.restart_policy == "Always"
    assert spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    svc = await client.create(make("""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
""", ns=ns))
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.session_affinity == "None"
    assert svc.spec.ports[0].protocol == "TCP"
    assert svc.spec.ports[0].target_port.number_value == 80

    replicas_default = make(DEPLOYMENT_YAML, name="one", ns=ns)
    replicas_default.spec.ClearField("replicas")
    assert (await client.create(replicas_default)).spec.replicas == 1

    ns_obj = await client.get("namespaces", ns)
    assert ns_obj.status.phase == "Active"
    assert ns_obj.metadata.labels["kubernetes.io/metadata.name"] == ns


async def test_generate_name(client, ns):
    template = make("""
apiVersion: v1
kind: ConfigMap
metadata: {{generateName: web-, namespace: {ns}}}
data: {{a: b}}
""", ns=ns)
    made = [await client.create(template) for _ in range(5)]
    generated = names(made)
    assert len(set(generated)) == 5
    for obj, n in zip(made, generated):
        assert n.startswith("web-") and len(n) > len("web-")
        assert obj.metadata.generate_name == "web-"
        assert (await client.get("configmaps", n, ns)) == obj
    assert sorted(names((await client.list("configmaps", ns)).items)) == sorted(generated)


async def test_default_and_kube_system_exist_from_the_start(client):
    for name in ("default", "kube-system"):
        got = await client.get("namespaces", name)
        assert got.metadata.name == name and got.metadata.uid
        assert got.status.phase == "Active"
        assert not got.metadata.HasField("deletion_timestamp")


# ------------------------------------------------------------------ listing


def _cm(name: str, ns: str, labels: dict[str, str] | None = None) -> Message:
    obj = make("""
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}}}
data: {{k: v}}
""", name=name, ns=ns)
    obj.metadata.labels.update(labels or {})
    return obj


@pytest.mark.parametrize("selector, expected", [
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),
    ("tier in (front,back)", ["a", "b"]),
    ("tier in (front)", ["a"]),
    ("tier notin (front)", ["b", "c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("app=web,tier!=back", ["a"]),
    ("app=web,!tier", []),
    ("app in (web,db),tier notin (back)", ["a", "c"]),
    ("", ["a", "b", "c", "d"]),
])
async def test_list_with_label_selectors(client, ns, selector, expected):
    for name, labels in (("a", {"app": "web", "tier": "front"}), ("b", {"app": "web", "tier": "back"}),
                         ("c", {"app": "db"}), ("d", {})):
        await client.create(_cm(name, ns, labels))
    result = await client.list("configmaps", ns, label_selector=selector)
    assert names(result.items) == expected


async def test_list_with_field_selectors(client, ns):
    bound = make(POD_YAML, name="on-node-1", ns=ns)
    bound.spec.node_name = "node-1"  # created already placed: skips the scheduler
    on1 = await client.create(bound)
    assert on1.spec.node_name == "node-1"
    await client.create(make(POD_YAML, name="unbound", ns=ns))
    await client.create(make(POD_YAML, name="on-node-2", ns=ns))
    await client.bind(ns, "on-node-2", "node-2")
    on1.status.phase = "Running"
    await client.update_status(on1)

    async def select(fields: str, namespace: str = ns, labels: str = "") -> list[str]:
        return names((await client.list("pods", namespace, field_selector=fields,
                                        label_selector=labels)).items)

    assert await select("spec.nodeName=node-1") == ["on-node-1"]
    assert await select("spec.nodeName==node-2") == ["on-node-2"]
    assert await select("spec.nodeName=") == ["unbound"]
    assert await select("spec.nodeName!=") == ["on-node-1", "on-node-2"]
    assert await select("spec.nodeName!=node-1") == ["on-node-2", "unbound"]
    assert await select("status.phase=Running") == ["on-node-1"]
    assert await select("status.phase=Pending") == ["on-node-2", "unbound"]
    assert await select("status.phase!=Running,spec.nodeName!=") == ["on-node-2"]
    assert await select("metadata.name=unbound") == ["unbound"]
    assert await select("metadata.name=nothing") == []
    # metadata.namespace across all namespaces
    assert await select(f"metadata.namespace={ns}", namespace="") == ["on-node-1", "on-node-2", "unbound"]
    assert await select(f"metadata.namespace={ns},spec.nodeName=node-1", namespace="") == ["on-node-1"]
    assert await select(f"metadata.namespace={ns}-other", namespace="") == []
    assert await select("status.phase=Pending", labels="app=web") == ["on-node-2", "unbound"]
    assert await select("status.phase=Pending", labels="app!=web") == []


async def test_list_across_all_namespaces(client, ns):
    other = f"{ns}-b"
    await client.create(make(NAMESPACE_YAML, name=other))
    marker = {"suite": ns}
    for namespace in (other, ns):
        for name in ("y", "x"):
            await client.create(_cm(name, namespace, marker))
    await client.create(_cm("unmarked", ns))

    everywhere = await client.list("configmaps", "", label_selector=f"suite={ns}")
    found = [(o.metadata.namespace, o.metadata.name) for o in everywhere.items]
    # Items come in etcd key order (/registry/configmaps/<ns>/<name>), each
    # namespace's together and sorted by name; "t-x-b/" sorts before "t-x/".
    assert sorted(found) == [(ns, "x"), (ns, "y"), (other, "x"), (other, "y")]
    assert found == sorted(found, key=lambda f: f"{f[0]}/{f[1]}")
    only_one = await client.list("configmaps", other)
    assert names(only_one.items) == ["x", "y"]
    namespaces = names((await client.list("namespaces", "", label_selector="team=a")).items)
    assert ns in namespaces and other in namespaces


async def test_limit_and_continue_pagination(client, ns):
    all_names = [f"cm-{i:02d}" for i in range(23)]
    for name in all_names:
        await client.create(_cm(name, ns, {"parity": "even" if int(name[3:]) % 2 == 0 else "odd"}))

    first = await client.list("configmaps", ns, limit=5)
    assert names(first.items) == all_names[:5] and first.continue_token
    snapshot_rv = first.resource_version

    # Writes after the first page do not show in the later pages: the token
    # reads at the first page's revision.
    await client.delete("configmaps", "cm-20", ns)
    await client.create(_cm("cm-99", ns))
    changed = await client.get("configmaps", "cm-10", ns)
    changed.data["k"] = "changed"
    await client.update(changed)

    pages = [first]
    token = first.continue_token
    while token:
        page = await client.list("configmaps", ns, limit=5, continue_token=token)
        assert page.resource_version == snapshot_rv
        assert len(page.items) <= 5 and page.items
        pages.append(page)
        token = page.continue_token
    seen = [n for p in pages for n in names(p.items)]
    assert seen == all_names  # no overlap, nothing missing, in order, as of the snapshot
    assert len(pages) == 5
    cm10 = next(o for p in pages for o in p.items if o.metadata.name == "cm-10")
    assert cm10.data["k"] == "v"

    # A fresh list sees the writes.
    now = names((await client.list("configmaps", ns)).items)
    assert "cm-20" not in now and "cm-99" in now

    # Pagination with a selector: pages are full of matches.
    odd, token = [], ""
    while True:
        page = await client.list("configmaps", ns, label_selector="parity=odd", limit=3,
                                 continue_token=token)
        assert len(page.items) <= 3
        odd += names(page.items)
        token = page.continue_token
        if not token:
            break
    assert odd == [n for n in all_names if int(n[3:]) % 2 and n != "cm-20"]

    # A limit larger than the list returns everything with no token.
    whole = await client.list("configmaps", ns, limit=1000)
    assert names(whole.items) == now and whole.continue_token == ""
    # Exactly the size: no token either (nothing remains).
    exact = await client.list("configmaps", ns, limit=len(now))
    assert names(exact.items) == now


# ------------------------------------------------------------------ deletion


async def test_finalizers_hold_a_deleted_object_until_cleared(client, ns):
    cm = _cm("held", ns)
    cm.metadata.finalizers.extend(["example.com/first", "example.com/second"])
    created = await client.create(cm)
    deleted, pending = await client.delete("configmaps", "held", ns)
    assert pending
    assert deleted.metadata.HasField("deletion_timestamp")
    held = await client.get("configmaps", "held", ns)
    assert held.metadata.HasField("deletion_timestamp")
    assert list(held.metadata.finalizers) == ["example.com/first", "example.com/second"]
    assert held.metadata.uid == created.metadata.uid

    # A second delete keeps it pending and does not move the timestamp.
    again, pending = await client.delete("configmaps", "held", ns)
    assert pending and again.metadata.deletion_timestamp == held.metadata.deletion_timestamp

    # Removing one finalizer keeps the object; removing the last deletes it.
    del held.metadata.finalizers[0]
    one_left = await client.update(held)
    assert list(one_left.metadata.finalizers) == ["example.com/second"]
    assert one_left.metadata.deletion_timestamp == held.metadata.deletion_timestamp
    del one_left.metadata.finalizers[:]
    await client.update(one_left)
    with pytest.raises(NotFoundError):
        await client.get("configmaps", "held", ns)


@pytest.mark.parametrize("policy, finalizer", [("Orphan", "orphan"), ("Foreground", "foregroundDeletion")])
async def test_propagation_policy_adds_its_finalizer(client, ns, policy, finalizer):
    await client.create(make(DEPLOYMENT_YAML, name="web", ns=ns))
    deleted, pending = await client.delete("deployments", "web", ns, propagation_policy=policy)
    assert pending
    assert finalizer in deleted.metadata.finalizers
    stored = await client.get("deployments", "web", ns)
    assert stored.metadata.HasField("deletion_timestamp")
    assert list(stored.metadata.finalizers) == [finalizer]
    # The garbage collector's part: clear the finalizer, and the object goes.
    del stored.metadata.finalizers[:]
    await client.update(stored)
    with pytest.raises(NotFoundError):
        await client.get("deployments", "web", ns)


async def test_background_propagation_deletes_at_once(client, ns):
    await client.create(make(DEPLOYMENT_YAML, name="web", ns=ns))
    _, pending = await client.delete("deployments", "web", ns, propagation_policy="Background")
    assert not pending
    with pytest.raises(NotFoundError):
        await client.get("deployments", "web", ns)
    await client.create(_cm("x", ns))
    with pytest.raises(InvalidError) as bad:
        await client.delete("configmaps", "x", ns, propagation_policy="Sideways")
    assert "propagationPolicy" in str(bad.value)
    await client.get("configmaps", "x", ns)


async def test_pods_on_a_node_are_deleted_gracefully(client, ns):
    # Not on a node: gone at once.
    await client.create(make(POD_YAML, name="unbound", ns=ns))
    _, pending = await client.delete("pods", "unbound", ns)
    assert not pending
    with pytest.raises(NotFoundError):
        await client.get("pods", "unbound", ns)

    # On a node: pending with the pod's grace period, for its node agent.
    await client.create(make(POD_YAML, name="bound", ns=ns))
    await client.bind(ns, "bound", "node-1")
    doomed, pending = await client.delete("pods", "bound", ns)
    assert pending
    assert doomed.metadata.deletion_grace_period_seconds == 30
    stored = await client.get("pods", "bound", ns)
    assert stored.metadata.HasField("deletion_timestamp")
    assert stored.metadata.deletion_grace_period_seconds == 30
    # A shorter grace period shortens it; grace 0 deletes at once.
    shorter, pending = await client.delete("pods", "bound", ns, grace_period_seconds=5)
    assert pending and shorter.metadata.deletion_grace_period_seconds == 5
    assert shorter.metadata.deletion_timestamp.seconds == stored.metadata.deletion_timestamp.seconds - 25
    _, pending = await client.delete("pods", "bound", ns, grace_period_seconds=0)
    assert not pending
    with pytest.raises(NotFoundError):
        await client.get("pods", "bound", ns)

    # terminationGracePeriodSeconds of the pod is the default grace.
    quick = make(POD_YAML, name="quick", ns=ns)
    quick.spec.termination_grace_period_seconds = 3
    quick.spec.node_name = "node-1"
    await client.create(quick)
    doomed, pending = await client.delete("pods", "quick", ns)
    assert pending and doomed.metadata.deletion_grace_period_seconds == 3

    # Grace 0 on the first delete of a bound pod: gone at once.
    await client.create(make(POD_YAML, name="now", ns=ns))
    await client.bind(ns, "now", "node-1")
    _, pending = await client.delete("pods", "now", ns, grace_period_seconds=0)
    assert not pending
    with pytest.raises(NotFoundError):
        await client.get("pods", "now", ns)


# ------------------------------------------------------------------- binding


async def test_bind_sets_node_name_and_pod_scheduled_once(client, ns):
    created = await client.create(make(POD_YAML, name="web", ns=ns))
    assert created.spec.node_name == ""
    bound = await client.bind(ns, "web", "node-1")
    assert bound.spec.node_name == "node-1"
    assert rv(bound) > rv(created)
    scheduled = [c for c in bound.status.conditions if c.type == "PodScheduled"]
    assert len(scheduled) == 1 and scheduled[0].status == "True"
    assert bound.metadata.generation == created.metadata.generation
    stored = await client.get("pods", "web", ns)
    assert stored == bound

    with pytest.raises(FailedPreconditionError) as again:
        await client.bind(ns, "web", "node-2")
    assert "node-1" in str(again.value)
    assert (await client.get("pods", "web", ns)) == bound

    # Update may not move a pod either.
    moved = copy(bound)
    moved.spec.node_name = "node-2"
    with pytest.raises(InvalidError) as err:
        await client.update(moved)
    assert "spec.nodeName" in str(err.value)
    with pytest.raises(NotFoundError):
        await client.bind(ns, "nobody", "node-1")


# ---------------------------------------------------------------- namespaces


@pytest.mark.parametrize("kind_name", ["ConfigMap", "Pod", "Deployment"])
async def test_objects_in_a_missing_namespace_are_not_found(client, ns, kind_name):
    missing = f"{ns}-missing"
    obj = make(CASES[kind_name].manifest, name="orphan", ns=missing)
    with pytest.raises(NotFoundError) as err:
        await client.create(obj)
    assert missing in str(err.value)
    assert "namespace" in str(err.value)


async def test_a_terminating_namespace_refuses_new_objects(client, ns):
    await client.create(_cm("before", ns))
    deleted, pending = await client.delete("namespaces", ns)
    assert pending
    stored = await client.get("namespaces", ns)
    assert stored.status.phase == "Terminating"
    assert stored.metadata.HasField("deletion_timestamp")
    assert list(stored.spec.finalizers) == ["kubernetes"]

    with pytest.raises(ForbiddenError) as err:
        await client.create(_cm("after", ns))
    assert ns in str(err.value) and "terminat" in str(err.value)
    with pytest.raises(NotFoundError):
        await client.get("configmaps", "after", ns)
    # What was there stays readable (and deletable) for the namespace controller.
    await client.get("configmaps", "before", ns)
    await client.delete("configmaps", "before", ns)

    # The namespace controller's last step: clear spec.finalizers; the namespace goes.
    stored.ClearField("spec")
    await client.update(stored)
    with pytest.raises(NotFoundError):
        await client.get("namespaces", ns)
