"""Building the OCI runtime spec from a CRI container config."""

from pathlib import Path

import pytest

from kubeling.cri.v1 import api_pb2 as pb
from node_agent.runtime import oci_spec, seccomp
from node_agent.runtime.errors import InvalidArgument


@pytest.mark.parametrize("image, command, args, expected", [
    ({"Entrypoint": ["ep"], "Cmd": ["c1"]}, [], [], ["ep", "c1"]),
    ({"Entrypoint": ["ep"], "Cmd": ["c1"]}, ["cmd"], [], ["cmd"]),
    ({"Entrypoint": ["ep"], "Cmd": ["c1"]}, [], ["a"], ["ep", "a"]),
    ({"Entrypoint": ["ep"], "Cmd": ["c1"]}, ["cmd"], ["a"], ["cmd", "a"]),
    ({"Cmd": ["sh"]}, [], [], ["sh"]),
], ids=["image-only", "command-drops-image-cmd", "args-replace-cmd", "both", "cmd-only"])
def test_process_args_follow_docker_rules(image, command, args, expected):
    assert oci_spec.process_args(image, command, args) == expected


def test_no_command_at_all_is_invalid():
    with pytest.raises(InvalidArgument, match="command"):
        oci_spec.process_args({}, [], [])


def test_environment_overrides_image_and_defaults_path_and_hostname():
    env = oci_spec.environment({"Env": ["A=1", "B=2"]}, [pb.KeyValue(key="B", value="3")], "pod-a")
    assert "A=1" in env and "B=3" in env and "B=2" not in env
    assert "HOSTNAME=pod-a" in env and any(e.startswith("PATH=") for e in env)
    with pytest.raises(InvalidArgument):
        oci_spec.environment({}, [pb.KeyValue(key="A=B", value="x")], "h")


def test_capabilities_start_from_runcs_default_set():
    assert oci_spec.capabilities(None) == list(oci_spec.DEFAULT_CAPABILITIES)
    caps = oci_spec.capabilities(pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"]))
    assert "CAP_NET_ADMIN" in caps and "CAP_KILL" not in caps
    assert oci_spec.capabilities(pb.Capability(drop_capabilities=["ALL"])) == []
    with pytest.raises(InvalidArgument, match="unknown capability"):
        oci_spec.capabilities(pb.Capability(add_capabilities=["CAP_MAGIC"]))


@pytest.mark.parametrize("field, value", [
    ("memory_limit_in_bytes", -1), ("memory_limit_in_bytes", 1000), ("cpu_shares", 1),
    ("cpu_period", 10), ("cpu_quota", 5), ("oom_score_adj", 5000), ("cpuset_cpus", "all"),
])
def test_bad_resource_values_are_refused_with_the_field_named(field, value):
    with pytest.raises(InvalidArgument, match=field):
        oci_spec.validate_resources(pb.LinuxContainerResources(**{field: value}))


def test_resources_map_to_oci_and_pin_swap_to_the_memory_limit():
    r = pb.LinuxContainerResources(cpu_quota=50000, cpu_period=100000, cpu_shares=512,
                                   memory_limit_in_bytes=64 << 20, cpuset_cpus="0")
    out = oci_spec.resources(r, swap_controller=True)
    assert out["cpu"] == {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"}
    assert out["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert "swap" not in oci_spec.resources(r, swap_controller=False)["memory"]
    assert out["devices"] == [{"allow": False, "access": "rwm"}]


def test_user_mounts_require_existing_absolute_host_paths(tmp_path):
    ok = oci_spec.user_mounts([pb.Mount(container_path="/data", host_path=str(tmp_path), readonly=True)])
    assert ok == [{"destination": "/data", "type": "bind", "source": str(tmp_path),
                   "options": ["rbind", "ro", "rprivate"]}]
    with pytest.raises(InvalidArgument, match="does not exist"):
        oci_spec.user_mounts([pb.Mount(container_path="/data", host_path=str(tmp_path / "nope"))])
    with pytest.raises(InvalidArgument, match="not absolute"):
        oci_spec.user_mounts([pb.Mount(container_path="data", host_path=str(tmp_path))])


@pytest.fixture
def rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    return tmp_path


@pytest.mark.parametrize("image_user, run_as_user, run_as_group, username, expected", [
    ("", None, None, "", (0, 0)),
    ("app", None, None, "", (1000, 1001)),
    ("1000", None, None, "", (1000, 1001)),
    ("app:staff", None, None, "", (1000, 50)),
    ("5:6", None, None, "", (5, 6)),
    ("app", 7, None, "", (7, 0)),
    ("", None, None, "app", (1000, 1001)),
    ("", 1000, 9, "", (1000, 9)),
], ids=["default-root", "image-name", "image-uid", "image-name-group", "numeric-pair",
        "run-as-user-wins", "run-as-username", "run-as-group"])
def test_user_resolution(rootfs, image_user, run_as_user, run_as_group, username, expected):
    u = oci_spec.resolve_user(rootfs, image_user, run_as_user, run_as_group, username, [])
    assert (u.uid, u.gid) == expected


def test_unknown_user_names_are_refused(rootfs):
    with pytest.raises(InvalidArgument, match="not found"):
        oci_spec.resolve_user(rootfs, "ghost", None, None, "", [])


def test_passwd_symlinked_out_of_the_rootfs_is_not_read(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "host-passwd"
    outside.write_text("app:x:4242:4242::/:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to(outside)
    with pytest.raises(InvalidArgument):
        oci_spec.resolve_user(root, "app", None, None, "", [])


def test_spec_is_hardened_by_default(tmp_path):
    spec = oci_spec.build(
        args=["sh"], env=["A=1"], cwd="/", user=oci_spec.User(0, 0, []), hostname="h",
        rootfs=tmp_path, readonly_rootfs=False, mounts=[], netns_path="/run/ns", cgroups_path="/k/p/c",
        linux_resources=oci_spec.resources(None, True), caps=oci_spec.capabilities(None),
        oom_score_adj=0, masked_paths=list(oci_spec.MASKED_PATHS),
        readonly_paths=list(oci_spec.READONLY_PATHS), seccomp_profile=seccomp.default_profile())
    assert spec["process"]["noNewPrivileges"] is True
    assert {"type": "network", "path": "/run/ns"} in spec["linux"]["namespaces"]
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    denied = spec["linux"]["seccomp"]["syscalls"][0]
    assert denied["action"] == "SCMP_ACT_ERRNO" and "mount" in denied["names"] and "kexec_load" in denied["names"]
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert {m["destination"] for m in spec["mounts"]} >= {"/proc", "/dev", "/sys", "/dev/pts", "/dev/shm"}
