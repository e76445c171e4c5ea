"""Node registration data and CRI configurations (node_agent/kubelet/node_status.py, cri_config.py)."""

from __future__ import annotations

import pytest

from kubeling.cri.v1 import api_pb2 as cri
from kubeling.objects import from_dict
from node_agent.kubelet import cri_config
from node_agent.kubelet.node_status import (ConfigError, NodeConfig, allocatable, node_status,
                                            parse_key_values, parse_reservations)


@pytest.mark.parametrize("capacity, reserved, expected", [
    ({"cpu": "4", "memory": "16Gi", "pods": "110"}, {}, {"cpu": "4", "memory": "16Gi", "pods": "110"}),
    ({"cpu": "4", "memory": "16Gi"}, {"cpu": "100m", "memory": "256Mi"}, {"cpu": "3900m", "memory": "16128Mi"}),
    ({"cpu": "1", "memory": "1Gi"}, {"cpu": "2", "memory": "2Gi"}, {"cpu": "0", "memory": "0"}),
    ({"cpu": "8", "memory": "8000000Ki", "pods": "110"}, {"pods": "10"},
     {"cpu": "8", "memory": "8000000Ki", "pods": "100"}),
], ids=["nothing-reserved", "cpu-and-memory", "never-negative", "pods"])
def test_allocatable_is_capacity_minus_reservations(capacity, reserved, expected):
    assert allocatable(capacity, reserved) == expected


@pytest.mark.parametrize("text, error", [
    ("cpu", "not key=value"), ("gpu=1", "unknown resource 'gpu'"), ("cpu=lots", "cpu"), ("memory=-1Gi", "negative"),
])
def test_bad_reservations_are_refused(text, error):
    with pytest.raises(ConfigError, match=error):
        parse_reservations(text)


def test_labels_flag():
    assert parse_key_values("a=1, b.example.com/x=y,", "--node-labels") == {"a": "1", "b.example.com/x": "y"}
    with pytest.raises(ConfigError, match="--node-labels"):
        parse_key_values("=x", "--node-labels")


def test_node_status_heartbeats_and_transitions():
    cfg = NodeConfig("n1", "192.0.2.9", {"cpu": "2"}, {"cpu": "1900m"}, {"role": "x"}, port=4242)
    first = node_status(cfg, False, "network plugin not ready: no pod CIDR", "kubeling://0.1.0")
    ready = next(c for c in first.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "KubeletNotReady",
                                                          "network plugin not ready: no pod CIDR")
    first.conditions[0].last_transition_time.seconds = 1  # pressure conditions: unchanged later
    second = node_status(cfg, True, "", "kubeling://0.1.0", first)
    assert second.conditions[0].last_transition_time.seconds == 1
    ready2 = next(c for c in second.conditions if c.type == "Ready")
    assert (ready2.status, ready2.reason) == ("True", "KubeletReady")
    assert {(a.type, a.address) for a in second.addresses} == {("InternalIP", "192.0.2.9"), ("Hostname", "n1")}
    assert second.daemon_endpoints.kubelet_endpoint.port == 4242
    assert cfg.all_labels()["kubernetes.io/hostname"] == "n1" and cfg.all_labels()["role"] == "x"


# -- CRI configurations --------------------------------------------------------------------


def pod(**spec):
    c = spec.pop("container", {})
    doc = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "img", **c}], **spec}}
    return from_dict(doc)


@pytest.mark.parametrize("resources, qos, expected", [
    ({}, "BestEffort", {"cpu_shares": 2, "oom_score_adj": 1000}),
    ({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "500m", "memory": "128Mi"}}, "Guaranteed",
     {"cpu_shares": 512, "cpu_quota": 50000, "cpu_period": 100000, "memory_limit_in_bytes": 128 << 20,
      "oom_score_adj": -997}),
    ({"requests": {"cpu": "250m", "memory": "1Gi"}}, "Burstable", {"cpu_shares": 256, "oom_score_adj": 750}),
    ({"limits": {"cpu": "1m"}}, "Burstable", {"cpu_shares": 2, "cpu_quota": 1000, "cpu_period": 100000,
                                              "oom_score_adj": 1000 - 1}),
], ids=["best-effort", "guaranteed", "burstable", "tiny-limit"])
def test_container_resources(resources, qos, expected):
    p = pod(container={"resources": resources})
    r = cri_config.linux_resources(p.spec.containers[0], qos, memory_capacity=4 << 30)
    got = {f.name: v for f, v in r.ListFields()}
    assert got == expected


def test_sandbox_config_identity_dns_ports_and_labels():
    p = pod(container={"ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]})
    cfg = cri_config.sandbox_config(p, 2, "/logs/shop_web_u1", "/kubepods/podu1", ["10.96.0.10"], "cluster.local")
    assert (cfg.metadata.name, cfg.metadata.namespace, cfg.metadata.uid, cfg.metadata.attempt) == ("web", "shop", "u1", 2)
    assert cfg.hostname == "web" and cfg.log_directory == "/logs/shop_web_u1"
    assert list(cfg.dns_config.servers) == ["10.96.0.10"]
    assert list(cfg.dns_config.searches) == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert list(cfg.dns_config.options) == ["ndots:5"]
    assert [(m.container_port, m.host_port, m.protocol) for m in cfg.port_mappings] == [(80, 8080, cri.TCP)]
    assert cfg.labels["io.kubernetes.pod.uid"] == "u1" and cfg.labels["app"] == "web"
    assert cfg.linux.cgroup_parent == "/kubepods/podu1"
    no_dns = cri_config.sandbox_config(p, 0, "/l", "", [], "cluster.local")
    assert not no_dns.HasField("dns_config")  # the node's resolv.conf


def test_container_config_identity_log_path_and_hash():
    p = pod(container={"workingDir": "/srv", "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": True,
                                                                 "allowPrivilegeEscalation": False}})
    c = p.spec.containers[0]
    cfg = cri_config.container_config(p, c, kind="app", attempt=3, image_ref="sha256:1", command=["a"],
                                      args=["b"], env=[("K", "V")], mounts=[])
    assert (cfg.metadata.name, cfg.metadata.attempt, cfg.log_path) == ("c", 3, "c/3.log")
    assert cfg.image.image == "sha256:1" and cfg.image.user_specified_image == "img"
    assert cfg.labels["io.kubernetes.container.name"] == "c"
    assert cfg.annotations["io.kubernetes.container.restartCount"] == "3"
    sc = cfg.linux.security_context
    assert sc.run_as_user.value == 1000 and sc.readonly_rootfs and sc.no_new_privs
    assert cfg.annotations["io.kubernetes.container.hash"] == cri_config.container_hash(c)
    c.image = "img:2"
    assert cri_config.container_hash(c) != cfg.annotations["io.kubernetes.container.hash"]
