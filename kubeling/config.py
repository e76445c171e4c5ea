"""Client configuration: where the cluster's API server is and how to reach it.

The file is YAML, at `$KUBELING_CONFIG` when set, else `~/.kubeling/config`:

    server: 127.0.0.1:6443        # required: host:port of the API server
    certificate_authority: ca.pem  # optional: PEM file; when set, TLS is used
    token: s3cr3t                  # optional: bearer token sent with every call

Relative paths are taken from the file's directory. Other keys are kept
(`Config.extra`) for tools such as `kubeling up` that record more state.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "KUBELING_CONFIG"
NOT_CONFIGURED = "no cluster configured: run `kubeling up` or set KUBELING_CONFIG"


class ConfigError(Exception):
    """The configuration is missing or unreadable; the message says which and why."""


@dataclass
class Config:
    """A loaded client configuration."""

    server: str
    certificate_authority: str | None = None
    token: str | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def config_path(path: str | os.PathLike | None = None) -> Path:
    """The file to use: `path`, else $KUBELING_CONFIG, else ~/.kubeling/config."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".kubeling" / "config"


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read the configuration. Raises ConfigError when it is missing or invalid."""
    p = config_path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{NOT_CONFIGURED} (no file at {p})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{NOT_CONFIGURED} ({p} is empty)")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with a `server:` key")
    server = data.pop("server", None)
    if not server or not isinstance(server, str):
        raise ConfigError(f"{p}: `server` is required (host:port of the API server)")
    if ":" not in server:
        raise ConfigError(f"{p}: server {server!r} must be host:port")
    ca = data.pop("certificate_authority", None)
    if ca is not None:
        ca = str((p.parent / Path(ca).expanduser()).resolve())
    token = data.pop("token", None)
    return Config(server=server, certificate_authority=ca,
                  token=str(token) if token is not None else None, path=p, extra=data)


def save_config(server: str, path: str | os.PathLike | None = None, **extra: Any) -> Path:
    """Write a configuration naming `server` (plus `extra` keys) and return its path.

    The write is atomic (a reader sees the old or the new file, never half of
    one) and the file is private to its owner, since it may hold a token.
    """
    p = config_path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"server": server, **{k: v for k, v in extra.items() if v is not None}}
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p
