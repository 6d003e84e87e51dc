"""Board facts: platform detection trusts the CPU over the kernel; identity comes from the board."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyfleet.agent.board import detect_platform, device_id
from tinyfleet.agent.health import cpu_temp_c, meminfo, throttled

PI_ZERO = "processor : 0\nmodel name : ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\nCPU part : 0xb76\n"
PI_ZERO_NO_MODEL = "processor : 0\nCPU architecture: 7\nCPU part : 0xb76\n"
PI_3_32BIT = "processor : 0\nmodel name : ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\nCPU part : 0xd03\n"


@pytest.mark.parametrize(("engine", "machine", "cpuinfo", "model", "expected"), [
    ("x86_64", "x86_64", None, None, "linux/amd64"),
    ("aarch64", "aarch64", None, "Raspberry Pi 4 Model B Rev 1.4", "linux/arm64"),
    ("armv7l", "armv7l", PI_3_32BIT, "Raspberry Pi 3 Model B Rev 1.2", "linux/arm/v7"),
    ("armv7l", "armv7l", PI_ZERO, "Raspberry Pi Zero W Rev 1.1", "linux/arm/v6"),  # kernel says v7, CPU is v6
    ("armv7l", "armv7l", PI_ZERO_NO_MODEL, None, "linux/arm/v6"),
    ("armv7l", "armv7l", "", "Raspberry Pi Model B Rev 2", "linux/arm/v6"),
    ("armv7l", "armv7l", "", "Raspberry Pi Zero 2 W Rev 1.0", "linux/arm/v7"),
    ("armv7l", "armv7l", "", "Raspberry Pi 2 Model B Rev 1.1", "linux/arm/v7"),
    (None, "armv6l", "", None, "linux/arm/v6"),
])
def test_detect_platform(engine, machine, cpuinfo, model, expected) -> None:  # type: ignore[no-untyped-def]
    assert str(detect_platform(engine, machine, cpuinfo, model)) == expected


def test_device_id_prefers_the_pi_serial_then_machine_id(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("4f1c0e7a9b2d4c3e8f1a2b3c4d5e6f70\n")
    assert device_id(tmp_path) == "4f1c0e7a9b2d4c3e8f1a2b3c4d5e6f70"
    serial = tmp_path / "sys/firmware/devicetree/base"
    serial.mkdir(parents=True)
    (serial / "serial-number").write_bytes(b"00000000a1b2c3d4\x00")
    assert device_id(tmp_path) == "rpi-a1b2c3d4"
    assert device_id(tmp_path / "nowhere") is None


def test_health_parsers() -> None:
    assert meminfo("MemTotal:  448790 kB\nMemFree: 1 kB\nMemAvailable:  301990 kB\n") == (448790 * 1024, 301990 * 1024)
    assert cpu_temp_c("48312\n") == 48.3 and cpu_temp_c("garbage") is None and cpu_temp_c(None) is None
    assert throttled("throttled=0x50005".split("=")[1]) == 0x50005 and throttled("") is None
