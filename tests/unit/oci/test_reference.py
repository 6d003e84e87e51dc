from __future__ import annotations

import pytest

from tinyfleet.oci.errors import ImageReferenceError
from tinyfleet.oci.reference import ImageReference

D = "sha256:" + "0123456789abcdef" * 4

PARSES = [
    # text, registry, repository, tag, digest
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("acme/app:1.2", "docker.io", "acme/app", "1.2", None),
    ("index.docker.io/acme/app", "docker.io", "acme/app", "latest", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
    (f"127.0.0.1:5000/demo@{D}", "127.0.0.1:5000", "demo", None, D),
    (f"ghcr.io/acme/app:v1@{D}", "ghcr.io", "acme/app", "v1", D),
    ("registry.example.com/my_app__x/a-b.c", "registry.example.com", "my_app__x/a-b.c", "latest", None),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), PARSES)
def test_parses(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ImageReference.parse(str(ref)) == ref


BAD = [
    ("", "empty"),
    ("Alpine", "lowercase"),
    ("acme//app", "component"),
    ("acme/app:", "tag"),
    ("acme/app:-x", "tag"),
    ("acme/app@sha256:abc", "64 lowercase hex"),
    (f"acme/app@sha256:{'A' * 64}", "64 lowercase hex"),
    ("acme/app@md5:abc", "only sha256"),
    ("acme app", "whitespace"),
    ("host:99999/app", "port"),
    ("exa_mple.com/app", "registry host"),
    ("a/" * 200 + "b", "longer than"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_refuses_bad_references_clearly(text: str, problem: str) -> None:
    with pytest.raises(ImageReferenceError, match=problem):
        ImageReference.parse(text)


def test_docker_hub_api_host_and_loopback_detection() -> None:
    assert ImageReference.parse("alpine").api_host == "registry-1.docker.io"
    assert ImageReference.parse("127.0.0.1:5000/a").is_loopback
    assert ImageReference.parse("localhost:5000/a").is_loopback
    assert not ImageReference.parse("10.0.0.1:5000/a").is_loopback
    assert ImageReference.parse("acme/app:1").pinned(D) == f"docker.io/acme/app@{D}"
