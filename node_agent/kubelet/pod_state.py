"""What the node agent records per pod on disk, next to the pod's volumes:

    <state-dir>/pods/<pod uid>/pod.json

{
  "uid", "namespace", "name",
  "sandbox_id":    the pod's current sandbox,
  "log_directory": the sandbox's log directory (absolute; every container
                   log of the pod is below it, "<container>/<attempt>.log"),
  "netns":         the sandbox's network namespace path, when known,
  "pod_ip":        the pod's address,
  "network_attached": true when the node agent attached the network
                   itself (then it detaches it before the sandbox goes),
  "containers": {  app containers by name; "init_containers" likewise
      "<name>": {"container_id", "attempt", "log_path" (absolute),
                 "previous": {"container_id", "attempt", "log_path"} | null}
  },
  "backoff": {"<container>": [delay seconds, last restart (unix time)]}
}

The runtime stays the source of truth for what exists (sandboxes and
containers are found again by their CRI labels after a restart); this file
keeps what the runtime cannot tell: the pod IP when the node agent did the
networking, the CrashLoopBackOff state, and, for the node's logs and exec
service, where each container's current and previous logs are and which
container ids to exec in (`NodeAgent.container_location` reads the same).

Writes are atomic (a temporary file renamed over the old one). The file
goes with the pod's directory when the pod is cleaned up.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE_NAME = "pod.json"


@dataclass
class ContainerRecord:
    container_id: str
    attempt: int
    log_path: str


@dataclass
class ContainerHistory:
    current: ContainerRecord | None = None
    previous: ContainerRecord | None = None

    def to_json(self) -> dict:
        d = asdict(self.current) if self.current else {}
        d["previous"] = asdict(self.previous) if self.previous else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ContainerHistory":
        prev = d.get("previous")
        cur = {k: d[k] for k in ("container_id", "attempt", "log_path") if k in d}
        return cls(ContainerRecord(**cur) if len(cur) == 3 else None,
                   ContainerRecord(**prev) if prev else None)


@dataclass
class PodRecord:
    uid: str
    namespace: str = ""
    name: str = ""
    sandbox_id: str = ""
    log_directory: str = ""
    netns: str = ""
    pod_ip: str = ""
    network_attached: bool = False
    containers: dict[str, ContainerHistory] = field(default_factory=dict)
    init_containers: dict[str, ContainerHistory] = field(default_factory=dict)
    backoff: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("containers", "init_containers")}
        d["containers"] = {k: v.to_json() for k, v in self.containers.items()}
        d["init_containers"] = {k: v.to_json() for k, v in self.init_containers.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PodRecord":
        rec = cls(**{k: d[k] for k in ("uid", "namespace", "name", "sandbox_id", "log_directory", "netns",
                                        "pod_ip", "network_attached", "backoff") if k in d})
        rec.containers = {k: ContainerHistory.from_json(v) for k, v in (d.get("containers") or {}).items()}
        rec.init_containers = {k: ContainerHistory.from_json(v)
                               for k, v in (d.get("init_containers") or {}).items()}
        return rec


class PodStateStore:
    """PodRecords under `pods_dir/<uid>/pod.json`, cached in memory."""

    def __init__(self, pods_dir: Path):
        self.pods_dir = Path(pods_dir)
        self._cache: dict[str, PodRecord] = {}
        self._written: dict[str, dict] = {}

    def path(self, uid: str) -> Path:
        return self.pods_dir / uid / FILE_NAME

    def get(self, uid: str) -> PodRecord | None:
        rec = self._cache.get(uid)
        if rec is not None:
            return rec
        try:
            data = json.loads(self.path(uid).read_text())
        except (OSError, ValueError):
            return None
        rec = PodRecord.from_json(data)
        self._cache[uid] = rec
        self._written[uid] = data
        return rec

    def get_or_create(self, uid: str, namespace: str, name: str) -> PodRecord:
        rec = self.get(uid)
        if rec is None:
            rec = PodRecord(uid, namespace, name)
            self._cache[uid] = rec
        return rec

    def save(self, rec: PodRecord) -> None:
        """Write the record if it changed since the last write."""
        data = rec.to_json()
        if self._written.get(rec.uid) == data:
            return
        path = self.path(rec.uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._written[rec.uid] = data
        self._cache[rec.uid] = rec

    def forget(self, uid: str) -> None:
        """Drop the cached record (the file goes with the pod's directory)."""
        self._cache.pop(uid, None)
        self._written.pop(uid, None)

    def find(self, namespace: str, name: str) -> PodRecord | None:
        """The record of a pod by name (the newest, if several uids had it)."""
        best, best_mtime = None, -1.0
        try:
            entries = list(self.pods_dir.iterdir())
        except OSError:
            return None
        for d in entries:
            rec = self.get(d.name)
            if rec is not None and (rec.namespace, rec.name) == (namespace, name):
                try:
                    mtime = self.path(d.name).stat().st_mtime
                except OSError:
                    mtime = 0.0
                if mtime > best_mtime:
                    best, best_mtime = rec, mtime
        return best
