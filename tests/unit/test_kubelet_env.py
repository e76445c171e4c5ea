"""Container environment resolution (node_agent/kubelet/container_env.py)."""

from __future__ import annotations

import pytest

from kubeling.objects import from_dict
from node_agent.kubelet.container_env import EnvError, build_env, expand, references


def pod_with(env=None, env_from=None, resources=None):
    container = {"name": "app", "image": "img"}
    if env is not None:
        container["env"] = env
    if env_from is not None:
        container["envFrom"] = env_from
    if resources is not None:
        container["resources"] = resources
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                                   "labels": {"app": "web"}, "annotations": {"team": "blue"}},
                      "spec": {"nodeName": "node-2", "serviceAccountName": "sa", "containers": [container]}})


CMS = {"settings": from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                              "data": {"COLOR": "blue", "size": "10", "1bad": "x"}})}
SECRETS = {"creds": from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                               "data": {"password": "czNjcmV0"}})}  # "s3cret"


def resolve(pod, allocatable=None):
    return dict(build_env(pod.spec.containers[0], pod, pod_ip="10.1.2.3", host_ip="192.0.2.7",
                          config_maps=CMS, secrets=SECRETS, node_allocatable=allocatable or {}))


@pytest.mark.parametrize("var, expected", [
    ({"name": "V", "value": "plain"}, "plain"),
    ({"name": "V", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}}}, "blue"),
    ({"name": "V", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}, "s3cret"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, "web-1"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}, "shop"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}, "u-1"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}, "web"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}}, "blue"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, "10.1.2.3"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}, "192.0.2.7"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}, "node-2"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}, "sa"),
], ids=["value", "configmap-key", "secret-key", "name", "namespace", "uid", "label", "annotation",
        "pod-ip", "host-ip", "node-name", "service-account"])
def test_one_variable_from_each_source(var, expected):
    assert resolve(pod_with(env=[var]))["V"] == expected


@pytest.mark.parametrize("var, message", [
    ({"name": "V", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}, 'configmap "nope" not found'),
    ({"name": "V", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}},
     "couldn't find key k in ConfigMap shop/settings"),
    ({"name": "V", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}, 'secret "nope" not found'),
    ({"name": "V", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
     "couldn't find key k in Secret shop/creds"),
    ({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}, "unsupported fieldRef path"),
], ids=["missing-configmap", "missing-cm-key", "missing-secret", "missing-secret-key", "bad-field"])
def test_missing_sources_are_config_errors(var, message):
    with pytest.raises(EnvError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(pod_with(env=[var]))


@pytest.mark.parametrize("var", [
    {"name": "V", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
    {"name": "V", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k", "optional": True}}},
    {"name": "V", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k", "optional": True}}},
], ids=["configmap", "cm-key", "secret-key"])
def test_optional_sources_that_are_missing_are_left_out(var):
    assert "V" not in resolve(pod_with(env=[var]))


def test_env_from_with_prefix_then_env_overrides():
    env = resolve(pod_with(
        env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}, {"secretRef": {"name": "creds"}},
                  {"configMapRef": {"name": "absent", "optional": True}}],
        env=[{"name": "password", "value": "overridden"}]))
    assert env["CM_COLOR"] == "blue" and env["CM_size"] == "10" and env["CM_1bad"] == "x"
    assert env["password"] == "overridden"


def test_env_from_skips_keys_that_are_not_variable_names():
    env = resolve(pod_with(env_from=[{"configMapRef": {"name": "settings"}}]))
    assert "1bad" not in env and env["COLOR"] == "blue"


def test_env_from_a_missing_config_map_is_an_error():
    with pytest.raises(EnvError, match='configmap "absent" not found'):
        resolve(pod_with(env_from=[{"configMapRef": {"name": "absent"}}]))


@pytest.mark.parametrize("text, expected", [
    ("$(A)", "1"), ("x$(A)y$(B)z", "x1y2z"), ("$$(A)", "$(A)"), ("$(UNSET)", "$(UNSET)"),
    ("$(A", "$(A"), ("cost: $5", "cost: $5"), ("$", "$"), ("$$$(A)", "$1"),
], ids=["simple", "two", "escaped", "unknown-kept", "unclosed", "lone-dollar", "trailing", "escape-then-ref"])
def test_variable_expansion(text, expected):
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_values_refer_to_earlier_variables_only():
    env = resolve(pod_with(env=[{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)-$(C)"},
                                {"name": "C", "value": "c"}]))
    assert env["B"] == "a-$(C)"


@pytest.mark.parametrize("resource, divisor, resources, expected", [
    ("limits.cpu", "1m", {"limits": {"cpu": "500m"}}, "500"),
    ("limits.cpu", "", {"limits": {"cpu": "1500m"}}, "2"),   # rounded up
    ("limits.memory", "1Mi", {"limits": {"memory": "64Mi"}}, "64"),
    ("requests.memory", "", {"requests": {"memory": "1Ki"}}, "1024"),
    ("limits.cpu", "", {}, "4"),                               # node allocatable
    ("requests.cpu", "1m", {}, "0"),
], ids=["cpu-millis", "cpu-cores-ceil", "memory-mi", "memory-bytes", "limit-defaults-to-node", "no-request"])
def test_resource_fields(resource, divisor, resources, expected):
    ref = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    env = resolve(pod_with(env=[{"name": "R", "valueFrom": {"resourceFieldRef": ref}}], resources=resources),
                  allocatable={"cpu": "4", "memory": "8Gi"})
    assert env["R"] == expected


def test_references_name_every_config_map_and_secret():
    pod = pod_with(env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "one", "key": "k"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "two", "key": "k"}}}],
                   env_from=[{"configMapRef": {"name": "three"}}, {"secretRef": {"name": "four"}}])
    refs = references(pod.spec.containers)
    assert refs.config_maps == {"one", "three"} and refs.secrets == {"two", "four"}
