"""What the console shows, classified: prompts under kernel noise and colour codes."""

from __future__ import annotations

import pytest

from tinyfleet.provisioning.board import parse_identity
from tinyfleet.provisioning.shell import Screen, classify, clean

NOISE = "[   12.345678] usb 1-1.3: new high-speed USB device number 4 using dwc_otg\r\n"


@pytest.mark.parametrize("screen, expected", [
    ("\r\nDebian GNU/Linux 12 raspberrypi ttyS0\r\n\r\nraspberrypi login: ", Screen.LOGIN),
    ("raspberrypi login: " + NOISE, Screen.LOGIN),  # printk lands after the prompt
    (NOISE + "raspberrypi login: " + NOISE + NOISE, Screen.LOGIN),
    ("Password: ", Screen.PASSWORD),
    ("Password: " + NOISE, Screen.PASSWORD),
    ("[sudo] password for pi: ", Screen.PASSWORD),
    ("\r\nLogin incorrect\r\nraspberrypi login: ", Screen.INCORRECT),
    ("pi@raspberrypi:~ $ ", Screen.SHELL),
    ("\x1b[?2004hroot@raspberrypi:~# ", Screen.SHELL),
    ("\x1b[01;32mpi@raspberrypi\x1b[00m:\x1b[01;34m~ $\x1b[00m ", Screen.SHELL),
    ("root@raspberrypi:~# " + NOISE, Screen.SHELL),
    ("", Screen.UNKNOWN),
    ("Debian GNU/Linux 12 raspberrypi ttyS0\r\n", Screen.UNKNOWN),
    (NOISE * 3, Screen.UNKNOWN),
])
def test_classify_what_the_console_waits_for(screen: str, expected: Screen) -> None:
    assert classify(screen) is expected


def test_clean_drops_kernel_lines_and_colours() -> None:
    assert clean("a\r\n" + NOISE + "\x1b[1mb\x1b[0m\r\n") == "a\nb\n"
    assert clean("a\r\n[    2.500000] usb 1-1: new device\r\r\nb") == "a\nb", "a console that doubles \\r"


@pytest.mark.parametrize("output, serial, model, arch, platform", [
    ("00000000a1b2c3d4\nRaspberry Pi Zero W Rev 1.1\narmv6l\nmid\n", "a1b2c3d4", "Raspberry Pi Zero W Rev 1.1",
     "armv6l", "linux/arm/v6"),
    ("10000000deadbeef\nRaspberry Pi 4 Model B Rev 1.4\naarch64\nmid\n", "10000000deadbeef",
     "Raspberry Pi 4 Model B Rev 1.4", "aarch64", "linux/arm64"),
    ("\n\nx86_64\n4f1e0c\n", "4f1e0c", "unknown", "x86_64", "linux/amd64"),  # no device tree: machine-id
    ("\n\nmips\n4f1e0c\n", "4f1e0c", "unknown", "mips", None),
])
def test_board_identity(output: str, serial: str, model: str, arch: str, platform: str | None) -> None:
    identity = parse_identity(output)
    assert (identity.serial, identity.model, identity.arch, identity.platform) == (serial, model, arch, platform)
