"""The packer: deterministic, and it refuses binaries a board could not run."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import elf_maker
from tinyfleet.oci import elf, pack
from tinyfleet.oci.errors import PackError
from tinyfleet.oci.platform import Platform

P = Platform.parse


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def binaries(tmp_path: Path) -> dict[Platform, Path]:
    return {P("linux/amd64"): write(tmp_path, "x86", elf_maker.make("amd64")),
            P("linux/arm64"): write(tmp_path, "a64", elf_maker.make("arm64")),
            P("linux/arm/v7"): write(tmp_path, "v7", elf_maker.make("arm", arm_cpu_arch=10)),
            P("linux/arm/v6"): write(tmp_path, "v6", elf_maker.make("arm", arm_cpu_arch=5))}


def test_same_inputs_give_the_same_digest_and_different_inputs_another(binaries: dict[Platform, Path]) -> None:
    spec = pack.PackSpec(binaries=binaries, env=(("V", "1"),), healthcheck="/app health")
    first, second = pack.build(spec), pack.build(spec)
    assert first.digest == second.digest
    assert [m.data for m in first.manifests] == [m.data for m in second.manifests]
    assert pack.build(pack.PackSpec(binaries=binaries, env=(("V", "2"),))).digest != first.digest


def test_index_lists_each_platform_with_its_manifest(binaries: dict[Platform, Path]) -> None:
    packed = pack.build(pack.PackSpec(binaries=binaries))
    index = json.loads(packed.index.data)
    platforms = {json.dumps(m["platform"], sort_keys=True) for m in index["manifests"]}
    assert platforms == {json.dumps(p.oci(), sort_keys=True) for p in binaries}
    assert {m["digest"] for m in index["manifests"]} == {m.digest for m in packed.manifests}


def test_layer_is_a_reproducible_tar_with_the_binary_and_added_files(binaries: dict[Platform, Path],
                                                                     tmp_path: Path) -> None:
    conf = write(tmp_path, "app.conf", b"key=value\n")
    packed = pack.build(pack.PackSpec(binaries={P("linux/amd64"): binaries[P("linux/amd64")]},
                                      adds=((conf, "/etc/app/app.conf"),), labels=(("org.x", "y"),),
                                      healthcheck="/app health"))
    layer = next(b for b in packed.blobs if b.media_type.endswith("tar+gzip"))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.data))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"app", "etc", "etc/app", "etc/app/app.conf"}
    assert members["app"].mode == 0o755 and all(m.mtime == 0 and m.uid == 0 for m in members.values())
    config = json.loads(next(b for b in packed.blobs if b.media_type.endswith("config.v1+json")).data)
    assert config["config"]["Healthcheck"] == {"Test": ["CMD", "/app", "health"], "Interval": 3 * 10**9,
                                               "Timeout": 10 * 10**9, "StartPeriod": 3 * 10**9, "Retries": 3}
    assert config["config"]["User"] == "65534:65534" and config["config"]["Labels"] == {"org.x": "y"}


REFUSED = [
    ("linux/arm64", elf_maker.make("amd64"), "built for amd64, not arm64"),
    ("linux/amd64", elf_maker.make("amd64", dynamic=True), "dynamically linked"),
    ("linux/arm/v6", elf_maker.make("arm", arm_cpu_arch=10), "ARMv7 code"),
    ("linux/amd64", b"#!/bin/sh\necho hi\n", "not an ELF"),
    ("linux/amd64", b"\x7fELF\x02\x01", "not an ELF"),
]


@pytest.mark.parametrize(("platform", "data", "problem"), REFUSED)
def test_refuses_binaries_the_board_cannot_run(tmp_path: Path, platform: str, data: bytes, problem: str) -> None:
    with pytest.raises(PackError, match=problem):
        pack.build(pack.PackSpec(binaries={P(platform): write(tmp_path, "bin", data)}))


@pytest.mark.parametrize("dest", ["relative/path", "/etc/../../x"])
def test_refuses_bad_destinations(binaries: dict[Platform, Path], tmp_path: Path, dest: str) -> None:
    src = write(tmp_path, "f", b"x")
    with pytest.raises(PackError, match="absolute path"):
        pack.build(pack.PackSpec(binaries=binaries, adds=((src, dest),)))


def test_missing_binary_and_no_binaries_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="cannot read binary"):
        pack.build(pack.PackSpec(binaries={P("linux/amd64"): tmp_path / "nope"}))
    with pytest.raises(PackError, match="at least one"):
        pack.build(pack.PackSpec(binaries={}))


@pytest.mark.parametrize(("cpu_arch", "variant"), [(5, 5), (6, 6), (9, 6), (10, 7), (14, 8)])
def test_arm_attributes_give_the_variant(cpu_arch: int, variant: int) -> None:
    assert elf.read(elf_maker.make("arm", arm_cpu_arch=cpu_arch)).arm_variant == variant


def test_a_health_check_may_be_given_longer_than_its_interval_to_answer(binaries: dict[Platform, Path]) -> None:
    # e.g. an exec under qemu on a busy board: a 1 s check that sometimes needs 5 s is slow, not unhealthy
    packed = pack.build(pack.PackSpec(binaries={P("linux/amd64"): binaries[P("linux/amd64")]},
                                      healthcheck="/app health", health_interval_s=1.0, health_timeout_s=10.0))
    config = json.loads(next(b for b in packed.blobs if b.media_type.endswith("config.v1+json")).data)
    assert (config["config"]["Healthcheck"]["Interval"], config["config"]["Healthcheck"]["Timeout"]) == (10**9,
                                                                                                       10 * 10**9)
