"""Thin wrappers over the Linux calls the runtime makes: mounts, network
namespaces pinned by bind mounts, and cgroup files (v1 and v2)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def unmount(target: str | Path) -> bool:
    """Lazily unmounts `target`; True if something was mounted there. Idempotent."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def mount_overlay(lower: list[Path], upper: Path, work: Path, target: Path) -> None:
    """overlayfs at `target`: `lower` bottom first (overlayfs lists the top one first)."""
    lowerdir = ":".join(str(p) for p in reversed(lower))
    mount("overlay", str(target), "overlay", 0,
          f"lowerdir={lowerdir},upperdir={upper},workdir={work}")


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def create_netns(pin: Path) -> None:
    """A new network namespace with loopback up, pinned by a bind mount on `pin`."""
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.touch()
    # unshare binds the new namespace on the file, then runs `ip` inside it.
    proc = subprocess.run(["unshare", f"--net={pin}", "ip", "link", "set", "lo", "up"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        remove_netns(pin)
        raise OSError(f"creating network namespace at {pin}: {proc.stderr.strip()}")


def remove_netns(pin: Path) -> None:
    """Unpins and deletes the namespace file; idempotent."""
    try:
        while unmount(pin):
            pass
    except OSError:
        pass
    try:
        pin.unlink()
    except FileNotFoundError:
        pass


def set_netns_sysctl(pin: Path, key: str, value: str) -> None:
    """Writes a net.* sysctl inside the pinned namespace."""
    path = "/proc/sys/" + key.replace(".", "/")
    proc = subprocess.run(["nsenter", f"--net={pin}", "--", "sh", "-c", 'printf %s "$2" > "$1"',
                           "sh", path, value], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"sysctl {key}={value}: {proc.stderr.strip()}")


# ---- cgroups ------------------------------------------------------------------------------

def cgroup_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroup_dirs(path: str) -> list[Path]:
    """Every directory that holds cgroup `path` (one per v1 hierarchy, or the one v2 dir)."""
    rel = path.strip("/")
    if cgroup_v2():
        return [CGROUP_ROOT / rel]
    dirs = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if hierarchy.name == "unified" or not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        dirs.append(hierarchy / rel)
    return dirs


def remove_cgroup(path: str) -> list[str]:
    """Removes cgroup `path` and its children in every hierarchy; returns what could not go."""
    left = []
    tops = cgroup_dirs(path)
    if not cgroup_v2():
        # On a hybrid host runc also makes the cgroup in the v2 "unified" mount.
        tops.append(CGROUP_ROOT / "unified" / path.strip("/"))
    for top in tops:
        if not top.exists():
            continue
        for dirpath, dirnames, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                left.append(f"{dirpath}: {e.strerror}")
    return left


def move_to_cgroup(pid: int, path: str) -> None:
    """Best effort: moves `pid` into cgroup `path` in every hierarchy where that cgroup exists."""
    for d in cgroup_dirs(path):
        try:
            (d / "cgroup.procs").write_text(str(pid))
        except OSError:
            pass


def existing_cgroups(path: str) -> list[str]:
    return [str(d) for d in cgroup_dirs(path) if d.exists()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def cgroup_stats(path: str) -> dict[str, int]:
    """cpu_ns, memory usage, working set, rss, faults, limit and oom kills of cgroup `path`."""
    rel = path.strip("/")
    stats: dict[str, int] = {}
    if cgroup_v2():
        d = CGROUP_ROOT / rel
        cpu = _kv(_read(d / "cpu.stat"))
        if "usage_usec" in cpu:
            stats["cpu_ns"] = cpu["usage_usec"] * 1000
        mem = _kv(_read(d / "memory.stat"))
        current = _read(d / "memory.current")
        if current is not None:
            usage = int(current)
            stats["usage"] = usage
            stats["working_set"] = max(0, usage - mem.get("inactive_file", 0))
            stats["rss"] = mem.get("anon", 0)
            stats["page_faults"] = mem.get("pgfault", 0)
            stats["major_page_faults"] = mem.get("pgmajfault", 0)
        limit = (_read(d / "memory.max") or "max").strip()
        if limit.isdigit():
            stats["limit"] = int(limit)
        events = _kv(_read(d / "memory.events"))
        stats["oom_kills"] = events.get("oom_kill", 0)
        return stats
    usage = _read(CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage")
    if usage is not None:
        stats["cpu_ns"] = int(usage)
    mdir = CGROUP_ROOT / "memory" / rel
    current = _read(mdir / "memory.usage_in_bytes")
    if current is not None:
        mem = _kv(_read(mdir / "memory.stat"))
        used = int(current)
        stats["usage"] = used
        stats["working_set"] = max(0, used - mem.get("total_inactive_file", 0))
        stats["rss"] = mem.get("total_rss", 0)
        stats["page_faults"] = mem.get("total_pgfault", 0)
        stats["major_page_faults"] = mem.get("total_pgmajfault", 0)
        limit = int((_read(mdir / "memory.limit_in_bytes") or "0").strip() or 0)
        if 0 < limit < (1 << 62):
            stats["limit"] = limit
        stats["oom_kills"] = _kv(_read(mdir / "memory.oom_control")).get("oom_kill", 0)
    return stats
