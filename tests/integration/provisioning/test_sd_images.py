"""SD card images: customise in place and flash (from .img, .xz, .gz, .zip) to image files, checked
with the real mtools and fsck.fat; truncated inputs and corrupted targets are caught."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support import piimage
from tests.support.cli import CONTROLLER_KEY, tinyfleet
from tinyfleet.provisioning import credentials, flash
from tinyfleet.provisioning.errors import VerifyFailed
from tinyfleet.provisioning.image import open_image

BROKER = "mqtts://broker.example.com:8883"
ROOT = (piimage.BOOT_START + piimage.BOOT_SIZE, piimage.ROOT_SIZE)


def provision(*args: str, passwd: Path) -> subprocess.CompletedProcess[str]:
    return tinyfleet("provision", *args, "--broker", BROKER, "--passwd-file", str(passwd), "--json",
                     "--controller-key", CONTROLLER_KEY)


def agent_toml(image: Path) -> dict:
    return tomllib.loads(piimage.boot_read(image, "tinyfleet/agent.toml"))


def assert_no_duplicates(image: Path) -> list[str]:
    names = piimage.boot_listing(image)
    assert len({n.lower() for n in names}) == len(names), f"duplicate FAT entries: {names}"
    return names


@pytest.mark.parametrize("variant, style, config_name", [
    ("cloud-init", "cloud-init", "config.txt"),
    ("firstrun-short-names", "firstrun", "CONFIG.TXT"),
    ("gpt", "firstrun", "config.txt"),
    ("mixed-case", "cloud-init", "Config.txt"),
])
def test_customize_bakes_the_agent_into_the_format_the_image_expects(pi_image, tmp_path, variant, style,
                                                                      config_name) -> None:  # type: ignore[no-untyped-def]
    image, passwd = pi_image(variant), tmp_path / "passwd"
    before = piimage.boot_listing(image)
    result = provision("customize", str(image), "--device-id", "pi-0001", "--enable-uart", passwd=passwd)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["first_boot"] == style
    names = assert_no_duplicates(image)
    assert set(before) <= set(names), "every file of the image is still there, under its own name"
    assert config_name in names
    piimage.fsck(image)
    config = agent_toml(image)
    assert (config["device_id"], config["broker"], config["mqtt_username"]) == ("pi-0001", BROKER, "pi-0001")
    assert credentials.matches(config["mqtt_password"], credentials.PasswordFile(passwd).entries()["pi-0001"])
    assert config["mqtt_password"] not in result.stdout + result.stderr
    cmdline = piimage.boot_read(image, "cmdline.txt")
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")
    assert ("ds=nocloud" in cmdline) == (style == "cloud-init")
    assert ("systemd.run=/boot/firstrun.sh" in cmdline) == (style == "firstrun")
    assert "enable_uart=1" in piimage.boot_read(image, "config.txt")
    expected = {"user-data", "meta-data"} if style == "cloud-init" else {"firstrun.sh"}
    assert expected <= set(names)


def test_customizing_twice_changes_nothing_but_the_secret(pi_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image, passwd = pi_image("firstrun-short-names"), tmp_path / "passwd"
    args = ("customize", str(image), "--device-id", "pi-0002", "--enable-uart", "--hostname", "pi-two")
    assert provision(*args, passwd=passwd).returncode == 0
    first = {n: piimage.boot_read(image, n) for n in ("CMDLINE.TXT", "CONFIG.TXT", "firstrun.sh")}
    names = piimage.boot_listing(image)
    again = provision(*args, passwd=passwd)
    assert again.returncode == 0, again.stderr
    assert {n: piimage.boot_read(image, n) for n in first} == first
    assert piimage.boot_listing(image) == names
    assert list(credentials.PasswordFile(passwd).entries()) == ["pi-0002"]
    assert "cmdline.txt" not in json.loads(again.stdout)["boot_files_written"]
    piimage.fsck(image)


def test_first_boot_format_can_be_forced(pi_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = pi_image("cloud-init")
    result = provision("customize", str(image), "--device-id", "pi-3", "--first-boot", "firstrun",
                       passwd=tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["first_boot"] == "firstrun"
    assert "systemd.run=/boot/firstrun.sh" in piimage.boot_read(image, "cmdline.txt")


def test_options_land_on_the_boot_partition(pi_image, tmp_path, agent_wheel) -> None:  # type: ignore[no-untyped-def]
    image = pi_image("cloud-init")
    (tmp_path / "psk").write_text('pa$$ "word"\n')
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAAC3Nza op@laptop\n")
    result = provision("customize", str(image), "--device-id", "pi-4", "--hostname", "pi-four",
                       "--wifi-ssid", "Home Net", "--wifi-psk-file", str(tmp_path / "psk"), "--ssh-key",
                       str(tmp_path / "key.pub"), "--wheel", str(agent_wheel), "--index-url",
                       "https://pypi.example/simple", passwd=tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert 'pa$$ \\"word\\"' in piimage.boot_read(image, "network-config")
    user_data = piimage.boot_read(image, "user-data")
    assert "ssh-ed25519 AAAAC3Nza op@laptop" in user_data and '"pi-four"' in user_data
    copied = piimage.run("mtype", "-i", f"{image}@@{piimage.BOOT_START}", f"::/tinyfleet/wheels/{agent_wheel.name}",
                         env=piimage.MTOOLS_ENV)
    assert len(copied) > 0
    assert 'pa$$' not in result.stdout + result.stderr
    piimage.fsck(image)


def _compress(src: Path, fmt: str) -> Path:
    if fmt == "xz":
        subprocess.run(["xz", "-1", "-T2", "-k", "-f", str(src)], check=True)
        return src.with_name(src.name + ".xz")
    if fmt == "gz":
        out = src.with_name(src.name + ".gz")
        with open(src, "rb") as f, gzip.open(out, "wb", compresslevel=1) as g:
            shutil.copyfileobj(f, g)
        return out
    out = src.with_suffix(".zip")
    subprocess.run(["zip", "-q", "-1", "-j", str(out), str(src)], check=True)
    return out


def _region(path: Path, start: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(size)


@pytest.mark.parametrize("fmt", ["raw", "xz", "gz", "zip"])
def test_flash_streams_the_image_customises_and_verifies(pi_image, tmp_path, fmt) -> None:  # type: ignore[no-untyped-def]
    source = pi_image("cloud-init")
    pristine = source.read_bytes()
    given = source if fmt == "raw" else _compress(source, fmt)
    target = tmp_path / "card.img"
    result = provision("flash", str(given), "--target", str(target), "--device-id", "pi-0005", passwd=tmp_path / "p")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True and report["bytes"] == len(pristine)
    assert report["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert _region(target, 0, 512) == pristine[:512], "the partition table arrives intact (written last)"
    assert _region(target, *ROOT) == pristine[ROOT[0]:ROOT[0] + ROOT[1]], "the root partition is untouched"
    assert agent_toml(target)["device_id"] == "pi-0005"
    assert_no_duplicates(target)
    piimage.fsck(target)
    assert source.read_bytes() == pristine, "flashing never modifies the source image"


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("fmt, keep", [("raw", 0.95), ("raw", 0.5), ("xz", 0.6), ("zip", 0.6), ("gz", 0.6)])
def test_a_truncated_image_gives_a_clear_error(pi_image, tmp_path, fmt, keep) -> None:  # type: ignore[no-untyped-def]
    source = pi_image("cloud-init")
    given = _truncate(source if fmt == "raw" else _compress(source, fmt), keep)
    result = provision("flash", str(given), "--target", str(tmp_path / "card.img"), "--device-id", "pi-6",
                       passwd=tmp_path / "p")
    assert result.returncode == 8, result.stderr
    assert "truncated" in result.stderr or "ends early" in result.stderr, result.stderr


def test_customize_refuses_a_truncated_or_compressed_image(pi_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    short = _truncate(pi_image("gpt"), 0.9)
    result = provision("customize", str(short), "--device-id", "pi-7", passwd=tmp_path / "p")
    assert result.returncode == 8 and "truncated" in result.stderr
    packed = _compress(pi_image("cloud-init"), "xz")
    result = provision("customize", str(packed), "--device-id", "pi-7", passwd=tmp_path / "p")
    assert result.returncode == 8 and "xz-compressed" in result.stderr
    assert not (tmp_path / "p").exists(), "no credential is issued for an image that cannot take it"


def test_verification_catches_a_corrupted_target(pi_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "card.img"
    with open_image(pi_image("gpt")) as image:
        written = flash.write(image, target)
    flash.verify(written)
    with open(target, "r+b") as f:
        f.seek(ROOT[0] + 12345)
        byte = f.read(1)
        f.seek(ROOT[0] + 12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(VerifyFailed, match="faulty"):
        flash.verify(written)


@pytest.mark.parametrize("target, problem", [
    ("SOURCE", "the source image itself"),
    ("/dev/null", "neither a block device nor a regular file"),
    ("/nonexistent-dir/card.img", "is not a folder"),
])
def test_flash_refuses_unsafe_targets(pi_image, tmp_path, target, problem) -> None:  # type: ignore[no-untyped-def]
    source = pi_image("cloud-init")
    result = provision("flash", str(source), "--target", str(source) if target == "SOURCE" else target,
                       "--device-id", "pi-8", passwd=tmp_path / "p")
    assert result.returncode == 8 and problem in result.stderr, result.stderr


def test_a_missing_device_is_never_created_as_a_file(pi_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = provision("flash", str(pi_image("cloud-init")), "--target", "/dev/sdzz-tinyfleet-test", "--device-id",
                       "pi-9", passwd=tmp_path / "p")
    assert result.returncode == 8 and "is the card inserted" in result.stderr
    assert not Path("/dev/sdzz-tinyfleet-test").exists()


@pytest.fixture
def loop_device(tmp_path):  # type: ignore[no-untyped-def]
    """A real block device: a loop device over a file (root and /dev/loop-control, as dockerd needs too)."""
    backing = tmp_path / "disk.bin"
    with open(backing, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    attach = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.fail(f"prerequisite missing: cannot attach a loop device ({attach.stderr.strip()}); "
                    "run as root on a machine with /dev/loop-control", pytrace=False)
    device = attach.stdout.strip()
    yield Path(device)
    subprocess.run(["losetup", "--detach", device], check=False)


def test_flashing_a_block_device_asks_first_then_writes_and_verifies(pi_image, tmp_path, loop_device) -> None:  # type: ignore[no-untyped-def]
    source = pi_image("gpt")
    args = ("flash", str(source), "--target", str(loop_device), "--device-id", "pi-0010")
    unconfirmed = provision(*args, passwd=tmp_path / "p")
    assert unconfirmed.returncode == 8 and "--yes" in unconfirmed.stderr, "no terminal to ask: refuse"
    result = provision(*args, "--yes", passwd=tmp_path / "p")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    size = source.stat().st_size
    with open(loop_device, "rb") as dev:
        written = dev.read(size)
    assert hashlib.sha256(written).hexdigest() == report["sha256"]
    assert written[:512] == source.read_bytes()[:512]
