"""What an image costs a board, from manifests alone: no layer is ever fetched here.

`resolve` turns a reference into one PlatformImage per platform (manifest digest and compressed
size = config + layers). `select` picks the board's entry and enforces a size budget, so that an agent
or the controller can refuse an image before a single layer byte moves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tinyfleet.oci import manifest as mf
from tinyfleet.oci.errors import OverBudget, UnsupportedMediaType
from tinyfleet.oci.platform import Platform, choose
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import RegistryClient


@dataclass(frozen=True)
class PlatformImage:
    platform: Platform
    digest: str  # the platform manifest's own digest: what to pull
    compressed_size: int
    layers: int
    config_digest: str


@dataclass(frozen=True)
class ResolvedImage:
    reference: ImageReference  # pinned to the top-level digest (index, or manifest for single-arch)
    media_type: str
    platforms: tuple[PlatformImage, ...]

    @property
    def digest(self) -> str:
        return self.reference.digest  # type: ignore[return-value]

    def for_platform(self, board: Platform) -> PlatformImage:
        return choose(board, ((p.platform, p) for p in self.platforms))


def _platform_image(client: RegistryClient, ref: ImageReference, manifest: mf.ImageManifest,
                    platform: Platform | None) -> PlatformImage:
    if platform is None:
        # A single-platform manifest names its platform only in its config (a small JSON blob).
        config = json.loads(client.get_blob(ref, manifest.config.digest))
        if not isinstance(config, dict):
            raise UnsupportedMediaType(f"{ref}: image config is not a JSON object")
        platform = Platform.normalize(str(config.get("os", "")), str(config.get("architecture", "")),
                                      config.get("variant"))
    return PlatformImage(platform, manifest.digest, manifest.compressed_size, len(manifest.layers),
                         manifest.config.digest)


def resolve(client: RegistryClient, ref: ImageReference, *, only: Platform | None = None) -> ResolvedImage:
    """Resolve a tag or digest into per-platform sizes. With `only`, fetch just the manifest that
    board would get (one request fewer per platform - what an agent does)."""
    top = client.get_manifest(ref)
    pinned = ref.with_digest(top.digest)
    if isinstance(top, mf.ImageManifest):
        return ResolvedImage(pinned, top.media_type, (_platform_image(client, pinned, top, None),))
    entries = [d for d in top.manifests if d.platform is not None and d.platform.os != "unknown"]
    if only is not None:
        entries = [choose(only, ((d.platform, d) for d in entries))]  # type: ignore[misc]
    images = []
    for entry in entries:
        child = client.get_manifest(pinned.with_digest(entry.digest))
        if not isinstance(child, mf.ImageManifest):
            raise UnsupportedMediaType(f"{ref}: index entry {entry.digest} is not an image manifest")
        images.append(_platform_image(client, pinned, child, entry.platform))
    return ResolvedImage(pinned, top.media_type, tuple(images))


def check_budget(image: PlatformImage, budget: int | None, what: str) -> None:
    if budget is not None and image.compressed_size > budget:
        raise OverBudget(f"{what} for {image.platform} is {image.compressed_size} bytes compressed, over the "
                         f"budget of {budget} bytes; refused before pulling any layer",
                         image.compressed_size, budget)


def select(client: RegistryClient, ref: ImageReference, board: Platform, budget: int | None) -> PlatformImage:
    """The board's image for `ref`, verified and within budget, or a terminal OciError saying why."""
    resolved = resolve(client, ref, only=board)
    image = resolved.for_platform(board)
    check_budget(image, budget, str(ref))
    return image
