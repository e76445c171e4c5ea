"""Pod volumes on the node: made before the pod's containers, bind-mounted
into them through CRI mounts, removed with the pod.

Layout, under the node agent's state directory (`pods/`, mode 0700, so
nothing below it is reachable by other users of the node, whatever the
modes of the files themselves):

    pods/<pod uid>/volumes/<volume name>/     one directory per volume

- emptyDir: an empty directory (mode 0777, as Kubernetes makes it), or a
  tmpfs for `medium: Memory` (sized by `sizeLimit`); removed with the pod.
- hostPath: the node's path itself, checked against `type` (Directory,
  DirectoryOrCreate, File, FileOrCreate, Socket, CharDevice, BlockDevice).
- configMap and secret: one file per key (or per `items` entry, at its
  `path`), written atomically the way Kubernetes' AtomicWriter does: the
  files live in a timestamped directory that the `..data` symlink points
  to, and each visible name is a symlink through `..data`, so an update
  swaps every file at once and running containers see it (except through
  a subPath mount, as in Kubernetes). File modes come from `items[].mode`,
  then `defaultMode`; secret files default to 0400 (the API server fills
  in 0644 when the manifest says nothing, so 0644 on a secret volume is
  read as "not set"). Both are mounted read-only. A secret volume is a
  tmpfs of its own, so secrets are never written to the node's disk.

`setup` is idempotent and is called on every sync of a running pod, so
changed ConfigMaps and Secrets reach their volumes within a sync period.
A missing ConfigMap, Secret or key that is not optional raises
`VolumeError` (reported as a FailedMount event; the pod waits).
"""

from __future__ import annotations

import contextlib
import os
import secrets as _secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from google.protobuf.message import Message

from kubeling.cri.v1 import api_pb2
from kubeling.quantity import QuantityError, parse_quantity

API_DEFAULT_MODE = 0o644
SECRET_DEFAULT_MODE = 0o400
DATA_LINK = "..data"


class VolumeError(Exception):
    """A volume that cannot be set up; the message names the volume and why."""


@dataclass
class PreparedVolume:
    """A volume ready to be mounted: where it is on the node."""

    name: str
    path: Path
    read_only: bool = False  # forced read-only (configMap, secret)
    kind: str = "emptyDir"


def references(pod: Message) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) the pod's volumes need."""
    cms, secs = set(), set()
    for v in pod.spec.volumes:
        if v.HasField("config_map"):
            cms.add(v.config_map.name)
        elif v.HasField("secret"):
            secs.add(v.secret.secret_name)
    return cms, secs


def payload(volume: Message, config_maps: dict[str, Message], secrets: dict[str, Message],
            namespace: str) -> dict[str, tuple[bytes, int]] | None:
    """The files of a configMap or secret volume: relative path -> (content, mode).

    None for an optional source that is missing (the volume is empty).
    Raises VolumeError. Pure.
    """
    if volume.HasField("config_map"):
        src = volume.config_map
        obj = config_maps.get(src.name)
        kind, name = "configmap", src.name
        default = src.default_mode if src.HasField("default_mode") else API_DEFAULT_MODE
        if obj is not None:
            data = {k: v.encode() for k, v in obj.data.items()}
            for k, v in obj.binary_data.items():
                data.setdefault(k, v)
    else:
        src = volume.secret
        obj = secrets.get(src.secret_name)
        kind, name = "secret", src.secret_name
        default = src.default_mode if src.HasField("default_mode") else API_DEFAULT_MODE
        if default == API_DEFAULT_MODE:
            default = SECRET_DEFAULT_MODE
        if obj is not None:
            data = dict(obj.data)
    if obj is None:
        if src.optional:
            return None
        raise VolumeError(f'{kind} "{name}" not found')
    files: dict[str, tuple[bytes, int]] = {}
    if src.items:
        for item in src.items:
            if item.key not in data:
                if src.optional:
                    continue
                kind_name = "configmap" if kind == "configmap" else "secret"
                raise VolumeError(f"{kind_name} {namespace}/{name} has no key {item.key!r}")
            path = _safe_relative(item.path or item.key, volume.name)
            files[path] = (data[item.key], item.mode if item.HasField("mode") else default)
    else:
        for key, value in data.items():
            files[_safe_relative(key, volume.name)] = (value, default)
    return files


def _safe_relative(path: str, volume: str) -> str:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts or any(p.startswith("..") for p in parts):
        raise VolumeError(f"volume {volume}: invalid path {path!r}")
    return str(Path(*parts))


def write_atomic(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make `target` show exactly `files`; True when something changed.

    The new files go to a fresh `..<time>` directory, `..data` is swapped to
    it with one rename, then the visible symlinks are fixed and the old
    directory removed. Readers see the old set or the new one, never a mix.
    """
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / DATA_LINK
    if _current_payload(target) == files:
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + _secrets.token_hex(4)
    new_dir = target / stamp
    new_dir.mkdir(mode=0o755)
    for rel, (content, mode) in files.items():
        path = new_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, content)
            os.fchmod(fd, mode & 0o777)
            os.fsync(fd)
        finally:
            os.close(fd)
    old_dir = os.readlink(data_link) if data_link.is_symlink() else None
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, data_link)
    visible = {Path(rel).parts[0] for rel in files}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            os.symlink(f"{DATA_LINK}/{name}", link)
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible:
            entry.unlink() if entry.is_symlink() or entry.is_file() else shutil.rmtree(entry)
    if old_dir and old_dir != stamp:
        shutil.rmtree(target / old_dir, ignore_errors=True)
    return True


def _current_payload(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data_link = target / DATA_LINK
    if not data_link.is_symlink():
        return None
    root = target / os.readlink(data_link)
    out = {}
    try:
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                out[str(p.relative_to(root))] = (p.read_bytes(), stat.S_IMODE(p.lstat().st_mode))
    except OSError:
        return None
    return out


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix) or point == str(path):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


class VolumeManager:
    """The volumes of every pod on this node, under `pods_dir`."""

    def __init__(self, pods_dir: Path):
        self.pods_dir = Path(pods_dir)
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pods_dir, 0o700)

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / uid

    def volume_dir(self, uid: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / name

    def setup(self, pod: Message, config_maps: dict[str, Message],
              secrets: dict[str, Message]) -> dict[str, PreparedVolume]:
        """Make (or refresh) every volume of the pod. Raises VolumeError."""
        uid = pod.metadata.uid
        pod_dir = self.pod_dir(uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(pod_dir, 0o700)
        prepared: dict[str, PreparedVolume] = {}
        for v in pod.spec.volumes:
            try:
                prepared[v.name] = self._setup_one(uid, v, config_maps, secrets, pod.metadata.namespace)
            except VolumeError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{v.name}" : {e}') from None
            except OSError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{v.name}" : {e}') from None
        return prepared

    def _setup_one(self, uid: str, v: Message, config_maps, secrets, namespace) -> PreparedVolume:
        if v.HasField("host_path"):
            return PreparedVolume(v.name, _check_host_path(v.host_path.path, v.host_path.type), kind="hostPath")
        path = self.volume_dir(uid, v.name)
        if v.HasField("config_map") or v.HasField("secret"):
            files = payload(v, config_maps, secrets, namespace)
            path.mkdir(parents=True, exist_ok=True)
            if v.HasField("secret") and not _mounts_under(path):
                # Secrets live in memory only, as in Kubernetes: never on the node's disk.
                _mount_tmpfs(path, "mode=0755")
            write_atomic(path, files or {})
            return PreparedVolume(v.name, path, read_only=True,
                                  kind="configMap" if v.HasField("config_map") else "secret")
        # emptyDir (the API server defaults a volume with no source to one)
        fresh = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if fresh:
            os.chmod(path, 0o777)
        if v.empty_dir.medium == "Memory" and not _mounts_under(path):
            options = "mode=0777"
            limit = v.empty_dir.size_limit if v.empty_dir.HasField("size_limit") else None
            if limit is not None and (limit.string_value or limit.number_value):
                try:
                    raw = limit.string_value if limit.HasField("string_value") else limit.number_value
                    options += f",size={parse_quantity(raw).value()}"
                except QuantityError as e:
                    raise VolumeError(f"sizeLimit: {e}") from None
            _mount_tmpfs(path, options)
        return PreparedVolume(v.name, path, kind="emptyDir")

    def mounts(self, container: Message, volumes: dict[str, PreparedVolume]) -> list[api_pb2.Mount]:
        """The CRI mounts of one container. Raises VolumeError."""
        out = []
        for vm in container.volume_mounts:
            vol = volumes.get(vm.name)
            if vol is None:
                raise VolumeError(f"volume {vm.name!r} is not defined in the pod")
            host = vol.path
            if vm.sub_path:
                host = vol.path / _safe_relative(vm.sub_path, vm.name)
                if vol.kind in ("emptyDir", "hostPath") and not os.path.lexists(host):
                    host.mkdir(parents=True, exist_ok=True)
                    if vol.kind == "emptyDir":
                        os.chmod(host, 0o777)
            out.append(api_pb2.Mount(container_path=vm.mount_path, host_path=str(host),
                                     readonly=vm.read_only or vol.read_only,
                                     propagation=api_pb2.PROPAGATION_PRIVATE))
        return out

    def teardown(self, uid: str) -> None:
        """Remove the pod's volumes (and anything else in its directory).
        Idempotent. Never follows a symlink out of the pod's directory."""
        pod_dir = self.pod_dir(uid)
        if not pod_dir.exists():
            return
        for point in _mounts_under(pod_dir):
            r = subprocess.run(["umount", point], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(pod_dir, ignore_errors=True)
        if pod_dir.exists():
            raise OSError(f"could not remove {pod_dir}")

    def pod_uids(self) -> list[str]:
        """UIDs that have a directory here (to find leftovers of pods that are gone)."""
        try:
            return [p.name for p in self.pods_dir.iterdir() if p.is_dir()]
        except OSError:
            return []


def _mount_tmpfs(path: Path, options: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise VolumeError(f"mounting tmpfs: {r.stderr.strip()}")


def _check_host_path(path: str, type_: str) -> Path:
    p = Path(path)
    if not p.is_absolute():
        raise VolumeError(f"hostPath {path!r} is not absolute")
    if type_ == "DirectoryOrCreate":
        if not p.exists():
            p.mkdir(mode=0o755, parents=True)
        elif not p.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "Directory":
        if not p.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "FileOrCreate":
        if not p.exists():
            p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
        elif not p.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif type_ == "File":
        if not p.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif type_ in ("Socket", "CharDevice", "BlockDevice"):
        check = {"Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}[type_]
        try:
            mode = p.stat().st_mode
        except OSError:
            raise VolumeError(f"hostPath type check failed: {path} does not exist") from None
        if not check(mode):
            raise VolumeError(f"hostPath type check failed: {path} is not a {type_}")
    elif type_:
        raise VolumeError(f"hostPath type {type_!r} is not supported")
    elif not p.exists():
        # Kubernetes' "" type does no check, and runc refuses a missing source.
        raise VolumeError(f"hostPath {path} does not exist")
    return p

