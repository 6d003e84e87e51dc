"""Raspberry-Pi-OS-like disk images for the provisioning tests, built with the real tools (sfdisk,
mkfs.vfat, mcopy): a partition table (MBR or GPT), a FAT32 `bootfs` partition at 8 MiB holding
config.txt and cmdline.txt (and the cloud-init seed files in the cloud-init variant), and a root
partition filled with seeded random bytes so a wrong byte anywhere changes the image hash."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.prereqs import require

MIB = 1024 * 1024
BOOT_START = 8 * MIB
BOOT_SIZE = 40 * MIB  # the smallest comfortable FAT32 (mkfs.vfat wants >= 65525 clusters)
ROOT_SIZE = 4 * MIB
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
CONFIG = "# config.txt\ndtparam=audio=on\ncamera_auto_detect=1\n\n[cm4]\notg_mode=1\n\n[all]\narm_boost=1\n"
# How each variant spells the files already on the boot partition.
NAMES = {
    "long": {"config": "config.txt", "cmdline": "cmdline.txt"},
    "upper": {"config": "CONFIG.TXT", "cmdline": "CMDLINE.TXT"},  # 8.3 short names only
    "mixed": {"config": "Config.txt", "cmdline": "CmdLine.TXT"},  # long-name entries
}
GPT_TYPES = {"boot": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "root": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


@dataclass(frozen=True)
class Variant:
    scheme: str = "mbr"  # mbr | gpt
    cloud_init: bool = True  # the seed files current Raspberry Pi OS ships on bootfs
    names: str = "long"


def run(*argv: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, env={**os.environ, **(env or {})}, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode(errors="replace")


def build(path: Path, variant: Variant = Variant()) -> Path:
    require("sfdisk", "mkfs.vfat", "mcopy")
    gpt_tail = 33 * 512 if variant.scheme == "gpt" else 0
    total = BOOT_START + BOOT_SIZE + ROOT_SIZE + gpt_tail
    root_start = BOOT_START + BOOT_SIZE
    with open(path, "wb") as f:
        f.truncate(total)
        f.seek(root_start)
        f.write(random.Random(7).randbytes(ROOT_SIZE))
    if variant.scheme == "gpt":
        script = (f"label: gpt\nstart={BOOT_START // 512}, size={BOOT_SIZE // 512}, type={GPT_TYPES['boot']}, "
                  f"name=bootfs\nstart={root_start // 512}, size={ROOT_SIZE // 512}, type={GPT_TYPES['root']}, "
                  "name=rootfs\n")
    else:
        script = (f"label: dos\nlabel-id: 0x1234abcd\nstart={BOOT_START // 512}, size={BOOT_SIZE // 512}, type=c\n"
                  f"start={root_start // 512}, size={ROOT_SIZE // 512}, type=83\n")
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path), input=script.encode())
    with tempfile.TemporaryDirectory() as tmp:
        fat = Path(tmp) / "bootfs.img"
        with open(fat, "wb") as f:
            f.truncate(BOOT_SIZE)
        run("mkfs.vfat", "-F", "32", "-S", "512", "-s", "1", "-n", "bootfs", "-i", "1234abcd", str(fat))
        names = NAMES[variant.names]
        files = {names["config"]: CONFIG, names["cmdline"]: CMDLINE, "start4.elf": "firmware\n",
                 "bcm2711-rpi-4-b.dtb": "dtb\n"}
        if variant.cloud_init:
            files |= {"user-data": "#cloud-config\n", "meta-data": "instance-id: rpios-image\n",
                      "network-config": "network:\n  version: 2\n"}
        for name, text in files.items():
            src = Path(tmp) / "f"
            src.write_text(text)
            run("mcopy", "-i", str(fat), str(src), f"::/{name}", env=MTOOLS_ENV)
        with open(path, "r+b") as out, open(fat, "rb") as src_fat:
            out.seek(BOOT_START)
            out.write(src_fat.read())
    return path


def boot_listing(path: Path, offset: int = BOOT_START) -> list[str]:
    """The root folder as mtools lists it (stored names), for duplicate checks."""
    out = run("mdir", "-a", "-b", "-i", f"{path}@@{offset}", "::/", env=MTOOLS_ENV)
    return [line[3:] for line in out.splitlines() if line.startswith("::/")]


def boot_read(path: Path, name: str, offset: int = BOOT_START) -> str:
    return run("mtype", "-i", f"{path}@@{offset}", f"::/{name}", env=MTOOLS_ENV)


def fsck(path: Path, offset: int = BOOT_START, size: int = BOOT_SIZE) -> str:
    """fsck.fat -n on the boot partition, copied out (fsck.fat takes no offset)."""
    with tempfile.NamedTemporaryFile() as part:
        with open(path, "rb") as src:
            src.seek(offset)
            part.write(src.read(size))
        part.flush()
        done = subprocess.run(["fsck.fat", "-n", part.name], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"fsck.fat -n found problems:\n{done.stdout}{done.stderr}")
    return done.stdout
