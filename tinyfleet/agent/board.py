"""Facts about the board itself: its identity and its platform.

Platform detection trusts the CPU over the kernel: a Raspberry Pi Zero or 1 (ARM1176, ARMv6) can run
a kernel that reports armv7l, and Docker then picks v7 images that crash on it (moby#37647).
"""

from __future__ import annotations

import platform as host_platform
import re
from pathlib import Path

from tinyfleet.oci.platform import Platform
from tinyfleet.protocol.topics import validate_device_id

# ARM CPU part numbers of ARMv6 cores (ARM1136, ARM1156, ARM1176, ARM11 MPCore)
_ARMV6_PARTS = {"0xb36", "0xb56", "0xb76", "0xb02"}


def read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def device_id(root: Path = Path("/")) -> str | None:
    """The Raspberry Pi serial number, else the systemd machine id; None if neither exists."""
    serial = read_text(root / "sys/firmware/devicetree/base/serial-number")
    if serial:
        serial = serial.lstrip("0") or serial
        return validate_device_id(f"rpi-{serial.lower()}")
    machine_id = read_text(root / "etc/machine-id")
    if machine_id:
        return validate_device_id(machine_id[:32])
    return None


def detect_platform(engine_arch: str | None, machine: str, cpuinfo: str | None, model: str | None) -> Platform:
    """Decide the board's platform from what the engine, the kernel and the CPU say."""
    arch = (engine_arch or machine or "").lower()
    if arch in ("x86_64", "amd64"):
        return Platform.parse("linux/amd64")
    if arch in ("aarch64", "arm64"):
        return Platform.parse("linux/arm64")
    if arch.startswith("arm"):
        text = cpuinfo or ""
        part = re.search(r"^CPU part\s*:\s*(0x[0-9a-f]+)", text, re.M | re.I)
        cpu_arch = re.search(r"^CPU architecture\s*:\s*(\d+)", text, re.M)
        if (re.search(r"ARMv6", text) or (part and part.group(1).lower() in _ARMV6_PARTS)
                or (model and re.search(r"Raspberry Pi (Zero(?! 2)|Model [AB]( Plus| Rev)?|Compute Module(?! [3-9]))",
                                        model))):
            return Platform.parse("linux/arm/v6")
        if arch.startswith("armv6") or (cpu_arch and int(cpu_arch.group(1)) <= 6):
            return Platform.parse("linux/arm/v6")
        return Platform.parse("linux/arm/v7")
    return Platform.normalize("linux", arch or "unknown")


def local_platform(engine_arch: str | None, root: Path = Path("/")) -> Platform:
    return detect_platform(engine_arch, host_platform.machine(), read_text(root / "proc/cpuinfo"),
                           read_text(root / "proc/device-tree/model"))
