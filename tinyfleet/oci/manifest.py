"""Manifests and indexes (OCI and Docker schema 2), parsed into frozen dataclasses.

Only what tinyfleet needs is kept: descriptors (media type, digest, size, platform) and, for an image
manifest, its config and layers. Anything else is rejected with UnsupportedMediaType, which is
terminal: a registry that serves schema 1 or an artifact where an image was expected will keep doing so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tinyfleet.oci.errors import UnsupportedMediaType
from tinyfleet.oci.platform import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    @classmethod
    def read(cls, obj: object, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise UnsupportedMediaType(f"{where}: descriptor is not an object")
        digest, size = obj.get("digest"), obj.get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise UnsupportedMediaType(f"{where}: descriptor digest {digest!r} is not sha256:<hex>")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UnsupportedMediaType(f"{where}: descriptor size {size!r} is not a non-negative integer")
        platform = obj.get("platform")
        return cls(media_type=str(obj.get("mediaType", "")), digest=digest, size=size,
                   platform=Platform.from_oci(platform) if isinstance(platform, dict) else None)


@dataclass(frozen=True)
class Index:
    media_type: str
    digest: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def compressed_size(self) -> int:
        """What a pull transfers: the config blob plus every (compressed) layer."""
        return self.config.size + sum(layer.size for layer in self.layers)


def parse(raw: bytes, digest: str, content_type: str | None, where: str) -> Index | ImageManifest:
    """Parse verified manifest bytes. `content_type` is the registry's header, trusted only when it
    names a manifest type; otherwise the document's own mediaType (or its shape) decides."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UnsupportedMediaType(f"{where}: manifest is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UnsupportedMediaType(f"{where}: manifest is not a JSON object")
    media_type = (content_type or "").split(";")[0].strip()
    if media_type not in (*INDEX_TYPES, *MANIFEST_TYPES):
        media_type = str(doc.get("mediaType") or "")
    if not media_type:  # OCI allows mediaType to be absent; fall back to the document's shape
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "layers" in doc else ""
    if doc.get("schemaVersion") != 2:
        raise UnsupportedMediaType(f"{where}: schemaVersion {doc.get('schemaVersion')!r} is not 2 "
                                   "(schema 1 manifests are not supported; re-push the image)")
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise UnsupportedMediaType(f"{where}: index has no manifests list")
        return Index(media_type, digest, tuple(Descriptor.read(e, f"{where} manifests[{i}]")
                                               for i, e in enumerate(entries)))
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise UnsupportedMediaType(f"{where}: manifest has no layers list")
        return ImageManifest(media_type, digest, Descriptor.read(doc.get("config"), f"{where} config"),
                             tuple(Descriptor.read(e, f"{where} layers[{i}]") for i, e in enumerate(layers)))
    raise UnsupportedMediaType(f"{where}: media type {media_type or 'unknown'!r} is neither an image "
                               f"index nor an image manifest (accepted: {ACCEPT})")
