"""Image references as Docker and the CRI spell them, normalised.

`busybox` is `docker.io/library/busybox:latest`; `localhost/kubeling/shell:1`
stays as written; `name@sha256:<hex>` pins a manifest digest. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node_agent.runtime.errors import InvalidArgument

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
IMAGE_ID = re.compile(r"^(?:sha256:)?(?P<hex>[a-f0-9]{64})$")
DEFAULT_DOMAIN = "docker.io"


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised reference."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def tagged(self) -> str | None:
        """`repository:tag`, or None for a reference by digest only."""
        return f"{self.repository}:{self.tag}" if self.tag else None


def parse(text: str) -> Reference:
    """Parses and normalises `text`; InvalidArgument names what is wrong with it."""
    if not text:
        raise InvalidArgument("image: a reference is required")
    if len(text) > 255 + 64:
        raise InvalidArgument(f"image {text[:40]!r}...: reference too long")
    m = _REFERENCE.match(text)
    if not m:
        raise InvalidArgument(f"image {text!r}: invalid reference format")
    domain, path = m.group("domain"), m.group("path")
    # "foo/bar": "foo" is a path component unless it looks like a host.
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        path = f"{domain.lower()}/{path}" if domain == domain.lower() else None
        if path is None:
            raise InvalidArgument(f"image {text!r}: repository name must be lowercase")
        domain = None
    if not domain:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    tag, digest = m.group("tag"), m.group("digest")
    if not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def is_insecure_host(domain: str) -> bool:
    """Loopback registries speak plain HTTP, as containerd and Docker allow."""
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain
    return host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")
