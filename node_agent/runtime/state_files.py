"""Atomic JSON records on disk: write to a temporary file, fsync, rename."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any, durable: bool = False) -> None:
    """Replaces `path` with `data` as JSON; readers see the old or the new file, never half.

    The rename alone is enough when the service crashes or is killed: the
    page cache survives it. `durable` also fsyncs, for records that must
    survive a power loss; container records need not (a reboot ends the
    containers too, and startup reconciles with runc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=True)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: Path) -> Any:
    """The record at `path`, or None when there is none."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
