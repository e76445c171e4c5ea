"""Builds a container's OCI runtime spec (config.json) from its CRI config.

Pure: everything it needs is passed in, so unit tests call it directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kubeling.cri.v1 import api_pb2
from node_agent.runtime import seccomp
from node_agent.runtime.errors import InvalidArgument

# runc's own default capability set (`runc spec`).
DEFAULT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# runc's defaults (`runc spec`).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass
class User:
    uid: int
    gid: int
    additional_gids: list[int]


def process_args(image_config: dict, command: list[str], args: list[str]) -> list[str]:
    """Entrypoint + cmd, Docker's way: `command` replaces the entrypoint and drops the image's cmd."""
    entrypoint = list(command) if command else list(image_config.get("Entrypoint") or [])
    if args:
        cmd = list(args)
    elif command:
        cmd = []
    else:
        cmd = list(image_config.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise InvalidArgument("command: neither the container config nor the image gives a command")
    return argv


def environment(image_config: dict, envs, hostname: str) -> list[str]:
    """Image env, then the container's (same keys replaced), with PATH and HOSTNAME defaulted."""
    merged: dict[str, str] = {}
    for item in image_config.get("Env") or []:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH.split("=", 1)[1])
    merged.setdefault("HOSTNAME", hostname)
    for kv in envs:
        if not kv.key or "=" in kv.key:
            raise InvalidArgument(f"envs: invalid variable name {kv.key!r}")
        merged[kv.key] = kv.value
    return [f"{k}={v}" for k, v in merged.items()]


def _lookup(rootfs: Path, name: str) -> list[list[str]]:
    """Rows of the image's /etc/`name`, read without following links out of the rootfs."""
    path = rootfs / "etc" / name
    real = os.path.realpath(path)
    if not real.startswith(str(rootfs.resolve()) + os.sep):
        return []
    try:
        with open(real) as f:
            return [line.strip().split(":") for line in f if line.count(":") >= 2]
    except OSError:
        return []


def resolve_user(rootfs: Path, image_user: str, run_as_user: int | None,
                 run_as_group: int | None, run_as_username: str,
                 supplemental: list[int]) -> User:
    """The uid/gid a container runs as: the security context first, then the image's User."""
    passwd = _lookup(rootfs, "passwd")
    groups = _lookup(rootfs, "group")

    def by_name(name: str) -> tuple[int, int]:
        for row in passwd:
            if row[0] == name and len(row) >= 4:
                return int(row[2]), int(row[3])
        raise InvalidArgument(f"user {name!r} not found in the image's /etc/passwd")

    def gid_of(uid: int) -> int:
        for row in passwd:
            if len(row) >= 4 and row[2] == str(uid):
                return int(row[3])
        return 0

    if run_as_user is not None:
        uid, gid = run_as_user, gid_of(run_as_user)
    elif run_as_username:
        uid, gid = by_name(run_as_username)
    else:
        user, _, group = (image_user or "").partition(":")
        if not user:
            uid, gid = 0, 0
        elif user.isdigit():
            uid, gid = int(user), gid_of(int(user))
        else:
            uid, gid = by_name(user)
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                hits = [int(r[2]) for r in groups if r[0] == group and len(r) >= 3]
                if not hits:
                    raise InvalidArgument(f"group {group!r} not found in the image's /etc/group")
                gid = hits[0]
    if run_as_group is not None:
        gid = run_as_group
    if uid < 0 or gid < 0:
        raise InvalidArgument("run_as_user/run_as_group: must not be negative")
    return User(uid, gid, [g for g in supplemental])


def capabilities(cap: api_pb2.Capability | None) -> list[str]:
    def norm(name: str) -> str:
        name = name.upper()
        return name if name.startswith("CAP_") or name == "ALL" else f"CAP_{name}"

    caps = list(DEFAULT_CAPABILITIES)
    if cap is None:
        return caps
    drops = [norm(c) for c in cap.drop_capabilities]
    adds = [norm(c) for c in cap.add_capabilities]
    for name in adds + drops:
        if name != "ALL" and name not in ALL_CAPABILITIES:
            raise InvalidArgument(f"capabilities: unknown capability {name!r}")
    if "ALL" in drops:
        caps = []
    caps = [c for c in caps if c not in drops]
    if "ALL" in adds:
        caps = list(ALL_CAPABILITIES)
    for name in adds:
        if name != "ALL" and name not in caps:
            caps.append(name)
    return caps


def validate_resources(r: api_pb2.LinuxContainerResources) -> None:
    """INVALID_ARGUMENT for values the kernel would refuse or misread."""
    if r.cpu_period and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidArgument(f"resources.cpu_period: {r.cpu_period} is outside 1000..1000000 µs")
    if r.cpu_quota < 0 and r.cpu_quota != -1:
        raise InvalidArgument(f"resources.cpu_quota: {r.cpu_quota} is negative")
    if r.cpu_quota and 0 < r.cpu_quota < 1000:
        raise InvalidArgument(f"resources.cpu_quota: {r.cpu_quota} is below 1000 µs")
    if r.cpu_shares and not 2 <= r.cpu_shares <= 262144:
        raise InvalidArgument(f"resources.cpu_shares: {r.cpu_shares} is outside 2..262144")
    if r.memory_limit_in_bytes < 0:
        raise InvalidArgument(f"resources.memory_limit_in_bytes: {r.memory_limit_in_bytes} is negative")
    if 0 < r.memory_limit_in_bytes < 4 * 1024 * 1024:
        raise InvalidArgument(
            f"resources.memory_limit_in_bytes: {r.memory_limit_in_bytes} is below the 4 MiB minimum")
    if r.memory_swap_limit_in_bytes and r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes:
        raise InvalidArgument("resources.memory_swap_limit_in_bytes: smaller than the memory limit")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument(f"resources.oom_score_adj: {r.oom_score_adj} is outside -1000..1000")
    for name, value in (("cpuset_cpus", r.cpuset_cpus), ("cpuset_mems", r.cpuset_mems)):
        if value and not all(c in "0123456789,-" for c in value):
            raise InvalidArgument(f"resources.{name}: {value!r} is not a CPU list like 0-1,3")


def resources(r: api_pb2.LinuxContainerResources | None, swap_controller: bool) -> dict:
    """The OCI `linux.resources` object for `r`."""
    out: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if r is None:
        return out
    validate_resources(r)
    cpu: dict = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes:
        memory = {"limit": r.memory_limit_in_bytes}
        if swap_controller:
            # Without this the limit would let the container swap instead of being OOM killed.
            memory["swap"] = r.memory_swap_limit_in_bytes or r.memory_limit_in_bytes
        out["memory"] = memory
    return out


def default_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def user_mounts(mounts) -> list[dict]:
    """Bind mounts for the CRI mounts; the host path must exist."""
    out = []
    for i, m in enumerate(mounts):
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mounts[{i}].container_path: {m.container_path!r} is not absolute")
        if not m.host_path.startswith("/"):
            raise InvalidArgument(f"mounts[{i}].host_path: {m.host_path!r} is not absolute")
        if not os.path.exists(m.host_path):
            raise InvalidArgument(f"mounts[{i}].host_path: {m.host_path!r} does not exist on the node")
        options = ["rbind", "ro" if m.readonly else "rw", _PROPAGATION.get(m.propagation, "rprivate")]
        out.append({"destination": os.path.normpath(m.container_path), "type": "bind",
                    "source": m.host_path, "options": options})
    return out


def build(*, args: list[str], env: list[str], cwd: str, user: User, hostname: str,
          rootfs: Path, readonly_rootfs: bool, mounts: list[dict], netns_path: str | None,
          cgroups_path: str, linux_resources: dict, caps: list[str], oom_score_adj: int,
          masked_paths: list[str], readonly_paths: list[str], seccomp_profile: dict | None) -> dict:
    """The whole config.json."""
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if netns_path:
        namespaces.append({"type": "network", "path": netns_path})
    # Mounts the user gives replace the defaults at the same destination.
    taken = {m["destination"] for m in mounts}
    all_mounts = [m for m in default_mounts() if m["destination"] not in taken] + mounts
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid,
                     **({"additionalGids": user.additional_gids} if user.additional_gids else {})},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
            "oomScoreAdj": oom_score_adj,
        },
        "root": {"path": str(rootfs), "readonly": readonly_rootfs},
        "hostname": hostname,
        "mounts": all_mounts,
        "linux": {
            "resources": linux_resources,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": masked_paths,
            "readonlyPaths": readonly_paths,
        },
    }
    if seccomp_profile is not None:
        spec["linux"]["seccomp"] = seccomp_profile
    return spec


def seccomp_for(profile: api_pb2.SecurityProfile | None) -> dict | None:
    if profile is None or profile.profile_type == api_pb2.SecurityProfile.RuntimeDefault:
        return seccomp.default_profile()
    if profile.profile_type == api_pb2.SecurityProfile.Unconfined:
        return None
    import json
    try:
        with open(profile.localhost_ref) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"seccomp.localhost_ref: {profile.localhost_ref!r}: {e}") from None
