"""Say what is missing and how to get it, instead of failing later with a FileNotFoundError."""

from __future__ import annotations

import os
import shutil

SETUP = "bash scripts/dev.sh setup"
# tool -> Debian package providing it
PACKAGES = {
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "qemu-aarch64-static": "qemu-user-static",
    "qemu-arm-static": "qemu-user-static",
    "gcc": "gcc",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
    "arm-linux-gnueabi-gcc": "gcc-arm-linux-gnueabi",
    "mcopy": "mtools",
    "mkfs.vfat": "dosfstools",
    "fsck.fat": "dosfstools",
    "sfdisk": "fdisk",
    "socat": "socat",
    "ip": "iproute2",
}


class MissingPrerequisite(RuntimeError):
    pass


def require(*tools: str, root: bool = False) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    problems = []
    if missing:
        pkgs = sorted({PACKAGES.get(t, t) for t in missing})
        problems.append(f"missing {', '.join(missing)} (Debian: apt-get install {' '.join(pkgs)})")
    if root and os.geteuid() != 0:
        problems.append("this needs root (dockerd, binfmt and bridges do)")
    if problems:
        raise MissingPrerequisite("; ".join(problems) + f". `{SETUP}` installs everything on Debian.")
