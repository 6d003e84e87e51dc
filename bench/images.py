"""Images for the benchmarks: the demo app built for the given platforms and published."""

from __future__ import annotations

from pathlib import Path

from sandbox import binaries
from sandbox.images import publish_demo
from tinyfleet.oci.platform import Platform


def publish(registry_host: str, root: Path, repo: str, version: str, platforms: tuple[str, ...] = ("linux/amd64",),
            healthcheck: bool = False) -> tuple[str, dict[Platform, str]]:
    """Returns (repo@index digest, {platform: repo@manifest digest})."""
    image = publish_demo(registry_host, repo, version, binaries.build(root / "bin", platforms), version=version,
                         healthcheck=healthcheck)
    return image.ref, image.manifests
