"""Images for the benchmarks, packed from the demo binary."""

from __future__ import annotations

import json
from pathlib import Path

from controller.sandbox import binaries
from oci import pack
from oci.platform import Platform
from oci.reference import ImageReference
from oci.registry import RegistryClient


def publish(registry_host: str, root: Path, repo: str, version: str, platforms: tuple[str, ...] = ("linux/amd64",),
            healthcheck: bool = False) -> tuple[str, dict[Platform, str]]:
    """Returns (repo@index digest, {platform: repo@manifest digest})."""
    bins = binaries.build(root / "bin", platforms)
    spec = pack.PackSpec(binaries=bins, env=(("TINYHELLO_VERSION", version),),
                         healthcheck="/app health" if healthcheck else None, health_interval_s=1.0)
    packed = pack.build(spec)
    ref = ImageReference.parse(f"{registry_host}/{repo}:{version}")
    digest = pack.push(RegistryClient(), ref, packed)
    manifests = {}
    for entry in json.loads(packed.index.data)["manifests"]:
        manifests[Platform.from_oci(entry["platform"])] = f"{ref.name}@{entry['digest']}"
    return ref.pinned(digest), manifests
