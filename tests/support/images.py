"""Demo images for the agent tests: the shared publisher with the tests' defaults (a version per tag,
alive lines every second), and incompressible padding for an image over budget."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.images import DemoImage, publish_demo
from tinyfleet.oci.platform import Platform


def publish(registry_host: str, repo: str, binaries: dict[Platform, Path], *, version: str,
            env: tuple[tuple[str, str], ...] = (), platforms: tuple[str, ...] | None = None,
            padding: Path | None = None, healthcheck: bool = True) -> DemoImage:
    return publish_demo(registry_host, repo, version, binaries, version=version,
                        env=(("TINYHELLO_INTERVAL", "1"), *env), platforms=platforms, healthcheck=healthcheck,
                        adds=((padding, "/padding.bin"),) if padding else ())


def incompressible(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path
