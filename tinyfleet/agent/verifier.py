"""The registry as the agent sees it: resolve a pinned image for this board from manifests alone,
verifying every digest and the size budget. OciError becomes Transient or ImageRefused here."""

from __future__ import annotations

from tinyfleet.agent.errors import ImageRefused, RegistryUnavailable
from tinyfleet.agent.model import Resolved
from tinyfleet.oci import errors as oe
from tinyfleet.oci import sizes
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import RegistryClient


class RegistryVerifier:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def select(self, image: str, platform: Platform, budget: int | None) -> Resolved:
        try:
            ref = ImageReference.parse(image)
            chosen = sizes.select(self.client, ref, platform, budget)
        except oe.OciError as exc:
            if exc.retryable:
                raise RegistryUnavailable(str(exc)) from exc
            raise ImageRefused(str(exc)) from exc
        return Resolved(image=image, pull_ref=f"{ref.name}@{chosen.digest}", compressed_size=chosen.compressed_size,
                        platform=str(chosen.platform))
