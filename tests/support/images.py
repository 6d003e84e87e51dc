"""Demo images for tests, packed from the real static binaries and pushed to the real registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from oci import pack
from oci.platform import Platform
from oci.reference import ImageReference
from oci.registry import RegistryClient


@dataclass(frozen=True)
class Published:
    ref: str  # repo@sha256:<index digest>, the form desired states carry
    digest: str
    sizes: dict[Platform, int]


def publish(registry_host: str, repo: str, binaries: dict[Platform, Path], *, version: str,
            env: tuple[tuple[str, str], ...] = (), platforms: tuple[str, ...] | None = None,
            padding: Path | None = None, healthcheck: bool = True) -> Published:
    chosen = {p: b for p, b in binaries.items() if platforms is None or str(p) in platforms}
    spec = pack.PackSpec(binaries=chosen, env=(("TINYHELLO_VERSION", version), ("TINYHELLO_INTERVAL", "1"), *env),
                         healthcheck="/app health" if healthcheck else None, health_interval_s=1.0,
                         adds=((padding, "/padding.bin"),) if padding else ())
    ref = ImageReference.parse(f"{registry_host}/{repo}:{version}")
    packed = pack.build(spec)
    digest = pack.push(RegistryClient(), ref, packed)
    return Published(ref.pinned(digest), digest, packed.sizes)


def incompressible(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path
