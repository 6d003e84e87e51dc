"""Pack real static binaries for four platforms, push them to the real registry, inspect them, and
pull and run each platform by digest on the real Docker engine (ARM under qemu)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.cli import tinyfleet
from tinyfleet.oci.platform import Platform

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6")


@pytest.fixture(scope="module")
def packed(registry, demo_binaries) -> dict:  # type: ignore[no-untyped-def]
    ref = f"{registry.host}/it/hello:1.0"
    args = ["image", "pack", ref, "--healthcheck", "/app health", "--env", "TINYHELLO_VERSION=1",
            "--env", "TINYHELLO_INTERVAL=1", "--label", "org.opencontainers.image.version=1.0", "--json"]
    for platform, path in demo_binaries.items():
        args += ["--binary", f"{platform}={path}"]
    result = tinyfleet(*args)
    assert result.returncode == 0, result.stderr
    return {"ref": ref, **json.loads(result.stdout)}


def inspect(ref: str, *extra: str):  # type: ignore[no-untyped-def]
    return tinyfleet("image", "inspect", ref, "--json", *extra)


def test_pack_is_deterministic_across_runs(packed, registry, demo_binaries) -> None:  # type: ignore[no-untyped-def]
    args = ["image", "pack", f"{registry.host}/it/hello:again", "--healthcheck", "/app health",
            "--env", "TINYHELLO_VERSION=1", "--env", "TINYHELLO_INTERVAL=1",
            "--label", "org.opencontainers.image.version=1.0"]
    for platform, path in demo_binaries.items():
        args += ["--binary", f"{platform}={path}"]
    result = tinyfleet(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == packed["digest"]


def test_inspect_lists_every_platform_with_its_size(packed) -> None:  # type: ignore[no-untyped-def]
    result = inspect(packed["ref"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["digest"] == packed["digest"]
    sizes = {p["platform"]: p["compressed_size"] for p in report["platforms"]}
    assert sizes == {p: packed["platforms"][p]["compressed_size"] for p in PLATFORMS}
    assert all(0 < s < 1024 * 1024 for s in sizes.values()), "the demo images stay under 1 MiB"


def test_inspect_by_digest_gives_the_same_answer(packed, registry) -> None:  # type: ignore[no-untyped-def]
    by_digest = inspect(f"{registry.host}/it/hello@{packed['digest']}")
    assert by_digest.returncode == 0, by_digest.stderr
    assert json.loads(by_digest.stdout)["digest"] == packed["digest"]


def test_inspect_refuses_an_image_over_the_budget(packed) -> None:  # type: ignore[no-untyped-def]
    smallest = min(p["compressed_size"] for p in packed["platforms"].values())
    result = inspect(packed["ref"], "--max-bytes", str(smallest - 1))
    assert result.returncode == 3
    assert "over budget" in result.stderr
    fits = inspect(packed["ref"], "--max-bytes", str(10**6))
    assert fits.returncode == 0


def test_inspect_fails_when_a_required_platform_is_missing(registry, demo_binaries) -> None:  # type: ignore[no-untyped-def]
    v7 = demo_binaries[Platform.parse("linux/arm/v7")]
    ref = f"{registry.host}/it/v7only:1"
    pushed = tinyfleet("image", "pack", ref, "--binary", f"linux/arm/v7={v7}")
    assert pushed.returncode == 0, pushed.stderr
    result = inspect(ref, "--platform", "linux/arm/v6")
    assert result.returncode == 4
    assert "no image for linux/arm/v6" in result.stderr
    assert inspect(ref, "--platform", "linux/arm/v7").returncode == 0


def test_pack_refuses_v7_code_labelled_as_v6(registry, demo_binaries) -> None:  # type: ignore[no-untyped-def]
    v7 = demo_binaries[Platform.parse("linux/arm/v7")]
    result = tinyfleet("image", "pack", f"{registry.host}/it/bad:1", "--binary", f"linux/arm/v6={v7}")
    assert result.returncode == 2
    assert "ARMv7 code" in result.stderr


def test_bad_reference_and_unreachable_registry_are_clear_errors(packed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = inspect("Not/A Ref")
    assert bad.returncode == 2 and "not an image reference" in bad.stderr
    gone = inspect("127.0.0.1:9/it/hello:1.0")
    assert gone.returncode == 6 and "cannot reach" in gone.stderr


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_platform_pulls_by_digest_and_runs(packed, registry, dockerd, platform: str) -> None:  # type: ignore[no-untyped-def]
    report = json.loads(inspect(packed["ref"]).stdout)
    entry = next(p for p in report["platforms"] if p["platform"] == platform)
    client = dockerd.client()
    image = client.images.pull(f"{registry.host}/it/hello@{entry['digest']}")
    expected = Platform.parse(platform)
    assert f"{registry.host}/it/hello@{entry['digest']}" in image.attrs["RepoDigests"]
    assert Platform.normalize(image.attrs["Os"], image.attrs["Architecture"], image.attrs.get("Variant")) == expected
    container = client.containers.run(image.id, detach=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            time.sleep(0.5)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        assert b"tinyhello up, version 1" in container.logs()
    finally:
        container.remove(force=True)
