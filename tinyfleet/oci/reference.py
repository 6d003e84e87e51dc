"""Image references: ``[host[:port]/]path[:tag][@sha256:hex]`` with Docker's defaults.

``alpine`` is ``docker.io/library/alpine:latest``; a first component holding ``.`` or ``:`` or equal
to ``localhost`` is a registry host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from tinyfleet.oci.errors import ImageReferenceError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"(?::[0-9]{1,5})?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME = 255


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        if not isinstance(text, str) or not text:
            raise ImageReferenceError("image reference is empty")
        if len(text) > 512 or any(c.isspace() for c in text):
            raise ImageReferenceError(f"{text!r} is not an image reference (too long or has whitespace)")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not digest.startswith("sha256:"):
                raise ImageReferenceError(f"{text!r}: only sha256 digests are supported, got {digest!r}")
            if not _DIGEST.fullmatch(digest):
                raise ImageReferenceError(f"{text!r}: digest must be sha256: and 64 lowercase hex digits")
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not _TAG.fullmatch(tag):
                raise ImageReferenceError(f"{text!r}: tag {tag!r} is not valid (letters, digits, _ . -; "
                                          "at most 128, not starting with . or -)")
        parts = rest.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, path = parts[0], parts[1:]
            if not _HOST.fullmatch(registry):
                raise ImageReferenceError(f"{text!r}: registry host {registry!r} is not valid")
            port = registry.rpartition(":")[2] if ":" in registry else None
            if port is not None and not 0 < int(port) < 65536:
                raise ImageReferenceError(f"{text!r}: port {port} is out of range")
        else:
            registry, path = DEFAULT_REGISTRY, parts
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and len(path) == 1:
            path = ["library", *path]
        for component in path:
            if not _COMPONENT.fullmatch(component):
                raise ImageReferenceError(
                    f"{text!r}: repository component {component!r} must be lowercase letters and digits "
                    "separated by '.', '_', '__' or '-'")
        repository = "/".join(path)
        if len(registry) + 1 + len(repository) > MAX_NAME:
            raise ImageReferenceError(f"{text!r}: repository name is longer than {MAX_NAME} characters")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def api_host(self) -> str:
        """Where the registry's HTTP API answers (Docker Hub's API is not at docker.io)."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def name(self) -> str:
        """host/repository, the form Docker uses for pulls."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageReference:
        return replace(self, digest=digest)

    def pinned(self, digest: str | None = None) -> str:
        """``host/repo@sha256:...``: the form desired states carry and the agent pulls."""
        return f"{self.name}@{digest or self.digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
