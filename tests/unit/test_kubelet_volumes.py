"""Pod volumes on disk (node_agent/kubelet/volumes.py), in a temporary directory."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from kubeling.objects import from_dict
from node_agent.kubelet.volumes import VolumeError, VolumeManager, payload, write_atomic

CM = from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                "data": {"a.conf": "A", "b.conf": "B"}, "binaryData": {"blob": "AAE="}})
SECRET = from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                    "data": {"password": "cHc="}})


def volume(source: dict):
    return from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                      "spec": {"containers": [{"name": "c", "image": "i"}],
                               "volumes": [{"name": "v", **source}]}}).spec.volumes[0]


@pytest.mark.parametrize("source, files", [
    ({"configMap": {"name": "cfg"}}, {"a.conf": (b"A", 0o644), "b.conf": (b"B", 0o644), "blob": (b"\0\1", 0o644)}),
    ({"configMap": {"name": "cfg", "defaultMode": 0o600}}, {"a.conf": (b"A", 0o600), "b.conf": (b"B", 0o600),
                                                           "blob": (b"\0\1", 0o600)}),
    ({"configMap": {"name": "cfg", "items": [{"key": "a.conf", "path": "etc/app.conf", "mode": 0o640}]}},
     {"etc/app.conf": (b"A", 0o640)}),
    ({"secret": {"secretName": "sec"}}, {"password": (b"pw", 0o400)}),
    ({"secret": {"secretName": "sec", "defaultMode": 0o644}}, {"password": (b"pw", 0o400)}),  # the API's default
    ({"secret": {"secretName": "sec", "defaultMode": 0o440}}, {"password": (b"pw", 0o440)}),
    ({"configMap": {"name": "absent", "optional": True}}, None),
], ids=["configmap", "default-mode", "items", "secret-0400", "secret-api-default", "secret-mode", "optional-absent"])
def test_payload_files_and_modes(source, files):
    assert payload(volume(source), {"cfg": CM}, {"sec": SECRET}, "ns") == files


@pytest.mark.parametrize("source, message", [
    ({"configMap": {"name": "absent"}}, 'configmap "absent" not found'),
    ({"secret": {"secretName": "absent"}}, 'secret "absent" not found'),
    ({"configMap": {"name": "cfg", "items": [{"key": "nope", "path": "x"}]}}, "has no key 'nope'"),
    ({"configMap": {"name": "cfg", "items": [{"key": "a.conf", "path": "../escape"}]}}, "invalid path"),
], ids=["missing-configmap", "missing-secret", "missing-key", "path-escape"])
def test_payload_errors(source, message):
    with pytest.raises(VolumeError, match=message):
        payload(volume(source), {"cfg": CM}, {"sec": SECRET}, "ns")


def test_atomic_writes_swap_every_file_at_once(tmp_path):
    target = tmp_path / "vol"
    assert write_atomic(target, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    assert (target / "a").read_bytes() == b"1" and (target / "d" / "b").read_bytes() == b"2"
    assert os.readlink(target / "a") == "..data/a"
    first = os.readlink(target / "..data")
    assert not write_atomic(target, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})  # unchanged: untouched
    assert os.readlink(target / "..data") == first
    assert write_atomic(target, {"a": (b"3", 0o644)})
    assert (target / "a").read_bytes() == b"3"
    assert not (target / "d").exists()                      # removed key, removed name
    assert not (target / first).exists()                    # the old generation is gone
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o644


def pod(volumes, uid="uid-1"):
    return from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": uid},
                      "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
                          {"name": v["name"], "mountPath": f"/m/{v['name']}"} for v in volumes]}],
                          "volumes": volumes}})


def test_setup_mounts_and_teardown(tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    vm = VolumeManager(tmp_path / "pods")
    p = pod([{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
             {"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}}])
    prepared = vm.setup(p, {"cfg": CM}, {})
    assert stat.S_IMODE(os.stat(tmp_path / "pods").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(vm.pod_dir("uid-1")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(prepared["scratch"].path).st_mode) == 0o777
    mounts = {m.container_path: m for m in vm.mounts(p.spec.containers[0], prepared)}
    assert mounts["/m/cfg"].readonly and not mounts["/m/scratch"].readonly
    assert mounts["/m/host"].host_path == str(host_dir)
    (prepared["scratch"].path / "data").write_text("x")
    vm.setup(p, {"cfg": CM}, {})                 # again: idempotent, data kept
    assert (prepared["scratch"].path / "data").read_text() == "x"
    vm.teardown("uid-1")
    assert not vm.pod_dir("uid-1").exists() and host_dir.exists()
    vm.teardown("uid-1")                         # and again


def test_a_missing_source_names_the_volume(tmp_path):
    vm = VolumeManager(tmp_path / "pods")
    with pytest.raises(VolumeError, match='MountVolume.SetUp failed for volume "cfg" : configmap "cfg" not found'):
        vm.setup(pod([{"name": "cfg", "configMap": {"name": "cfg"}}]), {}, {})


@pytest.mark.parametrize("type_, make, ok", [
    ("Directory", "dir", True), ("Directory", "file", False), ("Directory", None, False),
    ("DirectoryOrCreate", None, True), ("File", "file", True), ("File", "dir", False),
    ("FileOrCreate", None, True), ("Socket", "socket", True), ("Socket", "file", False),
    ("", "dir", True), ("", None, False), ("Weird", "dir", False),
], ids=lambda x: str(x))
def test_host_path_types(tmp_path, type_, make, ok):
    path = tmp_path / "thing"
    if make == "dir":
        path.mkdir()
    elif make == "file":
        path.write_text("")
    elif make == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    vm = VolumeManager(tmp_path / "pods")
    p = pod([{"name": "h", "hostPath": {"path": str(path), "type": type_}}])
    if ok:
        assert vm.setup(p, {}, {})["h"].path == path
        assert path.exists()
    else:
        with pytest.raises(VolumeError):
            vm.setup(p, {}, {})


def test_sub_paths_stay_inside_their_volume(tmp_path):
    vm = VolumeManager(tmp_path / "pods")
    p = from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"},
                   "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
                       {"name": "s", "mountPath": "/a", "subPath": "logs/app"},
                       {"name": "s", "mountPath": "/b", "subPath": "../../etc"}]}],
                       "volumes": [{"name": "s", "emptyDir": {}}]}})
    prepared = vm.setup(p, {}, {})
    c = p.spec.containers[0]
    with pytest.raises(VolumeError, match="invalid path"):
        vm.mounts(c, prepared)
    del c.volume_mounts[1]
    (m,) = vm.mounts(c, prepared)
    assert m.host_path == str(prepared["s"].path / "logs" / "app") and os.path.isdir(m.host_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_secret_volumes_live_in_memory_and_go_with_the_pod(tmp_path):
    vm = VolumeManager(tmp_path / "pods")
    p = pod([{"name": "sec", "secret": {"secretName": "sec"}}])
    try:
        prepared = vm.setup(p, {}, {"sec": SECRET})
        path = prepared["sec"].path
        assert os.path.ismount(path)
        assert (path / "password").read_bytes() == b"pw"
        vm.setup(p, {}, {"sec": SECRET})        # again: one mount, not two
        with open("/proc/self/mountinfo") as f:
            assert sum(1 for line in f if line.split()[4] == str(path)) == 1
    finally:
        vm.teardown("uid-1")
    assert not path.exists()
