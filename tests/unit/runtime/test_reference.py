"""Image reference parsing and normalisation, Docker's way."""

import pytest

from node_agent.runtime import reference
from node_agent.runtime.errors import InvalidArgument


@pytest.mark.parametrize("text, expected", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("me/app", "docker.io/me/app:latest"),
    ("localhost/kubeling/shell:1", "localhost/kubeling/shell:1"),
    ("127.0.0.1:5000/kubeling/http:1", "127.0.0.1:5000/kubeling/http:1"),
    ("registry.example.com/a/b/c", "registry.example.com/a/b/c:latest"),
    ("quay.io/x@sha256:" + "a" * 64, "quay.io/x@sha256:" + "a" * 64),
    ("quay.io/x:v1@sha256:" + "b" * 64, "quay.io/x:v1@sha256:" + "b" * 64),
], ids=["bare", "tagged", "user-repo", "localhost", "host-port", "deep-path", "digest", "tag-and-digest"])
def test_normalises_references(text, expected):
    assert str(reference.parse(text)) == expected


@pytest.mark.parametrize("text", [
    "", "UPPER/case", "Not A Reference!", "a//b", "x:", "x@sha256:short", "-lead/x", "a:b:c",
], ids=["empty", "uppercase", "spaces", "empty-component", "empty-tag", "short-digest", "leading-dash",
        "two-tags"])
def test_rejects_malformed_references(text):
    with pytest.raises(InvalidArgument):
        reference.parse(text)


def test_tagged_form_is_none_for_digest_only_references():
    assert reference.parse("quay.io/x@sha256:" + "a" * 64).tagged is None
    assert reference.parse("busybox").tagged == "docker.io/library/busybox:latest"


@pytest.mark.parametrize("domain, insecure", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
    ("docker.io", False), ("registry.example.com:443", False),
])
def test_only_loopback_registries_are_plain_http_by_default(domain, insecure):
    assert reference.is_insecure_host(domain) is insecure
