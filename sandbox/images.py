"""The demo app as images in a registry: packed from its static binaries (sandbox.binaries)
by oci.pack and pushed. One function for the demo, the tests and the benchmarks.

The app's behaviour comes from its environment (see demoapp.c): TINYHELLO_VERSION names the release,
TINYHELLO_HEALTH=fail makes its health check fail - on every platform (`broken`) or only on some
(`broken_on`: a release that is good on some boards and bad on others).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tinyfleet.oci import manifest as mf
from tinyfleet.oci import pack
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import RegistryClient


@dataclass(frozen=True)
class DemoImage:
    tag_ref: str  # host/repo:tag
    ref: str  # host/repo@sha256:<index digest>, the form desired states carry
    digest: str
    sizes: dict[Platform, int]  # compressed, per platform
    manifests: dict[Platform, str]  # host/repo@sha256:<that platform's own manifest digest>


def publish_demo(registry_host: str, repo: str, tag: str, binaries: dict[Platform, Path], *, version: str,
                 env: tuple[tuple[str, str], ...] = (), broken: bool = False, broken_on: tuple[str, ...] = (),
                 platforms: tuple[str, ...] | None = None, healthcheck: bool = True, health_interval_s: float = 1.0,
                 adds: tuple[tuple[Path, str], ...] = ()) -> DemoImage:
    chosen = {p: path for p, path in binaries.items() if platforms is None or str(p) in platforms}
    good_env = (("TINYHELLO_VERSION", version), *env)
    bad = {p: path for p, path in chosen.items() if broken or str(p) in broken_on}
    good = {p: path for p, path in chosen.items() if p not in bad}
    parts = [pack.build(pack.PackSpec(binaries=part, env=part_env, adds=adds, health_interval_s=health_interval_s,
                                      healthcheck="/app health" if healthcheck else None))
             for part, part_env in ((good, good_env), (bad, (*good_env, ("TINYHELLO_HEALTH", "fail")))) if part]
    packed = parts[0] if len(parts) == 1 else _one_index(parts)
    ref = ImageReference.parse(f"{registry_host}/{repo}:{tag}")
    digest = pack.push(RegistryClient(), ref, packed)
    manifests = {Platform.from_oci(entry["platform"]): f"{ref.name}@{entry['digest']}"
                 for entry in json.loads(packed.index.data)["manifests"]}
    return DemoImage(str(ref), ref.pinned(digest), digest, dict(packed.sizes), manifests)


def _one_index(parts: list[pack.PackedImage]) -> pack.PackedImage:
    """The images of several packs under one index (each platform's manifest comes from its own pack)."""
    descriptors = [d for part in parts for d in json.loads(part.index.data)["manifests"]]
    index = pack.Blob(mf.OCI_INDEX, json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX,
                                                "manifests": descriptors}, sort_keys=True).encode())
    return pack.PackedImage(index, tuple(m for part in parts for m in part.manifests),
                            tuple(b for part in parts for b in part.blobs),
                            {p: size for part in parts for p, size in part.sizes.items()})
